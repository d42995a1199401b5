//! Wiring: data directory, executors, listeners, signals.
//!
//! `run` settles the shard count, starts one glommio executor per shard
//! (pinned to distinct cores when there are enough), and on each: joins the
//! cross-core mesh, opens that shard's store, binds the shared port with
//! `SO_REUSEPORT` and serves connections; shard 0 also serves the optional
//! metrics listener, and every shard the optional PostgreSQL listener
//! (`--pg-addr`, [`crate::pg`]) on its own shared port. The calling thread waits for SIGINT/SIGTERM, then every
//! shard drains: it stops accepting, lets requests in flight finish (up to
//! `--shutdown-timeout-ms`), waits until every shard has drained (a request
//! on one core may still need another core's engine), flushes its WAL,
//! syncs its store and stops. A second signal exits at once.

mod connection;
pub mod datadir;
pub(crate) mod drain;
mod fds;
mod live_tail;
pub mod stalls;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

use crate::api::Api;
use crate::auth::Keys;
use crate::cluster::runtime::{self, ClusterHandle, ShardEvent};
use crate::cluster::shard::Replication;
use crate::config::Config;
use crate::config::KmsConfig;
use crate::crypto::vault::Vault;
use crate::crypto::{ExternalKms, Keyring, Kms};
use crate::engine::{Engine, StoreRecovery};
use crate::http::HeadLimits;
use crate::logging;
use crate::mesh;
use crate::shard::ShardId;
use crate::store::StoreOptions;
use crate::wal::WalOptions;
use crate::wal::recovery::RecoveryPolicy;
use connection::{ConnectionSettings, ConnectionSlot, Listener};

/// Set once by the signal thread; every shard polls it.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Shards that have finished draining their connections.
static DRAINED: AtomicUsize = AtomicUsize::new(0);
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);
/// How often a draining shard checks its connections and its peers.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Smallest io_uring buffer glommio accepts per executor.
const IO_MEMORY_MIN_BYTES: usize = 64 * 1024;

/// Starts the server and blocks until it has shut down.
pub fn run(mut config: Config) -> Result<(), String> {
    logging::init(config.log_level, config.access_log);
    // A write past the file-size limit (`ulimit -f`) must fail with EFBIG,
    // which poisons one shard's log, instead of killing the process.
    // SAFETY: setting a signal's disposition to ignore touches no memory.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if !crate::runtime::rings_are_cooperative() {
        logging::warn(
            "io_uring rings without cooperative task running: every completion interrupts a busy shard (kernel older than 5.19, or glommio built without src/vendor/liburing: cargo clean -p glommio)",
            &[],
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shard_count = datadir::prepare(&config.db, config.shards, cores)?;
    // Connections are descriptors: use what the hard limit allows, and
    // never promise more connections than descriptors remain for.
    config.limits.connections_per_shard_max = fds::connections_that_fit(
        config.limits.connections_per_shard_max,
        shard_count,
        fds::raise_nofile_limit(),
    );
    fit_segments_to_free_space(&mut config, shard_count);
    let keys = resolve_keys(&config)?;
    let kms = open_kms(&config)?;
    let (reloadable_cert, tls_config) = open_certificate(&config)?;
    let io_memory = io_memory_per_shard(config.io_memory_bytes, shard_count)?;

    // Block the shutdown signals before any thread starts, so every thread
    // inherits the mask and only `sigwait` below receives them.
    let signals = shutdown_signals();
    mask_signals(&signals)?;

    // Port 0 must resolve to one port that every shard then shares, so it
    // is reserved here before the shards bind it with SO_REUSEPORT.
    let (listen, reservations) = reserve_ports(&config)?;
    let cluster = start_cluster(&mut config, shard_count, listen.api)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mesh_handle = mesh::builder(shard_count);
    let db_display = config.db.display().to_string();
    let durability = config.wal.durability.name();
    let shutdown_timeout_ms = config.shutdown_timeout_ms;
    let banner = Banner {
        scheme: if tls_config.is_some() {
            "https"
        } else {
            "http"
        },
        listen,
        shard_count,
        config: &config,
    }
    .to_string();
    let config = Arc::new(config);
    let placement = shard_placement(shard_count, cores)?;
    let heartbeats = stalls::Heartbeats::start(shard_count)
        .map_err(|err| format!("cannot start the stall watchdog: {err}"))?;
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("progressdb-shard")
        .io_memory(io_memory)
        .on_all_shards(move || {
            let config = config.clone();
            let keys = keys.clone();
            let kms = kms.clone();
            let ready_tx = ready_tx.clone();
            let heartbeats = heartbeats.clone();
            let tls_config = tls_config.clone();
            let cluster = cluster.clone();
            // Moved, never cloned, on the executor thread: see `mesh::builder`.
            async move {
                let shard = Shard {
                    mesh_handle,
                    heartbeats,
                    tls_config,
                    cluster,
                };
                let result = run_shard(listen, config, keys, kms, shard, ready_tx.clone()).await;
                if let Err(err) = &result {
                    // Read during start-up; afterwards the join below reports it.
                    let _ = ready_tx.send(Err(err.clone()));
                }
                result
            }
        })
        .map_err(|err| format!("cannot start executors: {err}"))?;

    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err("a shard stopped during start-up".into()),
        }
    }
    drop(reservations);
    // Tests and scripts wait for this line to learn the bound port (the
    // first address after "listening on"); fields follow as key=value.
    println!("{banner}");
    logging::info(
        "started",
        &[
            ("addr", &listen.api),
            ("shards", &shard_count),
            ("durability", &durability),
            ("data", &db_display),
        ],
    );

    wait_for_shutdown(&signals, reloadable_cert.as_deref());
    logging::info(
        "shutting down: draining requests in flight",
        &[("timeout_ms", &shutdown_timeout_ms)],
    );
    SHUTDOWN.store(true, Ordering::SeqCst);
    // A second signal ends the process at once.
    std::thread::spawn(move || {
        wait_for_shutdown(&signals, reloadable_cert.as_deref());
        logging::warn("second signal: exiting without draining", &[]);
        std::process::exit(130);
    });
    join_shards(handles)
}

