//! WAL append throughput by batch size, with fsync on (`sync`) and off
//! (`none`) in the same run, on the machine's real disk through io_uring,
//! and the device's own floor: the same bytes per flush written with a
//! blocking `pwrite` + `fdatasync` from a plain thread (`device`).
//!
//! Each round appends `BATCH` records of `RECORD_BYTES` and waits until the
//! flush holding the last one completed, like `BATCH` concurrent writers
//! sharing one group commit. Run: `cargo bench --bench wal`
//! (set `PROGRESSDB_BENCH_DIR` to measure another filesystem).

#[path = "machine.rs"]
mod machine;

use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use progressdb::wal::record::{HEADER_BYTES, Lsn};
use progressdb::wal::segment::flush_len;
use progressdb::wal::{Durability, Wal, WalOptions, write_zeroed_file};

const RECORD_BYTES: usize = 256;
const BATCH_SIZES: [usize; 6] = [1, 4, 16, 64, 256, 1024];
/// Each cell runs for about this long.
const CELL_TIME: Duration = Duration::from_millis(1500);
/// The log's segment size in the bench.
const SEGMENT_BYTES: u64 = 256 << 20;
/// A cell also stops after appending this much, so it never fills half a
/// segment: past that the log zero-fills the next one on a blocking
/// thread, which would outlive the cell's executor.
const CELL_BYTES_MAX: u64 = SEGMENT_BYTES / 4;

/// Bytes on disk of one flush of `batch` records.
fn flush_bytes(batch: usize) -> u64 {
    flush_len(batch * (HEADER_BYTES + RECORD_BYTES)) as u64
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("PROGRESSDB_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    tempfile::tempdir_in(base).expect("temp dir")
}

/// Mean µs of one blocking `pwrite` + `fdatasync` of a flush of `batch`
/// records, direct I/O into a file written with zeros first (as the log's
/// segments are), so the disk does what a flush asks of it and no more.
fn device_floor(batch: usize) -> f64 {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const FILE_BYTES: u64 = 64 << 20;
    let dir = bench_dir();
    let path = dir.path().join("floor");
    write_zeroed_file(&path, FILE_BYTES).expect("zero fill");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("floor file");
    let length = flush_bytes(batch) as usize;
    // Direct I/O needs an aligned buffer; flushes are whole blocks, so
    // `length` keeps every write aligned too.
    let storage = vec![0x5a_u8; length + 4096];
    let start = storage.as_ptr().align_offset(4096);
    let block = &storage[start..start + length];
    let (started, mut rounds, mut offset) = (Instant::now(), 0u64, 0u64);
    while started.elapsed() < CELL_TIME {
        file.write_all_at(block, offset).expect("write");
        file.sync_data().expect("fdatasync");
        rounds += 1;
        offset = (offset + length as u64) % (FILE_BYTES - length as u64);
    }
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

fn measure(durability: Durability, batch: usize) -> (f64, f64) {
    let dir = bench_dir();
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(move || async move {
            let options = WalOptions {
                durability,
                flush_interval: Duration::from_millis(5),
                segment_bytes: SEGMENT_BYTES,
                fail_after_flushes: None,
            };
            let watermark = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let wal = Wal::start(
                &path,
                "bench".into(),
                options,
                (Lsn(0), Vec::new()),
                watermark,
            );
            let payload = vec![0x5a; RECORD_BYTES];
            let started = Instant::now();
            let mut records = 0u64;
            let mut rounds = 0u64;
            while started.elapsed() < CELL_TIME && rounds * flush_bytes(batch) < CELL_BYTES_MAX {
                let mut last = Lsn(0);
                for _ in 0..batch {
                    last = wal.append(&payload).expect("append");
                }
                wal.wait_flushed(last).await.expect("flush");
                records += batch as u64;
                rounds += 1;
            }
            let seconds = started.elapsed().as_secs_f64();
            (records as f64 / seconds, seconds * 1e6 / rounds as f64)
        })
        .expect("executor")
        .join()
        .expect("bench run")
}

fn main() {
    println!(
        "WAL append, {RECORD_BYTES}-byte records; dir {}; {}",
        std::env::var("PROGRESSDB_BENCH_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        machine::describe(),
    );
    println!();
    println!(
        "| batch | sync records/s | sync µs/flush | none records/s | none µs/flush | sync ÷ none | device µs/flush | sync ÷ device µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for batch in BATCH_SIZES {
        let (sync_rate, sync_latency) = measure(Durability::Sync, batch);
        let (none_rate, none_latency) = measure(Durability::None, batch);
        let device_latency = device_floor(batch);
        println!(
            "| {batch} | {sync_rate:.0} | {sync_latency:.0} | {none_rate:.0} | {none_latency:.0} | {:.2} | {device_latency:.0} | {:.2} |",
            sync_rate / none_rate,
            sync_latency / device_latency
        );
    }
}
