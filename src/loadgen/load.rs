//! The measured phase: one monoio runtime per worker thread, each running its
//! share of the connections, recording every request, and reporting a
//! per-second snapshot to the main thread for the progress line.
//!
//! # Timing
//!
//! All workers share one start instant `t0`. Warmup is `[t0, t0 + warmup)`
//! and the measured window `[t0 + warmup, end)`; a request belongs to the
//! window its *start* falls in. No request starts at or after `end`, and the
//! ones still in flight then are awaited (bounded by `--timeout-ms`) so that
//! slow answers are counted instead of being cut off.
//!
//! In the closed loop a request starts when it is sent. In the open loop,
//! connection `c` of `C` at total rate `R` plans request `k` at
//! `t0 + c/R + k*C/R` (the `c/R` phase spreads connections evenly, so the
//! aggregate schedule is one request every `1/R`, and request `k` of
//! connection `c` is slot `c + k*C` of it: the tail scenario writes that
//! slot into its posts). A connection that is behind sends at once, and
//! latency is still measured from the planned time: a stalled server shows
//! up as latency instead of as fewer samples (no coordinated omission).
//! monoio's timer rounds every deadline *up* to the next millisecond, so a
//! connection sleeps until 1 ms before the plan and may then send up to
//! 1 ms early; latency is measured from the earlier of the planned and the
//! actual send time, which is honest both ways.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use super::client::Conn;
use super::report::{Mode, Outcome, Report, Second, Stats, Summary};
use super::scenario::{Rng, ScenarioKind, Stamp, Workload};
use super::{Error, spawn_workers};

/// Pause after a failed connect, so a dead server is not hammered in a loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// How far ahead the workers' shared start is set, so every runtime is up
/// before the first request is due.
pub const START_DELAY: Duration = Duration::from_millis(50);

/// Everything a measured run needs; shared read-only by all workers.
pub struct Plan {
    pub addr: SocketAddr,
    pub addr_text: String,
    pub workload: Arc<Workload>,
    pub connections: usize,
    pub workers: usize,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub seed: u64,
    pub threads: Option<usize>,
    pub quiet: bool,
    /// The shared start instant `t0` (normally now + [`START_DELAY`]); the
    /// tail scenario's subscribers measure from it too.
    pub start: Instant,
    /// Keep the schedule slots of the requests answered 2xx (the tail
    /// scenario expects an event for each).
    pub collect_acked: bool,
}

/// What the measured phase produced.
pub struct Measured {
    pub report: Report,
    /// With [`Plan::collect_acked`]: the slots answered 2xx, unordered.
    pub acked: Vec<u64>,
}

struct Clock {
    t0: Instant,
    measure_start: Instant,
    end: Instant,
}

/// One worker's snapshot of one progress tick.
struct Tick {
    index: u32,
    at: Instant,
    span: Duration,
    stats: Stats,
}

/// A worker's recorder, shared by its connection tasks (one thread, so a
/// `RefCell` suffices).
struct Recorder {
    total: Stats,
    interval: Stats,
    acked: Vec<u64>,
}

impl Recorder {
    fn record(&mut self, measured: bool, outcome: Outcome, latency: Duration, service: Duration) {
        let latency_us = latency.as_micros() as u64;
        let service_us = service.as_micros() as u64;
        self.interval.record(outcome, latency_us, service_us);
        if measured {
            self.total.record(outcome, latency_us, service_us);
        }
    }
}

/// Runs the measured phase and returns the merged report.
pub fn measure(plan: Plan) -> Result<Measured, Error> {
    let workers = plan.workers.clamp(1, plan.connections);
    let t0 = plan.start;
    let clock = Arc::new(Clock {
        t0,
        measure_start: t0 + plan.warmup,
        end: t0 + plan.warmup + plan.duration,
    });
    let plan = Arc::new(plan);
    let (tx, rx) = channel::<Tick>();
    let handles = {
        let plan = plan.clone();
        let clock = clock.clone();
        spawn_workers(workers, "bench", move |worker| {
            worker_main(plan.clone(), clock.clone(), worker, workers, tx.clone())
        })?
    };

    // Merge the workers' ticks and print each second once all have reported.
    let mut pending: BTreeMap<u32, (usize, Tick)> = BTreeMap::new();
    let mut timeline = Vec::new();
    for tick in rx {
        let index = tick.index;
        let entry = pending.entry(index).or_insert_with(|| {
            (
                0,
                Tick {
                    index,
                    at: tick.at,
                    span: tick.span,
                    stats: Stats::new(false),
                },
            )
        });
        entry.0 += 1;
        entry.1.stats.merge(&tick.stats);
        if entry.0 == workers {
            let (_, tick) = pending.remove(&index).expect("present");
            let m = Summary::of(&tick.stats.latency);
            let second = Second {
                t_s: tick.at.duration_since(clock.t0).as_secs_f64(),
                measuring: tick.at > clock.measure_start,
                requests: tick.stats.requests,
                errors: tick.stats.errors.total(),
                rps: tick.stats.requests as f64 / tick.span.as_secs_f64().max(1e-9),
                p50_us: m.p50,
                p99_us: m.p99,
            };
            if !plan.quiet {
                eprintln!("{}", second.line());
            }
            timeline.push(second);
        }
    }

    let mut total = Stats::new(plan.rate.is_some());
    let mut acked = Vec::new();
    for handle in handles {
        let (stats, worker_acked) = handle
            .join()
            .map_err(|_| Error::new("a load worker panicked"))??;
        total.merge(&stats);
        acked.extend(worker_acked);
    }
    let report = Report {
        scenario: plan.workload.kind.name().to_string(),
        mode: if plan.rate.is_some() {
            Mode::Open
        } else {
            Mode::Closed
        },
        addr: plan.addr_text.clone(),
        connections: plan.connections,
        workers,
        threads: plan.threads,
        seed: plan.seed,
        offered_rate: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        stats: total,
        timeline,
        tail: None,
    };
    Ok(Measured { report, acked })
}

