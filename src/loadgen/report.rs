//! Counting and reporting: per-worker [`Stats`] (histograms + counters), their
//! merge, the human table and the JSON document.
//!
//! Latencies are recorded in whole microseconds in an HdrHistogram with 3
//! significant digits (exact below 2048 µs, within 0.1% above) from 1 µs to
//! one hour; longer values saturate at one hour.
//!
//! # What is counted
//!
//! * `requests`: every request slot started inside the measured window
//!   (after warmup, before the end): answered ones of any status, plus those
//!   that failed to connect, timed out or broke on I/O. Requests still in
//!   flight at the end are waited for (up to `--timeout-ms`) and counted.
//! * `ok`: answered with a 2xx status.
//! * The latency histogram holds every *answered* request, 2xx or not;
//!   connect, timeout and I/O failures have no meaningful latency and appear
//!   only as error counts.
//!
//! # JSON schema (`schema_version` 1)
//!
//! Field names and types are stable; new fields may be added within a schema
//! version, a rename or type change bumps it.
//!
//! ```text
//! {
//!   "schema_version": 1,                 integer
//!   "tool": "progressdb-bench 0.1.0",    string
//!   "scenario": "post",                  post | read | mix | hot | url | tail
//!   "mode": "closed",                    closed | open
//!   "addr": "127.0.0.1:8080",            string, as given
//!   "connections": 64, "workers": 1,     integers
//!   "threads": 100,                      integer (target thread count) or null (url)
//!   "seed": 1,                           integer
//!   "offered_rate": 2000.0,              number (req/s) in open loop, null in closed loop
//!   "achieved_rate": 1999.6,             number, requests / duration_s (= throughput_rps)
//!   "duration_s": 10.0, "warmup_s": 2.0, numbers (measured window, warmup before it)
//!   "requests": 123, "ok": 123,          integers
//!   "throughput_rps": 12.3,              number
//!   "latency_us": {"p50","p90","p99","p999","max","min": integers, "mean","stdev": numbers},
//!                                        all 0 when nothing was answered
//!   "service_time_us": {same keys} or null
//!       open loop only: latency measured from the actual send instead of the
//!       planned send time, i.e. without the coordinated-omission correction
//!   "errors": {"total": integer, "by_status": {"500": integer, ...},
//!              "io": integer, "timeout": integer, "connect": integer},
//!   "percentiles": [{"percentile": 99.9, "value_us": integer}, ...],
//!   "histogram": [{"value_us": integer, "count": integer}, ...]
//!       every recorded bucket, ascending: "count" requests had a latency
//!       equivalent to "value_us" (the bucket's highest value)
//!   "timeline": [{"t_s": number, "phase": "warmup"|"measure", "requests": integer,
//!                 "errors": integer, "rps": number, "p50_us": integer, "p99_us": integer}, ...]
//!       one entry per progress tick (about one per second, t_s from the start)
//!   "tail": null, or in the tail scenario (the fields above then describe the posts):
//!     {"subscribers": integer, "tail_threads": integer,
//!      "posts_acked": integer,          posts answered 2xx: each is due at every
//!                                       subscriber of its thread
//!      "expected": integer,             deliveries due (posts_acked x their subscribers)
//!      "received": integer,             deliveries of acknowledged posts that arrived
//!      "missing": integer,              expected - received; 0 in a correct run
//!      "missing_examples": [{"seq": integer, "subscribers": integer}, ...],
//!                                       up to 10 posts (schedule slot) that some
//!                                       subscribers never got, and how many
//!      "unacked": integer,              events of posts that failed or timed out
//!      "out_of_order": integer,         events whose id did not increase on their stream
//!      "overflowed": integer,           subscribers cut off with an `overflow` event
//!      "ended_early": integer,          streams that closed or broke before the end marker
//!      "timed_out": integer,            streams still without the end marker at the deadline
//!      "end_marker": bool,              the end marker was acknowledged on every thread
//!      "delivery_samples": integer,     receipts of posts planned in the measured window
//!      "delivery_us": {same keys as latency_us}
//!          from each post's planned send time to the arrival of its event, one
//!          sample per subscriber that got it}
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

