//! Incremental, stateless request framing on top of `httparse`.
//!
//! [`parse_request`] looks at everything buffered so far and says whether a
//! whole request is there. Calling it again after more bytes arrive costs a
//! re-scan of the head (bounded by `head_bytes_max`) and of chunk framing,
//! which keeps the connection loop free of parser state.

use super::{HttpError, Method, Request};

/// Limits applied while framing, each answered with its own status.
#[derive(Debug, Clone)]
pub struct HeadLimits {
    pub head_bytes_max: usize,
    pub header_count_max: usize,
    pub body_bytes_max: usize,
}

#[derive(Debug)]
pub enum Parse {
    /// More bytes are needed. `expect_continue` is true when the head is
    /// complete, asked for `100-continue`, and the body is still missing.
    Partial {
        expect_continue: bool,
    },
    /// A whole request; the first `consumed` bytes of the buffer were it.
    Complete {
        request: Request,
        consumed: usize,
    },
    Error(HttpError),
}

/// Header slots on the stack; `header_count_max` is capped to this.
const HEADER_SLOTS: usize = 128;
/// Longest chunk-size line (size, extensions) we wait for.
const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Hex digits of a chunk size; 15 keeps the value far from overflow.
const CHUNK_SIZE_DIGITS_MAX: usize = 15;

enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

pub fn parse_request(buf: &[u8], limits: &HeadLimits) -> Parse {
    match parse(buf, limits) {
        Ok(Some((request, consumed))) => Parse::Complete { request, consumed },
        Ok(None) => Parse::Partial {
            expect_continue: false,
        },
        Err(Incomplete::Body { expect_continue }) => Parse::Partial { expect_continue },
        Err(Incomplete::Error(err)) => Parse::Error(err),
    }
}

/// Internal early exits: a body still arriving, or a framing error.
enum Incomplete {
    Body { expect_continue: bool },
    Error(HttpError),
}

impl From<HttpError> for Incomplete {
    fn from(err: HttpError) -> Self {
        Incomplete::Error(err)
    }
}

fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<(Request, usize)>, Incomplete> {
    // RFC 9112 2.2: ignore empty lines before a request line.
    let skipped = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let data = &buf[skipped..];
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut parsed =
        httparse::Request::new(&mut slots[..limits.header_count_max.min(HEADER_SLOTS)]);
    let head_len = match parsed.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if skipped + data.len() > limits.head_bytes_max {
                return Err(HttpError::HeadTooLarge.into());
            }
            return Ok(None);
        }
        Err(err) => return Err(head_error(err).into()),
    };
    if skipped + head_len > limits.head_bytes_max {
        return Err(HttpError::HeadTooLarge.into());
    }
    let version = parsed.version.unwrap_or(1);
    let method = match parsed.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let target = parsed.path.unwrap_or("");
    if !target.starts_with('/') {
        return Err(HttpError::Malformed("request target must be an absolute path").into());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let headers: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|header| (header.name.to_ascii_lowercase(), header.value.to_vec()))
        .collect();
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    };
    let framing = framing(
        values("transfer-encoding").collect(),
        values("content-length").collect(),
        limits,
    )?;
    let expect_continue = values("expect").any(|value| value == "100-continue");
    let connection_has =
        |token: &str| values("connection").any(|value| value.split(',').any(|t| t.trim() == token));
    let keep_alive = if version == 1 {
        !connection_has("close")
    } else {
        connection_has("keep-alive")
    };

    let body_start = skipped + head_len;
    let rest = &buf[body_start..];
    let (body, body_len) = match framing {
        Framing::Empty => (Vec::new(), 0),
        Framing::Length(length) => {
            if rest.len() < length {
                return Err(Incomplete::Body { expect_continue });
            }
            (rest[..length].to_vec(), length)
        }
        Framing::Chunked => {
            // First pass only checks framing; the body is copied once, when whole.
            match dechunk(rest, limits, None)? {
                None => return Err(Incomplete::Body { expect_continue }),
                Some(_) => {
                    let mut body = Vec::new();
                    let used = dechunk(rest, limits, Some(&mut body))?.unwrap_or(0);
                    (body, used)
                }
            }
        }
    };
    let request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
        keep_alive,
    };
    Ok(Some((request, body_start + body_len)))
}

fn head_error(err: httparse::Error) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::HeadTooLarge,
        httparse::Error::Version => HttpError::UnsupportedVersion,
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Token => HttpError::Malformed("invalid method or request target"),
        httparse::Error::Status => HttpError::Malformed("invalid request line"),
    }
}

