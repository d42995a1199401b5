//! The tail scenario: `--subscribers` live-tail streams (Server-Sent
//! Events) follow the target threads while posts arrive at `--rate`, and
//! every event is matched to the post it announces.
//!
//! # How a run goes
//!
//! 1. Subscribers connect, `--tail-threads` OS threads each running one
//!    monoio runtime with one task (and one connection) per subscriber.
//!    Subscriber `i` follows thread `i % threads`. A stream counts as open
//!    once its `200` head arrived: the server registers a subscriber before
//!    answering, so every post committed after that reaches it. Any stream
//!    that does not open aborts the run (it is setup, like creating threads).
//! 2. The posts run through the ordinary open loop (`load`): slot
//!    `seq` of the schedule posts to thread `seq % threads`, and its body
//!    carries `seq` and its planned send time
//!    ([`Stamp`](super::scenario::Stamp)).
//! 3. After the last post was answered, one end marker is posted to each
//!    thread. A thread's events arrive in commit order, so a subscriber that
//!    sees its thread's marker has seen every event it will ever get, and
//!    stops; a deadline stops it if the marker never comes.
//! 4. Every acknowledged (2xx) post is due once at every subscriber of its
//!    thread. What did not arrive is reported as missing, per post.
//!
//! Delivery latency runs from a post's planned send time (or its actual
//! one, if that was earlier, as for request latency) to the moment the read
//! holding its event completed; every subscriber's receipt is one sample.
//! Only posts planned in the measured window are timed; all are checked.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::client::{Conn, parse_head};
use super::load;
use super::report::{Histogram, Report, TailReport, new_histogram};
use super::scenario::{Http, TAIL_END_BODY, TAIL_END_KEY, parse_stamp};
use super::{Error, spawn_workers};

/// Streams opening at once per subscriber thread: a thousand simultaneous
/// connects would overflow the server's accept backlog and wait for SYN
/// retransmits, which says nothing about the tail.
const OPEN_CONCURRENCY: usize = 32;
/// How long subscribers wait for the end marker beyond the posts' end and
/// the time the last posts and the marker may take.
const END_GRACE: Duration = Duration::from_secs(5);
/// First read buffer of a subscriber; grows if an event is larger.
const READ_BUFFER: usize = 8 * 1024;

/// What the subscribers need; shared read-only by their threads.
pub struct Plan {
    pub addr: SocketAddr,
    pub http: Http,
    /// Thread ids; subscriber `i` follows `threads[i % len]`.
    pub threads: Vec<String>,
    pub subscribers: usize,
    pub tail_threads: usize,
    /// Schedule slots of the run: the size of the receipt counters.
    pub slots: usize,
    pub timeout: Duration,
    /// Receipts of posts planned before this offset from the start (the
    /// warmup) are checked but not timed.
    pub measure_from: Duration,
    /// From the start to the end of the posts.
    pub run: Duration,
}

/// Set by the main thread once every stream is open: the posts' start
/// instant, or the news that the run was abandoned.
#[derive(Default)]
pub struct Start {
    t0: OnceLock<Instant>,
    abort: AtomicBool,
}

/// One subscriber thread's receipts (shared by its tasks: one thread, so a
/// `RefCell` suffices), later merged across threads.
pub struct Receipts {
    /// Per schedule slot: how many subscribers got its event.
    pub counts: Vec<u32>,
    pub delivery: Histogram,
    /// Events with a slot outside the schedule (another run's posts).
    pub stray: u64,
    pub out_of_order: u64,
    pub overflowed: u64,
    pub ended_early: u64,
    pub timed_out: u64,
}

impl Receipts {
    fn new(slots: usize) -> Receipts {
        Receipts {
            counts: vec![0; slots],
            delivery: new_histogram(),
            stray: 0,
            out_of_order: 0,
            overflowed: 0,
            ended_early: 0,
            timed_out: 0,
        }
    }

    fn merge(&mut self, other: &Receipts) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.delivery
            .add(&other.delivery)
            .expect("histograms share bounds");
        self.stray += other.stray;
        self.out_of_order += other.out_of_order;
        self.overflowed += other.overflowed;
        self.ended_early += other.ended_early;
        self.timed_out += other.timed_out;
    }
}

/// Running subscribers, between their start and [`Subscribers::finish`].
pub struct Subscribers {
    start: Arc<Start>,
    handles: Vec<std::thread::JoinHandle<Result<Receipts, Error>>>,
}

