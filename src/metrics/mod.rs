//! Prometheus metrics: the per-core counters and the text exposition.
//!
//! Each core owns one [`CoreMetrics`] (plain `Cell`/`RefCell`, touched only
//! by that core's tasks), so recording a request costs a map lookup and a
//! few increments with no cross-core traffic. A scrape sends
//! `Command::Metrics` to every shard over the mesh; each answers with a
//! [`ShardSample`] (plain data), and the scraping core renders them all
//! with a `shard` label via [`render`].
//!
//! Labels are bounded: `route` is the route's name (never the raw path),
//! `status` an HTTP status code, `keyspace` one of the store's keyspaces.

pub mod requests;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use crate::wal::WalStats;

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histogram buckets, in microseconds
/// (100 µs to 10 s); `+Inf` follows implicitly.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Route label of requests that matched no route (404, 405, bad path).
pub const ROUTE_UNMATCHED: &str = "unmatched";
/// Route label of requests that could not be framed (400, 408, 413, 431).
pub const ROUTE_INVALID: &str = "invalid";

/// Requests of one route on one core.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteSample {
    /// Requests by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    pub buckets: [u64; BUCKETS_US.len() + 1],
    pub sum_us: u64,
}

impl RouteSample {
    fn observe(&mut self, status: u16, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        *self.statuses.entry(status).or_insert(0) += 1;
        let bucket = BUCKETS_US.partition_point(|&bound| bound < micros);
        self.buckets[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(micros);
    }
}

/// One core's HTTP and connection counters. Never shared across cores.
#[derive(Default)]
pub struct CoreMetrics {
    routes: RefCell<BTreeMap<&'static str, RouteSample>>,
    /// Connections open on this core; also the per-shard connection limit's count.
    pub open_connections: Rc<Cell<usize>>,
    pub accepted: Cell<u64>,
    /// Connections answered 503 at the per-shard limit.
    pub refused: Cell<u64>,
}

impl CoreMetrics {
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.routes
            .borrow_mut()
            .entry(route)
            .or_default()
            .observe(status, elapsed);
    }

    pub fn routes(&self) -> Vec<(&'static str, RouteSample)> {
        self.routes
            .borrow()
            .iter()
            .map(|(name, sample)| (*name, sample.clone()))
            .collect()
    }
}

/// The LSM-tree's view of one shard's store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreSample {
    /// Bytes in the active and sealed memtables.
    pub memtable_bytes: u64,
    /// Sealed memtables waiting to be flushed to tables.
    pub sealed_memtables: u64,
    /// Tables (SST files).
    pub tables: u64,
    /// Sorted runs in level 0 (compaction debt).
    pub l0_runs: u64,
    /// Bytes of the tables on disk.
    pub disk_bytes: u64,
    pub applied_lsn: u64,
    /// Newest LSN in the tables on disk.
    pub persisted_lsn: u64,
    /// Memtable flushes and compactions done since start.
    pub flushes: u64,
    pub compactions: u64,
}

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardSample {
    pub shard: usize,
    pub routes: Vec<(&'static str, RouteSample)>,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    /// Commands this core sent to other cores.
    pub mesh_hops: u64,
    /// Calls from this core to other cores still waiting for their reply.
    pub mesh_calls_waiting: u64,
    /// Commands from other cores this core is executing now.
    pub mesh_requests_executing: u64,
    pub wal: WalStats,
    pub store: StoreSample,
}

/// Renders every shard's sample as one exposition, families in a fixed
/// order, each with `# HELP` and `# TYPE` once. Shards in `down` did not
/// answer the scrape: they read 0 in `progressdb_shard_up` and have no
/// other series (a counter that dropped to 0 would read as a reset).
pub fn render(samples: &[ShardSample], down: &[usize]) -> String {
    let mut out = String::with_capacity(4096 + samples.len() * 4096);
    render_stalls(&mut out);
    render_http(&mut out, samples);
    render_per_shard(&mut out, samples, down);
    render_wal_flushes(&mut out, samples);
    out
}

/// How long each shard's log flushes took (write and fdatasync), and the
/// fdatasyncs' share of that time.
fn render_wal_flushes(out: &mut String, samples: &[ShardSample]) {
    family(
        out,
        "progressdb_wal_flush_duration_seconds",
        "histogram",
        "Time each successful group-commit flush of the shard's log took (write, and fdatasync unless durability is none).",
    );
    for sample in samples {
        let buckets = &sample.wal.flush_micros;
        let bound = |bucket: usize| (bucket + 1 < buckets.len()).then(|| 1 << bucket);
        let series = Series {
            name: "progressdb_wal_flush_duration_seconds",
            labels: &format!("shard=\"{}\"", sample.shard),
        };
        histogram(out, series, (buckets, bound), sample.wal.flush_micros_sum);
    }
    family(
        out,
        "progressdb_wal_fdatasync_seconds_total",
        "counter",
        "Time the fdatasyncs of those flushes took; the rest of the flushes' time is their writes.",
    );
    for sample in samples {
        let (shard, micros) = (sample.shard, sample.wal.sync_micros_sum);
        let _ = writeln!(
            out,
            "progressdb_wal_fdatasync_seconds_total{{shard=\"{shard}\"}} {}",
            seconds(micros)
        );
    }
}

/// One histogram's series: a name and its labels.
struct Series<'a> {
    name: &'a str,
    labels: &'a str,
}

