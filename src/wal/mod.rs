//! Per-shard write-ahead log: the source of truth for every mutation.
//!
//! A shard resolves a mutation (ids, timestamps, versions), encodes the
//! resulting storage operations, [`Wal::append`]s them (an in-memory
//! append that returns the LSN), applies them to its store, and then waits
//! for [`Wal::wait_durable`] according to the [`Durability`] mode.
//!
//! One flusher task per shard turns appends into flushes: it takes
//! everything appended so far, frames it ([`segment`]), writes it with one
//! io_uring DMA write and one fdatasync, then wakes every waiter whose LSN
//! it covered. Appends that arrive while a flush is in flight form the next
//! flush, so concurrent writers share fsyncs (group commit) and the shard
//! keeps serving requests meanwhile.
//!
//! If a write or fdatasync fails, the shard's WAL is poisoned: waiters and
//! later appends get [`WalError::Poisoned`] (answered 503) until restart. An
//! fsync is never retried, because after a failure the kernel may have
//! dropped the dirty pages and a retry can report success for lost data.

pub mod record;
pub mod recovery;
pub mod segment;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{DmaFile, OpenOptions};

use record::{Kind, Lsn, Record};
use segment::{flush_len, frame_flush};

/// When a write is acknowledged, and what a crash can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the record is on stable storage (fdatasync done).
    Sync,
    /// Acknowledge at once; fdatasync at least every flush interval.
    Batch,
    /// Acknowledge at once; write but never fdatasync.
    None,
}

impl Durability {
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "sync" => Some(Durability::Sync),
            "batch" => Some(Durability::Batch),
            "none" => Some(Durability::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Batch => "batch",
            Durability::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub durability: Durability,
    /// Longest time an appended record waits for its flush in `batch` mode.
    pub flush_interval: Duration,
    /// Size each segment file is preallocated to.
    pub segment_bytes: u64,
    /// Fault injection for tests: fail every flush after this many, as a
    /// failed fdatasync would. Only debug builds ever set it.
    pub fail_after_flushes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalError {
    /// A write or fsync failed earlier; nothing is accepted until restart.
    Poisoned(String),
    /// The payload is larger than one record may be
    /// ([`record::append_bytes_max`]); nothing was logged.
    TooLarge { bytes: usize, max: usize },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Poisoned(why) => {
                write!(f, "write-ahead log unavailable until restart: {why}")
            }
            WalError::TooLarge { bytes, max } => write!(
                f,
                "a write of {bytes} bytes is larger than one log record ({max} bytes)"
            ),
        }
    }
}

/// A segment file and the first LSN it holds (also its name).
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub first: Lsn,
    pub path: PathBuf,
}

/// Counters for stats and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    pub appends: u64,
    pub flushes: u64,
    pub fsyncs: u64,
    pub records_flushed: u64,
    pub bytes_written: u64,
    pub segments: u64,
    pub durable_lsn: u64,
    /// Successful flushes (write, and fdatasync unless `none`) by how long
    /// they took: see [`flush_bucket`]. Shows how much of a write's
    /// latency is the disk's.
    pub flush_micros: [u64; FLUSH_BUCKETS],
    pub flush_micros_sum: u64,
    /// The fdatasync part of those flushes (the rest of a flush is its
    /// write), from submission to completion as the shard sees it.
    pub sync_micros_sum: u64,
}

/// Buckets of [`WalStats::flush_micros`].
pub const FLUSH_BUCKETS: usize = 24;

/// The bucket of a flush that took `micros`: bucket `i` counts flushes of
/// at least 2^(i-1) and under 2^i µs; the last one everything from about
/// 4 s up.
pub fn flush_bucket(micros: u64) -> usize {
    ((u64::BITS - micros.leading_zeros()) as usize).min(FLUSH_BUCKETS - 1)
}

/// Appended records not yet handed to the flusher.
struct Pending {
    records: Vec<u8>,
    count: u32,
    first: Lsn,
}

type Waiter = (Lsn, LocalSender<Result<(), WalError>>);

pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    next_lsn: Cell<Lsn>,
    pending: RefCell<Pending>,
    durable: Cell<Lsn>,
    /// `durable` as shared with the store's maintenance thread, which
    /// flushes no memtable past it.
    durable_watermark: Arc<AtomicU64>,
    waiters: RefCell<VecDeque<Waiter>>,
    poisoned: RefCell<Option<String>>,
    segments: RefCell<Vec<SegmentInfo>>,
    kick: LocalSender<()>,
    stats: Cell<WalStats>,
    label: String,
    /// The flusher task; it holds the log, so [`Wal::stop`] cancels it to
    /// let the log (and its files) be dropped.
    flusher: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// Set to make the next flush open a new segment, so that every
    /// record logged before it can be checkpointed away (erasure).
    new_segment_asked: Cell<bool>,
}

/// Bytes reserved up front for the pending buffer.
const PENDING_CAPACITY: usize = 64 * 1024;

impl Wal {
    /// Starts the log after recovery: new records get LSNs after
    /// `last_lsn`, in a new segment created by the first flush. The log
    /// keeps `durable_watermark` at its newest LSN on disk.
    pub fn start(
        dir: &Path,
        label: String,
        options: WalOptions,
        (last_lsn, segments): (Lsn, Vec<SegmentInfo>),
        durable_watermark: Arc<AtomicU64>,
    ) -> Rc<Wal> {
        durable_watermark.fetch_max(last_lsn.0, Ordering::AcqRel);
        let (kick, kicked) = local_channel::new_bounded(1);
        let wal = Rc::new(Wal {
            dir: dir.to_path_buf(),
            options,
            next_lsn: Cell::new(Lsn(last_lsn.0 + 1)),
            pending: RefCell::new(Pending {
                records: Vec::with_capacity(PENDING_CAPACITY),
                count: 0,
                first: Lsn(last_lsn.0 + 1),
            }),
            durable: Cell::new(last_lsn),
            durable_watermark,
            waiters: RefCell::new(VecDeque::new()),
            poisoned: RefCell::new(None),
            stats: Cell::new(WalStats {
                segments: segments.len() as u64,
                durable_lsn: last_lsn.0,
                ..WalStats::default()
            }),
            segments: RefCell::new(segments),
            kick,
            label,
            flusher: RefCell::new(None),
            new_segment_asked: Cell::new(false),
        });
        let flusher = glommio::spawn_local(wal.clone().flusher(kicked)).detach();
        *wal.flusher.borrow_mut() = Some(flusher);
        wal
    }

    /// Makes the next flush write to a new segment: once the store has
    /// the records before it in tables, a checkpoint removes their files.
    pub fn start_new_segment(&self) {
        self.new_segment_asked.set(true);
    }

    /// Stops the flusher. Only for closing: records appended afterwards are
    /// never written, so every write must have been waited for first.
    pub fn stop(&self) {
        if let Some(flusher) = self.flusher.borrow_mut().take() {
            flusher.cancel();
        }
    }

    pub fn stats(&self) -> WalStats {
        self.stats.get()
    }

    /// The newest LSN appended so far (durable or not).
    pub fn last_appended(&self) -> Lsn {
        Lsn(self.next_lsn.get().0 - 1)
    }

