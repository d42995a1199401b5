//! Decoded thread records of recently written or read threads.
//!
//! Every post needs its thread's record (owner, deletion, last message
//! time, key), and reading it from the store means a tree lookup and a
//! JSON decode per post. The owning shard keeps the records it used, as
//! `get_thread` returns them (title opened). `Engine::commit` forgets every
//! thread its operations touch before they are logged, so a cached record
//! is never older than the store; a command that knows the record it just
//! wrote puts it back after its commit succeeded. Core-local, bounded.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::model::ThreadRecord;

/// Records kept per shard before the cache starts over (a few hundred
/// bytes each).
const RECORDS_MAX: usize = 10_000;

#[derive(Default)]
pub struct RecordCache {
    records: RefCell<HashMap<Vec<u8>, ThreadRecord>>,
}

impl RecordCache {
    pub fn get(&self, thread: &str) -> Option<ThreadRecord> {
        self.records.borrow().get(thread.as_bytes()).cloned()
    }

    pub fn put(&self, record: &ThreadRecord) {
        let mut records = self.records.borrow_mut();
        if records.len() >= RECORDS_MAX {
            // Starting over is simpler than tracking recency; a miss costs
            // one store read.
            records.clear();
        }
        records.insert(record.thread.id.as_bytes().to_vec(), record.clone());
    }

    pub fn clear(&self) {
        self.records.borrow_mut().clear();
    }

    pub fn forget(&self, thread: &[u8]) {
        self.records.borrow_mut().remove(thread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ThreadRecord {
        crate::model::example_record(id)
    }

    #[test]
    fn forget_drops_and_the_cache_stays_bounded() {
        let cache = RecordCache::default();
        cache.put(&record("a"));
        assert_eq!(cache.get("a").unwrap().thread.id, "a");
        cache.forget(b"a");
        assert!(cache.get("a").is_none());
        for n in 0..RECORDS_MAX + 5 {
            cache.put(&record(&format!("t{n}")));
        }
        assert!(cache.records.borrow().len() <= RECORDS_MAX);
        assert!(cache.get(&format!("t{}", RECORDS_MAX + 4)).is_some());
    }
}
