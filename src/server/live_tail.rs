//! Serving `GET .../messages/stream` as Server-Sent Events.
//!
//! The stream registers with this core's hub first, then subscribes at the
//! thread's owner (which checks access, records that this core listens and
//! returns what a `Last-Event-ID` missed), so no change can fall between
//! the replay and the live events; events already replayed are skipped by
//! id. A heartbeat comment every few seconds finds clients that went away.
//! A resume replays in bounded batches until it has caught up, never
//! skipping ahead. A subscriber that falls too far behind (live, or while
//! replaying) gets a final `overflow` event and is closed; it reconnects
//! with its last event id and misses nothing.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncWrite, AsyncWriteExt};

use crate::api::{ApiError, LiveTail};
use crate::engine::{Command, Reply};
use crate::shard::hub::StreamEvent;
use crate::shard::mesh::Mesh;
use crate::shard::shard_for;

const HEARTBEAT: Duration = Duration::from_secs(10);

/// Ends a stream whose subscriber fell behind; it resumes with its last id.
const OVERFLOW_NOTICE: &[u8] = b"event: overflow\ndata: {\"error\":\"slow_subscriber\",\"message\":\"this client fell too far behind; reconnect with Last-Event-ID to resume\"}\n\n";

fn head(core: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\nX-ProgressDB-Shard: {core}\r\n\r\nretry: 1000\n\n"
    )
    .into_bytes()
}

fn encode(event: &StreamEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("id: {}\nevent: {}\ndata: ", event.id, event.kind).as_bytes());
    // Message JSON from serde never contains a raw newline, so one data
    // line carries it whole.
    out.extend_from_slice(&event.data);
    out.extend_from_slice(b"\n\n");
}

/// Streams until the client goes away or falls behind. `Err` carries an
/// error response to send instead when the stream could not start.
pub async fn serve<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mesh: Rc<Mesh>,
    tail: LiveTail,
) -> Result<(), ApiError> {
    let owner = shard_for(tail.thread.as_str(), mesh.shard_count());
    let thread = tail.thread.to_string();
    let core = mesh.local_shard().0;
    let subscription = mesh.hub().subscribe(&thread);
    let subscribed = mesh
        .call(
            owner,
            Command::Subscribe {
                thread: tail.thread.clone(),
                caller: tail.caller.clone(),
                core,
                after: tail.last_event_id,
            },
        )
        .await;
    let (mut replay, mut more) = match subscribed {
        Ok(Reply::Events { events, more }) => (events, more),
        Ok(_) => (Vec::new(), false),
        Err(err) => {
            mesh.hub().unsubscribe(&thread, subscription.id);
            return Err(err.into());
        }
    };
    // An I/O error only means the client went away; either way, unsubscribe.
    let _ = stream_events(
        stream,
        &mesh,
        &tail,
        owner,
        &subscription,
        &mut replay,
        &mut more,
    )
    .await;
    mesh.hub().unsubscribe(&thread, subscription.id);
    let _ = mesh
        .call(
            owner,
            Command::Unsubscribe {
                thread: tail.thread.clone(),
                core,
            },
        )
        .await;
    Ok(())
}

async fn stream_events<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mesh: &Mesh,
    tail: &LiveTail,
    owner: crate::shard::ShardId,
    subscription: &crate::shard::hub::Subscription,
    replay: &mut Vec<StreamEvent>,
    more: &mut bool,
) -> std::io::Result<()> {
    let mut out = head(mesh.local_shard().0);
    let mut last_replayed = tail.last_event_id.unwrap_or(0);
    // Replay in batches until caught up: the live queue holds everything
    // since the subscription, so stopping early would be a silent gap. A
    // client that cannot take the replay as fast as the thread changes
    // overflows that queue, which ends the replay with an explicit
    // `overflow` event instead of looping forever.
    loop {
        for event in replay.drain(..) {
            last_replayed = last_replayed.max(event.id);
            encode(&event, &mut out);
        }
        stream.write_all(&out).await?;
        out.clear();
        if subscription.overflowed.get() {
            return stream.write_all(OVERFLOW_NOTICE).await;
        }
        if !*more {
            break;
        }
        let command = Command::ChangesAfter {
            thread: tail.thread.clone(),
            caller: tail.caller.clone(),
            after: last_replayed,
        };
        match mesh.call(owner, command).await {
            Ok(Reply::Events {
                events,
                more: again,
            }) => {
                *replay = events;
                *more = again;
            }
            // Going live now would skip what is not replayed yet: close
            // instead; the client resumes from its last id.
            _ => return Ok(()),
        }
    }
    loop {
        match glommio::timer::timeout(HEARTBEAT, async { Ok(subscription.next().await) }).await {
            Ok(Some(event)) => {
                // Changes already sent in the replay may also arrive live.
                if event.id <= last_replayed {
                    continue;
                }
                encode(&event, &mut out);
                stream.write_all(&out).await?;
                out.clear();
            }
            Ok(None) => {
                if subscription.overflowed.get() {
                    stream.write_all(OVERFLOW_NOTICE).await?;
                }
                return Ok(());
            }
            Err(_) => stream.write_all(b": heartbeat\n\n").await?,
        }
    }
}
