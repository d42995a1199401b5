//! Crash tests on the real binary: in `sync` mode every acknowledged
//! message survives SIGKILL with its exact body, nothing that was never sent
//! appears, and a damaged WAL on disk is truncated or refused as documented.
//!
//! `PROGRESSDB_KILL_ROUNDS` (default 20) and `PROGRESSDB_KILL_SEED` (default
//! fixed) set the kill test's size and randomness; `scripts/fuzz.sh` runs
//! more rounds. Failures print the seed.

#[path = "support.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use progressdb::rng::XorShift;
use serde_json::{Value, json};
use support::{Client, Server, all_messages};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const THREADS: usize = 6;
const WRITERS: usize = 8;

/// Checks the server against what clients sent and were acknowledged.
fn verify(server: &Server, acked: &HashMap<String, Value>, sent: &HashSet<String>, context: &str) {
    let mut client = server.client();
    client.user = None;
    let mut found = HashMap::new();
    for t in 0..THREADS {
        let messages = all_messages(&mut client, &format!("kill-{t}"));
        let mut last_ts = 0;
        for message in messages {
            let ts = message["created_ts"].as_u64().unwrap();
            assert!(ts > last_ts, "{context}: timestamps out of order");
            last_ts = ts;
            let body = message["body"].to_string();
            assert!(
                sent.contains(&body),
                "{context}: a message that was never sent: {body}"
            );
            found.insert(
                message["key"].as_str().unwrap().to_string(),
                message["body"].clone(),
            );
        }
    }
    for (id, body) in acked {
        match found.get(id) {
            Some(stored) => assert_eq!(stored, body, "{context}: body of {id} changed"),
            None => panic!("{context}: acknowledged message {id} was lost"),
        }
    }
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let rounds = env_or("PROGRESSDB_KILL_ROUNDS", 20);
    let seed = env_or("PROGRESSDB_KILL_SEED", 0x5eed_0001);
    let mut rng = XorShift::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    // Small segments, so rotation and checkpoints happen during the test.
    let args = ["--shards", "2", "--wal-segment-bytes", "262144"];
    let acked: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut total_acked = 0;
    for round in 0..rounds {
        let context = format!("seed {seed:#x} round {round}");
        let server = Server::start_on(&db, &args);
        verify(
            &server,
            &acked.lock().unwrap(),
            &sent.lock().unwrap(),
            &context,
        );

        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let addr = server.addr;
                let acked = acked.clone();
                let sent = sent.clone();
                let salt = rng.next_u64();
                std::thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    client.user = None;
                    for n in 0.. {
                        let thread = format!("kill-{}", (salt as usize + n) % THREADS);
                        let body = json!({"round": round, "writer": writer, "n": n, "salt": salt, "pad": "x".repeat(n % 300)});
                        sent.lock().unwrap().insert(body.to_string());
                        let request = json!({"thread": thread, "author": "killer", "body": body}).to_string();
                        match client.try_request("POST", "/v1/messages", Some(&request)) {
                            Ok(reply) if reply.status == 201 => {
                                let id = reply.json()["key"].as_str().unwrap().to_string();
                                acked.lock().unwrap().insert(id, body);
                            }
                            Ok(reply) => panic!("unexpected status {}", reply.status),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        // Kill once this round has had a write acknowledged, however slow
        // the machine, then at a random point in the next 300 ms.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() <= total_acked {
            assert!(
                std::time::Instant::now() < deadline,
                "{context}: no write was acknowledged in a minute"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.below(300) as u64));
        server.kill();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        let now = acked.lock().unwrap().len();
        assert!(
            now > total_acked,
            "{context}: no write was acknowledged this round"
        );
        total_acked = now;
    }
    let server = Server::start_on(&db, &args);
    verify(
        &server,
        &acked.lock().unwrap(),
        &sent.lock().unwrap(),
        &format!("seed {seed:#x} final"),
    );
    eprintln!("kill test: {rounds} rounds, {total_acked} acknowledged messages, all present");
}

fn wal_segments(db: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(db.join("shard-0").join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        // The log also keeps a spare file for its next segment.
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    segments
}

/// Posts `count` messages one at a time to thread `t`, returning their ids.
fn post_sequentially(server: &Server, count: usize) -> Vec<String> {
    let mut client = server.client();
    client.user = None;
    (0..count)
        .map(|n| {
            let request = json!({"thread": "t", "author": "a", "body": n}).to_string();
            client.post("/v1/messages", &request).expect(201)["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn ids_of(server: &Server) -> Vec<String> {
    let mut client = server.client();
    client.user = None;
    all_messages(&mut client, "t")
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect()
}

/// Offset just past the last non-zero byte: the end of the written flushes.
fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[test]
fn torn_tail_is_truncated_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &["--shards", "1"]);
    let ids = post_sequentially(&server, 10);
    // SIGKILL: the store's own journal is not synced, so everything must
    // come back from the WAL.
    server.kill();
    let segment = wal_segments(&db).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Sequential sync writes flush one record each: damage the last one.
    let end = data_end(&bytes);
    bytes[end - 3] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();

    let server = Server::start_on(&db, &["--shards", "1"]);
    assert_eq!(ids_of(&server), ids[..9].to_vec());
    // All of the record is there but fails its checksum: not a torn write.
    let log = support::log_with(&server.log, "damage=bad_record");
    assert!(
        log.contains("level=warn") && log.contains("shard=shard-0") && log.contains("offset="),
        "{log}"
    );
    // New writes continue after the cut.
    let more = post_sequentially(&server, 2);
    let mut expected = ids[..9].to_vec();
    expected.extend(more);
    assert_eq!(ids_of(&server), expected);
}

#[test]
fn corruption_in_the_middle_refuses_to_start_unless_truncation_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &["--shards", "1"]);
    let ids = post_sequentially(&server, 10);
    server.kill();
    let segment = wal_segments(&db).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    // The fourth flush (one record each, 4 KiB apart): damage its record.
    bytes[3 * 4096 + 40] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args([
            "--db",
            &db.display().to_string(),
            "--addr",
            "127.0.0.1:0",
            "--api-key",
            support::API_KEY,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("corrupt at offset") && stderr.contains("--wal-recovery=truncate"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "a refused start changes nothing"
    );

    let server = Server::start_on(&db, &["--wal-recovery", "truncate"]);
    assert_eq!(ids_of(&server), ids[..3].to_vec());
    let log = support::log_with(&server.log, "truncated_at=");
    assert!(log.contains("truncated_at=12288"), "{log}");
}

#[test]
fn a_failed_fsync_poisons_writes_but_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args: Vec<String> = ["--db", &db.display().to_string(), "--addr", "127.0.0.1:0"]
        .iter()
        .map(|arg| arg.to_string())
        .chain([
            "--api-key".to_string(),
            support::API_KEY.to_string(),
            "--shards".into(),
            "1".into(),
        ])
        .collect();
    let started =
        support::spawn_and_wait(&args, &[("PROGRESSDB_DEBUG_FAIL_WAL_AFTER_FLUSHES", "5")])
            .unwrap();
    let mut child = started.child;
    let mut client = Client::connect(started.addr);
    client.user = None;
    let mut acked = Vec::new();
    for n in 0..5 {
        let request = json!({"thread": "t", "author": "a", "body": n}).to_string();
        acked.push(client.post("/v1/messages", &request).expect(201)["key"].clone());
    }
    // The sixth flush fails: that write and every later one answer 503.
    for n in 5..8 {
        let request = json!({"thread": "t", "author": "a", "body": n}).to_string();
        client
            .post("/v1/messages", &request)
            .expect_error(503, "writes_unavailable");
    }
    let page = client
        .get("/v1/threads/t/messages?sort_by=ts_asc&limit=100")
        .expect(200);
    let ids: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].clone())
        .collect();
    assert_eq!(
        ids[..5],
        acked[..],
        "reads keep working and show every acknowledged write"
    );
    let log = support::log_with(&started.log, "refusing writes until restart");
    assert!(log.contains("refusing writes until restart"), "{log}");
    let _ = child.kill();
    let _ = child.wait();

    // After a restart (without the fault) writes work and nothing acknowledged is lost.
    let server = Server::start_on(&db, &[]);
    let mut client = server.client();
    client.user = None;
    client
        .post(
            "/v1/messages",
            r#"{"thread":"t","author":"a","body":"after"}"#,
        )
        .expect(201);
    let page = client
        .get("/v1/threads/t/messages?sort_by=ts_asc&limit=100")
        .expect(200);
    let ids: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].clone())
        .collect();
    assert_eq!(ids[..5], acked[..]);
}
