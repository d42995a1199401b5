//! One client connection: read bytes, frame requests, answer them in order.
//!
//! Pipelined requests already in the buffer are answered back to back and
//! their responses written together; the buffer is flushed before waiting
//! for more bytes. Memory per connection is bounded: the read buffer never
//! holds more than one incomplete request (the parser rejects oversized
//! heads and bodies), we stop reading while a response cannot be written,
//! and a large message page is written one piece at a time as it is
//! rendered, never held whole.
//!
//! When the shard drains for shutdown, a connection idle between requests
//! closes at once; one in the middle of a request finishes it and answers
//! with `Connection: close`.

use std::cell::Cell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::drain::Drain;
use super::live_tail;
use super::tls::Tls;
use crate::api::{Api, ApiError, Handled, LiveTail, PageStream};
use crate::http::{self, HeadLimits, Method, Parse, Response};
use crate::logging;
use crate::mesh::Mesh;
use crate::metrics::ROUTE_INVALID;

/// Bytes requested from the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Responses buffered before writing even if more pipelined requests wait.
const WRITE_BUFFER_BYTES_MAX: usize = 256 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub struct ConnectionSettings {
    pub head_limits: HeadLimits,
    /// Longest silence on a connection between requests.
    pub idle_timeout: Duration,
    /// Longest time from a request's first byte to its last: a client
    /// trickling a request byte by byte (slowloris) is cut off here even
    /// though it is never silent for `idle_timeout`.
    pub request_timeout: Duration,
    /// This core's shutdown notice.
    pub drain: Drain,
}

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API port: every route, keys checked.
    Api,
    /// `--metrics-addr`: only `/metrics` and `/healthz`, without a key.
    Metrics,
}

/// Counts a shard's open connections; the guard gives the slot back on drop.
pub struct ConnectionSlot(Rc<Cell<usize>>);