/// Runs the tail scenario around the posts' open loop `posts`: opens the
/// streams, starts the posts, posts the end markers, then compares what
/// every subscriber received with what was acknowledged.
pub fn measure(
    mut posts: load::Plan,
    subscribers: usize,
    tail_threads: usize,
) -> Result<Report, Error> {
    let rate = posts.rate.expect("the tail scenario runs an open loop");
    let threads = posts.workload.threads.clone();
    let http = posts.workload.http.clone();
    let run = posts.warmup + posts.duration;
    // Every slot of the schedule, plus one round of slack per connection.
    let slots = (run.as_secs_f64() * rate).ceil() as usize + posts.connections;
    let tail_threads = tail_threads.clamp(1, subscribers);
    let streams = open(Plan {
        addr: posts.addr,
        http: http.clone(),
        threads: threads.clone(),
        subscribers,
        tail_threads,
        slots,
        timeout: posts.timeout,
        measure_from: posts.warmup,
        run,
    })?;
    if !posts.quiet {
        eprintln!("tail: {subscribers} streams open, posting");
    }
    // The posts start only now, so that no event can precede a stream.
    posts.start = Instant::now() + load::START_DELAY;
    streams.start(posts.start);
    let (addr, timeout) = (posts.addr, posts.timeout);
    let measured = load::measure(posts)?;
    let end_marker = post_end_markers(addr, http, threads.clone(), timeout)?;
    let receipts = streams.finish(slots)?;
    let tail = reconcile(
        subscribers,
        tail_threads,
        threads.len(),
        &measured.acked,
        receipts,
        end_marker,
    );
    if !tail.complete() {
        // Loud even with --quiet: a lost event is a correctness failure.
        eprintln!(
            "progressdb-bench: INCOMPLETE DELIVERY: {} of {} expected events missing, {} streams ended early, {} timed out, {} out of order",
            tail.missing, tail.expected, tail.ended_early, tail.timed_out, tail.out_of_order
        );
    }
    let mut report = measured.report;
    report.tail = Some(tail);
    Ok(report)
}

/// Starts the subscriber threads and returns once every stream is open.
pub fn open(plan: Plan) -> Result<Subscribers, Error> {
    let plan = Arc::new(plan);
    let start = Arc::new(Start::default());
    let (ready_tx, ready_rx) = channel::<Result<usize, String>>();
    let threads = plan.tail_threads.clamp(1, plan.subscribers);
    let handles = {
        let (plan, start) = (plan.clone(), start.clone());
        spawn_workers(threads, "bench-tail", move |worker| {
            subscriber_thread(
                plan.clone(),
                start.clone(),
                worker,
                threads,
                ready_tx.clone(),
            )
        })?
    };
    let subscribers = Subscribers { start, handles };
    let mut opened = 0;
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(n)) => opened += n,
            Ok(Err(why)) => return Err(subscribers.abort(why)),
            Err(_) => return Err(subscribers.abort("a subscriber thread died".into())),
        }
    }
    debug_assert_eq!(opened, plan.subscribers);
    Ok(subscribers)
}

impl Subscribers {
    /// Lets the subscribers measure from `t0`, the posts' start.
    pub fn start(&self, t0: Instant) {
        let _ = self.start.t0.set(t0);
    }

    fn abort(self, why: String) -> Error {
        self.start.abort.store(true, Ordering::SeqCst);
        for handle in self.handles {
            let _ = handle.join();
        }
        Error::new(format!("setup failed while opening streams: {why}"))
    }

    /// Waits for every subscriber to see its end marker (or the deadline)
    /// and merges their receipts.
    pub fn finish(self, slots: usize) -> Result<Receipts, Error> {
        let mut total = Receipts::new(slots);
        for handle in self.handles {
            let receipts = handle
                .join()
                .map_err(|_| Error::new("a subscriber thread panicked"))??;
            total.merge(&receipts);
        }
        Ok(total)
    }
}

