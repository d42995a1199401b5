//! The chat operations one shard performs on the threads it owns.
//!
//! An [`Engine`] is owned by exactly one executor and is the only writer of
//! its [`Store`]; commands for its threads are executed here one at a time,
//! which is what makes per-thread timestamps strictly increasing without
//! locks.
//!
//! A mutation is resolved here (ids, timestamps, versions), its storage
//! operations are appended to the shard's [`Wal`] and applied to the store,
//! and the reply waits for the durability the configured mode promises.
//!
//! Nothing a client is told rests on a write the log may still lose. In
//! `sync` mode every reply, a read's too, waits until each write it could
//! have seen is on disk (a read of a thread waits for that thread's
//! writes in flight, a listing for every write in flight); if the log
//! fails meanwhile the reply is a 503 instead. Once the log has failed,
//! reads see only what it has on disk (the store reads at that snapshot
//! and the caches start over), so a refused write is never visible, and
//! the store never flushes past the log (see `store::maintenance`), so it
//! does not come back after a restart either. In `batch` and `none` modes
//! writes are visible once logged, and hidden again if their flush fails.
//! Clustered, in every mode, a reply also waits until the partition logs
//! acknowledged each write it could have seen.

mod authors;
mod body_sealing;
mod command;
mod commands;
mod members;
mod page;
mod participants;
mod purge;
mod record_cache;
mod reply;
mod seal_job;
mod store_rebuild;
mod tail_cache;
#[cfg(test)]
mod testing;
mod thread_keys;
mod user_streams;

pub use purge::{
    PURGE_BUDGET_DEFAULT, PurgeCounts, PurgeCursor, PurgePhase, PurgeReport, PurgeRequest,
    RetentionPolicy,
};
pub use seal_job::{SEAL_BATCH_DEFAULT, SealProgress, SealState};
pub use store_rebuild::StoreRecovery;

pub use page::{PAGE_WHOLE_BYTES_MAX, PIECE_BYTES_MAX, PageKeys, PagePlan, Pagination, Piece};

pub use command::{
    AllThreadsPage, Caller, Command, EngineError, MessagePage, MessagePosition, Order,
    ParticipantCursor, ParticipantPage, SecretKey, StreamEvent, ThreadPage, ThreadPosition,
    ThreadSort, VersionPage, VersionPosition,
};
pub use participants::{PARTICIPANTS_PER_THREAD_DEFAULT, UNREAD_SCAN_MAX, removed_user};
pub use reply::{
    Membership, MessageList, MessageRow, Outcome, PageRenderer, ParticipantList, PlannedPage,
    ReadMarker, Reply, ShardStats, ThreadEntry, ThreadPart, UserThread, VersionList,
};
pub use user_streams::topic as user_topic;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crypto::vault::Vault;
use crate::crypto::{CryptoError, Dek, Kms, WrappedKey};
use crate::model::{self, Version};
use crate::model::{
    Message, MessageId, SealedMessageRef, Thread, ThreadId, ThreadRecord, splice_opened_body,
};
use crate::runtime;
use crate::shard::ShardId;
use crate::store::{Ops, Store, StoreError, StoreOptions};
use crate::wal::record::Lsn;
use crate::wal::recovery::{self, RecoveryPolicy};
use crate::wal::{Durability, Wal, WalError, WalOptions, WalStats};

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        EngineError::Storage(err.to_string())
    }
}

pub struct Engine {
    shard: ShardId,
    store: Store,
    wal: Rc<Wal>,
    /// Set when applying a logged write to the store failed: the store no
    /// longer matches the log, so writes stop until a restart replays it.
    write_failure: RefCell<Option<String>>,
    /// Live-tail listeners: thread -> core -> subscriptions on that core.
    listeners: RefCell<HashMap<String, HashMap<usize, usize>>>,
    /// With encryption on: the KMS and unwrapped thread keys.
    sealing: Option<Sealing>,
    /// Last timestamp this shard handed out; keeps thread timestamps
    /// strictly increasing even when the wall clock steps back.
    clock_ns: Cell<u64>,
    /// State of the generator for message id salts.
    salt_state: Cell<u64>,
    /// The checkpoint task; it holds the engine, so [`Engine::stop`]
    /// cancels it to let the engine (and the store's lock) be dropped.
    checkpointer: RefCell<Option<runtime::JoinHandle<()>>>,
    /// The retention job (see `purge`), cancelled by [`Engine::stop`] too.
    retention_job: RefCell<Option<runtime::JoinHandle<()>>>,
    /// The encrypt-threads job (see `seal_job`), stopped by [`Engine::stop`].
    seal_job: seal_job::SealJob,
    /// This engine, for the jobs a command starts.
    me: std::rc::Weak<Engine>,
    /// Newest-first first pages as HTTP renders them, dropped on every
    /// write to their thread.
    tail_pages: tail_cache::TailCache,
    /// Decoded records of recently used threads (see `record_cache`).
    thread_records: record_cache::RecordCache,
    /// Messages stored on this shard; counted on the first `Stats` (a full
    /// scan, so not at startup) and kept current by every post after it.
    message_count: Cell<Option<u64>>,
    /// Threads stored on this shard, kept the same way.
    thread_count: Cell<Option<u64>>,
    /// Listed authors' threads by last activity, and their counts.
    authors: authors::Authors,
    /// Listed users' threads they take part in without owning them.
    members: members::Members,
    /// Participants a thread may have besides its owner.
    participants_max: Cell<usize>,
    /// Users following all their threads (`GET /frontend/v1/stream`).
    user_streams: user_streams::UserStreams,
    /// Threads whose newest write may not be settled yet, with that
    /// write's LSN: in `sync` mode not on disk in the log, clustered also
    /// not acknowledged by its partition's log. A command on the thread
    /// answers once it is settled. Entries at or below the settled LSN
    /// (`settled_lsn`) are stale.
    unlogged: RefCell<HashMap<Vec<u8>, Lsn>>,
    /// Set once the log failed and reads were cut back to what it holds.
    log_failed: Cell<bool>,
    /// Clustered mode: writes go to their partition's log too, and a
    /// client is answered only once that log has them. `None` otherwise
    /// (one branch per write, nothing else).
    replication: RefCell<Option<Rc<crate::cluster::shard::Replication>>>,
}

