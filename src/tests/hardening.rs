//! End-to-end regression tests of the hardening review (issue #12), each
//! against the real binary over HTTP and named after the hole it closes.

#[path = "support.rs"]
mod support;

use serde_json::json;
use support::{Client, Server};

const BACKEND: &str = "sk_backend_0123456789";
const FRONTEND: &str = "pk_frontend_0123456789";

fn start(extra: &[&str]) -> Server {
    start_with_env(extra, &[])
}

fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["--frontend-key", FRONTEND, "--backend-key", BACKEND];
    args.extend_from_slice(extra);
    let mut server = Server::start_with_env(&dir.path().join("db"), &args, env);
    server.keep_dir(dir);
    server
}

/// Creates a thread titled `title` as `client`'s user and returns the
/// path of its messages.
fn messages_path(client: &mut Client, title: &str) -> String {
    let body = json!({ "title": title }).to_string();
    let thread = client.post("/frontend/v1/threads", &body).expect(201);
    format!(
        "/frontend/v1/threads/{}/messages",
        thread["key"].as_str().unwrap()
    )
}

/// A client with `key` as `X-API-Key` for `user`, signed when the key is
/// the frontend key (the signature is computed as the backend would).
fn client(server: &Server, key: &str, user: &str) -> Client {
    let mut client = server.client();
    client.key = None;
    client.user = None;
    client.extra_headers = format!("X-API-Key: {key}\r\nX-User-ID: {user}\r\n");
    if key == FRONTEND {
        let signature = progressdb::auth::sign(BACKEND.as_bytes(), user);
        client
            .extra_headers
            .push_str(&format!("X-User-Signature: {signature}\r\n"));
    }
    client
}

