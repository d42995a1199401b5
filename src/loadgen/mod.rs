//! Load generator behind `progressdb-bench`: HTTP/1.1 keep-alive load
//! against any ProgressDB-compatible server, on monoio (io_uring), with
//! HdrHistogram latencies.
//!
//! A run is: validate [`Options`] → unmeasured setup (create the target
//! threads, preload messages) → warmup → measured window → [`Report`].
//!
//! Modules:
//! * [`client`]: HTTP/1.1 framing over one connection (requests out, one
//!   response in), with reused buffers.
//! * [`scenario`]: which request each scenario sends, request bytes, seeded
//!   random numbers.
//! * [`resp`]: the `xadd` baseline's Redis command and reply framing.
//! * `setup`: creating threads and preloading messages before measuring.
//! * `load`: the measured phase: workers, connections, closed and open loop
//!   timing, per-second progress.
//! * `tail`: the tail scenario's live-tail subscribers, the end markers and
//!   the check that every acknowledged post reached every subscriber.
//! * [`report`]: counters and histograms, their merge, the table and the
//!   JSON document (its schema is documented there).
//!
//! Threads: one monoio runtime per OS thread (`--workers`), each driving its
//! share of the connections; workers only meet at the end (merged
//! histograms) and once a second (progress snapshots over a channel).

pub mod client;
mod load;
pub mod report;
pub mod resp;
pub mod scenario;
mod setup;
pub mod tail;

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;

pub use report::Report;
pub use scenario::ScenarioKind;

/// Every flag of `progressdb-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "progressdb-bench",
    version,
    about = "HTTP/1.1 load generator for ProgressDB-compatible servers",
    long_about = "HTTP/1.1 keep-alive load generator for ProgressDB-compatible servers.\n\n\
        Closed loop by default: --connections connections, each sending its next request as \
        soon as the previous answer arrives. With --rate it runs an open loop at a constant \
        total rate and measures latency from each request's planned send time (no coordinated \
        omission, like wrk2).\n\n\
        Progress goes to stderr once a second; the result table to stdout; --json writes the \
        numbers and the full latency histogram (schema in src/loadgen/report.rs)."
)]
pub struct Options {
    /// Server address, HOST:PORT (an http:// prefix is accepted).
    #[arg(long)]
    pub addr: String,

    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "PROGRESSDB_BENCH_KEY", hide_env_values = true)]
    pub key: Option<String>,

    /// User the frontend routes act for (X-User-ID).
    #[arg(long, default_value = "bench")]
    pub user: String,

    /// Extra request header, "Name: value" (repeatable), e.g. an
    /// X-User-Signature for frontend keys.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Workload: post, read (newest-50 page), mix (reads and posts), hot (all
    /// posts to one thread), url (GET --url, no setup), tail (--subscribers
    /// live-tail streams while posts arrive at --rate; reports post-to-event
    /// delivery latency and any event that did not arrive), xadd (baseline:
    /// Redis XADD of the same text over RESP, --addr being a Redis server).
    #[arg(long, value_enum, default_value_t = ScenarioKind::Post)]
    pub scenario: ScenarioKind,

    /// Path to GET in the url scenario, e.g. /healthz.
    #[arg(long)]
    pub url: Option<String>,

    /// Threads that post/read/mix/tail spread requests over [default: the
    /// preloaded thread count, else 100; tail: 1].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Percentage of reads in the mix scenario (0-100).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub read_percent: u32,

    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of load before measuring (not recorded).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// Concurrent keep-alive connections (split among workers).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,

    /// Open loop: total requests per second, spread evenly over the
    /// connections. Without it the run is closed loop.
    #[arg(long)]
    pub rate: Option<f64>,

    /// OS threads, each running one monoio runtime (the server usually
    /// wants the other cores).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,

    /// Seed of every random choice (threads, read/post mix).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Per-request timeout (connect, and send to complete response), ms.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,

    /// Threads to create before measuring (post/read/mix create --threads
    /// anyway; the larger count is created).
    #[arg(long, default_value_t = 0)]
    pub preload_threads: usize,

    /// Messages to post into each created thread before measuring (several
    /// connections, progress on stderr).
    #[arg(long, default_value_t = 0)]
    pub preload_messages: usize,

    /// Length of the text of each posted message, bytes.
    #[arg(long, default_value_t = 48)]
    pub message_bytes: usize,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Tail scenario: live-tail (SSE) subscribers, one connection each,
    /// dealt round robin over the --threads threads.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,

    /// Tail scenario: OS threads the subscribers are spread over, each
    /// running one monoio runtime (posts run on --workers others).
    #[arg(long, default_value_t = 1)]
    pub tail_threads: usize,
}

