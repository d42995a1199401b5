//! Request framing throughput: requests/s and MB/s of
//! `progressdb::http::parse_request` on four request shapes, against bare
//! `httparse::Request::parse` (the tokenizer it builds on) on the same head
//! bytes in the same run.
//!
//! Shapes: a small GET with 5 headers; a POST with a 1 KiB JSON body
//! (`Content-Length`); a buffer of 16 pipelined requests (GETs and small
//! POSTs alternating) parsed one request at a time as the connection loop
//! does; a chunked POST carrying the same 1 KiB body in 256-byte chunks.
//! Limits are the server's defaults (`config::Limits::default()`).
//!
//! `parse_request` does everything the server needs before routing: it
//! tokenizes the head with httparse, decides body framing, copies path,
//! query, lower-cased headers and the (de-chunked) body into an owned
//! `Request`. The baseline only tokenizes the head into stack slots, so the
//! ratio column is the price of our framing on top of the tokenizer. MB/s
//! counts every byte of the request for ours and the head bytes for
//! httparse. Each cell runs for about `CELL_TIME`, single-threaded.
//! Run: `cargo bench --bench http_parse`

#[path = "machine.rs"]
mod machine;

use std::hint::black_box;
use std::time::{Duration, Instant};

use progressdb::config::Limits;
use progressdb::http::{HeadLimits, Parse, parse_request};

/// Each cell runs for about this long.
const CELL_TIME: Duration = Duration::from_millis(1000);
/// Untimed warm-up before each cell (caches, branch predictors, allocator).
const WARMUP_TIME: Duration = Duration::from_millis(100);
/// Iterations between two clock reads.
const BATCH: u64 = 256;
/// JSON body size of the POST cases.
const BODY_BYTES: usize = 1024;
/// Chunk size of the chunked POST.
const CHUNK_BYTES: usize = 256;
/// Requests in the pipelined buffer.
const PIPELINE_DEPTH: usize = 16;
/// JSON body size of the POSTs inside the pipelined buffer.
const PIPELINE_BODY_BYTES: usize = 128;

/// One benchmark case: the bytes on the wire and where each request's head
/// starts and ends inside them.
struct Case {
    name: &'static str,
    wire: Vec<u8>,
    /// `(start, head_len)` of every request in `wire`.
    heads: Vec<(usize, usize)>,
}

impl Case {
    fn requests(&self) -> usize {
        self.heads.len()
    }

    fn head_bytes(&self) -> usize {
        self.heads.iter().map(|&(_, len)| len).sum()
    }
}

/// A JSON message body of exactly `bytes` bytes.
fn json_body(bytes: usize) -> Vec<u8> {
    let prefix = r#"{"author":"user-7f3a","role":"assistant","body":{"text":""#;
    let suffix = r#""}}"#;
    let filler = bytes - prefix.len() - suffix.len();
    let text: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(filler)
        .collect();
    let body = format!("{prefix}{text}{suffix}").into_bytes();
    assert_eq!(body.len(), bytes);
    body
}

fn get_head(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: progressdb.local:8080\r\n\
         User-Agent: bench/1.0\r\n\
         Accept: application/json\r\n\
         Authorization: Bearer 3f1c9a7e5b2d4c6e8a0b1c2d3e4f5a6b\r\n\
         X-Request-Id: 9b2e61c4-7d3f-4a5b-8c9d-0e1f2a3b4c5d\r\n\
         \r\n"
    )
}

fn post_head(path: &str, framing: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\n\
         Host: progressdb.local:8080\r\n\
         User-Agent: bench/1.0\r\n\
         Content-Type: application/json\r\n\
         Authorization: Bearer 3f1c9a7e5b2d4c6e8a0b1c2d3e4f5a6b\r\n\
         {framing}\r\n\
         \r\n"
    )
}

fn single(name: &'static str, head: String, body: &[u8]) -> Case {
    let head_len = head.len();
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);
    Case {
        name,
        wire,
        heads: vec![(0, head_len)],
    }
}