/// Entries of `Engine::unlogged` before the stale ones are dropped.
const UNLOGGED_MAX: usize = 4096;

/// Encryption state of one shard.
pub struct Sealing {
    kms: RefCell<Kms>,
    /// Unwrapped keys of recently used threads; cleared when full.
    deks: RefCell<HashMap<String, Rc<Dek>>>,
    /// The key of the thread the command now executing creates, when it
    /// was made, wrapped (and stored in the vault) before the command ran.
    next_thread_key: RefCell<Option<(Dek, WrappedKey)>>,
    /// `--encrypt-field` paths; empty seals whole bodies.
    fields: RefCell<Rc<crate::crypto::fields::FieldPaths>>,
    /// Where new threads' wrapped keys go (see `crypto::vault`); `None`
    /// keeps them in the thread record, as before the vault.
    vault: Option<Vault>,
}

/// Unwrapped thread keys kept per shard before the cache is cleared.
const DEK_CACHE_MAX: usize = 10_000;

/// Users who may react to one message; bounds the size of its record.
pub const REACTIONS_PER_MESSAGE_MAX: usize = 1000;
/// How often a shard checks whether old WAL segments can be dropped.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);

/// A command's reply and, for a mutation, the LSN it must be durable at
/// and the change to send to live-tail subscribers once it is.
struct Executed {
    reply: Reply,
    lsn: Option<Lsn>,
    change: Option<(String, StreamEvent)>,
}

impl Executed {
    fn read(reply: Reply) -> Result<Executed, EngineError> {
        Ok(Executed {
            reply,
            lsn: None,
            change: None,
        })
    }

    fn write(reply: Reply, lsn: Lsn) -> Result<Executed, EngineError> {
        Ok(Executed {
            reply,
            lsn: Some(lsn),
            change: None,
        })
    }
}

/// A change to deliver to the cores listening to its thread, and to the
/// cores of the users following it on their own streams.
pub struct Published {
    pub thread: String,
    pub cores: Vec<usize>,
    /// Hub topic of each following user, with the cores of their streams.
    pub followers: Vec<(String, Vec<usize>)>,
    pub event: StreamEvent,
}

/// Changes replayed per reply to a subscriber catching up.
const REPLAY_EVENTS_MAX: usize = 500;

/// Bytes of message JSON in one replay batch (at least one event): what a
/// resuming subscriber holds at a time, however slowly it reads.
pub const REPLAY_BYTES_MAX: usize = 1 << 20;

/// [`REPLAY_EVENTS_MAX`], or a debug build's test override (read once).
fn replay_events_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| crate::config::debug_replay_events_max().unwrap_or(REPLAY_EVENTS_MAX))
}

