//! A shard's maintenance thread: it writes sealed memtables out as tables
//! and compacts them, so the shard's executor never does storage I/O or
//! waits for it. The shard seals memtables and asks for a flush, naming
//! each by its rotation number; this thread reports back, through atomics,
//! the rotations it has flushed, the newest LSN that is on disk (which lets
//! the WAL drop what it covers) and the tree's shape for metrics.
//!
//! A memtable is flushed only once every write in it is on disk in the
//! write-ahead log (the log's durable watermark): tables must never hold a
//! write the log may still lose, or it would come back at restart although
//! it was refused. Deciding on a flush and sealing a memtable exclude each
//! other through two flags (`flushing`, `rotating`), so a flush never
//! takes a memtable sealed after the watermark was checked; the shard
//! never waits on them, it seals a little later instead.
//!
//! The thread runs at a lower priority (nice 3) than the shard executors:
//! when both want the same core it gets about a third of it, which keeps
//! flushes up with sustained writes (at nice 10 it got a tenth, fell
//! behind, and writes were refused with 503 in a 60 s run at 70% of the
//! closed-loop rate) while a flush cannot take the core from the shard.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lsm_tree::{AbstractTree, AnyTree, SequenceNumberCounter};

/// How often the thread looks for work nobody asked for: a flush that
/// failed and must be retried, or compaction debt.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How soon a flush waiting for the log's durable watermark looks again
/// (one fsync is a few milliseconds).
const WATERMARK_CHECK: Duration = Duration::from_millis(2);

/// Niceness of the maintenance thread (0 is the executors').
const MAINTENANCE_NICE: libc::c_int = 3;

enum Request {
    /// The shard sealed its memtable number N (counted from 1 since open).
    Flush(u64),
    /// Flush everything sealed and answer when it is on disk.
    FlushAndWait(mpsc::Sender<Result<(), String>>),
    /// After the flushes asked before it: merge every table into the last
    /// level (tombstones and what they cover go), then publish ticket N.
    MajorCompact(u64),
    /// Flushed memtables the shard let go of, to be freed here.
    Release(
        #[expect(dead_code, reason = "held only to be dropped on this thread")]
        Vec<Arc<lsm_tree::Memtable>>,
    ),
}

/// Size of the tables a major compaction writes.
const MAJOR_TABLE_BYTES: u64 = 64 * 1024 * 1024;

/// The tree's shape as the maintenance thread last read it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub tables: u64,
    pub l0_runs: u64,
    pub disk_bytes: u64,
    pub sealed_bytes: u64,
}

/// What the shard reads of the thread's progress.
struct Progress {
    persisted_lsn: AtomicU64,
    /// Every memtable sealed up to this rotation number is in tables.
    flushed_through: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    /// The newest major compaction ticket served (see `MajorCompact`).
    major_compacted: AtomicU64,
    tables: AtomicU64,
    l0_runs: AtomicU64,
    disk_bytes: AtomicU64,
    sealed_bytes: AtomicU64,
    /// The newest LSN in a sealed memtable (set before it is sealed).
    sealed_through: AtomicU64,
    /// The newest LSN the write-ahead log has on disk (set by the log).
    log_durable: Arc<AtomicU64>,
    /// Set while the shard seals a memtable / while this thread decides
    /// on and runs a flush; each backs off when it sees the other's.
    rotating: AtomicBool,
    flushing: AtomicBool,
    /// Set while this thread runs a compaction, which holds the tree's
    /// version lock across an fsync when it registers its tables.
    compacting: AtomicBool,
    /// Set when the shard's log failed: nothing is flushed or compacted
    /// any more (see `Store::hide_after`).
    halted: AtomicBool,
    /// The last flush or compaction error, cleared by the next success.
    /// Held only to copy a string in or out.
    last_error: Mutex<Option<String>>,
}