/// One subscriber thread: opens its streams a few at a time, reports to
/// the main thread, waits for the start, then follows every stream.
async fn subscriber_thread(
    plan: Arc<Plan>,
    start: Arc<Start>,
    worker: usize,
    workers: usize,
    ready: Sender<Result<usize, String>>,
) -> Receipts {
    let mine: Vec<usize> = (worker..plan.subscribers).step_by(workers).collect();
    let mut streams = Vec::with_capacity(mine.len());
    for chunk in mine.chunks(OPEN_CONCURRENCY) {
        let opening: Vec<_> = chunk
            .iter()
            .map(|&index| monoio::spawn(open_stream(plan.clone(), index)))
            .collect();
        for task in opening {
            match task.await {
                Ok(stream) => streams.push(stream),
                Err(why) => {
                    let _ = ready.send(Err(why));
                    return Receipts::new(0);
                }
            }
        }
    }
    let _ = ready.send(Ok(streams.len()));
    let t0 = loop {
        if let Some(t0) = start.t0.get() {
            break *t0;
        }
        if start.abort.load(Ordering::SeqCst) {
            return Receipts::new(0);
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    };
    let deadline = t0 + plan.run + 2 * plan.timeout + END_GRACE;
    let receipts = Rc::new(RefCell::new(Receipts::new(plan.slots)));
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let follower = Follower {
                t0,
                measure_from: t0 + plan.measure_from,
                receipts: receipts.clone(),
                last_id: 0,
            };
            monoio::spawn(follow_until(follower, stream, deadline))
        })
        .collect();
    for task in tasks {
        task.await;
    }
    std::mem::replace(&mut *receipts.borrow_mut(), Receipts::new(0))
}

/// An open stream: the socket and whatever arrived after the head.
struct Stream {
    socket: TcpStream,
    buffer: Vec<u8>,
}

/// Connects subscriber `index` and reads its stream's head, within
/// `--timeout-ms`.
async fn open_stream(plan: Arc<Plan>, index: usize) -> Result<Stream, String> {
    match monoio::time::timeout(plan.timeout, open_untimed(&plan, index)).await {
        Ok(result) => result,
        Err(_) => Err(format!("subscriber {index}: no answer within the timeout")),
    }
}

async fn open_untimed(plan: &Plan, index: usize) -> Result<Stream, String> {
    let thread = &plan.threads[index % plan.threads.len()];
    let fail = |what: String| format!("subscriber {index} of thread {thread}: {what}");
    let socket = TcpStream::connect_addr(plan.addr)
        .await
        .map_err(|err| fail(format!("connect: {err}")))?;
    let _ = socket.set_nodelay(true);
    let mut request = Vec::with_capacity(256);
    let path: [&[u8]; 3] = [
        b"/frontend/v1/threads/",
        thread.as_bytes(),
        b"/messages/stream",
    ];
    plan.http.get(&mut request, &path);
    let mut stream = Stream {
        socket,
        buffer: Vec::with_capacity(READ_BUFFER),
    };
    let (written, _) = stream.socket.write_all(request).await;
    written.map_err(|err| fail(format!("send: {err}")))?;
    let head = loop {
        if let Some(head) = parse_head(&stream.buffer).map_err(|err| fail(err.to_string()))? {
            break head;
        }
        if stream.read().await.map_err(|err| fail(err.to_string()))? == 0 {
            return Err(fail("closed before answering".into()));
        }
    };
    if head.status != 200 {
        let body = String::from_utf8_lossy(&stream.buffer[head.len..]);
        let body: String = body.chars().take(300).collect();
        return Err(fail(format!("HTTP {}: {body}", head.status)));
    }
    stream.buffer.drain(..head.len);
    Ok(stream)
}

impl Stream {
    /// Reads more bytes after those buffered; 0 means the stream ended.
    async fn read(&mut self) -> std::io::Result<usize> {
        if self.buffer.len() == self.buffer.capacity() {
            self.buffer.reserve(self.buffer.capacity().max(READ_BUFFER));
        }
        let buffer = std::mem::take(&mut self.buffer);
        let len = buffer.len();
        let (result, slice) = self.socket.read(buffer.slice_mut(len..)).await;
        self.buffer = slice.into_inner();
        result
    }
}

/// How a stream ended.
enum Ending {
    /// Its thread's end marker arrived.
    Marker,
    /// The server closed it or it broke, before the marker.
    Early,
}

/// One subscriber's view while it follows its stream.
struct Follower {
    t0: Instant,
    measure_from: Instant,
    receipts: Rc<RefCell<Receipts>>,
    /// The last event id seen; ids must increase along a stream.
    last_id: u64,
}

/// Follows a stream until its end marker, its end, or `deadline`. A stream
/// abandoned at the deadline is dropped with its read still in flight,
/// which is fine because it is never used again.
async fn follow_until(mut follower: Follower, stream: Stream, deadline: Instant) {
    let receipts = follower.receipts.clone();
    let deadline = monoio::time::Instant::from_std(deadline);
    match monoio::time::timeout_at(deadline, follow(&mut follower, stream)).await {
        Ok(Ending::Marker) => {}
        Ok(Ending::Early) => receipts.borrow_mut().ended_early += 1,
        Err(_) => receipts.borrow_mut().timed_out += 1,
    }
}