    /// The newest LSN on disk (written, and fdatasynced unless `none`).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable.get()
    }

    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    /// True once a write or fdatasync failed: nothing past
    /// [`Wal::durable_lsn`] will ever be on disk.
    pub fn failed(&self) -> bool {
        self.poisoned.borrow().is_some()
    }

    fn update_stats(&self, change: impl FnOnce(&mut WalStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }

    /// Adds a record to the next flush and returns its LSN. Does not wait.
    /// A payload larger than a record may be is refused, not logged.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        if let Some(why) = self.poisoned.borrow().as_ref() {
            return Err(WalError::Poisoned(why.clone()));
        }
        let max = record::append_bytes_max();
        if payload.len() > max {
            return Err(WalError::TooLarge {
                bytes: payload.len(),
                max,
            });
        }
        let lsn = self.next_lsn.get();
        self.next_lsn.set(Lsn(lsn.0 + 1));
        let mut pending = self.pending.borrow_mut();
        if pending.count == 0 {
            pending.first = lsn;
        }
        Record {
            kind: Kind::Operations,
            lsn,
            payload,
        }
        .encode_into(&mut pending.records);
        pending.count += 1;
        drop(pending);
        self.update_stats(|stats| stats.appends += 1);
        // A full channel means a kick is already waiting: nothing to add.
        let _ = self.kick.try_send(());
        Ok(lsn)
    }

    /// Waits until `lsn` is as durable as the mode promises: on stable
    /// storage in `sync` mode, immediately in the others.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        if self.options.durability != Durability::Sync {
            return Ok(());
        }
        self.wait_flushed(lsn).await
    }

    /// Waits until every record appended so far is flushed, whatever the
    /// durability mode: a clean shutdown must not leave a `batch` or `none`
    /// interval's records in memory.
    pub async fn flush_all(&self) -> Result<(), WalError> {
        self.wait_flushed(self.last_appended()).await
    }

    /// Waits until the flush holding `lsn` completed: written and, unless
    /// the mode is `none`, fdatasynced.
    pub async fn wait_flushed(&self, lsn: Lsn) -> Result<(), WalError> {
        if self.durable.get() >= lsn {
            return Ok(());
        }
        if let Some(why) = self.poisoned.borrow().as_ref() {
            return Err(WalError::Poisoned(why.clone()));
        }
        let (done, wait) = local_channel::new_bounded(1);
        self.waiters.borrow_mut().push_back((lsn, done));
        match wait.recv().await {
            Some(result) => result,
            None => Err(WalError::Poisoned("the log writer stopped".into())),
        }
    }

    async fn flusher(self: Rc<Self>, kicked: LocalReceiver<()>) {
        let mut current: Option<OpenSegment> = None;
        let spare = Spare::default();
        loop {
            if self.pending.borrow().count == 0 {
                if kicked.recv().await.is_none() {
                    return;
                }
                continue;
            }
            if self.options.durability == Durability::Batch {
                // Let the interval's appends gather into one flush.
                glommio::timer::sleep(self.options.flush_interval).await;
            }
            let batch = self.pending.replace(Pending {
                records: Vec::with_capacity(PENDING_CAPACITY),
                count: 0,
                first: self.next_lsn.get(),
            });
            let last = Lsn(batch.first.0 + u64::from(batch.count) - 1);
            let began = std::time::Instant::now();
            match self.flush(&mut current, &spare, &batch).await {
                Ok(()) => {
                    let micros = micros_since(began);
                    self.durable.set(last);
                    self.durable_watermark.store(last.0, Ordering::Release);
                    self.update_stats(|stats| {
                        stats.flush_micros[flush_bucket(micros)] += 1;
                        stats.flush_micros_sum = stats.flush_micros_sum.saturating_add(micros);
                        stats.flushes += 1;
                        stats.records_flushed += u64::from(batch.count);
                        stats.durable_lsn = last.0;
                        if self.options.durability != Durability::None {
                            stats.fsyncs += 1;
                        }
                    });
                    self.wake(last, Ok(()));
                }
                Err(why) => {
                    crate::logging::error(
                        "log write failed; refusing writes until restart",
                        &[("shard", &self.label), ("error", &why)],
                    );
                    *self.poisoned.borrow_mut() = Some(why.clone());
                    self.forget_failed_flush(current.as_ref()).await;
                    self.wake(Lsn(u64::MAX), Err(WalError::Poisoned(why)));
                    return;
                }
            }
        }
    }

    /// Zeroes the first block of the flush that failed, where its batch
    /// header is: its records may have reached the disk although the write
    /// or fdatasync reported failure, and recovery stops at a zero block,
    /// so none of them (all answered 503) comes back at restart. Best
    /// effort: the disk is failing, and the outcome is logged.
    async fn forget_failed_flush(&self, segment: Option<&OpenSegment>) {
        let Some(segment) = segment else {
            return;
        };
        let mut zeros = segment.file.alloc_dma_buffer(segment::BLOCK_BYTES);
        zeros.as_bytes_mut().fill(0);
        let forgotten = match segment.file.write_at(zeros, segment.offset).await {
            Ok(_) => segment.file.fdatasync().await,
            Err(err) => Err(err),
        };
        match forgotten {
            Ok(()) => crate::logging::info(
                "the failed flush was erased from the log",
                &[("shard", &self.label), ("offset", &segment.offset)],
            ),
            Err(err) => crate::logging::error(
                "the failed flush could not be erased; its writes, all refused, may \
                 reappear after restart",
                &[("shard", &self.label), ("error", &err)],
            ),
        }
    }

    /// Answers every waiter for an LSN up to `upto`. Waiters are not in LSN
    /// order: a read waits for the newest write it saw, which may be older
    /// than a write queued before it.
    fn wake(&self, upto: Lsn, result: Result<(), WalError>) {
        self.waiters.borrow_mut().retain(|(lsn, done)| {
            if *lsn > upto {
                return true;
            }
            let _ = done.try_send(result.clone());
            false
        });
    }

    /// One write (+ fdatasync unless `none`) of a framed batch, rotating to
    /// a new segment when the current one is full.
    async fn flush(
        &self,
        current: &mut Option<OpenSegment>,
        spare: &Spare,
        batch: &Pending,
    ) -> Result<(), String> {
        let length = flush_len(batch.records.len());
        let full = self.new_segment_asked.take()
            || current
                .as_ref()
                .is_none_or(|segment| segment.offset + length as u64 > segment.capacity);
        if full {
            if let Some(old) = current.take() {
                let _ = old.file.close().await;
            }
            *current = Some(self.next_segment(spare, batch.first, length as u64).await?);
        }
        let segment = current.as_mut().expect("a segment is open");
        let mut buffer = segment.file.alloc_dma_buffer(length);
        frame_flush(
            batch.first,
            batch.count,
            &batch.records,
            buffer.as_bytes_mut(),
        );
        let written = segment
            .file
            .write_at(buffer, segment.offset)
            .await
            .map_err(|err| format!("WAL write failed: {err}"))?;
        if written != length {
            return Err(format!("WAL write was short: {written} of {length} bytes"));
        }
        if self.options.durability != Durability::None {
            let began = std::time::Instant::now();
            segment
                .file
                .fdatasync()
                .await
                .map_err(|err| format!("WAL fdatasync failed: {err}"))?;
            let micros = micros_since(began);
            self.update_stats(|stats| {
                stats.sync_micros_sum = stats.sync_micros_sum.saturating_add(micros);
            });
        }
        if self
            .options
            .fail_after_flushes
            .is_some_and(|limit| self.stats.get().flushes >= limit)
        {
            return Err("WAL fdatasync failed: injected fault".into());
        }
        segment.offset += length as u64;
        self.update_stats(|stats| stats.bytes_written += length as u64);
        // Half way through a segment, start zero-filling the next one: a
        // log that never fills its first segment never pays for a spare.
        if segment.offset * 2 >= segment.capacity {
            spare.prepare(self.dir.join(SPARE_NAME), self.options.segment_bytes);
        }
        Ok(())
    }

    /// The segment for records from `first` on: the spare when one is
    /// ready (and large enough), else a new preallocated file.
    async fn next_segment(
        &self,
        spare: &Spare,
        first: Lsn,
        at_least: u64,
    ) -> Result<OpenSegment, String> {
        let segment = if spare.take_ready() && at_least <= self.options.segment_bytes {
            self.adopt_spare(first).await?
        } else {
            self.create_segment(first, at_least).await?
        };
        Ok(segment)
    }

    /// Renames the zero-filled spare to the segment for `first`. Its blocks
    /// are already written, so the fdatasyncs of the flushes into it only
    /// flush data: no extent conversion, no file-system journal commit.
    async fn adopt_spare(&self, first: Lsn) -> Result<OpenSegment, String> {
        let path = self.dir.join(recovery::segment_name(first));
        let (from, to, dir) = (self.dir.join(SPARE_NAME), path.clone(), self.dir.clone());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::rename(&from, &to)
                    .map_err(|err| format!("cannot rename {}: {err}", from.display()))?;
                sync_dir(&dir)
            })
            .await?;
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .dma_open(&path)
            .await
            .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
        self.added_segment(first, path);
        Ok(OpenSegment {
            file,
            offset: 0,
            capacity: self.options.segment_bytes,
        })
    }

    /// Creates, preallocates and syncs a new segment, then syncs the
    /// directory so the file itself survives a crash.
    async fn create_segment(&self, first: Lsn, at_least: u64) -> Result<OpenSegment, String> {
        let path = self.dir.join(recovery::segment_name(first));
        let capacity = self.options.segment_bytes.max(at_least);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
        let prepared = match file.pre_allocate(capacity, false).await {
            Ok(()) => file
                .fdatasync()
                .await
                .map_err(|err| format!("cannot sync {}: {err}", path.display())),
            Err(err) => Err(format!("cannot preallocate {}: {err}", path.display())),
        };
        if let Err(why) = prepared {
            // A segment that never held a record must not stay behind: the
            // next start would log its first LSN again, into this name.
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(why);
        }
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || sync_dir(&dir))
            .await?;
        self.added_segment(first, path);
        Ok(OpenSegment {
            file,
            offset: 0,
            capacity,
        })
    }

    fn added_segment(&self, first: Lsn, path: PathBuf) {
        self.segments.borrow_mut().push(SegmentInfo { first, path });
        self.update_stats(|stats| stats.segments += 1);
    }

    /// Deletes segments whose every record is at or below `durable_in_store`
    /// (the store has them on disk). The newest segment is always kept.
    /// The unlinks and the directory sync run on a blocking thread.
    pub async fn remove_segments_through(&self, durable_in_store: Lsn) -> Result<usize, String> {
        let removable: Vec<PathBuf> = {
            let segments = self.segments.borrow();
            segments
                .windows(2)
                .take_while(|pair| pair[1].first.0 <= durable_in_store.0 + 1)
                .map(|pair| pair[0].path.clone())
                .collect()
        };
        if removable.is_empty() {
            return Ok(0);
        }
        let count = removable.len();
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                for path in &removable {
                    std::fs::remove_file(path)
                        .map_err(|err| format!("cannot remove {}: {err}", path.display()))?;
                }
                sync_dir(&dir)
            })
            .await?;
        // Only this function removes segments, and appends add at the end,
        // so the first `count` are still the ones removed.
        self.segments.borrow_mut().drain(..count);
        self.update_stats(|stats| stats.segments -= count as u64);
        Ok(count)
    }

    /// Bytes the log's files take in its directory now (segments may be
    /// preallocated, so this is what the disk holds, not what was written).
    /// A handful of `stat` calls: meant for the admin stats, not hot paths.
    pub fn disk_bytes(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.metadata().ok())
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len())
            .sum()
    }

    /// Segments that `remove_segments_through` could delete now.
    pub fn segment_count(&self) -> usize {
        self.segments.borrow().len()
    }
}

