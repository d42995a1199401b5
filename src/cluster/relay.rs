//! A live tail opened on a node that does not own the thread's partition:
//! the request goes on to the owner (one hop, like [`super::forward`], on
//! a connection of its own, asked to close after), and whatever the owner
//! sends, its head and then its events, is copied to the client as it
//! comes, until either side goes away. The owner does everything a live
//! tail does (access, replay from `Last-Event-ID`, heartbeats, overflow);
//! this node only carries bytes, one bounded buffer per stream, at the
//! client's pace.
//!
//! A relay ends when the owner closes (it failed over, or refused the
//! stream with an error answer), when the owner has sent nothing for
//! three heartbeats (it vanished without closing), or when the client
//! stops reading; the client reconnects with its last event id.
//!
//! A user's own stream (`GET /frontend/v1/stream`) gathers every node's
//! instead: each node sends the changes it executed (those of the
//! partitions it owns), so the receiving node reads the other nodes'
//! streams as events ([`Relay::start_events`]) and merges them into its
//! own.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::forward::{encode, with_deadline};
use crate::engine::StreamEvent;
use crate::http::Request;

/// Bytes copied per read from the owner.
const RELAY_BUFFER_BYTES: usize = 16 * 1024;
/// Largest answer head, and largest event, taken from a peer's stream.
const HEAD_BYTES_MAX: usize = 64 * 1024;
const EVENT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The event kinds a stream carries.
const KINDS: [&str; 5] = [
    "message.created",
    "message.updated",
    "message.deleted",
    "participant.added",
    "participant.removed",
];
/// Longest silence from the owner before the relay gives up: three of
/// the live tail's heartbeats (every 10 s).
const OWNER_SILENCE_MAX: Duration = Duration::from_secs(30);

/// A live tail to open at the owner at `address`.
pub struct Relay {
    address: String,
    request: Vec<u8>,
}

impl Relay {
    pub fn new(address: &str, request: &Request, from_node: &str) -> Relay {
        Relay {
            address: address.to_owned(),
            request: encode(request, address, from_node, true),
        }
    }

    /// A connection to the node, the request sent on it.
    async fn open(&self) -> Result<TcpStream, String> {
        let mut node = with_deadline(TcpStream::connect(&self.address))
            .await?
            .map_err(|error| format!("connect {}: {error}", self.address))?;
        node.set_nodelay(true).ok();
        with_deadline(node.write_all(&self.request))
            .await?
            .map_err(|error| format!("send to {}: {error}", self.address))?;
        Ok(node)
    }

    /// Opens the stream at the peer and waits for its head: from then on
    /// the peer has subscribed, and no change it makes is missed.
    /// `Err` when the peer did not start a stream (not reachable, not in
    /// time, or an answer other than 200).
    pub async fn start_events(self) -> Result<PeerEvents, String> {
        let mut peer = self.open().await?;
        let mut pending = Vec::new();
        let mut buffer = vec![0u8; RELAY_BUFFER_BYTES];
        loop {
            let read = with_deadline(peer.read(&mut buffer))
                .await?
                .map_err(|error| format!("read from {}: {error}", self.address))?;
            if read == 0 {
                return Err(format!("{} closed without answering", self.address));
            }
            pending.extend_from_slice(&buffer[..read]);
            if let Some(length) = stream_head(&pending)? {
                pending.drain(..length);
                return Ok(PeerEvents {
                    peer,
                    pending,
                    buffer,
                });
            }
        }
    }

    /// Copies the owner's answer to `client` until one side ends it.
    /// `Err` when nothing was sent to the client: the owner could not be
    /// reached or did not answer in time (the caller answers instead).
    pub async fn run<W: AsyncWrite + Unpin>(self, client: &mut W) -> Result<(), String> {
        let mut owner = self.open().await?;
        let mut buffer = vec![0u8; RELAY_BUFFER_BYTES];
        let first = with_deadline(owner.read(&mut buffer))
            .await?
            .map_err(|error| format!("read from {}: {error}", self.address))?;
        if first == 0 {
            return Err(format!("{} closed without answering", self.address));
        }
        let mut read = first;
        loop {
            if client.write_all(&buffer[..read]).await.is_err() || client.flush().await.is_err() {
                return Ok(());
            }
            read = match silence_bounded(owner.read(&mut buffer)).await {
                Some(Ok(read)) if read > 0 => read,
                _ => return Ok(()),
            };
        }
    }
}