/// Waits for every shard to stop; says whether each stopped cleanly.
fn join_shards(handles: glommio::PoolThreadHandles<Result<(), String>>) -> Result<(), String> {
    let mut clean = true;
    for result in handles.join_all() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                logging::error("shard stopped with an error", &[("error", &err)]);
                clean = false;
            }
            Err(err) => {
                logging::error("shard panicked", &[("error", &err)]);
                clean = false;
            }
        }
    }
    if clean {
        logging::info("stopped cleanly", &[]);
        Ok(())
    } else {
        Err("not every shard stopped cleanly".into())
    }
}

/// The certificate and the TLS settings built on it, with `--tls-cert`.
type Certificate = (
    Option<Arc<tls::ReloadableCert>>,
    Option<Arc<rustls::ServerConfig>>,
);

fn open_certificate(config: &Config) -> Result<Certificate, String> {
    let Some(settings) = &config.tls else {
        return Ok((None, None));
    };
    let cert = tls::ReloadableCert::open(&settings.cert, &settings.key)?;
    Ok((Some(cert.clone()), Some(tls::server_config(cert)?)))
}

/// Reserves every listener's port before the shards start: port 0 must
/// resolve to one port that every shard then shares (SO_REUSEPORT). The
/// reservations are dropped once every shard listens.
fn reserve_ports(config: &Config) -> Result<(Addresses, Vec<socket2::Socket>), String> {
    let mut reservations = Vec::new();
    let mut reserve = |wanted: Option<SocketAddr>| -> Result<Option<SocketAddr>, String> {
        let Some(wanted) = wanted else {
            return Ok(None);
        };
        let (bound, reservation) = reserve_port(wanted)?;
        reservations.extend(reservation);
        Ok(Some(bound))
    };
    let api = reserve(Some(config.addr))?.unwrap_or(config.addr);
    let metrics = reserve(config.metrics_addr)?;
    let pg = reserve(config.pg_addr)?;
    let plain = reserve(config.tls.as_ref().and_then(|tls| tls.plain_addr))?;
    let listen = Addresses {
        api,
        metrics,
        pg,
        plain,
    };
    Ok((listen, reservations))
}

/// Shards are pinned only to the CPUs this process may use, so `taskset
/// -c 0 progressdb ...` keeps them there (scripts/bench.sh relies on it to
/// give the load generator the other core).
fn shard_placement(shard_count: usize, cores: usize) -> Result<PoolPlacement, String> {
    let allowed = allowed_cpus();
    let cpus = CpuSet::online()
        .map_err(|err| format!("cannot list CPUs: {err}"))?
        .filter(|location| {
            allowed
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&location.cpu))
        });
    Ok(if shard_count <= cores {
        PoolPlacement::MaxSpread(shard_count, Some(cpus))
    } else {
        PoolPlacement::Fenced(shard_count, cpus)
    })
}

