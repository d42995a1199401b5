//! Incremental, stateless request framing on top of `httparse`.
//!
//! [`parse_request`] looks at everything buffered so far and says whether a
//! whole request is there. Calling it again after more bytes arrive re-scans
//! the head (bounded by `head_bytes_max`) and the chunk framing; in exchange
//! the connection loop keeps no parser state. Every limit is checked so that
//! the verdict does not depend on how the bytes were split across reads.

use std::ops::Range;

use super::{Headers, HttpError, Method, Request};

/// Limits applied while framing, each answered with its own status.
#[derive(Debug, Clone)]
pub struct HeadLimits {
    /// Request line, headers and the blank line after them; also bounds the
    /// trailer section of a chunked body.
    pub head_bytes_max: usize,
    /// Capped at 128, the header slots kept on the stack.
    pub header_count_max: usize,
    /// Declared `Content-Length` or decoded chunked size.
    pub body_bytes_max: usize,
}

#[derive(Debug)]
pub enum Parse {
    /// More bytes are needed. `expect_continue` is true when the head is
    /// complete, the request carries `Expect: 100-continue`, and the body has
    /// not fully arrived yet (the connection then sends
    /// `HTTP/1.1 100 Continue` once).
    Partial {
        expect_continue: bool,
    },
    /// A whole request; `consumed` bytes of the buffer belong to it
    /// (pipelined requests follow).
    Complete {
        request: Request,
        consumed: usize,
    },
    Error(HttpError),
}

/// Header slots on the stack; `header_count_max` is capped to this.
const HEADER_SLOTS: usize = 128;
/// Longest chunk-size line (size plus extensions, without CRLF) accepted, so
/// a client cannot make us buffer an endless extension.
const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// 16 hex digits fill a u64; more can only be padding or an overflow attempt.
const CHUNK_SIZE_DIGITS_MAX: usize = 16;

pub fn parse_request(buf: &[u8], limits: &HeadLimits) -> Parse {
    match parse(buf, limits) {
        Ok(Progress::Done { request, consumed }) => Parse::Complete { request, consumed },
        Ok(Progress::NeedMore { expect_continue }) => Parse::Partial { expect_continue },
        Err(err) => Parse::Error(err),
    }
}

enum Progress {
    Done { request: Request, consumed: usize },
    NeedMore { expect_continue: bool },
}

enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Progress, HttpError> {
    // httparse only ever sees the bytes a legal head may occupy, so a head
    // that is too long reads as "incomplete" no matter how it was split, and
    // the scan cost stays bounded. httparse itself skips (and counts) the
    // empty lines RFC 9112 2.2 allows before the request line.
    let window = &buf[..buf.len().min(limits.head_bytes_max)];
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut head = httparse::Request::new(&mut slots[..limits.header_count_max.min(HEADER_SLOTS)]);
    let head_len = match head.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > window.len() => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => {
            return Ok(Progress::NeedMore {
                expect_continue: false,
            });
        }
        Err(httparse::Error::Version) => return Err(version_error(window)),
        Err(err) => return Err(head_error(err)),
    };

    let http11 = match head.version {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(HttpError::UnsupportedVersion),
    };
    let method = match head.method.unwrap_or_default() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    // Only origin-form: we are no proxy, and `OPTIONS *` has no route.
    let target = head.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(HttpError::Malformed(
            "request target must be an absolute path",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let fields: &[httparse::Header<'_>] = head.headers;
    let framing = body_framing(fields, limits)?;
    let keep_alive = if http11 {
        !has_token(fields, "connection", b"close")
    } else {
        // RFC 9112 6.1: chunked framing in an HTTP/1.0 message may have passed
        // an intermediary that does not know it; serve it, then close.
        has_token(fields, "connection", b"keep-alive") && !matches!(framing, Framing::Chunked)
    };
    // RFC 9110 10.1.1: an HTTP/1.0 client cannot understand a 100 response.
    let expect_continue = http11
        && values(fields, "expect")
            .any(|value| value.trim_ascii().eq_ignore_ascii_case(b"100-continue"));

    let rest = &buf[head_len..];
    let (body, body_len) = match framing {
        Framing::Empty => (Vec::new(), 0),
        Framing::Length(length) => match rest.get(..length) {
            Some(body) => (body.to_vec(), length),
            None => return Ok(Progress::NeedMore { expect_continue }),
        },
        Framing::Chunked => match dechunk(rest, limits)? {
            Some(decoded) => decoded,
            None => return Ok(Progress::NeedMore { expect_continue }),
        },
    };
    let request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers: collect_headers(fields),
        body,
        keep_alive,
        http11,
    };
    Ok(Progress::Done {
        request,
        consumed: head_len + body_len,
    })
}

fn collect_headers(fields: &[httparse::Header<'_>]) -> Headers {
    let bytes = fields
        .iter()
        .map(|field| field.name.len() + field.value.len())
        .sum();
    let mut headers = Headers::with_capacity(fields.len(), bytes);
    for field in fields {
        headers.push(field.name, field.value);
    }
    headers
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

/// httparse reports any bad version token the same way; only something that
/// looks like an HTTP version deserves 505, the rest is a garbled line.
fn version_error(window: &[u8]) -> HttpError {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = &window[start..];
    let end = line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let line = &line[..end];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    // `GET /a b HTTP/1.1`: httparse ends the target at the first space and
    // reads the rest as the version; the version is fine, the target is not.
    if line.split(|&b| b == b' ').count() > 3 {
        return HttpError::Malformed("request target must not contain spaces");
    }
    match version.strip_prefix(b"HTTP/") {
        Some([first, rest @ ..])
            if first.is_ascii_digit() && rest.iter().all(|&b| b.is_ascii_digit() || b == b'.') =>
        {
            HttpError::UnsupportedVersion
        }
        _ => HttpError::Malformed("invalid HTTP version"),
    }
}

/// Values of every field with this (lower-case) name, in order.
fn values<'a>(
    fields: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> {
    fields
        .iter()
        .filter(move |field| field.name.eq_ignore_ascii_case(name))
        .map(|field| field.value)
}

/// Elements of a comma-separated field list, trimmed, empty ones dropped
/// (RFC 9110 5.6.1 lets senders leave them).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

fn has_token(fields: &[httparse::Header<'_>], name: &'static str, token: &[u8]) -> bool {
    values(fields, name)
        .flat_map(list_elements)
        .any(|element| element.eq_ignore_ascii_case(token))
}

/// RFC 9112 6.1-6.3: `chunked` alone, or one agreed `Content-Length`.
fn body_framing(
    fields: &[httparse::Header<'_>],
    limits: &HeadLimits,
) -> Result<Framing, HttpError> {
    let has_transfer_encoding = values(fields, "transfer-encoding").next().is_some();
    let mut length: Option<u64> = None;
    for value in values(fields, "content-length") {
        // RFC 9110 8.6 allows `42, 42`, so a list is fine as long as it agrees.
        for element in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let parsed =
                parse_decimal(element).ok_or(HttpError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(HttpError::Malformed("conflicting Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    if has_transfer_encoding {
        // The classic request-smuggling ambiguity; refuse rather than pick one.
        if length.is_some() {
            return Err(HttpError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        let mut codings = values(fields, "transfer-encoding").flat_map(list_elements);
        return match (codings.next(), codings.next()) {
            (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            (None, _) => Err(HttpError::Malformed("empty Transfer-Encoding")),
            _ => Err(HttpError::UnsupportedTransferEncoding),
        };
    }
    match length {
        None | Some(0) => Ok(Framing::Empty),
        Some(length) => usize::try_from(length)
            .ok()
            .filter(|&length| length <= limits.body_bytes_max)
            .map(Framing::Length)
            .ok_or(HttpError::BodyTooLarge),
    }
}

/// `1*DIGIT` into a u64; `None` for anything else, including overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Walks chunked framing: `Ok(None)` while incomplete, otherwise the decoded
/// body and the bytes the framing took, trailers included.
fn dechunk(data: &[u8], limits: &HeadLimits) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    // Ranges rather than a growing body: most calls end incomplete, and
    // copying only at the end keeps those calls cheap.
    let mut pieces: Vec<Range<usize>> = Vec::new();
    let mut decoded = 0usize;
    let mut pos = 0;
    loop {
        let (line, line_bytes) = match crlf_line(&data[pos..], CHUNK_LINE_BYTES_MAX + 2)? {
            Line::Complete { content, bytes } => (content, bytes),
            Line::Incomplete => return Ok(None),
            Line::TooLong => return Err(HttpError::Malformed("chunk size line too long")),
        };
        let size = chunk_size(line)?;
        pos += line_bytes;
        if size == 0 {
            let Some(end) = skip_trailers(data, pos, limits.head_bytes_max)? else {
                return Ok(None);
            };
            let mut body = Vec::with_capacity(decoded);
            for piece in pieces {
                body.extend_from_slice(&data[piece]);
            }
            return Ok(Some((body, end)));
        }
        // Checked before the data arrives, so an oversized upload is refused
        // without being buffered.
        decoded = decoded
            .checked_add(size)
            .filter(|&total| total <= limits.body_bytes_max)
            .ok_or(HttpError::BodyTooLarge)?;
        let data_end = pos.saturating_add(size);
        match data.get(data_end..) {
            Some([b'\r', b'\n', ..]) => {}
            None | Some([] | [b'\r']) => return Ok(None),
            Some(_) => return Err(HttpError::Malformed("chunk data not followed by CRLF")),
        }
        pieces.push(pos..data_end);
        pos = data_end + 2;
    }
}

/// `chunk-size [ chunk-ext ]`; extensions carry nothing we use.
fn chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty()
        || digits.len() > CHUNK_SIZE_DIGITS_MAX
        || !digits.iter().all(u8::is_ascii_hexdigit)
    {
        return Err(HttpError::Malformed("invalid chunk size"));
    }
    let size = digits.iter().fold(0u64, |acc, &b| {
        (acc << 4) | u64::from(char::from(b).to_digit(16).unwrap_or_default())
    });
    usize::try_from(size).map_err(|_| HttpError::BodyTooLarge)
}

/// Skips trailer fields up to the blank line; the whole section, blank line
/// included, must fit in `budget` bytes. Returns the end offset in `data`.
fn skip_trailers(data: &[u8], start: usize, budget: usize) -> Result<Option<usize>, HttpError> {
    let mut pos = start;
    loop {
        let remaining = budget - (pos - start);
        match crlf_line(&data[pos..], remaining)? {
            Line::Complete { content, bytes } => {
                pos += bytes;
                if content.is_empty() {
                    return Ok(Some(pos));
                }
            }
            Line::Incomplete => return Ok(None),
            Line::TooLong => return Err(HttpError::HeadTooLarge),
        }
    }
}

enum Line<'a> {
    /// `bytes` counts the CRLF too.
    Complete {
        content: &'a [u8],
        bytes: usize,
    },
    Incomplete,
    /// The line and its CRLF cannot fit in the limit, however it ends.
    TooLong,
}

/// One CRLF-terminated line at the start of `data`, at most `limit` bytes
/// with its CRLF. Inside chunked framing a bare CR or LF is an error: parsers
/// that disagree on such lines are how bodies get smuggled.
fn crlf_line(data: &[u8], limit: usize) -> Result<Line<'_>, HttpError> {
    let scan = &data[..data.len().min(limit)];
    let Some(newline) = scan.iter().position(|&b| b == b'\n') else {
        return Ok(if data.len() >= limit {
            Line::TooLong
        } else {
            Line::Incomplete
        });
    };
    match scan[..newline].split_last() {
        Some((b'\r', content)) if !content.contains(&b'\r') => Ok(Line::Complete {
            content,
            bytes: newline + 1,
        }),
        _ => Err(HttpError::Malformed(
            "chunked framing line not ended by CRLF",
        )),
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

    fn parse_with(bytes: &[u8]) -> Parse {
        parse_request(bytes, &limits())
    }

    fn complete(bytes: &[u8]) -> (Request, usize) {
        match parse_with(bytes) {
            Parse::Complete { request, consumed } => (request, consumed),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn error(bytes: &[u8]) -> HttpError {
        match parse_with(bytes) {
            Parse::Error(err) => err,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn is_partial(bytes: &[u8]) -> bool {
        matches!(parse_with(bytes), Parse::Partial { .. })
    }

    /// Everything a request carries, comparable.
    type Summary = (Method, String, String, Headers, Vec<u8>, bool);

    fn summary(request: Request) -> Summary {
        (
            request.method,
            request.path,
            request.query,
            request.headers,
            request.body,
            request.keep_alive,
        )
    }

    #[test]
    fn simple_get() {
        let bytes = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nX-User-ID: u1\r\n\r\n";
        let (request, consumed) = complete(bytes);
        assert_eq!(consumed, bytes.len());
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/a/b");
        assert_eq!(request.query, "x=1&y=2");
        assert_eq!(
            request.headers,
            [("host", "h"), ("x-user-id", "u1")]
                .into_iter()
                .collect::<Headers>()
        );
        assert_eq!(request.header("x-user-id"), Some("u1"));
        assert!(request.keep_alive);
        assert!(request.body.is_empty());
    }

    #[test]
    fn methods_and_targets() {
        let cases = [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Other),
            ("get", Method::Other),
        ];
        for (name, method) in cases {
            let bytes = format!("{name} /x HTTP/1.1\r\n\r\n");
            assert_eq!(complete(bytes.as_bytes()).0.method, method, "{name}");
        }
        let (request, _) = complete(b"GET /p?a=1?b#c HTTP/1.1\r\n\r\n");
        assert_eq!(
            (request.path.as_str(), request.query.as_str()),
            ("/p", "a=1?b#c")
        );
        let (request, _) = complete(b"GET /p? HTTP/1.1\r\n\r\n");
        assert_eq!((request.path.as_str(), request.query.as_str()), ("/p", ""));
        assert!(matches!(
            error(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            error(b"OPTIONS * HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_consumed() {
        let bytes = b"\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
        let (request, consumed) = complete(bytes);
        assert_eq!((request.path.as_str(), consumed), ("/x", bytes.len()));
        assert!(is_partial(b"\r\n"));
        assert!(is_partial(b"\r\n\r"));
    }

    // Every prefix of a request is Partial; the whole is Complete.
    #[test]
    fn content_length_body_arrives_in_pieces() {
        let bytes = b"POST /m HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
        for cut in 0..bytes.len() {
            assert!(is_partial(&bytes[..cut]), "prefix {cut}");
        }
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"hello world");
        assert_eq!(consumed, bytes.len());
        let (request, _) = complete(b"POST /m HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok");
        assert_eq!(request.body, b"ok");
        let (request, _) =
            complete(b"POST /m HTTP/1.1\r\nContent-Length: 02\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(request.body, b"ok");
    }

    #[test]
    fn two_pipelined_requests() {
        let first = b"POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab".to_vec();
        let second = b"GET /2 HTTP/1.1\r\n\r\n".to_vec();
        let stream = [first.clone(), second.clone()].concat();
        let (request, consumed) = complete(&stream);
        assert_eq!((request.path.as_str(), consumed), ("/1", first.len()));
        assert_eq!(request.body, b"ab");
        let (request, consumed) = complete(&stream[consumed..]);
        assert_eq!((request.path.as_str(), consumed), ("/2", second.len()));
    }

    #[test]
    fn three_pipelined_requests() {
        let first = b"POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab".to_vec();
        let second =
            b"PUT /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n".to_vec();
        let third = b"\r\nDELETE /3 HTTP/1.1\r\n\r\n".to_vec();
        let stream = [first.clone(), second.clone(), third.clone()].concat();
        let mut offset = 0;
        let mut seen = Vec::new();
        while offset < stream.len() {
            let (request, consumed) = complete(&stream[offset..]);
            seen.push((request.method, request.path, request.body, consumed));
            offset += consumed;
        }
        assert_eq!(
            seen,
            vec![
                (Method::Post, "/1".to_string(), b"ab".to_vec(), first.len()),
                (Method::Put, "/2".to_string(), b"x".to_vec(), second.len()),
                (Method::Delete, "/3".to_string(), Vec::new(), third.len()),
            ]
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let bytes = b"POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5;name=v\r\nhello\r\n6 ; a=\"b;c\"\r\n world\r\n0;last\r\nTrailer: x\r\nOther: y\r\n\r\nGET";
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"hello world");
        assert_eq!(consumed, bytes.len() - 3);
        let (request, _) =
            complete(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(request.body.is_empty());
        let (request, _) = complete(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n000A\r\n0123456789\r\n0\r\n\r\n",
        );
        assert_eq!(request.body, b"0123456789");
    }

    #[test]
    fn chunked_split_at_every_byte() {
        let bytes = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
        for cut in 0..bytes.len() {
            assert!(is_partial(&bytes[..cut]), "cut {cut}");
        }
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"abc0123456789abcdef");
        assert_eq!(consumed, bytes.len());
    }

    #[test]
    fn chunked_framing_errors() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunked = |rest: &str| error(format!("{head}{rest}").as_bytes());
        for bad_size in ["zz\r\n", "\r\n", ";ext\r\n", "-1\r\n", " 5\r\n", "0x5\r\n"] {
            assert_eq!(
                chunked(bad_size),
                HttpError::Malformed("invalid chunk size"),
                "{bad_size:?}"
            );
        }
        assert_eq!(
            chunked("11111111111111111\r\n"),
            HttpError::Malformed("invalid chunk size")
        );
        assert_eq!(chunked("ffffffffffffffff\r\n"), HttpError::BodyTooLarge);
        assert_eq!(
            chunked("2\r\nabc\r\n"),
            HttpError::Malformed("chunk data not followed by CRLF")
        );
        // Known as soon as the byte after the data is wrong.
        assert_eq!(
            chunked("2\r\nabc"),
            HttpError::Malformed("chunk data not followed by CRLF")
        );
        assert!(matches!(chunked("2\nab\r\n"), HttpError::Malformed(_)));
        assert!(matches!(
            chunked("2;a\rb\r\nab\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            chunked("0\r\nX: y\n\r\n"),
            HttpError::Malformed(_)
        ));
        let long_extension = format!("1;{}\r\n", "e".repeat(CHUNK_LINE_BYTES_MAX));
        assert_eq!(
            chunked(&long_extension),
            HttpError::Malformed("chunk size line too long")
        );
        assert_eq!(
            chunked(&long_extension[..CHUNK_LINE_BYTES_MAX + 2]),
            HttpError::Malformed("chunk size line too long")
        );
        assert!(is_partial(
            format!("{head}{}", &long_extension[..CHUNK_LINE_BYTES_MAX + 1]).as_bytes()
        ));
        let longest = format!(
            "1;{}\r\nx\r\n0\r\n\r\n",
            "e".repeat(CHUNK_LINE_BYTES_MAX - 2)
        );
        assert_eq!(complete(format!("{head}{longest}").as_bytes()).0.body, b"x");
    }

    #[test]
    fn chunked_trailers_are_bounded() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
        let limits = limits();
        let fill = |len: usize| format!("X: {}\r\n", "t".repeat(len - 5));
        // The trailer section, blank line included, may use head_bytes_max.
        let fits = format!("{head}{}\r\n", fill(limits.head_bytes_max - 2));
        assert!(matches!(
            parse_request(fits.as_bytes(), &limits),
            Parse::Complete { .. }
        ));
        let over = format!("{head}{}\r\n", fill(limits.head_bytes_max - 1));
        assert_eq!(error(over.as_bytes()), HttpError::HeadTooLarge);
        let endless = format!("{head}{}", fill(limits.head_bytes_max + 10));
        assert_eq!(error(endless.as_bytes()), HttpError::HeadTooLarge);
    }

    #[test]
    fn length_errors() {
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::Malformed("both Transfer-Encoding and Content-Length")
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"),
            HttpError::Malformed("both Transfer-Encoding and Content-Length")
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HttpError::Malformed("conflicting Content-Length values")
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"),
            HttpError::Malformed("conflicting Content-Length values")
        );
        for bad in [
            "-1",
            "+1",
            "1.0",
            "0x10",
            "",
            "1 2",
            "1,",
            "99999999999999999999",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                error(bytes.as_bytes()),
                HttpError::Malformed("invalid Content-Length"),
                "{bad:?}"
            );
        }
        // The head alone is enough to refuse an oversized body.
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n"),
            HttpError::BodyTooLarge
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"),
            HttpError::BodyTooLarge
        );
        let (request, _) = complete(
            &[
                b"POST / HTTP/1.1\r\nContent-Length: 64\r\n\r\n".as_slice(),
                &[b'x'; 64],
            ]
            .concat(),
        );
        assert_eq!(request.body.len(), 64);
    }

    #[test]
    fn chunked_body_too_large() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            error(format!("{head}41\r\n").as_bytes()),
            HttpError::BodyTooLarge
        );
        // The sum counts, and is refused before the offending chunk's data.
        let sixty = "x".repeat(60);
        assert_eq!(
            error(format!("{head}3c\r\n{sixty}\r\n5\r\n").as_bytes()),
            HttpError::BodyTooLarge
        );
        let exact = format!("{head}3c\r\n{sixty}\r\n4\r\nyyyy\r\n0\r\n\r\n");
        assert_eq!(complete(exact.as_bytes()).0.body.len(), 64);
    }

    #[test]
    fn transfer_codings() {
        for coding in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "chunked, chunked",
            "identity",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert_eq!(
                error(bytes.as_bytes()),
                HttpError::UnsupportedTransferEncoding,
                "{coding}"
            );
        }
        assert_eq!(
            error(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            HttpError::UnsupportedTransferEncoding
        );
        assert!(matches!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n"),
            HttpError::Malformed(_)
        ));
        let (request, _) =
            complete(b"POST / HTTP/1.1\r\nTransfer-Encoding:  CHUNKED \r\n\r\n1\r\nz\r\n0\r\n\r\n");
        assert_eq!(request.body, b"z");
    }

    #[test]
    fn versions() {
        assert!(complete(b"GET / HTTP/1.0\r\n\r\n").0.method == Method::Get);
        assert_eq!(
            error(b"GET / HTTP/2.0\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            error(b"GET / HTTP/1.2\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            error(b"GET / HTTP/3\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            error(b"GET / FTP/1.1\r\n\r\n"),
            HttpError::Malformed("invalid HTTP version")
        );
        assert!(matches!(
            error(b"\x00\x01 / HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        // A space inside the target is a bad target, not a bad version.
        assert_eq!(
            error(b"GET /a b HTTP/1.1\r\n\r\n"),
            HttpError::Malformed("request target must not contain spaces")
        );
    }

    #[test]
    fn head_limits() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(error(long.as_bytes()), HttpError::HeadTooLarge);
        assert_eq!(error(&long.as_bytes()[..1500]), HttpError::HeadTooLarge);
        let max = limits().head_bytes_max;
        // A head of exactly the limit is fine, one byte more is not.
        let exact = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(max - "GET / HTTP/1.1\r\nX: \r\n\r\n".len())
        );
        assert_eq!(exact.len(), max);
        assert!(matches!(
            parse_with(exact.as_bytes()),
            Parse::Complete { .. }
        ));
        let over = exact.replacen("X: ", "X: a", 1);
        assert_eq!(error(over.as_bytes()), HttpError::HeadTooLarge);
        assert!(is_partial(&over.as_bytes()[..max]));
        assert_eq!(
            error("\r\n".repeat(600).as_bytes()),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn header_count_limit() {
        let headers = |count: usize| -> String {
            let fields: String = (0..count).map(|n| format!("H{n}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\n{fields}\r\n")
        };
        assert_eq!(complete(headers(16).as_bytes()).0.headers.len(), 16);
        assert_eq!(error(headers(17).as_bytes()), HttpError::HeadTooLarge);
        let roomy = HeadLimits {
            head_bytes_max: 1 << 16,
            header_count_max: 10_000,
            body_bytes_max: 0,
        };
        assert!(matches!(
            parse_request(headers(HEADER_SLOTS).as_bytes(), &roomy),
            Parse::Complete { .. }
        ));
        assert!(matches!(
            parse_request(headers(HEADER_SLOTS + 1).as_bytes(), &roomy),
            Parse::Error(HttpError::HeadTooLarge)
        ));
    }

    #[test]
    fn keep_alive_matrix() {
        let cases: [(&[u8], bool); 10] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: te\r\nConnection: close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: foo ,keep-alive\r\n\r\n",
                true,
            ),
            (
                b"PUT / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
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
            parse_with(head),
            Parse::Partial {
                expect_continue: true
            }
        ));
        assert!(matches!(
            parse_with(&[head.as_slice(), b"o"].concat()),
            Parse::Partial {
                expect_continue: true
            }
        ));
        assert!(matches!(
            parse_with(&head[..head.len() - 1]),
            Parse::Partial {
                expect_continue: false
            }
        ));
        assert_eq!(complete(&[head.as_slice(), b"ok"].concat()).0.body, b"ok");

        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(
            parse_with(chunked),
            Parse::Partial {
                expect_continue: true
            }
        ));
        let without = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            parse_with(without),
            Parse::Partial {
                expect_continue: false
            }
        ));
        let http10 = b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(
            parse_with(http10),
            Parse::Partial {
                expect_continue: false
            }
        ));
        // Nothing to wait for: the request is complete at once.
        let (request, _) = complete(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert!(request.body.is_empty());
    }

    #[test]
    fn bare_lf_head_is_accepted_as_httparse_does() {
        let bytes = b"GET /lf HTTP/1.1\nHost: h\n\nrest";
        let (request, consumed) = complete(bytes);
        assert_eq!((request.path.as_str(), consumed), ("/lf", bytes.len() - 4));
        assert_eq!(request.header("host"), Some("h"));
    }

    use crate::rng::XorShift as Rng;

    /// A random lower-case word of 1 to `max` letters.
    fn word(rng: &mut Rng, max: usize) -> String {
        (0..1 + rng.below(max))
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect()
    }

    /// One valid request in a random shape, and the body it carries.
    fn random_request(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::new();
        for _ in 0..rng.below(3) {
            out.extend_from_slice(b"\r\n");
        }
        let method = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"][rng.below(7)];
        let version = if rng.below(4) == 0 { "1.0" } else { "1.1" };
        let query = if rng.below(2) == 0 {
            format!("?{}={}", word(rng, 5), word(rng, 5))
        } else {
            String::new()
        };
        out.extend(format!("{method} /{}{query} HTTP/{version}\r\n", word(rng, 8)).bytes());
        for _ in 0..rng.below(4) {
            out.extend(format!("X-{}: {}\r\n", word(rng, 6), word(rng, 12)).bytes());
        }
        match rng.below(3) {
            0 => out.extend_from_slice(b"Connection: close\r\n"),
            1 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            _ => {}
        }
        let body: Vec<u8> = (0..rng.below(65)).map(|_| rng.next_u64() as u8).collect();
        match rng.below(3) {
            0 if body.is_empty() => out.extend_from_slice(b"\r\n"),
            0 | 1 => {
                out.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
                out.extend_from_slice(&body);
            }
            _ => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = body.as_slice();
                while !rest.is_empty() {
                    let (piece, tail) = rest.split_at(rest.len().min(1 + rng.below(20)));
                    let extension = if rng.below(3) == 0 { ";k=v" } else { "" };
                    out.extend(format!("{:x}{extension}\r\n", piece.len()).bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                out.extend_from_slice(b"0\r\n");
                if rng.below(2) == 0 {
                    out.extend(format!("T-{}: {}\r\n", word(rng, 4), word(rng, 4)).bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        (out, body)
    }

    /// Parses a whole stream the way the connection loop does.
    fn parse_all(stream: &[u8]) -> Vec<(Summary, usize)> {
        let mut offset = 0;
        let mut parsed = Vec::new();
        while offset < stream.len() {
            let (request, consumed) = complete(&stream[offset..]);
            assert!(consumed > 0);
            parsed.push((summary(request), consumed));
            offset += consumed;
        }
        parsed
    }

    // A stream of random valid requests gives the same requests however it is
    // cut into reads.
    #[test]
    fn randomized_splits_give_identical_results() {
        let seed = 0x5eed_u64;
        let mut rng = Rng::new(seed);
        for round in 0..1500 {
            let mut stream = Vec::new();
            let mut bodies = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let (bytes, body) = random_request(&mut rng);
                stream.extend(bytes);
                bodies.push(body);
            }
            let whole = parse_all(&stream);
            let whole_bodies: Vec<&Vec<u8>> = whole.iter().map(|((.., body, _), _)| body).collect();
            assert_eq!(
                whole_bodies,
                bodies.iter().collect::<Vec<_>>(),
                "seed {seed} round {round}"
            );

            let mut buffer = Vec::new();
            let mut fed = 0;
            let mut split = Vec::new();
            while fed < stream.len() {
                let end = (fed + 1 + rng.below(24)).min(stream.len());
                buffer.extend_from_slice(&stream[fed..end]);
                fed = end;
                loop {
                    match parse_with(&buffer) {
                        Parse::Complete { request, consumed } => {
                            split.push((summary(request), consumed));
                            buffer.drain(..consumed);
                        }
                        Parse::Partial { .. } => break,
                        Parse::Error(err) => panic!("seed {seed} round {round}: {err:?}"),
                    }
                }
            }
            assert!(buffer.is_empty(), "seed {seed} round {round}: leftover");
            assert_eq!(split, whole, "seed {seed} round {round}");
        }
    }

    // Garbage and corrupted requests never panic, and whatever completes
    // completes identically on its own bytes and never on fewer.
    #[test]
    fn randomized_garbage_never_panics() {
        let seed = 0xbad_c0de_u64;
        let mut rng = Rng::new(seed);
        let mut completed = 0;
        for round in 0..4000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect()
            } else {
                let (mut bytes, _) = random_request(&mut rng);
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(bytes.len());
                    bytes[at] = match rng.below(4) {
                        0 => b'\r',
                        1 => b'\n',
                        2 => b';',
                        _ => rng.next_u64() as u8,
                    };
                }
                bytes
            };
            if let Parse::Complete { request, consumed } = parse_with(&bytes) {
                completed += 1;
                assert!(consumed > 0 && consumed <= bytes.len(), "round {round}");
                match parse_with(&bytes[..consumed]) {
                    Parse::Complete {
                        request: again,
                        consumed: again_consumed,
                    } => {
                        assert_eq!(again_consumed, consumed, "round {round}");
                        assert_eq!(summary(again), summary(request), "round {round}");
                    }
                    other => panic!("round {round}: {other:?}"),
                }
                let cut = rng.below(consumed);
                assert!(is_partial(&bytes[..cut]), "round {round} cut {cut}");
            }
        }
        // The corruptions must leave enough requests intact to test anything.
        assert!(
            completed > 200,
            "only {completed} corrupted requests completed"
        );
    }
}
