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
//! with its last event id and misses nothing. A participant removed from
//! the thread gets the `participant.removed` event and their stream ends.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncWrite, AsyncWriteExt};

use crate::api::{ApiError, LiveTail};
use crate::cluster::relay::{PeerEvents, Relay};
use crate::engine::StreamEvent;
use crate::engine::{Command, Reply};
use crate::mesh::Mesh;
use crate::model::{ThreadId, UserId};
use crate::shard::{ShardId, shard_for};

const HEARTBEAT: Duration = Duration::from_secs(10);

/// Ends a stream whose subscriber fell behind; it resumes with its last id.
const OVERFLOW_NOTICE: &[u8] = b"event: overflow\ndata: {\"error\":\"slow_subscriber\",\"message\":\"this client fell too far behind; reconnect with Last-Event-ID to resume\"}\n\n";

fn head(core: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\nX-ProgressDB-Shard: {core}\r\n\r\nretry: 1000\n\n"
    )
    .into_bytes()
}

/// Whether `event` removes the stream's own user from the thread: their
/// stream ends with it (a reconnect is refused like any other request).
fn removes(event: &StreamEvent, tail: &LiveTail) -> bool {
    let Some(user) = &tail.caller.user else {
        return false;
    };
    crate::engine::removed_user(event).is_some_and(|removed| removed == user.as_str())
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
    match tail.thread.clone() {
        Some(thread) => serve_thread(stream, mesh, &tail, thread).await,
        None => serve_user(stream, mesh, tail).await,
    }
}

async fn serve_thread<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mesh: Rc<Mesh>,
    tail: &LiveTail,
    thread: ThreadId,
) -> Result<(), ApiError> {
    let owner = shard_for(thread.as_str(), mesh.shard_count());
    let core = mesh.local_shard().0;
    let subscription = mesh.hub().subscribe(thread.as_str());
    let subscribed = mesh
        .call(
            owner,
            Command::Subscribe {
                thread: thread.clone(),
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
            mesh.hub().unsubscribe(thread.as_str(), subscription.id);
            return Err(err.into());
        }
    };
    let source = Source {
        thread: &thread,
        owner,
    };
    // An I/O error only means the client went away; either way, unsubscribe.
    let _ = stream_events(
        stream,
        &mesh,
        (tail, source),
        &subscription,
        &mut replay,
        &mut more,
    )
    .await;
    mesh.hub().unsubscribe(thread.as_str(), subscription.id);
    let _ = mesh
        .call(owner, Command::Unsubscribe { thread, core })
        .await;
    Ok(())
}

/// `GET /frontend/v1/stream`: every change of every thread the caller
/// owns or takes part in, whichever shard owns it. Every shard is told
/// that this core follows the user; live only (no replay).
async fn serve_user<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mesh: Rc<Mesh>,
    mut tail: LiveTail,
) -> Result<(), ApiError> {
    let peers = std::mem::take(&mut tail.peers);
    let user = tail.caller.user.clone().ok_or_else(|| {
        ApiError::bad_request(
            "missing_user_id",
            "this route acts for a user: send `X-User-ID`",
        )
    })?;
    let topic = crate::engine::user_topic(user.as_str());
    let core = mesh.local_shard().0;
    let subscription = mesh.hub().subscribe(&topic);
    let mut subscribed = Vec::new();
    for shard in (0..mesh.shard_count()).map(ShardId) {
        let command = Command::SubscribeUser {
            user: user.clone(),
            core,
        };
        if let Err(err) = mesh.call(shard, command).await {
            unsubscribe_user(&mesh, &user, &subscribed).await;
            mesh.hub().unsubscribe(&topic, subscription.id);
            return Err(err.into());
        }
        subscribed.push(shard);
    }
    // Every other node's part has started before the head goes out: a
    // change made after the client sees the head reaches it.
    let peers = match start_peers(peers).await {
        Ok(peers) => peers,
        Err(err) => {
            unsubscribe_user(&mesh, &user, &subscribed).await;
            mesh.hub().unsubscribe(&topic, subscription.id);
            return Err(err);
        }
    };
    // An I/O error only means the client went away; either way, unsubscribe.
    let _ = async {
        stream.write_all(&head(core)).await?;
        let local = follow_live(stream, &subscription, 0, |_| false);
        futures_lite::future::or(local, merge_peers(&mesh, &topic, subscription.id, peers)).await
    }
    .await;
    mesh.hub().unsubscribe(&topic, subscription.id);
    unsubscribe_user(&mesh, &user, &subscribed).await;
    Ok(())
}

/// Clustered mode: opens the other nodes' streams of this user; a node
/// that does not start one makes the stream answer 503, and the client
/// tries again (a node that went away leaves the view within its lease).
async fn start_peers(peers: Vec<Relay>) -> Result<Vec<PeerEvents>, ApiError> {
    let mut started = Vec::with_capacity(peers.len());
    for relay in peers {
        match relay.start_events().await {
            Ok(events) => started.push(events),
            Err(why) => {
                crate::logging::warn(
                    "a node's part of a user stream did not start",
                    &[("error", &why)],
                );
                return Err(ApiError::partition_unavailable(
                    "a node of the cluster did not start its part of this stream",
                ));
            }
        }
    }
    Ok(started)
}

/// Clustered mode: the other nodes' streams of this user, each event
/// handed to this stream's subscription. Returns when the first of them
/// ends (a node went away or failed over): the client reconnects and
/// gathers the nodes that are live then, so no node's changes go missing
/// without the stream ending. Never returns without peers.
async fn merge_peers(
    mesh: &Mesh,
    topic: &str,
    subscription: u64,
    peers: Vec<PeerEvents>,
) -> std::io::Result<()> {
    let relays = peers.into_iter().map(|events| {
        let relayed = async move {
            let deliver = |event: StreamEvent| mesh.hub().deliver(topic, subscription, &event);
            if let Err(why) = events.run(deliver).await {
                crate::logging::warn("a node's part of a user stream failed", &[("error", &why)]);
            }
        };
        Box::pin(relayed) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>
    });
    match relays.reduce(|first, second| Box::pin(futures_lite::future::or(first, second))) {
        Some(first_to_end) => first_to_end.await,
        None => std::future::pending().await,
    }
    Ok(())
}

async fn unsubscribe_user(mesh: &Mesh, user: &UserId, shards: &[ShardId]) {
    let core = mesh.local_shard().0;
    for shard in shards {
        let command = Command::UnsubscribeUser {
            user: user.clone(),
            core,
        };
        let _ = mesh.call(*shard, command).await;
    }
}

/// The thread a stream follows and the shard that owns it.
#[derive(Clone, Copy)]
struct Source<'a> {
    thread: &'a ThreadId,
    owner: ShardId,
}

async fn stream_events<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mesh: &Mesh,
    (tail, source): (&LiveTail, Source<'_>),
    subscription: &crate::mesh::hub::Subscription,
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
            thread: source.thread.clone(),
            caller: tail.caller.clone(),
            after: last_replayed,
        };
        match mesh.call(source.owner, command).await {
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
    follow_live(stream, subscription, last_replayed, |event| {
        removes(event, tail)
    })
    .await
}

/// Sends live events past `last_replayed` until the client goes away, falls
/// behind, or an event `ends` the stream (sent first).
async fn follow_live<S: AsyncWrite + Unpin>(
    stream: &mut S,
    subscription: &crate::mesh::hub::Subscription,
    last_replayed: u64,
    ends: impl Fn(&StreamEvent) -> bool,
) -> std::io::Result<()> {
    let mut out = Vec::new();
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
                if ends(&event) {
                    return Ok(());
                }
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
