//! End-to-end tests of `POST /admin/v1/jobs/encrypt-threads` against the
//! real binary: data written without encryption (titles, messages, past
//! versions, replies) is sealed in place once the server restarts with
//! `--encryption` and the job runs; every value reads back the same
//! through the API, and after a forced compaction no marker is left in
//! the data directory. A job killed midway finishes after a restart; with
//! `--encrypt-field` only those paths are sealed; only an admin key may
//! start it, and only with encryption on.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Server, files_containing, post_message_key as post};

const ADMIN: &str = "admin-key-0123456789";
const JOB: &str = "/admin/v1/jobs/encrypt-threads";
/// How long an eventual state (the job, a compaction) may take.
const EVENTUALLY: Duration = Duration::from_secs(90);

/// Markers whose bytes occur nowhere else on disk: the store compresses
/// its deeper tables, and a compressed block keeps the first occurrence of
/// a string whole only if no 4 of its bytes appeared before in the block.
/// Each marker draws from its own alphabet, each letter once.
const SECRET: &str = "αβγδεζηθικλμνξοπρστυφχψω";
const CLEAR: &str = "абвгдежзийклмнопрстуфхцчшщ";

/// Polls `check` until it returns `Some`, failing after [`EVENTUALLY`].
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    support::eventually(what, EVENTUALLY, check)
}

fn start(db: &Path, shards: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["--shards", shards, "--admin-key", ADMIN];
    args.extend_from_slice(extra);
    Server::start_with_env(db, &args, env)
}

fn admin(server: &Server) -> Client {
    support::keyed_client(server, ADMIN)
}

/// A thread titled with `secret` holding a message, its edit (a past
/// version) and a reply, each with `secret` in `body.text` and `clear`
/// in `body.note`. Returns the message keys.
fn fill_thread(client: &mut Client, thread: &str, secret: &str, clear: &str) -> Vec<String> {
    let title = json!({"title": format!("title {secret}"), "key": thread}).to_string();
    client.post("/frontend/v1/threads", &title).expect(201);
    let body = |text: &str| json!({"text": format!("{text} {secret}"), "note": clear});
    let first = post(client, thread, body("first"), None);
    let reply = post(client, thread, body("reply"), Some(&first));
    let edit = json!({"body": body("edited")}).to_string();
    let path = format!("/frontend/v1/threads/{thread}/messages/{first}");
    client.put(&path, &edit).expect(200);
    vec![first, reply]
}

/// Everything the API answers about `threads`: each thread, its messages
/// page, each message, its versions and replies, and the listings.
fn everything(server: &Server, threads: &[(String, Vec<String>)]) -> Vec<Value> {
    let mut client = server.client();
    let mut seen = vec![
        client.get("/frontend/v1/threads").expect(200),
        admin(server).get("/admin/v1/threads").expect(200),
    ];
    for (thread, messages) in threads {
        let base = format!("/frontend/v1/threads/{thread}");
        seen.push(client.get(&base).expect(200));
        seen.push(client.get(&format!("{base}/messages")).expect(200));
        for message in messages {
            let path = format!("{base}/messages/{message}");
            seen.push(client.get(&path).expect(200));
            seen.push(client.get(&format!("{path}/versions")).expect(200));
            seen.push(client.get(&format!("{path}/replies")).expect(200));
        }
    }
    seen
}

fn status(admin: &mut Client) -> Value {
    admin.get(JOB).expect(200)
}

fn run_job_to_the_end(admin: &mut Client) -> Value {
    let started = admin.post(JOB, "").expect(202);
    assert!(["running", "done"].contains(&started["state"].as_str().unwrap()));
    eventually("the job to finish", || {
        let status = status(admin);
        assert_ne!(status["state"], "failed", "{status}");
        (status["state"] == "done").then_some(status)
    })
}

fn compact(admin: &mut Client) {
    let purged = admin
        .post("/admin/v1/jobs/purge", r#"{"compact":true}"#)
        .expect(200);
    assert_eq!(purged["compacted"], true, "{purged}");
}

fn assert_gone_from_disk(db: &Path, secret: &str) {
    let deadline = Instant::now() + EVENTUALLY;
    let mut left = files_containing(db, secret);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = files_containing(db, secret);
    }
    assert!(left.is_empty(), "{secret} is still in {left:?}");
}