async fn follow(follower: &mut Follower, mut stream: Stream) -> Ending {
    let mut arrived = Instant::now();
    loop {
        let mut used = 0;
        while let Some((length, event)) = next_event(&stream.buffer[used..]) {
            used += length;
            if follower.take(&event, arrived) {
                return Ending::Marker;
            }
        }
        stream.buffer.drain(..used);
        match stream.read().await {
            Ok(0) | Err(_) => return Ending::Early,
            Ok(_) => arrived = Instant::now(),
        }
    }
}

impl Follower {
    /// Records one event; true when it is the end marker.
    fn take(&mut self, event: &Event<'_>, arrived: Instant) -> bool {
        let mut receipts = self.receipts.borrow_mut();
        match event.kind {
            b"overflow" => {
                receipts.overflowed += 1;
                return false;
            }
            b"message.created" => {}
            _ => return false,
        }
        if let Some(id) = event.id {
            if id <= self.last_id {
                receipts.out_of_order += 1;
                return false;
            }
            self.last_id = id;
        }
        if event
            .data
            .windows(TAIL_END_KEY.len())
            .any(|w| w == TAIL_END_KEY)
        {
            return true;
        }
        let Some(stamp) = parse_stamp(event.data) else {
            return false;
        };
        match receipts.counts.get_mut(stamp.seq as usize) {
            Some(count) => *count += 1,
            None => receipts.stray += 1,
        }
        let planned = self.t0 + Duration::from_micros(stamp.at_us);
        if planned >= self.measure_from {
            let latency = arrived.saturating_duration_since(planned);
            receipts
                .delivery
                .saturating_record((latency.as_micros() as u64).max(1));
        }
        false
    }
}

/// One Server-Sent Event, borrowed from the read buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    pub id: Option<u64>,
    pub kind: &'a [u8],
    /// The last `data:` line (ProgressDB sends one per event).
    pub data: &'a [u8],
}

