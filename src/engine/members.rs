//! Each listed user's threads on this shard that they take part in without
//! owning them (owned threads are the author index's, see `authors`), for
//! `GET /frontend/v1/threads`.
//!
//! A user's set is built on the first listing that needs it (one scan of
//! the member index on this shard; at most `LOADED_USERS_MAX` users' sets
//! at once) and kept current by every add and remove afterwards; the sort keys of the threads in any loaded set are
//! kept current by every write of a thread record. A page sorts the
//! user's threads on this shard in memory: no store reads per thread.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use super::command::{EngineError, Order, ThreadPage, ThreadPosition, ThreadSort};
use crate::store::Store;

/// What a member's thread is listed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub created_ts: u64,
    pub updated_ts: u64,
    pub deleted: bool,
}

/// One shard's part of a member listing.
pub struct MemberPart {
    /// Up to `limit + 1` threads past the position, in scan order.
    pub positions: Vec<ThreadPosition>,
    /// A listed thread lies strictly behind the position.
    pub behind: bool,
    pub total: u64,
}

#[derive(Default)]
pub struct Members {
    loaded: RefCell<HashMap<String, BTreeSet<String>>>,
    listed: RefCell<HashMap<String, Listed>>,
}

impl Members {
    /// Drops every loaded set (reloaded from the store when next listed).
    pub fn clear(&self) {
        self.loaded.borrow_mut().clear();
    }

    /// `user` now takes part in `thread` (a no-op until their set is loaded).
    pub fn joined(&self, user: &str, thread: &str, listed: Listed) {
        if let Some(threads) = self.loaded.borrow_mut().get_mut(user) {
            threads.insert(thread.to_owned());
            self.listed.borrow_mut().insert(thread.to_owned(), listed);
        }
    }

    pub fn left(&self, user: &str, thread: &str) {
        if let Some(threads) = self.loaded.borrow_mut().get_mut(user) {
            threads.remove(thread);
        }
    }

    /// A thread's record was written: keep its sort keys if it is listed.
    pub fn changed(&self, thread: &str, listed: Listed) {
        if let Some(known) = self.listed.borrow_mut().get_mut(thread) {
            *known = listed;
        }
    }

    fn load(&self, store: &Store, user: &str) -> Result<(), EngineError> {
        if self.loaded.borrow().contains_key(user) {
            return Ok(());
        }
        let ids = store.member_threads(user)?;
        if self.loaded.borrow().len() >= super::authors::LOADED_USERS_MAX {
            // Bounded memory: start over; the next listing of each reloads.
            self.loaded.borrow_mut().clear();
            self.listed.borrow_mut().clear();
        }
        let mut listed = self.listed.borrow_mut();
        for id in &ids {
            if listed.contains_key(id) {
                continue;
            }
            let record = store
                .get_thread(id)?
                .ok_or_else(|| EngineError::Storage("an indexed thread has no record".into()))?;
            let thread = &record.thread;
            listed.insert(
                id.clone(),
                Listed {
                    created_ts: thread.created_ts,
                    updated_ts: thread.updated_ts,
                    deleted: thread.deleted,
                },
            );
        }
        self.loaded
            .borrow_mut()
            .insert(user.to_owned(), ids.into_iter().collect());
        Ok(())
    }

