//! Each listed author's threads on this shard, in memory: ordered by
//! `updated_ts` (last activity) for `sort_by=updated_ts`, and counted, so a
//! listing's `total` is a sum of counters, never a scan.
//!
//! An author's entry is built on the first listing that needs it (one scan
//! of that author's index on this shard, not one at startup) and kept
//! current by every write of a thread record afterwards. Writes of authors
//! not loaded yet change nothing here: the store has them when the entry
//! is built. Everything runs on the owning shard between awaits, so a
//! write never interleaves with a build.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use super::command::{EngineError, Order, ThreadPage, ThreadPosition};
use crate::store::{Direction, Store};

/// One author's threads on this shard.
#[derive(Default)]
struct AuthorThreads {
    /// `(updated_ts, thread id)` -> deleted.
    by_updated: BTreeMap<(u64, String), bool>,
    deleted: u64,
}

/// What a thread's entry is keyed and filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadState {
    pub updated_ts: u64,
    pub deleted: bool,
}

/// Users whose thread sets a shard keeps loaded at once; past it the sets
/// are dropped and reloaded (one index scan each) when next listed.
pub const LOADED_USERS_MAX: usize = 10_000;

#[derive(Default)]
pub struct Authors {
    loaded: RefCell<HashMap<String, AuthorThreads>>,
}

impl Authors {
    /// Records that thread `id` of `author` changed from `old` (`None`:
    /// created) to `new`.
    pub fn changed(&self, author: &str, id: &str, old: Option<ThreadState>, new: ThreadState) {
        let mut loaded = self.loaded.borrow_mut();
        let Some(threads) = loaded.get_mut(author) else {
            return;
        };
        if let Some(old) = old {
            threads.by_updated.remove(&(old.updated_ts, id.to_owned()));
            threads.deleted -= u64::from(old.deleted);
        }
        threads
            .by_updated
            .insert((new.updated_ts, id.to_owned()), new.deleted);
        threads.deleted += u64::from(new.deleted);
    }

    /// Forgets one author's entry (a thread of theirs was erased); their
    /// next listing builds it again from the store.
    pub fn forget(&self, author: &str) {
        self.loaded.borrow_mut().remove(author);
    }

    /// Forgets every loaded author; the next listing builds its entry again.
    pub fn clear(&self) {
        self.loaded.borrow_mut().clear();
    }

    fn load(&self, store: &Store, author: &str) -> Result<(), EngineError> {
        if self.loaded.borrow().contains_key(author) {
            return Ok(());
        }
        // The index names the threads; their records hold the last
        // activity (an index entry is not rewritten on every post).
        let mut ids = Vec::new();
        store.scan_author_threads(author, None, Direction::Ascending, |_, id, deleted, _| {
            ids.push((id.to_owned(), deleted));
            Ok(true)
        })?;
        let mut threads = AuthorThreads::default();
        for (id, deleted) in ids {
            let record = store
                .get_thread(&id)?
                .ok_or_else(|| EngineError::Storage("an indexed thread has no record".into()))?;
            threads
                .by_updated
                .insert((record.thread.updated_ts, id), deleted);
            threads.deleted += u64::from(deleted);
        }
        let mut loaded = self.loaded.borrow_mut();
        if loaded.len() >= LOADED_USERS_MAX {
            // Bounded memory: start over; the next listing of each reloads.
            loaded.clear();
        }
        loaded.insert(author.to_owned(), threads);
        Ok(())
    }

    /// The author's listed threads on this shard: the counters, or in
    /// clustered mode a count of those in the page's partitions.
    pub fn total(&self, store: &Store, page: &ThreadPage) -> Result<u64, EngineError> {
        let author = page.author.as_str();
        self.load(store, author)?;
        let loaded = self.loaded.borrow();
        let threads = &loaded[author];
        if page.partitions.is_some() {
            let listed = threads.by_updated.iter().filter(|((_, id), deleted)| {
                (page.include_deleted || !**deleted) && page.holds(id)
            });
            return Ok(listed.count() as u64);
        }
        let all = threads.by_updated.len() as u64;
        Ok(if page.include_deleted {
            all
        } else {
            all - threads.deleted
        })
    }

    /// Up to `limit + 1` listed threads by `updated_ts` strictly past
    /// `page.after` in `page.order`, and whether one lies strictly behind
    /// it.
    pub fn by_updated(
        &self,
        store: &Store,
        page: &ThreadPage,
    ) -> Result<(Vec<ThreadPosition>, bool), EngineError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let (author, limit, order) = (page.author.as_str(), page.limit, page.order);
        self.load(store, author)?;
        let loaded = self.loaded.borrow();
        let map = &loaded[author].by_updated;
        let at =
            (page.after.as_ref()).map(|position| (position.sort_ts, position.thread_id.clone()));
        let (ahead, back) = match &at {
            None => ((Unbounded, Unbounded), (Unbounded, Unbounded)),
            Some(at) => ((Excluded(at), Unbounded), (Unbounded, Excluded(at))),
        };
        let listed = |((_, id), deleted): &(&(u64, String), &bool)| {
            (page.include_deleted || !**deleted) && page.holds(id)
        };
        let position = |((ts, id), _): (&(u64, String), &bool)| ThreadPosition {
            sort_ts: *ts,
            thread_id: id.clone(),
        };
        let (found, behind) = match order {
            Order::OldestFirst => (
                map.range(ahead)
                    .filter(listed)
                    .take(limit + 1)
                    .map(position)
                    .collect(),
                at.is_some() && map.range(back).rev().any(|item| listed(&item)),
            ),
            Order::NewestFirst => {
                let (newer, older) = (ahead, back);
                (
                    map.range(older)
                        .rev()
                        .filter(listed)
                        .take(limit + 1)
                        .map(position)
                        .collect(),
                    at.is_some() && map.range(newer).any(|item| listed(&item)),
                )
            }
        };
        Ok((found, behind))
    }
}
