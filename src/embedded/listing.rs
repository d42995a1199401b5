//! A user's threads and read markers (group chat) in embedded mode: the
//! thread listing (owned and shared threads, newest activity first) and
//! each participant's read marker and unread count. Each call is the
//! engine command the HTTP routes run, so listing order, access rules and
//! unread counting are the server's.

use serde::Deserialize;

use super::{Db, Error, Page, checked_limit, invalid, thread_id, unexpected_reply, user_id};
pub use crate::engine::ReadMarker;
use crate::engine::{
    Caller, Command, Order, Reply, ThreadPage, ThreadPosition, ThreadSort, UserThread,
};
use crate::model::{Role, Thread, UserId};

/// A thread as its user's listing shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedThread {
    #[serde(flatten)]
    pub thread: Thread,
    /// The user's role: `Owner` for their own threads.
    pub role: Role,
    /// Messages newer than the user's read marker that others wrote.
    pub unread_count: u64,
}

/// One page of a user's threads.
#[derive(Debug)]
pub struct Threads {
    pub threads: Vec<ListedThread>,
    /// Where the next page starts (pass to [`Page::after`]); `None` on the
    /// last page.
    pub next_cursor: Option<String>,
}

impl ListedThread {
    /// The engine's answer for a user who takes part in the thread;
    /// `None` when they do not.
    fn of(listed: UserThread) -> Option<ListedThread> {
        let membership = listed.membership?;
        Some(ListedThread {
            thread: listed.thread,
            role: membership.role,
            unread_count: membership.unread_count,
        })
    }
}

impl super::FromReply for ListedThread {
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::UserThread(listed) => ListedThread::of(listed),
            _ => None,
        }
    }
}

impl Db {
    /// The threads `user` owns or takes part in, newest activity first (a
    /// new message or a change of the thread itself), as the HTTP listing
    /// sorted by `updated_ts`: `Page::newest_first(n)`, then
    /// `.after(next_cursor)`. A cursor is a thread key, placed where that
    /// thread's activity is now.
    ///
    /// ```
    /// use progressdb::Db;
    /// use progressdb::embedded::{Page, Role};
    ///
    /// # fn main() -> Result<(), progressdb::embedded::Error> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let db = Db::open(tmp.path().join("chat-data"))?;
    /// let plans = db.create_thread("alice", "Launch plan")?;
    /// let lunch = db.create_thread("bob", "Lunch")?;
    /// db.add_participant(&lunch.id, "alice", Role::Member)?;
    /// db.post_message(&plans.id, "alice", r#"{"text":"draft"}"#)?;
    ///
    /// // The newest activity first; follow next_cursor for older threads.
    /// let page = db.threads("alice", &Page::newest_first(1))?;
    /// assert_eq!(page.threads[0].thread.id, plans.id);
    /// assert_eq!(page.threads[0].role, Role::Owner);
    /// let cursor = page.next_cursor.expect("one more");
    /// let page = db.threads("alice", &Page::newest_first(1).after(cursor))?;
    /// assert_eq!(page.threads[0].thread.id, lunch.id);
    /// assert_eq!(page.threads[0].role, Role::Member);
    /// assert!(page.next_cursor.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn threads(&self, user: &str, page: &Page) -> Result<Threads, Error> {
        if page.order != Order::NewestFirst {
            return Err(invalid("page", "threads are listed newest activity first"));
        }
        let user = user_id("user", user)?;
        let limit = checked_limit(page.limit)?;
        let after = match &page.cursor {
            None => None,
            Some(cursor) => Some(self.listing_position(&user, cursor)?),
        };
        let command = Command::ListThreads(ThreadPage {
            author: user,
            sort: ThreadSort::UpdatedTs,
            after,
            order: Order::NewestFirst,
            limit,
            include_deleted: page.include_deleted,
            partitions: None,
        });
        let Reply::Threads(part) = self.run(command)? else {
            return Err(unexpected_reply().into());
        };
        // One shard: its part is the listing, in order, one past the page.
        let more = part.entries.len() > limit;
        let threads = part
            .entries
            .into_iter()
            .take(limit)
            .map(|entry| ListedThread::of(entry.thread).ok_or_else(unexpected_reply))
            .collect::<Result<Vec<ListedThread>, _>>()?;
        let next_cursor = more
            .then(|| threads.last().map(|listed| listed.thread.id.clone()))
            .flatten();
        Ok(Threads {
            threads,
            next_cursor,
        })
    }

    /// A thread as `user`'s listing shows it, deleted or not: with their
    /// role and unread count. [`Error::ThreadNotFound`] when `user` neither
    /// owns it nor takes part in it.
    pub fn listed_thread(&self, thread: &str, user: &str) -> Result<ListedThread, Error> {
        self.call(Command::GetListedThread {
            id: thread_id(thread)?,
            user: user_id("user", user)?,
        })
    }

    /// Moves `user`'s read marker in `thread` forward to the message `id`
    /// (never back: an older message leaves it where it is) and answers
    /// the marker with the unread count after it.
    ///
    /// ```
    /// use progressdb::Db;
    /// use progressdb::embedded::Role;
    ///
    /// # fn main() -> Result<(), progressdb::embedded::Error> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let db = Db::open(tmp.path().join("chat-data"))?;
    /// let team = db.create_thread("alice", "Team")?;
    /// db.add_participant(&team.id, "bob", Role::Member)?;
    /// let first = db.post_message(&team.id, "alice", r#"{"text":"one"}"#)?;
    /// db.post_message(&team.id, "alice", r#"{"text":"two"}"#)?;
    /// assert_eq!(db.listed_thread(&team.id, "bob")?.unread_count, 2);
    ///
    /// let marker = db.mark_read(&team.id, "bob", &first.id)?;
    /// assert_eq!(marker.last_read.as_deref(), Some(first.id.as_str()));
    /// assert_eq!(marker.unread_count, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn mark_read(&self, thread: &str, user: &str, id: &str) -> Result<ReadMarker, Error> {
        self.call(Command::MarkRead {
            thread: thread_id(thread)?,
            caller: Caller {
                user: Some(user_id("user", user)?),
            },
            id: id.to_owned(),
        })
    }

    /// Where a cursor thread is in `user`'s listing by activity; a key
    /// that is not one of their threads is no cursor of this listing.
    fn listing_position(&self, user: &UserId, cursor: &str) -> Result<ThreadPosition, Error> {
        let id = thread_id(cursor).map_err(|_| Error::InvalidCursor)?;
        let command = Command::GetListedThread {
            id,
            user: user.clone(),
        };
        let listed: ListedThread = match self.call(command) {
            Ok(listed) => listed,
            Err(Error::ThreadNotFound) => return Err(Error::InvalidCursor),
            Err(err) => return Err(err),
        };
        Ok(ThreadPosition {
            sort_ts: listed.thread.updated_ts,
            thread_id: listed.thread.id,
        })
    }
}
