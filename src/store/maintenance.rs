//! A shard's maintenance thread: it writes sealed memtables out as tables
//! and compacts them, so the shard's executor never does storage I/O or
//! waits for it. The shard seals memtables and asks for a flush; this
//! thread reports back, through atomics, the newest LSN that is on disk
//! (which lets the WAL drop what it covers).
//!
//! The thread runs at a lower priority (nice) than the shard executors:
//! on a small machine it takes the idle time, not the request path's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lsm_tree::{AbstractTree, AnyTree, SequenceNumberCounter};

/// How often the thread looks for work nobody asked for: a flush that
/// failed and must be retried, or compaction debt.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Niceness of the maintenance thread (0 is the executors').
const MAINTENANCE_NICE: libc::c_int = 10;

enum Request {
    Flush,
    /// Flush everything sealed and answer when it is on disk.
    FlushAndWait(mpsc::Sender<Result<(), String>>),
}

/// What the shard reads of the thread's progress.
#[derive(Default)]
struct Progress {
    persisted_lsn: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
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
    pub fn start(
        tree: AnyTree,
        seqno: SequenceNumberCounter,
        label: &str,
    ) -> std::io::Result<Handle> {
        let progress = Arc::new(Progress::default());
        let persisted = tree.get_highest_persisted_seqno().unwrap_or(0);
        progress.persisted_lsn.store(persisted, Ordering::Release);
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

    /// Asks for the sealed memtables to be flushed; does not wait.
    pub fn flush_soon(&self) {
        if let Some(requests) = &self.requests {
            // A stopped thread cannot flush; the next start replays the WAL.
            let _ = requests.send(Request::Flush);
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
        loop {
            let request = match inbox.recv_timeout(IDLE_CHECK) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let done = self.flush().and_then(|()| self.compact());
            self.record(&done);
            if let Some(Request::FlushAndWait(reply)) = request {
                let _ = reply.send(done);
            }
        }
    }

    /// Writes every sealed memtable out as tables, oldest first.
    fn flush(&self) -> Result<(), String> {
        if self.tree.sealed_memtable_count() == 0 {
            return Ok(());
        }
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
