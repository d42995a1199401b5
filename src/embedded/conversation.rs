//! Embedded calls beyond the basics: replies, reactions, participants,
//! thread renames, deletes, restores and erasure. Each is the engine command the
//! HTTP route runs, so behaviour (validation, roles, soft deletes, version
//! history) is the server's.

use super::{Db, Error, Messages, Page, anyone, invalid, thread_id, user_id};
use crate::api::input;
use crate::config::Limits;
use crate::engine::{
    Caller, Command, EngineError, MessageList, MessagePage, MessagePosition, Order,
    PURGE_BUDGET_DEFAULT, PurgeCursor, PurgePhase, PurgeRequest, Reply, RetentionPolicy,
};
use crate::model::{Message, MessageId, Participant, Role, Thread};

impl Db {
    /// Posts a reply to the message `parent` of `thread`: a message with
    /// `reply_to` set, listed in the thread like any other and under its
    /// parent by [`Db::replies`]. The parent must be live.
    pub fn post_reply(
        &self,
        thread: &str,
        parent: &str,
        author: &str,
        body_json: &str,
    ) -> Result<Message, Error> {
        self.post(thread, author, body_json, Some(parent))
    }

    /// Direct replies to `parent`, oldest first: `Page::oldest_first(n)`
    /// from the first reply, `.after(cursor)` for the next ones.
    pub fn replies(&self, thread: &str, parent: &str, page: &Page) -> Result<Messages, Error> {
        if page.order != Order::OldestFirst {
            return Err(invalid("page", "replies are read oldest first"));
        }
        let position = match &page.cursor {
            None => MessagePosition::Start,
            Some(cursor) => {
                MessagePosition::After(MessageId::parse(cursor).ok_or(Error::InvalidCursor)?)
            }
        };
        let list: MessageList = self.call(Command::ListReplies {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: parent.to_owned(),
            page: MessagePage {
                position,
                limit: super::checked_limit(page.limit)?,
                include_deleted: page.include_deleted,
            },
            in_pieces: false,
        })?;
        let messages = list.messages()?;
        let pagination = list.pagination;
        Ok(Messages {
            messages,
            next_cursor: pagination.has_after.then_some(pagination.after_anchor),
        })
    }

    /// Renames a thread; the title follows the rules of
    /// [`Db::create_thread`].
    pub fn rename_thread(&self, thread: &str, title: &str) -> Result<Thread, Error> {
        let limits = Limits::default();
        let title = input::valid_title(title, &limits)
            .ok_or_else(|| invalid("title", "must be non-blank text within the title limit"))?;
        self.call(Command::UpdateThread {
            id: thread_id(thread)?,
            caller: anyone(),
            title: Some(title.to_owned()),
            slug: None,
        })
    }

    /// Soft-deletes a thread: it and its messages stop being readable
    /// until [`Db::restore_thread`]; nothing is erased.
    pub fn delete_thread(&self, thread: &str) -> Result<(), Error> {
        self.run(Command::DeleteThread {
            id: thread_id(thread)?,
            caller: anyone(),
        })
        .map(drop)
    }

    /// Erases `thread` now, deleted or not, with every message, version,
    /// reaction, reply and participant (as `DELETE
    /// /admin/v1/threads/{key}?hard=true`): gone when this returns, its
    /// key free for reuse. An encrypted thread's key is destroyed, so
    /// older copies of its data no longer open.
    pub fn erase_thread(&self, thread: &str) -> Result<(), Error> {
        self.run(Command::EraseThread {
            id: thread_id(thread)?,
        })?;
        // The erasure's keys go in bounded steps, as the server's job does.
        let mut cursor = PurgeCursor {
            phase: PurgePhase::Erasures,
            after: None,
        };
        while cursor.phase != PurgePhase::Done {
            let step = Command::Purge(PurgeRequest {
                dry_run: false,
                policy: RetentionPolicy::default(),
                now_ns: crate::engine::now_ns(),
                budget: PURGE_BUDGET_DEFAULT,
                cursor,
            });
            let Reply::Purged(report) = self.run(step)? else {
                return Err(EngineError::Storage("unexpected reply to an erasure".into()).into());
            };
            cursor = report.cursor;
        }
        Ok(())
    }

    /// Undoes [`Db::delete_thread`].
    pub fn restore_thread(&self, thread: &str) -> Result<Thread, Error> {
        self.call(Command::RestoreThread {
            id: thread_id(thread)?,
            caller: anyone(),
        })
    }

    /// Undoes [`Db::delete_message`].
    pub fn restore_message(&self, thread: &str, id: &str) -> Result<Message, Error> {
        self.call(Command::RestoreMessage {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: id.to_owned(),
        })
    }

    /// Sets (`Some`) or removes (`None`) `user`'s reaction to a message.
    /// `user` must be the thread's owner or a participant, as over HTTP.
    pub fn react(
        &self,
        thread: &str,
        id: &str,
        user: &str,
        reaction: Option<&str>,
    ) -> Result<Message, Error> {
        let reaction = reaction
            .map(|reaction| input::reaction(Some(reaction.to_owned())))
            .transpose()
            .map_err(|err| invalid("reaction", err.message))?;
        self.call(Command::React {
            thread: thread_id(thread)?,
            caller: Caller {
                user: Some(user_id("user", user)?),
            },
            id: id.to_owned(),
            reaction,
        })
    }

    /// Adds `user` to a thread with `role` (or changes their role): they
    /// may then read, post, reply and react.
    pub fn add_participant(
        &self,
        thread: &str,
        user: &str,
        role: Role,
    ) -> Result<Participant, Error> {
        self.call(Command::AddParticipant {
            thread: thread_id(thread)?,
            caller: anyone(),
            user: user_id("user", user)?,
            role,
        })
    }

    /// Removes `user` from a thread (never its owner).
    pub fn remove_participant(&self, thread: &str, user: &str) -> Result<(), Error> {
        self.run(Command::RemoveParticipant {
            thread: thread_id(thread)?,
            caller: anyone(),
            user: user_id("user", user)?,
        })
        .map(drop)
    }
}