/// Another node's stream of a user's changes, started.
pub struct PeerEvents {
    peer: TcpStream,
    /// Bytes read and not yet cut into events.
    pending: Vec<u8>,
    buffer: Vec<u8>,
}

impl PeerEvents {
    /// Hands each event to `each` until the peer ends the stream or is
    /// silent for three heartbeats; `Err` when it breaks the framing.
    pub async fn run(mut self, mut each: impl FnMut(StreamEvent)) -> Result<(), String> {
        loop {
            for event in take_events(&mut self.pending)? {
                each(event);
            }
            let read = silence_bounded(self.peer.read(&mut self.buffer)).await;
            match read {
                Some(Ok(read)) if read > 0 => self.pending.extend_from_slice(&self.buffer[..read]),
                _ => return Ok(()),
            }
        }
    }
}

/// `read`, or `None` once the owner has been silent too long.
async fn silence_bounded<T>(read: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(read.await) }, async {
        glommio::timer::sleep(OWNER_SILENCE_MAX).await;
        None
    })
    .await
}

/// The length of a complete answer head that starts an event stream,
/// `None` while it is incomplete.
fn stream_head(bytes: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        return match bytes.len() > HEAD_BYTES_MAX {
            true => Err("the peer's answer head is too large".into()),
            false => Ok(None),
        };
    };
    let status = bytes.split(|&byte| byte == b' ').nth(1).unwrap_or_default();
    match status {
        b"200" => Ok(Some(end + 4)),
        status => Err(format!(
            "the peer answered {} instead of a stream",
            String::from_utf8_lossy(status)
        )),
    }
}

/// Takes the complete events (ended by a blank line) off the front of
/// `pending`, skipping comments, retry hints and kinds it does not know.
fn take_events(pending: &mut Vec<u8>) -> Result<Vec<StreamEvent>, String> {
    let mut events = Vec::new();
    while let Some(end) = pending.windows(2).position(|window| window == b"\n\n") {
        let block: Vec<u8> = pending.drain(..end + 2).collect();
        events.extend(parse_event(&block[..end]));
    }
    if pending.len() > EVENT_BYTES_MAX {
        return Err("an event from the peer is too large".into());
    }
    Ok(events)
}

/// One event's lines (`id:`, `event:`, `data:`), or `None` when they are
/// not a whole event of a known kind.
fn parse_event(block: &[u8]) -> Option<StreamEvent> {
    let (mut id, mut kind, mut data) = (None, None, None);
    for line in block.split(|&byte| byte == b'\n') {
        if let Some(value) = line.strip_prefix(b"id: ") {
            id = std::str::from_utf8(value).ok()?.parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix(b"event: ") {
            kind = KINDS.iter().find(|kind| kind.as_bytes() == value).copied();
        } else if let Some(value) = line.strip_prefix(b"data: ") {
            data = Some(value);
        }
    }
    Some(StreamEvent {
        id: id?,
        kind: kind?,
        data: data?.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_head_is_taken_only_when_complete_and_200() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 1000\n\n";
        assert_eq!(stream_head(&head[..20]).unwrap(), None);
        assert_eq!(stream_head(head).unwrap(), Some(head.len() - 13));
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}";
        assert!(stream_head(refused).unwrap_err().contains("403"));
        assert!(stream_head(&vec![b'x'; HEAD_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn events_are_cut_at_blank_lines_and_unknown_blocks_skipped() {
        let mut pending = b"retry: 1000\n\n: heartbeat\n\nid: 7\nevent: message.created\ndata: {\"key\":\"a\"}\n\nid: 8\nevent: surprise\ndata: {}\n\nid: 9\nevent: message.deleted\nda".to_vec();
        let events = take_events(&mut pending).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].id, events[0].kind), (7, "message.created"));
        assert_eq!(&*events[0].data, br#"{"key":"a"}"#);
        // The unfinished event waits for the rest of its bytes.
        assert_eq!(pending, b"id: 9\nevent: message.deleted\nda");
        pending.extend_from_slice(b"ta: {}\n\n");
        let events = take_events(&mut pending).unwrap();
        assert_eq!((events[0].id, events[0].kind), (9, "message.deleted"));
        assert!(pending.is_empty());
    }
}