impl ConnectionSlot {
    pub fn acquire(open: &Rc<Cell<usize>>, max: usize) -> Option<ConnectionSlot> {
        if open.get() >= max {
            return None;
        }
        open.set(open.get() + 1);
        Some(ConnectionSlot(open.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Answers 503 to a connection over the per-shard limit, then closes it.
pub async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::new();
    ApiError::new(
        503,
        "too_many_connections",
        "this server is at its connection limit",
    )
    .into_response()
    .write_to(&mut out, false, false);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

/// Serves one accepted connection, over TLS when `tls` is given.
pub async fn serve(
    stream: TcpStream,
    api: Rc<Api>,
    settings: Rc<ConnectionSettings>,
    listener: Listener,
    tls: Option<Rc<Tls>>,
) {
    // Latency matters more than packet count for small JSON responses.
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok().map(|addr| addr.ip());
    // The socket's timeouts also bound every read and write TLS makes.
    let _ = stream.set_read_timeout(Some(settings.idle_timeout));
    let _ = stream.set_write_timeout(Some(settings.idle_timeout));
    match tls {
        None => serve_http(stream, peer, api, settings, listener).await,
        Some(tls) => {
            if let Some(stream) = tls.handshake(stream).await {
                serve_http(stream, peer, api, settings, listener).await;
            }
        }
    }
}

/// Reads requests from `stream` and answers them, until the client or
/// shutdown closes the connection.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: Option<std::net::IpAddr>,
    api: Rc<Api>,
    settings: Rc<ConnectionSettings>,
    listener: Listener,
) {
    let mut input = Input::new();
    let mut output: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut continue_sent = false;
    // When the request now being received began.
    let mut request_started: Option<Instant> = None;
    loop {
        match http::parse_request(input.data(), &settings.head_limits) {
            Parse::Complete { request, consumed } => {
                input.consume(consumed);
                continue_sent = false;
                // Bytes of a pipelined request may already be here.
                request_started = (!input.is_empty()).then(Instant::now);
                let handled = match listener {
                    Listener::Api => api.handle(&request, peer).await,
                    Listener::Metrics => Handled::Response(api.handle_metrics_port(&request).await),
                };
                let response = match handled {
                    Handled::Response(response) => response,
                    Handled::Stream(tail) => {
                        return serve_live_tail(stream, output, &api, &settings.drain, tail).await;
                    }
                    Handled::Relay(relay) => {
                        return serve_relay(stream, output, &settings.drain, *relay).await;
                    }
                    Handled::Page(head, page) => {
                        let framing = PageFraming::of(&request, &settings.drain);
                        let sent =
                            send_page(&mut stream, &mut output, (head, page), api.mesh(), framing)
                                .await;
                        if !sent || !framing.keep_alive {
                            let _ = stream.close().await;
                            return;
                        }
                        continue;
                    }
                };
                let head_only = request.method == Method::Head;
                let keep_alive = request.keep_alive && !settings.drain.is_draining();
                response.write_to(&mut output, keep_alive, head_only);
                // A large page now lives in `output`; do not keep a second
                // copy while a slow client reads it.
                drop(response);
                if !keep_alive {
                    let _ = stream.write_all(&output).await;
                    let _ = stream.close().await;
                    return;
                }
                if output.len() >= WRITE_BUFFER_BYTES_MAX {
                    if stream.write_all(&output).await.is_err() {
                        return;
                    }
                    output.clear();
                }
            }
            Parse::Partial { expect_continue } => {
                if expect_continue && !continue_sent {
                    output.extend_from_slice(CONTINUE);
                    continue_sent = true;
                }
                if !output.is_empty() {
                    if stream.write_all(&output).await.is_err() {
                        return;
                    }
                    output.clear();
                }
                let read = match request_started {
                    // Between requests only the idle timeout (set on the
                    // socket) applies, and shutdown closes the connection.
                    None => {
                        let buffer = input.room();
                        let stream = &mut stream;
                        let read = futures_lite::future::or(
                            async move { Some(stream.read(buffer).await) },
                            async {
                                settings.drain.wait().await;
                                None
                            },
                        )
                        .await;
                        match read {
                            Some(read) => read,
                            None => return,
                        }
                    }
                    Some(started) => {
                        let left = settings.request_timeout.saturating_sub(started.elapsed());
                        let buffer = input.room();
                        let stream = &mut stream;
                        glommio::timer::timeout(left, async move {
                            stream
                                .read(buffer)
                                .await
                                .map_err(glommio::GlommioError::from)
                        })
                        .await
                        .map_err(|err| match err {
                            glommio::GlommioError::IoError(err) => err,
                            _ => std::io::Error::from(ErrorKind::TimedOut),
                        })
                    }
                };
                match read {
                    Ok(0) => return,
                    Ok(count) => {
                        input.filled_by(count);
                        request_started.get_or_insert_with(Instant::now);
                    }
                    Err(err) => {
                        if err.kind() == ErrorKind::TimedOut && !input.is_empty() {
                            // A request was started but not finished in time.
                            let response = Response::error(
                                408,
                                "request_timeout",
                                "the request was not completed in time",
                            );
                            observe_invalid(&api, listener, 408, request_started);
                            response.write_to(&mut output, false, false);
                            let _ = stream.write_all(&output).await;
                        }
                        return;
                    }
                }
            }
            Parse::Error(err) => {
                // Framing is lost: answer, then close.
                let response = ApiError::from(&err).into_response();
                observe_invalid(&api, listener, response.status, request_started);
                response.write_to(&mut output, false, false);
                let _ = stream.write_all(&output).await;
                let _ = stream.close().await;
                return;
            }
        }
    }
}

/// Serves a live tail on the connection until the client goes away or
/// shutdown ends it (a live tail never ends by itself), then closes it.
async fn serve_live_tail<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    output: Vec<u8>,
    api: &Api,
    drain: &Drain,
    tail: LiveTail,
) {
    let mesh = api.mesh().clone();
    let serve = async |stream: &mut S| live_tail::serve(stream, mesh, tail).await;
    serve_stream(stream, output, drain, serve).await;
}

/// Relays a live tail the thread's owner serves (clustered mode) until
/// either side or shutdown ends it, then closes the connection.
async fn serve_relay<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    output: Vec<u8>,
    drain: &Drain,
    relay: crate::cluster::relay::Relay,
) {
    let serve = async |stream: &mut S| {
        relay.run(stream).await.map_err(|why| {
            crate::logging::warn(
                "relaying a live tail from the partition's owner failed",
                &[("error", &why)],
            );
            let why = "the node that owns this thread's partition did not answer";
            ApiError::partition_unavailable(why)
        })
    };
    serve_stream(stream, output, drain, serve).await;
}

/// Hands the connection to `serve` (a stream that never ends by itself)
/// until it returns or shutdown ends it, then closes the connection. The
/// answers already buffered for pipelined requests go first; an error
/// `serve` returns (before it sent anything) is answered.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut output: Vec<u8>,
    drain: &Drain,
    serve: impl AsyncFnOnce(&mut S) -> Result<(), ApiError>,
) {
    if !output.is_empty() && stream.write_all(&output).await.is_err() {
        return;
    }
    output.clear();
    let served = futures_lite::future::or(serve(&mut stream), async {
        drain.wait().await;
        Ok(())
    })
    .await;
    if let Err(err) = served {
        err.into_response().write_to(&mut output, false, false);
        let _ = stream.write_all(&output).await;
    }
    let _ = stream.close().await;
}

/// How a streamed page goes out.
#[derive(Clone, Copy)]
struct PageFraming {
    keep_alive: bool,
    /// `Transfer-Encoding: chunked`; otherwise the connection closes after.
    chunked: bool,
    /// A HEAD request: the head only, nothing rendered.
    head_only: bool,
}