/// The line printed once every shard listens.
struct Banner<'a> {
    scheme: &'static str,
    listen: Addresses,
    shard_count: usize,
    config: &'a Config,
}

impl std::fmt::Display for Banner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Banner {
            scheme,
            listen,
            shard_count,
            config,
        } = self;
        write!(
            f,
            "progressdb {} listening on {scheme}://{} shards={shard_count} durability={} data={}",
            env!("CARGO_PKG_VERSION"),
            listen.api,
            config.wal.durability.name(),
            config.db.display(),
        )?;
        if let Some(metrics) = listen.metrics {
            write!(f, " metrics={scheme}://{metrics}/metrics")?;
        }
        if let Some(pg) = listen.pg {
            write!(f, " pg=postgresql://{pg}")?;
        }
        if let Some(plain) = listen.plain {
            write!(f, " plain=http://{plain}")?;
        }
        if let Some(cluster) = &config.cluster {
            write!(f, " node={}", cluster.node_id)?;
        }
        Ok(())
    }
}

/// Where shards listen: the API port and the PostgreSQL port on every
/// shard, the metrics port on shard 0 only.
#[derive(Clone, Copy)]
struct Addresses {
    api: SocketAddr,
    metrics: Option<SocketAddr>,
    pg: Option<SocketAddr>,
    /// Plain HTTP beside TLS (`--plain-addr`), on every shard.
    plain: Option<SocketAddr>,
}

/// What each executor is handed to become a shard.
struct Shard {
    mesh_handle: mesh::MeshHandle,
    heartbeats: Arc<stalls::Heartbeats>,
    /// Set when the API and metrics listeners speak TLS.
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Clustered mode: the cluster thread's handle and each shard's events.
    cluster: Option<ClusterWiring>,
}

type ClusterWiring = (ClusterHandle, Arc<Vec<flume::Receiver<ShardEvent>>>);

/// Clustered mode (`--cluster`): empties the shards (they are rebuilt from
/// the logs), connects to NATS and starts the cluster thread, before any
/// shard starts so that a refusal stops the server here.
fn start_cluster(
    config: &mut Config,
    shards: usize,
    bound: SocketAddr,
) -> Result<Option<ClusterWiring>, String> {
    let Some(cluster) = &mut config.cluster else {
        return Ok(None);
    };
    // `--addr` with port 0 (tests) is advertised as the port it got.
    if cluster.advertise.port() == 0 {
        cluster.advertise = bound;
    }
    crate::cluster::validate_partition_count(cluster.partitions, shards).map_err(|_| {
        format!(
            "--partitions {} must be a multiple of the shard count {shards}",
            cluster.partitions
        )
    })?;
    let cluster = cluster.clone();
    datadir::reset_for_cluster(&config.db, shards)?;
    let settings = runtime::Settings {
        node: crate::cluster::NodeId(cluster.node_id.clone()),
        advertise: cluster.advertise,
        nats_urls: cluster.nats_urls.clone(),
        nats_monitors: cluster.nats_monitors.clone(),
        partitions: cluster.partitions,
        standbys: cluster.standbys,
        shards,
    };
    let (handle, events) = runtime::start(settings)?;
    Ok(Some((handle, Arc::new(events))))
}

