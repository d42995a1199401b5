//! The encrypt-threads job on one shard: seals in place the threads
//! written before encryption was turned on, so an operator can turn it on
//! for existing data (`POST /admin/v1/jobs/encrypt-threads`).
//!
//! The job walks the shard's threads in id order. A thread without a key
//! gets one the way a new thread does (made, wrapped and stored durably
//! in the vault before use), and its record is written again with its
//! title sealed. Then its messages and their past versions stored in the
//! clear are written again through `seal_for_storage` (whole, or at the
//! `--encrypt-field` paths), a bounded batch per step through the normal
//! WAL commit, with a yield between steps. Content does not change, so no
//! live-tail event is sent; readers open plaintext and sealed bodies
//! alike, so a half-sealed thread reads fine.
//!
//! The job's position and counters are written atomically to a small file
//! in the shard directory after each step, once the step is durable; a
//! restarted server continues from there. Sealed items are skipped, so
//! replaying a step seals nothing twice and counts nothing twice.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Engine;
use super::command::EngineError;
use super::reply::Reply;
use crate::model::{Message, Version};
use crate::runtime;
use crate::store::{Direction, Ops, Store};

/// Messages (with their past versions) one step seals at most.
pub const SEAL_BATCH_DEFAULT: usize = 256;

/// Bytes of stored messages and versions after which a step ends early,
/// well below what one WAL record holds once they are sealed.
const SEAL_BATCH_BYTES_MAX: usize = 4 << 20;

/// The file in the shard directory holding the job's position.
const PROGRESS_FILE: &str = "encrypt-threads.json";

/// Bytes of the progress file read at most (it is a few hundred).
const PROGRESS_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Where the job is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealState {
    #[default]
    Idle,
    Running,
    Done,
    Failed,
}

/// The job's position and what it sealed, as persisted and reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealProgress {
    pub state: SealState,
    /// The last thread whose sealing is finished.
    #[serde(default)]
    pub after_thread: Option<String>,
    /// The thread being sealed and its last sealed message timestamp.
    #[serde(default)]
    pub current: Option<(String, Option<u64>)>,
    #[serde(default)]
    pub threads_sealed: u64,
    #[serde(default)]
    pub messages_sealed: u64,
    #[serde(default)]
    pub versions_sealed: u64,
    /// Why the job failed (`state` is `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one batch of a thread's messages sealed, and where it ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SealedBatch {
    pub messages: u64,
    pub versions: u64,
    /// The last message timestamp examined; `None` when the thread is done.
    pub next_after: Option<u64>,
}

/// The shard's job: its persisted progress and the running task.
pub struct SealJob {
    path: PathBuf,
    progress: std::cell::RefCell<SealProgress>,
    task: std::cell::RefCell<Option<runtime::JoinHandle<()>>>,
    batch: usize,
}

impl SealJob {
    /// The job of the shard stored in `dir`, with its last saved progress.
    pub fn open(dir: &Path) -> Result<SealJob, String> {
        let path = dir.join(PROGRESS_FILE);
        let progress = load_progress(&path)?;
        let batch = crate::config::debug_seal_batch().unwrap_or(SEAL_BATCH_DEFAULT);
        Ok(SealJob {
            path,
            progress: std::cell::RefCell::new(progress),
            task: Default::default(),
            batch,
        })
    }

    pub fn stop(&self) {
        if let Some(task) = self.task.borrow_mut().take() {
            task.cancel();
        }
    }
}

fn load_progress(path: &Path) -> Result<SealProgress, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SealProgress::default());
        }
        Err(err) => return Err(format!("cannot open {}: {err}", path.display())),
    };
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, PROGRESS_FILE_BYTES_MAX),
        &mut json,
    )
    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    serde_json::from_slice(&json).map_err(|err| format!("{} is damaged: {err}", path.display()))
}

