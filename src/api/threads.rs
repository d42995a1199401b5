//! An author's thread listing, gathered from every shard: newest first,
//! by `created_ts` or `updated_ts`, paged with thread keys as the ProgressDB
//! v0.2 contract says. `before=K` lists threads newer than K, `after=K`
//! older ones, `anchor=K` both sides and K itself; `total` is the sum of
//! the shards' counters.

use super::input::{ThreadCursor, ThreadPageRequest};
use super::{Api, ApiError, Call, json, render};
use crate::engine::{
    Command, EngineError, Order, Reply, ThreadEntry, ThreadPage, ThreadPart, ThreadPosition,
    ThreadSort, UserThread,
};
use crate::http::Response;
use crate::model::{ThreadId, UserId};
use crate::shard::shard_for;

/// The thread a cursor names: its place in the listing, and the thread
/// when the listing shows it (live, or deleted with `include_deleted`).
struct CursorThread {
    position: ThreadPosition,
    thread: Option<UserThread>,
}

/// Threads of one side of a position, merged across shards in scan order.
struct Side {
    entries: Vec<ThreadEntry>,
    more: bool,
    behind: bool,
    total: u64,
}

impl Api {
    pub(super) async fn list_threads(&self, call: &Call<'_>) -> Result<Response, ApiError> {
        let request = call.query.thread_page(&self.limits)?;
        self.author_threads(call.user(None)?, request).await
    }

    /// `{"threads":[…],"pagination":P}`, newest first.
    pub(super) async fn author_threads(
        &self,
        author: UserId,
        request: ThreadPageRequest,
    ) -> Result<Response, ApiError> {
        let key = match &request.cursor {
            ThreadCursor::Newest => None,
            ThreadCursor::Before(key) | ThreadCursor::After(key) | ThreadCursor::Anchor(key) => {
                Some(self.cursor_thread(&author, key, &request).await?)
            }
        };
        let side = |order| self.side(&author, &request, key.as_ref(), order);
        // The cursor's own thread, when the listing shows it.
        let itself = || {
            key.as_ref().and_then(|key| {
                key.thread.clone().map(|thread| ThreadEntry {
                    position: key.position.clone(),
                    thread,
                })
            })
        };
        let (entries, has_before, has_after, total) = match &request.cursor {
            ThreadCursor::Newest => {
                let older = side(Order::NewestFirst).await?;
                (older.entries, false, older.more, older.total)
            }
            ThreadCursor::After(_) => {
                let older = side(Order::NewestFirst).await?;
                let newer = itself().is_some() || older.behind;
                (older.entries, newer, older.more, older.total)
            }
            ThreadCursor::Before(_) => {
                let mut newer = side(Order::OldestFirst).await?;
                newer.entries.reverse();
                let older = itself().is_some() || newer.behind;
                (newer.entries, newer.more, older, newer.total)
            }
            ThreadCursor::Anchor(_) => {
                let mut entries = side(Order::OldestFirst).await?;
                let older = side(Order::NewestFirst).await?;
                entries.entries.reverse();
                entries.entries.extend(itself());
                entries.entries.extend(older.entries);
                (entries.entries, entries.more, older.more, older.total)
            }
        };
        let body = render::thread_list(&entries, (has_before, has_after), total);
        Ok(json(200, body))
    }

    /// Up to `limit` threads past the cursor (or from the newest) in
    /// `order`, asked of every shard and merged.
    async fn side(
        &self,
        author: &UserId,
        request: &ThreadPageRequest,
        key: Option<&CursorThread>,
        order: Order,
    ) -> Result<Side, ApiError> {
        let page = ThreadPage {
            author: author.clone(),
            sort: request.sort,
            after: key.map(|key| key.position.clone()),
            order,
            limit: request.limit,
            include_deleted: request.include_deleted,
        };
        let ThreadPart {
            mut entries,
            total,
            behind,
        } = self
            .threads_of_every_shard(|| Command::ListThreads(page.clone()))
            .await?;
        entries.sort_by(|a, b| a.position.cmp(&b.position));
        if order == Order::NewestFirst {
            entries.reverse();
        }
        let more = entries.len() > request.limit;
        entries.truncate(request.limit);
        Ok(Side {
            entries,
            more,
            behind,
            total,
        })
    }

    /// Looks up the thread a cursor names, which must be one of the
    /// author's (deleted or not); anything else is not a cursor of this
    /// listing.
    async fn cursor_thread(
        &self,
        author: &UserId,
        key: &ThreadId,
        request: &ThreadPageRequest,
    ) -> Result<CursorThread, ApiError> {
        let command = Command::GetListedThread {
            id: key.clone(),
            user: author.clone(),
        };
        let owner = shard_for(key.as_str(), self.mesh.shard_count());
        let listed = match self.mesh.call(owner, command).await {
            Ok(Reply::UserThread(listed)) => listed,
            Err(EngineError::ThreadNotFound) => {
                return Err(ApiError::bad_request(
                    "invalid_cursor",
                    "the cursor is not the key of a thread in this listing",
                ));
            }
            Ok(_) => return Err(EngineError::Storage("unexpected reply".into()).into()),
            Err(err) => return Err(err.into()),
        };
        let thread = &listed.thread;
        let sort_ts = match request.sort {
            ThreadSort::CreatedTs => thread.created_ts,
            ThreadSort::UpdatedTs => thread.updated_ts,
        };
        let shown = request.include_deleted || !thread.deleted;
        Ok(CursorThread {
            position: ThreadPosition {
                sort_ts,
                thread_id: thread.id.clone(),
            },
            thread: shown.then_some(listed),
        })
    }

    /// `GET /admin/stats`: `{"threads","messages"}` stored on every shard.
    pub(super) async fn totals(&self) -> Result<Response, ApiError> {
        let (mut threads, mut messages) = (0, 0);
        for reply in self.ask_every_shard(|| Command::Stats).await? {
            let Reply::Stats(stats) = reply else {
                return Err(EngineError::Storage("unexpected reply to stats".into()).into());
            };
            threads += stats.threads;
            messages += stats.messages;
        }
        let body = serde_json::json!({ "threads": threads, "messages": messages });
        Ok(json(200, body.to_string().into_bytes()))
    }
}
