//! Minimal HTTP/1.1 client framing over one monoio `TcpStream` (and, for
//! the `xadd` baseline, one RESP reply: see [`super::resp`]).
//!
//! This module owns the wire: writing request bytes that the caller built
//! into [`Conn::request_buf`], and reading back exactly one response (status
//! line, headers, then a `Content-Length`, chunked or read-until-close body).
//! It does not retry, time out or reconnect; callers decide that, because a
//! benchmark must count every failure rather than hide it.
//!
//! Both buffers live in the connection and are reused for every request, so
//! a steady-state request allocates nothing. monoio's io_uring operations
//! take ownership of the buffer while the kernel fills it; the buffer is moved
//! out of the connection for the duration of each operation and moved back.
//! If the operation is abandoned (the caller's timeout fired) the buffer stays
//! with the runtime until the kernel is done with it, which is why a timed out
//! connection must be dropped, never reused.

use std::io;
use std::net::SocketAddr;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::resp;

/// Largest response head accepted; a bigger one is a protocol error.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body accepted. The whole body is kept in memory (the
/// setup phase needs it), so this bounds memory per connection.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Initial buffer size: a ProgressDB page of 50 messages fits comfortably.
const INITIAL_BUFFER: usize = 16 * 1024;

/// What the caller needs to know about one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The server will close (or has closed) the connection after this
    /// response; the connection must not be used again.
    pub close: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (1xx, 204, 304).
    Empty,
    Length(usize),
    Chunked,
    /// Neither length nor chunked: the body ends when the server closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head including the blank line.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    pub close: bool,
}

/// A protocol error in what the server sent (HTTP here, RESP in [`resp`]).
pub(super) fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Parses a response head at the start of `buf`. `Ok(None)` means the head
/// is not complete yet.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("response head too large"));
        }
        return Ok(None);
    };
    let len = end + 4;
    let mut lines = buf[..end].split(|&b| b == b'\n').map(trim_cr);
    let status_line = lines.next().unwrap_or_default();
    // "HTTP/1.1 200 OK": version, a space, three digits, optional reason.
    let rest = status_line
        .strip_prefix(b"HTTP/1.")
        .ok_or_else(|| invalid("bad status line"))?;
    let minor = *rest.first().ok_or_else(|| invalid("bad status line"))?;
    let code = rest.get(2..5).ok_or_else(|| invalid("bad status line"))?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return Err(invalid("bad status line"));
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    // HTTP/1.0 closes unless the server says keep-alive.
    let mut close = minor == b'0';
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(invalid("bad header line"));
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let text = std::str::from_utf8(value).map_err(|_| invalid("bad content-length"))?;
            let n: usize = text.parse().map_err(|_| invalid("bad content-length"))?;
            if n > MAX_BODY_BYTES {
                return Err(invalid("response body too large"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked is always the last coding when present.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        // RFC 9112: chunked wins over a Content-Length.
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        close,
    }))
}