/// The Redis stream the `xadd` scenario appends to.
const XADD_STREAM: &str = "progressdb-bench";

/// Why a run could not happen (bad flags, unreachable server during setup,
/// refused setup request). Failures *during* measurement are counted in the
/// report instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn seconds(name: &str, value: f64, allow_zero: bool) -> Result<Duration, Error> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        return Err(Error::new(format!(
            "--{name} must be a {}number of seconds, got {value}",
            if allow_zero {
                "non-negative "
            } else {
                "positive "
            }
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// `host:port` from `--addr` (scheme and trailing slash stripped).
fn host_port(addr: &str) -> &str {
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    addr.trim_end_matches('/')
}

fn resolve(host_port: &str) -> Result<SocketAddr, Error> {
    host_port
        .to_socket_addrs()
        .map_err(|err| Error::new(format!("--addr {host_port}: {err}")))?
        .next()
        .ok_or_else(|| Error::new(format!("--addr {host_port}: no address")))
}

/// Runs a whole benchmark: setup, warmup, measurement. Prints progress on
/// stderr (unless `quiet`) and writes `--json` if asked; the caller prints
/// [`Report::table`].
pub fn run(options: &Options) -> Result<Report, Error> {
    let kind = options.scenario;
    if kind == ScenarioKind::Tail {
        check_tail_flags(options)?;
    }
    if options.addr.starts_with("https://") {
        return Err(Error::new("https is not supported; give HOST:PORT"));
    }
    let duration = seconds("duration", options.duration, false)?;
    let warmup = seconds("warmup", options.warmup, true)?;
    if options.connections == 0 {
        return Err(Error::new("--connections must be at least 1"));
    }
    if options.workers == 0 {
        return Err(Error::new("--workers must be at least 1"));
    }
    if options.timeout_ms == 0 {
        return Err(Error::new("--timeout-ms must be at least 1"));
    }
    if let Some(rate) = options.rate
        && (!rate.is_finite() || rate <= 0.0)
    {
        return Err(Error::new(format!("--rate must be positive, got {rate}")));
    }
    let url = match (kind, &options.url) {
        (ScenarioKind::Url, Some(url)) if url.starts_with('/') => url.clone(),
        (ScenarioKind::Url, Some(url)) => {
            return Err(Error::new(format!(
                "--url must be a path starting with '/', got {url:?}"
            )));
        }
        (ScenarioKind::Url, None) => {
            return Err(Error::new("the url scenario needs --url PATH"));
        }
        _ => String::new(),
    };
    // Threads the measured requests target, and threads the setup creates.
    let targets = match kind {
        ScenarioKind::Post | ScenarioKind::Read | ScenarioKind::Mix => {
            let default = if options.preload_threads > 0 {
                options.preload_threads
            } else {
                100
            };
            Some(options.threads.unwrap_or(default))
        }
        ScenarioKind::Hot => Some(1),
        ScenarioKind::Tail => Some(options.threads.unwrap_or(1)),
        ScenarioKind::Url | ScenarioKind::Xadd => None,
    };
    if kind == ScenarioKind::Xadd && (options.preload_threads > 0 || options.preload_messages > 0) {
        return Err(Error::new(
            "the xadd scenario talks to Redis and creates nothing: drop --preload-threads and --preload-messages",
        ));
    }
    if targets == Some(0) {
        return Err(Error::new("--threads must be at least 1"));
    }
    let create_threads = targets.unwrap_or(0).max(options.preload_threads);

    for header in &options.headers {
        let valid = header
            .split_once(':')
            .is_some_and(|(name, _)| !name.trim().is_empty() && !name.contains(' '));
        if !valid || header.contains(['\r', '\n']) {
            return Err(Error::new(format!(
                "--header must look like \"Name: value\", got {header:?}"
            )));
        }
    }
    let host = host_port(&options.addr);
    let addr = resolve(host)?;
    let http = scenario::Http::new(
        host,
        options.key.as_deref(),
        &options.user,
        &options.headers,
    );
    let post_body = scenario::message_body(options.message_bytes);
    let timeout = Duration::from_millis(options.timeout_ms);
    let workers = options.workers.min(options.connections);

    if !options.quiet && kind == ScenarioKind::Read && options.preload_messages == 0 {
        eprintln!("note: reading empty threads; --preload-messages fills them first");
    }
    let created = setup::prepare(setup::Plan {
        addr,
        http: http.clone(),
        workers,
        connections: options.connections,
        timeout,
        create_threads,
        preload_threads: create_threads,
        preload_messages: options.preload_messages,
        post_body: post_body.clone(),
        quiet: options.quiet,
    })?;
    let threads = match targets {
        Some(n) => created[..n].to_vec(),
        None => Vec::new(),
    };
    let xadd = if kind == ScenarioKind::Xadd {
        resp::xadd_command(
            XADD_STREAM,
            scenario::message_text(options.message_bytes).as_bytes(),
        )
    } else {
        Vec::new()
    };
    let workload = Arc::new(scenario::Workload {
        kind,
        http,
        threads,
        read_percent: options.read_percent,
        url,
        post_body,
        xadd,
    });

    if !options.quiet {
        eprintln!(
            "progressdb-bench: {} against {}, {}, {} connections on {} worker{}, {:.1} s + {:.1} s warmup{}",
            kind.name(),
            host,
            match options.rate {
                Some(rate) => format!("open loop at {rate} req/s"),
                None => "closed loop".to_string(),
            },
            options.connections,
            workers,
            if workers == 1 { "" } else { "s" },
            duration.as_secs_f64(),
            warmup.as_secs_f64(),
            if kind == ScenarioKind::Tail {
                format!(
                    ", {} subscribers on {} thread(s)",
                    options.subscribers, options.tail_threads
                )
            } else {
                String::new()
            },
        );
    }
    let plan = load::Plan {
        addr,
        addr_text: host.to_string(),
        workload,
        connections: options.connections,
        workers,
        rate: options.rate,
        warmup,
        duration,
        timeout,
        seed: options.seed,
        threads: targets,
        quiet: options.quiet,
        start: Instant::now() + load::START_DELAY,
        collect_acked: kind == ScenarioKind::Tail,
    };
    let report = if kind == ScenarioKind::Tail {
        tail::measure(plan, options.subscribers, options.tail_threads)?
    } else {
        load::measure(plan)?.report
    };

    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("JSON values serialize");
        std::fs::write(path, text + "\n")
            .map_err(|err| Error::new(format!("--json {}: {err}", path.display())))?;
    }
    Ok(report)
}