/// The `_bucket` (cumulative), `_sum` and `_count` lines of one histogram:
/// `counts` per bucket, not cumulative, the bucket `i` holding values up
/// to `bound(i)` µs (`None`: the last, `+Inf`), and their sum in µs.
fn histogram(
    out: &mut String,
    Series { name, labels }: Series,
    (counts, bound): (&[u64], impl Fn(usize) -> Option<u64>),
    sum_us: u64,
) {
    let mut cumulative = 0;
    for (bucket, count) in counts.iter().enumerate() {
        cumulative += count;
        let le = bound(bucket).map_or_else(|| "+Inf".to_string(), seconds);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", seconds(sum_us));
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

fn render_stalls(out: &mut String) {
    family(
        out,
        "progressdb_shard_stalls_total",
        "counter",
        "Times a shard thread ran or blocked over 10 ms without serving I/O (all shards; each is logged).",
    );
    let _ = writeln!(
        out,
        "progressdb_shard_stalls_total {}",
        crate::server::stalls::count()
    );
}

/// Requests by route and status, and their latency histograms.
fn render_http(out: &mut String, samples: &[ShardSample]) {
    family(
        out,
        "progressdb_http_requests_total",
        "counter",
        "HTTP requests answered, by accepting shard, route and status.",
    );
    for sample in samples {
        for (route, stats) in &sample.routes {
            for (status, count) in &stats.statuses {
                let _ = writeln!(
                    out,
                    "progressdb_http_requests_total{{shard=\"{}\",route=\"{route}\",status=\"{status}\"}} {count}",
                    sample.shard
                );
            }
        }
    }

    family(
        out,
        "progressdb_http_request_duration_seconds",
        "histogram",
        "Time from a request being framed to its response being ready.",
    );
    for sample in samples {
        for (route, stats) in &sample.routes {
            let series = Series {
                name: "progressdb_http_request_duration_seconds",
                labels: &format!("shard=\"{}\",route=\"{route}\"", sample.shard),
            };
            let bound = |bucket: usize| BUCKETS_US.get(bucket).copied();
            histogram(out, series, (&stats.buckets, bound), stats.sum_us);
        }
    }
}

/// The per-shard families, and which shards answered.
fn render_per_shard(out: &mut String, samples: &[ShardSample], down: &[usize]) {
    for (name, kind, help, value) in &PER_SHARD {
        family(out, name, kind, help);
        for sample in samples {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\"}} {}",
                sample.shard,
                value(sample)
            );
        }
    }
    family(
        out,
        "progressdb_shard_up",
        "gauge",
        "1 for every shard that answered this scrape in time, 0 for one that did not.",
    );
    let mut up: Vec<(usize, u8)> = samples.iter().map(|s| (s.shard, 1)).collect();
    up.extend(down.iter().map(|&shard| (shard, 0)));
    up.sort_unstable();
    for (shard, value) in up {
        let _ = writeln!(out, "progressdb_shard_up{{shard=\"{shard}\"}} {value}");
    }
}

/// The families with one value per shard.
static PER_SHARD: [ShardFamily; 22] = [
    (
        "progressdb_connections_open",
        "gauge",
        "Client connections open on the shard.",
        |s| s.connections_open,
    ),
    (
        "progressdb_connections_accepted_total",
        "counter",
        "Client connections the shard accepted.",
        |s| s.connections_accepted,
    ),
    (
        "progressdb_connections_refused_total",
        "counter",
        "Connections answered 503 at the per-shard connection limit.",
        |s| s.connections_refused,
    ),
    (
        "progressdb_mesh_hops_total",
        "counter",
        "Commands the shard sent to another core over the mesh.",
        |s| s.mesh_hops,
    ),
    (
        "progressdb_mesh_calls_waiting",
        "gauge",
        "Commands the shard sent to other cores that await their reply.",
        |s| s.mesh_calls_waiting,
    ),
    (
        "progressdb_mesh_requests_executing",
        "gauge",
        "Commands from other cores the shard is executing.",
        |s| s.mesh_requests_executing,
    ),
    (
        "progressdb_wal_appends_total",
        "counter",
        "Records appended to the shard's write-ahead log.",
        |s| s.wal.appends,
    ),
    (
        "progressdb_wal_flushes_total",
        "counter",
        "Group-commit writes of the shard's log.",
        |s| s.wal.flushes,
    ),
    (
        "progressdb_wal_fsyncs_total",
        "counter",
        "fdatasync calls on the shard's log.",
        |s| s.wal.fsyncs,
    ),
    (
        "progressdb_wal_records_flushed_total",
        "counter",
        "Records made durable by the shard's log flushes.",
        |s| s.wal.records_flushed,
    ),
    (
        "progressdb_wal_bytes_written_total",
        "counter",
        "Bytes written to the shard's log, padding included.",
        |s| s.wal.bytes_written,
    ),
    (
        "progressdb_wal_segments",
        "gauge",
        "Log segment files of the shard.",
        |s| s.wal.segments,
    ),
    (
        "progressdb_wal_durable_lsn",
        "gauge",
        "Highest log sequence number the shard has flushed.",
        |s| s.wal.durable_lsn,
    ),
    (
        "progressdb_store_applied_lsn",
        "gauge",
        "Highest log sequence number applied to the shard's store.",
        |s| s.store.applied_lsn,
    ),
    (
        "progressdb_store_persisted_lsn",
        "gauge",
        "Highest log sequence number in the shard's tables on disk.",
        |s| s.store.persisted_lsn,
    ),
    (
        "progressdb_store_memtable_bytes",
        "gauge",
        "Bytes in the shard's memtables (active and sealed).",
        |s| s.store.memtable_bytes,
    ),
    (
        "progressdb_store_sealed_memtables",
        "gauge",
        "Sealed memtables of the shard waiting to be flushed.",
        |s| s.store.sealed_memtables,
    ),
    (
        "progressdb_store_tables",
        "gauge",
        "Tables (SST files) of the shard's store.",
        |s| s.store.tables,
    ),
    (
        "progressdb_store_l0_runs",
        "gauge",
        "Sorted runs in level 0 of the shard's store (compaction debt).",
        |s| s.store.l0_runs,
    ),
    (
        "progressdb_store_disk_bytes",
        "gauge",
        "Bytes of the shard's tables on disk.",
        |s| s.store.disk_bytes,
    ),
    (
        "progressdb_store_flushes_total",
        "counter",
        "Memtable flushes of the shard since start.",
        |s| s.store.flushes,
    ),
    (
        "progressdb_store_compactions_total",
        "counter",
        "Compactions of the shard since start.",
        |s| s.store.compactions,
    ),
];

/// A per-shard family: name, type, help, and how to read it from a sample.
type ShardFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardSample) -> u64,
);