/// Writes `progress` to `path` atomically and durably: a temporary file,
/// synced, renamed over the old one, and the directory synced.
fn save_progress(path: &Path, progress: &SealProgress) -> Result<(), String> {
    use std::io::Write;
    let temporary = path.with_extension("json.tmp");
    let json = serde_json::to_vec(progress).map_err(|err| err.to_string())?;
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(&json)?;
        file.sync_all()
    });
    let error = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
    written.map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(error)?;
    }
    Ok(())
}

/// Debug builds only: the job stops making progress after this many
/// steps (it stays `running`), so a test can kill the server mid-job.
fn pause_after_steps() -> Option<usize> {
    crate::config::debug_seal_pause_after()
}

impl Engine {
    /// `Command::EncryptThreads`: with `start`, starts the job unless it
    /// runs already: a failed job continues from where it stopped, a
    /// finished one (or none yet) starts a new pass. The reply is the
    /// job's progress on this shard.
    pub(super) fn encrypt_threads(&self, start: bool) -> Result<Reply, EngineError> {
        if start && self.sealing.is_none() {
            return Err(EngineError::Storage("encryption is off".into()));
        }
        let running = self.seal_job.task.borrow().is_some()
            && self.seal_job.progress.borrow().state == SealState::Running;
        if start && !running {
            let mut progress = self.seal_job.progress.borrow_mut();
            if progress.state != SealState::Failed {
                *progress = SealProgress::default();
            }
            (progress.state, progress.error) = (SealState::Running, None);
            drop(progress);
            self.spawn_seal_job();
        }
        let progress = self.seal_job.progress.borrow().clone();
        Ok(Reply::SealProgress(progress))
    }

    /// Continues a job a restart interrupted. Without encryption it is
    /// reported failed (the saved position stays, so a restart with
    /// encryption on continues it).
    pub fn resume_encrypt_threads(&self) {
        let mut progress = self.seal_job.progress.borrow_mut();
        if progress.state != SealState::Running {
            return;
        }
        if self.sealing.is_none() {
            progress.state = SealState::Failed;
            progress.error = Some("encryption is off: restart with --encryption".into());
            return;
        }
        drop(progress);
        self.spawn_seal_job();
    }

    fn spawn_seal_job(&self) {
        let Some(engine) = self.me.upgrade() else {
            return;
        };
        let task = runtime::spawn_detached(async move {
            if let Err(err) = engine.seal_all().await {
                crate::logging::warn(
                    "encrypt-threads job failed",
                    &[("shard", &engine.shard.0), ("error", &format!("{err:?}"))],
                );
                let mut progress = engine.seal_job.progress.borrow().clone();
                progress.state = SealState::Failed;
                progress.error = Some(format!("{err:?}"));
                *engine.seal_job.progress.borrow_mut() = progress.clone();
                let _ = engine.save_seal_progress(progress).await;
            }
        });
        if let Some(old) = self.seal_job.task.borrow_mut().replace(task) {
            old.cancel();
        }
    }

    /// Runs the job from its saved position to the end of the shard.
    async fn seal_all(&self) -> Result<(), EngineError> {
        let mut steps = 0;
        loop {
            if pause_after_steps().is_some_and(|pause| steps >= pause) {
                // A test's pause: the job stays running until a restart.
                runtime::sleep(Duration::from_secs(3600)).await;
                continue;
            }
            let mut progress = self.seal_job.progress.borrow().clone();
            let done = self.seal_step(&mut progress).await?;
            if done {
                progress.state = SealState::Done;
            }
            self.save_seal_progress(progress.clone()).await?;
            *self.seal_job.progress.borrow_mut() = progress;
            steps += 1;
            if done {
                return Ok(());
            }
            futures_lite::future::yield_now().await;
        }
    }

    async fn save_seal_progress(&self, progress: SealProgress) -> Result<(), EngineError> {
        let path = self.seal_job.path.clone();
        runtime::blocking(move || save_progress(&path, &progress))
            .await
            .map_err(EngineError::Storage)
    }