async fn run_shard(
    listen: Addresses,
    config: Arc<Config>,
    keys: Arc<Vec<String>>,
    kms: Option<Kms>,
    handed: Shard,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    let Shard {
        mesh_handle,
        heartbeats,
        tls_config,
        cluster,
    } = handed;
    let tls = tls_config.map(|tls_config| {
        let handshake_timeout = config
            .tls
            .as_ref()
            .map_or(Duration::ZERO, |tls| tls.handshake_timeout);
        Rc::new(tls::Tls::new(tls_config, handshake_timeout))
    });
    let (senders, receivers) = mesh_handle
        .join()
        .await
        .map_err(|err| format!("cannot join the shard mesh: {err}"))?;
    let shard = ShardId(senders.peer_id());
    let (engine, replication) = start_engine(&config, kms, shard, cluster)?;
    let mesh = mesh::Mesh::start(senders, receivers, engine.clone());
    heartbeats.beat_forever(shard.0);
    stalls::inject_stall_for_tests();
    let keys = Keys::new(
        &keys,
        &config.frontend_keys,
        &config.admin_keys,
        &config.signing_keys,
    );
    let api = Rc::new(Api::new(mesh, Rc::new(keys), &config).with_cluster(replication));
    let bound = Bound::bind(&listen, shard)?;
    let settings = connection_settings(&config);
    let _ = ready.send(Ok(()));
    logging::debug(
        "shard ready",
        &[
            ("shard", &shard.0),
            ("dir", &datadir::shard_dir(&config.db, shard.0).display()),
        ],
    );
    let loops = start_accepting(bound, &api, &settings, tls, &config);
    while !SHUTDOWN.load(Ordering::SeqCst) {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    // Dropping the listeners closes them: new connections are refused.
    for accept_loop in loops {
        accept_loop.cancel();
    }
    drain(shard, &api, &settings, &config).await;
    engine
        .flush_wal()
        .await
        .map_err(|err| format!("{shard}: cannot flush the WAL on shutdown: {err}"))?;
    engine
        .persist()
        .map_err(|err| format!("{shard}: cannot persist on shutdown: {err}"))?;
    logging::debug("shard stopped", &[("shard", &shard.0)]);
    Ok(())
}

/// Opens the shard's engine with its settings and background jobs; in
/// clustered mode, it replicates through the cluster thread and follows
/// the partitions it stands by for.
fn start_engine(
    config: &Config,
    kms: Option<Kms>,
    shard: ShardId,
    cluster: Option<ClusterWiring>,
) -> Result<(Rc<Engine>, Option<Rc<Replication>>), String> {
    let engine = open_shard(
        &config.db,
        shard,
        config.store,
        config.wal.clone(),
        (config.wal_recovery, config.store_recovery),
        kms,
    )?;
    engine.set_participants_max(config.limits.participants_per_thread_max);
    engine.encrypt_fields(config.encrypt_fields.clone());
    // Clustered mode has no retention yet: a purge step writes keys of many
    // threads at once, which it cannot split by partition into their logs.
    if config.cluster.is_none() {
        engine.start_retention(config.retention.policy, config.retention.interval);
        engine.resume_encrypt_threads();
    }
    let replication = cluster.map(|(handle, events)| {
        let replication = Replication::new(handle);
        engine.set_replication(replication.clone());
        let follow = replication
            .clone()
            .follow(events[shard.0].clone(), engine.clone());
        glommio::spawn_local(follow).detach();
        replication
    });
    Ok((engine, replication))
}

/// A shard's listening sockets: the API's, and those of the listeners
/// configured beside it (metrics on shard 0 only).
struct Bound {
    api: TcpListener,
    metrics: Option<TcpListener>,
    plain: Option<TcpListener>,
    pg: Option<TcpListener>,
}

impl Bound {
    fn bind(listen: &Addresses, shard: ShardId) -> Result<Bound, String> {
        let bind = |addr: SocketAddr| {
            TcpListener::bind(addr)
                .map_err(|err| format!("{shard}: cannot listen on {addr}: {err}"))
        };
        Ok(Bound {
            api: bind(listen.api)?,
            metrics: listen
                .metrics
                .filter(|_| shard.0 == 0)
                .map(bind)
                .transpose()?,
            plain: listen.plain.map(bind).transpose()?,
            pg: listen.pg.map(bind).transpose()?,
        })
    }
}

fn connection_settings(config: &Config) -> Rc<ConnectionSettings> {
    Rc::new(ConnectionSettings {
        head_limits: HeadLimits {
            head_bytes_max: config.limits.request_head_bytes_max,
            header_count_max: config.limits.request_header_count_max,
            body_bytes_max: config.limits.request_body_bytes_max,
        },
        idle_timeout: Duration::from_millis(config.limits.idle_timeout_ms),
        request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
        drain: drain::Drain::default(),
    })
}

/// One accept loop per listener; cancelling a loop closes its listener.
fn start_accepting(
    bound: Bound,
    api: &Rc<Api>,
    settings: &Rc<ConnectionSettings>,
    tls: Option<Rc<tls::Tls>>,
    config: &Config,
) -> Vec<glommio::task::JoinHandle<()>> {
    let accepting = Accepting {
        api: api.clone(),
        settings: settings.clone(),
        connections_max: config.limits.connections_per_shard_max,
    };
    let http = |listener, kind, tls| {
        glommio::spawn_local(accept(listener, kind, tls, accepting.clone())).detach()
    };
    let mut loops = vec![http(bound.api, Listener::Api, tls.clone())];
    loops.extend(
        bound
            .metrics
            .map(|l| http(l, Listener::Metrics, tls.clone())),
    );
    loops.extend(bound.plain.map(|l| http(l, Listener::Api, None)));
    loops.extend(bound.pg.map(|listener| {
        let pg_settings = Rc::new(crate::pg::PgSettings {
            // A Bind carries a message body plus its other parameters.
            message_bytes_max: config.limits.request_body_bytes_max + 64 * 1024,
            idle_timeout: settings.idle_timeout,
            startup_timeout: settings.request_timeout,
            verifier: crate::pg::scram::Verifier::new(api.keys()),
            tls,
        });
        let connections_max = config.limits.connections_per_shard_max;
        let pg = accept_pg(
            listener,
            api.clone(),
            settings.clone(),
            pg_settings,
            connections_max,
        );
        glommio::spawn_local(pg).detach()
    }));
    loops
}

/// Waits (up to the shutdown timeout) for this shard's connections to
/// finish their requests, then for every other shard to get there too.
async fn drain(shard: ShardId, api: &Api, settings: &ConnectionSettings, config: &Config) {
    let open_connections = api.mesh().metrics().open_connections.clone();
    settings.drain.start();
    let deadline = Instant::now() + Duration::from_millis(config.shutdown_timeout_ms);
    while open_connections.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    if open_connections.get() > 0 {
        logging::warn(
            "shutdown timeout: closing connections with requests in flight",
            &[
                ("shard", &shard.0),
                ("connections", &open_connections.get()),
            ],
        );
    }
    // Stay reachable over the mesh until every shard has drained: a request
    // still running on another core may need this shard's engine.
    DRAINED.fetch_add(1, Ordering::SeqCst);
    let shard_count = api.mesh().shard_count();
    while DRAINED.load(Ordering::SeqCst) < shard_count && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
}

/// What every HTTP accept loop of a shard shares.
#[derive(Clone)]
struct Accepting {
    api: Rc<Api>,
    settings: Rc<ConnectionSettings>,
    connections_max: usize,
}

/// Accepts connections until cancelled, each served on its own task (over
/// TLS when `tls` is set) while a per-shard slot is free, else answered 503.
async fn accept(
    listener: TcpListener,
    kind: Listener,
    tls: Option<Rc<tls::Tls>>,
    shared: Accepting,
) {
    let Accepting {
        api,
        settings,
        connections_max,
    } = shared;
    let metrics = api.mesh().metrics();
    let open_connections = metrics.open_connections.clone();
    let mut spare = fds::Spare::new();
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            // Out of descriptors: free the spare one to accept the client
            // and tell it 503, rather than leave it waiting.
            Err(glommio::GlommioError::IoError(err))
                if fds::out_of_descriptors(&err) && spare.release() =>
            {
                if let Ok(stream) = listener.accept().await {
                    metrics.refused.set(metrics.refused.get() + 1);
                    connection::refuse(stream).await;
                }
                spare.restore();
                continue;
            }
            // Still out of descriptors, or a connection reset before
            // accept: back off briefly instead of spinning.
            Err(_) => {
                glommio::timer::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        match ConnectionSlot::acquire(&open_connections, connections_max) {
            Some(slot) => {
                metrics.accepted.set(metrics.accepted.get() + 1);
                let api = api.clone();
                let settings = settings.clone();
                let tls = tls.clone();
                glommio::spawn_local(async move {
                    connection::serve(stream, api, settings, kind, tls).await;
                    drop(slot);
                })
                .detach();
            }
            None => {
                metrics.refused.set(metrics.refused.get() + 1);
                glommio::spawn_local(connection::refuse(stream)).detach();
            }
        }
    }
}

/// Accepts PostgreSQL connections until cancelled. They share the shard's
/// connection slots with HTTP, so the limit and the shutdown drain count
/// both kinds.
async fn accept_pg(
    listener: TcpListener,
    api: Rc<Api>,
    settings: Rc<ConnectionSettings>,
    pg_settings: Rc<crate::pg::PgSettings>,
    connections_max: usize,
) {
    let metrics = api.mesh().metrics();
    let open_connections = metrics.open_connections.clone();
    loop {
        let Ok(stream) = listener.accept().await else {
            // As in `accept`: back off instead of spinning.
            glommio::timer::sleep(Duration::from_millis(5)).await;
            continue;
        };
        match ConnectionSlot::acquire(&open_connections, connections_max) {
            Some(slot) => {
                metrics.accepted.set(metrics.accepted.get() + 1);
                let (api, settings, pg_settings) =
                    (api.clone(), settings.clone(), pg_settings.clone());
                glommio::spawn_local(async move {
                    crate::pg::serve(stream, api, pg_settings, &settings.drain).await;
                    drop(slot);
                })
                .detach();
            }
            None => {
                metrics.refused.set(metrics.refused.get() + 1);
                glommio::spawn_local(crate::pg::refuse(stream)).detach();
            }
        }
    }
}

/// Lowers the WAL segment size when preallocating segments of the
/// configured size would fill a small volume, and says so.
fn fit_segments_to_free_space(config: &mut Config, shards: usize) {
    let free = crate::config::debug_free_bytes().or_else(|| datadir::free_bytes(&config.db));
    let Some(free) = free else {
        return;
    };
    let configured = config.wal.segment_bytes;
    let fitted = datadir::segment_bytes_that_fit(
        configured,
        crate::config::WAL_SEGMENT_BYTES_MIN as u64,
        free,
        shards,
    );
    if fitted < configured {
        logging::warn(
            "WAL segments lowered to fit the free space of the data directory's volume",
            &[
                ("wal_segment_bytes", &fitted),
                ("configured", &configured),
                ("free_bytes", &free),
            ],
        );
        config.wal.segment_bytes = fitted;
    }
}

/// Opens shard `shard` of the data directory `db`: its store, its WAL
/// (replaying what the store has not applied yet) and its engine, and
/// reports recovery on stderr. Must run on the shard's executor. The server
/// and embedded mode both open shards here, so a directory written by one
/// is read by the other exactly the same way.
pub(crate) fn open_shard(
    db: &Path,
    shard: ShardId,
    store: StoreOptions,
    wal: WalOptions,
    policy: (RecoveryPolicy, StoreRecovery),
    kms: Option<Kms>,
) -> Result<Rc<Engine>, String> {
    let dir = datadir::shard_dir(db, shard.0);
    let sealing = match kms {
        Some(kms) => Some((kms, Some(Vault::open(&kms_dir(db)?)?))),
        None => None,
    };
    let (engine, recovery_log) = Engine::open(shard, &dir, store, wal, policy, sealing)?;
    for line in recovery_log {
        logging::info("recovery", &[("shard", &shard.0), ("detail", &line)]);
    }
    Ok(engine)
}

/// `<db>/kms`, created if missing: where the master-key check files live.
pub(crate) fn kms_dir(db: &Path) -> Result<PathBuf, String> {
    let dir = db.join("kms");
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    Ok(dir)
}

/// The embedded KMS for `keyring`, checked against the master key the data
/// directory was encrypted with (recorded on first use, never the key).
pub(crate) fn checked_keyring(keyring: Keyring, check_dir: &Path) -> Result<Kms, String> {
    keyring
        .check_against(&check_dir.join("master.check"))
        .map_err(|err| err.to_string())?;
    Ok(Kms::Embedded(keyring))
}

/// The KMS when encryption is on. Embedded: the master keys from
/// PROGRESSDB_KMS_MASTER_KEY (64 hex digits, never written anywhere), else
/// the keyring file. External: the HTTP KMS, with its bearer token from
/// PROGRESSDB_KMS_TOKEN. Either must hold the key the data directory was
/// encrypted with; start-up stops here, before any data is opened, if not.
fn open_kms(config: &Config) -> Result<Option<Kms>, String> {
    let Some(kms_config) = &config.encryption else {
        return Ok(None);
    };
    let check_dir = kms_dir(&config.db)?;
    let kms = match kms_config {
        KmsConfig::Embedded { key_file } => match std::env::var("PROGRESSDB_KMS_MASTER_KEY") {
            Ok(hex) => {
                let keyring = Keyring::single(&hex).ok_or(
                    "PROGRESSDB_KMS_MASTER_KEY must be 64 hex digits (32 random bytes)".to_string(),
                )?;
                checked_keyring(keyring, &check_dir)?
            }
            Err(_) => {
                Kms::Embedded(Keyring::open(key_file, &check_dir).map_err(|err| err.to_string())?)
            }
        },
        KmsConfig::External { url, timeout } => {
            let token = std::env::var("PROGRESSDB_KMS_TOKEN").ok();
            let kms = ExternalKms::new(url, token, *timeout)
                .map_err(|err| format!("invalid kms_url: {err}"))?;
            crate::crypto::check_external(&kms, &check_dir).map_err(|err| err.to_string())?;
            Kms::External(kms)
        }
    };
    Ok(Some(kms))
}

/// The backend keys: as configured, or a development key when no key of
/// any kind is configured.
fn resolve_keys(config: &Config) -> Result<Arc<Vec<String>>, String> {
    let any_configured = !(config.api_keys.is_empty()
        && config.frontend_keys.is_empty()
        && config.admin_keys.is_empty());
    if any_configured {
        return Ok(Arc::new(config.api_keys.clone()));
    }
    let (key, generated) = datadir::dev_key(&config.db)?;
    if generated {
        // Shown once, on the start that creates it, so a first-time user
        // can make a request; later starts only name the file.
        println!("progressdb: no API key configured; generated a development key: {key}");
    }
    println!(
        "progressdb: using the development API key stored in {}",
        config.db.join("dev-api-key").display()
    );
    Ok(Arc::new(vec![key]))
}

/// io_uring registered buffers are locked memory: the sum over shards must
/// fit under RLIMIT_MEMLOCK, so the per-shard size is capped to a fair share
/// of it (half, leaving room for the rings themselves on older kernels).
pub(crate) fn io_memory_per_shard(configured: usize, shards: usize) -> Result<usize, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and has no other effects.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if status != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(configured.max(IO_MEMORY_MIN_BYTES));
    }
    let share = (limit.rlim_cur as usize / 2) / shards;
    if share < IO_MEMORY_MIN_BYTES {
        return Err(format!(
            "ulimit -l is {} KiB, too small for {shards} shards (each needs {} KiB of locked io_uring memory); raise it or use fewer --shards",
            limit.rlim_cur / 1024,
            IO_MEMORY_MIN_BYTES / 1024
        ));
    }
    Ok(configured.clamp(IO_MEMORY_MIN_BYTES, share))
}