/// RFC 9112 6.1-6.3: `chunked` alone, or one agreed `Content-Length`.
fn framing(
    transfer_encodings: Vec<String>,
    content_lengths: Vec<String>,
    limits: &HeadLimits,
) -> Result<Framing, HttpError> {
    if !transfer_encodings.is_empty() {
        if !content_lengths.is_empty() {
            return Err(HttpError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        let codings: Vec<&str> = transfer_encodings
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        return if codings == ["chunked"] {
            Ok(Framing::Chunked)
        } else {
            Err(HttpError::UnsupportedTransferEncoding)
        };
    }
    let mut length = None;
    for value in &content_lengths {
        let valid =
            !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit());
        let parsed: u64 = match value.parse() {
            Ok(parsed) if valid => parsed,
            _ => return Err(HttpError::Malformed("invalid Content-Length")),
        };
        if length.is_some_and(|known| known != parsed) {
            return Err(HttpError::Malformed("conflicting Content-Length headers"));
        }
        length = Some(parsed);
    }
    match length {
        None | Some(0) => Ok(Framing::Empty),
        Some(length) if length > limits.body_bytes_max as u64 => Err(HttpError::BodyTooLarge),
        Some(length) => Ok(Framing::Length(length as usize)),
    }
}

fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|pair| pair == b"\r\n")
}