pub const SCHEMA_VERSION: u64 = 1;

pub type Histogram = hdrhistogram::Histogram<u64>;

/// One hour in microseconds: the largest latency recorded without saturating.
const HIGHEST_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static histogram bounds are valid")
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// The connection could not be established.
    Connect,
    /// No complete response within `--timeout-ms`.
    Timeout,
    /// The connection broke, closed early or spoke bad HTTP.
    Io,
}

/// Failures broken down by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    /// Responses with a status outside 2xx, by status.
    pub by_status: BTreeMap<u16, u64>,
    pub io: u64,
    pub timeout: u64,
    pub connect: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.io + self.timeout + self.connect
    }

    fn add(&mut self, other: &Errors) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.io += other.io;
        self.timeout += other.timeout;
        self.connect += other.connect;
    }
}

/// Counters and histograms of a set of requests (one worker, one second, or
/// a whole run after merging).
#[derive(Debug, Clone)]
pub struct Stats {
    pub requests: u64,
    pub ok: u64,
    pub errors: Errors,
    /// Answered requests, from the (planned) start.
    pub latency: Histogram,
    /// Answered requests, from the actual send; kept only in open loop.
    pub service: Option<Histogram>,
}

impl Stats {
    pub fn new(with_service: bool) -> Stats {
        Stats {
            requests: 0,
            ok: 0,
            errors: Errors::default(),
            latency: new_histogram(),
            service: with_service.then(new_histogram),
        }
    }

    pub fn record(&mut self, outcome: Outcome, latency_us: u64, service_us: u64) {
        self.requests += 1;
        match outcome {
            Outcome::Status(status) => {
                if (200..300).contains(&status) {
                    self.ok += 1;
                } else {
                    *self.errors.by_status.entry(status).or_default() += 1;
                }
                self.latency.saturating_record(latency_us.max(1));
                if let Some(service) = &mut self.service {
                    service.saturating_record(service_us.max(1));
                }
            }
            Outcome::Connect => self.errors.connect += 1,
            Outcome::Timeout => self.errors.timeout += 1,
            Outcome::Io => self.errors.io += 1,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.errors.add(&other.errors);
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        if let (Some(mine), Some(theirs)) = (&mut self.service, &other.service) {
            mine.add(theirs).expect("histograms share bounds");
        }
    }
}

/// Summary statistics of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
}

impl Summary {
    pub fn of(h: &Histogram) -> Summary {
        if h.is_empty() {
            return Summary {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                min: 0,
                mean: 0.0,
                stdev: 0.0,
            };
        }
        Summary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99, "p999": self.p999,
            "max": self.max, "min": self.min,
            "mean": round3(self.mean), "stdev": round3(self.stdev),
        })
    }
}

/// One progress tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Second {
    /// End of the tick, seconds since the run started (warmup included).
    pub t_s: f64,
    pub measuring: bool,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Second {
    pub fn line(&self) -> String {
        format!(
            "{:>6.1}s {:<7} {:>9.0} req/s  errors {:<6} p50 {:>8.3} ms  p99 {:>8.3} ms",
            self.t_s,
            if self.measuring { "measure" } else { "warmup" },
            self.rps,
            self.errors,
            ms(self.p50_us),
            ms(self.p99_us),
        )
    }
}

/// Closed loop (as fast as possible) or open loop (a constant offered rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Closed,
    Open,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub mode: Mode,
    pub addr: String,
    pub connections: usize,
    pub workers: usize,
    pub threads: Option<usize>,
    pub seed: u64,
    pub offered_rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub stats: Stats,
    pub timeline: Vec<Second>,
    /// The tail scenario's deliveries; `None` in the others.
    pub tail: Option<TailReport>,
}

