//! Timeline page scans on the LSM-tree store through `progressdb::store::Store`: how fast
//! the newest page of a thread comes out of a reverse iterator, against the
//! oldest page from a forward iterator in the same run.
//!
//! One thread gets `HOT_MESSAGES` messages, interleaved in time with
//! `OTHER_MESSAGES_EACH` messages in each of `OTHER_THREADS` other threads
//! (its id sorts among theirs, so its keys sit between theirs). Values
//! are what `Store::message_ops` writes: a live flag byte, then about
//! `MESSAGE_JSON_BYTES` of message JSON. Writes go through `Ops` and
//! `Store::apply`, `MESSAGES_PER_APPLY` messages per increasing `Lsn`.
//!
//! A page is what `engine::page` does for `GET .../messages`: walk
//! `scan_messages` collecting `PAGE` copied JSON items plus one more to learn
//! whether more exist. Three pages are measured:
//! - newest: `Descending` over the whole thread (reverse iterator);
//! - oldest: `Ascending` over the whole thread (forward iterator);
//! - cursor: `Descending` ending at `Bound::Excluded(ts)` of a random message
//!   (the "older than this one" page of infinite scroll).
//!
//! Keys are `<thread> 0x00 <ts BE>`, so newest-first has no forward-iterator
//! alternative; the oldest page is the baseline, and the ratio columns are
//! pages/s ÷ oldest pages/s. Each layout is measured in turn: right after
//! loading (memtables), and after `Store::persist` (every memtable flushed
//! to tables) and reopening (block cache cold at first; warm-up pages run
//! before timing).
//! Run: `cargo bench --bench timeline_scan` (set `PROGRESSDB_BENCH_DIR` to
//! measure another filesystem).

#[path = "machine.rs"]
mod machine;

use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use progressdb::rng::XorShift;
use progressdb::store::{Direction, Ops, Space, Store, StoreOptions, keys};
use progressdb::wal::record::Lsn;

/// Messages in the thread whose pages are read.
const HOT_MESSAGES: usize = 100_000;
const HOT_THREAD: &str = "t-0500-hot";
/// Threads written around it, `OTHER_MESSAGES_EACH` messages each.
const OTHER_THREADS: usize = 1_000;
const OTHER_MESSAGES_EACH: usize = 100;
/// JSON bytes per stored message (the flag byte comes on top).
const MESSAGE_JSON_BYTES: usize = 200;
/// Messages per `Store::apply`, i.e. per LSN.
const MESSAGES_PER_APPLY: usize = 64;
/// Items per page, the server's default page size.
const PAGE: usize = 50;
/// `Store::open` block cache, as the brief's server setting.
const CACHE_BYTES: u64 = 64 << 20;
/// First message timestamp (ns since the epoch) and spacing between writes.
const FIRST_TS: u64 = 1_700_000_000_000_000_000;
const TS_STEP: u64 = 1_000_000;
/// Random cursors cycled through by the cursor page.
const CURSORS: usize = 4096;
/// Each cell runs for about this long.
const CELL_TIME: Duration = Duration::from_millis(1000);
/// Untimed pages before each cell.
const WARMUP_TIME: Duration = Duration::from_millis(200);

/// Stored value of one message: live flag, then its JSON.
fn message_value(thread: &str, ts: u64, author: usize) -> Vec<u8> {
    let json = |text: &str| {
        format!(
            r#"{{"id":"m-{ts:x}","thread":"{thread}","author":"user-{author:02}","ts":{ts},"body":{{"text":"{text}"}},"version":1}}"#
        )
    };
    let filler = MESSAGE_JSON_BYTES.saturating_sub(json("").len());
    let text: String = "the quick brown fox jumps over the lazy dog "
        .chars()
        .cycle()
        .take(filler)
        .collect();
    let mut value = vec![0u8];
    value.extend(json(&text).bytes());
    value
}

fn other_thread(n: usize) -> String {
    format!("t-{n:04}")
}

fn hot_ts(n: usize) -> u64 {
    FIRST_TS + n as u64 * TS_STEP
}

/// Writes every message, hot and other threads interleaved in time.
/// Returns the stored bytes (keys and values).
fn load(store: &Store) -> usize {
    let others = OTHER_THREADS * OTHER_MESSAGES_EACH;
    let total = HOT_MESSAGES + others;
    let mut bytes = 0;
    let mut lsn = store.applied_lsn().0;
    let mut ops = Ops::default();
    let mut in_batch = 0;
    let mut hot = 0;
    let mut other = 0;
    for n in 0..total {
        // Spread the other threads' messages evenly among the hot ones.
        let (thread, ts) = if other * total < n * others {
            let thread = other_thread(other % OTHER_THREADS);
            let ts = FIRST_TS + n as u64 * TS_STEP / 2 + 1;
            other += 1;
            (thread, ts)
        } else {
            hot += 1;
            (HOT_THREAD.to_owned(), hot_ts(hot - 1))
        };
        let key = keys::message(&thread, ts);
        let value = message_value(&thread, ts, n % 50);
        bytes += key.len() + value.len();
        ops.put(Space::Messages, key, value);
        in_batch += 1;
        if in_batch == MESSAGES_PER_APPLY || n + 1 == total {
            lsn += 1;
            store.apply(Lsn(lsn), ops).expect("apply");
            ops = Ops::default();
            in_batch = 0;
        }
    }
    assert_eq!((hot, other), (HOT_MESSAGES, others));
    bytes
}

