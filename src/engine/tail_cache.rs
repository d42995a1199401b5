//! The rendered newest-first first page of recently read threads: a cache
//! of the HTTP rendering, which the engine invalidates.
//!
//! Most reads of a chat are "the latest messages", and the memtable walks
//! backwards slowly (each step is a new skiplist search), so the owning
//! shard keeps the bytes the caller's renderer (`Command::ListMessages`'s
//! `rendering`, only HTTP's) made of a thread's first page and serves them
//! again until a write touches the thread. Every write goes
//! through `Engine::commit`, which forgets the threads its operations touch
//! before they are logged, so a cached page is never older than the store.
//! The page depends only on the thread's stored messages, not on who asks;
//! access is checked before the cache is consulted. Core-local, bounded.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Bytes of cached pages per shard before the cache starts over.
const BYTES_MAX: usize = 32 * 1024 * 1024;

/// One rendered page of a thread.
struct Page {
    limit: usize,
    include_deleted: bool,
    body: Vec<u8>,
}

#[derive(Default)]
pub struct TailCache {
    /// Thread id -> its cached first pages (one per limit / deleted flag).
    pages: RefCell<HashMap<Vec<u8>, Vec<Page>>>,
    bytes: Cell<usize>,
}

impl TailCache {
    pub fn get(&self, thread: &str, limit: usize, include_deleted: bool) -> Option<Vec<u8>> {
        let pages = self.pages.borrow();
        let page = pages
            .get(thread.as_bytes())?
            .iter()
            .find(|page| page.limit == limit && page.include_deleted == include_deleted)?;
        Some(page.body.clone())
    }

    pub fn put(&self, thread: &str, limit: usize, include_deleted: bool, body: &[u8]) {
        if body.len() > BYTES_MAX / 4 {
            return;
        }
        let mut pages = self.pages.borrow_mut();
        if self.bytes.get() + body.len() > BYTES_MAX {
            // Starting over is simpler than tracking recency, and a page
            // costs one scan to render again.
            pages.clear();
            self.bytes.set(0);
        }
        let entry = pages.entry(thread.as_bytes().to_vec()).or_default();
        if let Some(old) = entry
            .iter()
            .position(|page| page.limit == limit && page.include_deleted == include_deleted)
        {
            let old = entry.swap_remove(old);
            self.bytes.set(self.bytes.get() - old.body.len());
        }
        self.bytes.set(self.bytes.get() + body.len());
        entry.push(Page {
            limit,
            include_deleted,
            body: body.to_vec(),
        });
    }

    /// Drops every cached page of `thread` (its id's bytes).
    pub fn clear(&self) {
        self.pages.borrow_mut().clear();
        self.bytes.set(0);
    }

    pub fn forget(&self, thread: &[u8]) {
        if let Some(pages) = self.pages.borrow_mut().remove(thread) {
            let freed: usize = pages.iter().map(|page| page.body.len()).sum();
            self.bytes.set(self.bytes.get() - freed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_kept_per_query_and_forgotten_per_thread() {
        let cache = TailCache::default();
        assert_eq!(cache.get("t", 50, false), None);
        cache.put("t", 50, false, b"fifty");
        cache.put("t", 10, false, b"ten");
        cache.put("t", 50, true, b"with deleted");
        cache.put("u", 50, false, b"other thread");
        assert_eq!(cache.get("t", 50, false).as_deref(), Some(&b"fifty"[..]));
        assert_eq!(cache.get("t", 10, false).as_deref(), Some(&b"ten"[..]));
        assert_eq!(
            cache.get("t", 50, true).as_deref(),
            Some(&b"with deleted"[..])
        );
        cache.put("t", 50, false, b"fifty again");
        assert_eq!(
            cache.get("t", 50, false).as_deref(),
            Some(&b"fifty again"[..])
        );
        cache.forget(b"t");
        assert_eq!(cache.get("t", 50, false), None);
        assert_eq!(cache.get("t", 10, false), None);
        assert_eq!(
            cache.get("u", 50, false).as_deref(),
            Some(&b"other thread"[..])
        );
        assert_eq!(cache.bytes.get(), b"other thread".len());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TailCache::default();
        let body = vec![b'x'; BYTES_MAX / 8];
        for thread in 0..100 {
            cache.put(&thread.to_string(), 50, false, &body);
            assert!(cache.bytes.get() <= BYTES_MAX);
        }
        assert!(cache.get("99", 50, false).is_some());
        cache.put("huge", 50, false, &vec![b'x'; BYTES_MAX]);
        assert_eq!(cache.get("huge", 50, false), None, "too large to keep");
    }
}
