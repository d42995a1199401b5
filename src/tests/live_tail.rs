//! End-to-end tests of the live tail (`GET .../messages/stream`, SSE) on the
//! real binary: events cross cores, carry ids that resume without gaps, and
//! a subscriber that stops reading is cut off with a final event.

#[path = "support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use serde_json::{Value, json};
use support::Server;

struct Event {
    id: Option<u64>,
    kind: String,
    data: String,
}

/// A raw SSE client: sends the request, checks the head, reads events.
struct Tail {
    reader: BufReader<TcpStream>,
    shard: String,
}

impl Tail {
    fn open(addr: SocketAddr, thread: &str, last_event_id: Option<u64>) -> Tail {
        Tail::open_on(TcpStream::connect(addr).unwrap(), thread, last_event_id)
    }

    fn open_on(stream: TcpStream, thread: &str, last_event_id: Option<u64>) -> Tail {
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let path = format!("/frontend/v1/threads/{thread}/messages/stream");
        let (reader, shard) = support::open_event_stream(stream, &path, "alice", &resume);
        Tail { reader, shard }
    }

    /// The next event (skipping comments and the retry hint), or None at EOF.
    fn next(&mut self) -> Option<Event> {
        let mut event = Event {
            id: None,
            kind: String::new(),
            data: String::new(),
        };
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if !event.kind.is_empty() {
                    return Some(event);
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("id: ") {
                event.id = value.parse().ok();
            } else if let Some(value) = line.strip_prefix("event: ") {
                event.kind = value.to_string();
            } else if let Some(value) = line.strip_prefix("data: ") {
                event.data = value.to_string();
            }
        }
    }

    fn next_json(&mut self) -> (Event, Value) {
        let event = self.next().expect("an event");
        let data = serde_json::from_str(&event.data).expect("JSON data");
        (event, data)
    }
}

fn thread_owned_by(shard: usize, shards: usize) -> String {
    (0..)
        .map(|n| format!("live-{n}"))
        .find(|id| progressdb::shard::shard_for(id, shards).0 == shard)
        .unwrap()
}

#[test]
fn events_cross_cores_and_resume_without_gaps() {
    let server = Server::start(&["--shards", "2"]);
    let mut client = server.client();
    let thread = thread_owned_by(1, 2);
    client
        .post(
            "/frontend/v1/threads",
            &json!({"id": thread, "title": "live"}).to_string(),
        )
        .expect(201);
    let base = format!("/frontend/v1/threads/{thread}/messages");

    // A subscriber accepted by shard 0, while shard 1 owns the thread.
    let mut tail = (0..64)
        .map(|_| Tail::open(server.addr, &thread, None))
        .find(|tail| tail.shard == "0")
        .expect("a connection accepted by shard 0");

    let started = Instant::now();
    let posted = client
        .post(&base, r#"{"body":{"text":"hello"}}"#)
        .expect(201);
    let (event, data) = tail.next_json();
    let latency = started.elapsed();
    eprintln!("post -> event latency across cores: {latency:?}");
    assert_eq!(event.kind, "message.created");
    assert_eq!(data, posted);
    let first_id = event.id.unwrap();
    assert_eq!(first_id, posted["created_ts"].as_u64().unwrap());

    let id = posted["key"].as_str().unwrap();
    client
        .put(&format!("{base}/{id}"), r#"{"body":"edited"}"#)
        .expect(200);
    let (event, data) = tail.next_json();
    assert_eq!(
        (event.kind.as_str(), &data["body"]),
        ("message.updated", &json!("edited"))
    );
    client.delete(&format!("{base}/{id}")).expect(200);
    let (event, data) = tail.next_json();
    assert_eq!(
        (event.kind.as_str(), &data["deleted"]),
        ("message.deleted", &json!(true))
    );
    let last_seen = event.id.unwrap();
    drop(tail);

    // Missed while disconnected: replayed in order on reconnect, then live.
    let missed: Vec<Value> = (0..3)
        .map(|n| {
            client
                .post(&base, &json!({ "body": n }).to_string())
                .expect(201)
        })
        .collect();
    let mut resumed = Tail::open(server.addr, &thread, Some(last_seen));
    for expected in &missed {
        let (event, data) = resumed.next_json();
        assert_eq!(event.kind, "message.created");
        assert_eq!(&data, expected);
    }
    let live = client.post(&base, r#"{"body":"live again"}"#).expect(201);
    let (_, data) = resumed.next_json();
    assert_eq!(data, live, "no duplicate of a replayed event, no gap");
}

#[test]
fn streams_check_access_and_input() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client
        .post("/frontend/v1/threads", r#"{"id":"mine","title":"x"}"#)
        .expect(201);
    let mut bob = server.client().acting_for("bob");
    bob.get("/frontend/v1/threads/mine/messages/stream")
        .expect_error(404, "thread_not_found");
    // A refused stream closes its connection, so each case gets its own.
    server
        .client()
        .get("/frontend/v1/threads/nope/messages/stream")
        .expect_error(404, "thread_not_found");
    server
        .client()
        .get("/frontend/v1/threads/mine/messages/stream?last_event_id=abc")
        .expect_error(400, "invalid_cursor");
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off() {
    let server = Server::start(&["--shards", "1"]);
    let mut client = server.client();
    client
        .post("/frontend/v1/threads", r#"{"id":"flood","title":"x"}"#)
        .expect(201);
    // A tiny receive buffer so the server's socket backs up quickly.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut tail = Tail::open_on(socket.into(), "flood", None);

    let body = json!({ "body": "x".repeat(16 * 1024) }).to_string();
    let path = "/frontend/v1/threads/flood/messages";
    for _ in 0..20 {
        let mut burst = Vec::new();
        for _ in 0..50 {
            burst.extend(client.request_bytes("POST", path, Some(&body)));
        }
        client.send_raw(&burst);
        for _ in 0..50 {
            client.read_reply(false).expect(201);
        }
    }
    let mut delivered = 0;
    let last = loop {
        match tail.next() {
            Some(event) if event.kind == "message.created" => delivered += 1,
            other => break other,
        }
    };
    let last = last.expect("a final event before the stream closed");
    assert_eq!(last.kind, "overflow");
    assert!(last.data.contains("slow_subscriber"));
    assert!(
        delivered < 1000,
        "it was cut off before all {delivered} events"
    );
    assert!(
        tail.next().is_none(),
        "the stream is closed after the final event"
    );
}