    /// The live threads `page.author` takes part in on this shard, past
    /// `page.after` in `page.order`. Deleted threads are the owner's only.
    pub fn page(&self, store: &Store, page: &ThreadPage) -> Result<MemberPart, EngineError> {
        let user = page.author.as_str();
        self.load(store, user)?;
        let mut positions: Vec<ThreadPosition> = {
            let (loaded, listed) = (self.loaded.borrow(), self.listed.borrow());
            loaded[user]
                .iter()
                .filter(|id| page.holds(id))
                .filter_map(|id| {
                    let state = listed.get(id).filter(|state| !state.deleted)?;
                    Some(ThreadPosition {
                        sort_ts: match page.sort {
                            ThreadSort::CreatedTs => state.created_ts,
                            ThreadSort::UpdatedTs => state.updated_ts,
                        },
                        thread_id: id.clone(),
                    })
                })
                .collect()
        };
        positions.sort_unstable();
        let total = positions.len() as u64;
        let below = |at: &ThreadPosition| positions.partition_point(|p| p < at);
        let upto = |at: &ThreadPosition| positions.partition_point(|p| p <= at);
        let take = page.limit + 1;
        let (found, behind) = match (page.order, &page.after) {
            (Order::OldestFirst, None) => (positions.iter().take(take).cloned().collect(), false),
            (Order::NewestFirst, None) => {
                (positions.iter().rev().take(take).cloned().collect(), false)
            }
            (Order::OldestFirst, Some(at)) => (
                positions[upto(at)..].iter().take(take).cloned().collect(),
                below(at) > 0,
            ),
            (Order::NewestFirst, Some(at)) => (
                positions[..below(at)]
                    .iter()
                    .rev()
                    .take(take)
                    .cloned()
                    .collect(),
                upto(at) < positions.len(),
            ),
        };
        Ok(MemberPart {
            positions: found,
            behind,
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Participant, Role, UserId, example_record};
    use crate::store::{Ops, StoreOptions};
    use crate::wal::record::Lsn;

    fn page(after: Option<(u64, &str)>, order: Order, limit: usize) -> ThreadPage {
        ThreadPage {
            author: UserId::parse("bob").unwrap(),
            sort: ThreadSort::CreatedTs,
            after: after.map(|(sort_ts, id)| ThreadPosition {
                sort_ts,
                thread_id: id.to_owned(),
            }),
            order,
            limit,
            include_deleted: false,
            partitions: None,
        }
    }

    /// Threads a, b, c (created at 1, 2, 3) and a deleted one, all
    /// alice's, with bob taking part in each.
    fn store_of_bobs_threads() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), "test").unwrap();
        let mut ops = Ops::default();
        for (n, id) in ["a", "b", "c", "gone"].into_iter().enumerate() {
            let mut record = example_record(id);
            record.thread.created_ts = n as u64 + 1;
            record.thread.deleted = id == "gone";
            ops.extend(Store::thread_ops(&record));
            let bob = Participant::new("bob", Role::Member, 1, "alice", 0);
            Store::participant_ops(&mut ops, id, &bob, false);
        }
        store.apply(Lsn(1), ops).unwrap();
        (dir, store)
    }

    // Clustered mode: a node lists only the threads of the partitions it
    // owns, and counts only those.
    #[test]
    fn a_page_of_some_partitions_lists_and_counts_their_threads_only() {
        use crate::cluster::{PartitionSet, partition_for};
        let (_dir, store) = store_of_bobs_threads();
        let owned = PartitionSet::new(4, [partition_for("b", 4)]);
        let kept: Vec<&str> = ["c", "b", "a"]
            .into_iter()
            .filter(|id| owned.holds_thread(id))
            .collect();
        let mut asked = page(None, Order::NewestFirst, 5);
        asked.partitions = Some(std::sync::Arc::new(owned));
        let part = Members::default().page(&store, &asked).unwrap();
        assert_eq!((ids(&part), part.total), (kept.clone(), kept.len() as u64));
        assert!(kept.contains(&"b"));
    }

    fn ids(part: &MemberPart) -> Vec<&str> {
        part.positions
            .iter()
            .map(|position| position.thread_id.as_str())
            .collect()
    }

    #[test]
    fn pages_follow_cursor_and_order_and_skip_deleted_threads() {
        let (_dir, store) = store_of_bobs_threads();
        let members = Members::default();
        let newest = members
            .page(&store, &page(None, Order::NewestFirst, 2))
            .unwrap();
        assert_eq!(
            (ids(&newest), newest.total, newest.behind),
            (vec!["c", "b", "a"], 3, false)
        );
        let older = members
            .page(&store, &page(Some((3, "c")), Order::NewestFirst, 1))
            .unwrap();
        assert_eq!((ids(&older), older.behind), (vec!["b", "a"], false));
        let newer = members
            .page(&store, &page(Some((1, "a")), Order::OldestFirst, 5))
            .unwrap();
        assert_eq!((ids(&newer), newer.behind), (vec!["b", "c"], false));
        let middle = members
            .page(&store, &page(Some((2, "b")), Order::NewestFirst, 5))
            .unwrap();
        assert_eq!((ids(&middle), middle.behind), (vec!["a"], true));
        // Leaving and joining are seen without reading the index again.
        members.left("bob", "a");
        let listed = Listed {
            created_ts: 9,
            updated_ts: 9,
            deleted: false,
        };
        members.joined("bob", "z", listed);
        let now = members
            .page(&store, &page(None, Order::NewestFirst, 5))
            .unwrap();
        assert_eq!(ids(&now), vec!["z", "c", "b"]);
    }
}