/// Clustered mode's gauges for this node's `view` (each node reports its
/// own; a standby's lag is the owner's `applied` minus its own).
pub fn render_cluster(view: &crate::cluster::runtime::View) -> String {
    let mut out = String::with_capacity(512 + view.partitions.len() * 200);
    let flag = |held: bool| u8::from(held);
    family(
        &mut out,
        "progressdb_cluster_lease_held",
        "gauge",
        "Whether this node holds its membership lease (1) or not (0).",
    );
    let _ = writeln!(
        out,
        "progressdb_cluster_lease_held {}",
        flag(view.lease_held)
    );
    family(
        &mut out,
        "progressdb_cluster_controller",
        "gauge",
        "Whether this node is the controller that assigns partitions.",
    );
    let _ = writeln!(
        out,
        "progressdb_cluster_controller {}",
        flag(view.controller)
    );
    family(
        &mut out,
        "progressdb_cluster_nodes",
        "gauge",
        "Live nodes this node sees.",
    );
    let _ = writeln!(out, "progressdb_cluster_nodes {}", view.nodes.len());
    let serving = || view.partitions.iter().filter(|p| p.role != "none");
    partition_gauge(
        &mut out,
        (
            "progressdb_cluster_partition_role",
            "1 for this node's role in each partition it owns or stands by for.",
        ),
        serving().map(|p| (p.partition, format!(",role=\"{}\"", p.role), 1)),
    );
    partition_gauge(
        &mut out,
        (
            "progressdb_cluster_partition_epoch",
            "Owner term of each partition as assigned.",
        ),
        view.partitions
            .iter()
            .map(|p| (p.partition, String::new(), p.epoch)),
    );
    partition_gauge(
        &mut out,
        (
            "progressdb_cluster_partition_applied",
            "Last log sequence this node applied, per partition it owns or stands by for.",
        ),
        serving().map(|p| (p.partition, String::new(), p.applied)),
    );
    out
}