/// The CPUs in this process's affinity mask, if it can be read.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: sched_getaffinity fills the zeroed set we own; CPU_ISSET only
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect(),
        )
    }
}

fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, Option<socket2::Socket>), String> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)
        .and_then(|socket| {
            socket.set_reuse_port(true)?;
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())?;
            Ok(socket)
        })
        .map_err(|err| format!("cannot bind {addr}: {err}"))?;
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|local| local.as_socket())
        .ok_or_else(|| format!("cannot read the port bound for {addr}"))?;
    Ok((bound, Some(socket)))
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and edit a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        // Masked too, so it never ends the process: it reloads TLS files.
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn mask_signals(set: &libc::sigset_t) -> Result<(), String> {
    // SAFETY: blocks the given signals for this thread (and threads it
    // spawns later); no memory is touched besides the set we pass.
    let status = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    if status == 0 {
        Ok(())
    } else {
        Err(format!("cannot block shutdown signals: error {status}"))
    }
}

/// Returns on SIGINT or SIGTERM. SIGHUP reloads the TLS certificate and
/// key when `cert` is given, and is otherwise ignored.
fn wait_for_shutdown(set: &libc::sigset_t, cert: Option<&tls::ReloadableCert>) {
    loop {
        let mut signal = 0;
        // SAFETY: sigwait reads the set and writes the received signal number.
        let status = unsafe { libc::sigwait(set, &mut signal) };
        if status != 0 || signal != libc::SIGHUP {
            return;
        }
        match cert.map(|cert| cert.reload()) {
            Some(Ok(())) => logging::info("SIGHUP: reloaded the TLS certificate and key", &[]),
            Some(Err(err)) => logging::error(
                "SIGHUP: kept the TLS certificate in service; the new one did not load",
                &[("error", &err)],
            ),
            None => logging::info("SIGHUP: no TLS certificate to reload", &[]),
        }
    }
}