/// Walks chunked framing. `Ok(None)` while incomplete; `Ok(Some(used))`
/// with the bytes the framing took once the last chunk and trailers are in.
/// Appends chunk data to `body` when given.
fn dechunk(
    data: &[u8],
    limits: &HeadLimits,
    mut body: Option<&mut Vec<u8>>,
) -> Result<Option<usize>, HttpError> {
    let mut pos = 0;
    let mut decoded = 0usize;
    loop {
        let Some(line_len) = find_crlf(&data[pos..]) else {
            if data.len() - pos > CHUNK_LINE_BYTES_MAX {
                return Err(HttpError::Malformed("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = &data[pos..pos + line_len];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_text = size_text.trim_ascii();
        if size_text.is_empty()
            || size_text.len() > CHUNK_SIZE_DIGITS_MAX
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(HttpError::Malformed("invalid chunk size"));
        }
        let size = size_text.iter().fold(0usize, |acc, &digit| {
            acc * 16 + (digit as char).to_digit(16).unwrap_or(0) as usize
        });
        pos += line_len + 2;
        if size == 0 {
            return trailers(data, pos, limits);
        }
        decoded += size;
        if decoded > limits.body_bytes_max {
            return Err(HttpError::BodyTooLarge);
        }
        if data.len() < pos + size + 2 {
            return Ok(None);
        }
        if let Some(body) = body.as_deref_mut() {
            body.extend_from_slice(&data[pos..pos + size]);
        }
        pos += size;
        if &data[pos..pos + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk data not followed by CRLF"));
        }
        pos += 2;
    }
}

/// Skips trailer fields after the last chunk, up to the empty line.
fn trailers(data: &[u8], mut pos: usize, limits: &HeadLimits) -> Result<Option<usize>, HttpError> {
    let start = pos;
    loop {
        let Some(line_len) = find_crlf(&data[pos..]) else {
            if data.len() - start > limits.head_bytes_max {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(None);
        };
        pos += line_len + 2;
        if line_len == 0 {
            return Ok(Some(pos));
        }
        if pos - start > limits.head_bytes_max {
            return Err(HttpError::HeadTooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            head_bytes_max: 1024,
            header_count_max: 16,
            body_bytes_max: 64,
        }
    }

    fn complete(bytes: &[u8]) -> (Request, usize) {
        match parse_request(bytes, &limits()) {
            Parse::Complete { request, consumed } => (request, consumed),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn error(bytes: &[u8]) -> HttpError {
        match parse_request(bytes, &limits()) {
            Parse::Error(err) => err,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let bytes = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nX-User-ID: u1\r\n\r\n";
        let (request, consumed) = complete(bytes);
        assert_eq!(consumed, bytes.len());
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/a/b");
        assert_eq!(request.query, "x=1&y=2");
        assert_eq!(request.header("x-user-id"), Some("u1"));
        assert!(request.keep_alive && request.body.is_empty());
    }

    // Every prefix of a request is Partial; the whole is Complete.
    #[test]
    fn content_length_body_arrives_in_pieces() {
        let bytes = b"POST /m HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    parse_request(&bytes[..cut], &limits()),
                    Parse::Partial { .. }
                ),
                "prefix {cut}"
            );
        }
        assert_eq!(complete(bytes).0.body, b"hello world");
    }

    #[test]
    fn pipelined_requests_are_consumed_one_by_one() {
        let first = b"POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab".to_vec();
        let second = b"GET /2 HTTP/1.1\r\n\r\n".to_vec();
        let third = b"\r\nDELETE /3 HTTP/1.1\r\n\r\n".to_vec();
        let stream = [first.clone(), second.clone(), third.clone()].concat();
        let (request, consumed) = complete(&stream);
        assert_eq!((request.path.as_str(), consumed), ("/1", first.len()));
        let (request, consumed) = complete(&stream[first.len()..]);
        assert_eq!((request.path.as_str(), consumed), ("/2", second.len()));
        let (request, consumed) = complete(&stream[first.len() + second.len()..]);
        assert_eq!((request.method, consumed), (Method::Delete, third.len()));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let bytes = b"POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nGET";
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"hello world");
        assert_eq!(consumed, bytes.len() - 3);
        for cut in 0..consumed {
            assert!(
                matches!(
                    parse_request(&bytes[..cut], &limits()),
                    Parse::Partial { .. }
                ),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn framing_errors() {
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            HttpError::Malformed("invalid chunk size")
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n"),
            HttpError::Malformed("chunk data not followed by CRLF")
        );
        assert!(matches!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            error(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n"),
            HttpError::BodyTooLarge
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n"),
            HttpError::BodyTooLarge
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HttpError::UnsupportedTransferEncoding
        );
        assert_eq!(
            error(b"GET / HTTP/2.0\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert!(matches!(
            error(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            error(b"\x00\x01 / HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
    }

    #[test]
    fn head_limits() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(error(long.as_bytes()), HttpError::HeadTooLarge);
        assert_eq!(error(&long.as_bytes()[..1500]), HttpError::HeadTooLarge);
        let many: String = (0..20).map(|n| format!("H{n}: v\r\n")).collect();
        assert_eq!(
            error(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            HttpError::HeadTooLarge
        );
        assert_eq!(
            error("\r\n".repeat(600).as_bytes()),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn keep_alive_matrix() {
        let cases: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                complete(bytes).0.keep_alive,
                expected,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn expect_continue_only_while_the_body_is_missing() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-Continue\r\n\r\n";
        assert!(matches!(
            parse_request(head, &limits()),
            Parse::Partial {
                expect_continue: true
            }
        ));
        assert!(matches!(
            parse_request(&head[..10], &limits()),
            Parse::Partial {
                expect_continue: false
            }
        ));
        let whole = [head.as_slice(), b"ok"].concat();
        assert_eq!(complete(&whole).0.body, b"ok");
    }

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    // A stream of random valid requests, cut at random points, parses to the
    // same requests as the uncut stream; random bytes never panic.
    #[test]
    fn randomized_splits_and_garbage() {
        let seed = 0x5eed_u64;
        let mut rng = Rng(seed);
        for round in 0..300 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let body: Vec<u8> = (0..rng.below(40))
                    .map(|_| b'a' + rng.below(26) as u8)
                    .collect();
                if rng.below(2) == 0 {
                    stream.extend(
                        format!(
                            "POST /p{} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                            rng.below(99),
                            body.len()
                        )
                        .bytes(),
                    );
                    stream.extend(&body);
                } else {
                    stream.extend(
                        b"PUT /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                            .iter()
                            .copied(),
                    );
                    for piece in body.chunks(1 + rng.below(7)) {
                        stream.extend(format!("{:x}\r\n", piece.len()).bytes());
                        stream.extend(piece);
                        stream.extend(b"\r\n");
                    }
                    stream.extend(b"0\r\n\r\n");
                }
                expected.push(body);
            }
            let mut buffer = Vec::new();
            let mut fed = 0;
            let mut got = Vec::new();
            while fed < stream.len() || !buffer.is_empty() {
                let step = 1 + rng.below(16);
                let end = (fed + step).min(stream.len());
                buffer.extend_from_slice(&stream[fed..end]);
                fed = end;
                loop {
                    match parse_request(&buffer, &limits()) {
                        Parse::Complete { request, consumed } => {
                            got.push(request.body);
                            buffer.drain(..consumed);
                        }
                        Parse::Partial { .. } => break,
                        Parse::Error(err) => panic!("seed {seed} round {round}: {err:?}"),
                    }
                }
                if fed == stream.len() && !buffer.is_empty() {
                    panic!("seed {seed} round {round}: leftover bytes");
                }
            }
            assert_eq!(got, expected, "seed {seed} round {round}");
        }
        for _ in 0..5000 {
            let garbage: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            let _ = parse_request(&garbage, &limits());
        }
    }
}
