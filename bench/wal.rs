//! WAL append throughput by batch size, with fsync on (`sync`) and off
//! (`none`) in the same run, on the machine's real disk through io_uring.
//!
//! Each round appends `BATCH` records of `RECORD_BYTES` and waits until the
//! flush holding the last one completed, like `BATCH` concurrent writers
//! sharing one group commit. Run: `cargo bench --bench wal`
//! (set `PROGRESSDB_BENCH_DIR` to measure another filesystem).

#[path = "machine.rs"]
mod machine;

use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use progressdb::wal::record::Lsn;
use progressdb::wal::{Durability, Wal, WalOptions};

const RECORD_BYTES: usize = 256;
const BATCH_SIZES: [usize; 6] = [1, 4, 16, 64, 256, 1024];
/// Each cell runs for about this long.
const CELL_TIME: Duration = Duration::from_millis(1500);

fn measure(durability: Durability, batch: usize) -> (f64, f64) {
    let base = std::env::var("PROGRESSDB_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(move || async move {
            let options = WalOptions {
                durability,
                flush_interval: Duration::from_millis(5),
                segment_bytes: 256 << 20,
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
            while started.elapsed() < CELL_TIME {
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
        "| batch | sync records/s | sync µs/flush | none records/s | none µs/flush | sync ÷ none |"
    );
    println!("|---|---|---|---|---|---|");
    for batch in BATCH_SIZES {
        let (sync_rate, sync_latency) = measure(Durability::Sync, batch);
        let (none_rate, none_latency) = measure(Durability::None, batch);
        println!(
            "| {batch} | {sync_rate:.0} | {sync_latency:.0} | {none_rate:.0} | {none_latency:.0} | {:.2} |",
            sync_rate / none_rate
        );
    }
}
