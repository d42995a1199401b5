//! Online backups: the jobs `POST /admin/v1/backups` starts and
//! `GET /admin/v1/backups/{id}` reports on.
//!
//! A job is started on whichever core took the request, once every shard
//! has handed over its snapshot; its files are then written on a thread of
//! its own at a low priority. Jobs live in one process-wide list (any core
//! may be asked about any job), locked only to add, find or trim entries,
//! never while a job runs. One backup runs at a time; the last
//! [`JOBS_KEPT`] are remembered until the server stops.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::{Manifest, Progress, Target, write_backup};
use crate::store::Snapshot;

/// Finished jobs remembered for `GET /admin/v1/backups/{id}`.
const JOBS_KEPT: usize = 16;
/// Niceness of a backup's writer thread (0 is the executors').
const BACKUP_NICE: libc::c_int = 10;

static JOBS: Mutex<VecDeque<Arc<Job>>> = Mutex::new(VecDeque::new());
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

pub struct Job {
    pub id: String,
    target: Target,
    shards: usize,
    started_ms: u64,
    progress: Progress,
    /// Read and replaced whole; held only for that.
    outcome: Mutex<Outcome>,
}

#[derive(Clone)]
enum Outcome {
    Running,
    Done {
        manifest: Manifest,
        finished_ms: u64,
    },
    Failed {
        error: String,
        finished_ms: u64,
    },
}

fn now_ms() -> u64 {
    crate::engine::now_ns() / 1_000_000
}

fn jobs() -> std::sync::MutexGuard<'static, VecDeque<Arc<Job>>> {
    // The list is whole between statements: a panic elsewhere cannot
    // leave it half-changed.
    JOBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a new running job, or names the one already running.
pub fn begin(target: Target, shards: usize) -> Result<Arc<Job>, String> {
    let mut jobs = jobs();
    if let Some(running) = jobs.iter().find(|job| job.is_running()) {
        return Err(running.id.clone());
    }
    let started_ms = now_ms();
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let job = Arc::new(Job {
        id: format!("bk_{started_ms:x}_{sequence}"),
        target,
        shards,
        started_ms,
        progress: Progress::default(),
        outcome: Mutex::new(Outcome::Running),
    });
    jobs.push_back(job.clone());
    while jobs.len() > JOBS_KEPT {
        jobs.pop_front();
    }
    Ok(job)
}

pub fn find(id: &str) -> Option<Arc<Job>> {
    jobs().iter().find(|job| job.id == id).cloned()
}

impl Job {
    fn outcome(&self) -> Outcome {
        self.outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn settle(&self, outcome: Outcome) {
        *self
            .outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = outcome;
    }

    fn is_running(&self) -> bool {
        matches!(self.outcome(), Outcome::Running)
    }

    pub fn fail(&self, error: String) {
        crate::logging::error("backup failed", &[("id", &self.id), ("error", &error)]);
        self.settle(Outcome::Failed {
            error,
            finished_ms: now_ms(),
        });
    }

    /// Writes the backup of `snapshots` (one per shard, sent by the shards
    /// themselves) on a new thread; the job settles when it ends.
    pub fn run(
        self: Arc<Self>,
        db: PathBuf,
        snapshots: mpsc::Receiver<(usize, Snapshot)>,
    ) -> std::io::Result<()> {
        let job = self.clone();
        std::thread::Builder::new()
            .name("progressdb-backup".into())
            .spawn(move || {
                lower_priority();
                let outcome = job.write(&db, snapshots);
                match outcome {
                    Ok(manifest) => {
                        crate::logging::info(
                            "backup done",
                            &[("id", &job.id), ("target", &job.target.describe())],
                        );
                        job.settle(Outcome::Done {
                            manifest,
                            finished_ms: now_ms(),
                        });
                    }
                    Err(error) => job.fail(error),
                }
            })
            .map(|_| ())
    }

    fn write(
        &self,
        db: &std::path::Path,
        snapshots: mpsc::Receiver<(usize, Snapshot)>,
    ) -> Result<Manifest, String> {
        let mut taken = Vec::with_capacity(self.shards);
        for _ in 0..self.shards {
            taken.push(
                snapshots
                    .recv()
                    .map_err(|_| "a shard did not hand over its snapshot".to_string())?,
            );
        }
        let staging = super::staging_dir(db, &self.id);
        super::deliver(&self.target, &staging, |dir| {
            write_backup(dir, db, taken, &self.progress)
        })
    }

    /// The job as `GET /admin/v1/backups/{id}` shows it.
    pub fn status(&self) -> serde_json::Value {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut status = serde_json::json!({
            "id": self.id,
            "target": self.target.describe(),
            "started_ms": self.started_ms,
            "shards": self.shards,
            "shards_done": read(&self.progress.shards_done),
            "items": read(&self.progress.items),
            "bytes": read(&self.progress.bytes),
        });
        let fields = match self.outcome() {
            Outcome::Running => serde_json::json!({ "state": "running" }),
            Outcome::Done {
                manifest,
                finished_ms,
            } => serde_json::json!({
                "state": "done",
                "finished_ms": finished_ms,
                "lsns": manifest.files.iter().map(|file| file.lsn).collect::<Vec<_>>(),
            }),
            Outcome::Failed { error, finished_ms } => serde_json::json!({
                "state": "failed",
                "finished_ms": finished_ms,
                "error": error,
            }),
        };
        if let (Some(status), serde_json::Value::Object(fields)) = (status.as_object_mut(), fields)
        {
            status.extend(fields);
        }
        status
    }
}

fn lower_priority() {
    // SAFETY: setpriority on this thread's own id changes only its
    // scheduling weight; failure leaves the default, which is fine.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKUP_NICE);
    }
}