/// What the tail scenario's subscribers received (see the JSON schema
/// above for each count's meaning).
#[derive(Debug, Clone)]
pub struct TailReport {
    pub subscribers: usize,
    pub tail_threads: usize,
    pub posts_acked: u64,
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    /// (schedule slot, subscribers that never got it), at most ten.
    pub missing_examples: Vec<(u64, u64)>,
    pub unacked: u64,
    pub out_of_order: u64,
    pub overflowed: u64,
    pub ended_early: u64,
    pub timed_out: u64,
    pub end_marker: bool,
    /// Delivery latency of each receipt of a measured post, in µs.
    pub delivery: Histogram,
}

impl TailReport {
    /// True when every subscriber got every acknowledged post, in order,
    /// and saw the end of the run.
    pub fn complete(&self) -> bool {
        self.missing == 0
            && self.out_of_order == 0
            && self.ended_early == 0
            && self.timed_out == 0
            && self.end_marker
    }

    fn table(&self, t: &mut String) {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "tail          {} subscribers on {} thread{}",
            self.subscribers,
            self.tail_threads,
            if self.tail_threads == 1 { "" } else { "s" },
        );
        let _ = writeln!(
            t,
            "deliveries    {} expected ({} posts acknowledged), {} received, {} missing",
            self.expected, self.posts_acked, self.received, self.missing
        );
        let m = Summary::of(&self.delivery);
        let _ = writeln!(
            t,
            "{:<14}{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "delivery (ms)", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        latency_row(t, "post to event", &m);
        let _ = writeln!(t, "  samples     {}", self.delivery.len());
        if self.complete() {
            let _ = writeln!(t, "  every subscriber got every acknowledged post");
        } else {
            let examples: Vec<String> = self
                .missing_examples
                .iter()
                .map(|(seq, n)| format!("post {seq} missed by {n}"))
                .collect();
            let _ = writeln!(t, "INCOMPLETE DELIVERY");
            let _ = writeln!(
                t,
                "  missing     {} ({})",
                self.missing,
                examples.join(", ")
            );
            let _ = writeln!(t, "  overflowed  {}", self.overflowed);
            let _ = writeln!(t, "  ended early {}", self.ended_early);
            let _ = writeln!(t, "  timed out   {}", self.timed_out);
            let _ = writeln!(t, "  out of order {}", self.out_of_order);
            if !self.end_marker {
                let _ = writeln!(t, "  the end marker post failed");
            }
        }
        if self.unacked > 0 {
            let _ = writeln!(t, "  events of unacknowledged posts {}", self.unacked);
        }
    }

    fn json(&self) -> Value {
        let examples: Vec<Value> = self
            .missing_examples
            .iter()
            .map(|(seq, n)| json!({ "seq": seq, "subscribers": n }))
            .collect();
        json!({
            "subscribers": self.subscribers,
            "tail_threads": self.tail_threads,
            "posts_acked": self.posts_acked,
            "expected": self.expected,
            "received": self.received,
            "missing": self.missing,
            "missing_examples": examples,
            "unacked": self.unacked,
            "out_of_order": self.out_of_order,
            "overflowed": self.overflowed,
            "ended_early": self.ended_early,
            "timed_out": self.timed_out,
            "end_marker": self.end_marker,
            "delivery_samples": self.delivery.len(),
            "delivery_us": Summary::of(&self.delivery).json(),
        })
    }
}

impl Report {
    pub fn throughput_rps(&self) -> f64 {
        self.stats.requests as f64 / self.duration_s
    }