fn cases() -> Vec<Case> {
    let body = json_body(BODY_BYTES);

    let get = single(
        "GET, 5 headers",
        get_head("/v1/threads/t-01HZX3K9/messages?limit=50&order=desc"),
        b"",
    );

    let post = single(
        "POST, 1 KiB JSON",
        post_head(
            "/v1/threads/t-01HZX3K9/messages",
            &format!("Content-Length: {BODY_BYTES}"),
        ),
        &body,
    );

    let mut chunked_body = Vec::new();
    for chunk in body.chunks(CHUNK_BYTES) {
        chunked_body.extend(format!("{:x}\r\n", chunk.len()).bytes());
        chunked_body.extend_from_slice(chunk);
        chunked_body.extend_from_slice(b"\r\n");
    }
    chunked_body.extend_from_slice(b"0\r\n\r\n");
    let chunked = single(
        "POST, chunked 4 × 256 B",
        post_head(
            "/v1/threads/t-01HZX3K9/messages",
            "Transfer-Encoding: chunked",
        ),
        &chunked_body,
    );

    let small_body = json_body(PIPELINE_BODY_BYTES);
    let mut wire = Vec::new();
    let mut heads = Vec::new();
    for n in 0..PIPELINE_DEPTH {
        let path = format!("/v1/threads/t-{n:04}/messages");
        let head = if n % 2 == 0 {
            get_head(&path)
        } else {
            post_head(&path, &format!("Content-Length: {PIPELINE_BODY_BYTES}"))
        };
        heads.push((wire.len(), head.len()));
        wire.extend(head.bytes());
        if n % 2 == 1 {
            wire.extend_from_slice(&small_body);
        }
    }
    let pipelined = Case {
        name: "16 pipelined (GET/POST 128 B)",
        wire,
        heads,
    };

    vec![get, post, pipelined, chunked]
}

/// Parses every request of the case with our framing; returns how many.
fn parse_ours(wire: &[u8], limits: &HeadLimits) -> usize {
    let mut offset = 0;
    let mut parsed = 0;
    while offset < wire.len() {
        match parse_request(black_box(&wire[offset..]), limits) {
            Parse::Complete { request, consumed } => {
                black_box(request);
                offset += consumed;
                parsed += 1;
            }
            other => panic!("benchmark request did not parse: {other:?}"),
        }
    }
    parsed
}

/// Tokenizes every request head of the case with bare httparse, into as
/// many stack slots as the server allows headers.
fn parse_bare<const SLOTS: usize>(wire: &[u8], heads: &[(usize, usize)]) -> usize {
    let mut parsed = 0;
    for &(start, head_len) in heads {
        let mut slots = [httparse::EMPTY_HEADER; SLOTS];
        let mut request = httparse::Request::new(&mut slots);
        match request.parse(black_box(&wire[start..])) {
            Ok(httparse::Status::Complete(len)) => {
                debug_assert_eq!(len, head_len);
                black_box(&request);
                parsed += 1;
            }
            other => panic!("benchmark head did not tokenize: {other:?}"),
        }
    }
    parsed
}

/// Runs `pass` (which handles one buffer and returns the requests in it)
/// for about `CELL_TIME`; returns requests per second.
fn rate(mut pass: impl FnMut() -> usize) -> f64 {
    let started = Instant::now();
    while started.elapsed() < WARMUP_TIME {
        for _ in 0..BATCH {
            black_box(pass());
        }
    }
    let started = Instant::now();
    let mut requests = 0usize;
    loop {
        for _ in 0..BATCH {
            requests += pass();
        }
        let elapsed = started.elapsed();
        if elapsed >= CELL_TIME {
            return requests as f64 / elapsed.as_secs_f64();
        }
    }
}

/// The server's header slot count, fixed at compile time for httparse.
const HEADER_SLOTS: usize = 64;

fn main() {
    let defaults = Limits::default();
    assert_eq!(defaults.request_header_count_max, HEADER_SLOTS);
    let limits = HeadLimits {
        head_bytes_max: defaults.request_head_bytes_max,
        header_count_max: defaults.request_header_count_max,
        body_bytes_max: defaults.request_body_bytes_max,
    };

    println!(
        "HTTP request framing, parse_request vs bare httparse; {}; \
         limits: head {} B, {} headers, body {} B",
        machine::describe(),
        limits.head_bytes_max,
        limits.header_count_max,
        limits.body_bytes_max,
    );
    println!();
    println!(
        "| request | bytes/req (head) | ours req/s | ours MB/s | ours ns/req \
         | httparse req/s | httparse head MB/s | httparse ns/req | ours ÷ httparse req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in cases() {
        assert_eq!(parse_ours(&case.wire, &limits), case.requests());
        let ours = rate(|| parse_ours(&case.wire, &limits));
        let bare = rate(|| parse_bare::<HEADER_SLOTS>(&case.wire, &case.heads));
        let requests = case.requests() as f64;
        let wire_per_request = case.wire.len() as f64 / requests;
        let head_per_request = case.head_bytes() as f64 / requests;
        println!(
            "| {} | {wire_per_request:.0} ({head_per_request:.0}) | {ours:.0} | {:.0} | {:.0} \
             | {bare:.0} | {:.0} | {:.0} | {:.2} |",
            case.name,
            ours * wire_per_request / 1e6,
            1e9 / ours,
            bare * head_per_request / 1e6,
            1e9 / bare,
            ours / bare,
        );
    }
}
