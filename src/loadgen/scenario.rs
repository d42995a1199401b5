//! What to send: the request mix of each scenario, the request bytes, and the
//! seeded random numbers that pick threads and operations.
//!
//! Requests are written straight into a connection's reused buffer; nothing
//! here allocates per request. Everything random comes from [`Rng`] streams
//! derived from `--seed`, so two runs with the same flags send the same
//! sequence per connection.

use std::io::Write;

use clap::ValueEnum;

/// The `--scenario` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioKind {
    /// POST a message to a random thread of the `--threads` set.
    Post,
    /// GET the newest page (limit=50) of a random thread.
    Read,
    /// `--read-percent` reads, the rest posts, each to a random thread.
    Mix,
    /// Every request posts to one single thread.
    Hot,
    /// GET the raw `--url` path; no setup.
    Url,
    /// `--subscribers` live-tail (SSE) streams while posts arrive at
    /// `--rate`; measures post-to-event delivery (see `tail`).
    Tail,
    /// Baseline: Redis XADD of the post's text to one stream over RESP;
    /// `--addr` is a Redis server (see `resp`).
    Xadd,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Post => "post",
            ScenarioKind::Read => "read",
            ScenarioKind::Mix => "mix",
            ScenarioKind::Hot => "hot",
            ScenarioKind::Url => "url",
            ScenarioKind::Tail => "tail",
            ScenarioKind::Xadd => "xadd",
        }
    }
}

/// xorshift64* seeded through splitmix64: tiny, fast, and good enough to pick
/// threads and read/write coin flips.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Stream `stream` (e.g. a connection index) of the run seeded `seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut state = splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5eed)));
        if state == 0 {
            state = 0x9e37_79b9_7f4a_7c15; // xorshift must never hold zero
        }
        Rng(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift rather than modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Request writer: the header lines every request carries are rendered once.
#[derive(Debug, Clone)]
pub struct Http {
    /// `Host`, optional `Authorization` and `X-User-ID` lines, each CRLF-ended.
    common: Vec<u8>,
}

impl Http {
    /// `extra` headers are complete "Name: value" lines without the CRLF.
    pub fn new(host: &str, key: Option<&str>, user: &str, extra: &[String]) -> Http {
        let mut common = Vec::new();
        let _ = write!(common, "Host: {host}\r\n");
        if let Some(key) = key {
            let _ = write!(common, "Authorization: Bearer {key}\r\n");
        }
        let _ = write!(common, "X-User-ID: {user}\r\n");
        for line in extra {
            let _ = write!(common, "{}\r\n", line.trim());
        }
        Http { common }
    }

    /// `GET` of a path given in pieces (so thread ids need no formatting).
    pub fn get(&self, out: &mut Vec<u8>, path: &[&[u8]]) {
        self.start(out, b"GET ", path);
        out.extend_from_slice(b"\r\n");
    }

    /// `POST` of a JSON body.
    pub fn post_json(&self, out: &mut Vec<u8>, path: &[&[u8]], body: &[u8]) {
        self.start(out, b"POST ", path);
        let _ = write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        out.extend_from_slice(body);
    }

    fn start(&self, out: &mut Vec<u8>, method: &[u8], path: &[&[u8]]) {
        out.extend_from_slice(method);
        for piece in path {
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.common);
    }
}

/// The JSON body of every posted message: `{"body":{"text":"..."},"role":"user"}`
/// with `text_bytes` of ordinary ASCII chat text.
pub fn message_body(text_bytes: usize) -> Vec<u8> {
    serde_json::json!({ "body": { "text": message_text(text_bytes) }, "role": "user" })
        .to_string()
        .into_bytes()
}

/// `text_bytes` of ordinary ASCII chat text: the text of every post.
pub fn message_text(text_bytes: usize) -> String {
    const WORDS: &str = "a benchmark message with some ordinary chat text ";
    WORDS.chars().cycle().take(text_bytes).collect()
}

/// Where a post sits in the open-loop schedule, written into the bodies of
/// the tail scenario's posts so that a subscriber can tell which post an
/// event is and when it was meant to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// The post's slot in the run's schedule (0, 1, 2, ... at `--rate`).
    pub seq: u64,
    /// Its planned send time (or its actual one, if earlier), in
    /// microseconds after the run's shared start instant.
    pub at_us: u64,
}

