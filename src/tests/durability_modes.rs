//! End-to-end tests of `--durability batch` and `--durability none` on the
//! real binary (`sync` is covered by `durability.rs`). Each asserts only
//! what the README's Durability table promises for the mode:
//!
//! * both acknowledge at once, and reads see a write as soon as it is
//!   acknowledged;
//! * a clean stop (SIGTERM) writes out every shard's log, so everything
//!   acknowledged is there after a restart;
//! * a process crash (SIGKILL) loses at most what was not yet handed to the
//!   kernel: once the shard's log says every applied record is flushed (the
//!   `batch` flusher does that by itself within `--wal-flush-ms`; `none`
//!   writes at once), every acknowledged write survives SIGKILL;
//! * whatever a crash loses, recovery yields a consistent prefix: the
//!   server starts, every message present is one that was sent, intact, in
//!   timestamp order, each writer's messages have no holes, what a previous
//!   recovery showed stays, and new writes sort after everything recovered.
//!
//! Nothing here depends on how long a flush takes: where the tests need the
//! log flushed they wait for the server's stats to say so.

#[path = "support.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use progressdb::rng::XorShift;
use serde_json::{Value, json};
use support::{Client, Server, all_messages};

const ADMIN_KEY: &str = "admin-key-0123456789";
/// Writers in the crash tests; writer `w` posts to thread `mode-w` only,
/// one request at a time, so its messages are ordered in its shard's log.
const WRITERS: usize = 4;
/// Longest wait for the log to catch up with the store. Only a flusher
/// that never runs would reach it; reaching it fails the test.
const FLUSH_WAIT_MAX: Duration = Duration::from_secs(30);

/// Server flags for `mode` on two shards (so both logs are exercised),
/// with small segments (so crashes also hit rotated logs).
fn flags<'a>(mode: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--durability",
        mode,
        "--shards",
        "2",
        "--wal-segment-bytes",
        "262144",
        "--admin-key",
        ADMIN_KEY,
    ];
    flags.extend_from_slice(extra);
    flags
}

fn backend(server: &Server) -> Client {
    let mut client = server.client();
    client.user = None;
    client
}

/// Each shard's stats from `/admin/v1/stats`.
fn shard_stats(server: &Server) -> Vec<Value> {
    let mut admin = backend(server);
    admin.key = Some(ADMIN_KEY.into());
    let stats = admin.get("/admin/v1/stats").expect(200);
    stats["shards"].as_array().expect("shards").clone()
}