async fn worker_main(
    plan: Arc<Plan>,
    clock: Arc<Clock>,
    worker: usize,
    workers: usize,
    tx: Sender<Tick>,
) -> (Stats, Vec<u64>) {
    let open = plan.rate.is_some();
    let recorder = Rc::new(RefCell::new(Recorder {
        total: Stats::new(open),
        interval: Stats::new(false),
        acked: Vec::new(),
    }));
    let mut tasks = Vec::new();
    for index in (worker..plan.connections).step_by(workers) {
        tasks.push(monoio::spawn(connection(
            plan.clone(),
            clock.clone(),
            index,
            recorder.clone(),
        )));
    }
    let ticker = monoio::spawn(ticker(clock.clone(), recorder.clone(), tx));
    for task in tasks {
        task.await;
    }
    ticker.await;
    let mut recorder = recorder.borrow_mut();
    let acked = std::mem::take(&mut recorder.acked);
    (
        std::mem::replace(&mut recorder.total, Stats::new(false)),
        acked,
    )
}

/// Sends this worker's interval stats once a second. Ticks also fall exactly
/// on the start of the measured window and on its end, so no tick mixes
/// warmup and measurement.
async fn ticker(clock: Arc<Clock>, recorder: Rc<RefCell<Recorder>>, tx: Sender<Tick>) {
    let mut index = 0;
    let mut last = clock.t0;
    while last < clock.end {
        index += 1;
        let boundary = if last < clock.measure_start {
            clock.measure_start
        } else {
            clock.end
        };
        let at = (last + Duration::from_secs(1)).min(boundary);
        sleep_until(at).await;
        let stats = std::mem::replace(&mut recorder.borrow_mut().interval, Stats::new(false));
        let span = at - last;
        last = at;
        if tx
            .send(Tick {
                index,
                at,
                span,
                stats,
            })
            .is_err()
        {
            return;
        }
    }
}

async fn sleep_until(at: Instant) {
    monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
}

/// One connection's request loop (see the module docs for the timing rules).
async fn connection(
    plan: Arc<Plan>,
    clock: Arc<Clock>,
    index: usize,
    recorder: Rc<RefCell<Recorder>>,
) {
    let mut rng = Rng::new(plan.seed, index as u64);
    // Open loop: this connection's phase and interval, in seconds.
    let schedule = plan
        .rate
        .map(|rate| (index as f64 / rate, plan.connections as f64 / rate));
    if schedule.is_none() {
        // Closed loop: every connection starts together at t0.
        sleep_until(clock.t0).await;
    }
    let mut conn: Option<Conn> = None;
    let mut k: u64 = 0;
    loop {
        // Open loop: this request's slot in the run's whole schedule.
        let seq = index as u64 + k * plan.connections as u64;
        let planned = schedule.map(|(phase, interval)| {
            clock.t0 + Duration::from_secs_f64(phase + k as f64 * interval)
        });
        k += 1;
        if let Some(planned) = planned {
            if planned >= clock.end {
                break;
            }
            // monoio rounds deadlines up to the next ms; aim 1 ms early.
            let wake = planned
                .checked_sub(Duration::from_millis(1))
                .unwrap_or(planned);
            if Instant::now() < wake {
                sleep_until(wake).await;
            }
        }
        let now = Instant::now();
        if now >= clock.end {
            break;
        }
        let started = planned.map_or(now, |p| p.min(now));
        let measured = started >= clock.measure_start;

        if conn.is_none() {
            match monoio::time::timeout(plan.timeout, Conn::connect(plan.addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(_)) | Err(_) => {
                    let now = Instant::now();
                    recorder.borrow_mut().record(
                        measured,
                        Outcome::Connect,
                        now - started,
                        Duration::ZERO,
                    );
                    monoio::time::sleep(CONNECT_BACKOFF).await;
                    continue;
                }
            }
        }
        // Closed loop: a (re)connect is not part of the request's latency.
        let sent = Instant::now();
        let started = planned.map_or(sent, |p| p.min(sent));
        let stamp = Stamp {
            seq,
            at_us: (started - clock.t0).as_micros() as u64,
        };
        let outcome = send(&plan, &mut conn, &mut rng, stamp).await;
        let done = Instant::now();
        let mut recorder = recorder.borrow_mut();
        recorder.record(measured, outcome, done - started, done - sent);
        if plan.collect_acked && matches!(outcome, Outcome::Status(200..=299)) {
            recorder.acked.push(seq);
        }
    }
}

/// Builds and sends one request on the open connection and reads its
/// answer; a connection that cannot be reused is dropped.
async fn send(plan: &Plan, conn: &mut Option<Conn>, rng: &mut Rng, stamp: Stamp) -> Outcome {
    let c = conn.as_mut().expect("connected by the caller");
    plan.workload.build(rng, stamp, c.request_buf());
    let resp = plan.workload.kind == ScenarioKind::Xadd;
    let exchange = async {
        if resp {
            c.round_trip_resp().await
        } else {
            c.round_trip().await
        }
    };
    match monoio::time::timeout(plan.timeout, exchange).await {
        Ok(Ok(reply)) => {
            if reply.close {
                *conn = None;
            }
            Outcome::Status(reply.status)
        }
        Ok(Err(_)) => {
            *conn = None;
            Outcome::Io
        }
        Err(_) => {
            // The abandoned read still owns the buffers; start afresh.
            *conn = None;
            Outcome::Timeout
        }
    }
}
