//! The only code that calls fjall. One [`Store`] per shard, owned by that
//! shard's executor; nothing else opens its directory.
//!
//! Message values and author index values are one flag byte followed by the
//! wire JSON. The flag says whether the item is soft-deleted, so a page scan
//! can skip deleted items and copy live JSON out without parsing it.

pub mod keys;

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::model::{Message, ThreadRecord};

/// Storage failures. Corruption means a stored value no longer parses,
/// which is a bug or disk damage, never a client error.
#[derive(Debug)]
pub enum StoreError {
    Engine(fjall::Error),
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Engine(err) => write!(f, "storage engine: {err}"),
            StoreError::Corrupt(what) => write!(f, "corrupt stored value: {what}"),
        }
    }
}

impl From<fjall::Error> for StoreError {
    fn from(err: fjall::Error) -> Self {
        StoreError::Engine(err)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Scan direction over time-ordered keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

pub struct Store {
    db: Database,
    threads: Keyspace,
    messages: Keyspace,
    author_threads: Keyspace,
}

/// Background flush/compaction threads per shard. One keeps a shard's
/// maintenance off the request cores' toes on small machines.
const FJALL_WORKER_THREADS: usize = 1;

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<Store> {
        let db = Database::builder(dir)
            .worker_threads(FJALL_WORKER_THREADS)
            .cache_size(cache_bytes)
            .open()?;
        let threads = db.keyspace("threads", KeyspaceCreateOptions::default)?;
        let messages = db.keyspace("messages", KeyspaceCreateOptions::default)?;
        let author_threads = db.keyspace("author_threads", KeyspaceCreateOptions::default)?;
        Ok(Store {
            db,
            threads,
            messages,
            author_threads,
        })
    }

    pub fn get_thread(&self, thread_id: &str) -> StoreResult<Option<ThreadRecord>> {
        match self.threads.get(keys::thread(thread_id))? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    /// Writes a thread record and its author index entry in one batch.
    pub fn put_thread(&self, record: &ThreadRecord) -> StoreResult<()> {
        let thread = &record.thread;
        let mut batch = self.db.batch();
        batch.insert(&self.threads, keys::thread(&thread.id), encode(record));
        batch.insert(
            &self.author_threads,
            keys::author_thread(&thread.author, thread.created_ts, &thread.id),
            flagged(thread.deleted, thread),
        );
        batch.commit()?;
        Ok(())
    }

    /// Writes a message and its thread's record (which tracks the newest
    /// message timestamp) atomically.
    pub fn put_message(&self, record: &ThreadRecord, message: &Message) -> StoreResult<()> {
        let mut batch = self.db.batch();
        batch.insert(
            &self.threads,
            keys::thread(&record.thread.id),
            encode(record),
        );
        batch.insert(
            &self.messages,
            keys::message(&message.thread, message.ts),
            flagged(message.deleted, message),
        );
        batch.commit()?;
        Ok(())
    }

    pub fn get_message(&self, thread_id: &str, ts: u64) -> StoreResult<Option<Message>> {
        match self.messages.get(keys::message(thread_id, ts))? {
            None => Ok(None),
            Some(bytes) => decode(unflag(&bytes)?.1).map(Some),
        }
    }

    /// Visits a thread's messages with `ts` inside `range`, in `direction`,
    /// until `visit` returns false. `visit` gets `(ts, deleted, json)`.
    pub fn scan_messages(
        &self,
        thread_id: &str,
        range: (Bound<u64>, Bound<u64>),
        direction: Direction,
        mut visit: impl FnMut(u64, bool, &[u8]) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let start = match range.0 {
            Bound::Included(ts) => Bound::Included(keys::message(thread_id, ts)),
            Bound::Excluded(ts) => Bound::Excluded(keys::message(thread_id, ts)),
            Bound::Unbounded => Bound::Included(keys::message_prefix(thread_id)),
        };
        let end = match range.1 {
            Bound::Included(ts) => Bound::Included(keys::message(thread_id, ts)),
            Bound::Excluded(ts) => Bound::Excluded(keys::message(thread_id, ts)),
            Bound::Unbounded => Bound::Included(keys::message(thread_id, u64::MAX)),
        };
        let iter = self.messages.range::<Vec<u8>, _>((start, end));
        walk(iter, direction, |guard| {
            let (key, value) = guard.into_inner()?;
            let ts = keys::message_ts(thread_id, &key)
                .ok_or_else(|| StoreError::Corrupt("message key outside its thread".into()))?;
            let (deleted, json) = unflag(&value)?;
            visit(ts, deleted, json)
        })
    }

    /// Visits an author's threads ordered by `(created_ts, thread_id)`,
    /// strictly past `after` in `direction`, until `visit` returns false.
    /// `visit` gets `(created_ts, thread_id, deleted, json)`.
    pub fn scan_author_threads(
        &self,
        author: &str,
        after: Option<(u64, &str)>,
        direction: Direction,
        mut visit: impl FnMut(u64, &str, bool, &[u8]) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let prefix = keys::author_prefix(author);
        let mut upper = prefix.clone();
        // 0x00 separator + 1 = 0x01: the smallest key past every entry of this author.
        if let Some(last) = upper.last_mut() {
            *last = 0x01;
        }
        let boundary = after.map(|(ts, id)| keys::author_thread(author, ts, id));
        let range = match (direction, boundary) {
            (_, None) => (Bound::Included(prefix), Bound::Excluded(upper)),
            (Direction::Ascending, Some(key)) => (Bound::Excluded(key), Bound::Excluded(upper)),
            (Direction::Descending, Some(key)) => (Bound::Included(prefix), Bound::Excluded(key)),
        };
        let iter = self.author_threads.range::<Vec<u8>, _>(range);
        walk(iter, direction, |guard| {
            let (key, value) = guard.into_inner()?;
            let (ts, id) = keys::author_thread_position(author, &key)
                .ok_or_else(|| StoreError::Corrupt("author index key".into()))?;
            let (deleted, json) = unflag(&value)?;
            visit(ts, &id, deleted, json)
        })
    }

    /// Makes everything written so far survive power loss.
    pub fn persist(&self) -> StoreResult<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

/// Drives a range iterator in `direction` until `step` returns false.
fn walk(
    iter: fjall::Iter,
    direction: Direction,
    mut step: impl FnMut(fjall::Guard) -> StoreResult<bool>,
) -> StoreResult<()> {
    match direction {
        Direction::Ascending => {
            for guard in iter {
                if !step(guard)? {
                    break;
                }
            }
        }
        Direction::Descending => {
            for guard in iter.rev() {
                if !step(guard)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail: no maps with non-string
    // keys, no custom serializers that error.
    serde_json::to_vec(value).expect("model types always serialize")
}

const FLAG_LIVE: u8 = 0;
const FLAG_DELETED: u8 = 1;

fn flagged<T: serde::Serialize>(deleted: bool, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(if deleted { FLAG_DELETED } else { FLAG_LIVE });
    serde_json::to_writer(&mut out, value).expect("model types always serialize");
    out
}

fn unflag(value: &[u8]) -> StoreResult<(bool, &[u8])> {
    match value.split_first() {
        Some((&FLAG_LIVE, json)) => Ok((false, json)),
        Some((&FLAG_DELETED, json)) => Ok((true, json)),
        _ => Err(StoreError::Corrupt("unknown value flag".into())),
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt(err.to_string()))
}