struct OpenSegment {
    file: DmaFile,
    offset: u64,
    capacity: u64,
}

/// The next segment's file while it is prepared; recovery lists `*.wal`
/// files only, so a leftover spare is ignored (and overwritten).
const SPARE_NAME: &str = "next-segment.spare";

/// Bytes of zeros written per call while preparing a spare.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

/// The next segment, prepared on a blocking thread ahead of need.
#[derive(Default)]
struct Spare(Rc<Cell<SpareState>>);

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum SpareState {
    #[default]
    Absent,
    Preparing,
    Ready,
}

impl Spare {
    /// True (and the spare is used up) when a prepared spare is ready.
    fn take_ready(&self) -> bool {
        let ready = self.0.get() == SpareState::Ready;
        if ready {
            self.0.set(SpareState::Absent);
        }
        ready
    }

    /// Starts writing a zero-filled spare of `bytes` unless one is ready or
    /// under way. A failure only means the next rotation preallocates.
    fn prepare(&self, path: PathBuf, bytes: u64) {
        if self.0.get() != SpareState::Absent {
            return;
        }
        self.0.set(SpareState::Preparing);
        let state = self.0.clone();
        glommio::spawn_local(async move {
            let written = glommio::executor()
                .spawn_blocking(move || write_zeroed_file(&path, bytes))
                .await;
            state.set(match written {
                Ok(()) => SpareState::Ready,
                Err(_) => SpareState::Absent,
            });
        })
        .detach();
    }
}

/// Microseconds since `began`, for the flush statistics.
fn micros_since(began: std::time::Instant) -> u64 {
    u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Writes `bytes` zeros (rounded up to whole 4 KiB blocks) to a new file
/// at `path` with direct I/O and syncs it: the zeros go from one buffer to
/// the disk, without filling the page cache or copying per write. Public
/// for the WAL bench, whose device floor writes into such a file.
pub fn write_zeroed_file(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const BLOCK: usize = 4096;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    // Direct I/O needs a block-aligned buffer: take the aligned window of
    // a slightly larger allocation.
    let raw = vec![0u8; ZERO_CHUNK_BYTES + BLOCK];
    let start = raw.as_ptr().align_offset(BLOCK);
    let zeros = &raw[start..start + ZERO_CHUNK_BYTES];
    let mut left = bytes.div_ceil(BLOCK as u64) * BLOCK as u64;
    while left > 0 {
        let chunk = left.min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    file.sync_all()
}

/// fsync on a directory, so created, renamed or removed entries persist.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|err| format!("cannot sync directory {}: {err}", dir.display()))
}
