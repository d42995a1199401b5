//! The only code that calls the storage engine (fjall's `lsm-tree`). One
//! [`Store`] per shard, owned by that shard's executor; nothing else opens
//! its directory.
//!
//! Writes are expressed as [`Ops`]: the shard appends their encoding to its
//! write-ahead log first, then applies them here with the WAL record's LSN
//! as the LSM sequence number. There is no second journal: the WAL is the
//! only log, and the newest LSN inside the tree's on-disk tables tells
//! recovery where WAL replay starts (see [`Store::applied_lsn`]).
//!
//! One tree holds every keyspace; each key starts with its [`Space`] byte.
//! One tree means one memtable and one flush per shard, and one persisted
//! LSN that covers every keyspace.
//!
//! The shard thread only inserts into the active memtable, rotates it when
//! it is full and reads. Flushing sealed memtables to tables and compaction
//! run on the shard's maintenance thread ([`maintenance`]); the shard never
//! sleeps for them. When flushing falls behind by
//! [`SEALED_MEMTABLES_MAX`] memtables, writes are refused with
//! [`StoreError::Busy`] before they reach the WAL, so memory stays bounded.
//!
//! The tree's version lock is held by the maintenance thread while it
//! registers new tables, across several fsyncs (tens of ms on a busy disk).
//! So the write path takes no tree lock: the shard inserts into its own
//! handle on the active memtable (a lock-free skiplist that only the shard
//! replaces, at rotation), and admission and metrics read counters the
//! maintenance thread publishes. Reads and rotation still take the lock.
//!
//! Thread and participant records, which every post rewrites, wait in a
//! per-shard map until the memtable is sealed or a scan of their keyspace
//! needs them in the tree ([`deferred`]): one memtable insert per post
//! instead of three, and no superseded versions to flush and compact.
//!
//! Message values and author index values are one flag byte followed by the
//! wire JSON. The flag says whether the item is soft-deleted, so a page scan
//! can skip deleted items and copy live JSON out without parsing it.

mod deferred;
pub mod keys;
mod maintenance;
mod purge;

pub use purge::{MessageCandidate, ThreadKeys};

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use lsm_tree::{
    AbstractTree, AnyTree, Guard, InternalValue, Memtable, SeqNo, SequenceNumberCounter, ValueType,
};

use crate::model::{Message, Participant, Role, ThreadRecord, Version};
use crate::wal::record::Lsn;

/// Storage failures. Corruption means a stored value no longer parses,
/// which is a bug or disk damage, never a client error.
#[derive(Debug)]
pub enum StoreError {
    Engine(lsm_tree::Error),
    Corrupt(String),
    /// Flushing is behind (or failing): writes wait for it to catch up.
    Busy(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Engine(err) => write!(f, "storage engine: {err}"),
            StoreError::Corrupt(what) => write!(f, "corrupt stored value: {what}"),
            StoreError::Busy(why) => write!(f, "store busy: {why}"),
        }
    }
}