    /// One step: the next thread is keyed, or a batch of the current
    /// thread's messages sealed. True when the shard has no thread left.
    /// What it wrote is durable when it returns.
    async fn seal_step(&self, progress: &mut SealProgress) -> Result<bool, EngineError> {
        let Some((thread, after)) = progress.current.clone() else {
            let Some(next) = self.thread_after(progress.after_thread.as_deref())? else {
                return Ok(true);
            };
            if self.key_thread(&next).await? {
                progress.threads_sealed += 1;
            }
            progress.current = Some((next, None));
            return Ok(false);
        };
        let (batch, lsn) = self.seal_messages(&thread, after, self.seal_job.batch)?;
        if let Some(lsn) = lsn {
            self.wal
                .wait_durable(lsn)
                .await
                .map_err(|err| EngineError::WritesUnavailable(err.to_string()))?;
        }
        progress.messages_sealed += batch.messages;
        progress.versions_sealed += batch.versions;
        match batch.next_after {
            Some(ts) => progress.current = Some((thread, Some(ts))),
            None => {
                progress.current = None;
                progress.after_thread = Some(thread);
            }
        }
        Ok(false)
    }

    /// The first thread id past `after` on this shard.
    fn thread_after(&self, after: Option<&str>) -> Result<Option<String>, EngineError> {
        let mut next = None;
        self.store
            .scan_threads("", after, Direction::Ascending, |id, _| {
                next = Some(id.to_owned());
                Ok(false)
            })?;
        Ok(next)
    }

    /// Gives `thread` a key if it has none, and writes its record (and
    /// author index entry) again with the title sealed. True when it did.
    async fn key_thread(&self, thread: &str) -> Result<bool, EngineError> {
        let Some(sealing) = &self.sealing else {
            return Err(EngineError::Storage("encryption is off".into()));
        };
        let keyless =
            |record: &crate::model::ThreadRecord| record.dek.is_none() && !record.vault_key;
        if !self.store.get_thread(thread)?.is_some_and(|r| keyless(&r)) {
            return Ok(false);
        }
        let (dek, wrapped) = self.new_thread_key(sealing, thread).await?;
        // Read again after the wait: the thread may have been erased.
        let Some(mut record) = self.get_thread(thread)? else {
            return Ok(false);
        };
        if !keyless(&record) {
            return Ok(false);
        }
        let in_vault = sealing.vault.is_some();
        record.dek = Some(wrapped).filter(|_| !in_vault);
        record.vault_key = in_vault;
        self.remember_dek(thread, Rc::new(dek));
        let lsn = self.commit(self.thread_ops(&record)?)?;
        self.wal
            .wait_durable(lsn)
            .await
            .map_err(|err| EngineError::WritesUnavailable(err.to_string()))?;
        Ok(true)
    }

    /// Seals up to about `limit` of `thread`'s messages and versions
    /// stored in the clear, past `after`, in one write.
    pub(super) fn seal_messages(
        &self,
        thread: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(SealedBatch, Option<crate::wal::record::Lsn>), EngineError> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut stored: Vec<(u64, Vec<u8>)> = Vec::new();
        let limit = limit.max(1);
        self.store.scan_messages(
            thread,
            (start, Bound::Unbounded),
            Direction::Ascending,
            |ts, _, json| {
                stored.push((ts, json.to_vec()));
                Ok(stored.len() < limit)
            },
        )?;
        let (count, full) = (stored.len(), stored.len() == limit);
        let (mut batch, mut ops, mut bytes) = (SealedBatch::default(), Ops::default(), 0);
        for (index, (ts, json)) in stored.into_iter().enumerate() {
            let message: Message = serde_json::from_slice(&json)
                .map_err(|err| EngineError::Storage(format!("stored message: {err}")))?;
            let (versions, version_bytes) = self.seal_versions(&mut ops, &message)?;
            bytes += json.len() + version_bytes;
            batch.versions += versions;
            batch.messages += u64::from(self.seal_message(&mut ops, message)?);
            // Large bodies end the batch early: one WAL record holds it all.
            let last = index + 1 == count;
            if (last && full) || (!last && bytes >= SEAL_BATCH_BYTES_MAX) {
                batch.next_after = Some(ts);
                break;
            }
        }
        if ops.is_empty() {
            return Ok((batch, None));
        }
        Ok((batch, Some(self.commit(ops)?)))
    }

