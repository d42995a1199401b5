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
    /// Server-sent events tail (not supported yet).
    Tail,
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
    const WORDS: &str = "a benchmark message with some ordinary chat text ";
    let text: String = WORDS.chars().cycle().take(text_bytes).collect();
    serde_json::json!({ "body": { "text": text }, "role": "user" })
        .to_string()
        .into_bytes()
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
}

impl Workload {
    /// Writes the next request into `out` (cleared by the caller).
    pub fn build(&self, rng: &mut Rng, out: &mut Vec<u8>) -> Op {
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
            ScenarioKind::Url | ScenarioKind::Tail => Op::Get,
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
        };
        let mut rng = Rng::new(1, 1);
        let mut saw = (false, false);
        for _ in 0..64 {
            let mut out = Vec::new();
            let text = match workload.build(&mut rng, &mut out) {
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
}