fn check_tail_flags(options: &Options) -> Result<(), Error> {
    if options.rate.is_none() {
        return Err(Error::new(
            "the tail scenario needs --rate: posts arrive in an open loop and \
             delivery is measured from each post's planned send time",
        ));
    }
    if options.subscribers == 0 {
        return Err(Error::new("--subscribers must be at least 1"));
    }
    if options.tail_threads == 0 {
        return Err(Error::new("--tail-threads must be at least 1"));
    }
    Ok(())
}

/// Starts `count` OS threads, each running one monoio runtime (io_uring when
/// the kernel has it, else epoll) with a timer, and blocks each on the
/// future `make(worker_index)` builds there. Futures never cross threads, so
/// they may hold `Rc`s.
pub(crate) fn spawn_workers<T, F, Fut>(
    count: usize,
    name: &str,
    make: F,
) -> Result<Vec<JoinHandle<Result<T, Error>>>, Error>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let make = Arc::new(make);
    (0..count)
        .map(|index| {
            let make = make.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    let mut runtime = start_runtime().map_err(|err| {
                        Error::new(format!("cannot start a monoio runtime: {err}"))
                    })?;
                    Ok(runtime.block_on(make(index)))
                })
                .map_err(|err| Error::new(format!("cannot start a worker thread: {err}")))
        })
        .collect()
}

type LoadRuntime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// A worker's runtime, its ring set up so that a response arriving while
/// the worker runs does not make the sending core interrupt it (cooperative
/// task running, Linux 5.19+). Without it each response costs the server's
/// core an inter-processor interrupt that an epoll client such as wrk or
/// redis-benchmark does not cause, and the server would be charged for the
/// harness. Kernels that refuse the flag get the default ring.
fn start_runtime() -> std::io::Result<LoadRuntime> {
    let mut cooperative = io_uring::IoUring::builder();
    cooperative.setup_coop_taskrun();
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .uring_builder(cooperative)
        .enable_timer()
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
        })
}
