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

/// Runs the binary with `args` to completion; its exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args(["--db", &db.display().to_string(), "--addr", "127.0.0.1:0"])
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