/// Waits until every shard's log has flushed every record its store has
/// applied (every write acknowledged so far is in the kernel's hands), and
/// returns each shard's durable LSN.
fn wait_until_flushed(server: &Server) -> Vec<u64> {
    let deadline = Instant::now() + FLUSH_WAIT_MAX;
    loop {
        let shards = shard_stats(server);
        let flushed = shards
            .iter()
            .all(|s| s["wal"]["durable_lsn"].as_u64() >= s["applied_lsn"].as_u64());
        if flushed {
            return shards
                .iter()
                .map(|s| s["wal"]["durable_lsn"].as_u64().unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the log never caught up with the store: {shards:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Posts `body` to `thread` (created on first use); an I/O error means
/// the server is gone.
fn post(client: &mut Client, thread: &str, body: &Value) -> std::io::Result<Value> {
    let request = json!({"thread": thread, "author": "writer", "body": body}).to_string();
    let reply = client.try_request("POST", "/v1/messages", Some(&request))?;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    Ok(reply.json())
}

// ---------------------------------------------------------------------
// Acknowledged writes are readable at once.

fn acknowledged_writes_are_readable_at_once(mode: &str) {
    let server = Server::start(&flags(mode, &[]));
    assert!(server.banner.contains(&format!("durability={mode}")));
    let mut alice = server.client();
    let thread = format!("read-{mode}");
    alice
        .post(
            "/frontend/v1/threads",
            &json!({"key": thread, "title": "t"}).to_string(),
        )
        .expect(201);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let mut posted = Vec::new();
    for n in 0..20 {
        let message = alice.post(&base, &json!({"body": {"n": n}}).to_string());
        let message = message.expect(201);
        let id = message["key"].as_str().unwrap();
        // The very next request sees it, flushed or not.
        assert_eq!(
            alice.get(&format!("{base}/{id}")).expect(200)["message"],
            message
        );
        posted.push(message);
    }
    let id = posted[7]["key"].as_str().unwrap();
    let edited = alice
        .put(&format!("{base}/{id}"), r#"{"body":"edited"}"#)
        .expect(200);
    assert_eq!(edited["version"], 2);
    assert_eq!(
        alice.get(&format!("{base}/{id}")).expect(200)["message"],
        edited
    );
    posted[7] = edited;
    let page = alice.get(&format!("{base}?limit=100")).expect(200);
    assert_eq!(page["messages"], Value::Array(posted));
}

#[test]
fn batch_acknowledged_writes_are_readable_at_once() {
    acknowledged_writes_are_readable_at_once("batch");
}

#[test]
fn none_acknowledged_writes_are_readable_at_once() {
    acknowledged_writes_are_readable_at_once("none");
}

// ---------------------------------------------------------------------
// A clean stop keeps everything acknowledged.

/// `WRITERS` concurrent writers, `count` posts each to their own thread;
/// returns every acknowledged message by thread, in posting order.
fn write_concurrently(server: &Server, prefix: &str, count: usize) -> Vec<(String, Vec<Value>)> {
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let mut client = backend(server);
            let thread = format!("{prefix}-{writer}");
            std::thread::spawn(move || {
                let acked: Vec<Value> = (0..count)
                    .map(|n| {
                        let body = json!({"writer": writer, "n": n, "pad": "x".repeat(n * 7)});
                        post(&mut client, &thread, &body).unwrap()
                    })
                    .collect();
                (thread, acked)
            })
        })
        .collect();
    writers.into_iter().map(|w| w.join().unwrap()).collect()
}

/// Asserts each thread holds exactly its acknowledged messages, in order.
fn assert_all_present(server: &Server, written: &[(String, Vec<Value>)], context: &str) {
    let mut client = backend(server);
    for (thread, acked) in written {
        let stored = all_messages(&mut client, thread);
        assert_eq!(&stored, acked, "{context}: thread {thread}");
    }
}

fn a_clean_stop_keeps_every_acknowledged_write(mode: &str) {
    // A long flush interval leaves batch writes in memory until shutdown
    // writes them out (the assertions hold however much was flushed).
    let args = flags(mode, &["--wal-flush-ms", "1000"]);
    let server = Server::start(&args);
    let written = write_concurrently(&server, &format!("stop-{mode}"), 30);
    // Informational only: how much the stop itself had to write out.
    let unflushed: u64 = shard_stats(&server)
        .iter()
        .map(|s| s["applied_lsn"].as_u64().unwrap() - s["wal"]["durable_lsn"].as_u64().unwrap())
        .sum();
    eprintln!("{mode}: {unflushed} records not yet flushed at SIGTERM");
    // `restart` sends SIGTERM and asserts a clean exit first.
    let server = server.restart(&args);
    assert_all_present(&server, &written, "after a clean stop");
    // And once more, now that the recovered state was itself stopped cleanly.
    let server = server.restart(&args);
    assert_all_present(&server, &written, "after a second clean stop");
}

#[test]
fn batch_a_clean_stop_keeps_every_acknowledged_write() {
    a_clean_stop_keeps_every_acknowledged_write("batch");
}

#[test]
fn none_a_clean_stop_keeps_every_acknowledged_write() {
    a_clean_stop_keeps_every_acknowledged_write("none");
}

// ---------------------------------------------------------------------
// Once flushed, acknowledged writes survive SIGKILL.

fn flushed_writes_survive_sigkill(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args = flags(mode, &[]);
    let server = Server::start_on(&db, &args);
    let written = write_concurrently(&server, &format!("flushed-{mode}"), 40);
    // No further request: batch's flusher must flush on its own.
    let durable = wait_until_flushed(&server);
    let fsyncs: u64 = shard_stats(&server)
        .iter()
        .map(|s| s["wal"]["fsyncs"].as_u64().unwrap())
        .sum();
    match mode {
        "batch" => assert!(fsyncs > 0, "batch mode fsyncs its flushes"),
        _ => assert_eq!(fsyncs, 0, "none mode never fsyncs"),
    }
    server.kill();

    let server = Server::start_on(&db, &args);
    assert_all_present(&server, &written, "after SIGKILL");
    // LSNs never go back: each shard starts past what it had made durable.
    for (shard, stats) in shard_stats(&server).iter().enumerate() {
        assert!(
            stats["applied_lsn"].as_u64().unwrap() >= durable[shard],
            "shard {shard} went back: {stats} vs {durable:?}"
        );
    }
    assert_new_writes_sort_last(&server, &written);
}

/// Posts once more to every thread; the new message is newest, after
/// everything recovered.
fn assert_new_writes_sort_last(server: &Server, written: &[(String, Vec<Value>)]) {
    let mut client = backend(server);
    for (thread, _) in written {
        let before = all_messages(&mut client, thread);
        let new = post(&mut client, thread, &json!("after restart")).unwrap();
        let after = all_messages(&mut client, thread);
        assert_eq!(after.len(), before.len() + 1, "thread {thread}");
        assert_eq!(after.last(), Some(&new), "thread {thread}");
        if let Some(last) = before.last() {
            assert!(
                new["created_ts"].as_u64() > last["created_ts"].as_u64(),
                "thread {thread}"
            );
        }
    }
}

#[test]
fn batch_flushed_writes_survive_sigkill() {
    flushed_writes_survive_sigkill("batch");
}

#[test]
fn none_flushed_writes_survive_sigkill() {
    flushed_writes_survive_sigkill("none");
}

// ---------------------------------------------------------------------
// SIGKILL under load recovers a consistent prefix.

/// Every body sent, by (round, writer, n).
type Sent = Arc<Mutex<HashMap<(u64, u64, u64), String>>>;

/// One round: writers post until the server dies under them.
fn crash_round(server: Server, mode: &str, round: u64, sent: &Sent, rng: &mut XorShift) {
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|writer| {
            let mut client = backend(&server);
            let thread = format!("{mode}-{writer}");
            let sent = sent.clone();
            std::thread::spawn(move || {
                for n in 0.. {
                    let body = json!({"round": round, "writer": writer, "n": n, "pad": "y".repeat(n as usize % 300)});
                    sent.lock()
                        .unwrap()
                        .insert((round, writer, n), body.to_string());
                    if post(&mut client, &thread, &body).is_err() {
                        return; // the server was killed
                    }
                }
            })
        })
        .collect();
    // Where the kill lands does not matter to the assertions.
    std::thread::sleep(Duration::from_millis(20 + rng.below(250) as u64));
    server.kill();
    for writer in writers {
        writer.join().expect("writer thread");
    }
}

/// Checks a recovered server and returns what it holds, by thread: bodies
/// in order.
fn check_prefix(server: &Server, mode: &str, sent: &Sent, context: &str) -> Vec<Vec<String>> {
    let sent = sent.lock().unwrap();
    let mut client = backend(server);
    let mut holdings = Vec::new();
    for writer in 0..WRITERS as u64 {
        let messages = all_messages(&mut client, &format!("{mode}-{writer}"));
        let mut last_ts = 0;
        let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for message in &messages {
            let ts = message["created_ts"].as_u64().unwrap();
            assert!(ts > last_ts, "{context}: timestamps out of order");
            last_ts = ts;
            let body = &message["body"];
            let key = (
                body["round"].as_u64().unwrap(),
                body["writer"].as_u64().unwrap(),
                body["n"].as_u64().unwrap(),
            );
            assert_eq!(key.1, writer, "{context}: a message in the wrong thread");
            assert_eq!(
                sent.get(&key),
                Some(&body.to_string()),
                "{context}: a message that was never sent, or garbled"
            );
            seen.entry(key.0).or_default().push(key.2);
        }
        // One writer, one request at a time: its log records are in
        // posting order, so a prefix of the log is a prefix of its posts.
        for (round, ns) in &seen {
            let prefix: Vec<u64> = (0..ns.len() as u64).collect();
            assert_eq!(
                ns, &prefix,
                "{context}: a hole in round {round} of writer {writer}"
            );
        }
        holdings.push(messages.iter().map(|m| m["body"].to_string()).collect());
    }
    holdings
}

fn sigkill_under_load_recovers_a_consistent_prefix(mode: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args = flags(mode, &[]);
    let sent: Sent = Arc::default();
    let mut rng = XorShift::new(seed);
    let mut held: Vec<Vec<String>> = vec![Vec::new(); WRITERS];
    for round in 0..4 {
        let context = format!("{mode} seed {seed:#x} round {round}");
        let server = start_recovered(&db, &args, &context);
        let now = check_prefix(&server, mode, &sent, &context);
        for (writer, (before, after)) in held.iter().zip(&now).enumerate() {
            assert!(
                after.starts_with(before),
                "{context}: writer {writer} lost messages an earlier recovery showed"
            );
        }
        let present: usize = now.iter().map(Vec::len).sum();
        eprintln!(
            "{context}: {present} messages recovered of {} sent",
            sent.lock().unwrap().len()
        );
        held = now;
        crash_round(server, mode, round, &sent, &mut rng);
    }
    let context = format!("{mode} seed {seed:#x} final");
    let server = start_recovered(&db, &args, &context);
    check_prefix(&server, mode, &sent, &context);
    let threads: Vec<(String, Vec<Value>)> = (0..WRITERS)
        .map(|writer| (format!("{mode}-{writer}"), Vec::new()))
        .collect();
    assert_new_writes_sort_last(&server, &threads);
}

/// The server must start on whatever a crash left, without help (a
/// failed start panics with the server's output).
fn start_recovered(db: &Path, args: &[&str], context: &str) -> Server {
    eprintln!("{context}: starting on the crashed data directory");
    Server::start_on(db, args)
}

#[test]
fn batch_sigkill_under_load_recovers_a_consistent_prefix() {
    sigkill_under_load_recovers_a_consistent_prefix("batch", 0xba7c_0001);
}

#[test]
fn none_sigkill_under_load_recovers_a_consistent_prefix() {
    sigkill_under_load_recovers_a_consistent_prefix("none", 0x0e0e_0001);
}