/// A tail post's body is `{"body":{"bench_seq":S,"bench_at_us":A,"text":...},"role":"user"}`,
/// written in these pieces; the keys are what [`parse_stamp`] looks for in
/// an event's message JSON.
const TAIL_OPEN: &[u8] = br#"{"body":{"#;
const SEQ_KEY: &[u8] = br#""bench_seq":"#;
const AT_KEY: &[u8] = br#""bench_at_us":"#;
const TAIL_TEXT: &[u8] =
    br#","text":"a benchmark message with some ordinary chat text"},"role":"user"}"#;

/// The body of the marker posted to each thread after the last measured
/// post: a subscriber that sees it has seen everything posted before it,
/// because a thread's events arrive in commit order.
pub const TAIL_END_BODY: &[u8] = br#"{"body":{"bench_end":true},"role":"user"}"#;
/// What identifies the end marker inside an event's message JSON.
pub const TAIL_END_KEY: &[u8] = br#""bench_end":true"#;

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Reads the [`Stamp`] out of an event's data (a message JSON embedding a
/// tail post's body). `None` for anything else.
pub fn parse_stamp(data: &[u8]) -> Option<Stamp> {
    let seq = number_after(data, SEQ_KEY)?;
    let at_us = number_after(data, AT_KEY)?;
    Some(Stamp { seq, at_us })
}

/// The unsigned integer right after the first `key` in `data`.
fn number_after(data: &[u8], key: &[u8]) -> Option<u64> {
    let start = data.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = data[start..].iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// Which operation a request is (the table does not split by it yet, but the
/// setup phase and future per-operation histograms do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Post,
    Read,
    Get,
}

/// A ready-to-run scenario: shared read-only by every connection of a run.
#[derive(Debug)]
pub struct Workload {
    pub kind: ScenarioKind,
    pub http: Http,
    /// Target thread ids (empty for `url`).
    pub threads: Vec<String>,
    /// Percentage of reads in `mix`.
    pub read_percent: u32,
    pub url: String,
    pub post_body: Vec<u8>,
    /// The RESP command the `xadd` scenario sends (empty otherwise).
    pub xadd: Vec<u8>,
}

impl Workload {
    /// Writes the next request into `out` (cleared by the caller). `stamp`
    /// is used by the tail scenario only.
    pub fn build(&self, rng: &mut Rng, stamp: Stamp, out: &mut Vec<u8>) -> Op {
        if self.kind == ScenarioKind::Tail {
            self.build_tail_post(stamp, out);
            return Op::Post;
        }
        if self.kind == ScenarioKind::Xadd {
            out.extend_from_slice(&self.xadd);
            return Op::Post;
        }
        let op = match self.kind {
            ScenarioKind::Post | ScenarioKind::Hot => Op::Post,
            ScenarioKind::Read => Op::Read,
            ScenarioKind::Mix => {
                if rng.below(100) < u64::from(self.read_percent) {
                    Op::Read
                } else {
                    Op::Post
                }
            }
            ScenarioKind::Url | ScenarioKind::Tail | ScenarioKind::Xadd => Op::Get,
        };
        match op {
            Op::Get => self.http.get(out, &[self.url.as_bytes()]),
            Op::Read | Op::Post => {
                let thread = if self.kind == ScenarioKind::Hot {
                    &self.threads[0]
                } else {
                    &self.threads[rng.below(self.threads.len() as u64) as usize]
                };
                let path: [&[u8]; 3] = [
                    b"/frontend/v1/threads/",
                    thread.as_bytes(),
                    if op == Op::Read {
                        b"/messages?limit=50"
                    } else {
                        b"/messages"
                    },
                ];
                if op == Op::Read {
                    self.http.get(out, &path);
                } else {
                    self.http.post_json(out, &path, &self.post_body);
                }
            }
        }
        op
    }

