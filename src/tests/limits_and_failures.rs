//! End-to-end regression tests of the hardening review (issue #12), part
//! two: input that must be refused instead of aborting or breaking
//! clients, and storage failures that must not show, lose or resurrect
//! writes. Each runs the real binary over HTTP and is named after what it
//! guards.

#[path = "support.rs"]
mod support;

use serde_json::json;
use support::{Client, Server};

/// A one-shard server on a fresh directory with `extra` flags and `env`.
fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["--shards", "1"];
    args.extend_from_slice(extra);
    let mut server = Server::start_with_env(&dir.path().join("db"), &args, env);
    server.keep_dir(dir);
    server
}

/// A backend client acting for `user`.
fn backend(server: &Server, user: &str) -> Client {
    server.client().acting_for(user)
}

/// Creates a thread and returns the path of its messages.
fn messages_path(client: &mut Client) -> String {
    let thread = client
        .post("/frontend/v1/threads", r#"{"title":"t"}"#)
        .expect(201);
    format!(
        "/frontend/v1/threads/{}/messages",
        thread["key"].as_str().unwrap()
    )
}

/// Runs the binary with `args` to completion on a new directory; its
/// exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    run_to_exit_on(&dir.path().join("db"), args)
}

/// Runs the binary on `db` with `args` to completion; its exit code and
/// stderr.
fn run_to_exit_on(db: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args(["--db", &db.display().to_string(), "--addr", "127.0.0.1:0"])
        .args(["--api-key", support::API_KEY])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_body_limit_larger_than_half_a_wal_record_is_refused_at_start() {
    let (code, stderr) = run_to_exit(&["--request-body-bytes-max", "67108864"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("request_body_bytes_max"), "{stderr}");
    assert!(stderr.contains("at most 33554432"), "{stderr}");
}

#[test]
fn an_edit_too_large_for_one_wal_record_answers_413_and_the_server_keeps_serving() {
    // One record holds 1.5 MiB here: one 1 MB body fits, an edit logging
    // the old and the new one together does not.
    let server = start_with_env(
        &["--request-body-bytes-max", "1100000"],
        &[("PROGRESSDB_DEBUG_WAL_RECORD_BYTES_MAX", "1572864")],
    );
    let mut alice = backend(&server, "alice");
    let path = messages_path(&mut alice);
    let body = |fill: &str| json!({ "body": fill.repeat(1_000_000) }).to_string();
    let posted = alice.post(&path, &body("a")).expect(201);
    let message = format!("{path}/{}", posted["key"].as_str().unwrap());
    alice
        .put(&message, &body("b"))
        .expect_error(413, "write_too_large");
    // Nothing changed, and the shard still takes writes.
    let current = &alice.get(&message).expect(200)["message"];
    assert_eq!(current["version"], 1);
    assert!(current["body"].as_str().unwrap().starts_with('a'));
    let edited = alice.put(&message, r#"{"body":"short"}"#).expect(200);
    assert_eq!(edited["version"], 2);
}

#[test]
fn titles_with_control_or_bidi_override_characters_answer_400() {
    let server = start_with_env(&[], &[]);
    let mut alice = backend(&server, "alice");
    for title in [
        "a\u{0}b",
        "bell\u{7}",
        "del\u{7f}",
        "c1\u{85}x",
        "invoice\u{202E}fdp.exe",
        "\u{2066}x",
    ] {
        let body = json!({ "title": title }).to_string();
        alice
            .post("/frontend/v1/threads", &body)
            .expect_error(400, "invalid_field");
    }
    let thread = alice
        .post("/frontend/v1/threads", r#"{"title":"Café ☕ שלום"}"#)
        .expect(201);
    let path = format!("/frontend/v1/threads/{}", thread["key"].as_str().unwrap());
    alice
        .put(&path, &json!({ "title": "x\u{202D}y" }).to_string())
        .expect_error(400, "invalid_field");
    assert_eq!(
        alice.get(&path).expect(200)["thread"]["title"],
        "Café ☕ שלום"
    );
}

/// A message body of `depth` nested arrays around a number.
fn nested_body(depth: usize) -> String {
    format!(r#"{{"body":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn bodies_nested_deeper_than_the_json_depth_limit_answer_400() {
    let server = start_with_env(&[], &[]);
    let mut alice = backend(&server, "alice");
    let path = messages_path(&mut alice);
    // The request object is level one: 63 arrays inside it make 64.
    alice.post(&path, &nested_body(63)).expect(201);
    for depth in [64, 5000] {
        alice
            .post(&path, &nested_body(depth))
            .expect_error(400, "json_too_deep");
    }
    // Brackets inside strings are text.
    let text = json!({ "body": "[".repeat(500) }).to_string();
    alice.post(&path, &text).expect(201);

    let server = start_with_env(&["--json-depth-max", "4"], &[]);
    let mut alice = backend(&server, "alice");
    let path = messages_path(&mut alice);
    alice.post(&path, &nested_body(3)).expect(201);
    alice
        .post(&path, &nested_body(4))
        .expect_error(400, "json_too_deep");
    let (code, stderr) = run_to_exit(&["--json-depth-max", "129"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("json_depth_max"), "{stderr}");
}

/// A one-shard server on `db` whose files may not grow past 512 KiB
/// (`ulimit -f 1024`: 512-byte blocks in dash, 1 KiB in bash, so 512 KiB
/// or 1 MiB), with 64 KiB log segments so that small writes fit and one
/// flush of a 1.5 MB message does not.
fn start_with_file_size_limit(db: &std::path::Path, extra: &[&str]) -> support::Started {
    let db = db.display().to_string();
    let mut args = vec![
        "--shards",
        "1",
        "--addr",
        "127.0.0.1:0",
        "--api-key",
        support::API_KEY,
        "--wal-segment-bytes",
        "65536",
        "--request-body-bytes-max",
        "2000000",
        "--db",
        &db,
    ];
    args.extend_from_slice(extra);
    support::spawn_after_shell_command("ulimit -f 1024", &args)
}

/// A message body too large for a file under `start_with_file_size_limit`.
fn too_large_for_the_file_limit() -> String {
    json!({ "body": "x".repeat(1_500_000) }).to_string()
}

#[test]
fn io_failures_answer_503_without_paths_or_descriptors_and_log_the_detail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut started = start_with_file_size_limit(&db, &[]);
    let mut alice = Client::connect(started.addr);
    let path = messages_path(&mut alice);
    alice.post(&path, r#"{"body":"small"}"#).expect(201);
    let reply = alice.post(&path, &too_large_for_the_file_limit());
    reply.expect_error(503, "writes_unavailable");
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let tmp = std::env::temp_dir().display().to_string();
    for leak in ["/", "fd", "os error", tmp.as_str()] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
    // Later writes are refused the same way; the log has the cause.
    alice
        .post(&path, r#"{"body":"later"}"#)
        .expect_error(503, "writes_unavailable");
    let log = support::log_with(&started.log, "refusing writes until restart");
    let line = log
        .lines()
        .find(|line| line.contains("refusing writes until restart"))
        .unwrap_or_else(|| panic!("no poison line: {log}"));
    assert!(line.contains(&db.display().to_string()), "{line}");
    let _ = started.child.kill();
    let _ = started.child.wait();
}

#[test]
fn a_checkpoint_that_keeps_failing_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let small = ["--wal-segment-bytes", "65536", "--memtable-bytes", "65536"];
    let server = Server::start_on(&db, &[&["--shards", "1"][..], &small].concat());
    let mut alice = backend(&server, "alice");
    let path = messages_path(&mut alice);
    // The first segment's name becomes a directory, which no checkpoint
    // can remove; the log keeps writing to the file it has open.
    let wal = db.join("shard-0").join("wal");
    let first = std::fs::read_dir(&wal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .expect("a segment");
    std::fs::rename(&first, wal.join("moved-aside")).unwrap();
    std::fs::create_dir_all(first.join("blocker")).unwrap();
    // Enough writes for several segments and memtable flushes.
    let body = json!({ "body": "y".repeat(4000) }).to_string();
    for _ in 0..80 {
        alice.post(&path, &body).expect(201);
    }
    let log = support::log_with(&server.log, "checkpoint failed");
    assert!(log.contains("checkpoint failed"), "{log}");
    // Checkpoints run every second: three more tries fail the same way.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let lines = server.log.lock().unwrap().clone();
    let failures = lines
        .iter()
        .filter(|line| line.contains("checkpoint failed"))
        .count();
    assert_eq!(failures, 1, "{lines:#?}");
}

/// Keys of `thread`'s messages, oldest first (`/v1` route).
fn message_bodies(client: &mut Client, thread: &str) -> Vec<String> {
    support::all_messages(client, thread)
        .iter()
        .map(|message| {
            message["body"]
                .as_str()
                .unwrap_or("(long)")
                .chars()
                .take(8)
                .collect()
        })
        .collect()
}

#[test]
fn a_write_refused_because_the_log_failed_is_never_visible_nor_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut started = start_with_file_size_limit(&db, &[]);
    let mut alice = Client::connect(started.addr);
    alice.user = None;
    for body in ["first", "second"] {
        let post = json!({ "thread": "t", "author": "alice", "body": body });
        alice.post("/v1/messages", &post.to_string()).expect(201);
    }
    // Its flush needs a segment larger than a file may grow: the log fails.
    let mut big: serde_json::Value = serde_json::from_str(&too_large_for_the_file_limit()).unwrap();
    big["thread"] = json!("t");
    big["author"] = json!("alice");
    alice
        .post("/v1/messages", &big.to_string())
        .expect_error(503, "writes_unavailable");
    // Not applied: not listed, and a retried create is refused the same
    // way each time (never 409), its thread never found.
    assert_eq!(message_bodies(&mut alice, "t"), ["first", "second"]);
    let create = r#"{"title":"x","key":"retry-me","author":"alice"}"#;
    for _ in 0..2 {
        alice
            .post("/frontend/v1/threads", create)
            .expect_error(503, "writes_unavailable");
    }
    alice
        .get("/v1/threads/retry-me/messages")
        .expect_error(404, "thread_not_found");
    let _ = started.child.kill();
    let _ = started.child.wait();

    // Nor does it come back after a restart; the shard takes writes again.
    let server = Server::start_on(&db, &["--shards", "1"]);
    let mut alice = server.client();
    alice.user = None;
    assert_eq!(message_bodies(&mut alice, "t"), ["first", "second"]);
    alice.post("/frontend/v1/threads", create).expect(201);
}

/// Overwrites every file of shard 0's store with garbage of its length.
fn damage_the_store(db: &std::path::Path) {
    let mut state = 0x9e37_79b9_u32;
    let mut pending = vec![db.join("shard-0").join("store")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let length = std::fs::metadata(&path).unwrap().len() as usize;
            let garbage: Vec<u8> = (0..length.max(16))
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            std::fs::write(&path, garbage).unwrap();
        }
    }
}

/// Starts the binary on `db` with `extra`, expecting it to refuse; its
/// stderr.
fn refused_start(db: &std::path::Path, extra: &[&str]) -> String {
    let (code, stderr) = run_to_exit_on(db, extra);
    assert_eq!(code, Some(1), "{stderr}");
    stderr
}

/// Posts `count` messages of about `bytes` to thread `t`.
fn post_to_t(server: &Server, count: usize, bytes: usize) {
    let mut client = server.client();
    client.user = None;
    for n in 0..count {
        let body =
            json!({ "thread": "t", "author": "a", "body": format!("{n}:{}", "z".repeat(bytes)) });
        client.post("/v1/messages", &body.to_string()).expect(201);
    }
}

fn count_in_t(server: &Server) -> usize {
    let mut client = server.client();
    client.user = None;
    support::all_messages(&mut client, "t").len()
}

#[test]
fn a_damaged_store_is_rebuilt_from_the_log_when_asked_and_the_log_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &["--shards", "1"]);
    post_to_t(&server, 3, 10);
    // A clean stop writes everything to the store's tables.
    server.stop();
    damage_the_store(&db);

    let refused = refused_start(&db, &["--shards", "1"]);
    assert!(refused.contains("cannot open the store"), "{refused}");
    assert!(refused.contains("--store-recovery=rebuild"), "{refused}");

    let server = Server::start_on(&db, &["--shards", "1", "--store-recovery", "rebuild"]);
    let log = support::log_with(&server.log, "rebuilt from the write-ahead log");
    assert!(
        log.contains("store.damaged-") && log.contains("lost=nothing"),
        "{log}"
    );
    assert_eq!(count_in_t(&server), 3);
    post_to_t(&server, 1, 10);
    // Rebuilt once: later starts need no option.
    let server = server.restart(&["--shards", "1"]);
    assert_eq!(count_in_t(&server), 4);
}

#[test]
fn a_damaged_store_whose_log_was_checkpointed_is_rebuilt_only_when_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let small = [
        "--shards",
        "1",
        "--wal-segment-bytes",
        "65536",
        "--memtable-bytes",
        "65536",
    ];
    let server = Server::start_on(&db, &small);
    post_to_t(&server, 60, 4000);
    // Wait for a checkpoint to delete the first segment (they run every
    // second once the memtables holding it are in tables).
    let first = db
        .join("shard-0")
        .join("wal")
        .join(format!("{:020}.wal", 1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while first.exists() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.stop();
    damage_the_store(&db);

    for policy in [&[][..], &["--store-recovery", "rebuild"][..]] {
        let refused = refused_start(&db, &[&small[..], policy].concat());
        assert!(refused.contains("would lose LSNs 1 to"), "{refused}");
        assert!(
            refused.contains("--store-recovery=rebuild-lossy"),
            "{refused}"
        );
    }
    let lossy = [&small[..], &["--store-recovery", "rebuild-lossy"]].concat();
    let server = Server::start_on(&db, &lossy);
    let log = support::log_with(&server.log, "rebuilt from the write-ahead log");
    assert!(log.contains("lost=\"LSNs 1 to"), "{log}");
    let kept = count_in_t(&server);
    assert!((1..60).contains(&kept), "kept {kept} of 60");
    post_to_t(&server, 1, 10);
}

/// The newest LSN shard 0's log has on disk, from the metrics listener.
fn durable_lsn(metrics: &mut Client) -> u64 {
    let text = String::from_utf8(metrics.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("progressdb_wal_durable_lsn{shard=\"0\"} "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no durable LSN in {text}"))
}

#[test]
fn in_batch_mode_writes_of_a_failed_flush_are_hidden_as_a_restart_would_lose_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let batch = ["--durability", "batch", "--metrics-addr", "127.0.0.1:0"];
    let mut started = start_with_file_size_limit(&db, &batch);
    let metrics_addr = started
        .banner
        .split(" metrics=http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {}", started.banner));
    let mut metrics = Client::connect(metrics_addr);
    let mut alice = Client::connect(started.addr);
    alice.user = None;
    let post = |body: &str| json!({ "thread": "t", "author": "alice", "body": body }).to_string();
    alice.post("/v1/messages", &post("first")).expect(201);
    while durable_lsn(&mut metrics) < 1 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Acknowledged at once, as batch mode does; then its flush fails.
    let mut big: serde_json::Value = serde_json::from_str(&too_large_for_the_file_limit()).unwrap();
    big["thread"] = json!("t");
    big["author"] = json!("alice");
    alice.post("/v1/messages", &big.to_string()).expect(201);
    let refused = (0..500).find(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        alice.post("/v1/messages", &post("probe")).status == 503
    });
    assert!(refused.is_some(), "the log never failed");
    assert_eq!(message_bodies(&mut alice, "t"), ["first"]);
    let _ = started.child.kill();
    let _ = started.child.wait();

    let server = Server::start_on(&db, &["--shards", "1"]);
    let mut alice = server.client();
    alice.user = None;
    assert_eq!(message_bodies(&mut alice, "t"), ["first"]);
}

#[test]
fn wal_segments_shrink_to_fit_a_small_volume() {
    // 100 MB free: two shards preallocating two 64 MiB segments each would
    // take 256 MiB. Each segment may take 1/8 of the free space per shard.
    let free: u64 = 100_000_000;
    let fitted = free / 16 / 4096 * 4096;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let env = [("PROGRESSDB_DEBUG_FREE_BYTES", "100000000")];
    let server = Server::start_with_env(&db, &["--shards", "2"], &env);
    let log = support::log_with(&server.log, "WAL segments lowered");
    assert!(
        log.contains(&format!("wal_segment_bytes={fitted}")),
        "{log}"
    );
    post_to_t(&server, 1, 10);
    let sizes: Vec<u64> = (0..2)
        .flat_map(|shard| std::fs::read_dir(db.join(format!("shard-{shard}")).join("wal")).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .collect();
    assert_eq!(sizes, [fitted], "one segment, of the lowered size");
}
