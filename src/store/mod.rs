//! The only code that calls fjall. One [`Store`] per shard, owned by that
//! shard's executor; nothing else opens its directory.
//!
//! Writes are expressed as [`Ops`]: the shard appends their encoding to its
//! write-ahead log first, then applies them here together with the LSN, in
//! one fjall batch. fjall's own journal is not synced per write (the WAL is
//! the source of truth); `applied_lsn` tells recovery where replay starts.
//!
//! Message values and author index values are one flag byte followed by the
//! wire JSON. The flag says whether the item is soft-deleted, so a page scan
//! can skip deleted items and copy live JSON out without parsing it.

pub mod keys;

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::model::{Message, ThreadRecord, Version};
use crate::wal::record::Lsn;

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
    versions: Keyspace,
    replies: Keyspace,
    changes: Keyspace,
    meta: Keyspace,
    applied_lsn: std::cell::Cell<Lsn>,
}

/// Key in the `meta` keyspace holding the last applied LSN (u64 LE).
const APPLIED_LSN_KEY: &[u8] = b"applied_lsn";

/// The keyspace an operation writes to; its number is part of the WAL
/// payload format and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Threads = 1,
    Messages = 2,
    AuthorThreads = 3,
    Versions = 4,
    Replies = 5,
    Changes = 6,
}

/// One atomic group of writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ops(Vec<(Space, Vec<u8>, Vec<u8>)>);

impl Ops {
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((space, key, value));
    }

    pub fn extend(&mut self, other: Ops) {
        self.0.extend(other.0);
    }

    /// Ids of the threads whose record or messages these writes change.
    pub fn touched_threads(&self) -> impl Iterator<Item = &[u8]> {
        self.0
            .iter()
            .filter(|(space, ..)| matches!(space, Space::Threads | Space::Messages))
            .map(|(_, key, _)| keys::thread_of(key))
    }

    /// WAL payload:
    ///
    /// ```text
    /// count u32 LE, then per op: space u8, key length u16 LE, key,
    /// value length u32 LE, value
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.0.iter().map(|(_, k, v)| 7 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(4 + size);
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (space, key, value) in &self.0 {
            out.push(*space as u8);
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Option<Ops> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = rest;
            Some(head)
        }
        let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let mut ops = Ops::default();
        for _ in 0..count {
            let space = match take(&mut bytes, 1)?[0] {
                1 => Space::Threads,
                2 => Space::Messages,
                3 => Space::AuthorThreads,
                4 => Space::Versions,
                5 => Space::Replies,
                6 => Space::Changes,
                _ => return None,
            };
            let key_len = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().ok()?) as usize;
            let key = take(&mut bytes, key_len)?.to_vec();
            let value_len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
            let value = take(&mut bytes, value_len)?.to_vec();
            ops.put(space, key, value);
        }
        bytes.is_empty().then_some(ops)
    }
}

