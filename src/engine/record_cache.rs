//! Decoded thread and participant records of recently used threads.
//!
//! Every post needs its thread's record (owner, deletion, last message
//! time, key) and its author's participant record (role, posted count),
//! and reading each from the store means a tree lookup and a JSON decode
//! per post. The owning shard keeps the records it used, as `get_thread`
//! and `participant` return them (title opened). `Engine::commit` forgets
//! every thread whose record, messages or participants its operations
//! touch before they are logged, so a cached record is never older than
//! the store; a command that knows the record it just wrote puts it back
//! after its commit succeeded. Core-local, bounded.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::model::{Participant, ThreadRecord};

/// Records of each kind kept per shard before that kind's cache starts
/// over (a few hundred bytes each).
const RECORDS_MAX: usize = 10_000;

#[derive(Default)]
pub struct RecordCache {
    records: RefCell<HashMap<Vec<u8>, ThreadRecord>>,
    /// Per thread, per user.
    participants: RefCell<HashMap<Vec<u8>, HashMap<String, Participant>>>,
    participants_kept: std::cell::Cell<usize>,
}

impl RecordCache {
    pub fn get(&self, thread: &str) -> Option<ThreadRecord> {
        self.records.borrow().get(thread.as_bytes()).cloned()
    }

    /// The record, out of the cache: for a command about to rewrite it,
    /// whose commit would forget it anyway.
    pub fn take(&self, thread: &str) -> Option<ThreadRecord> {
        self.records.borrow_mut().remove(thread.as_bytes())
    }

    pub fn put(&self, record: ThreadRecord) {
        let mut records = self.records.borrow_mut();
        if records.len() >= RECORDS_MAX {
            // Starting over is simpler than tracking recency; a miss costs
            // one store read.
            records.clear();
        }
        records.insert(record.thread.id.as_bytes().to_vec(), record);
    }

    pub fn clear(&self) {
        self.records.borrow_mut().clear();
        self.forget_all_participants();
    }

    /// Drops the thread's record and its participants.
    pub fn forget(&self, thread: &[u8]) {
        self.records.borrow_mut().remove(thread);
        self.forget_participants(thread);
    }

    pub fn participant(&self, thread: &str, user: &str) -> Option<Participant> {
        let participants = self.participants.borrow();
        participants.get(thread.as_bytes())?.get(user).cloned()
    }

    pub fn put_participant(&self, thread: &str, participant: Participant) {
        if self.participants_kept.get() >= RECORDS_MAX {
            self.forget_all_participants();
        }
        let mut participants = self.participants.borrow_mut();
        // Most puts replace the record of a user already kept (an author
        // posting again): update it in place rather than build new keys.
        if let Some(users) = participants.get_mut(thread.as_bytes())
            && let Some(kept) = users.get_mut(&participant.user_id)
        {
            *kept = participant;
            return;
        }
        let users = participants.entry(thread.as_bytes().to_vec()).or_default();
        if users
            .insert(participant.user_id.clone(), participant)
            .is_none()
        {
            self.participants_kept.set(self.participants_kept.get() + 1);
        }
    }

    pub fn forget_participants(&self, thread: &[u8]) {
        if let Some(users) = self.participants.borrow_mut().remove(thread) {
            let kept = self.participants_kept.get();
            self.participants_kept.set(kept.saturating_sub(users.len()));
        }
    }

    fn forget_all_participants(&self) {
        self.participants.borrow_mut().clear();
        self.participants_kept.set(0);
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
        cache.put(record("a"));
        assert_eq!(cache.get("a").unwrap().thread.id, "a");
        cache.forget(b"a");
        assert!(cache.get("a").is_none());
        for n in 0..RECORDS_MAX + 5 {
            cache.put(record(&format!("t{n}")));
        }
        assert!(cache.records.borrow().len() <= RECORDS_MAX);
        assert!(cache.get(&format!("t{}", RECORDS_MAX + 4)).is_some());
    }

    fn participant(user: &str) -> Participant {
        use crate::model::Role;
        Participant::new(user, Role::Member, 1, user, 0)
    }

    #[test]
    fn participants_are_forgotten_with_their_thread_and_stay_bounded() {
        let cache = RecordCache::default();
        cache.put(record("a"));
        cache.put_participant("a", participant("bob"));
        cache.put_participant("b", participant("bob"));
        assert_eq!(cache.participant("a", "bob").unwrap().user_id, "bob");
        assert!(cache.participant("a", "carol").is_none());
        cache.forget(b"a");
        assert!(cache.participant("a", "bob").is_none());
        assert!(cache.participant("b", "bob").is_some());
        cache.forget_participants(b"b");
        assert!(cache.participant("b", "bob").is_none());
        for n in 0..RECORDS_MAX + 5 {
            cache.put_participant(&format!("t{}", n % 7), participant(&format!("u{n}")));
        }
        assert!(cache.participants_kept.get() <= RECORDS_MAX);
        let kept: usize = cache.participants.borrow().values().map(HashMap::len).sum();
        assert_eq!(kept, cache.participants_kept.get());
        cache.clear();
        assert_eq!(cache.participants_kept.get(), 0);
    }
}
