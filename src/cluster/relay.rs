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

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::forward::{encode, with_deadline};
use crate::http::Request;

/// Bytes copied per read from the owner.
const RELAY_BUFFER_BYTES: usize = 16 * 1024;
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

    /// Copies the owner's answer to `client` until one side ends it.
    /// `Err` when nothing was sent to the client: the owner could not be
    /// reached or did not answer in time (the caller answers instead).
    pub async fn run<W: AsyncWrite + Unpin>(self, client: &mut W) -> Result<(), String> {
        let mut owner = with_deadline(TcpStream::connect(&self.address))
            .await?
            .map_err(|error| format!("connect {}: {error}", self.address))?;
        owner.set_nodelay(true).ok();
        with_deadline(owner.write_all(&self.request))
            .await?
            .map_err(|error| format!("send to {}: {error}", self.address))?;
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

/// `read`, or `None` once the owner has been silent too long.
async fn silence_bounded<T>(read: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(read.await) }, async {
        glommio::timer::sleep(OWNER_SILENCE_MAX).await;
        None
    })
    .await
}