/// The live-tail event for `message` as changed at `change_ts`.
fn stream_event(message: &Message, change_ts: u64) -> StreamEvent {
    let kind = if message.deleted {
        "message.deleted"
    } else if change_ts == message.ts {
        "message.created"
    } else {
        "message.updated"
    };
    StreamEvent {
        id: change_ts,
        kind,
        data: to_json(message).into(),
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

/// A new thread id from the clock, for the shard generating it and its
/// `sequence`-th id since start.
pub fn new_thread_id(shard: ShardId, sequence: u32) -> ThreadId {
    let now_ns = now_ns();
    ThreadId::generate(
        now_ns / 1_000_000,
        shard.0 as u16,
        sequence,
        // Sub-millisecond clock bits: cheap entropy against a clock reset.
        (now_ns % 1_000_000) as u32,
    )
}

impl Engine {
    /// Opens the shard's store, replays its WAL past what the store has
    /// applied, and starts the log writer and checkpoints. Must run on the
    /// shard's executor. Returns the engine and recovery's log lines.
    pub fn open(
        shard: ShardId,
        dir: &Path,
        store_options: StoreOptions,
        wal_options: WalOptions,
        (policy, store_recovery): (RecoveryPolicy, StoreRecovery),
        kms: Option<(Kms, Option<Vault>)>,
    ) -> Result<(Rc<Engine>, Vec<String>), String> {
        let store =
            store_rebuild::open_store(dir, store_options, &shard.to_string(), store_recovery)?;
        let wal_dir = dir.join("wal");
        let label = shard.to_string();
        let watermark = store.log_durable_watermark();
        let recovered = recovery::recover(
            &wal_dir,
            &label,
            store.applied_lsn(),
            policy,
            |lsn, payload| {
                let ops = Ops::decode(payload)
                    .ok_or_else(|| format!("{label}: WAL record {} does not decode", lsn.0))?;
                // Replayed records are on disk: their memtables may flush.
                watermark.fetch_max(lsn.0, std::sync::atomic::Ordering::AcqRel);
                store
                    .apply(lsn, ops)
                    .map_err(|err| format!("{label}: replay of LSN {}: {err}", lsn.0))
            },
        )?;
        let mut log = Vec::new();
        if recovered.replayed > 0 {
            log.push(format!(
                "{label}: replayed {} WAL record(s)",
                recovered.replayed
            ));
        }
        // The store may be ahead of a log cut by recovery; LSNs never go back.
        let last = recovered.last_lsn.max(store.applied_lsn());
        let wal = Wal::start(
            &wal_dir,
            label,
            wal_options,
            (last, recovered.segments),
            watermark,
        );
        let seed = now_ns() ^ ((shard.0 as u64) << 56) ^ u64::from(std::process::id());
        let seal_job = seal_job::SealJob::open(dir)?;
        let engine = Rc::new_cyclic(|me| Engine {
            shard,
            seal_job,
            me: me.clone(),
            store,
            wal,
            write_failure: RefCell::new(None),
            listeners: RefCell::new(HashMap::new()),
            sealing: kms.map(|(kms, vault)| Sealing {
                kms: RefCell::new(kms),
                deks: RefCell::new(HashMap::new()),
                next_thread_key: RefCell::new(None),
                fields: RefCell::default(),
                vault,
            }),
            clock_ns: Cell::new(0),
            salt_state: Cell::new(seed),
            checkpointer: RefCell::new(None),
            retention_job: RefCell::new(None),
            tail_pages: tail_cache::TailCache::default(),
            thread_records: record_cache::RecordCache::default(),
            message_count: Cell::new(None),
            thread_count: Cell::new(None),
            authors: authors::Authors::default(),
            members: members::Members::default(),
            participants_max: Cell::new(PARTICIPANTS_PER_THREAD_DEFAULT),
            user_streams: user_streams::UserStreams::default(),
            unlogged: RefCell::new(HashMap::new()),
            log_failed: Cell::new(false),
            replication: RefCell::new(None),
        });
        let checkpointer = runtime::spawn_detached(engine.clone().checkpoints());
        *engine.checkpointer.borrow_mut() = Some(checkpointer);
        Ok((engine, log))
    }

    /// Stops the engine's background tasks (checkpoints, log flusher) so
    /// that dropping the last handle closes the store and releases its
    /// directory lock; a process that exits right away need not call it.
    /// Every write must have completed first; persist the store before.
    pub fn stop(&self) {
        if let Some(checkpointer) = self.checkpointer.borrow_mut().take() {
            checkpointer.cancel();
        }
        if let Some(job) = self.retention_job.borrow_mut().take() {
            job.cancel();
        }
        self.seal_job.stop();
        self.wal.stop();
    }

    /// Clustered mode: replicate every write through `replication`.
    pub fn set_replication(&self, replication: Rc<crate::cluster::shard::Replication>) {
        *self.replication.borrow_mut() = Some(replication);
    }

    /// Clustered mode: applies one write of a record another owner put in
    /// its partition's log (`wal_bytes`, an encoded `Ops`), like replaying
    /// the WAL: logged locally, applied to the store, caches dropped.
    pub fn apply_replicated(&self, wal_bytes: &[u8]) -> Result<(), String> {
        let ops = Ops::decode(wal_bytes).ok_or("a replicated write does not decode")?;
        self.forget_cached(&ops);
        let lsn = self.wal.append(wal_bytes).map_err(|err| err.to_string())?;
        self.store.apply(lsn, ops).map_err(|err| err.to_string())?;
        // Derived listings and counters do not see these writes: rebuilt
        // from the store when next needed.
        self.authors.clear();
        self.members.clear();
        self.message_count.set(None);
        self.thread_count.set(None);
        Ok(())
    }

    /// Sets how many participants a thread may have besides its owner.
    pub fn set_participants_max(&self, max: usize) {
        self.participants_max.set(max);
    }

    pub fn wal_stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// Drops WAL segments once the store's tables on disk hold everything
    /// in them. The store's maintenance thread writes the tables; this only
    /// reads how far it got, so a checkpoint never waits for I/O.
    /// A failure is logged once, and again only when it changes or heals:
    /// a checkpoint that fails every second must not flood the log.
    async fn checkpoints(self: Rc<Self>) {
        let mut failing: Option<String> = None;
        loop {
            runtime::sleep(CHECKPOINT_POLL).await;
            self.store.forget_flushed();
            if self.wal.segment_count() < 2 {
                continue;
            }
            let done = self
                .wal
                .remove_segments_through(self.store.persisted_lsn())
                .await;
            match done {
                Err(why) if failing.as_ref() != Some(&why) => {
                    crate::logging::warn(
                        "checkpoint failed; retrying every second, logged again only if the error changes",
                        &[("shard", &self.shard.0), ("error", &why)],
                    );
                    failing = Some(why);
                }
                Ok(_) if failing.take().is_some() => {
                    crate::logging::info("checkpoint succeeded again", &[("shard", &self.shard.0)]);
                }
                _ => {}
            }
        }
    }

    /// Drops the cached pages and records `ops` make stale.
    fn forget_cached(&self, ops: &Ops) {
        let mut forgotten = None;
        for thread in ops.touched_threads() {
            self.tail_pages.forget(thread);
            // With the thread's participants.
            self.thread_records.forget(thread);
            forgotten = Some(thread);
        }
        for thread in ops.touched_participants() {
            if forgotten != Some(thread) {
                self.thread_records.forget_participants(thread);
            }
        }
    }

    /// Logs `ops`, applies them to the store, and returns their LSN.
    fn commit(&self, ops: Ops) -> Result<Lsn, EngineError> {
        if let Some(why) = self.write_failure.borrow().as_ref() {
            return Err(EngineError::WritesUnavailable(why.clone()));
        }
        self.store
            .admit_write()
            .map_err(|err| EngineError::WritesUnavailable(err.to_string()))?;
        // Before anything is written, so no cached page can be older than
        // the store, whatever happens next.
        self.forget_cached(&ops);
        let partition = match self.replication.borrow().as_ref() {
            Some(replication) => {
                let thread = ops.first_thread().unwrap_or_default();
                Some(replication.admit(thread)?)
            }
            None => None,
        };
        let encoded = ops.encode();
        let lsn = self.wal.append(&encoded).map_err(|err| match err {
            WalError::TooLarge { bytes, max } => EngineError::TooLarge { bytes, max },
            err => EngineError::WritesUnavailable(err.to_string()),
        })?;
        self.note_unlogged(&ops, lsn);
        if let Err(err) = self.store.apply(lsn, ops) {
            let why = format!("applying LSN {} failed: {err}", lsn.0);
            crate::logging::error(
                "store apply failed; refusing writes until restart",
                &[("shard", &self.shard.0), ("error", &why)],
            );
            *self.write_failure.borrow_mut() = Some(why.clone());
            return Err(EngineError::WritesUnavailable(why));
        }
        if let (Some(replication), Some(partition)) =
            (self.replication.borrow().as_ref(), partition)
        {
            replication.stage(partition, lsn, encoded);
        }
        Ok(lsn)
    }

    /// Executes `command` and waits until its effects, and every write it
    /// could have seen, are as durable as the configured mode promises. A
    /// durable change of a thread with live-tail listeners comes back as
    /// `Published` for the caller to deliver.
    pub async fn run(&self, command: Command) -> (Outcome, Option<Published>) {
        self.hide_writes_the_log_lost();
        match command {
            Command::Compact => return (self.compact_now().await, None),
            Command::EncryptThreads { start } => return (self.encrypt_threads(start), None),
            _ => {}
        }
        let reads_only = command.reads_only();
        let subscription = match &command {
            Command::Subscribe { thread, core, .. } => Some((thread.clone(), *core)),
            _ => None,
        };
        let (executed, seen) = self.execute_keyed(command).await;
        let replication = self.replication.borrow().clone();
        if let Some(replication) = replication {
            if let Err(err) = replication.publish().await {
                return (Err(err), None);
            }
            // A write the log has not taken yet must not be shown.
            if let Some(seen) = seen
                && let Err(err) = replication.wait_acknowledged(seen).await
            {
                return (Err(err), None);
            }
        }
        let own = executed.as_ref().ok().and_then(|executed| executed.lsn);
        if let Some(lsn) = own.max(seen)
            && let Err(err) = self.wal.wait_durable(lsn).await
        {
            // What this command did or saw is lost: it must not be told.
            if let (Ok(_), Some((thread, core))) = (&executed, subscription) {
                let _ = self.execute(Command::Unsubscribe { thread, core });
            }
            let err = match reads_only {
                true => EngineError::Unavailable(format!("a write this read saw was lost: {err}")),
                false => EngineError::WritesUnavailable(err.to_string()),
            };
            return (Err(err), None);
        }
        let executed = match executed {
            Ok(executed) => executed,
            Err(err) => return (Err(err), None),
        };
        // An erasure is durable: now its vault keys go.
        if let Reply::Purged(report) = &executed.reply
            && let Err(err) = self.shred_keys(report.shred.clone()).await
        {
            return (Err(err), None);
        }
        let published = executed
            .change
            .and_then(|(thread, event)| self.audience(thread, event));
        (Ok(executed.reply), published)
    }

    /// The live-tail event of a message change, rendered only when a
    /// stream follows its thread now: most writes have no listener, and
    /// one that subscribes after this command ran is past it (its replay
    /// reads the store, which already holds the change).
    fn message_change(&self, message: &Message, change_ts: u64) -> Option<(String, StreamEvent)> {
        let thread = message.thread.as_str();
        let followed =
            self.listeners.borrow().contains_key(thread) || self.user_streams.watched(thread);
        followed.then(|| (message.thread.clone(), stream_event(message, change_ts)))
    }

    /// Who gets a change: the cores listening to its thread and the users
    /// following it (a removed participant's own streams also get their
    /// removal). `None` when no one.
    fn audience(&self, thread: String, event: StreamEvent) -> Option<Published> {
        let cores: Vec<usize> = self
            .listeners
            .borrow()
            .get(&thread)
            .map(|cores| cores.keys().copied().collect())
            .unwrap_or_default();
        let removed = participants::removed_user(&event);
        let followers = self.user_streams.audience(&thread, removed.as_deref());
        if cores.is_empty() && followers.is_empty() {
            return None;
        }
        Some(Published {
            thread,
            cores,
            followers,
            event,
        })
    }

    /// Executes `command` (its thread key fetched first, see
    /// `fetch_thread_key`); also returns the newest write not yet on disk
    /// that it could have read, which its reply must wait for.
    async fn execute_keyed(
        &self,
        command: Command,
    ) -> (Result<Executed, EngineError>, Option<Lsn>) {
        let thread_key = match self.fetch_thread_key(&command).await {
            Ok(thread_key) => thread_key,
            Err(err) => return (Err(err), None),
        };
        // No await from here to the end of `execute`: the key is this
        // command's alone, and `seen` is what the store holds as it runs.
        if let Some(sealing) = &self.sealing {
            *sealing.next_thread_key.borrow_mut() = thread_key;
        }
        let seen = self.unlogged_seen_by(&command);
        let executed = self.execute(command);
        if let Some(sealing) = &self.sealing {
            sealing.next_thread_key.borrow_mut().take();
        }
        (executed, seen)
    }

    /// The newest write not yet settled that `command` may read: its
    /// thread's, or for a command over many threads, the newest of all.
    /// `None` when writes are visible once logged (`batch` and `none`, and
    /// a failed log) unless clustered, where they wait for the partition's
    /// log too.
    fn unlogged_seen_by(&self, command: &Command) -> Option<Lsn> {
        if !self.tracks_unsettled() {
            return None;
        }
        let settled = self.settled_lsn();
        let seen = match command {
            Command::Metrics
            | Command::AddMasterKey { .. }
            | Command::Unsubscribe { .. }
            | Command::Compact => None,
            command => match command.single_thread() {
                Some(thread) => self
                    .unlogged
                    .borrow()
                    .get(thread.as_str().as_bytes())
                    .copied(),
                None => Some(self.wal.last_appended()),
            },
        };
        seen.filter(|lsn| *lsn > settled)
    }

    /// Whether reads wait for the writes they may see: in `sync` mode for
    /// the log's fsync, clustered for the partition log's acknowledgement.
    fn tracks_unsettled(&self) -> bool {
        let clustered = self.replication.borrow().is_some();
        clustered || (self.wal.durability() == Durability::Sync && !self.log_failed.get())
    }

    /// The newest LSN below which every write is settled: on disk in the
    /// log and, clustered, acknowledged by its partition's log.
    fn settled_lsn(&self) -> Lsn {
        let durable = self.wal.durable_lsn();
        let oldest_unacknowledged = self
            .replication
            .borrow()
            .as_ref()
            .and_then(|replication| replication.oldest_unacknowledged());
        match oldest_unacknowledged {
            Some(oldest) => Lsn(durable.0.min(oldest.0.saturating_sub(1))),
            None => durable,
        }
    }

    /// Remembers the threads `ops` (logged as `lsn`) change, while reads
    /// wait for unsettled writes.
    fn note_unlogged(&self, ops: &Ops, lsn: Lsn) {
        if !self.tracks_unsettled() {
            return;
        }
        let mut unlogged = self.unlogged.borrow_mut();
        if unlogged.len() >= UNLOGGED_MAX {
            let settled = self.settled_lsn();
            unlogged.retain(|_, written| *written > settled);
        }
        for thread in ops.touched_threads() {
            match unlogged.get_mut(thread) {
                Some(written) => *written = lsn,
                None => _ = unlogged.insert(thread.to_vec(), lsn),
            }
        }
    }

    /// Once the log has failed: cuts reads back to what it has on disk and
    /// starts every cache over, so writes it lost (refused with 503, or in
    /// `batch`/`none` mode acknowledged in the flush that failed) are no
    /// longer seen, as they will not be after a restart.
    fn hide_writes_the_log_lost(&self) {
        if self.log_failed.get() || !self.wal.failed() {
            return;
        }
        let durable = self.wal.durable_lsn();
        if !self.store.hide_after(durable) {
            // The store is mid-flush; the next command tries again. Until
            // then `sync` answers that saw a lost write are still 503s.
            return;
        }
        self.log_failed.set(true);
        self.tail_pages.clear();
        self.thread_records.clear();
        self.authors.clear();
        self.message_count.set(None);
        self.thread_count.set(None);
        self.unlogged.borrow_mut().clear();
        crate::logging::warn(
            "reads now show only what the failed log has on disk",
            &[("shard", &self.shard.0), ("durable_lsn", &durable.0)],
        );
    }

    /// The replay for a subscriber: changes after `after`, as events.
    fn replay(&self, thread: &ThreadId, after: u64) -> Result<Reply, EngineError> {
        let max = replay_events_max();
        let changes = self.store.changes_after(thread.as_str(), after, max + 1)?;
        let mut more = changes.len() > max;
        let mut events: Vec<StreamEvent> = Vec::with_capacity(changes.len().min(max));
        let mut bytes = 0usize;
        for (change_ts, message_ts) in changes.into_iter().take(max) {
            if !events.is_empty() && bytes >= REPLAY_BYTES_MAX {
                more = true;
                break;
            }
            if let Some(message) = self.get_message(thread.as_str(), message_ts)? {
                let event = stream_event(&message, change_ts);
                bytes += event.data.len();
                events.push(event);
            }
        }
        Ok(Reply::Events { events, more })
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Writes the memtables out as tables. Refused while writes past the
    /// log's durable LSN exist: tables never hold what the log may lose.
    pub fn persist(&self) -> Result<(), StoreError> {
        let durable = self.wal.durable_lsn();
        if self.store.applied_lsn() > durable {
            return Err(StoreError::Busy(format!(
                "writes past LSN {} are not on disk in the log",
                durable.0
            )));
        }
        self.store.persist()
    }

    /// A consistent view of everything applied so far (see
    /// [`crate::store::Snapshot`]).
    pub fn snapshot(&self) -> Result<crate::store::Snapshot, StoreError> {
        self.store.snapshot()
    }

    /// Answers `Command::Snapshot`: the view, with the LSN it covers, goes
    /// straight to the backup's thread.
    fn send_snapshot(
        &self,
        to: &std::sync::mpsc::Sender<(usize, crate::store::Snapshot)>,
    ) -> Result<Executed, EngineError> {
        let snapshot = self.snapshot()?;
        to.send((self.shard.0, snapshot))
            .map_err(|_| EngineError::Storage("the backup stopped before its snapshot".into()))?;
        Executed::read(Reply::Done)
    }

    /// Writes out every logged record, whatever the durability mode, so a
    /// clean shutdown leaves nothing acknowledged only in memory.
    pub async fn flush_wal(&self) -> Result<(), crate::wal::WalError> {
        self.wal.flush_all().await
    }

    /// The storage part of this shard's metrics: log and store counters.
    pub fn metrics_sample(&self) -> crate::metrics::ShardSample {
        crate::metrics::ShardSample {
            shard: self.shard.0,
            wal: self.wal.stats(),
            store: self.store.metrics(),
            ..crate::metrics::ShardSample::default()
        }
    }

    /// A timestamp greater than both `floor` and anything this shard issued.
    fn tick(&self, floor: u64) -> u64 {
        let ts = now_ns().max(floor + 1).max(self.clock_ns.get() + 1);
        self.clock_ns.set(ts);
        ts
    }

    fn next_salt(&self) -> u64 {
        // splitmix64: salts only need to differ, not to be secret.
        let state = self.salt_state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.salt_state.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A new thread record; the caller commits it.
    fn new_thread(
        &self,
        id: &ThreadId,
        author: &str,
        title: String,
        slug: Option<String>,
    ) -> Result<ThreadRecord, EngineError> {
        if self.store.is_erasing(id.as_str())? {
            return Err(EngineError::ThreadExists);
        }
        let ts = self.tick(0);
        let (dek, vault_key) = match &self.sealing {
            None => (None, false),
            Some(sealing) => {
                let fetched = sealing.next_thread_key.borrow_mut().take();
                let in_vault = fetched.is_some() && sealing.vault.is_some();
                let (dek, wrapped) = match fetched {
                    Some(fetched) => fetched,
                    // Not prepared (no vault): made here, kept in the record.
                    None => {
                        let dek = Dek::generate().map_err(sealing_error)?;
                        let wrapped = sealing.kms.borrow().wrap(&dek).map_err(sealing_error)?;
                        (dek, wrapped)
                    }
                };
                self.remember_dek(id.as_str(), Rc::new(dek));
                (Some(wrapped).filter(|_| !in_vault), in_vault)
            }
        };
        Ok(ThreadRecord {
            thread: Thread {
                id: id.to_string(),
                title,
                author: author.to_owned(),
                slug,
                created_ts: ts,
                updated_ts: ts,
                deleted: false,
                sealed_title: None,
            },
            last_message_ts: 0,
            dek,
            vault_key,
            counts: Some(Default::default()),
            participants: 0,
        })
    }

    fn remember_dek(&self, thread: &str, dek: Rc<Dek>) {
        if let Some(sealing) = &self.sealing {
            let mut deks = sealing.deks.borrow_mut();
            if deks.len() >= DEK_CACHE_MAX {
                deks.clear();
            }
            deks.insert(thread.to_owned(), dek);
        }
    }

    /// Drops an erased thread's unwrapped key from the cache.
    fn forget_dek(&self, thread: &str) {
        if let Some(sealing) = &self.sealing {
            sealing.deks.borrow_mut().remove(thread);
        }
    }

    /// The thread's data key, if encryption is on and the thread has one.
    fn dek(
        &self,
        thread: &str,
        wrapped: Option<&crate::crypto::WrappedKey>,
    ) -> Result<Option<Rc<Dek>>, EngineError> {
        let Some(sealing) = &self.sealing else {
            return Ok(None);
        };
        if let Some(dek) = sealing.deks.borrow().get(thread) {
            return Ok(Some(dek.clone()));
        }
        let wrapped = match wrapped {
            Some(wrapped) => wrapped.clone(),
            None => match self.stored_thread_key(sealing, thread)? {
                Some(wrapped) => wrapped,
                None => return Ok(None),
            },
        };
        let dek = Rc::new(
            sealing
                .kms
                .borrow()
                .unwrap(&wrapped)
                .map_err(sealing_error)?,
        );
        self.remember_dek(thread, dek.clone());
        Ok(Some(dek))
    }

    /// A thread record as read from the store, with its title opened.
    fn get_thread(&self, id: &str) -> Result<Option<ThreadRecord>, EngineError> {
        if let Some(record) = self.thread_records.get(id) {
            return Ok(Some(record));
        }
        let record = self.stored_thread(id)?;
        if let Some(record) = &record {
            self.thread_records.put(record.clone());
        }
        Ok(record)
    }

    /// The thread's record for a command that rewrites it: taken out of
    /// the cache rather than copied, since the write forgets the cached
    /// record anyway and puts the new one back.
    fn take_thread(&self, id: &str) -> Result<Option<ThreadRecord>, EngineError> {
        match self.thread_records.take(id) {
            Some(record) => Ok(Some(record)),
            None => self.stored_thread(id),
        }
    }

    /// The thread's record read from the store, with its title opened.
    fn stored_thread(&self, id: &str) -> Result<Option<ThreadRecord>, EngineError> {
        let Some(mut record) = self.store.get_thread(id)? else {
            return Ok(None);
        };
        self.open_title(&mut record)?;
        Ok(Some(record))
    }

    fn open_title(&self, record: &mut ThreadRecord) -> Result<(), EngineError> {
        if let Some(sealed) = record.thread.sealed_title.take() {
            let id = record.thread.id.as_str();
            let dek = self.dek(id, record.dek.as_ref())?.ok_or_else(missing_key)?;
            record.thread.title = dek
                .open_title(id, record.thread.updated_ts, &sealed)
                .map_err(sealing_error)?;
        }
        Ok(())
    }

    /// A stored thread record as the thread clients see.
    fn open_thread_record(&self, mut record: ThreadRecord) -> Result<Thread, EngineError> {
        self.open_title(&mut record)?;
        Ok(record.thread)
    }

    /// A message as read from the store, with its body opened.
    fn get_message(&self, thread: &str, ts: u64) -> Result<Option<Message>, EngineError> {
        let Some(mut message) = self.store.get_message(thread, ts)? else {
            return Ok(None);
        };
        message.normalize();
        self.open_message(&mut message)?;
        Ok(Some(message))
    }

    /// Version `version` of `message`'s body, sealed as `sealed`.
    fn open_body(
        &self,
        message: &Message,
        version: u32,
        sealed: &str,
    ) -> Result<Box<serde_json::value::RawValue>, EngineError> {
        let dek = self.dek(&message.thread, None)?.ok_or_else(missing_key)?;
        let body = dek
            .open_body(&message.thread, &message.id, message.ts, version, sealed)
            .map_err(sealing_error)?;
        raw_json(body)
    }

    /// Stored JSON of a message, opened for a client (only with encryption).
    fn reveal_message_json(&self, json: &[u8]) -> Result<Vec<u8>, EngineError> {
        let view: SealedMessageRef =
            serde_json::from_slice(json).map_err(|err| EngineError::Storage(err.to_string()))?;
        if !view.sealed_fields.is_empty() {
            let mut message: Message = serde_json::from_slice(json)
                .map_err(|err| EngineError::Storage(err.to_string()))?;
            self.open_message(&mut message)?;
            message.normalize();
            return Ok(to_json(&message));
        }
        let Some(sealed) = view.sealed_body else {
            return Ok(json.to_vec());
        };
        let dek = self.dek(&view.thread, None)?.ok_or_else(missing_key)?;
        let body = dek
            .open_body(&view.thread, &view.id, view.ts, view.version, &sealed)
            .map_err(sealing_error)?;
        if let Some(opened) = splice_opened_body(json, view.ts, &sealed, &body) {
            return Ok(opened);
        }
        let mut message: Message =
            serde_json::from_slice(json).map_err(|err| EngineError::Storage(err.to_string()))?;
        message.body = raw_json(body)?;
        message.sealed_body = None;
        message.normalize();
        Ok(to_json(&message))
    }

    /// `reveal` for page scans: `None` (copy as stored) without encryption.
    fn revealer(
        &self,
        reveal: fn(&Engine, &[u8]) -> Result<Vec<u8>, EngineError>,
    ) -> Option<page::RevealFn<'_>> {
        self.sealing
            .as_ref()
            .map(|_| Box::new(move |json: &[u8]| reveal(self, json)) as page::RevealFn<'_>)
    }

    /// Writes of a thread record, its title sealed when encryption is on.
    fn thread_ops(&self, record: &ThreadRecord) -> Result<Ops, EngineError> {
        Ok(Store::thread_ops(&*self.sealed_record(record)?))
    }

    fn thread_record_ops(&self, record: &ThreadRecord) -> Result<Ops, EngineError> {
        Ok(Store::thread_record_ops(&*self.sealed_record(record)?))
    }

    /// The record as stored: its title sealed when the thread has a key.
    /// Borrowed (no copy per post) when there is nothing to seal.
    fn sealed_record<'a>(
        &self,
        record: &'a ThreadRecord,
    ) -> Result<Cow<'a, ThreadRecord>, EngineError> {
        let Some(dek) = self.dek(&record.thread.id, record.dek.as_ref())? else {
            return Ok(Cow::Borrowed(record));
        };
        let mut sealed = record.clone();
        sealed.thread.sealed_title = Some(dek.seal_title(
            &record.thread.id,
            record.thread.updated_ts,
            &record.thread.title,
        ));
        sealed.thread.title = String::new();
        Ok(Cow::Owned(sealed))
    }

    /// Writes of a message (and its thread record), sealed when encryption is on.
    fn message_ops(
        &self,
        record: Option<&ThreadRecord>,
        message: &Message,
        change_ts: u64,
    ) -> Result<Ops, EngineError> {
        let record = record
            .map(|record| self.sealed_record(record))
            .transpose()?;
        let mut stored = Cow::Borrowed(message);
        if let Some(sealed) = self.seal_for_storage(message, message.version, &message.body)? {
            let stored = stored.to_mut();
            (stored.body, stored.sealed_body) = (sealed.body, sealed.sealed_body);
            stored.sealed_fields = sealed.sealed_fields;
        }
        Ok(Store::message_ops(record.as_deref(), &stored, change_ts))
    }

    fn version_op(
        &self,
        ops: &mut Ops,
        message: &Message,
        version: &Version,
    ) -> Result<(), EngineError> {
        let mut stored = version.clone();
        if let Some(sealed) = self.seal_for_storage(message, version.version, &version.body)? {
            (stored.body, stored.sealed_body) = (sealed.body, sealed.sealed_body);
            stored.sealed_fields = sealed.sealed_fields;
        }
        Store::version_op(ops, message, &stored);
        Ok(())
    }

    /// Adds a master key to this shard's embedded keyring (rotation).
    pub fn add_master_key(&self, id: u32, key: [u8; crate::crypto::KEY_BYTES]) {
        if let Some(sealing) = &self.sealing
            && let Kms::Embedded(keyring) = &mut *sealing.kms.borrow_mut()
        {
            keyring.add(id, key);
        }
    }

    /// Starts wrapping new thread keys under a new master key. The embedded
    /// KMS creates it, saves the keyring and returns it so the other shards
    /// can add it too; the external KMS rotates on its side and only its id
    /// comes back.
    pub fn rotate_master_key(
        &self,
        path: Option<&Path>,
        check_dir: &Path,
    ) -> Result<(u32, Option<[u8; crate::crypto::KEY_BYTES]>), EngineError> {
        let sealing = self
            .sealing
            .as_ref()
            .ok_or_else(|| EngineError::Storage("encryption is off".into()))?;
        match &mut *sealing.kms.borrow_mut() {
            Kms::Embedded(keyring) => {
                let path = path.ok_or_else(|| {
                    EngineError::Storage("the embedded KMS has no keyring file".into())
                })?;
                let (id, key) = keyring
                    .rotate_checked(path, check_dir)
                    .map_err(sealing_error)?;
                Ok((id, Some(key)))
            }
            Kms::External(kms) => Ok((kms.rotate().map_err(sealing_error)?, None)),
        }
    }

    /// The thread if it exists, is not deleted, and the caller may see it.
    /// Every failure is `ThreadNotFound`, so ids of other users' threads
    /// cannot be probed.
    fn visible_thread(&self, id: &ThreadId, caller: &Caller) -> Result<ThreadRecord, EngineError> {
        self.thread_for(id, caller, false)
    }

    /// Like `visible_thread`, but a deleted thread is returned when
    /// `include_deleted` asks for it (to its owner, or a caller without a
    /// user).
    fn thread_for(
        &self,
        id: &ThreadId,
        caller: &Caller,
        include_deleted: bool,
    ) -> Result<ThreadRecord, EngineError> {
        Ok(self.thread_with_role(id, caller, include_deleted)?.0)
    }

    /// A message by its text id, only if it belongs to this thread.
    fn find_message(&self, thread: &ThreadId, id: &str) -> Result<Option<Message>, EngineError> {
        let Some(parsed) = MessageId::parse(id) else {
            return Ok(None);
        };
        Ok(self
            .get_message(thread.as_str(), parsed.ts)?
            .filter(|message| message.id == id))
    }

    /// A message of a live thread the caller may see, with the thread's
    /// record; a deleted message only when `include_deleted` asks for it.
    fn message_for(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
        include_deleted: bool,
    ) -> Result<(ThreadRecord, Message), EngineError> {
        let (record, message, _) = self.message_with_role(thread, caller, id, include_deleted)?;
        Ok((record, message))
    }

    /// `message_for` with the caller's role in the thread.
    fn message_with_role(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
        include_deleted: bool,
    ) -> Result<(ThreadRecord, Message, Option<model::Role>), EngineError> {
        let (record, role) = self.thread_with_role(
            thread,
            caller,
            caller.reads_deleted_threads(include_deleted),
        )?;
        match self.find_message(thread, id)? {
            Some(message) if include_deleted || !message.deleted => Ok((record, message, role)),
            _ => Err(EngineError::MessageNotFound),
        }
    }
}

fn sealing_error(err: CryptoError) -> EngineError {
    match err {
        CryptoError::Kms(_) => EngineError::KmsUnavailable(err.to_string()),
        _ => EngineError::Storage(format!("encryption: {err}")),
    }
}

fn missing_key() -> EngineError {
    EngineError::Storage("encryption: a sealed value belongs to a thread without a key".into())
}

fn raw_json(bytes: Vec<u8>) -> Result<Box<serde_json::value::RawValue>, EngineError> {
    let text = String::from_utf8(bytes)
        .map_err(|_| EngineError::Storage("sealed body is not UTF-8".into()))?;
    serde_json::value::RawValue::from_string(text)
        .map_err(|err| EngineError::Storage(err.to_string()))
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("model types always serialize")
}