impl PageFraming {
    fn of(request: &http::Request, drain: &Drain) -> PageFraming {
        PageFraming {
            // HTTP/1.0 has no chunked coding: there the body ends when the
            // connection closes.
            keep_alive: request.http11 && request.keep_alive && !drain.is_draining(),
            chunked: request.http11,
            head_only: request.method == Method::Head,
        }
    }
}

/// Writes a streamed page: answers already buffered for pipelined requests
/// and the head first, then each piece as it is rendered. The next piece is
/// asked for only once the last is written, so a slow reader holds back
/// the rendering and this connection holds one piece, never the page.
/// False when the connection must close: the client went away, or a piece
/// failed after the head was sent and the body is cut short (no last
/// chunk), which the client sees as an incomplete response.
async fn send_page<S: AsyncWrite + Unpin>(
    stream: &mut S,
    output: &mut Vec<u8>,
    (head, mut page): (Response, Box<PageStream>),
    mesh: &Mesh,
    framing: PageFraming,
) -> bool {
    let mut head_bytes = Vec::with_capacity(512);
    head.write_streamed_head(&mut head_bytes, framing.keep_alive, framing.chunked);
    if framing.head_only {
        output.extend_from_slice(&head_bytes);
        return flush(stream, output).await;
    }
    let mut head_sent = false;
    loop {
        let bytes = match page.next(mesh).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(err) if !head_sent => {
                // Nothing of this answer is out yet: it can still be an error.
                ApiError::from(err)
                    .into_response()
                    .write_to(output, false, false);
                let _ = flush(stream, output).await;
                return false;
            }
            Err(err) => {
                logging::warn(
                    "page cut short",
                    &[
                        ("shard", &mesh.local_shard().0),
                        ("error", &format!("{err:?}")),
                    ],
                );
                return false;
            }
        };
        if !head_sent {
            output.extend_from_slice(&head_bytes);
            head_sent = true;
        }
        if framing.chunked {
            http::write_chunk(output, &bytes);
        } else {
            output.extend_from_slice(&bytes);
        }
        drop(bytes);
        if !flush(stream, output).await {
            return false;
        }
    }
    if framing.chunked {
        output.extend_from_slice(http::LAST_CHUNK);
    }
    flush(stream, output).await
}

/// Writes and empties `output`, giving back storage a large piece grew;
/// false when the client is gone.
async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, output: &mut Vec<u8>) -> bool {
    let written = stream.write_all(output).await.is_ok();
    output.clear();
    if output.capacity() > WRITE_BUFFER_BYTES_MAX {
        *output = Vec::with_capacity(READ_CHUNK_BYTES);
    }
    written
}

/// Bytes read from the client and not yet framed. The storage keeps its
/// initialised length between reads, so a read does not first zero a
/// whole chunk (that memset was 2% of a durable POST's CPU).
struct Input {
    bytes: Vec<u8>,
    filled: usize,
}

impl Input {
    fn new() -> Input {
        Input {
            bytes: vec![0; READ_CHUNK_BYTES],
            filled: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }

    fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Drops the first `count` bytes (a framed request). Storage grown for
    /// a large request is given back once nothing is left in it.
    fn consume(&mut self, count: usize) {
        self.bytes.copy_within(count..self.filled, 0);
        self.filled -= count;
        if self.filled == 0 && self.bytes.len() > 4 * READ_CHUNK_BYTES {
            self.bytes = vec![0; READ_CHUNK_BYTES];
        }
    }

    /// Room for the next read: one chunk past the filled bytes.
    fn room(&mut self) -> &mut [u8] {
        let end = self.filled + READ_CHUNK_BYTES;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[self.filled..end]
    }

    fn filled_by(&mut self, count: usize) {
        self.filled += count;
    }
}

/// Counts a request that could not be framed (no method or route is known).
fn observe_invalid(api: &Api, listener: Listener, status: u16, started: Option<Instant>) {
    if listener == Listener::Api {
        let elapsed = started.map(|started| started.elapsed()).unwrap_or_default();
        api.observe("-", ROUTE_INVALID, status, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_keeps_unframed_bytes_and_gives_back_large_storage() {
        let mut input = Input::new();
        input.room()[..5].copy_from_slice(b"GET /");
        input.filled_by(5);
        assert_eq!(input.data(), b"GET /");
        input.consume(4);
        assert_eq!(input.data(), b"/");
        // A large request grows the storage chunk by chunk ...
        for _ in 0..8 {
            let room = input.room();
            assert_eq!(room.len(), READ_CHUNK_BYTES);
            room.fill(b'x');
            input.filled_by(READ_CHUNK_BYTES);
        }
        assert_eq!(input.data().len(), 1 + 8 * READ_CHUNK_BYTES);
        // ... and once it is framed, the storage shrinks back.
        input.consume(1 + 8 * READ_CHUNK_BYTES);
        assert!(input.is_empty());
        assert_eq!(input.bytes.len(), READ_CHUNK_BYTES);
    }
}