    /// The human-readable result table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let s = &self.stats;
        let _ = writeln!(
            t,
            "scenario      {} ({} loop, {} connections, {} worker{}{})",
            self.scenario,
            self.mode.name(),
            self.connections,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.threads
                .map(|n| format!(", {n} thread{}", if n == 1 { "" } else { "s" }))
                .unwrap_or_default(),
        );
        let _ = writeln!(t, "target        {}", self.addr);
        let _ = writeln!(
            t,
            "duration      {:.1} s measured after {:.1} s warmup",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(t, "requests      {} ({} ok)", s.requests, s.ok);
        let _ = writeln!(t, "throughput    {:.1} req/s", self.throughput_rps());
        if let Some(rate) = self.offered_rate {
            let _ = writeln!(
                t,
                "offered rate  {rate:.1} req/s, achieved {:.1} req/s ({:.2}%)",
                self.throughput_rps(),
                100.0 * self.throughput_rps() / rate
            );
        }
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<14}{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let mut row = |name: &str, h: &Histogram| {
            latency_row(&mut t, name, &Summary::of(h));
        };
        row(
            if self.mode == Mode::Open {
                "from planned"
            } else {
                "response"
            },
            &s.latency,
        );
        if let Some(service) = &s.service {
            row("from send", service);
        }
        let e = &s.errors;
        let _ = writeln!(t);
        let _ = writeln!(t, "errors        {}", e.total());
        for (status, n) in &e.by_status {
            let _ = writeln!(t, "  HTTP {status}      {n}");
        }
        let _ = writeln!(t, "  connect     {}", e.connect);
        let _ = writeln!(t, "  timeout     {}", e.timeout);
        let _ = writeln!(t, "  io          {}", e.io);
        if let Some(tail) = &self.tail {
            tail.table(&mut t);
        }
        t
    }