/// The first complete event in `buf` and the bytes it took, or `None` if
/// no blank line ends one yet. Comments and blocks without an `event:`
/// field (the `retry:` hint) come back with an empty `kind`. Lines may end
/// in LF or CRLF.
pub fn next_event(buf: &[u8]) -> Option<(usize, Event<'_>)> {
    let mut event = Event::default();
    let mut pos = 0;
    loop {
        let end = buf[pos..].iter().position(|&b| b == b'\n')? + pos;
        let line = &buf[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = end + 1;
        if line.is_empty() {
            return Some((pos, event));
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"id" => event.id = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
            b"event" => event.kind = value,
            b"data" => event.data = value,
            _ => {} // comments (empty field), retry, unknown fields
        }
    }
}

/// Posts the end marker to every thread once; true if all were
/// acknowledged.
pub fn post_end_markers(
    addr: SocketAddr,
    http: Http,
    threads: Vec<String>,
    timeout: Duration,
) -> Result<bool, Error> {
    let handles = spawn_workers(1, "bench-tail-end", move |_| {
        let (http, threads) = (http.clone(), threads.clone());
        async move {
            let mut all = true;
            let mut conn: Option<Conn> = None;
            for thread in &threads {
                let path: [&[u8]; 3] = [b"/frontend/v1/threads/", thread.as_bytes(), b"/messages"];
                let posted = monoio::time::timeout(timeout, async {
                    if conn.is_none() {
                        conn = Some(Conn::connect(addr).await?);
                    }
                    let c = conn.as_mut().expect("connected above");
                    http.post_json(c.request_buf(), &path, TAIL_END_BODY);
                    c.round_trip().await
                })
                .await;
                match posted {
                    Ok(Ok(reply)) if (200..300).contains(&reply.status) && !reply.close => {}
                    Ok(Ok(reply)) if (200..300).contains(&reply.status) => conn = None,
                    _ => {
                        all = false;
                        conn = None;
                    }
                }
            }
            all
        }
    })?;
    let mut all = true;
    for handle in handles {
        all &= handle
            .join()
            .map_err(|_| Error::new("the end marker thread panicked"))??;
    }
    Ok(all)
}

/// Subscribers of thread `t` when `subscribers` are dealt round robin over
/// `threads`.
pub fn subscribers_of(t: usize, subscribers: usize, threads: usize) -> u64 {
    (subscribers / threads + usize::from(t < subscribers % threads)) as u64
}

/// Compares the receipts with the acknowledged posts.
pub fn reconcile(
    plan_subscribers: usize,
    tail_threads: usize,
    threads: usize,
    acked: &[u64],
    receipts: Receipts,
    end_marker: bool,
) -> TailReport {
    let mut is_acked = vec![false; receipts.counts.len()];
    for &seq in acked {
        if let Some(slot) = is_acked.get_mut(seq as usize) {
            *slot = true;
        }
    }
    let mut report = TailReport {
        subscribers: plan_subscribers,
        tail_threads,
        posts_acked: acked.len() as u64,
        expected: 0,
        received: 0,
        missing: 0,
        missing_examples: Vec::new(),
        unacked: receipts.stray,
        out_of_order: receipts.out_of_order,
        overflowed: receipts.overflowed,
        ended_early: receipts.ended_early,
        timed_out: receipts.timed_out,
        end_marker,
        delivery: receipts.delivery,
    };
    for (seq, (&count, &acked)) in receipts.counts.iter().zip(&is_acked).enumerate() {
        if !acked {
            report.unacked += u64::from(count);
            continue;
        }
        let due = subscribers_of(seq % threads, plan_subscribers, threads);
        let got = u64::from(count).min(due);
        report.expected += due;
        report.received += got;
        if got < due {
            report.missing += due - got;
            if report.missing_examples.len() < 10 {
                report.missing_examples.push((seq as u64, due - got));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_line_endings_and_partial_input() {
        let raw = b"retry: 1000\n\n: heartbeat\n\nid: 42\nevent: message.created\ndata: {\"a\":1}\n\nid: 43\r\nevent: x\r\ndata:y\r\n\r\nid: 4";
        let (used, first) = next_event(raw).unwrap();
        assert_eq!(first, Event::default());
        let rest = &raw[used..];
        let (used2, comment) = next_event(rest).unwrap();
        assert_eq!(comment, Event::default());
        let rest = &rest[used2..];
        let (used3, event) = next_event(rest).unwrap();
        assert_eq!(
            event,
            Event {
                id: Some(42),
                kind: b"message.created",
                data: b"{\"a\":1}",
            }
        );
        let rest = &rest[used3..];
        let (used4, crlf) = next_event(rest).unwrap();
        assert_eq!(
            (crlf.id, crlf.kind, crlf.data),
            (Some(43), &b"x"[..], &b"y"[..])
        );
        assert_eq!(
            next_event(&rest[used4..]),
            None,
            "an incomplete event waits"
        );
    }

    #[test]
    fn the_end_marker_is_recognized() {
        let receipts = Rc::new(RefCell::new(Receipts::new(4)));
        let now = Instant::now();
        let mut follower = Follower {
            t0: now,
            measure_from: now,
            receipts: receipts.clone(),
            last_id: 0,
        };
        let post = br#"{"id":"m","body":{"bench_seq":2,"bench_at_us":0,"text":"t"}}"#;
        let end = br#"{"id":"m","body":{"bench_end":true}}"#;
        let event = |id, data| Event {
            id: Some(id),
            kind: b"message.created",
            data,
        };
        assert!(!follower.take(&event(5, post), now));
        assert!(!follower.take(&event(5, post), now), "a repeated id");
        assert!(follower.take(&event(6, end), now));
        let receipts = receipts.borrow();
        assert_eq!(receipts.counts, vec![0, 0, 1, 0]);
        assert_eq!(receipts.out_of_order, 1);
        assert_eq!(receipts.delivery.len(), 1);
    }

    #[test]
    fn reconcile_counts_what_each_acknowledged_post_owes() {
        // 5 subscribers over 2 threads: 3 follow thread 0, 2 follow thread 1.
        assert_eq!(subscribers_of(0, 5, 2), 3);
        assert_eq!(subscribers_of(1, 5, 2), 2);
        let mut receipts = Receipts::new(5);
        receipts.counts = vec![3, 2, 1, 0, 2];
        // Slot 2 reached one of three, slot 3 nobody; slot 4 was not
        // acknowledged (say it timed out) but arrived anyway.
        let report = reconcile(5, 1, 2, &[0, 1, 2, 3], receipts, true);
        assert_eq!(report.posts_acked, 4);
        assert_eq!(report.expected, 3 + 2 + 3 + 2);
        assert_eq!(report.received, 3 + 2 + 1);
        assert_eq!(report.missing, 4);
        assert_eq!(report.missing_examples, vec![(2, 2), (3, 2)]);
        assert_eq!(report.unacked, 2);
        assert!(!report.complete());
    }
}
