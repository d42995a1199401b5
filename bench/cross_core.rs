//! Cost of one cross-core hop: a request/reply between two glommio
//! executors pinned to different CPUs, against the same request/reply
//! between two tasks of one executor (a "local hop") in the same run.
//!
//! The exchange has the shape of `mesh`: the caller takes a ticket,
//! parks a one-slot `local_channel` for the reply under it and sends
//! `Request { ticket }`; the owner's receive loop spawns a task per request
//! that sends `Reply { ticket }` back; the caller's receive loop hands the
//! reply to the waiting task. Cross-core, both directions are one
//! `channel_mesh::MeshBuilder::full(2, CHANNEL_CAPACITY)` (executors from a
//! `LocalExecutorPoolBuilder` with `PoolPlacement::MaxSpread(2, None)`, no
//! spinning before parking, as the server runs them); locally they are two
//! `local_channel`s. The far side does no work, so the figures are pure
//! transport, scheduling and wake-up cost. A second cross-core run lets the
//! executors busy-poll for `SPIN_BEFORE_PARK` before parking, which
//! separates the channel cost from the cost of waking a parked core.
//!
//! Two loads per path: one call at a time (round-trip latency: mean from the
//! total time, percentiles from a per-call clock read) and `IN_FLIGHT`
//! concurrent callers (throughput). Run: `cargo bench --bench cross_core`

#[path = "machine.rs"]
mod machine;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{LocalExecutorBuilder, LocalExecutorPoolBuilder, Placement, PoolPlacement};

/// Each load runs for about this long.
const CELL_TIME: Duration = Duration::from_millis(2000);
/// Untimed calls before each load.
const WARMUP_TIME: Duration = Duration::from_millis(200);
/// Concurrent callers in the throughput load.
const IN_FLIGHT: usize = 64;
/// Slots per direction of the mesh, as `mesh::CHANNEL_CAPACITY`.
const CHANNEL_CAPACITY: usize = 1024;
/// Extra cross-core run with executors that busy-poll this long before
/// parking, to show how much of a hop is waking a parked core. Longer than
/// a round trip, so with one call in flight neither side ever parks.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);
/// io_uring buffer memory per executor; the bench does no I/O.
const IO_MEMORY: usize = 1 << 20;

enum Msg {
    Request {
        ticket: u64,
        payload: u64,
    },
    Reply {
        ticket: u64,
        payload: u64,
    },
    /// Ends the owner's receive loop, which echoes it to end the caller's.
    Stop,
}

/// Where one side's messages go.
enum Link {
    Local(LocalSender<Msg>),
    Mesh { senders: Senders<Msg>, peer: usize },
}

impl Link {
    async fn send(&self, msg: Msg) {
        let sent = match self {
            Link::Local(sender) => sender.send(msg).await.is_ok(),
            Link::Mesh { senders, peer } => senders.send_to(*peer, msg).await.is_ok(),
        };
        assert!(sent, "peer went away");
    }
}

/// Where one side's messages arrive.
enum Inbox {
    Local(LocalReceiver<Msg>),
    Mesh(ConnectedReceiver<Msg>),
}

impl Inbox {
    async fn recv(&self) -> Option<Msg> {
        match self {
            Inbox::Local(receiver) => receiver.recv().await,
            Inbox::Mesh(receiver) => receiver.recv().await,
        }
    }
}

/// The calling side, shaped like `mesh::Mesh::call`.
struct Caller {
    link: Link,
    pending: RefCell<HashMap<u64, LocalSender<u64>>>,
    next_ticket: Cell<u64>,
}

impl Caller {
    async fn call(&self, payload: u64) -> u64 {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket.wrapping_add(1));
        let (reply_tx, reply_rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(ticket, reply_tx);
        self.link.send(Msg::Request { ticket, payload }).await;
        reply_rx.recv().await.expect("reply")
    }

    /// The caller's receive loop, until the owner echoes `Stop`.
    async fn receive(&self, inbox: Inbox) {
        while let Some(msg) = inbox.recv().await {
            match msg {
                Msg::Reply { ticket, payload } => {
                    let waiter = self.pending.borrow_mut().remove(&ticket);
                    let _ = waiter.expect("known ticket").try_send(payload);
                }
                Msg::Stop => return,
                Msg::Request { .. } => unreachable!("the caller serves nothing"),
            }
        }
    }
}

/// The owner's receive loop: a task per request sends the reply.
async fn serve(inbox: Inbox, link: Link) {
    let link = Rc::new(link);
    while let Some(msg) = inbox.recv().await {
        match msg {
            Msg::Request { ticket, payload } => {
                let link = link.clone();
                glommio::spawn_local(async move {
                    link.send(Msg::Reply {
                        ticket,
                        payload: payload + 1,
                    })
                    .await;
                })
                .detach();
            }
            Msg::Stop => {
                link.send(Msg::Stop).await;
                return;
            }
            Msg::Reply { .. } => unreachable!("the owner calls nobody"),
        }
    }
}

/// Picks one figure out of a run, for one table row.
type Metric = fn(&Figures) -> f64;

#[derive(Debug)]
struct Figures {
    /// Sequential round trips: mean and percentiles, ns.
    mean_ns: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    sequential_per_s: f64,
    concurrent_per_s: f64,
}

