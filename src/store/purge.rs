//! The reads hard deletion needs: the keys a thread erasure removes and
//! the messages the retention job looks at, each found in batches of a
//! bounded size so that one step never walks a whole shard.

use std::ops::Bound;

use super::{Space, Store, StoreError, StoreResult, keys, unflag};

/// The keyspaces whose keys of a thread all start with `<thread_id> 0x00`.
const THREAD_SPACES: [Space; 5] = [
    Space::Messages,
    Space::Versions,
    Space::Replies,
    Space::Changes,
    Space::Participants,
];

/// Keys an erased thread still has, found by [`Store::thread_keys`].
#[derive(Debug, Default)]
pub struct ThreadKeys {
    /// `(space, key)` of each, a participant's member index entry included.
    pub keys: Vec<(Space, Vec<u8>)>,
    /// False when the batch was cut at its limit: call again.
    pub complete: bool,
}

/// A stored message the retention job considers.
#[derive(Debug)]
pub struct MessageCandidate {
    /// The message's key (without its keyspace byte): the scan's cursor.
    pub key: Vec<u8>,
    pub thread: String,
    pub ts: u64,
    pub deleted: bool,
    pub json: Vec<u8>,
}

impl Store {
    /// Marks `thread_id` as being erased: its record is gone, the rest of
    /// its keys follow in batches ([`Store::thread_keys`]).
    pub fn erasure_op(ops: &mut super::Ops, thread_id: &str) {
        ops.put(Space::Erasures, keys::thread(thread_id), Vec::new());
    }

    /// The write that ends an erasure once the thread has no keys left.
    pub fn erasure_done_op(ops: &mut super::Ops, thread_id: &str) {
        ops.remove(Space::Erasures, keys::thread(thread_id));
    }

    /// Whether `thread_id` is still being erased; its id is not free yet.
    pub fn is_erasing(&self, thread_id: &str) -> StoreResult<bool> {
        Ok(self
            .get(Space::Erasures, &keys::thread(thread_id))?
            .is_some())
    }

    /// Up to `limit` threads being erased, in id order, past `after`.
    pub fn erasures(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        let start = match after {
            Some(id) => Bound::Excluded(keys::thread(id)),
            None => Bound::Unbounded,
        };
        let mut ids = Vec::new();
        for entry in self.range(Space::Erasures, (start, Bound::Unbounded)) {
            let entry = entry?;
            let id = String::from_utf8(entry.key().to_vec())
                .map_err(|_| StoreError::Corrupt("erasure key is not UTF-8".into()))?;
            ids.push(id);
            if ids.len() == limit {
                break;
            }
        }
        Ok(ids)
    }

    /// Up to about `limit` keys `thread_id` still has under its id in
    /// every keyspace, and for each participant its member index entry.
    pub fn thread_keys(&self, thread_id: &str, limit: usize) -> StoreResult<ThreadKeys> {
        let prefix = keys::message_prefix(thread_id);
        let mut found = ThreadKeys::default();
        for space in THREAD_SPACES {
            for entry in self.prefix(space, &prefix) {
                if found.keys.len() >= limit {
                    return Ok(found);
                }
                let key = entry?.key().to_vec();
                if space == Space::Participants
                    && let Some(user) = keys::participant_user(thread_id, &key)
                {
                    let member = keys::member_thread(user, thread_id);
                    found.keys.push((Space::MemberThreads, member));
                }
                found.keys.push((space, key));
            }
        }
        found.complete = true;
        Ok(found)
    }

    /// Up to `limit` keys of `space` that start with `prefix`.
    pub fn keys_under(
        &self,
        space: Space,
        prefix: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let mut found = Vec::new();
        for entry in self.prefix(space, prefix).take(limit) {
            found.push(entry?.key().to_vec());
        }
        Ok(found)
    }

    /// Up to `limit` messages of every thread of the shard, in key order
    /// past the message key `after`.
    pub fn message_candidates(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<MessageCandidate>> {
        let start = match after {
            Some(key) => Bound::Excluded(key.to_vec()),
            None => Bound::Unbounded,
        };
        let mut found = Vec::new();
        for entry in self.range(Space::Messages, (start, Bound::Unbounded)) {
            let entry = entry?;
            let key = entry.key();
            let thread = keys::thread_of(key);
            let ts = key
                .len()
                .checked_sub(8)
                .and_then(|at| key[at..].try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("message key".into()))?;
            let (deleted, json) = unflag(entry.value())?;
            found.push(MessageCandidate {
                key: key.to_vec(),
                thread: String::from_utf8(thread.to_vec())
                    .map_err(|_| StoreError::Corrupt("message key is not UTF-8".into()))?,
                ts,
                deleted,
                json: json.to_vec(),
            });
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }
}