/// The shard's side of its maintenance thread. Dropping it stops the
/// thread after the work in hand and waits for it.
pub struct Handle {
    progress: Arc<Progress>,
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// `persisted` is the newest LSN in the tree's tables at open;
    /// `log_durable` the log's durable watermark, which the log keeps.
    pub fn start(
        tree: AnyTree,
        seqno: SequenceNumberCounter,
        persisted: u64,
        log_durable: Arc<AtomicU64>,
        label: &str,
    ) -> std::io::Result<Handle> {
        let progress = Arc::new(Progress {
            persisted_lsn: AtomicU64::new(persisted),
            flushed_through: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            major_compacted: AtomicU64::new(0),
            tables: AtomicU64::new(0),
            l0_runs: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
            sealed_bytes: AtomicU64::new(0),
            sealed_through: AtomicU64::new(0),
            log_durable,
            rotating: AtomicBool::new(false),
            flushing: AtomicBool::new(false),
            compacting: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        let (requests, inbox) = mpsc::channel();
        let worker = Worker {
            tree,
            seqno,
            progress: progress.clone(),
            label: label.to_owned(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{label}-store"))
            .spawn(move || worker.run(inbox))?;
        Ok(Handle {
            progress,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for the memtable of `rotation` (and any sealed before it) to
    /// be flushed; does not wait.
    pub fn flush_soon(&self, rotation: u64) {
        if let Some(requests) = &self.requests {
            // A stopped thread cannot flush; the next start replays the WAL.
            let _ = requests.send(Request::Flush(rotation));
        }
    }

    /// Frees flushed memtables on this thread: freeing the last copy of a
    /// full memtable (hundreds of thousands of items) takes the thread
    /// that does it tens of milliseconds, which a shard must not spend.
    pub fn release(&self, memtables: Vec<Arc<lsm_tree::Memtable>>) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request::Release(memtables));
        }
    }

    /// Asks for a major compaction after the flushes asked so far, served
    /// as `ticket` (see [`Handle::major_compacted`]); does not wait.
    pub fn major_compact_soon(&self, ticket: u64) -> Result<(), String> {
        let requests = self.requests.as_ref().ok_or("maintenance stopped")?;
        requests
            .send(Request::MajorCompact(ticket))
            .map_err(|_| "maintenance thread is gone".to_owned())
    }

    /// The newest major compaction ticket served, done or failed (then
    /// [`Handle::last_error`] says why).
    pub fn major_compacted(&self) -> u64 {
        self.progress.major_compacted.load(Ordering::Acquire)
    }

    /// Called by the shard before it seals the memtable holding writes up
    /// to `last_lsn`; false (do not seal now) while a flush is being
    /// decided. Every `true` must be followed by `end_rotation`.
    pub fn begin_rotation(&self, last_lsn: u64) -> bool {
        let progress = &self.progress;
        progress.rotating.store(true, Ordering::SeqCst);
        if progress.flushing.load(Ordering::SeqCst) {
            progress.rotating.store(false, Ordering::SeqCst);
            return false;
        }
        progress
            .sealed_through
            .fetch_max(last_lsn, Ordering::SeqCst);
        true
    }

    /// True while a compaction runs: sealing a memtable then may wait
    /// for the tree's version lock as long as one fsync takes.
    pub fn compacting(&self) -> bool {
        self.progress.compacting.load(Ordering::Acquire)
    }

    pub fn end_rotation(&self) {
        self.progress.rotating.store(false, Ordering::SeqCst);
    }

    /// Stops flushing and compacting for good. Call between a successful
    /// `begin_rotation` and its `end_rotation`, so no flush is under way.
    pub fn halt(&self) {
        self.progress.halted.store(true, Ordering::SeqCst);
    }

    /// The rotation number through which every sealed memtable is flushed.
    pub fn flushed_through(&self) -> u64 {
        self.progress.flushed_through.load(Ordering::Acquire)
    }

    pub fn shape(&self) -> Shape {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Shape {
            tables: read(&self.progress.tables),
            l0_runs: read(&self.progress.l0_runs),
            disk_bytes: read(&self.progress.disk_bytes),
            sealed_bytes: read(&self.progress.sealed_bytes),
        }
    }

    /// Flushes everything sealed so far and waits for it.
    pub fn flush_and_wait(&self) -> Result<(), String> {
        let requests = self.requests.as_ref().ok_or("maintenance stopped")?;
        let (reply, answer) = mpsc::channel();
        requests
            .send(Request::FlushAndWait(reply))
            .map_err(|_| "maintenance thread is gone".to_owned())?;
        answer
            .recv()
            .map_err(|_| "maintenance thread is gone".to_owned())?
    }

    /// The newest LSN in the tree's tables.
    pub fn persisted(&self) -> u64 {
        self.progress.persisted_lsn.load(Ordering::Acquire)
    }

    pub fn flushes(&self) -> u64 {
        self.progress.flushes.load(Ordering::Relaxed)
    }

    pub fn compactions(&self) -> u64 {
        self.progress.compactions.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.progress
            .last_error
            .lock()
            .map(|error| error.clone())
            .unwrap_or(None)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a flush round did.
enum Flush {
    /// Every sealed memtable is in tables (or there was none).
    Done,
    /// Not yet: the log has not got every write of them on disk.
    HeldBack,
}

struct Worker {
    tree: AnyTree,
    seqno: SequenceNumberCounter,
    progress: Arc<Progress>,
    label: String,
}

impl Worker {
    fn run(self, inbox: mpsc::Receiver<Request>) {
        // SAFETY: setpriority on this thread's own id changes only its
        // scheduling weight; failure leaves the default, which is fine.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, MAINTENANCE_NICE);
        }
        let mut asked_through = 0;
        let mut major_asked = 0;
        let mut held_back = false;
        loop {
            let mut waiting = Vec::new();
            let wait = if held_back {
                WATERMARK_CHECK
            } else {
                IDLE_CHECK
            };
            match inbox.recv_timeout(wait) {
                Ok(request) => waiting.push(request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Everything asked so far is served by one flush.
            waiting.extend(inbox.try_iter());
            for request in &waiting {
                match request {
                    Request::Flush(rotation) => asked_through = asked_through.max(*rotation),
                    Request::MajorCompact(ticket) => major_asked = major_asked.max(*ticket),
                    Request::FlushAndWait(_) | Request::Release(_) => {}
                }
            }
            if self.progress.halted.load(Ordering::SeqCst) {
                held_back = false;
                for request in waiting {
                    if let Request::FlushAndWait(reply) = request {
                        let _ = reply.send(Err("the log failed: nothing more is flushed".into()));
                    }
                }
                continue;
            }
            // Every rotation asked for happened before its request was
            // sent, so the flush below takes its memtable.
            let flushed = self.flush();
            held_back = matches!(flushed, Ok(Flush::HeldBack));
            if matches!(flushed, Ok(Flush::Done)) {
                self.progress
                    .flushed_through
                    .fetch_max(asked_through, Ordering::AcqRel);
            }
            self.progress.compacting.store(true, Ordering::Release);
            let done = match flushed {
                Ok(Flush::Done) => self.compact(),
                Ok(Flush::HeldBack) => Ok(()),
                Err(why) => Err(why),
            };
            let done = match done {
                Ok(()) if !held_back => self.major_compact(major_asked),
                done => done,
            };
            self.progress.compacting.store(false, Ordering::Release);
            self.record(&done);
            self.publish_shape();
            for request in waiting {
                if let Request::FlushAndWait(reply) = request {
                    let answer = match held_back {
                        true => Err("writes past the log's durable LSN stay in memory".into()),
                        false => done.clone(),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }

    fn publish_shape(&self) {
        let set = |counter: &AtomicU64, value: u64| counter.store(value, Ordering::Relaxed);
        set(&self.progress.tables, self.tree.table_count() as u64);
        set(&self.progress.l0_runs, self.tree.l0_run_count() as u64);
        set(&self.progress.disk_bytes, self.tree.disk_space());
        let active = self.tree.active_memtable().size();
        let all = self.tree.version_memtable_size_sum();
        set(&self.progress.sealed_bytes, all.saturating_sub(active));
    }

    /// Writes every sealed memtable out as tables, oldest first, once the
    /// log has every write in them on disk.
    fn flush(&self) -> Result<Flush, String> {
        if self.tree.sealed_memtable_count() == 0 {
            return Ok(Flush::Done);
        }
        let progress = &self.progress;
        progress.flushing.store(true, Ordering::SeqCst);
        let logged = !progress.rotating.load(Ordering::SeqCst)
            && !progress.halted.load(Ordering::SeqCst)
            && progress.sealed_through.load(Ordering::SeqCst)
                <= progress.log_durable.load(Ordering::SeqCst);
        let flushed = match logged {
            true => self.flush_sealed().map(|()| Flush::Done),
            false => Ok(Flush::HeldBack),
        };
        progress.flushing.store(false, Ordering::SeqCst);
        flushed
    }

    fn flush_sealed(&self) -> Result<(), String> {
        let lock = self.tree.get_flush_lock();
        let flushed = self
            .tree
            .flush(&lock, self.gc_watermark())
            .map_err(|err| format!("memtable flush: {err}"))?;
        if flushed.is_some() {
            self.progress.flushes.fetch_add(1, Ordering::Relaxed);
        }
        let persisted = self.tree.get_highest_persisted_seqno().unwrap_or(0);
        self.progress
            .persisted_lsn
            .fetch_max(persisted, Ordering::AcqRel);
        Ok(())
    }

    /// One round of leveled compaction, if the tree's shape calls for it.
    fn compact(&self) -> Result<(), String> {
        if self.progress.halted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let strategy = Arc::new(lsm_tree::compaction::Leveled::default());
        let tables_before = self.tree.table_count();
        self.tree
            .compact(strategy, self.gc_watermark())
            .map_err(|err| format!("compaction: {err}"))?;
        if self.tree.table_count() != tables_before {
            self.progress.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Serves major compaction tickets up to `asked`, if any is new.
    fn major_compact(&self, asked: u64) -> Result<(), String> {
        if asked <= self.progress.major_compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        let done = self
            .tree
            .major_compact(MAJOR_TABLE_BYTES, self.gc_watermark())
            .map_err(|err| format!("major compaction: {err}"));
        if done.is_ok() {
            self.progress.compactions.fetch_add(1, Ordering::Relaxed);
        }
        self.progress
            .major_compacted
            .fetch_max(asked, Ordering::AcqRel);
        done
    }

    /// Nothing reads old snapshots, so compaction may drop every overwritten
    /// value below the newest sequence number.
    fn gc_watermark(&self) -> u64 {
        self.seqno.get()
    }

    fn record(&self, done: &Result<(), String>) {
        let Ok(mut last_error) = self.progress.last_error.lock() else {
            return;
        };
        match done {
            Ok(()) => *last_error = None,
            Err(why) => {
                if last_error.as_deref() != Some(why.as_str()) {
                    crate::logging::error(
                        "store maintenance failed",
                        &[("shard", &self.label), ("error", why)],
                    );
                }
                *last_error = Some(why.clone());
            }
        }
    }
}