#[test]
fn frontend_keys_cannot_choose_thread_keys_so_names_cannot_be_squatted() {
    let server = start(&[]);
    let mut mallory = client(&server, FRONTEND, "mallory");
    for field in ["key", "id"] {
        let body = json!({ "title": "mine now", field: "general" }).to_string();
        mallory
            .post("/frontend/v1/threads", &body)
            .expect_error(403, "thread_key_forbidden");
    }
    // Without a key the frontend still creates threads, with generated keys.
    let own = mallory
        .post("/frontend/v1/threads", r#"{"title":"t"}"#)
        .expect(201);
    assert_eq!(own["key"].as_str().unwrap().len(), 26);

    // The backend's seed post creates "general" for carol, not mallory.
    let mut backend = client(&server, BACKEND, "carol");
    let seed = json!({ "thread": "general", "author": "carol", "body": "hi" });
    backend.post("/v1/messages", &seed.to_string()).expect(201);
    let thread = backend.get("/frontend/v1/threads/general").expect(200);
    assert_eq!(thread["thread"]["author"], "carol");
    mallory
        .get("/frontend/v1/threads/general/messages")
        .expect_error(404, "thread_not_found");
}

#[test]
fn creating_a_thread_key_reveals_nothing_to_a_frontend_caller() {
    let server = start(&[]);
    let mut backend = client(&server, BACKEND, "bob");
    for key in ["taken", "gone"] {
        let body = json!({ "title": "t", "key": key }).to_string();
        backend.post("/frontend/v1/threads", &body).expect(201);
    }
    backend.delete("/frontend/v1/threads/gone").expect(200);
    // Backends are trusted with existence: a chosen key in use is 409.
    backend
        .post("/frontend/v1/threads", r#"{"title":"t","key":"taken"}"#)
        .expect_error(409, "thread_exists");

    let mut mallory = client(&server, FRONTEND, "mallory");
    let answers: Vec<(u16, Vec<u8>)> = ["taken", "gone", "free"]
        .iter()
        .map(|key| {
            let body = json!({ "title": "probe", "key": key }).to_string();
            let reply = mallory.post("/frontend/v1/threads", &body);
            (reply.status, reply.body)
        })
        .collect();
    assert_eq!(answers[0].0, 403);
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "a taken, a deleted and a free key must answer alike: {answers:?}"
    );
    backend.get("/frontend/v1/threads/free").expect(404);
}

#[test]
fn versions_honour_limit_and_page_with_version_cursors() {
    let server = start(&[]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = messages_path(&mut alice, "t");
    let message = alice.post(&base, r#"{"body":0}"#).expect(201);
    let path = format!("{base}/{}/versions", message["key"].as_str().unwrap());
    for n in 1..7 {
        alice
            .put(
                &format!("{base}/{}", message["key"].as_str().unwrap()),
                &json!({ "body": n }).to_string(),
            )
            .expect(200);
    }
    let numbers = |page: &serde_json::Value| -> Vec<u64> {
        support::items(page)
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect()
    };
    // The newest two, oldest first, as every list pages.
    let newest = alice.get(&format!("{path}?limit=2")).expect(200);
    assert_eq!(newest["message"], message["key"]);
    assert_eq!(numbers(&newest), [6, 7]);
    let p = &newest["pagination"];
    assert_eq!(
        (
            &p["before_anchor"],
            &p["after_anchor"],
            &p["has_before"],
            &p["has_after"]
        ),
        (&json!("6"), &json!("7"), &json!(true), &json!(false))
    );
    assert_eq!((&p["count"], &p["total"]), (&json!(2), &json!(7)));
    // Walking back with before=<before_anchor> visits each version once.
    let mut seen = numbers(&newest);
    let mut page = newest;
    while page["pagination"]["has_before"] == true {
        let anchor = page["pagination"]["before_anchor"]
            .as_str()
            .unwrap()
            .to_owned();
        page = alice
            .get(&format!("{path}?limit=2&before={anchor}"))
            .expect(200);
        let mut older = numbers(&page);
        older.extend(seen);
        seen = older;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    let after = alice.get(&format!("{path}?limit=3&after=1")).expect(200);
    assert_eq!(numbers(&after), [2, 3, 4]);
    assert_eq!(after["pagination"]["has_after"], true);
    let around = alice.get(&format!("{path}?limit=1&anchor=4")).expect(200);
    assert_eq!(numbers(&around), [3, 4, 5]);
    alice
        .get(&format!("{path}?limit=0"))
        .expect_error(400, "invalid_limit");
    for bad in ["before=0", "after=8", "anchor=x"] {
        alice
            .get(&format!("{path}?{bad}"))
            .expect_error(400, "invalid_cursor");
    }
}

#[test]
fn identity_headers_sent_twice_answer_400_not_first_wins() {
    let server = start(&[]);
    let mut backend = client(&server, BACKEND, "alice");
    backend
        .post("/frontend/v1/threads", r#"{"title":"alice's"}"#)
        .expect(201);
    let duplicates = [
        format!("X-API-Key: {BACKEND}\r\nX-User-ID: alice\r\nX-User-ID: bob\r\n"),
        format!(
            "Authorization: Bearer {BACKEND}\r\nAuthorization: Bearer {FRONTEND}\r\nX-User-ID: alice\r\n"
        ),
        format!("X-API-Key: {BACKEND}\r\nX-API-Key: {BACKEND}\r\nX-User-ID: alice\r\n"),
        format!("Authorization: Bearer {BACKEND}\r\nX-API-Key: {FRONTEND}\r\nX-User-ID: alice\r\n"),
    ];
    for headers in duplicates {
        let mut raw = client(&server, BACKEND, "alice");
        raw.extra_headers = headers.clone();
        let reply = raw.get("/frontend/v1/threads");
        assert_eq!(reply.status, 400, "{headers:?}");
        reply.expect_error(400, "duplicate_header");
        // The connection stays usable: framing was never in doubt.
        raw.extra_headers = format!("X-API-Key: {BACKEND}\r\nX-User-ID: alice\r\n");
        assert_eq!(
            support::ids(&raw.get("/frontend/v1/threads").expect(200)).len(),
            1
        );
    }
}

#[test]
fn a_space_inside_the_request_target_answers_400() {
    let server = start(&[]);
    let mut raw = server.client();
    raw.send_raw(b"GET /frontend/v1/threads?q=a b HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.read_reply(false).expect_error(400, "bad_request");
    assert!(raw.is_closed());
}

#[test]
fn head_on_the_stream_route_sends_no_body_and_keeps_pipelining() {
    let server = start(&[]);
    let mut alice = client(&server, BACKEND, "alice");
    let stream = format!("{}/stream", messages_path(&mut alice, "t"));
    let mut pipelined = alice.request_bytes("HEAD", &stream, None);
    pipelined.extend(alice.request_bytes("GET", "/healthz", None));
    alice.send_raw(&pipelined);
    let head = alice.read_reply(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    // The next bytes are the second response, not events.
    assert_eq!(alice.read_reply(false).expect(200)["status"], "ok");
    // HEAD reveals no more than GET: someone else's thread is 404.
    let mut bob = client(&server, BACKEND, "bob");
    let reply = bob.request("HEAD", &stream, None);
    assert_eq!(reply.status, 404);
    assert_eq!(bob.get("/healthz").expect(200)["status"], "ok");
}

/// Opens `path` as a live tail resuming after `last_event_id` and returns
/// the reader positioned after the response head.
fn open_tail(
    server: &Server,
    path: &str,
    last_event_id: u64,
) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nX-API-Key: {BACKEND}\r\nX-User-ID: alice\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    reader
}

/// The next SSE event as (kind, data), skipping comments and hints.
fn next_event(reader: &mut impl std::io::BufRead) -> Option<(String, String)> {
    let (mut kind, mut data) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() && !kind.is_empty() {
            return Some((kind, data));
        }
        if let Some(value) = line.strip_prefix("event: ") {
            kind = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = value.to_owned();
        }
    }
}

/// Posts `count` messages `{"n": i}` to `path`, pipelined in bursts.
fn post_many(client: &mut Client, path: &str, count: usize, body: impl Fn(usize) -> String) {
    const BURST: usize = 200;
    for start in (0..count).step_by(BURST) {
        let end = (start + BURST).min(count);
        let mut burst = Vec::new();
        for n in start..end {
            burst.extend(client.request_bytes("POST", path, Some(&body(n))));
        }
        client.send_raw(&burst);
        for _ in start..end {
            client.read_reply(false).expect(201);
        }
    }
}

#[test]
fn a_long_resume_replays_every_change_before_going_live() {
    // Batches of 5 (debug override), so 300 changes take 60 batches: more
    // than the 21 rounds after which a resume used to go live silently.
    const CHANGES: usize = 300;
    let server = start_with_env(
        &["--durability", "none", "--shards", "1"],
        &[("PROGRESSDB_DEBUG_REPLAY_EVENTS_MAX", "5")],
    );
    let mut alice = client(&server, BACKEND, "alice");
    let base = messages_path(&mut alice, "busy");
    post_many(&mut alice, &base, CHANGES, |n| {
        json!({ "body": n }).to_string()
    });
    let mut tail = open_tail(&server, &format!("{base}/stream"), 0);
    // A live change after the resume: it must come after every replayed one.
    alice.post(&base, r#"{"body":"live"}"#).expect(201);
    let mut bodies = Vec::new();
    loop {
        let (kind, data) = next_event(&mut tail).expect("the stream ended early");
        assert_eq!(kind, "message.created", "{data}");
        let message: serde_json::Value = serde_json::from_str(&data).unwrap();
        if message["body"] == "live" {
            break;
        }
        bodies.push(message["body"].as_u64().unwrap() as usize);
    }
    assert_eq!(bodies.len(), CHANGES, "every change replayed once");
    assert!(bodies.iter().enumerate().all(|(i, n)| i == *n), "in order");
}

/// Sends `GET path` from `caller` until it answers 429 (at most
/// `attempts` times) and returns that answer: a flood that outruns any
/// refill, however slow the machine.
fn flood_until_429(caller: &mut Client, path: &str, attempts: usize) -> support::Reply {
    for _ in 0..attempts {
        let reply = caller.get(path);
        if reply.status == 429 {
            return reply;
        }
    }
    panic!("none of {attempts} requests was refused");
}

#[test]
fn one_users_flood_does_not_rate_limit_other_users_of_the_key() {
    let server = start(&[
        "--shards",
        "1",
        "--rate-limit-rps",
        "1",
        "--rate-limit-burst",
        "2",
    ]);
    let mut alice = client(&server, FRONTEND, "alice");
    let refused = flood_until_429(&mut alice, "/frontend/v1/threads", 1000);
    refused.expect_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // Bob shares the frontend key but has a bucket of his own, full.
    client(&server, FRONTEND, "bob")
        .get("/frontend/v1/threads")
        .expect(200);
}

#[test]
fn a_key_has_a_ceiling_over_all_its_users() {
    let server = start(&["--shards", "1", "--rate-limit-key-rps", "1"]);
    // Every request from a new user: no user bucket is ever empty.
    let refused = (0..1000)
        .map(|n| client(&server, BACKEND, &format!("user{n}")).get("/frontend/v1/threads"))
        .find(|reply| reply.status != 200)
        .expect("the key's ceiling refuses some request");
    refused.expect_error(429, "rate_limited");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("this key")
    );
}

#[test]
fn failed_authentications_are_limited_per_source_address() {
    let server = start(&["--shards", "1", "--auth-failures-per-minute", "3"]);
    let mut guesser = client(&server, "sk_guess_0123456789", "alice");
    let refused = flood_until_429(&mut guesser, "/frontend/v1/threads", 1000);
    refused.expect_error(429, "too_many_auth_failures");
    assert!(refused.header("retry-after").is_some());
    // Refused before any key is compared, so the right key waits too.
    client(&server, BACKEND, "alice")
        .get("/frontend/v1/threads")
        .expect_error(429, "too_many_auth_failures");
    // Unauthenticated routes stay open.
    server.client().get("/healthz").expect(200);
}

/// Keys and `n` fields of a list answer's items, with its pagination.
fn page_of(reply: &serde_json::Value) -> (Vec<u64>, &serde_json::Value) {
    let ns = support::items(reply)
        .iter()
        .map(|item| item["body"]["n"].as_u64().unwrap())
        .collect();
    (ns, &reply["pagination"])
}

#[test]
fn pages_of_large_messages_stop_at_the_byte_budget() {
    // Six messages of 900 KB: a page holds at most 4 MiB of them.
    let server = start(&["--durability", "none"]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = messages_path(&mut alice, "big");
    let filler = "x".repeat(900_000);
    let big = |n: usize| json!({ "body": { "n": n, "filler": filler } }).to_string();
    // One at a time: each answer echoes 900 KB, and a pipelined burst
    // would fill both directions' socket buffers.
    for n in 0..6 {
        alice.post(&base, &big(n)).expect(201);
    }

    let newest = alice.get(&format!("{base}?limit=1000")).expect(200);
    let (ns, p) = page_of(&newest);
    assert_eq!(ns, [2, 3, 4, 5], "the newest that fit, oldest first");
    assert_eq!(
        (&p["has_before"], &p["has_after"]),
        (&json!(true), &json!(false))
    );
    assert_eq!((&p["count"], &p["total"]), (&json!(4), &json!(6)));
    assert_eq!(p["before_anchor"], support::ids(&newest)[0]);
    let anchor = p["before_anchor"].as_str().unwrap();
    let older = alice
        .get(&format!("{base}?limit=1000&before={anchor}"))
        .expect(200);
    let (ns, p) = page_of(&older);
    assert_eq!(ns, [0, 1]);
    assert_eq!(
        (&p["has_before"], &p["has_after"]),
        (&json!(false), &json!(true))
    );

    // Versions: five edits of 900 KB each, one page of at most 4 MiB.
    let first = support::ids(&older)[0].clone();
    for n in 10..15 {
        alice.put(&format!("{base}/{first}"), &big(n)).expect(200);
    }
    let versions = alice
        .get(&format!("{base}/{first}/versions?limit=50"))
        .expect(200);
    let numbers: Vec<u64> = support::items(&versions)
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 4, 5, 6]);
    assert_eq!(versions["pagination"]["has_before"], true);

    // A resume replays every large change, in byte-bounded batches.
    let mut tail = open_tail(&server, &format!("{base}/stream"), 0);
    alice.post(&base, r#"{"body":{"n":99}}"#).expect(201);
    let mut replayed = 0;
    loop {
        let (_, data) = next_event(&mut tail).expect("the stream ended early");
        if data.contains(r#""n":99"#) {
            break;
        }
        replayed += 1;
    }
    assert_eq!(replayed, 6 + 5, "six posts and five edits");
}

/// The server started by `sh` after `ulimit_command`, on a new directory.
fn start_under_ulimit(ulimit_command: &str) -> (support::Started, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db").display().to_string();
    let args = [
        "--shards",
        "1",
        "--addr",
        "127.0.0.1:0",
        "--api-key",
        BACKEND,
        "--db",
        &db,
    ];
    (
        support::spawn_after_shell_command(ulimit_command, &args),
        dir,
    )
}

/// (soft, hard) open-files limits of process `pid`.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let (mut started, _dir) = start_under_ulimit("ulimit -S -n 200");
    let (soft, hard) = nofile_limits(started.child.id());
    assert_eq!(soft, hard, "soft limit raised from 200");
    let _ = started.child.kill();
    let _ = started.child.wait();
}

#[test]
fn connections_beyond_the_descriptors_left_get_503_instead_of_hanging() {
    // 400 descriptors, one shard: 400 - 64 - 320 = 16 connections fit.
    let (mut started, _dir) = start_under_ulimit("ulimit -n 400");
    let log = support::log_with(&started.log, "lowered");
    assert!(log.contains("connections_per_shard_max=16"), "{log}");
    let mut open = Vec::new();
    let refused = loop {
        assert!(open.len() <= 500, "no connection was refused");
        let mut client = Client::connect(started.addr);
        let reply = client.get("/healthz");
        if reply.status != 200 {
            break reply;
        }
        open.push(client);
    };
    refused.expect_error(503, "too_many_connections");
    assert_eq!(open.len(), 16);
    let _ = started.child.kill();
    let _ = started.child.wait();
}

/// The newest WAL segment of a one-shard data directory.
fn newest_segment(db: &std::path::Path) -> std::path::PathBuf {
    let wal = db.join("shard-0").join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(wal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

#[test]
fn a_damaged_wal_tail_is_logged_at_warn_as_torn_write_or_bad_record() {
    // Each damages the last flush's only record: `data_end` is where the
    // written bytes end, `flush` where that flush starts.
    type Damage = fn(&mut [u8], usize, usize);
    let cases: [(&str, Damage); 2] = [
        ("torn_write", |bytes, flush, end| {
            // The second half of the record never reached the disk.
            let record = flush + 32;
            bytes[record + (end - record) / 2..end].fill(0);
        }),
        ("bad_record", |bytes, _, end| bytes[end - 3] ^= 0x80),
    ];
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let server = Server::start_on(&db, &["--shards", "1"]);
        let mut client = server.client();
        for n in 0..5 {
            let body = json!({ "thread": "t", "author": "a", "body": n }).to_string();
            client.post("/v1/messages", &body).expect(201);
        }
        server.kill();
        let segment = newest_segment(&db);
        let mut bytes = std::fs::read(&segment).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        let flush = (end - 1) / 4096 * 4096;
        damage(&mut bytes, flush, end);
        std::fs::write(&segment, &bytes).unwrap();

        let server = Server::start_on(&db, &["--shards", "1"]);
        let log = support::log_with(&server.log, &format!("damage={name}"));
        let line = log
            .lines()
            .find(|line| line.contains(&format!("damage={name}")))
            .unwrap_or_else(|| panic!("no {name} line: {log}"));
        assert!(line.contains("level=warn"), "{line}");
        assert!(line.contains("shard=shard-0"), "{line}");
        assert!(line.contains(&format!("offset={}", flush + 32)), "{line}");
        assert!(line.contains(&format!("truncated_at={flush}")), "{line}");
        assert!(line.contains(".wal"), "names the segment: {line}");
        // The damaged flush is dropped; the four before it survive.
        let page = server.client().get("/v1/threads/t/messages").expect(200);
        assert_eq!(support::ids(&page).len(), 4, "{name}");
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Posts 80 messages of 60 KB to a new thread of `client`'s user and
/// returns its messages path: a `limit=1000` page of it is as large as a
/// page may be (it stops at the 4 MiB page cap, about 70 messages).
fn largest_page_thread(client: &mut Client, title: &str) -> String {
    let base = messages_path(client, title);
    let filler = "x".repeat(60_000);
    for n in 0..80 {
        let body = json!({ "body": { "n": n, "filler": filler } }).to_string();
        client.post(&base, &body).expect(201);
    }
    base
}

/// A socket whose reader takes at most 4 KiB per read and pauses before
/// each, with a small receive buffer: a client on a slow link.
struct SlowSocket(std::net::TcpStream);

impl SlowSocket {
    fn connect(addr: std::net::SocketAddr) -> SlowSocket {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream: std::net::TcpStream = socket.into();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        SlowSocket(stream)
    }
}

impl std::io::Read for SlowSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        let end = buf.len().min(4096);
        self.0.read(&mut buf[..end])
    }
}

#[test]
fn slow_readers_of_the_largest_pages_keep_memory_bounded() {
    use std::io::Write;
    // A page used to be rendered whole on the shard and held in the
    // connection's buffer while the client read it: 4 MiB per reader. It
    // is now sent while it is rendered, a piece of 128 KiB at a time.
    const READERS: usize = 8;
    let server = start(&["--durability", "none", "--shards", "1"]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = largest_page_thread(&mut alice, "big");
    let request = alice.request_bytes("GET", &format!("{base}?limit=1000"), None);
    let before = rss_bytes(server.pid());
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let mut socket = SlowSocket::connect(server.addr);
            socket.0.write_all(&request).unwrap();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::with_capacity(4096, socket);
                support::read_reply_from(&mut reader, false).unwrap()
            })
        })
        .collect();
    let mut peak = before;
    while readers.iter().any(|reader| !reader.is_finished()) {
        peak = peak.max(rss_bytes(server.pid()));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{READERS} slow readers of 4 MiB pages: RSS {} KiB before, peak {} KiB, grew {} KiB",
        before >> 10,
        peak >> 10,
        grown >> 10
    );
    for reader in readers {
        let reply = reader.join().unwrap();
        assert_eq!(reply.header("Transfer-Encoding"), Some("chunked"));
        let page = reply.expect(200);
        assert!(support::ids(&page).len() > 60, "a whole page arrived");
    }
    // A piece and its frame per reader, plus allocator slack; a page held
    // whole per reader would be 32 MiB.
    assert!(
        grown < 16 << 20,
        "{READERS} slow readers grew RSS by {} KiB",
        grown >> 10
    );
}

#[test]
fn a_streamed_page_has_the_shape_and_messages_of_a_whole_one() {
    // Encrypted, so every piece opens its messages as it renders them.
    let server = start(&["--durability", "none", "--shards", "2", "--encryption"]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = largest_page_thread(&mut alice, "big");
    // Small pages are rendered whole, with a length.
    let all =
        support::messages_paging_back(&mut alice, &base, 2, std::time::Duration::ZERO, |reply| {
            assert!(reply.header("Content-Length").is_some(), "{}", reply.status);
        });
    assert_eq!(all.len(), 80);

    let reply = alice.get(&format!("{base}?limit=1000"));
    assert_eq!(reply.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(reply.header("Content-Length"), None);
    let page = reply.expect(200);
    let listed = support::items(&page);
    let n = listed.len();
    // Sealed bodies take more room, so fewer fit under the byte cap.
    assert!((20..80).contains(&n), "the page stops at its byte cap: {n}");
    // Compared without printing: the bodies are 60 KB each.
    assert!(listed[..] == all[80 - n..], "the newest, oldest first");
    assert_eq!(listed[0]["body"]["filler"].as_str().unwrap().len(), 60_000);
    let keys = support::ids(&page);
    let thread = base.split('/').nth(4).unwrap();
    assert_eq!(page["thread"], thread);
    assert_eq!(
        page["pagination"],
        json!({
            "before_anchor": keys[0], "after_anchor": keys[n - 1],
            "has_before": true, "has_after": false, "count": n, "total": 80,
        })
    );

    // Older than the page, and around an anchor: the same messages as the
    // small pages list there.
    let older = alice
        .get(&format!("{base}?limit=1000&before={}", keys[0]))
        .expect(200);
    let m = support::items(&older).len();
    assert!(m > 1 && m <= 80 - n, "{m}");
    assert!(support::items(&older)[..] == all[80 - n - m..80 - n]);
    assert_eq!(older["pagination"]["has_before"], m < 80 - n);
    assert_eq!(older["pagination"]["has_after"], true);
    let middle = all[40]["key"].as_str().unwrap();
    let around = alice
        .get(&format!("{base}?limit=1000&anchor={middle}"))
        .expect(200);
    let around_keys = support::ids(&around);
    let at = around_keys.iter().position(|k| k == middle).unwrap();
    let first = 40 - at;
    assert!(support::items(&around)[..] == all[first..first + around_keys.len()]);
    assert_eq!(around["pagination"]["count"], around_keys.len());
}

#[test]
fn a_streamed_page_of_replies_has_the_replies_of_small_pages() {
    let server = start(&["--durability", "none", "--shards", "2"]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = messages_path(&mut alice, "asked");
    let parent = alice.post(&base, r#"{"body":"question"}"#).expect(201);
    let filler = "x".repeat(60_000);
    for n in 0..40 {
        let body = json!({ "body": { "n": n, "filler": filler }, "reply_to": parent["key"] });
        alice.post(&base, &body.to_string()).expect(201);
    }
    let replies = format!("{base}/{}/replies", parent["key"].as_str().unwrap());
    // Small pages, oldest first, each answered whole with a length.
    let mut all: Vec<serde_json::Value> = Vec::new();
    let mut path = format!("{replies}?limit=2");
    loop {
        let reply = alice.get(&path);
        assert!(reply.header("Content-Length").is_some());
        let page = reply.expect(200);
        all.extend(support::items(&page).iter().cloned());
        if page["pagination"]["has_after"] != true {
            break;
        }
        let anchor = page["pagination"]["after_anchor"].as_str().unwrap();
        path = format!("{replies}?limit=2&after={anchor}");
    }
    assert_eq!(all.len(), 40);

    let reply = alice.get(&format!("{replies}?limit=1000"));
    assert_eq!(reply.header("Transfer-Encoding"), Some("chunked"));
    let page = reply.expect(200);
    let keys = support::ids(&page);
    // 2.4 MB: under the page cap, over what is rendered whole.
    assert!(
        support::items(&page)[..] == all[..],
        "every reply, in order"
    );
    assert_eq!(page.get("thread"), None, "a replies page names no thread");
    assert_eq!(
        page["pagination"],
        json!({
            "before_anchor": keys[0], "after_anchor": keys[39],
            "has_before": false, "has_after": false, "count": 40, "total": 40,
        })
    );
    // From a cursor, and back from one.
    let after = alice
        .get(&format!("{replies}?limit=1000&after={}", keys[9]))
        .expect(200);
    assert!(support::items(&after)[..] == all[10..]);
    assert_eq!(after["pagination"]["has_before"], true);
    let before = alice
        .get(&format!("{replies}?limit=1000&before={}", keys[30]))
        .expect(200);
    assert!(support::items(&before)[..] == all[..30]);
    assert_eq!(before["pagination"]["has_after"], true);
}

#[test]
fn streamed_pages_keep_head_http10_keep_alive_and_pipelining() {
    use std::io::{Read, Write};
    let server = start(&["--durability", "none"]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = largest_page_thread(&mut alice, "big");
    let large = format!("{base}?limit=1000");
    let small = format!("{base}?limit=1");
    let whole = alice.get(&large);
    assert_eq!(whole.status, 200);

    // HEAD, a large GET and a small GET pipelined on one connection.
    let mut pipelined = alice.request_bytes("HEAD", &large, None);
    pipelined.extend(alice.request_bytes("GET", &large, None));
    pipelined.extend(alice.request_bytes("GET", &small, None));
    alice.send_raw(&pipelined);
    let head = alice.read_reply(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    let again = alice.read_reply(false);
    assert_eq!(again.body, whole.body, "the same page, byte for byte");
    let newest = alice.read_reply(false).expect(200);
    assert_eq!(support::ids(&newest).len(), 1);
    // The connection stays open after a streamed page.
    assert_eq!(alice.get(&large).body, whole.body);

    // HTTP/1.0 cannot read chunks: the body ends where the connection does.
    let request = String::from_utf8(alice.request_bytes("GET", &large, None))
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    let mut socket = std::net::TcpStream::connect(server.addr).unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding"));
    assert_eq!(answer[split..], whole.body[..]);
}

#[test]
fn readers_gone_mid_page_neither_leak_nor_stall_the_shard() {
    use std::io::{Read, Write};
    // Connections that were never given back would soon hit this limit.
    let server = start(&[
        "--durability",
        "none",
        "--shards",
        "1",
        "--connections-per-shard-max",
        "8",
    ]);
    let mut alice = client(&server, BACKEND, "alice");
    let base = largest_page_thread(&mut alice, "big");
    let request = alice.request_bytes("GET", &format!("{base}?limit=1000"), None);
    let whole = alice.get(&format!("{base}?limit=1000")).body;
    drop(alice);
    let before = rss_bytes(server.pid());
    for _ in 0..32 {
        // The server may not have seen the last ones go yet: then it is at
        // its limit for a moment, and answers 503.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut socket = SlowSocket::connect(server.addr);
            socket.0.write_all(&request).unwrap();
            let mut status = [0u8; 12];
            socket.read_exact(&mut status).unwrap();
            if &status == b"HTTP/1.1 200" {
                let mut start = [0u8; 2048];
                socket.read_exact(&mut start).unwrap();
                // Gone after the first piece, the rest unread.
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connections are not given back"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // The shard serves on; the connections close as their writes fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut reader = client(&server, BACKEND, "alice");
        match reader.try_request("GET", &format!("{base}?limit=1000"), None) {
            Ok(reply) if reply.status == 200 => {
                assert_eq!(reply.body, whole);
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "the server never served again: {:?}",
                other.map(|reply| reply.status)
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let grown = rss_bytes(server.pid()).saturating_sub(before);
    eprintln!("32 readers gone mid-page: RSS grew {} KiB", grown >> 10);
    assert!(grown < 16 << 20, "RSS grew by {} KiB", grown >> 10);
}