    /// Adds the write sealing `message` to `ops`, if it is in the clear
    /// and something of it is to be sealed.
    fn seal_message(&self, ops: &mut Ops, message: Message) -> Result<bool, EngineError> {
        if message.sealed_body.is_some() || !message.sealed_fields.is_empty() {
            return Ok(false);
        }
        let Some(sealed) = self.seal_for_storage(&message, message.version, &message.body)? else {
            return Ok(false);
        };
        let mut message = message;
        (message.body, message.sealed_body) = (sealed.body, sealed.sealed_body);
        message.sealed_fields = sealed.sealed_fields;
        // A change at the message's own timestamp adds no `changes` entry.
        ops.extend(Store::message_ops(None, &message, message.ts));
        Ok(true)
    }

    /// Adds the writes sealing `message`'s past versions stored in the clear.
    /// Returns how many it seals and the bytes of the bodies it read.
    fn seal_versions(&self, ops: &mut Ops, message: &Message) -> Result<(u64, usize), EngineError> {
        let (mut sealed_count, mut bytes) = (0, 0);
        for version in self.store.versions(&message.thread, message.ts)? {
            bytes += version.body.get().len();
            if version.sealed_body.is_some() || !version.sealed_fields.is_empty() {
                continue;
            }
            let Some(sealed) = self.seal_for_storage(message, version.version, &version.body)?
            else {
                continue;
            };
            let stored = Version {
                body: sealed.body,
                sealed_body: sealed.sealed_body,
                sealed_fields: sealed.sealed_fields,
                ..version
            };
            Store::version_op(ops, message, &stored);
            sealed_count += 1;
        }
        Ok((sealed_count, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::vault::Vault;
    use crate::crypto::{Keyring, Kms};
    use crate::engine::testing::{message_body, post, with_engine_on};
    use crate::model::ThreadId;

    fn sealing(db: &Path) -> Option<(Kms, Option<Vault>)> {
        let kms = Kms::Embedded(Keyring::with_key([9; crate::crypto::KEY_BYTES]));
        Some((kms, Some(Vault::open(&db.join("kms")).unwrap())))
    }

    /// Five messages in "a" and one in "b", written without encryption.
    fn plaintext_threads(db: &Path) -> Vec<String> {
        let ids = Rc::new(std::cell::RefCell::new(Vec::new()));
        let kept = ids.clone();
        with_engine_on(db, None, async move |engine| {
            let (a, b) = (ThreadId::parse("a").unwrap(), ThreadId::parse("b").unwrap());
            for n in 0..5 {
                let id = post(&engine, &a, &format!("a{n}")).await;
                kept.borrow_mut().push(id);
            }
            post(&engine, &b, "b0").await;
        });
        ids.take()
    }

    /// Starts the job and waits until it is no longer running.
    async fn run_to_the_end(engine: &Engine) -> SealProgress {
        let Reply::SealProgress(_) = engine.encrypt_threads(true).unwrap() else {
            panic!("a progress");
        };
        for _ in 0..1000 {
            if engine.seal_job.progress.borrow().state != SealState::Running {
                break;
            }
            runtime::sleep(Duration::from_millis(5)).await;
        }
        engine.seal_job.progress.borrow().clone()
    }

    #[test]
    fn the_progress_file_round_trips_and_a_missing_one_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRESS_FILE);
        assert_eq!(load_progress(&path).unwrap(), SealProgress::default());
        let progress = SealProgress {
            state: SealState::Running,
            after_thread: Some("a".into()),
            current: Some(("b".into(), Some(7))),
            threads_sealed: 2,
            messages_sealed: 9,
            versions_sealed: 1,
            error: None,
        };
        save_progress(&path, &progress).unwrap();
        assert_eq!(load_progress(&path).unwrap(), progress);
        std::fs::write(&path, b"{").unwrap();
        assert!(load_progress(&path).is_err());
    }

    #[test]
    fn messages_are_sealed_in_bounded_batches_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let ids = plaintext_threads(dir.path());
        let sealing = sealing(dir.path());
        with_engine_on(dir.path(), sealing, async move |engine| {
            assert!(engine.key_thread("a").await.unwrap());
            assert!(!engine.key_thread("a").await.unwrap(), "keyed already");
            let record = engine.store.get_thread("a").unwrap().unwrap();
            assert!(record.vault_key && record.thread.sealed_title.is_some());
            let (mut after, mut sealed) = (None, Vec::new());
            loop {
                let (batch, _) = engine.seal_messages("a", after, 2).unwrap();
                assert!(batch.messages <= 2, "{batch:?}");
                sealed.push(batch.messages);
                after = batch.next_after;
                if after.is_none() {
                    break;
                }
            }
            assert_eq!(sealed, vec![2, 2, 1]);
            let (again, lsn) = engine.seal_messages("a", None, 10).unwrap();
            assert_eq!((again.messages, lsn), (0, None));
            for (n, id) in ids.iter().enumerate() {
                let a = ThreadId::parse("a").unwrap();
                assert_eq!(message_body(&engine, &a, id).await, format!("\"a{n}\""));
                let ts = crate::model::MessageId::parse(id).unwrap().ts;
                let stored = engine.store.get_message("a", ts).unwrap().unwrap();
                assert!(stored.sealed_body.is_some());
            }
        });
    }

