//! An author's thread listing, gathered from every shard: newest first,
//! by `created_ts` or `updated_ts`, paged with thread keys as the ProgressDB
//! v0.2 contract says. `before=K` lists threads newer than K, `after=K`
//! older ones, `anchor=K` both sides and K itself; `total` is the sum of
//! the shards' counters. In clustered mode each node lists the partitions
//! it owns and the node asked gathers every node's part
//! ([`super::fanout`]).

use std::sync::Arc;

use super::fanout::{self, CursorPart, Part, Plan, RenderedThread, Side};
use super::input::{ThreadCursor, ThreadPageRequest};
use super::render::ListedThread;
use super::{Api, ApiError, Call, json, render};
use crate::cluster::PartitionSet;
use crate::cluster::shard::Replication;
use crate::engine::{
    Command, EngineError, Order, Reply, ThreadEntry, ThreadPage, ThreadPart, ThreadPosition,
    ThreadSort, UserThread,
};
use crate::http::{Request, Response};
use crate::model::{ThreadId, UserId};
use crate::shard::shard_for;

/// The thread a cursor names: its place in the listing, and the thread
/// when the listing shows it (live, or deleted with `include_deleted`).
struct CursorThread {
    position: ThreadPosition,
    thread: Option<UserThread>,
}

/// The sides a page around a cursor is made of: threads newer than the
/// cursor (scanned oldest first), older ones (newest first), or both.
enum Sides<E> {
    Newer(Side<E>),
    Older(Side<E>),
    Both(Side<E>, Side<E>),
}

impl<E: ListedThread> Sides<E> {
    /// The sides `cursor`'s page needs, each asked of `side` with its
    /// scan order.
    async fn fetch<F>(
        cursor: &ThreadCursor,
        side: impl Fn(Order) -> F,
    ) -> Result<Sides<E>, ApiError>
    where
        F: Future<Output = Result<Side<E>, ApiError>>,
    {
        Ok(match cursor {
            ThreadCursor::Newest | ThreadCursor::After(_) => {
                Sides::Older(side(Order::NewestFirst).await?)
            }
            ThreadCursor::Before(_) => Sides::Newer(side(Order::OldestFirst).await?),
            ThreadCursor::Anchor(_) => {
                let newer = side(Order::OldestFirst).await?;
                Sides::Both(newer, side(Order::NewestFirst).await?)
            }
        })
    }

    /// `{"threads":[…],"pagination":P}` of the page.
    fn listing(self, itself: Option<E>) -> Response {
        let (entries, flags, total) = self.page(itself);
        json(200, render::thread_list(&entries, flags, total))
    }
}

impl<E> Sides<E> {
    /// The page, newest first, with `(has_before, has_after)` and the
    /// listing's total; `itself` is the cursor's thread when it is shown
    /// (an anchor page lists it).
    fn page(self, itself: Option<E>) -> (Vec<E>, (bool, bool), u64) {
        let shown = itself.is_some();
        match self {
            Sides::Older(older) => (
                older.entries,
                (shown || older.behind, older.more),
                older.total,
            ),
            Sides::Newer(mut newer) => {
                newer.entries.reverse();
                let flags = (newer.more, shown || newer.behind);
                (newer.entries, flags, newer.total)
            }
            Sides::Both(mut newer, older) => {
                newer.entries.reverse();
                newer.entries.extend(itself);
                newer.entries.extend(older.entries);
                (newer.entries, (newer.more, older.more), older.total)
            }
        }
    }
}

impl Api {
    pub(super) async fn list_threads(&self, call: &Call<'_>) -> Result<Response, ApiError> {
        let request = call.query.thread_page(&self.limits)?;
        self.author_threads(call.user(None)?, request, call.request)
            .await
    }

    /// `{"threads":[…],"pagination":P}`, newest first; in clustered mode
    /// gathered from every node (see [`super::fanout`]).
    pub(super) async fn author_threads(
        &self,
        author: UserId,
        request: ThreadPageRequest,
        http: &Request,
    ) -> Result<Response, ApiError> {
        if let Some(cluster) = &self.cluster {
            return match fanout::asked_part(cluster, http)? {
                Some((part, partitions)) => {
                    self.thread_part(&author, &request, part, partitions).await
                }
                None => {
                    self.gathered_threads(cluster, &author, &request, http)
                        .await
                }
            };
        }
        let key = match cursor_key(&request.cursor) {
            None => None,
            Some(key) => Some(self.cursor_thread(&author, key, &request).await?),
        };
        let after = key.as_ref().map(|key| key.position.clone());
        let sides = Sides::fetch(&request.cursor, |order| {
            self.side(&author, &request, after.clone(), order, None)
        });
        let sides = sides.await?;
        // The cursor's own thread, when the listing shows it.
        let itself = key.and_then(|key| {
            let thread = key.thread?;
            Some(ThreadEntry {
                position: key.position,
                thread,
            })
        });
        Ok(sides.listing(itself))
    }