/// Background flush/compaction threads per shard. One keeps a shard's
/// maintenance off the request cores' toes on small machines.
const FJALL_WORKER_THREADS: usize = 1;

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<Store> {
        let db = Database::builder(dir)
            .worker_threads(FJALL_WORKER_THREADS)
            .cache_size(cache_bytes)
            // The WAL makes writes durable; fjall's journal is synced only
            // at checkpoints, so nothing is fsynced twice.
            .manual_journal_persist(true)
            .open()?;
        let threads = db.keyspace("threads", KeyspaceCreateOptions::default)?;
        let messages = db.keyspace("messages", KeyspaceCreateOptions::default)?;
        let author_threads = db.keyspace("author_threads", KeyspaceCreateOptions::default)?;
        let versions = db.keyspace("versions", KeyspaceCreateOptions::default)?;
        let replies = db.keyspace("replies", KeyspaceCreateOptions::default)?;
        let changes = db.keyspace("changes", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let applied = match meta.get(APPLIED_LSN_KEY)? {
            None => Lsn(0),
            Some(bytes) => Lsn(u64::from_le_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("applied_lsn".into()))?,
            )),
        };
        Ok(Store {
            db,
            threads,
            messages,
            author_threads,
            versions,
            replies,
            changes,
            meta,
            applied_lsn: std::cell::Cell::new(applied),
        })
    }

    /// The LSN of the last operations applied (durable only after `persist`).
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn.get()
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Threads => &self.threads,
            Space::Messages => &self.messages,
            Space::AuthorThreads => &self.author_threads,
            Space::Versions => &self.versions,
            Space::Replies => &self.replies,
            Space::Changes => &self.changes,
        }
    }

    /// Applies one logged group of writes and records its LSN, atomically.
    pub fn apply(&self, lsn: Lsn, ops: &Ops) -> StoreResult<()> {
        assert!(
            lsn > self.applied_lsn.get(),
            "LSNs must be applied in order"
        );
        let mut batch = self.db.batch();
        for (space, key, value) in &ops.0 {
            batch.insert(self.keyspace(*space), key.as_slice(), value.as_slice());
        }
        batch.insert(&self.meta, APPLIED_LSN_KEY, lsn.0.to_le_bytes());
        batch.commit()?;
        self.applied_lsn.set(lsn);
        Ok(())
    }

    /// A handle for syncing from a blocking thread (see `persist`).
    pub fn database(&self) -> Database {
        self.db.clone()
    }

    pub fn get_thread(&self, thread_id: &str) -> StoreResult<Option<ThreadRecord>> {
        match self.threads.get(keys::thread(thread_id))? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    /// Writes of a thread record and its author index entry.
    pub fn thread_ops(record: &ThreadRecord) -> Ops {
        let thread = &record.thread;
        let mut ops = Ops::default();
        ops.put(Space::Threads, keys::thread(&thread.id), encode(record));
        ops.put(
            Space::AuthorThreads,
            keys::author_thread(&thread.author, thread.created_ts, &thread.id),
            flagged(thread.deleted, thread),
        );
        ops
    }

    /// Writes of a message and, when given, its thread's record (which
    /// tracks the newest message timestamp).
    /// `change_ts` is when this change happened: the live tail replays
    /// changes in that order.
    pub fn message_ops(record: Option<&ThreadRecord>, message: &Message, change_ts: u64) -> Ops {
        let mut ops = Ops::default();
        if let Some(record) = record {
            ops.put(
                Space::Threads,
                keys::thread(&record.thread.id),
                encode(record),
            );
        }
        ops.put(
            Space::Messages,
            keys::message(&message.thread, message.ts),
            flagged(message.deleted, message),
        );
        ops.put(
            Space::Changes,
            keys::change(&message.thread, change_ts),
            message.ts.to_be_bytes().to_vec(),
        );
        ops
    }

    /// Keeps a past version of a message.
    pub fn version_op(ops: &mut Ops, message: &Message, version: &Version) {
        ops.put(
            Space::Versions,
            keys::version(&message.thread, message.ts, version.version),
            encode(version),
        );
    }

    /// Indexes `reply` under the message it answers.
    pub fn reply_op(ops: &mut Ops, reply: &Message, parent_ts: u64) {
        ops.put(
            Space::Replies,
            keys::reply(&reply.thread, parent_ts, reply.ts),
            Vec::new(),
        );
    }

    /// Past versions of a message, oldest first.
    pub fn versions(&self, thread_id: &str, message_ts: u64) -> StoreResult<Vec<Version>> {
        self.versions
            .prefix(keys::versions_prefix(thread_id, message_ts))
            .map(|guard| decode(&guard.value()?))
            .collect()
    }

    /// Timestamps of the direct replies to a message, strictly past `after`
    /// in `direction`, at most `limit`.
    pub fn replies(
        &self,
        thread_id: &str,
        parent_ts: u64,
        after: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        let prefix = keys::versions_prefix(thread_id, parent_ts);
        let start = match (direction, after) {
            (Direction::Ascending, Some(ts)) => {
                Bound::Excluded(keys::reply(thread_id, parent_ts, ts))
            }
            _ => Bound::Included(keys::reply(thread_id, parent_ts, 0)),
        };
        let end = match (direction, after) {
            (Direction::Descending, Some(ts)) => {
                Bound::Excluded(keys::reply(thread_id, parent_ts, ts))
            }
            _ => Bound::Included(keys::reply(thread_id, parent_ts, u64::MAX)),
        };
        let mut found = Vec::new();
        walk(
            self.replies.range::<Vec<u8>, _>((start, end)),
            direction,
            |guard| {
                let key = guard.key()?;
                let ts = keys::reply_ts(&prefix, &key)
                    .ok_or_else(|| StoreError::Corrupt("reply key".into()))?;
                found.push(ts);
                Ok(found.len() < limit)
            },
        )?;
        Ok(found)
    }

    /// `(change_ts, message_ts)` of a thread's changes after `after`, oldest
    /// first, at most `limit`.
    pub fn changes_after(
        &self,
        thread_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, u64)>> {
        let start = keys::change(thread_id, after);
        let end = keys::change(thread_id, u64::MAX);
        let prefix = keys::message_prefix(thread_id);
        let mut found = Vec::new();
        for guard in self
            .changes
            .range::<Vec<u8>, _>((Bound::Excluded(start), Bound::Included(end)))
        {
            let (key, value) = guard.into_inner()?;
            let change_ts = key
                .strip_prefix(prefix.as_slice())
                .and_then(|rest| rest.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("change key".into()))?;
            let message_ts = value
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("change value".into()))?;
            found.push((change_ts, message_ts));
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    /// The newest change of a thread, if any.
    pub fn last_change(&self, thread_id: &str) -> StoreResult<Option<u64>> {
        let start = keys::change(thread_id, 0);
        let end = keys::change(thread_id, u64::MAX);
        let prefix = keys::message_prefix(thread_id);
        match self.changes.range::<Vec<u8>, _>(start..=end).next_back() {
            None => Ok(None),
            Some(guard) => {
                let key = guard.key()?;
                Ok(key
                    .strip_prefix(prefix.as_slice())
                    .and_then(|rest| rest.try_into().ok())
                    .map(u64::from_be_bytes))
            }
        }
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

    /// Visits every thread whose id starts with `prefix`, in id order,
    /// strictly past `after` in `direction`, until `visit` returns false.
    /// `visit` gets `(thread_id, record)`. Serves the admin listing, which
    /// is not scoped to one author.
    pub fn scan_threads(
        &self,
        prefix: &str,
        after: Option<&str>,
        direction: Direction,
        mut visit: impl FnMut(&str, ThreadRecord) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let lower = keys::thread(prefix);
        // Thread ids are ASCII, so `prefix 0xff` sorts after every id that
        // starts with `prefix` and before every id that does not.
        let mut upper = lower.clone();
        upper.push(0xff);
        let range = match (direction, after.map(keys::thread)) {
            (_, None) => (Bound::Included(lower), Bound::Excluded(upper)),
            (Direction::Ascending, Some(key)) => (Bound::Excluded(key), Bound::Excluded(upper)),
            (Direction::Descending, Some(key)) => (Bound::Included(lower), Bound::Excluded(key)),
        };
        let iter = self.threads.range::<Vec<u8>, _>(range);
        walk(iter, direction, |guard| {
            let (key, value) = guard.into_inner()?;
            let id = std::str::from_utf8(&key)
                .map_err(|_| StoreError::Corrupt("thread key is not UTF-8".into()))?;
            visit(id, decode(&value)?)
        })
    }

    /// Messages stored on this shard, deleted ones included. Walks every
    /// key, so callers count once and keep the number up to date.
    pub fn count_messages(&self) -> StoreResult<u64> {
        Ok(self.messages.len()? as u64)
    }

    /// fjall's memtable and table counts, for metrics. These fjall calls
    /// are marked experimental there, so they are read here only.
    pub fn metrics(&self) -> crate::metrics::StoreSample {
        let spaces = [
            ("threads", &self.threads),
            ("messages", &self.messages),
            ("author_threads", &self.author_threads),
            ("versions", &self.versions),
            ("replies", &self.replies),
            ("changes", &self.changes),
            ("meta", &self.meta),
        ];
        crate::metrics::StoreSample {
            memtable_bytes: self.db.write_buffer_size(),
            sealed_memtables: spaces
                .iter()
                .map(|(_, space)| space.sealed_memtable_count() as u64)
                .sum(),
            tables: spaces
                .iter()
                .map(|(name, space)| (*name, space.table_count() as u64))
                .collect(),
            journals: self.db.journal_count() as u64,
            applied_lsn: self.applied_lsn.get().0,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_and_reject_garbage() {
        let mut ops = Ops::default();
        ops.put(Space::Messages, b"k1".to_vec(), b"value".to_vec());
        ops.put(Space::AuthorThreads, Vec::new(), vec![0; 300]);
        let bytes = ops.encode();
        assert_eq!(Ops::decode(&bytes), Some(ops));
        for cut in 0..bytes.len() {
            assert_eq!(Ops::decode(&bytes[..cut]), None, "cut {cut}");
        }
        let mut bad_space = bytes.clone();
        bad_space[4] = 9;
        assert_eq!(Ops::decode(&bad_space), None);
        let mut trailing = bytes;
        trailing.push(0);
        assert_eq!(Ops::decode(&trailing), None);
    }

    #[test]
    fn apply_records_the_lsn_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.applied_lsn(), Lsn(0));
            let mut ops = Ops::default();
            ops.put(Space::Threads, b"t".to_vec(), b"{}".to_vec());
            store.apply(Lsn(7), &ops).unwrap();
            store.persist().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.applied_lsn(), Lsn(7));
    }

    fn record(id: &str) -> ThreadRecord {
        ThreadRecord {
            thread: crate::model::Thread {
                id: id.into(),
                title: format!("title {id}"),
                author: "alice".into(),
                slug: None,
                created_ts: 1,
                updated_ts: 1,
                deleted: false,
                sealed_title: None,
            },
            last_message_ts: 0,
            dek: None,
            counts: None,
        }
    }

    fn scanned(
        store: &Store,
        prefix: &str,
        after: Option<&str>,
        direction: Direction,
        limit: usize,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        store
            .scan_threads(prefix, after, direction, |id, record| {
                assert_eq!(record.thread.id, id);
                ids.push(id.to_owned());
                Ok(ids.len() < limit)
            })
            .unwrap();
        ids
    }

    #[test]
    fn thread_scans_follow_prefix_cursor_and_direction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut ops = Ops::default();
        for id in ["a", "ab", "ab-2", "abc", "b", "Z_9"] {
            ops.extend(Store::thread_ops(&record(id)));
        }
        store.apply(Lsn(1), &ops).unwrap();
        let all = Direction::Ascending;
        assert_eq!(
            scanned(&store, "", None, all, 100),
            ["Z_9", "a", "ab", "ab-2", "abc", "b"]
        );
        assert_eq!(scanned(&store, "ab", None, all, 100), ["ab", "ab-2", "abc"]);
        assert_eq!(scanned(&store, "ab", Some("ab"), all, 100), ["ab-2", "abc"]);
        assert_eq!(
            scanned(&store, "ab", None, Direction::Descending, 100),
            ["abc", "ab-2", "ab"]
        );
        assert_eq!(
            scanned(&store, "ab", Some("abc"), Direction::Descending, 1),
            ["ab-2"]
        );
        assert!(scanned(&store, "c", None, all, 100).is_empty());
        // The author index lives in another keyspace and never shows up here.
        assert_eq!(
            scanned(&store, "alice", None, all, 100),
            Vec::<String>::new()
        );
    }
}