    #[test]
    fn the_job_walks_every_thread_and_saves_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        plaintext_threads(dir.path());
        let sealing = sealing(dir.path());
        let shard_dir = crate::server::datadir::shard_dir(dir.path(), 0);
        with_engine_on(dir.path(), sealing, async move |engine| {
            let progress = run_to_the_end(&engine).await;
            assert_eq!(progress.state, SealState::Done, "{progress:?}");
            assert_eq!((progress.threads_sealed, progress.messages_sealed), (2, 6));
            assert_eq!(progress.after_thread.as_deref(), Some("b"));
            let saved = load_progress(&shard_dir.join(PROGRESS_FILE)).unwrap();
            assert_eq!(saved, progress);
        });
    }

    #[test]
    fn a_failed_job_continues_from_its_position_and_a_done_one_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        plaintext_threads(dir.path());
        let sealing = sealing(dir.path());
        with_engine_on(dir.path(), sealing, async move |engine| {
            *engine.seal_job.progress.borrow_mut() = SealProgress {
                state: SealState::Failed,
                after_thread: Some("a".into()),
                threads_sealed: 1,
                messages_sealed: 5,
                error: Some("the KMS was down".into()),
                ..SealProgress::default()
            };
            let progress = run_to_the_end(&engine).await;
            assert_eq!(progress.state, SealState::Done, "{progress:?}");
            assert_eq!((progress.threads_sealed, progress.messages_sealed), (2, 6));
            assert_eq!(progress.error, None);
            let skipped = engine.store.get_thread("a").unwrap().unwrap();
            assert!(!skipped.vault_key, "the failed pass's position was kept");
            // A new pass starts from the first thread and seals what is left.
            let progress = run_to_the_end(&engine).await;
            assert_eq!((progress.threads_sealed, progress.messages_sealed), (1, 5));
        });
    }
}