impl From<lsm_tree::Error> for StoreError {
    fn from(err: lsm_tree::Error) -> Self {
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

/// Sizes of one shard's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Block cache for the tables.
    pub cache_bytes: u64,
    /// Bytes the active memtable may hold before it is sealed and flushed.
    pub memtable_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Sealed memtables that may wait for their flush before writes are
/// refused: a shard's memtables stay under 5 x `memtable_bytes`.
pub const SEALED_MEMTABLES_MAX: usize = 4;

/// Reads see every applied write: nothing here reads at an old snapshot.
const READ_ALL: SeqNo = SeqNo::MAX;

pub struct Store {
    tree: AnyTree,
    /// The tree's active memtable, inserted into without the tree's lock.
    active: std::cell::RefCell<Arc<Memtable>>,
    /// Memtables this shard has sealed since open (see `admit_write`).
    rotations: std::cell::Cell<u64>,
    /// The tree's sequence counters, kept past every applied LSN so that
    /// its own version numbers never fall behind the data.
    seqno: SequenceNumberCounter,
    visible_seqno: SequenceNumberCounter,
    applied_lsn: std::cell::Cell<Lsn>,
    /// Memtables this shard sealed, with their rotation numbers, until
    /// they are flushed (point reads and `hide_after` read them).
    sealed: std::cell::RefCell<Vec<(u64, Arc<Memtable>)>>,
    /// Thread and participant records written since the active memtable
    /// was sealed, not yet in it (see [`deferred`]).
    deferred: std::cell::RefCell<deferred::Deferred>,
    /// The newest LSN the write-ahead log has on disk, kept current by the
    /// log: no memtable holding a later write is flushed to tables, so the
    /// tables never hold a write that the log may lose (see `maintenance`).
    log_durable: Arc<std::sync::atomic::AtomicU64>,
    memtable_bytes: u64,
    maintenance: maintenance::Handle,
    /// Held for the store's life: a second opener (another server or an
    /// embedded `Db` on the same directory) is refused.
    _lock: std::fs::File,
}

/// Creates `dir` if needed and takes an exclusive lock on `<dir>.lock`
/// beside it (the tree's own directory holds only the tree's files).
fn lock_directory(dir: &Path) -> StoreResult<std::fs::File> {
    use std::os::fd::AsRawFd;
    let busy = |why: String| StoreError::Busy(format!("{}: {why}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|err| busy(err.to_string()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.with_extension("lock"))
        .map_err(|err| busy(err.to_string()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(busy("in use by another process or store".into()));
    }
    Ok(file)
}

/// The keyspace an operation writes to; its number is part of the WAL
/// payload format and the first byte of every stored key, and must not
/// change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Threads = 1,
    Messages = 2,
    AuthorThreads = 3,
    Versions = 4,
    Replies = 5,
    Changes = 6,
    Participants = 7,
    MemberThreads = 8,
    /// Threads erased from the API whose keys are still being removed.
    Erasures = 9,
}

impl Space {
    const ALL: [Space; 9] = [
        Space::Threads,
        Space::Messages,
        Space::AuthorThreads,
        Space::Versions,
        Space::Replies,
        Space::Changes,
        Space::Participants,
        Space::MemberThreads,
        Space::Erasures,
    ];

    /// Whether this space's writes wait in [`deferred`] until the memtable
    /// is sealed: the records a post rewrites.
    fn deferred(self) -> bool {
        matches!(self, Space::Threads | Space::Participants)
    }

    fn from_code(code: u8) -> Option<Space> {
        Space::ALL
            .iter()
            .copied()
            .find(|space| *space as u8 == code)
    }
}

/// Set on an op's keyspace byte in the WAL payload when the op removes its
/// key (and then no value follows).
const REMOVE_FLAG: u8 = 0x80;

/// Whether the shard seals its active memtable, holding `active_bytes`,
/// after a write. Sealing takes the tree's version lock, which a running
/// compaction holds across an fsync while it registers its tables (tens of
/// milliseconds on a slow disk, the whole shard waiting): so while one
/// runs the shard keeps filling the active memtable, up to twice its size.
fn seal_now(active_bytes: u64, limit: u64, compacting: bool) -> bool {
    match compacting {
        false => active_bytes >= limit,
        true => active_bytes >= limit.saturating_mul(2),
    }
}

/// `key` as stored: its keyspace byte first.
fn stored_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    write_stored_key(&mut stored, space, key);
    stored
}

/// Makes `stored` hold `key` as stored, reusing its allocation.
fn write_stored_key(stored: &mut Vec<u8>, space: Space, key: &[u8]) {
    stored.clear();
    stored.push(space as u8);
    stored.extend_from_slice(key);
}

/// A put (`Some` value) or removal (a tombstone) of a stored key, as the
/// memtable holds it under sequence number `lsn`.
fn memtable_item(stored: &[u8], value: Option<&[u8]>, lsn: u64) -> InternalValue {
    match value {
        Some(value) => InternalValue::from_components(stored, value, lsn, ValueType::Value),
        None => InternalValue::new_tombstone(stored, lsn),
    }
}

/// The first key past every key of `space`.
fn space_end(space: Space) -> Vec<u8> {
    vec![space as u8 + 1]
}

fn stored_bound(space: Space, bound: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(key) => Bound::Included(stored_key(space, &key)),
        Bound::Excluded(key) => Bound::Excluded(stored_key(space, &key)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// One atomic group of writes: puts (`Some` value) and removals (`None`,
/// stored as tombstones, which compaction drops with what they cover).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ops(Vec<(Space, Vec<u8>, Option<Vec<u8>>)>);

impl Ops {
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((space, key, Some(value)));
    }

    /// Removes `key` (hard deletion: erasure and retention only).
    pub fn remove(&mut self, space: Space, key: Vec<u8>) {
        self.0.push((space, key, None));
    }

    pub fn extend(&mut self, other: Ops) {
        self.0.extend(other.0);
    }

    /// Ids of the threads whose record or messages these writes change.
    pub fn touched_threads(&self) -> impl Iterator<Item = &[u8]> {
        let touched = self
            .0
            .iter()
            .filter(|(space, ..)| matches!(space, Space::Threads | Space::Messages))
            .map(|(_, key, _)| keys::thread_of(key));
        without_repeats(touched)
    }

    /// Ids of the threads whose participants these writes change.
    pub fn touched_participants(&self) -> impl Iterator<Item = &[u8]> {
        let touched = self
            .0
            .iter()
            .filter(|(space, ..)| matches!(space, Space::Participants))
            .map(|(_, key, _)| keys::thread_of(key));
        without_repeats(touched)
    }

    /// The thread the first thread-keyed write belongs to: in clustered
    /// mode, every write of one command falls in that thread's partition.
    pub fn first_thread(&self) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(space, ..)| !matches!(space, Space::AuthorThreads | Space::MemberThreads))
            .map(|(_, key, _)| keys::thread_of(key))
    }

    /// WAL payload:
    ///
    /// ```text
    /// count u32 LE, then per op: space u8, key length u16 LE, key, and
    /// for a put: value length u32 LE, value. A removal sets bit 0x80 of
    /// its space byte and has no value.
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .0
            .iter()
            .map(|(_, k, v)| 7 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(4 + size);
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (space, key, value) in &self.0 {
            let flag = if value.is_none() { REMOVE_FLAG } else { 0 };
            out.push(*space as u8 | flag);
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            if let Some(value) = value {
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    /// Adds a write given as stored, its keyspace byte first (as a
    /// [`Snapshot`] yields it); false when that byte names no keyspace.
    pub fn put_stored(&mut self, stored: &[u8], value: Vec<u8>) -> bool {
        let Some((&code, key)) = stored.split_first() else {
            return false;
        };
        let Some(space) = Space::from_code(code) else {
            return false;
        };
        self.put(space, key.to_vec(), value);
        true
    }

    /// How many writes this group holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
            let code = take(&mut bytes, 1)?[0];
            let space = Space::from_code(code & !REMOVE_FLAG)?;
            let key_len = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().ok()?) as usize;
            let key = take(&mut bytes, key_len)?.to_vec();
            if code & REMOVE_FLAG != 0 {
                ops.remove(space, key);
                continue;
            }
            let value_len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
            let value = take(&mut bytes, value_len)?.to_vec();
            ops.put(space, key, value);
        }
        bytes.is_empty().then_some(ops)
    }
}

/// `ids` without an id equal to the one just before it: a command's
/// writes come thread by thread, so a post's thread record and message
/// name their thread once.
fn without_repeats<'a>(ids: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    let mut previous: Option<&[u8]> = None;
    ids.filter(move |id| previous.replace(id) != Some(*id))
}

impl Store {
    /// Opens (or creates) the shard's tree and starts its maintenance
    /// thread. `label` names the shard in logs and the thread's name.
    pub fn open(dir: &Path, options: StoreOptions, label: &str) -> StoreResult<Store> {
        let lock = lock_directory(dir)?;
        let cache = Arc::new(lsm_tree::Cache::with_capacity_bytes(options.cache_bytes));
        // The counters are shared with the tree (they are reference counted).
        let seqno = SequenceNumberCounter::default();
        let visible_seqno = SequenceNumberCounter::default();
        let tree = lsm_tree::Config::new(dir, seqno.clone(), visible_seqno.clone())
            .use_cache(cache)
            .open()?;
        // Every LSN up to the newest one in a table is in the tables: the
        // shard flushes whole memtables, in the order they were sealed.
        let persisted = tree.get_highest_persisted_seqno().unwrap_or(0);
        seqno.fetch_max(persisted + 1);
        visible_seqno.fetch_max(persisted + 1);
        let log_durable = Arc::new(std::sync::atomic::AtomicU64::new(persisted));
        let maintenance = maintenance::Handle::start(
            tree.clone(),
            seqno.clone(),
            persisted,
            log_durable.clone(),
            label,
        )
        .map_err(|err| StoreError::Busy(format!("cannot start maintenance: {err}")))?;
        Ok(Store {
            active: std::cell::RefCell::new(tree.active_memtable()),
            rotations: std::cell::Cell::new(0),
            tree,
            seqno,
            visible_seqno,
            applied_lsn: std::cell::Cell::new(Lsn(persisted)),
            sealed: std::cell::RefCell::new(Vec::new()),
            deferred: std::cell::RefCell::new(deferred::Deferred::default()),
            log_durable,
            memtable_bytes: options.memtable_bytes,
            maintenance,
            _lock: lock,
        })
    }