    /// The JSON document described in the module docs.
    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let e = &s.errors;
        let by_status: serde_json::Map<String, Value> = e
            .by_status
            .iter()
            .map(|(status, n)| (status.to_string(), json!(n)))
            .collect();
        let percentiles: Vec<Value> = [
            50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
        ]
        .iter()
        .map(|&p| {
            let value = if s.latency.is_empty() {
                0
            } else {
                s.latency.value_at_percentile(p)
            };
            json!({ "percentile": p, "value_us": value })
        })
        .collect();
        let histogram: Vec<Value> = s
            .latency
            .iter_recorded()
            .map(|v| json!({ "value_us": v.value_iterated_to(), "count": v.count_at_value() }))
            .collect();
        let timeline: Vec<Value> = self
            .timeline
            .iter()
            .map(|sec| {
                json!({
                    "t_s": round3(sec.t_s),
                    "phase": if sec.measuring { "measure" } else { "warmup" },
                    "requests": sec.requests,
                    "errors": sec.errors,
                    "rps": round3(sec.rps),
                    "p50_us": sec.p50_us,
                    "p99_us": sec.p99_us,
                })
            })
            .collect();
        json!({
            "schema_version": SCHEMA_VERSION,
            "tool": concat!("progressdb-bench ", env!("CARGO_PKG_VERSION")),
            "scenario": self.scenario,
            "mode": self.mode.name(),
            "addr": self.addr,
            "connections": self.connections,
            "workers": self.workers,
            "threads": self.threads,
            "seed": self.seed,
            "offered_rate": self.offered_rate,
            "achieved_rate": round3(self.throughput_rps()),
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "requests": s.requests,
            "ok": s.ok,
            "throughput_rps": round3(self.throughput_rps()),
            "latency_us": Summary::of(&s.latency).json(),
            "service_time_us": s.service.as_ref().map(|h| Summary::of(h).json()),
            "errors": {
                "total": e.total(),
                "by_status": by_status,
                "io": e.io,
                "timeout": e.timeout,
                "connect": e.connect,
            },
            "percentiles": percentiles,
            "histogram": histogram,
            "timeline": timeline,
            "tail": self.tail.as_ref().map(TailReport::json),
        })
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One row of a latency table: percentiles, max and mean in ms.
fn latency_row(t: &mut String, name: &str, m: &Summary) {
    let _ = writeln!(
        t,
        "{name:<14}{:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        ms(m.p50),
        ms(m.p90),
        ms(m.p99),
        ms(m.p999),
        ms(m.max),
        m.mean / 1000.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform_1_to_1000() -> Stats {
        let mut stats = Stats::new(false);
        for us in 1..=1000 {
            stats.record(Outcome::Status(200), us, us);
        }
        stats
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let stats = uniform_1_to_1000();
        let m = Summary::of(&stats.latency);
        // Values below 2048 are exact at 3 significant digits.
        assert_eq!(m.p50, 500);
        assert_eq!(m.p90, 900);
        assert_eq!(m.p99, 990);
        assert_eq!(m.p999, 999);
        assert_eq!(m.max, 1000);
        assert_eq!(m.min, 1);
        assert!((m.mean - 500.5).abs() < 0.01, "{}", m.mean);
    }

    #[test]
    fn percentiles_above_the_exact_range_stay_within_precision() {
        let mut stats = Stats::new(false);
        for ms in 1..=1000u64 {
            stats.record(Outcome::Status(200), ms * 1000, 0);
        }
        let m = Summary::of(&stats.latency);
        for (got, want) in [(m.p50, 500_000.0), (m.p99, 990_000.0), (m.max, 1_000_000.0)] {
            assert!((got as f64 - want).abs() / want < 0.001, "{got} vs {want}");
        }
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = uniform_1_to_1000();
        let mut b = Stats::new(false);
        b.record(Outcome::Status(500), 5000, 0);
        b.record(Outcome::Timeout, 0, 0);
        b.record(Outcome::Connect, 0, 0);
        b.record(Outcome::Io, 0, 0);
        a.merge(&b);
        assert_eq!(a.requests, 1004);
        assert_eq!(a.ok, 1000);
        assert_eq!(a.errors.by_status.get(&500), Some(&1));
        assert_eq!(a.errors.total(), 4);
        assert_eq!(a.latency.len(), 1001);
        // max() reports the top of 5000's bucket (4 µs wide up there).
        assert!(a.latency.equivalent(a.latency.max(), 5000));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut stats = uniform_1_to_1000();
        stats.record(Outcome::Status(503), 10, 10);
        let report = Report {
            scenario: "url".into(),
            mode: Mode::Closed,
            addr: "x:1".into(),
            connections: 2,
            workers: 1,
            threads: None,
            seed: 1,
            offered_rate: None,
            duration_s: 2.0,
            warmup_s: 0.0,
            stats,
            timeline: Vec::new(),
            tail: None,
        };
        let v = report.to_json();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["requests"], 1001);
        assert_eq!(v["throughput_rps"], 500.5);
        assert_eq!(v["latency_us"]["p50"], 500);
        assert_eq!(v["errors"]["by_status"]["503"], 1);
        assert_eq!(v["errors"]["total"], 1);
        assert!(v["offered_rate"].is_null());
        let counted: u64 = v["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 1001);
        assert!(report.table().contains("HTTP 503"));
        assert!(v["tail"].is_null());
    }

    #[test]
    fn tail_json_and_table_say_what_is_missing() {
        let mut delivery = new_histogram();
        for us in 1..=100 {
            delivery.record(us).unwrap();
        }
        let mut tail = TailReport {
            subscribers: 3,
            tail_threads: 1,
            posts_acked: 5,
            expected: 15,
            received: 15,
            missing: 0,
            missing_examples: Vec::new(),
            unacked: 0,
            out_of_order: 0,
            overflowed: 0,
            ended_early: 0,
            timed_out: 0,
            end_marker: true,
            delivery,
        };
        let mut text = String::new();
        tail.table(&mut text);
        assert!(text.contains("every subscriber got every"), "{text}");
        let v = tail.json();
        assert_eq!(v["delivery_samples"], 100);
        assert_eq!(v["delivery_us"]["p50"], 50);
        assert_eq!(v["missing"], 0);

        tail.received = 13;
        tail.missing = 2;
        tail.missing_examples = vec![(4, 2)];
        assert!(!tail.complete());
        let mut text = String::new();
        tail.table(&mut text);
        assert!(text.contains("INCOMPLETE DELIVERY"), "{text}");
        assert!(text.contains("post 4 missed by 2"), "{text}");
        assert_eq!(
            tail.json()["missing_examples"],
            json!([{"seq": 4, "subscribers": 2}])
        );
    }
}