/// One page as `engine::page` reads it: up to `PAGE` copied items and
/// whether more exist.
fn page(
    store: &Store,
    range: (Bound<u64>, Bound<u64>),
    direction: Direction,
) -> Vec<(u64, Vec<u8>)> {
    let mut items = Vec::with_capacity(PAGE);
    let mut more = false;
    store
        .scan_messages(HOT_THREAD, range, direction, |ts, deleted, json| {
            if deleted {
                return Ok(true);
            }
            if items.len() == PAGE {
                more = true;
                return Ok(false);
            }
            items.push((ts, json.to_vec()));
            Ok(true)
        })
        .expect("scan");
    assert!(more && items.len() == PAGE);
    items
}

const ALL: (Bound<u64>, Bound<u64>) = (Bound::Unbounded, Bound::Unbounded);

/// Pages per second of `read` over about `CELL_TIME`.
fn rate(mut read: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < WARMUP_TIME {
        read(n);
        n += 1;
    }
    let started = Instant::now();
    let mut pages = 0;
    loop {
        read(n + pages);
        pages += 1;
        let elapsed = started.elapsed();
        if elapsed >= CELL_TIME {
            return pages as f64 / elapsed.as_secs_f64();
        }
    }
}

/// Tables (SSTs) of the store.
fn tables(store: &Store) -> u64 {
    store.metrics().tables
}

fn measure_row(layout: &str, store: &Store, cursors: &[u64]) {
    let newest = page(store, ALL, Direction::Descending);
    assert_eq!(newest[0].0, hot_ts(HOT_MESSAGES - 1));
    let oldest = page(store, ALL, Direction::Ascending);
    assert_eq!(oldest[0].0, hot_ts(0));
    let before = page(
        store,
        (Bound::Unbounded, Bound::Excluded(cursors[0])),
        Direction::Descending,
    );
    assert_eq!(before[0].0, cursors[0] - TS_STEP);

    let newest = rate(|_| {
        std::hint::black_box(page(store, ALL, Direction::Descending));
    });
    let oldest = rate(|_| {
        std::hint::black_box(page(store, ALL, Direction::Ascending));
    });
    let cursor = rate(|n| {
        let end = Bound::Excluded(cursors[n % cursors.len()]);
        std::hint::black_box(page(store, (Bound::Unbounded, end), Direction::Descending));
    });
    println!(
        "| {layout} | {} | {newest:.0} | {:.1} | {oldest:.0} | {:.1} | {cursor:.0} | {:.1} | {:.2} | {:.2} |",
        tables(store),
        1e6 / newest,
        1e6 / oldest,
        1e6 / cursor,
        newest / oldest,
        cursor / oldest,
    );
}

fn open(dir: &Path) -> Store {
    let options = StoreOptions {
        cache_bytes: CACHE_BYTES,
        ..StoreOptions::default()
    };
    Store::open(dir, options, "bench").expect("open store")
}

fn main() {
    let base = std::env::var("PROGRESSDB_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let mut rng = XorShift::new(0x7157);
    // Cursors leave at least a page and one more message below them.
    let cursors: Vec<u64> = (0..CURSORS)
        .map(|_| hot_ts(PAGE + 1 + rng.below(HOT_MESSAGES - PAGE - 1)))
        .collect();

    let store = open(dir.path());
    let started = Instant::now();
    let bytes = load(&store);
    let load_seconds = started.elapsed().as_secs_f64();

    println!(
        "Timeline pages of {PAGE}, LSM-tree via Store; {HOT_MESSAGES} messages in one thread + \
         {OTHER_MESSAGES_EACH} in each of {OTHER_THREADS} others, {} B values; \
         loaded {:.1} MB in {load_seconds:.1} s; dir {base}; {}",
        message_value(HOT_THREAD, FIRST_TS, 0).len(),
        bytes as f64 / 1e6,
        machine::describe(),
    );
    println!();
    println!(
        "| data in | SSTs | newest pages/s | newest µs/page | oldest pages/s | oldest µs/page \
         | cursor pages/s | cursor µs/page | newest ÷ oldest | cursor ÷ oldest |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    measure_row("memtable, as written", &store, &cursors);

    store.persist().expect("persist");
    drop(store);
    let store = open(dir.path());
    measure_row("flushed to tables + reopen", &store, &cursors);
}