/// Runs both loads from the calling side; `inbox` carries replies.
async fn drive(caller: Rc<Caller>, inbox: Inbox) -> Figures {
    let receiver = {
        let caller = caller.clone();
        glommio::spawn_local(async move { caller.receive(inbox).await })
    };

    let started = Instant::now();
    while started.elapsed() < WARMUP_TIME {
        caller.call(0).await;
    }
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let mut previous = started;
    loop {
        let payload = samples.len() as u64;
        assert_eq!(caller.call(payload).await, payload + 1);
        let now = Instant::now();
        samples.push((now - previous).as_nanos() as u64);
        previous = now;
        if now - started >= CELL_TIME {
            break;
        }
    }
    let sequential_seconds = (previous - started).as_secs_f64();
    let calls = samples.len();
    samples.sort_unstable();
    let percentile = |p: f64| samples[((calls as f64 * p) as usize).min(calls - 1)];

    let deadline = Instant::now() + WARMUP_TIME + CELL_TIME;
    let measure_from = Instant::now() + WARMUP_TIME;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let caller = caller.clone();
            glommio::spawn_local(async move {
                let mut done = 0u64;
                loop {
                    caller.call(done).await;
                    let now = Instant::now();
                    if now >= deadline {
                        return done;
                    }
                    if now >= measure_from {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let mut concurrent_calls = 0;
    for worker in workers {
        concurrent_calls += worker.await;
    }
    let concurrent_seconds = (Instant::now() - measure_from).as_secs_f64();

    caller.link.send(Msg::Stop).await;
    receiver.await;
    Figures {
        mean_ns: sequential_seconds * 1e9 / calls as f64,
        p50_ns: percentile(0.50),
        p99_ns: percentile(0.99),
        p999_ns: percentile(0.999),
        sequential_per_s: calls as f64 / sequential_seconds,
        concurrent_per_s: concurrent_calls as f64 / concurrent_seconds,
    }
}

fn caller(link: Link) -> Rc<Caller> {
    Rc::new(Caller {
        link,
        pending: RefCell::new(HashMap::new()),
        next_ticket: Cell::new(0),
    })
}

/// Caller and owner as two tasks of one executor on CPU 0.
fn local_hop() -> Figures {
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(IO_MEMORY)
        .spawn(|| async move {
            let (request_tx, request_rx) = local_channel::new_bounded(CHANNEL_CAPACITY);
            let (reply_tx, reply_rx) = local_channel::new_bounded(CHANNEL_CAPACITY);
            glommio::spawn_local(serve(Inbox::Local(request_rx), Link::Local(reply_tx))).detach();
            drive(caller(Link::Local(request_tx)), Inbox::Local(reply_rx)).await
        })
        .expect("executor")
        .join()
        .expect("local run")
}

/// Caller on executor 0, owner on executor 1, on two different CPUs.
fn cross_core_hop(spin: Option<Duration>) -> Figures {
    let mesh = MeshBuilder::<Msg, _>::full(2, CHANNEL_CAPACITY);
    let mut pool =
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(2, None)).io_memory(IO_MEMORY);
    if let Some(spin) = spin {
        pool = pool.spin_before_park(spin);
    }
    let results = pool
        .on_all_shards(move || async move {
            let (senders, mut receivers) = mesh.join().await.expect("mesh join");
            let me = senders.peer_id();
            let peer = 1 - me;
            let (from, inbox) = receivers.streams().pop().expect("one peer");
            assert_eq!(from, peer);
            let link = Link::Mesh { senders, peer };
            if me == 0 {
                Some(drive(caller(link), Inbox::Mesh(inbox)).await)
            } else {
                serve(Inbox::Mesh(inbox), link).await;
                None
            }
        })
        .expect("executor pool")
        .join_all();
    results
        .into_iter()
        .map(|result| result.expect("cross-core run"))
        .find_map(|figures| figures)
        .expect("executor 0 reports")
}

fn main() {
    println!(
        "Cross-core request/reply (glommio channel mesh) vs local hop (local_channel); \
         {}",
        machine::describe(),
    );
    let local = local_hop();
    let cross = cross_core_hop(None);
    let spinning = cross_core_hop(Some(SPIN_BEFORE_PARK));
    println!();
    println!(
        "| metric | local hop (1 executor) | cross-core hop (2 CPUs) | cross ÷ local \
         | cross-core, spin {} µs before parking | spin ÷ local |",
        SPIN_BEFORE_PARK.as_micros()
    );
    println!("|---|---|---|---|---|---|");
    let concurrent = format!("round trips/s, {IN_FLIGHT} in flight");
    let rows: [(&str, Metric); 6] = [
        ("round trip, 1 in flight: mean ns", |f| f.mean_ns),
        ("round trip, 1 in flight: p50 ns", |f| f.p50_ns as f64),
        ("round trip, 1 in flight: p99 ns", |f| f.p99_ns as f64),
        ("round trip, 1 in flight: p99.9 ns", |f| f.p999_ns as f64),
        ("round trips/s, 1 in flight", |f| f.sequential_per_s),
        (&concurrent, |f| f.concurrent_per_s),
    ];
    for (metric, figure) in rows {
        let (local, cross, spinning) = (figure(&local), figure(&cross), figure(&spinning));
        println!(
            "| {metric} | {local:.0} | {cross:.0} | {:.2} | {spinning:.0} | {:.2} |",
            cross / local,
            spinning / local
        );
    }
}