    /// The LSN of the last operations applied. Right after `open` it is the
    /// newest LSN on disk, where WAL replay resumes.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn.get()
    }

    /// The watermark the shard's write-ahead log keeps at its newest LSN on
    /// disk; memtables are flushed to tables only up to it.
    pub fn log_durable_watermark(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.log_durable.clone()
    }

    /// Drops every applied write past `lsn`, the last one the log has on
    /// disk, once the log failed: those writes will not survive a restart,
    /// so they must not be seen now either. The tables hold nothing past
    /// the log (see `maintenance`), so the memtables are rebuilt from their
    /// items up to `lsn`, in memory; maintenance stops for good, since the
    /// shard takes no more writes until restart. Returns false, doing
    /// nothing, while the maintenance thread is flushing: call again later.
    pub fn hide_after(&self, lsn: Lsn) -> bool {
        if !self.maintenance.begin_rotation(self.applied_lsn.get().0) {
            return false;
        }
        self.maintenance.halt();
        let flushed = self.maintenance.flushed_through();
        let mut memtables: Vec<Arc<Memtable>> = self
            .sealed
            .borrow_mut()
            .drain(..)
            .filter(|(rotation, _)| *rotation > flushed)
            .map(|(_, memtable)| memtable)
            .collect();
        memtables.push(self.active.borrow().clone());
        // The tree drops its sealed memtables with the active one only when
        // the active one holds something: a marker (space 0 is never read)
        // makes sure no write past `lsn` stays behind in them.
        let marker = InternalValue::new_tombstone(vec![0u8], 1);
        self.active.borrow().insert(marker);
        self.tree.clear_active_memtable();
        let active = self.tree.active_memtable();
        for item in memtables.iter().flat_map(|memtable| memtable.iter()) {
            if item.key.seqno <= lsn.0 && item.key.user_key.first() != Some(&0) {
                active.insert(item);
            }
        }
        *self.active.borrow_mut() = active;
        self.deferred.borrow_mut().forget_after(lsn.0);
        self.settle_deferred();
        self.maintenance.end_rotation();
        true
    }

    /// Every LSN up to this one is in the tree's tables on disk, so the WAL
    /// may drop it. Advances as the maintenance thread flushes.
    pub fn persisted_lsn(&self) -> Lsn {
        Lsn(self.maintenance.persisted())
    }

    /// Refuses a write while flushing is too far behind or failing, before
    /// the write reaches the WAL.
    pub fn admit_write(&self) -> StoreResult<()> {
        self.forget_flushed();
        if self.sealed_waiting() < SEALED_MEMTABLES_MAX as u64 {
            return Ok(());
        }
        let why = self
            .maintenance
            .last_error()
            .unwrap_or_else(|| "memtable flushes are behind".to_owned());
        Err(StoreError::Busy(why))
    }

    /// Applies one logged group of writes under its LSN. Never blocks on
    /// I/O: a full memtable is sealed and handed to the maintenance thread.
    pub fn apply(&self, lsn: Lsn, ops: Ops) -> StoreResult<()> {
        assert!(
            lsn > self.applied_lsn.get(),
            "LSNs must be applied in order"
        );
        let mut memtable_bytes = 0;
        {
            let active = self.active.borrow();
            let mut deferred = self.deferred.borrow_mut();
            let durable = self.log_durable.load(std::sync::atomic::Ordering::Acquire);
            // One buffer for every stored key: the memtable and the
            // deferred map copy what they keep.
            let longest = ops.0.iter().map(|(_, key, _)| key.len()).max();
            let mut stored = Vec::with_capacity(1 + longest.unwrap_or(0));
            for (space, key, value) in ops.0 {
                write_stored_key(&mut stored, space, &key);
                if space.deferred() {
                    deferred.put(&stored, lsn.0, value, durable);
                    continue;
                }
                (_, memtable_bytes) =
                    active.insert(memtable_item(&stored, value.as_deref(), lsn.0));
            }
            memtable_bytes += deferred.bytes();
        }
        self.seqno.fetch_max(lsn.0 + 1);
        self.visible_seqno.fetch_max(lsn.0 + 1);
        self.applied_lsn.set(lsn);
        if seal_now(
            memtable_bytes,
            self.memtable_bytes,
            self.maintenance.compacting(),
        ) {
            self.rotate();
        }
        Ok(())
    }

    /// Seals the active memtable and asks for its flush. Only this shard
    /// rotates, so the new active memtable stays the tree's until the next
    /// rotation.
    /// Returns false when the maintenance thread is deciding on a flush:
    /// the memtable stays active a little longer and the next write (or
    /// `persist`) tries again, so a flush never takes a memtable sealed
    /// after it checked the log's watermark.
    fn rotate(&self) -> bool {
        if !self.maintenance.begin_rotation(self.applied_lsn.get().0) {
            return false;
        }
        // The sealed memtable holds every write up to the applied LSN, so
        // the log may be truncated up to it once it is flushed.
        self.settle_deferred();
        let sealed = self.tree.rotate_memtable();
        self.maintenance.end_rotation();
        if let Some(sealed) = sealed {
            *self.active.borrow_mut() = self.tree.active_memtable();
            self.rotations.set(self.rotations.get() + 1);
            self.forget_flushed();
            self.sealed
                .borrow_mut()
                .push((self.rotations.get(), sealed));
            self.maintenance.flush_soon(self.rotations.get());
        }
        true
    }

    /// Hands this shard's handles on the memtables the maintenance thread
    /// has flushed to that thread, so their memory goes there when the tree
    /// lets them go, not on the shard. Runs
    /// on every write and every second (checkpoints), and is cheap when
    /// there is nothing to drop.
    pub fn forget_flushed(&self) {
        let flushed = self.maintenance.flushed_through();
        let mut sealed = self.sealed.borrow_mut();
        let done = sealed
            .iter()
            .take_while(|(rotation, _)| *rotation <= flushed)
            .count();
        if done > 0 {
            let memtables = sealed.drain(..done).map(|(_, memtable)| memtable);
            self.maintenance.release(memtables.collect());
        }
    }