    /// Up to `limit` threads past `after` (or from the newest) in `order`,
    /// asked of every shard and merged; only those of `partitions` when
    /// given.
    async fn side(
        &self,
        author: &UserId,
        request: &ThreadPageRequest,
        after: Option<ThreadPosition>,
        order: Order,
        partitions: Option<Arc<PartitionSet>>,
    ) -> Result<Side<ThreadEntry>, ApiError> {
        let page = ThreadPage {
            author: author.clone(),
            sort: request.sort,
            after,
            order,
            limit: request.limit,
            include_deleted: request.include_deleted,
            partitions,
        };
        let ThreadPart {
            entries,
            total,
            behind,
        } = self
            .threads_of_every_shard(|| Command::ListThreads(page.clone()))
            .await?;
        let part = Side {
            entries,
            more: false,
            behind,
            total,
        };
        Ok(fanout::merge(vec![part], order, request.limit, by_position))
    }

    /// Clustered mode: the listing gathered from every node.
    async fn gathered_threads(
        &self,
        cluster: &Replication,
        author: &UserId,
        request: &ThreadPageRequest,
        http: &Request,
    ) -> Result<Response, ApiError> {
        let plan = Plan::of(&cluster.view(), cluster.partitions())?;
        let key = match cursor_key(&request.cursor) {
            None => None,
            Some(key) => Some(match plan.owner_of(key.as_str()) {
                None => self.cursor_part(author, key, request).await?,
                Some(peer) => fanout::ask(cluster, peer, http, &Part::Cursor(key.clone())).await?,
            }),
        };
        let after = key.as_ref().map(|key| key.position.clone());
        let sides = Sides::fetch(&request.cursor, |order| {
            let at = (after.clone(), order);
            self.gathered_side(cluster, &plan, author, request, http, at)
        });
        Ok(sides.await?.listing(key.and_then(|key| key.thread)))
    }

    /// One side of a gathered listing: this node's part and every other
    /// node's, merged.
    async fn gathered_side(
        &self,
        cluster: &Replication,
        plan: &Plan,
        author: &UserId,
        request: &ThreadPageRequest,
        http: &Request,
        (after, order): (Option<ThreadPosition>, Order),
    ) -> Result<Side<RenderedThread>, ApiError> {
        let part = Part::Side {
            after: after.clone(),
            order,
        };
        let parts = fanout::parts(cluster, plan, http, &part, |mine| async {
            let mine = self.side(author, request, after, order, Some(mine));
            Ok(mine.await?.rendered())
        });
        Ok(fanout::merge(
            parts.await?,
            order,
            request.limit,
            |a: &RenderedThread, b| a.position.cmp(&b.position),
        ))
    }

    /// Clustered mode: this node's part of a listing another node gathers.
    async fn thread_part(
        &self,
        author: &UserId,
        request: &ThreadPageRequest,
        part: Part,
        partitions: Arc<PartitionSet>,
    ) -> Result<Response, ApiError> {
        match part {
            Part::Cursor(key) => {
                fanout::answer_part(&self.cursor_part(author, &key, request).await?)
            }
            Part::Side { after, order } => {
                let side = self.side(author, request, after, order, Some(partitions));
                fanout::answer_part(&side.await?.rendered())
            }
            Part::Whole => Err(fanout::wrong_part()),
        }
    }