/// Decodes a chunked body at the start of `buf` into `out` (cleared first).
/// Returns the bytes consumed (including the last chunk and trailers), or
/// `None` if the body is not complete yet. Chunk extensions and trailers are
/// skipped.
pub fn decode_chunked(buf: &[u8], out: &mut Vec<u8>) -> io::Result<Option<usize>> {
    out.clear();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let digits = line
            .split(|&b| b == b';')
            .next()
            .map(trim)
            .unwrap_or_default();
        if digits.is_empty() || digits.len() > 15 {
            return Err(invalid("bad chunk size"));
        }
        let mut size = 0usize;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| invalid("bad chunk size"))?;
            size = size * 16 + v as usize;
        }
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if out.len() + size > MAX_BODY_BYTES {
            return Err(invalid("response body too large"));
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Where the body of the last response lives.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// `rbuf[start..end]`.
    Read(usize, usize),
    /// The de-chunked copy in `chunked`.
    Chunked,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    /// Request bytes for the next [`Conn::round_trip`].
    wbuf: Vec<u8>,
    /// Bytes read from the socket; `rpos..` are not consumed yet.
    rbuf: Vec<u8>,
    rpos: usize,
    chunked: Vec<u8>,
    body: Body,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_addr(addr).await?;
        // Requests are single small writes; never let Nagle hold one back.
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            wbuf: Vec::with_capacity(1024),
            rbuf: Vec::with_capacity(INITIAL_BUFFER),
            rpos: 0,
            chunked: Vec::new(),
            body: Body::Read(0, 0),
        })
    }

    /// The (cleared) buffer to build the next request into.
    pub fn request_buf(&mut self) -> &mut Vec<u8> {
        self.wbuf.clear();
        &mut self.wbuf
    }

    /// Body of the response returned by the last successful round trip.
    pub fn body(&self) -> &[u8] {
        match self.body {
            Body::Read(start, end) => self.rbuf.get(start..end).unwrap_or_default(),
            Body::Chunked => &self.chunked,
        }
    }

    /// Sends the request in [`Conn::request_buf`] and reads one final
    /// response (interim 1xx responses are skipped).
    pub async fn round_trip(&mut self) -> io::Result<Reply> {
        let wbuf = std::mem::take(&mut self.wbuf);
        let (result, wbuf) = self.stream.write_all(wbuf).await;
        self.wbuf = wbuf;
        result?;
        self.read_response().await
    }

    /// Sends the request in [`Conn::request_buf`] as RESP (the `xadd`
    /// scenario, against Redis) and reads one reply: an error reply counts
    /// as status 500, any other as 200.
    pub async fn round_trip_resp(&mut self) -> io::Result<Reply> {
        let wbuf = std::mem::take(&mut self.wbuf);
        let (result, wbuf) = self.stream.write_all(wbuf).await;
        self.wbuf = wbuf;
        result?;
        self.forget_consumed();
        loop {
            if let Some(reply) = resp::parse_reply(&self.rbuf)? {
                self.rpos = reply.len;
                let status = if reply.ok { 200 } else { 500 };
                return Ok(Reply {
                    status,
                    close: false,
                });
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Drops what the previous response consumed. Without pipelining the
    /// buffer is normally fully consumed, so this is just a reset.
    fn forget_consumed(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
        } else if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
        }
        self.rpos = 0;
    }

    async fn read_response(&mut self) -> io::Result<Reply> {
        self.body = Body::Read(0, 0);
        self.forget_consumed();
        loop {
            let head = loop {
                if let Some(head) = parse_head(&self.rbuf[self.rpos..])? {
                    break head;
                }
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            };
            let start = self.rpos + head.len;
            match head.framing {
                Framing::Empty => {
                    self.rpos = start;
                    if head.status < 200 && head.status != 101 {
                        continue; // 100 Continue and friends: the real answer follows.
                    }
                    self.body = Body::Read(start, start);
                }
                Framing::Length(n) => {
                    while self.rbuf.len() < start + n {
                        if self.fill().await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    self.rpos = start + n;
                    self.body = Body::Read(start, start + n);
                }
                Framing::Chunked => loop {
                    if let Some(used) = decode_chunked(&self.rbuf[start..], &mut self.chunked)? {
                        self.rpos = start + used;
                        self.body = Body::Chunked;
                        break;
                    }
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                },
                Framing::UntilClose => {
                    while self.fill().await? > 0 {
                        if self.rbuf.len() - start > MAX_BODY_BYTES {
                            return Err(invalid("response body too large"));
                        }
                    }
                    self.rpos = self.rbuf.len();
                    self.body = Body::Read(start, self.rpos);
                }
            }
            return Ok(Reply {
                status: head.status,
                close: head.close,
            });
        }
    }

    /// Reads more bytes into the spare capacity of `rbuf`; 0 means EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.rbuf.len() == self.rbuf.capacity() {
            let grow = self.rbuf.capacity().max(INITIAL_BUFFER);
            self.rbuf.reserve(grow);
        }
        let rbuf = std::mem::take(&mut self.rbuf);
        let len = rbuf.len();
        let (result, slice) = self.stream.read(rbuf.slice_mut(len..)).await;
        self.rbuf = slice.into_inner();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_head() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.framing, Framing::Length(7));
        assert!(!head.close);
        assert_eq!(&raw[head.len..], b"{\"a\":1}");
    }

    #[test]
    fn incomplete_head_is_none() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
    }

    #[test]
    fn connection_close_and_http10() {
        let head =
            parse_head(b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.status, 500);
        assert!(head.close);
        let head = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.close);
        let head =
            parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!head.close);
    }

    #[test]
    fn framing_rules() {
        let head = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Empty);
        let head = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(head.close);
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_head(b"HTTP/2 200\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
    }

    #[test]
    fn decodes_chunked_bodies() {
        let mut out = Vec::new();
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let used = decode_chunked(raw, &mut out).unwrap().unwrap();
        assert_eq!(out, b"Wikipedia");
        assert_eq!(&raw[used..], b"NEXT");
        // Every strict prefix is incomplete, never an error.
        for cut in 0..raw.len() - 4 {
            assert_eq!(
                decode_chunked(&raw[..cut], &mut out).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert!(decode_chunked(b"zz\r\n", &mut out).is_err());
        assert!(decode_chunked(b"2\r\nabX\r\n", &mut out).is_err());
    }
}