/// A gauge family with one sample per `(partition, extra labels, value)`.
fn partition_gauge(
    out: &mut String,
    (name, help): (&str, &str),
    samples: impl Iterator<Item = (u32, String, u64)>,
) {
    family(out, name, "gauge", help);
    for (partition, labels, value) in samples {
        let _ = writeln!(out, "{name}{{partition=\"{partition}\"{labels}}} {value}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Microseconds as seconds, exact and without float noise.
fn seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn observations_land_in_the_right_bucket() {
        let metrics = CoreMetrics::default();
        metrics.observe("post_message", 201, Duration::from_micros(100));
        metrics.observe("post_message", 201, Duration::from_micros(101));
        metrics.observe("post_message", 400, Duration::from_secs(60));
        let routes = metrics.routes();
        assert_eq!(routes.len(), 1);
        let (name, sample) = &routes[0];
        assert_eq!(*name, "post_message");
        assert_eq!(sample.buckets.iter().sum::<u64>(), 3);
        assert_eq!(sample.statuses[&201], 2);
        assert_eq!(sample.statuses[&400], 1);
        // The bound is inclusive (`le`): 100 µs is in the first bucket.
        assert_eq!(sample.buckets[0], 1);
        assert_eq!(sample.buckets[1], 1);
        assert_eq!(sample.buckets[BUCKETS_US.len()], 1, "+Inf");
        assert_eq!(sample.sum_us, 60_000_201);
    }

    #[test]
    fn cluster_gauges_name_each_partition_this_node_serves() {
        use crate::cluster::runtime::{PartitionView, View};
        let view = View {
            node: "n1".into(),
            lease_held: true,
            controller: false,
            nodes: [("n1".to_owned(), "127.0.0.1:1".to_owned())].into(),
            partitions: vec![
                PartitionView {
                    partition: 0,
                    epoch: 2,
                    role: "owner",
                    applied: 9,
                    ..PartitionView::default()
                },
                PartitionView {
                    partition: 1,
                    epoch: 1,
                    role: "none",
                    ..PartitionView::default()
                },
            ],
        };
        let text = render_cluster(&view);
        for line in [
            "progressdb_cluster_lease_held 1",
            "progressdb_cluster_controller 0",
            "progressdb_cluster_nodes 1",
            "progressdb_cluster_partition_role{partition=\"0\",role=\"owner\"} 1",
            "progressdb_cluster_partition_epoch{partition=\"1\"} 1",
            "progressdb_cluster_partition_applied{partition=\"0\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("partition_applied{partition=\"1\"}"));
    }

    #[test]
    fn wal_flush_durations_render_as_a_cumulative_histogram() {
        let mut wal = WalStats::default();
        for micros in [0, 90, 100, 3_000, 40_000, 9_000_000] {
            wal.flush_micros[crate::wal::flush_bucket(micros)] += 1;
            wal.flush_micros_sum += micros;
        }
        // The fdatasync part of two flushes.
        wal.sync_micros_sum = 60 + 2_500;
        let sample = ShardSample {
            shard: 3,
            wal,
            ..ShardSample::default()
        };
        let text = render(&[sample], &[]);
        let bucket = |le: &str| {
            let series =
                format!("progressdb_wal_flush_duration_seconds_bucket{{shard=\"3\",le=\"{le}\"}}");
            line_value(&text, &series)
        };
        // Bucket bounds are powers of two microseconds.
        assert_eq!(bucket("0.000001"), Some(1));
        assert_eq!(bucket("0.000064"), Some(1));
        assert_eq!(bucket("0.000128"), Some(3));
        assert_eq!(bucket("0.004096"), Some(4));
        assert_eq!(bucket("0.065536"), Some(5));
        assert_eq!(bucket("+Inf"), Some(6));
        assert_eq!(
            line_value(
                &text,
                "progressdb_wal_flush_duration_seconds_count{shard=\"3\"}"
            ),
            Some(6)
        );
        assert!(text.contains("progressdb_wal_flush_duration_seconds_sum{shard=\"3\"} 9.04319\n"));
        assert!(text.contains("progressdb_wal_fdatasync_seconds_total{shard=\"3\"} 0.00256\n"));
        let kind = "# TYPE progressdb_wal_fdatasync_seconds_total counter";
        assert_eq!(text.matches(kind).count(), 1);
    }

    #[test]
    fn render_sums_nothing_and_labels_every_shard() {
        let metrics = CoreMetrics::default();
        for micros in [50, 300, 300, 2_000_000] {
            metrics.observe("create_thread", 201, Duration::from_micros(micros));
        }
        let shard0 = ShardSample {
            shard: 0,
            routes: metrics.routes(),
            connections_open: 2,
            wal: WalStats {
                appends: 7,
                ..WalStats::default()
            },
            store: StoreSample {
                tables: 3,
                ..StoreSample::default()
            },
            ..ShardSample::default()
        };
        let shard1 = ShardSample {
            shard: 1,
            mesh_hops: 5,
            ..ShardSample::default()
        };
        let text = render(&[shard0, shard1], &[2]);
        assert_eq!(
            line_value(&text, "progressdb_shard_up{shard=\"1\"}"),
            Some(1)
        );
        // A shard that did not answer reads 0 and has no other series.
        assert_eq!(
            line_value(&text, "progressdb_shard_up{shard=\"2\"}"),
            Some(0)
        );
        assert_eq!(text.matches("shard=\"2\"").count(), 1, "{text}");
        let series = |labels: &str| {
            format!(
                "progressdb_http_request_duration_seconds_bucket{{shard=\"0\",route=\"create_thread\",le=\"{labels}\"}}"
            )
        };
        assert_eq!(line_value(&text, &series("0.0001")), Some(1));
        assert_eq!(line_value(&text, &series("0.0005")), Some(3));
        assert_eq!(line_value(&text, &series("2.5")), Some(4));
        assert_eq!(line_value(&text, &series("+Inf")), Some(4));
        assert_eq!(
            line_value(
                &text,
                "progressdb_http_request_duration_seconds_count{shard=\"0\",route=\"create_thread\"}"
            ),
            Some(4)
        );
        assert!(text.contains(
            "progressdb_http_request_duration_seconds_sum{shard=\"0\",route=\"create_thread\"} 2.00065\n"
        ));
        assert_eq!(
            line_value(
                &text,
                "progressdb_http_requests_total{shard=\"0\",route=\"create_thread\",status=\"201\"}"
            ),
            Some(4)
        );
        assert_eq!(
            line_value(&text, "progressdb_wal_appends_total{shard=\"0\"}"),
            Some(7)
        );
        assert_eq!(
            line_value(&text, "progressdb_mesh_hops_total{shard=\"1\"}"),
            Some(5)
        );
        assert_eq!(
            line_value(&text, "progressdb_store_tables{shard=\"0\"}"),
            Some(3)
        );
        // Each family is declared exactly once, before its samples.
        assert_eq!(
            text.matches("# TYPE progressdb_connections_open gauge")
                .count(),
            1
        );
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(series.starts_with("progressdb_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(100), "0.0001");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(10_250_000), "10.25");
    }
}