    /// Where a cursor lies, for a gathered listing.
    async fn cursor_part(
        &self,
        author: &UserId,
        key: &ThreadId,
        request: &ThreadPageRequest,
    ) -> Result<CursorPart, ApiError> {
        let cursor = self.cursor_thread(author, key, request).await?;
        let thread = cursor.thread.map(|thread| {
            RenderedThread::of(ThreadEntry {
                position: cursor.position.clone(),
                thread,
            })
        });
        Ok(CursorPart {
            position: cursor.position,
            thread,
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

    /// `GET /admin/stats`: `{"threads","messages"}` stored on every shard;
    /// in clustered mode in every partition, each counted by its owner.
    pub(super) async fn totals(&self, request: &Request) -> Result<Response, ApiError> {
        let (mut threads, mut messages) = (0, 0);
        if let Some(cluster) = &self.cluster {
            match self.gathered_counts(cluster, request).await? {
                Counted::Asked(part) => return Ok(part),
                Counted::All(counts) => (threads, messages) = (counts.threads, counts.messages),
            }
        } else {
            for reply in self.ask_every_shard(|| Command::Stats).await? {
                let Reply::Stats(stats) = reply else {
                    return Err(EngineError::Storage("unexpected reply to stats".into()).into());
                };
                threads += stats.threads;
                messages += stats.messages;
            }
        }
        let body = serde_json::json!({ "threads": threads, "messages": messages });
        Ok(json(200, body.to_string().into_bytes()))
    }

    /// Clustered mode: the threads and messages of every partition, each
    /// counted by its owner; or this node's part, when another node asked.
    pub(super) async fn gathered_counts(
        &self,
        cluster: &Replication,
        request: &Request,
    ) -> Result<Counted, ApiError> {
        if let Some((part, partitions)) = fanout::asked_part(cluster, request)? {
            if part != Part::Whole {
                return Err(fanout::wrong_part());
            }
            let counts = self.counts_in(partitions).await?;
            return Ok(Counted::Asked(fanout::answer_part(&counts)?));
        }
        let plan = Plan::of(&cluster.view(), cluster.partitions())?;
        let parts = fanout::parts(cluster, &plan, request, &Part::Whole, |mine| {
            self.counts_in(mine)
        });
        let mut all = Counts::default();
        for counts in parts.await? {
            all.threads += counts.threads;
            all.messages += counts.messages;
        }
        Ok(Counted::All(all))
    }

    /// Threads and messages of `partitions` on this node.
    async fn counts_in(&self, partitions: Arc<PartitionSet>) -> Result<Counts, ApiError> {
        let mut all = Counts::default();
        for reply in self
            .ask_every_shard(|| Command::CountIn(partitions.clone()))
            .await?
        {
            let Reply::Counts { threads, messages } = reply else {
                return Err(EngineError::Storage("unexpected reply to a count".into()).into());
            };
            all.threads += threads;
            all.messages += messages;
        }
        Ok(all)
    }
}

/// Threads and messages stored, deleted ones included.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Counts {
    pub threads: u64,
    pub messages: u64,
}

/// What [`Api::gathered_counts`] made of a request.
pub(super) enum Counted {
    /// The counts of the whole cluster.
    All(Counts),
    /// The answer to another node that asked for this node's part.
    Asked(Response),
}

/// The thread a cursor names, if it names one.
fn cursor_key(cursor: &ThreadCursor) -> Option<&ThreadId> {
    match cursor {
        ThreadCursor::Newest => None,
        ThreadCursor::Before(key) | ThreadCursor::After(key) | ThreadCursor::Anchor(key) => {
            Some(key)
        }
    }
}

/// A user listing's order: by position, equal times by thread key.
fn by_position(a: &ThreadEntry, b: &ThreadEntry) -> std::cmp::Ordering {
    a.position.cmp(&b.position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(entries: &[u32], more: bool, behind: bool) -> Side<u32> {
        let total = 10;
        let entries = entries.to_vec();
        Side {
            entries,
            more,
            behind,
            total,
        }
    }

    // Newer threads are scanned oldest first and shown newest first; the
    // cursor's thread is listed only on an anchor page, and says there is
    // more on its side otherwise.
    #[test]
    fn a_page_is_made_of_its_sides_newest_first() {
        let older = Sides::Older(side(&[5, 4], true, false)).page(None);
        assert_eq!(older, (vec![5, 4], (false, true), 10));
        let after_shown = Sides::Older(side(&[5], false, false)).page(Some(6));
        assert_eq!(after_shown, (vec![5], (true, false), 10));
        let newer = Sides::Newer(side(&[7, 8], false, true)).page(None);
        assert_eq!(newer, (vec![8, 7], (false, true), 10));
        let both = Sides::Both(side(&[7, 8], true, false), side(&[5], false, true));
        assert_eq!(both.page(Some(6)), (vec![8, 7, 6, 5], (true, false), 10));
    }
}
