//! End-to-end tests of the HTTP/1.1 layer on the real binary: pipelining,
//! chunked bodies, `Expect: 100-continue`, keep-alive rules, limits and
//! timeouts, and that one bad connection never disturbs another.

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{API_KEY, Server};

fn auth_headers() -> String {
    format!("Authorization: Bearer {API_KEY}\r\nX-User-ID: alice\r\n")
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = client
        .post("/frontend/v1/threads", r#"{"title":"pipe"}"#)
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/frontend/v1/threads/{thread}/messages");
    let mut burst = Vec::new();
    for n in 0..10 {
        burst.extend(client.request_bytes("POST", &path, Some(&json!({ "body": n }).to_string())));
    }
    burst.extend(client.request_bytes("GET", &format!("{path}?limit=100&sort_by=ts_asc"), None));
    burst.extend(client.request_bytes("GET", "/healthz", None));
    client.send_raw(&burst);
    for n in 0..10 {
        assert_eq!(client.read_reply(false).expect(201)["body"], n);
    }
    let page = client.read_reply(false).expect(200);
    let bodies: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_i64().unwrap())
        .collect();
    assert_eq!(bodies, (0..10).collect::<Vec<_>>());
    assert_eq!(client.read_reply(false).expect(200)["status"], "ok");
}

#[test]
fn requests_split_into_single_bytes_still_parse() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let bytes = client.request_bytes("POST", "/frontend/v1/threads", Some(r#"{"title":"slow"}"#));
    for byte in bytes {
        client.send_raw(&[byte]);
    }
    assert_eq!(client.read_reply(false).expect(201)["title"], "slow");
}

#[test]
fn chunked_request_bodies() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let body = r#"{"title":"chunked thread"}"#;
    let (first, second) = body.split_at(10);
    let raw = format!(
        "POST /frontend/v1/threads HTTP/1.1\r\nHost: t\r\n{}Transfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        auth_headers(),
        first.len(),
        second.len()
    );
    client.send_raw(raw.as_bytes());
    assert_eq!(
        client.read_reply(false).expect(201)["title"],
        "chunked thread"
    );
    // The connection stays usable afterwards.
    client.get("/healthz").expect(200);

    let bad = format!(
        "POST /frontend/v1/threads HTTP/1.1\r\nHost: t\r\n{}Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        auth_headers()
    );
    let mut broken = server.client();
    broken.send_raw(bad.as_bytes());
    broken.read_reply(false).expect_error(400, "bad_request");
    assert!(broken.is_closed());
}

#[test]
fn expect_continue_gets_100_before_the_body() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let body = r#"{"title":"continued"}"#;
    let head = format!(
        "POST /frontend/v1/threads HTTP/1.1\r\nHost: t\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        auth_headers(),
        body.len()
    );
    client.send_raw(head.as_bytes());
    assert_eq!(client.read_reply(false).status, 100);
    client.send_raw(body.as_bytes());
    assert_eq!(client.read_reply(false).expect(201)["title"], "continued");

    // A body that is too large is refused before it is sent.
    let head = format!(
        "POST /frontend/v1/threads HTTP/1.1\r\nHost: t\r\n{}Content-Length: 999999999\r\nExpect: 100-continue\r\n\r\n",
        auth_headers()
    );
    let mut big = server.client();
    big.send_raw(head.as_bytes());
    big.read_reply(false).expect_error(413, "body_too_large");
}

#[test]
fn keep_alive_rules() {
    let server = Server::start(&[]);
    let mut http10 = server.client();
    http10.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    http10.read_reply(false).expect(200);
    assert!(http10.is_closed(), "HTTP/1.0 closes by default");

    let mut closing = server.client();
    closing.send_raw(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    let reply = closing.read_reply(false);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(closing.is_closed());

    let mut kept = server.client();
    kept.send_raw(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    kept.read_reply(false).expect(200);
    kept.get("/healthz").expect(200);
}

#[test]
fn head_and_options() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let head = client.request("HEAD", "/healthz", None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("15"));
    client.get("/healthz").expect(200);
    let options = client.request("OPTIONS", "/frontend/v1/threads/x", None);
    assert_eq!(options.status, 204);
    assert_eq!(
        options.header("allow"),
        Some("GET, HEAD, PUT, DELETE, OPTIONS")
    );
}

#[test]
fn malformed_and_oversized_requests_close_only_their_connection() {
    let server = Server::start(&["--request-head-bytes-max", "2048"]);
    let mut healthy = server.client();
    healthy.get("/healthz").expect(200);

    let mut garbage = server.client();
    garbage.send_raw(b"\x00\x01\x02 nonsense\r\n\r\n");
    garbage.read_reply(false).expect_error(400, "bad_request");
    assert!(garbage.is_closed());

    let mut huge = server.client();
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4096)
    );
    huge.send_raw(raw.as_bytes());
    huge.read_reply(false)
        .expect_error(431, "headers_too_large");
    assert!(huge.is_closed());

    let mut conflicting = server.client();
    conflicting.send_raw(
        b"POST /v1/messages HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    conflicting
        .read_reply(false)
        .expect_error(400, "bad_request");

    let mut gzip = server.client();
    gzip.send_raw(b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    gzip.read_reply(false)
        .expect_error(501, "unsupported_transfer_encoding");

    // The first connection never noticed.
    healthy.get("/healthz").expect(200);
}

#[test]
fn idle_and_stalled_connections_are_closed() {
    let server = Server::start(&["--idle-timeout-ms", "300"]);
    let mut idle = server.client();
    idle.get("/healthz").expect(200);
    let started = Instant::now();
    assert!(idle.is_closed());
    assert!(started.elapsed() < Duration::from_secs(10));

    // A request head trickled and never finished is answered 408 and closed.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .unwrap();
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

// Slowloris: a client that is never silent for the idle timeout but never
// finishes its request is cut off by the request timeout.
#[test]
fn a_trickled_request_is_cut_off() {
    let server = Server::start(&["--request-timeout-ms", "800", "--idle-timeout-ms", "60000"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    for _ in 0..40 {
        if stream.write_all(b"X").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A normal request on a fresh connection is unaffected.
    server.client().get("/healthz").expect(200);
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// A client that pipelines requests but never reads the answers: the server
// stops reading once its answers cannot be written, so the client's writes
// stall instead of the server's memory growing, and the write timeout
// then drops the connection.
#[test]
fn a_client_that_never_reads_cannot_make_the_server_buffer() {
    let server = Server::start(&["--shards", "1", "--idle-timeout-ms", "1000"]);
    server.client().get("/healthz").expect(200);
    let resident_before = resident_kib(server.pid());
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let batch = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let limit: usize = 512 << 20;
    let mut sent = 0usize;
    let stalled = loop {
        match stream.write_all(batch.as_bytes()) {
            Ok(()) if sent < limit => sent += batch.len(),
            Ok(()) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        stalled,
        "the server read all {sent} bytes without them being read back"
    );
    // Only socket buffers' worth got through: a few MiB, not hundreds.
    assert!(sent < 64 << 20, "{sent} bytes accepted");
    let resident_after = resident_kib(server.pid());
    assert!(
        resident_after < resident_before + 32 * 1024,
        "resident memory grew from {resident_before} KiB to {resident_after} KiB"
    );
    // Other clients are served all along.
    server.client().get("/healthz").expect(200);
}
