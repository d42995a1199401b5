//! Embedded calls beyond the basics: replies, thread renames, deletes and
//! restores. Each is the engine command the HTTP route runs, so behaviour
//! (validation, soft deletes, version history) is the server's.

use super::{Db, Error, Messages, Page, anyone, invalid, thread_id};
use crate::api::input;
use crate::config::Limits;
use crate::engine::{Command, MessagePage, MessagePosition, Order};
use crate::model::{Message, MessageId, Thread};

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
        let list: super::MessageList = self.call(Command::ListReplies {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: parent.to_owned(),
            page: MessagePage {
                position,
                limit: super::checked_limit(page.limit)?,
                include_deleted: page.include_deleted,
            },
        })?;
        let pagination = list.pagination;
        Ok(Messages {
            messages: list.messages,
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
        self.send(Command::DeleteThread {
            id: thread_id(thread)?,
            caller: anyone(),
        })
        .map(drop)
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
}