    /// Memtables sealed by this shard and not yet flushed.
    fn sealed_waiting(&self) -> u64 {
        self.rotations.get() - self.maintenance.flushed_through()
    }

    /// Seals the memtable and asks for a major compaction after its
    /// flush, without waiting: the shard polls [`Store::major_compacted`]
    /// for the ticket returned. `None` while the maintenance thread is
    /// deciding on a flush: ask again a moment later.
    pub fn major_compact_soon(&self) -> Option<StoreResult<u64>> {
        if !self.rotate() {
            return None;
        }
        let ticket = self.maintenance.major_compacted() + 1;
        Some(
            self.maintenance
                .major_compact_soon(ticket)
                .map(|()| ticket)
                .map_err(StoreError::Busy),
        )
    }

    /// The newest major compaction ticket served; the last error (if any)
    /// says whether it failed.
    pub fn major_compacted(&self) -> (u64, Option<String>) {
        (
            self.maintenance.major_compacted(),
            self.maintenance.last_error(),
        )
    }

    /// Flushes everything applied so far to tables and waits for it (clean
    /// shutdown: the next start replays nothing). Blocks the calling thread.
    pub fn persist(&self) -> StoreResult<()> {
        while !self.rotate() {
            // The maintenance thread holds the flush decision for a moment.
            std::thread::yield_now();
        }
        self.maintenance.flush_and_wait().map_err(StoreError::Busy)
    }

    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<lsm_tree::Slice>> {
        let key = stored_key(space, key);
        if let Some(found) = self.deferred.borrow().get(&key) {
            return Ok(found.map(lsm_tree::Slice::from));
        }
        if let Some(found) = self.get_from_memtables(&key) {
            return Ok(found);
        }
        Ok(self.tree.get(key, READ_ALL)?)
    }

    /// A key's newest value in this shard's own memtables (active, then
    /// sealed newest first): `Some(None)` for a deleted key, `None` when
    /// they do not hold it. Recent keys (the thread and participant records
    /// every post reads) are found here without the tree's version lock,
    /// which the maintenance thread holds across fsyncs while it registers
    /// tables; a memtable already flushed holds the same items as its
    /// tables, so reading it is still right.
    fn get_from_memtables(&self, key: &[u8]) -> Option<Option<lsm_tree::Slice>> {
        let found = |memtable: &Memtable| {
            memtable
                .get(key, READ_ALL)
                .map(|item| (!item.is_tombstone()).then_some(item.value))
        };
        if let Some(value) = found(&self.active.borrow()) {
            return Some(value);
        }
        let sealed = self.sealed.borrow();
        sealed
            .iter()
            .rev()
            .find_map(|(_, memtable)| found(memtable))
    }

