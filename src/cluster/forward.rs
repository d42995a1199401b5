//! One hop from the node that accepted a request to the node that owns its
//! partition: the request goes on as an ordinary HTTP/1.1 request (its
//! auth headers unchanged, marked as forwarded so it never travels a
//! second hop) over a keep-alive connection this shard keeps per peer.
//!
//! Runs on the shard's executor with glommio sockets; every step has a
//! deadline, and the answer is bounded in size.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::http::{Request, Response};

/// Marks a forwarded request; its value names the node that forwarded it.
pub const FORWARDED_HEADER: &str = "x-progressdb-forwarded";
/// Idle connections kept per peer on one shard.
const IDLE_PER_PEER_MAX: usize = 16;
/// Longest wait for a peer's whole answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer head and body taken from a peer.
const HEAD_BYTES_MAX: usize = 64 * 1024;
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
const HEADERS_MAX: usize = 64;

/// Request headers that describe this connection, not the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "host",
    "te",
    "upgrade",
    FORWARDED_HEADER,
];

/// Answer headers passed back to the client (names must be static).
const PASSED_BACK: &[&str] = &[
    "Content-Type",
    "Cache-Control",
    "Retry-After",
    "Location",
    "X-Id",
    "X-ProgressDB-Shard",
];

/// Keep-alive connections to other nodes, by address; one per shard.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<String, Vec<TcpStream>>>,
}

impl Pool {
    /// Sends `request` to the node at `address` and returns its answer.
    /// A pooled connection the peer closed meanwhile is retried once on
    /// a fresh one (nothing of the answer was read, so the peer did not
    /// take the request on it).
    pub async fn forward(
        &self,
        address: &str,
        request: &Request,
        from_node: &str,
    ) -> Result<Response, String> {
        let bytes = encode(request, address, from_node, false);
        let pooled = self.idle.borrow_mut().get_mut(address).and_then(Vec::pop);
        if let Some(stream) = pooled
            && let Ok(answer) = self.exchange(stream, address, &bytes).await
        {
            return Ok(answer);
        }
        let stream = with_deadline(TcpStream::connect(address))
            .await?
            .map_err(|error| format!("connect {address}: {error}"))?;
        stream.set_nodelay(true).ok();
        self.exchange(stream, address, &bytes).await
    }

    async fn exchange(
        &self,
        mut stream: TcpStream,
        address: &str,
        bytes: &[u8],
    ) -> Result<Response, String> {
        let (response, reusable) = with_deadline(async {
            stream.write_all(bytes).await.map_err(|e| e.to_string())?;
            read_response(&mut stream).await
        })
        .await??;
        if reusable {
            let mut idle = self.idle.borrow_mut();
            let peers = idle.entry(address.to_owned()).or_default();
            if peers.len() < IDLE_PER_PEER_MAX {
                peers.push(stream);
            }
        }
        Ok(response)
    }
}

pub(super) async fn with_deadline<T>(
    work: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    futures_lite::future::or(async { Ok(work.await) }, async {
        glommio::timer::sleep(ANSWER_TIMEOUT).await;
        Err("the owner did not answer in time".to_owned())
    })
    .await
}

/// The request as the owner must see it: same method, target, headers
/// (but this hop's) and body, marked as forwarded by `from_node`; with
/// `close_after`, the owner is asked to close the connection after its
/// answer.
pub(super) fn encode(
    request: &Request,
    address: &str,
    from_node: &str,
    close_after: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + request.body.len());
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    if !request.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(request.query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(address.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in request.headers.iter() {
        if HOP_BY_HOP.contains(&name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(FORWARDED_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(from_node.as_bytes());
    if close_after {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(request.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&request.body);
    out
}

/// Reads one answer, framed by `Content-Length` or chunked (large pages
/// stream), whole: at most [`BODY_BYTES_MAX`]; also says whether the
/// connection may carry another request.
async fn read_response(stream: &mut TcpStream) -> Result<(Response, bool), String> {
    let mut buffer = Vec::with_capacity(4096);
    // On the heap: a task's future must stay small.
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the owner closed the connection".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&buffer).map_err(|e| e.to_string())? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if buffer.len() > HEAD_BYTES_MAX => {
                return Err("the owner's answer head is too large".into());
            }
            httparse::Status::Partial => continue,
        };
        let status = parsed.code.unwrap_or(502);
        let (response, length, reusable) = response_head(status, parsed.headers)?;
        let mut body = buffer.split_off(head_len);
        let Some(length) = length else {
            let body = read_chunked(stream, body, &mut chunk).await?;
            return Ok((Response { body, ..response }, reusable));
        };
        while body.len() < length {
            let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("the owner's answer was cut short".into());
            }
            body.extend_from_slice(&chunk[..read]);
        }
        body.truncate(length);
        return Ok((Response { body, ..response }, reusable));
    }
}

/// A chunked body, `buffered` being what was read past the head: the
/// chunks' data joined, trailers dropped.
async fn read_chunked(
    stream: &mut TcpStream,
    mut buffered: Vec<u8>,
    chunk: &mut [u8],
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match httparse::parse_chunk_size(&buffered) {
            Ok(httparse::Status::Complete((start, 0))) => {
                // The last chunk: trailers, if any, end with an empty line.
                let rest = &buffered[start..];
                if rest.starts_with(b"\r\n") || rest.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok(body);
                }
            }
            Ok(httparse::Status::Complete((start, size))) => {
                let size = usize::try_from(size).map_err(|_| "chunk too large")?;
                if body.len() + size > BODY_BYTES_MAX {
                    return Err("the owner's answer is too large".into());
                }
                if buffered.len() >= start + size + 2 {
                    body.extend_from_slice(&buffered[start..start + size]);
                    buffered.drain(..start + size + 2);
                    continue;
                }
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err("the owner's chunked answer is malformed".into()),
        }
        let read = stream.read(chunk).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the owner's answer was cut short".into());
        }
        buffered.extend_from_slice(&chunk[..read]);
    }
}