#[test]
fn threads_written_in_the_clear_are_sealed_in_place_and_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (secret, clear) = (SECRET, CLEAR);
    let server = start(&db, "2", &[], &[]);
    let mut client = server.client();
    let threads: Vec<(String, Vec<String>)> = (0..4)
        .map(|n| {
            let thread = format!("old{n}");
            let keys = fill_thread(&mut client, &thread, secret, clear);
            (thread, keys)
        })
        .collect();
    let before = everything(&server, &threads);
    server.stop();
    assert!(
        !files_containing(&db, secret).is_empty(),
        "written in the clear"
    );

    let server = start(&db, "2", &["--encryption"], &[]);
    let (mut client, mut admin) = (server.client(), admin(&server));
    assert_eq!(status(&mut admin)["state"], "idle");
    client.post(JOB, "").expect_error(403, "forbidden");
    admin.post(JOB, "[1]").expect_error(400, "invalid_json");
    let done = run_job_to_the_end(&mut admin);
    assert_eq!(done["threads_sealed"], 4, "{done}");
    assert_eq!(done["messages_sealed"], 8, "{done}");
    assert_eq!(done["versions_sealed"], 4, "{done}");
    assert_eq!(everything(&server, &threads), before);

    // Sealed items are skipped: a second pass seals nothing.
    let again = run_job_to_the_end(&mut admin);
    assert_eq!(again["messages_sealed"], 0, "{again}");
    compact(&mut admin);
    assert_gone_from_disk(&db, secret);
    assert_gone_from_disk(&db, clear);
    let server = server.restart(&["--shards", "2", "--admin-key", ADMIN, "--encryption"]);
    assert_eq!(everything(&server, &threads), before);
    server.stop();
}

#[test]
fn a_job_killed_midway_finishes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let secret = SECRET;
    let server = start(&db, "1", &[], &[]);
    let mut client = server.client();
    let title = json!({"title": "long", "key": "long"}).to_string();
    client.post("/frontend/v1/threads", &title).expect(201);
    let keys: Vec<String> = (0..40)
        .map(|n| {
            post(
                &mut client,
                "long",
                json!({"text": format!("{n} {secret}")}),
                None,
            )
        })
        .collect();
    let threads = vec![("long".to_string(), keys)];
    let before = everything(&server, &threads);
    server.stop();

    // Three messages a step, and a pause after four steps: the thread's
    // key, then nine messages sealed of forty.
    let env = [
        ("PROGRESSDB_DEBUG_SEAL_BATCH", "3"),
        ("PROGRESSDB_DEBUG_SEAL_PAUSE_AFTER", "4"),
    ];
    let server = start(&db, "1", &["--encryption"], &env);
    let mut admin = admin(&server);
    admin.post(JOB, "{}").expect(202);
    let paused = eventually("the job to reach its pause", || {
        let status = status(&mut admin);
        (status["messages_sealed"] == 9).then_some(status)
    });
    assert_eq!(paused["state"], "running", "{paused}");
    assert_eq!(paused["threads_sealed"], 1, "{paused}");
    // Half sealed, the thread reads the same; starting again changes nothing.
    assert_eq!(everything(&server, &threads), before);
    assert_eq!(admin.post(JOB, "").expect(202)["messages_sealed"], 9);
    server.kill();

    let server = start(
        &db,
        "1",
        &["--encryption"],
        &[("PROGRESSDB_DEBUG_SEAL_BATCH", "3")],
    );
    let mut admin = support::keyed_client(&server, ADMIN);
    let done = eventually("the resumed job to finish", || {
        let status = status(&mut admin);
        (status["state"] == "done").then_some(status)
    });
    assert_eq!(done["messages_sealed"], 40, "{done}");
    assert_eq!(done["threads_sealed"], 1, "{done}");
    assert_eq!(everything(&server, &threads), before);
    compact(&mut admin);
    assert_gone_from_disk(&db, secret);
    server.stop();
}

#[test]
fn with_an_encrypt_field_only_that_path_is_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (secret, clear) = (SECRET, CLEAR);
    let server = start(&db, "2", &[], &[]);
    let mut client = server.client();
    let keys = fill_thread(&mut client, "fields", secret, clear);
    let threads = vec![("fields".to_string(), keys)];
    let before = everything(&server, &threads);
    server.stop();

    let sealed = ["--encryption", "--encrypt-field", "body.text"];
    let server = start(&db, "2", &sealed, &[]);
    let mut admin = admin(&server);
    let done = run_job_to_the_end(&mut admin);
    assert_eq!(done["messages_sealed"], 2, "{done}");
    assert_eq!(done["versions_sealed"], 1, "{done}");
    assert_eq!(everything(&server, &threads), before);
    compact(&mut admin);
    assert_gone_from_disk(&db, secret);
    assert!(
        !files_containing(&db, clear).is_empty(),
        "the clear field stays"
    );
    server.stop();
}

#[test]
fn the_job_needs_encryption_on() {
    let server = Server::start(&["--admin-key", ADMIN]);
    let mut admin = admin(&server);
    admin.post(JOB, "").expect_error(409, "encryption_off");
    assert_eq!(status(&mut admin)["state"], "idle");
    server.stop();
}