    /// Moves the deferred records into the active memtable, for a scan or
    /// a rotation that must see the whole tree. Their LSNs are older than
    /// the memtable's newest, which is how the tree orders versions anyway.
    fn settle_deferred(&self) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.is_empty() {
            return;
        }
        let active = self.active.borrow();
        for (key, lsn, value) in deferred.drain() {
            active.insert(memtable_item(&key, value.as_deref(), lsn));
        }
    }

    /// Keys and values of `space` inside `range` (keys without the space
    /// byte), in key order.
    fn range(&self, space: Space, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> SpaceIter {
        let start = match stored_bound(space, range.0) {
            Bound::Unbounded => Bound::Included(vec![space as u8]),
            bound => bound,
        };
        let end = match stored_bound(space, range.1) {
            Bound::Unbounded => Bound::Excluded(space_end(space)),
            bound => bound,
        };
        if space.deferred() {
            self.settle_deferred();
        }
        SpaceIter(self.tree.range((start, end), READ_ALL, None))
    }

    fn prefix(&self, space: Space, prefix: &[u8]) -> SpaceIter {
        if space.deferred() {
            self.settle_deferred();
        }
        SpaceIter(self.tree.prefix(stored_key(space, prefix), READ_ALL, None))
    }

    pub fn get_thread(&self, thread_id: &str) -> StoreResult<Option<ThreadRecord>> {
        match self.get(Space::Threads, &keys::thread(thread_id))? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    /// Writes of a thread record and its author index entry.
    pub fn thread_ops(record: &ThreadRecord) -> Ops {
        let thread = &record.thread;
        let mut ops = Store::thread_record_ops(record);
        ops.put(
            Space::AuthorThreads,
            keys::author_thread(&thread.author, thread.created_ts, &thread.id),
            flagged(thread.deleted, thread),
        );
        ops
    }

    /// The write of a thread record alone, for changes that leave its
    /// author index entry's position and deleted flag as they are.
    pub fn thread_record_ops(record: &ThreadRecord) -> Ops {
        let mut ops = Ops::default();
        ops.put(
            Space::Threads,
            keys::thread(&record.thread.id),
            encode(record),
        );
        ops
    }

    /// Writes of a message and, when given, its thread's record (which
    /// tracks the newest message timestamp).
    /// `change_ts` is when this change happened: the live tail replays
    /// changes in that order. A new message (`change_ts == message.ts`)
    /// gets no `changes` entry: the message key itself records it, which
    /// saves a memtable insert on every post.
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
        if change_ts != message.ts {
            ops.put(
                Space::Changes,
                keys::change(&message.thread, change_ts),
                message.ts.to_be_bytes().to_vec(),
            );
        }
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

    /// Writes a participant record (`removed` flags it gone) and, for
    /// anyone but the owner, their entry in the member index.
    pub fn participant_ops(
        ops: &mut Ops,
        thread_id: &str,
        participant: &Participant,
        removed: bool,
    ) {
        ops.put(
            Space::Participants,
            keys::participant(thread_id, &participant.user_id),
            flagged(removed, participant),
        );
        if participant.role != Role::Owner {
            let flag = if removed { FLAG_DELETED } else { FLAG_LIVE };
            ops.put(
                Space::MemberThreads,
                keys::member_thread(&participant.user_id, thread_id),
                vec![flag],
            );
        }
    }

    /// A participant's record, `None` when never added or removed.
    pub fn get_participant(
        &self,
        thread_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<Participant>> {
        match self.get(Space::Participants, &keys::participant(thread_id, user_id))? {
            None => Ok(None),
            Some(bytes) => match unflag(&bytes)? {
                (true, _) => Ok(None),
                (false, json) => decode(json).map(Some),
            },
        }
    }

    /// Visits a thread's current participants in user id order, strictly
    /// past `after` in `direction`, until `visit` returns false.
    pub fn scan_participants(
        &self,
        thread_id: &str,
        after: Option<&str>,
        direction: Direction,
        mut visit: impl FnMut(Participant) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let prefix = keys::message_prefix(thread_id);
        let mut upper = prefix.clone();
        // 0x00 separator + 1: the smallest key past every entry of this thread.
        if let Some(last) = upper.last_mut() {
            *last = 0x01;
        }
        let boundary = after.map(|user| keys::participant(thread_id, user));
        let range = match (direction, boundary) {
            (_, None) => (Bound::Included(prefix), Bound::Excluded(upper)),
            (Direction::Ascending, Some(key)) => (Bound::Excluded(key), Bound::Excluded(upper)),
            (Direction::Descending, Some(key)) => (Bound::Included(prefix), Bound::Excluded(key)),
        };
        walk(
            self.range(Space::Participants, range),
            direction,
            |entry| match unflag(entry.value())? {
                (true, _) => Ok(true),
                (false, json) => visit(decode(json)?),
            },
        )
    }

    /// Ids of the threads on this shard `user_id` takes part in without
    /// owning them.
    pub fn member_threads(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let prefix = keys::member_thread(user_id, "");
        let mut ids = Vec::new();
        for entry in self.prefix(Space::MemberThreads, &prefix) {
            let entry = entry?;
            if entry.value() == [FLAG_LIVE] {
                let id = entry.key()[prefix.len()..].to_vec();
                ids.push(
                    String::from_utf8(id)
                        .map_err(|_| StoreError::Corrupt("member index key".into()))?,
                );
            }
        }
        Ok(ids)
    }

    /// Past versions of a message, oldest first.
    /// Past version `version` of the message at `message_ts`.
    pub fn version(
        &self,
        thread_id: &str,
        message_ts: u64,
        version: u32,
    ) -> StoreResult<Option<Version>> {
        let key = keys::version(thread_id, message_ts, version);
        self.get(Space::Versions, &key)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    pub fn versions(&self, thread_id: &str, message_ts: u64) -> StoreResult<Vec<Version>> {
        self.prefix(
            Space::Versions,
            &keys::versions_prefix(thread_id, message_ts),
        )
        .map(|entry| decode(entry?.value()))
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
            self.range(Space::Replies, (start, end)),
            direction,
            |entry| {
                let ts = keys::reply_ts(&prefix, entry.key())
                    .ok_or_else(|| StoreError::Corrupt("reply key".into()))?;
                found.push(ts);
                Ok(found.len() < limit)
            },
        )?;
        Ok(found)
    }

    /// `(change_ts, message_ts)` of a thread's changes after `after`, oldest
    /// first, at most `limit`. A message's creation is its own change (at
    /// its timestamp) and has no `changes` entry; edits, reactions, deletes
    /// and restores have one. Entries written for creations by earlier
    /// versions (`change_ts == message_ts`) are skipped, not doubled.
    pub fn changes_after(
        &self,
        thread_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, u64)>> {
        let mut created = Vec::new();
        self.scan_messages(
            thread_id,
            (Bound::Excluded(after), Bound::Unbounded),
            Direction::Ascending,
            |ts, _, _| {
                created.push((ts, ts));
                Ok(created.len() < limit)
            },
        )?;
        let updated = self.updates_after(thread_id, after, limit)?;
        let mut merged = Vec::with_capacity(limit.min(created.len() + updated.len()));
        let (mut created, mut updated) = (
            created.into_iter().peekable(),
            updated.into_iter().peekable(),
        );
        while merged.len() < limit {
            let next = match (created.peek(), updated.peek()) {
                (Some(a), Some(b)) if a.0 <= b.0 => created.next(),
                (Some(_), Some(_)) | (None, Some(_)) => updated.next(),
                (Some(_), None) => created.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        Ok(merged)
    }

    /// `(change_ts, message_ts)` of the `changes` entries after `after`
    /// that are not a message's creation, oldest first, at most `limit`.
    fn updates_after(
        &self,
        thread_id: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, u64)>> {
        let start = keys::change(thread_id, after);
        let end = keys::change(thread_id, u64::MAX);
        let prefix = keys::message_prefix(thread_id);
        let mut found = Vec::new();
        for entry in self.range(
            Space::Changes,
            (Bound::Excluded(start), Bound::Included(end)),
        ) {
            let entry = entry?;
            let change_ts = entry
                .key()
                .strip_prefix(prefix.as_slice())
                .and_then(|rest| rest.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("change key".into()))?;
            let message_ts = entry
                .value()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("change value".into()))?;
            if change_ts == message_ts {
                continue;
            }
            found.push((change_ts, message_ts));
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    pub fn get_message(&self, thread_id: &str, ts: u64) -> StoreResult<Option<Message>> {
        match self.get(Space::Messages, &keys::message(thread_id, ts))? {
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
        let iter = self.range(Space::Messages, (start, end));
        walk(iter, direction, |entry| {
            let ts = keys::message_ts(thread_id, entry.key())
                .ok_or_else(|| StoreError::Corrupt("message key outside its thread".into()))?;
            let (deleted, json) = unflag(entry.value())?;
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
        let iter = self.range(Space::AuthorThreads, range);
        walk(iter, direction, |entry| {
            let (ts, id) = keys::author_thread_position(author, entry.key())
                .ok_or_else(|| StoreError::Corrupt("author index key".into()))?;
            let (deleted, json) = unflag(entry.value())?;
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
        let iter = self.range(Space::Threads, range);
        walk(iter, direction, |entry| {
            let id = std::str::from_utf8(entry.key())
                .map_err(|_| StoreError::Corrupt("thread key is not UTF-8".into()))?;
            visit(id, decode(entry.value())?)
        })
    }

    /// Messages stored on this shard, deleted ones included. Walks every
    /// key, so callers count once and keep the number up to date.
    pub fn count_messages(&self) -> StoreResult<u64> {
        self.count_messages_of(&|_| true)
    }

    /// Messages of the threads `counted` accepts: a scan of every message,
    /// asking once per thread.
    pub fn count_messages_of(&self, counted: &dyn Fn(&str) -> bool) -> StoreResult<u64> {
        let (mut count, mut last): (u64, Option<(Vec<u8>, bool)>) = (0, None);
        for entry in self.range(Space::Messages, (Bound::Unbounded, Bound::Unbounded)) {
            let entry = entry?;
            let thread = keys::thread_of(entry.key());
            let known = last.as_ref().filter(|(id, _)| id == thread);
            let yes = match known {
                Some((_, yes)) => *yes,
                None => {
                    let yes = std::str::from_utf8(thread).is_ok_and(counted);
                    last = Some((thread.to_vec(), yes));
                    yes
                }
            };
            count += u64::from(yes);
        }
        Ok(count)
    }

    /// Memtable, table and flush counters, for metrics. Table figures are
    /// as the maintenance thread last saw them, so a scrape takes no lock.
    pub fn metrics(&self) -> crate::metrics::StoreSample {
        let shape = self.maintenance.shape();
        crate::metrics::StoreSample {
            memtable_bytes: self.active.borrow().size()
                + self.deferred.borrow().bytes()
                + shape.sealed_bytes,
            sealed_memtables: self.sealed_waiting(),
            tables: shape.tables,
            l0_runs: shape.l0_runs,
            disk_bytes: shape.disk_bytes,
            applied_lsn: self.applied_lsn.get().0,
            persisted_lsn: self.maintenance.persisted(),
            flushes: self.maintenance.flushes(),
            compactions: self.maintenance.compactions(),
        }
    }
}

/// Every item applied up to [`Snapshot::lsn`], frozen when the snapshot
/// was taken and readable on any thread while the shard goes on writing
/// (a backup reads it on a thread of its own). It pins the tables and
/// memtables of that moment, so compaction cannot take them away under it;
/// items applied later are hidden by their sequence number.
pub struct Snapshot {
    pub lsn: Lsn,
    items: Box<dyn Iterator<Item = lsm_tree::Result<InternalValue>> + Send>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("lsn", &self.lsn).finish()
    }
}

impl Iterator for Snapshot {
    /// A stored key (keyspace byte first) and its value, in key order.
    type Item = StoreResult<(lsm_tree::Slice, lsm_tree::Slice)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = match self.items.next()? {
                Ok(item) => item,
                Err(err) => return Some(Err(err.into())),
            };
            // A tombstone (a removed key) has no content to copy.
            if item.key.value_type == ValueType::Value {
                return Some(Ok((item.key.user_key, item.value)));
            }
        }
    }
}

impl Store {
    /// A [`Snapshot`] of everything applied so far. Must run on the shard
    /// thread, between applies, so that its LSN is a whole number of
    /// records. It reads the tree's newest version (the one plain reads
    /// use) and filters by sequence number: asking the tree for the
    /// version of an older sequence number fails once flushes have moved
    /// the tree's own counter past the WAL's.
    pub fn snapshot(&self) -> StoreResult<Snapshot> {
        self.settle_deferred();
        let lsn = self.applied_lsn.get();
        let AnyTree::Standard(tree) = &self.tree else {
            return Err(StoreError::Corrupt(
                "the store is not a standard tree".into(),
            ));
        };
        let latest = tree.get_version_history_lock().latest_version();
        let items =
            lsm_tree::Tree::create_internal_range::<Vec<u8>, _>(latest, &.., lsn.0 + 1, None);
        Ok(Snapshot {
            lsn,
            items: Box::new(items),
        })
    }
}

/// A stored key (without its keyspace byte) and its value.
struct Entry {
    key: lsm_tree::Slice,
    value: lsm_tree::Slice,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.key[1..]
    }

    fn value(&self) -> &[u8] {
        &self.value
    }
}

/// A range of one keyspace, in either direction.
struct SpaceIter(Box<dyn DoubleEndedIterator<Item = lsm_tree::IterGuardImpl> + Send>);

fn entry(guard: lsm_tree::IterGuardImpl) -> StoreResult<Entry> {
    let (key, value) = guard.into_inner()?;
    Ok(Entry { key, value })
}

impl Iterator for SpaceIter {
    type Item = StoreResult<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(entry)
    }
}

impl DoubleEndedIterator for SpaceIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(entry)
    }
}

/// Drives a range iterator in `direction` until `step` returns false.
fn walk(
    iter: SpaceIter,
    direction: Direction,
    mut step: impl FnMut(Entry) -> StoreResult<bool>,
) -> StoreResult<()> {
    match direction {
        Direction::Ascending => {
            for entry in iter {
                if !step(entry?)? {
                    break;
                }
            }
        }
        Direction::Descending => {
            for entry in iter.rev() {
                if !step(entry?)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail: no maps with non-string
    // keys, no custom serializers that error. Room for a thread record
    // without growing.
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, value).expect("model types always serialize");
    out
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
    fn a_running_compaction_defers_sealing_up_to_twice_the_memtable_size() {
        assert!(!seal_now(99, 100, false));
        assert!(seal_now(100, 100, false));
        assert!(!seal_now(100, 100, true));
        assert!(!seal_now(199, 100, true));
        assert!(seal_now(200, 100, true));
        assert!(seal_now(u64::MAX, u64::MAX, true));
    }

    #[test]
    fn ops_round_trip_and_reject_garbage() {
        let mut ops = Ops::default();
        ops.put(Space::Messages, b"k1".to_vec(), b"value".to_vec());
        ops.put(Space::AuthorThreads, Vec::new(), vec![0; 300]);
        ops.remove(Space::Versions, b"gone".to_vec());
        ops.put(Space::Erasures, b"t".to_vec(), Vec::new());
        let bytes = ops.encode();
        assert_eq!(Ops::decode(&bytes), Some(ops));
        for cut in 0..bytes.len() {
            assert_eq!(Ops::decode(&bytes[..cut]), None, "cut {cut}");
        }
        let mut bad_space = bytes.clone();
        bad_space[4] = 10;
        assert_eq!(Ops::decode(&bad_space), None);
        let mut trailing = bytes;
        trailing.push(0);
        assert_eq!(Ops::decode(&trailing), None);
    }

    // A post writes its thread record, message and participant: each
    // thread is named once per run of writes to it, and only the spaces
    // that hold thread state count.
    #[test]
    fn touched_threads_name_each_run_of_writes_once() {
        let mut ops = Ops::default();
        ops.put(Space::Threads, keys::thread("t"), Vec::new());
        ops.put(Space::Messages, keys::message("t", 1), Vec::new());
        ops.put(Space::Participants, keys::participant("t", "u"), Vec::new());
        ops.put(Space::Participants, keys::participant("t", "v"), Vec::new());
        ops.put(Space::AuthorThreads, b"u\0t".to_vec(), Vec::new());
        ops.put(Space::Messages, keys::message("s", 1), Vec::new());
        ops.put(Space::Threads, keys::thread("t"), Vec::new());
        let touched: Vec<&[u8]> = ops.touched_threads().collect();
        assert_eq!(touched, [&b"t"[..], b"s", b"t"]);
        let participants: Vec<&[u8]> = ops.touched_participants().collect();
        assert_eq!(participants, [&b"t"[..]]);
    }

    // Clustered mode counts the messages of some threads only; a thread
    // whose id is a prefix of another's is still told apart.
    #[test]
    fn messages_are_counted_per_thread_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_logged(dir.path(), StoreOptions::default());
        let mut ops = Ops::default();
        for (thread, count) in [("a", 3), ("ab", 2), ("b", 1)] {
            for ts in 0..count {
                ops.put(Space::Messages, keys::message(thread, ts), b"{}".to_vec());
            }
        }
        store.apply(Lsn(1), ops).unwrap();
        let asked = std::cell::RefCell::new(Vec::new());
        let counted = store
            .count_messages_of(&|thread| {
                asked.borrow_mut().push(thread.to_owned());
                thread != "ab"
            })
            .unwrap();
        assert_eq!(counted, 4);
        assert_eq!(asked.into_inner(), ["a", "ab", "b"]);
        assert_eq!(store.count_messages().unwrap(), 6);
    }

    /// A store whose writes all count as on disk in the log (these tests
    /// have no log).
    fn open_logged(dir: &Path, options: StoreOptions) -> Store {
        let store = Store::open(dir, options, "test").unwrap();
        store
            .log_durable_watermark()
            .store(u64::MAX, std::sync::atomic::Ordering::Release);
        store
    }

    #[test]
    fn memtables_holding_writes_past_the_logs_watermark_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), "test").unwrap();
        let watermark = store.log_durable_watermark();
        let mut ops = Ops::default();
        ops.put(Space::Threads, b"t".to_vec(), b"{}".to_vec());
        store.apply(Lsn(3), ops).unwrap();
        watermark.store(2, std::sync::atomic::Ordering::Release);
        assert!(store.persist().is_err(), "LSN 3 is not in the log yet");
        assert_eq!(store.persisted_lsn(), Lsn(0));
        watermark.store(3, std::sync::atomic::Ordering::Release);
        store.persist().unwrap();
        assert_eq!(store.persisted_lsn(), Lsn(3));
        // After the log failed at 5, reads stop at what it has, whether in
        // a table (3), a sealed memtable (4) or the active one (5).
        store.apply(Lsn(4), ops_putting(b"u")).unwrap();
        store.rotate();
        for (lsn, key) in [(5, b"v"), (6, b"w")] {
            store.apply(Lsn(lsn), ops_putting(key)).unwrap();
        }
        assert!(store.hide_after(Lsn(5)));
        for key in [b"t", b"u", b"v"] {
            assert!(store.get(Space::Threads, key).unwrap().is_some());
        }
        assert!(store.get(Space::Threads, b"w").unwrap().is_none());
        assert!(store.persist().is_err(), "nothing is flushed any more");
    }

    fn ops_putting(key: &[u8]) -> Ops {
        let mut ops = Ops::default();
        ops.put(Space::Threads, key.to_vec(), b"{}".to_vec());
        ops
    }

    #[test]
    fn changes_merge_creations_with_updates_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), "test").unwrap();
        let mut ops = Ops::default();
        for ts in [10, 20, 30] {
            ops.put(Space::Messages, keys::message("t", ts), flagged(false, &ts));
        }
        // An edit of 10 at 25, a reaction on 30 at 40, and a creation
        // entry as earlier versions wrote them (20 at 20).
        for (change_ts, message_ts) in [(25u64, 10u64), (40, 30), (20, 20)] {
            ops.put(
                Space::Changes,
                keys::change("t", change_ts),
                message_ts.to_be_bytes().to_vec(),
            );
        }
        store.apply(Lsn(1), ops).unwrap();
        let all = [(10, 10), (20, 20), (25, 10), (30, 30), (40, 30)];
        assert_eq!(store.changes_after("t", 0, 100).unwrap(), all);
        assert_eq!(store.changes_after("t", 20, 100).unwrap(), all[2..]);
        assert_eq!(store.changes_after("t", 0, 2).unwrap(), all[..2]);
        assert_eq!(store.changes_after("t", 40, 100).unwrap(), []);
    }

    #[test]
    fn apply_records_the_lsn_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_logged(dir.path(), StoreOptions::default());
            assert_eq!(store.applied_lsn(), Lsn(0));
            let mut ops = Ops::default();
            ops.put(Space::Threads, b"t".to_vec(), b"{}".to_vec());
            store.apply(Lsn(7), ops).unwrap();
            store.persist().unwrap();
        }
        let store = open_logged(dir.path(), StoreOptions::default());
        assert_eq!(store.applied_lsn(), Lsn(7));
    }

    #[test]
    fn full_memtables_flush_in_the_background_and_reopen_resumes_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            cache_bytes: 1 << 20,
            memtable_bytes: 64 * 1024,
        };
        let value = vec![b'x'; 1000];
        let key = |n: u64| keys::message("t", n);
        {
            let store = open_logged(dir.path(), options);
            for lsn in 1..=300 {
                let mut ops = Ops::default();
                ops.put(Space::Messages, key(lsn), value.clone());
                // Writes are refused while flushes are behind; a flush
                // that completes admits them again.
                while let Err(StoreError::Busy(_)) = store.admit_write() {
                    store.maintenance.flush_and_wait().unwrap();
                }
                store.apply(Lsn(lsn), ops).unwrap();
            }
            // 300 KB through 64 KiB memtables: several were sealed. Ask for
            // a flush of what is sealed and wait for it.
            store.maintenance.flush_and_wait().unwrap();
            let persisted = store.persisted_lsn();
            assert!(persisted.0 >= 60, "persisted {persisted:?}");
            assert!(persisted.0 < 300, "the active memtable is not flushed");
            // Reads see memtable and tables alike.
            for lsn in [1, persisted.0, 300] {
                assert_eq!(
                    store.get(Space::Messages, &key(lsn)).unwrap().unwrap(),
                    value
                );
            }
            assert_eq!(store.count_messages().unwrap(), 300);
            assert!(store.metrics().tables > 0);
        }
        // Without a clean persist, a reopened store resumes from its tables:
        // WAL replay brings back the rest.
        let store = open_logged(dir.path(), options);
        let resumed = store.applied_lsn().0;
        assert!((60..300).contains(&resumed), "resumed at {resumed}");
        assert!(store.get(Space::Messages, &key(resumed)).unwrap().is_some());
        assert!(
            store
                .get(Space::Messages, &key(resumed + 1))
                .unwrap()
                .is_none()
        );
        store.persist().unwrap();
    }

    #[test]
    fn persist_flushes_everything_and_a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_logged(dir.path(), StoreOptions::default());
            let refused = Store::open(dir.path(), StoreOptions::default(), "test");
            assert!(matches!(refused, Err(StoreError::Busy(_))));
            let mut ops = Ops::default();
            ops.put(Space::Threads, b"t".to_vec(), b"{}".to_vec());
            store.apply(Lsn(5), ops).unwrap();
            store.persist().unwrap();
            assert_eq!(store.persisted_lsn(), Lsn(5));
        }
        let store = open_logged(dir.path(), StoreOptions::default());
        assert_eq!(store.applied_lsn(), Lsn(5));
        assert_eq!(
            store.get(Space::Threads, b"t").unwrap().unwrap(),
            b"{}".as_slice()
        );
        // Other keyspaces do not see the key.
        assert!(store.get(Space::Messages, b"t").unwrap().is_none());
    }

    #[test]
    fn a_snapshot_keeps_its_items_through_later_writes_flushes_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            cache_bytes: 1 << 20,
            memtable_bytes: 64 * 1024,
        };
        let store = open_logged(dir.path(), options);
        let write = |lsn: u64, value: &[u8]| {
            let mut ops = Ops::default();
            ops.put(
                Space::Messages,
                keys::message("t", lsn % 50),
                value.to_vec(),
            );
            while let Err(StoreError::Busy(_)) = store.admit_write() {
                store.persist().unwrap();
            }
            store.apply(Lsn(lsn), ops).unwrap();
        };
        for lsn in 1..=100 {
            write(lsn, &[b'a'; 1000]);
        }
        // The counters move past the WAL's LSN when tables are registered.
        store.persist().unwrap();
        let snapshot = store.snapshot().unwrap();
        assert_eq!(snapshot.lsn, Lsn(100));
        // Overwrite every key, then flush and compact it all away.
        for lsn in 101..=400 {
            write(lsn, &[b'b'; 1000]);
        }
        store.persist().unwrap();
        let items: Vec<_> = snapshot.map(|item| item.unwrap()).collect();
        assert_eq!(items.len(), 50);
        for (key, value) in &items {
            assert_eq!(key[0], Space::Messages as u8);
            assert!(value.iter().all(|byte| *byte == b'a'));
        }
        let mut copy = Ops::default();
        assert!(copy.put_stored(&items[0].0, items[0].1.to_vec()));
        assert!(!copy.put_stored(&[0x7f, 1], Vec::new()));
        assert_eq!(copy.len(), 1);
    }

    fn record(id: &str) -> ThreadRecord {
        crate::model::example_record(id)
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
        let store = open_logged(dir.path(), StoreOptions::default());
        let mut ops = Ops::default();
        for id in ["a", "ab", "ab-2", "abc", "b", "Z_9"] {
            ops.extend(Store::thread_ops(&record(id)));
        }
        store.apply(Lsn(1), ops).unwrap();
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

    fn value_of(store: &Store, space: Space, key: &[u8]) -> Option<Vec<u8>> {
        store.get(space, key).unwrap().map(|value| value.to_vec())
    }

    fn values_under(store: &Store, space: Space, prefix: &[u8]) -> Vec<Vec<u8>> {
        store
            .prefix(space, prefix)
            .map(|entry| entry.unwrap().value().to_vec())
            .collect()
    }

    #[test]
    fn rewritten_records_reach_scans_and_the_tables_as_their_newest_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_logged(dir.path(), StoreOptions::default());
            for (lsn, text) in [(1, "one"), (2, "two"), (3, "three")] {
                let mut ops = Ops::default();
                ops.put(Space::Participants, b"t\0u".to_vec(), text.into());
                store.apply(Lsn(lsn), ops).unwrap();
            }
            let mut ops = Ops::default();
            ops.remove(Space::Participants, b"t\0u".to_vec());
            ops.put(Space::Participants, b"t\0v".to_vec(), b"four".to_vec());
            store.apply(Lsn(4), ops).unwrap();
            assert_eq!(value_of(&store, Space::Participants, b"t\0u"), None);
            assert_eq!(
                values_under(&store, Space::Participants, b"t\0"),
                [b"four".to_vec()]
            );
            let mut ops = Ops::default();
            ops.put(Space::Participants, b"t\0u".to_vec(), b"five".to_vec());
            store.apply(Lsn(5), ops).unwrap();
            store.persist().unwrap();
        }
        // Only the tables are left: the log would replay nothing past 5.
        let store = open_logged(dir.path(), StoreOptions::default());
        assert_eq!(store.applied_lsn(), Lsn(5));
        let stored = |key: &[u8]| value_of(&store, Space::Participants, key);
        assert_eq!(stored(b"t\0u"), Some(b"five".to_vec()));
        assert_eq!(stored(b"t\0v"), Some(b"four".to_vec()));
    }

    #[test]
    fn after_a_log_failure_a_rewritten_record_reads_as_the_log_kept_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default(), "test").unwrap();
        let watermark = store.log_durable_watermark();
        for lsn in 1..=4 {
            // The log has each write on disk before the next is applied,
            // except the last two.
            watermark.store((lsn - 1).min(2), std::sync::atomic::Ordering::Release);
            let mut ops = Ops::default();
            ops.put(Space::Threads, b"t".to_vec(), vec![b'0' + lsn as u8]);
            store.apply(Lsn(lsn), ops).unwrap();
        }
        assert_eq!(value_of(&store, Space::Threads, b"t"), Some(b"4".to_vec()));
        assert!(store.hide_after(Lsn(2)));
        assert_eq!(value_of(&store, Space::Threads, b"t"), Some(b"2".to_vec()));
        assert_eq!(values_under(&store, Space::Threads, b"t"), [b"2".to_vec()]);
    }
}