/// The answer's status and passed-back headers, its body length (`None`
/// when chunked) and whether the connection stays open.
fn response_head(
    status: u16,
    headers: &[httparse::Header<'_>],
) -> Result<(Response, Option<usize>, bool), String> {
    let (mut length, mut reusable, mut kept) = (Some(0usize), true, Vec::new());
    for header in headers {
        let value = String::from_utf8_lossy(header.value).into_owned();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().map_err(|_| "bad Content-Length")?);
        } else if header.name.eq_ignore_ascii_case("connection") {
            reusable = !value.eq_ignore_ascii_case("close");
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.trim().eq_ignore_ascii_case("chunked") {
                return Err("the owner answered with an unknown transfer coding".into());
            }
            length = None;
        } else if let Some(name) = PASSED_BACK
            .iter()
            .find(|name| name.eq_ignore_ascii_case(header.name))
        {
            kept.push((*name, value));
        }
    }
    if length.is_some_and(|length| length > BODY_BYTES_MAX) {
        return Err("the owner's answer is too large".into());
    }
    let response = Response {
        status,
        headers: kept,
        body: Vec::new(),
    };
    Ok((response, length, reusable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;

    #[test]
    fn a_forwarded_request_keeps_its_target_auth_and_body_but_not_this_hop() {
        let request = Request {
            method: Method::Post,
            path: "/frontend/v1/threads/t%201/messages".into(),
            query: "limit=5".into(),
            headers: [
                ("authorization", "Bearer sk_x"),
                ("connection", "close"),
                ("content-length", "2"),
                (FORWARDED_HEADER, "spoofed"),
            ]
            .into_iter()
            .collect(),
            body: b"{}".to_vec(),
            keep_alive: false,
            http11: true,
        };
        let text = String::from_utf8(encode(&request, "10.0.0.2:8080", "n1", false)).unwrap();
        assert!(text.starts_with("POST /frontend/v1/threads/t%201/messages?limit=5 HTTP/1.1\r\n"));
        assert!(text.contains("authorization: Bearer sk_x\r\n"));
        assert!(text.contains("x-progressdb-forwarded: n1\r\n"));
        assert!(!text.contains("close") && !text.contains("spoofed"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        // A relayed live tail asks the owner to close after its answer.
        let text = String::from_utf8(encode(&request, "10.0.0.2:8080", "n1", true)).unwrap();
        assert!(text.ends_with(
            "x-progressdb-forwarded: n1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
        ));
    }

    #[test]
    fn an_answer_head_keeps_known_headers_and_its_framing() {
        let headers = [
            httparse::Header {
                name: "content-type",
                value: b"application/json",
            },
            httparse::Header {
                name: "Content-Length",
                value: b"17",
            },
            httparse::Header {
                name: "Set-Something",
                value: b"x",
            },
        ];
        let (response, length, reusable) = response_head(201, &headers).unwrap();
        assert_eq!((response.status, length, reusable), (201, Some(17), true));
        assert_eq!(
            response.headers,
            vec![("Content-Type", "application/json".to_owned())]
        );
        let chunked = [httparse::Header {
            name: "Transfer-Encoding",
            value: b"chunked",
        }];
        assert_eq!(response_head(200, &chunked).unwrap().1, None);
        let gzip = [httparse::Header {
            name: "Transfer-Encoding",
            value: b"gzip",
        }];
        assert!(response_head(200, &gzip).is_err());
    }
}