    /// A tail post: slot `seq` goes to thread `seq % threads`, so the
    /// subscribers of each thread know which posts to expect. Written in
    /// pieces to allocate nothing.
    fn build_tail_post(&self, stamp: Stamp, out: &mut Vec<u8>) {
        let thread = &self.threads[(stamp.seq % self.threads.len() as u64) as usize];
        let length = TAIL_OPEN.len()
            + SEQ_KEY.len()
            + digits(stamp.seq)
            + 1
            + AT_KEY.len()
            + digits(stamp.at_us)
            + TAIL_TEXT.len();
        let path: [&[u8]; 3] = [b"/frontend/v1/threads/", thread.as_bytes(), b"/messages"];
        self.http.start(out, b"POST ", &path);
        let _ = write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        out.extend_from_slice(TAIL_OPEN);
        out.extend_from_slice(SEQ_KEY);
        let _ = write!(out, "{},", stamp.seq);
        out.extend_from_slice(AT_KEY);
        let _ = write!(out, "{}", stamp.at_us);
        out.extend_from_slice(TAIL_TEXT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_uniform_enough() {
        let mut a = Rng::new(7, 3);
        let mut b = Rng::new(7, 3);
        let mut c = Rng::new(7, 4);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[a.below(10) as usize] += 1;
        }
        for count in buckets {
            assert!((9_000..11_000).contains(&count), "{buckets:?}");
        }
    }

    #[test]
    fn builds_requests() {
        let http = Http::new("db:1", Some("k"), "u", &["X-Extra: 1".to_string()]);
        let workload = Workload {
            kind: ScenarioKind::Mix,
            http,
            threads: vec!["t1".into(), "t2".into()],
            read_percent: 50,
            url: String::new(),
            post_body: message_body(5),
            xadd: Vec::new(),
        };
        let mut rng = Rng::new(1, 1);
        let mut saw = (false, false);
        for _ in 0..64 {
            let mut out = Vec::new();
            let text = match workload.build(&mut rng, Stamp::default(), &mut out) {
                Op::Read => {
                    saw.0 = true;
                    String::from_utf8(out).unwrap()
                }
                Op::Post => {
                    saw.1 = true;
                    String::from_utf8(out).unwrap()
                }
                Op::Get => unreachable!(),
            };
            assert!(text.contains(
                "\r\nHost: db:1\r\nAuthorization: Bearer k\r\nX-User-ID: u\r\nX-Extra: 1\r\n"
            ));
            if text.starts_with("GET ") {
                assert!(text.starts_with("GET /frontend/v1/threads/t"));
                assert!(text.contains("/messages?limit=50 HTTP/1.1\r\n"));
                assert!(text.ends_with("X-User-ID: u\r\nX-Extra: 1\r\n\r\n"));
            } else {
                let body = r#"{"body":{"text":"a ben"},"role":"user"}"#;
                assert!(text.starts_with("POST /frontend/v1/threads/t"));
                assert!(text.contains(&format!("Content-Length: {}\r\n\r\n{body}", body.len())));
            }
        }
        assert_eq!(saw, (true, true));
    }

    #[test]
    fn tail_posts_carry_their_stamp() {
        let workload = Workload {
            kind: ScenarioKind::Tail,
            http: Http::new("db:1", None, "u", &[]),
            threads: vec!["t0".into(), "t1".into(), "t2".into()],
            read_percent: 0,
            url: String::new(),
            post_body: Vec::new(),
            xadd: Vec::new(),
        };
        for (seq, at_us) in [(0, 0), (7, 9), (10, 123_456_789), (u64::MAX, 1)] {
            let mut out = Vec::new();
            let stamp = Stamp { seq, at_us };
            assert_eq!(
                workload.build(&mut Rng::new(1, 1), stamp, &mut out),
                Op::Post
            );
            let text = String::from_utf8(out).unwrap();
            let thread = format!("POST /frontend/v1/threads/t{}/messages ", seq % 3);
            assert!(text.starts_with(&thread), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            let parsed: serde_json::Value = serde_json::from_str(body).expect("valid JSON");
            assert_eq!(parsed["body"]["bench_seq"], seq);
            // The stamp is found again inside the message JSON of an event.
            let event = format!(
                r#"{{"id":"x","thread":"t","ts":5,"body":{}}}"#,
                parsed["body"]
            );
            assert_eq!(parse_stamp(event.as_bytes()), Some(stamp));
        }
        assert_eq!(parse_stamp(br#"{"body":{"text":"hi"}}"#), None);
        assert_eq!(parse_stamp(br#"{"body":{"bench_seq":x}}"#), None);
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(u64::MAX), 20);
    }
}
