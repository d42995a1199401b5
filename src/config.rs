//! Every setting and limit in one place, resolved once at start.
//!
//! Precedence, highest first: command-line flag, `PROGRESSDB_*` environment
//! variable, config file (`--config`, TOML or JSON), built-in default.
//! Invalid values are reported as one line naming the setting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use serde::{Deserialize, Serialize};

use crate::crypto::fields::FieldPaths;
use crate::engine::StoreRecovery;
use crate::logging::Level;
use crate::store::StoreOptions;
use crate::wal::recovery::RecoveryPolicy;
use crate::wal::{Durability, WalOptions};

/// A setting from the flags (or environment), else from the file.
macro_rules! pick {
    ($flags:expr, $file:expr, $field:ident) => {
        $flags.$field.take().or($file.$field.take())
    };
}

/// Command-line flags. Every flag can also be set by the environment
/// variable shown in `--help`; unset flags fall back to the config file.
#[derive(Debug, Parser, Default)]
#[command(
    name = "progressdb",
    version,
    about = "ProgressDB: a chat-native database server (threads, messages, HTTP/JSON API)",
    after_help = "Also: `progressdb backup --db DIR --to file:///dir` (stopped server) and `progressdb restore --from file:///dir --db DIR`."
)]
pub struct Flags {
    /// Data directory; created if missing. [default: ./data]
    #[arg(long, env = "PROGRESSDB_DB", value_name = "DIR")]
    pub db: Option<PathBuf>,

    /// Listen address. `:PORT` means every interface (0.0.0.0:PORT); port 0
    /// picks a free port. [default: 127.0.0.1:8080]
    #[arg(long, env = "PROGRESSDB_ADDR", value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// Number of shards, one pinned executor each. Must match the data
    /// directory once it exists. [default: the shard count stored in the
    /// data directory, else the number of CPU cores]
    #[arg(long, env = "PROGRESSDB_SHARDS", value_name = "N")]
    pub shards: Option<usize>,

    /// Config file (TOML, or JSON when the name ends in .json) with the same
    /// settings as these flags, written with underscores (`api_keys`, `request_body_bytes_max`).
    #[arg(long, env = "PROGRESSDB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Backend key (`sk_...`), sent as `Authorization: Bearer` or
    /// `X-API-Key`: every frontend route for any user named in `X-User-ID`,
    /// the seed routes and `/backend/v1/sign`. Repeat for several; the
    /// environment variable takes a comma-separated list. When no key of any
    /// kind is configured, a development backend key is generated into
    /// `<db>/dev-api-key` on first start.
    #[arg(
        long = "api-key",
        visible_alias = "backend-key",
        env = "PROGRESSDB_API_KEYS",
        value_delimiter = ',',
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Frontend key (`pk_...`), safe in browsers: frontend routes only, and
    /// every request must carry `X-User-ID` and a valid `X-User-Signature`.
    #[arg(
        long = "frontend-key",
        env = "PROGRESSDB_FRONTEND_KEYS",
        value_delimiter = ',',
        value_name = "KEY",
        hide_env_values = true
    )]
    pub frontend_keys: Vec<String>,

    /// Admin key: the admin routes (`/admin/v1/...`) and nothing else.
    #[arg(
        long = "admin-key",
        env = "PROGRESSDB_ADMIN_KEYS",
        value_delimiter = ',',
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_keys: Vec<String>,

    /// Secret that user signatures are HMAC-keyed with; the first one signs,
    /// every one verifies (for rotation). [default: the backend keys]
    #[arg(
        long = "signing-key",
        env = "PROGRESSDB_SIGNING_KEYS",
        value_delimiter = ',',
        value_name = "KEY",
        hide_env_values = true
    )]
    pub signing_keys: Vec<String>,

    /// Origin allowed to call the frontend routes from a browser (CORS);
    /// repeat for several, or `*` for any. [default: none]
    #[arg(
        long = "cors-origin",
        env = "PROGRESSDB_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origins: Vec<String>,

    /// Requests per second each user of a key (each key acting for no
    /// user) may make, 0 for no limit. Kept per core (each core allows its
    /// share), so no state is shared. [default: 0]
    #[arg(long, env = "PROGRESSDB_RATE_LIMIT_RPS", value_name = "N")]
    pub rate_limit_rps: Option<u64>,

    /// Requests a user of a key may make in a burst above its rate.
    /// [default: the rate]
    #[arg(long, env = "PROGRESSDB_RATE_LIMIT_BURST", value_name = "N")]
    pub rate_limit_burst: Option<u64>,

    /// Requests per second all users of one key may make together (also
    /// its burst), 0 for no ceiling. [default: 0]
    #[arg(long, env = "PROGRESSDB_RATE_LIMIT_KEY_RPS", value_name = "N")]
    pub rate_limit_key_rps: Option<u64>,

    /// Failed authentications (401) one source address (IPv6: one /64)
    /// may make per minute, also its burst; then 429 until it refills. 0
    /// for no limit. [default: 600]
    #[arg(long, env = "PROGRESSDB_AUTH_FAILURES_PER_MINUTE", value_name = "N")]
    pub auth_failures_per_minute: Option<u64>,

    /// Largest accepted request body in bytes; at most 33554432 (half a
    /// write-ahead log record). [default: 1048576]
    #[arg(long, env = "PROGRESSDB_REQUEST_BODY_BYTES_MAX", value_name = "BYTES")]
    pub request_body_bytes_max: Option<usize>,

    /// Largest accepted request line plus headers in bytes. [default: 16384]
    #[arg(long, env = "PROGRESSDB_REQUEST_HEAD_BYTES_MAX", value_name = "BYTES")]
    pub request_head_bytes_max: Option<usize>,

    /// Deepest nesting of arrays and objects accepted in a JSON request
    /// body, the body object itself counting as one; 1 to 128. [default: 64]
    #[arg(long, env = "PROGRESSDB_JSON_DEPTH_MAX", value_name = "N")]
    pub json_depth_max: Option<usize>,

    /// Milliseconds a keep-alive connection may stay silent before it is
    /// closed, and the longest wait for the rest of a started request. [default: 60000]
    #[arg(long, env = "PROGRESSDB_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,

    /// Milliseconds a client may take to send one whole request, from its
    /// first byte; cuts off clients that trickle a request. [default: 10000]
    #[arg(long, env = "PROGRESSDB_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Open connections each shard accepts before answering 503. [default: 10000]
    #[arg(long, env = "PROGRESSDB_CONNECTIONS_PER_SHARD_MAX", value_name = "N")]
    pub connections_per_shard_max: Option<usize>,

    /// Participants a thread may have besides its owner (group chat). [default: 10000]
    #[arg(long, env = "PROGRESSDB_PARTICIPANTS_PER_THREAD_MAX", value_name = "N")]
    pub participants_per_thread_max: Option<usize>,

    /// When writes are acknowledged: `sync` after they are on stable
    /// storage, `batch` at once with an fsync at least every
    /// --wal-flush-ms, `none` never fsyncs. [default: sync]
    #[arg(long, env = "PROGRESSDB_DURABILITY", value_name = "MODE")]
    pub durability: Option<String>,

    /// Longest delay before an fsync in `batch` mode, in ms. [default: 5]
    #[arg(long, env = "PROGRESSDB_WAL_FLUSH_MS", value_name = "MS")]
    pub wal_flush_ms: Option<u64>,

    /// Size of each write-ahead log segment file in bytes. [default: 67108864]
    #[arg(long, env = "PROGRESSDB_WAL_SEGMENT_BYTES", value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,

    /// Bytes a shard's memtable holds before it is written out as a table.
    /// Up to six times this per shard is in memory (one memtable filling,
    /// up to twice this while a compaction runs, four waiting for the
    /// disk). [default: 33554432]
    #[arg(long, env = "PROGRESSDB_MEMTABLE_BYTES", value_name = "BYTES")]
    pub memtable_bytes: Option<u64>,

    /// What start-up does when the WAL is corrupt in the middle (not just a
    /// torn tail): `strict` refuses to start the shard, `truncate` cuts the
    /// log at the damage and loses what follows. [default: strict]
    #[arg(long, env = "PROGRESSDB_WAL_RECOVERY", value_name = "POLICY")]
    pub wal_recovery: Option<String>,

    /// What start-up does when a shard's store (its tables) cannot be
    /// opened: `strict` refuses to start, saying which option works;
    /// `rebuild` moves it aside and rebuilds it from the write-ahead log
    /// when the log holds the shard's whole history (else refuses, naming
    /// what would be lost); `rebuild-lossy` rebuilds from what the log
    /// holds anyway. [default: strict]
    #[arg(long, env = "PROGRESSDB_STORE_RECOVERY", value_name = "POLICY")]
    pub store_recovery: Option<String>,

    /// Encrypt message bodies, past versions and thread titles at rest
    /// (AES-256-GCM, a key per thread, wrapped by the KMS master key).
    /// Applies to threads created while it is on.
    #[arg(long, env = "PROGRESSDB_ENCRYPTION")]
    pub encryption: bool,

    /// With --encryption, seal only this path of message bodies instead of
    /// the whole body (`body.text`; `*` matches any member or array item,
    /// as in `body.*.text`); repeat for several. The rest of the body stays
    /// in the clear. [default: none: whole bodies]
    #[arg(
        long = "encrypt-field",
        env = "PROGRESSDB_ENCRYPT_FIELDS",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub encrypt_fields: Vec<String>,

    /// Where master keys live: `embedded` (a keyring file, or the
    /// PROGRESSDB_KMS_MASTER_KEY environment variable holding 64 hex
    /// digits) or `external` (an HTTP KMS at --kms-url; a bearer token, if
    /// it needs one, comes from PROGRESSDB_KMS_TOKEN). [default: embedded]
    #[arg(long, env = "PROGRESSDB_KMS", value_name = "KIND")]
    pub kms: Option<String>,

    /// The external KMS: http://host:port[/prefix], serving POST /wrap,
    /// /unwrap and /rotate.
    #[arg(long, env = "PROGRESSDB_KMS_URL", value_name = "URL")]
    pub kms_url: Option<String>,

    /// Timeout of each external KMS call, in milliseconds. [default: 2000]
    #[arg(long, env = "PROGRESSDB_KMS_TIMEOUT_MS", value_name = "MS")]
    pub kms_timeout_ms: Option<u64>,

    /// The embedded KMS's keyring file, created with mode 0600 on first
    /// start. [default: <db>/kms/master.keys]
    #[arg(long, env = "PROGRESSDB_KMS_KEY_FILE", value_name = "FILE")]
    pub kms_key_file: Option<PathBuf>,

    /// Memory registered with io_uring per shard, in KiB. It is locked
    /// memory, so shards x this must fit under `ulimit -l`. [default: 512]
    #[arg(long, env = "PROGRESSDB_IO_MEMORY_KIB", value_name = "KIB")]
    pub io_memory_kib: Option<usize>,

    /// Print the effective configuration (config file, environment and
    /// flags merged, defaults filled in, secrets masked) as TOML and exit
    /// without starting the server.
    #[arg(long)]
    pub print_config: bool,

    /// Least severe log events written to stderr: error, warn, info or
    /// debug. [default: info]
    #[arg(long, env = "PROGRESSDB_LOG", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Write one log line per request (method, route, status, duration,
    /// shard; never paths, headers or keys), as info events.
    #[arg(long, env = "PROGRESSDB_ACCESS_LOG")]
    pub access_log: bool,

    /// Also serve `GET /metrics` without a key on this address (for a
    /// Prometheus scraper on a private network). On the main port
    /// /metrics needs the admin key. [default: off]
    #[arg(long, env = "PROGRESSDB_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Also serve the PostgreSQL wire protocol (psql, drivers) on this
    /// address, on every shard. [default: off]
    #[arg(long, env = "PROGRESSDB_PG_ADDR", value_name = "HOST:PORT")]
    pub pg_addr: Option<String>,

    /// Serve HTTPS on `--addr` (and on `--metrics-addr`) with this PEM
    /// certificate chain, leaf first. Needs `--tls-key`. SIGHUP reloads
    /// both files without dropping connections. [default: plain HTTP]
    #[arg(long, env = "PROGRESSDB_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "PROGRESSDB_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// With TLS on, also serve plain HTTP on this address, meant for
    /// loopback (a local sidecar or health check). [default: off]
    #[arg(long, env = "PROGRESSDB_PLAIN_ADDR", value_name = "HOST:PORT")]
    pub plain_addr: Option<String>,

    /// Longest time in ms a client may take to finish the TLS handshake.
    /// [default: 10000]
    #[arg(long, env = "PROGRESSDB_TLS_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    pub tls_handshake_timeout_ms: Option<u64>,

    /// On SIGTERM/SIGINT, the longest wait in ms for requests in flight
    /// to finish before the store is flushed and the process exits.
    /// [default: 10000]
    #[arg(long, env = "PROGRESSDB_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,

    /// Hard-delete soft-deleted threads (with everything in them) and
    /// soft-deleted messages (with their versions) this long after their
    /// deletion: a whole number and a unit, ms, s, m, h or d (`30d`).
    /// [default: never]
    #[arg(
        long,
        env = "PROGRESSDB_RETENTION_DELETED_AFTER",
        value_name = "DURATION"
    )]
    pub retention_deleted_after: Option<String>,

    /// Hard-delete every message, deleted or not, this long after it was
    /// posted (units as above). [default: never]
    #[arg(
        long,
        env = "PROGRESSDB_RETENTION_MESSAGES_MAX_AGE",
        value_name = "DURATION"
    )]
    pub retention_messages_max_age: Option<String>,

    /// How often each shard runs the retention job (units as above, at
    /// least 100ms). [default: 1h]
    #[arg(long, env = "PROGRESSDB_RETENTION_INTERVAL", value_name = "DURATION")]
    pub retention_interval: Option<String>,
    /// Run as one node of a cluster: threads live in partitions replicated
    /// through NATS JetStream, any node answers any request (see README,
    /// "Clustered mode"). Needs `--node-id`. [default: off]
    #[arg(long, env = "PROGRESSDB_CLUSTER")]
    pub cluster: bool,

    /// This node's stable name in the cluster (`[A-Za-z0-9_-]`, 1..=64
    /// characters). Needed with `--cluster`.
    #[arg(long, env = "PROGRESSDB_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Address other nodes reach this node's API on (forwarded requests).
    /// [default: `--addr`]
    #[arg(long, env = "PROGRESSDB_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// A NATS server of the JetStream cluster (`nats://HOST:PORT`). Repeat
    /// for several; the environment variable takes a comma-separated list.
    /// [default: nats://127.0.0.1:4222]
    #[arg(
        long = "nats-url",
        env = "PROGRESSDB_NATS_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub nats_urls: Vec<String>,

    /// Monitoring address (`http: HOST:PORT` in its config) of a NATS
    /// server to check at start: clustered mode refuses to run when one
    /// does not fsync every message (`sync_interval: always`). Repeat for
    /// every server; the environment variable takes a comma-separated list.
    /// [default: none, not checked]
    #[arg(
        long = "nats-monitor",
        env = "PROGRESSDB_NATS_MONITORS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub nats_monitors: Vec<String>,

    /// Partitions of the cluster, fixed when the cluster is created; a
    /// multiple of `--shards`. [default: 64]
    #[arg(long, env = "PROGRESSDB_PARTITIONS", value_name = "P")]
    pub partitions: Option<u32>,

    /// Nodes that tail each partition, ready to take it over. [default: 1]
    #[arg(long, env = "PROGRESSDB_STANDBYS", value_name = "S")]
    pub standbys: Option<usize>,
}

/// The same settings as [`Flags`], as read from a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    db: Option<PathBuf>,
    addr: Option<String>,
    shards: Option<usize>,
    api_keys: Option<Vec<String>>,
    frontend_keys: Option<Vec<String>>,
    admin_keys: Option<Vec<String>>,
    signing_keys: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
    rate_limit_rps: Option<u64>,
    rate_limit_burst: Option<u64>,
    rate_limit_key_rps: Option<u64>,
    auth_failures_per_minute: Option<u64>,
    request_body_bytes_max: Option<usize>,
    request_head_bytes_max: Option<usize>,
    json_depth_max: Option<usize>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    connections_per_shard_max: Option<usize>,
    participants_per_thread_max: Option<usize>,
    io_memory_kib: Option<usize>,
    durability: Option<String>,
    wal_flush_ms: Option<u64>,
    wal_segment_bytes: Option<u64>,
    memtable_bytes: Option<u64>,
    wal_recovery: Option<String>,
    store_recovery: Option<String>,
    encryption: Option<bool>,
    encrypt_fields: Option<Vec<String>>,
    kms: Option<String>,
    kms_key_file: Option<PathBuf>,
    kms_url: Option<String>,
    kms_timeout_ms: Option<u64>,
    log_level: Option<String>,
    access_log: Option<bool>,
    metrics_addr: Option<String>,
    pg_addr: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    plain_addr: Option<String>,
    tls_handshake_timeout_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    retention_deleted_after: Option<String>,
    retention_messages_max_age: Option<String>,
    retention_interval: Option<String>,
    cluster: Option<bool>,
    node_id: Option<String>,
    advertise: Option<String>,
    nats_urls: Option<Vec<String>>,
    nats_monitors: Option<Vec<String>>,
    partitions: Option<u32>,
    standbys: Option<usize>,
}

/// The keys a config file may hold: the fields of [`FileSettings`] (a unit
/// test keeps the two equal). Errors name the failing key from here.
const FILE_KEYS: &[&str] = &[
    "db",
    "addr",
    "shards",
    "api_keys",
    "frontend_keys",
    "admin_keys",
    "signing_keys",
    "cors_origins",
    "rate_limit_rps",
    "rate_limit_burst",
    "rate_limit_key_rps",
    "auth_failures_per_minute",
    "request_body_bytes_max",
    "request_head_bytes_max",
    "json_depth_max",
    "idle_timeout_ms",
    "request_timeout_ms",
    "connections_per_shard_max",
    "participants_per_thread_max",
    "io_memory_kib",
    "durability",
    "wal_flush_ms",
    "wal_segment_bytes",
    "memtable_bytes",
    "wal_recovery",
    "store_recovery",
    "encryption",
    "encrypt_fields",
    "kms",
    "kms_key_file",
    "kms_url",
    "kms_timeout_ms",
    "log_level",
    "access_log",
    "metrics_addr",
    "pg_addr",
    "tls_cert",
    "tls_key",
    "plain_addr",
    "tls_handshake_timeout_ms",
    "shutdown_timeout_ms",
    "retention_deleted_after",
    "retention_messages_max_age",
    "retention_interval",
    "cluster",
    "node_id",
    "advertise",
    "nats_urls",
    "nats_monitors",
    "partitions",
    "standbys",
];

/// File keys that hold secrets: errors about them never quote a value.
const SECRET_FILE_KEYS: &[&str] = &["api_keys", "frontend_keys", "admin_keys", "signing_keys"];

/// The effective configuration.
#[derive(Clone)]
pub struct Config {
    pub db: PathBuf,
    pub addr: SocketAddr,
    /// `None` when neither flag, env nor file set it: the server then uses
    /// the count stored in the data directory, else the number of cores.
    pub shards: Option<usize>,
    /// Backend keys (`--api-key` / `--backend-key`).
    pub api_keys: Vec<String>,
    pub frontend_keys: Vec<String>,
    pub admin_keys: Vec<String>,
    pub signing_keys: Vec<String>,
    pub cors_origins: Vec<String>,
    /// Requests per second per (key, user) (0: unlimited) and burst size.
    pub rate_limit_rps: u64,
    pub rate_limit_burst: u64,
    /// Requests per second per key over all its users (0: no ceiling).
    pub rate_limit_key_rps: u64,
    /// Failed authentications per source address per minute (0: no limit).
    pub auth_failures_per_minute: u64,
    pub limits: Limits,
    pub io_memory_bytes: usize,
    pub wal: WalOptions,
    pub wal_recovery: RecoveryPolicy,
    pub store_recovery: StoreRecovery,
    pub store: StoreOptions,
    /// `Some` when encryption is on: where the master keys live.
    pub encryption: Option<KmsConfig>,
    /// Body paths sealed one by one; empty seals whole bodies.
    pub encrypt_fields: FieldPaths,
    pub log_level: Level,
    pub access_log: bool,
    /// A second listener serving `/metrics` without a key.
    pub metrics_addr: Option<SocketAddr>,
    /// A listener speaking the PostgreSQL v3 protocol (src/pg).
    pub pg_addr: Option<SocketAddr>,
    /// `Some` when the API and metrics listeners speak HTTPS.
    pub tls: Option<TlsConfig>,
    /// Longest wait for requests in flight on shutdown.
    pub shutdown_timeout_ms: u64,
    pub retention: Retention,
    /// `Some` in clustered mode (`--cluster`).
    pub cluster: Option<ClusterConfig>,
}

/// The retention job's settings (`--retention-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub policy: crate::engine::RetentionPolicy,
    /// How often each shard runs a pass.
    pub interval: std::time::Duration,
}

/// Clustered mode's settings (`--cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: String,
    /// Where other nodes send forwarded requests.
    pub advertise: SocketAddr,
    pub nats_urls: Vec<String>,
    /// NATS monitoring endpoints whose `sync_always` startup checks.
    pub nats_monitors: Vec<SocketAddr>,
    pub partitions: u32,
    pub standbys: usize,
}

const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";
const PARTITIONS_DEFAULT: usize = 64;
/// Most partitions a cluster may have: each is one JetStream stream.
const PARTITIONS_MAX: usize = 4096;
const STANDBYS_DEFAULT: usize = 1;
const STANDBYS_MAX: usize = 8;
const NODE_ID_CHARS_MAX: usize = 64;
const NATS_URLS_MAX: usize = 16;

/// The cluster settings as given, before validation.
struct ClusterFlags {
    on: bool,
    node_id: Option<String>,
    advertise: Option<String>,
    nats_urls: Vec<String>,
    nats_monitors: Vec<String>,
    partitions: Option<u32>,
    standbys: Option<usize>,
}

/// `None` unless `--cluster`; then every cluster setting checked.
fn resolve_cluster(
    given: ClusterFlags,
    addr: SocketAddr,
) -> Result<Option<ClusterConfig>, ConfigError> {
    if !given.on {
        return Ok(None);
    }
    let node_id = given
        .node_id
        .ok_or_else(|| invalid("node_id", "is needed with `cluster`"))?;
    let name_ok = (1..=NODE_ID_CHARS_MAX).contains(&node_id.len())
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(invalid(
            "node_id",
            format!("must be 1..={NODE_ID_CHARS_MAX} of [A-Za-z0-9_-]"),
        ));
    }
    let advertise = match given.advertise {
        Some(text) => parse_addr(&text).map_err(|reason| invalid("advertise", reason))?,
        None => addr,
    };
    let nats_urls = match given.nats_urls.is_empty() {
        true => vec![NATS_URL_DEFAULT.to_owned()],
        false => given.nats_urls,
    };
    if nats_urls.len() > NATS_URLS_MAX || nats_urls.iter().any(|url| url.trim().is_empty()) {
        return Err(invalid(
            "nats_urls",
            format!("must be 1..={NATS_URLS_MAX} non-empty URLs"),
        ));
    }
    if given.nats_monitors.len() > NATS_URLS_MAX {
        return Err(invalid(
            "nats_monitors",
            format!("at most {NATS_URLS_MAX} addresses"),
        ));
    }
    let nats_monitors = given
        .nats_monitors
        .iter()
        .map(|text| parse_addr(text).map_err(|reason| invalid("nats_monitors", reason)))
        .collect::<Result<Vec<_>, _>>()?;
    let partitions = positive(
        "partitions",
        given.partitions.map(|p| p as usize),
        PARTITIONS_DEFAULT,
        PARTITIONS_MAX,
    )? as u32;
    let standbys = given.standbys.unwrap_or(STANDBYS_DEFAULT);
    if standbys > STANDBYS_MAX {
        return Err(invalid("standbys", format!("must be 0..={STANDBYS_MAX}")));
    }
    Ok(Some(ClusterConfig {
        node_id,
        advertise,
        nats_urls,
        nats_monitors,
        partitions,
        standbys,
    }))
}

/// HTTPS settings (`--tls-cert`, `--tls-key`, `--plain-addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub handshake_timeout: std::time::Duration,
    /// A plain-HTTP listener beside the TLS one.
    pub plain_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsConfig {
    /// The embedded KMS's keyring file.
    Embedded { key_file: PathBuf },
    External {
        url: String,
        timeout: std::time::Duration,
    },
}

impl std::fmt::Debug for Config {
    // Hand-written so API keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db", &self.db)
            .field("addr", &self.addr)
            .field("shards", &self.shards)
            .field(
                "keys",
                &format_args!(
                    "[{} backend, {} frontend, {} admin, {} signing: hidden]",
                    self.api_keys.len(),
                    self.frontend_keys.len(),
                    self.admin_keys.len(),
                    self.signing_keys.len()
                ),
            )
            .field("cors_origins", &self.cors_origins)
            .field("encrypt_fields", &self.encrypt_fields)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("rate_limit_key_rps", &self.rate_limit_key_rps)
            .field("auth_failures_per_minute", &self.auth_failures_per_minute)
            .field("limits", &self.limits)
            .field("io_memory_bytes", &self.io_memory_bytes)
            .field("wal", &self.wal)
            .field("wal_recovery", &self.wal_recovery)
            .field("store_recovery", &self.store_recovery)
            .field("log_level", &self.log_level)
            .field("access_log", &self.access_log)
            .field("metrics_addr", &self.metrics_addr)
            .field("pg_addr", &self.pg_addr)
            .field("tls", &self.tls)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("retention", &self.retention)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Limits on what a client can make the server hold or do.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_head_bytes_max: usize,
    pub request_header_count_max: usize,
    pub request_body_bytes_max: usize,
    /// Deepest nesting of arrays and objects in a JSON request body.
    pub json_depth_max: usize,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub connections_per_shard_max: usize,
    pub participants_per_thread_max: usize,
    pub title_bytes_max: usize,
    pub role_bytes_max: usize,
    pub page_limit_default: usize,
    pub page_limit_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_head_bytes_max: 16 * 1024,
            request_header_count_max: 64,
            request_body_bytes_max: 1024 * 1024,
            json_depth_max: JSON_DEPTH_MAX_DEFAULT,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 10_000,
            connections_per_shard_max: 10_000,
            participants_per_thread_max: crate::engine::PARTICIPANTS_PER_THREAD_DEFAULT,
            title_bytes_max: 512,
            role_bytes_max: 64,
            page_limit_default: 50,
            page_limit_max: 1000,
        }
    }
}

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_DB: &str = "./data";
pub const SHARDS_MAX: usize = 256;
const IO_MEMORY_KIB_DEFAULT: usize = 512;
pub(crate) const WAL_FLUSH_MS_DEFAULT: usize = 5;
pub(crate) const WAL_SEGMENT_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
pub(crate) const WAL_SEGMENT_BYTES_MIN: usize = 64 * 1024;
const MEMTABLE_BYTES_MIN: usize = 64 * 1024;
const SHUTDOWN_TIMEOUT_MS_DEFAULT: usize = 10_000;
/// Enough for any chat payload; deep nesting breaks common clients'
/// recursive parsers long before it means anything.
const JSON_DEPTH_MAX_DEFAULT: usize = 64;
/// serde_json's own recursion limit: deeper bodies could be stored but
/// not decoded again as typed values.
const JSON_DEPTH_MAX_CEILING: usize = 128;

/// A setting that failed validation; `Display` is the one line to print.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid config `{}`: {}", self.key, self.reason)
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl Config {
    /// Merges flags (already including env vars) over the config file over defaults.
    pub fn resolve(mut flags: Flags) -> Result<Config, ConfigError> {
        let mut file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let (flags, file) = (&mut flags, &mut file);
        let addr_text = pick!(flags, file, addr).unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = parse_addr(&addr_text).map_err(|reason| invalid("addr", reason))?;
        let shards = pick!(flags, file, shards);
        if let Some(count) = shards
            && !(1..=SHARDS_MAX).contains(&count)
        {
            return Err(invalid(
                "shards",
                format!("must be 1..={SHARDS_MAX}, got {count}"),
            ));
        }
        let db = pick!(flags, file, db).unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
        let rates = rates_from(flags, file)?;
        let storage = storage_from(flags, file)?;
        let encryption = encryption_from(flags, file, &db)?;
        let listeners = listeners_from(flags, file, addr)?;
        let retention = retention_from(flags, file)?;
        let cluster = cluster_from(flags, file, addr)?;
        let retaining =
            retention.policy.deleted_after.is_some() || retention.policy.messages_max_age.is_some();
        if retaining && cluster.is_some() {
            return Err(invalid(
                "retention_deleted_after",
                "retention is not available in clustered mode yet",
            ));
        }
        Ok(Config {
            retention,
            cluster,
            tls: listeners.tls,
            log_level: log_level_from(flags, file)?,
            access_log: flags.access_log || file.access_log.unwrap_or(false),
            metrics_addr: listeners.metrics_addr,
            pg_addr: listeners.pg_addr,
            shutdown_timeout_ms: positive(
                "shutdown_timeout_ms",
                pick!(flags, file, shutdown_timeout_ms).map(|ms| ms as usize),
                SHUTDOWN_TIMEOUT_MS_DEFAULT,
                3600 * 1000,
            )? as u64,
            encrypt_fields: encrypt_fields(
                listed(take(&mut flags.encrypt_fields), file.encrypt_fields.take()),
                encryption.is_some(),
            )?,
            encryption,
            wal: storage.wal,
            wal_recovery: storage.wal_recovery,
            store_recovery: storage.store_recovery,
            store: storage.store,
            db,
            addr,
            shards,
            api_keys: secrets("api_keys", take(&mut flags.api_keys), file.api_keys.take())?,
            frontend_keys: secrets(
                "frontend_keys",
                take(&mut flags.frontend_keys),
                file.frontend_keys.take(),
            )?,
            admin_keys: secrets(
                "admin_keys",
                take(&mut flags.admin_keys),
                file.admin_keys.take(),
            )?,
            signing_keys: secrets(
                "signing_keys",
                take(&mut flags.signing_keys),
                file.signing_keys.take(),
            )?,
            cors_origins: listed(take(&mut flags.cors_origins), file.cors_origins.take()),
            rate_limit_rps: rates.rps,
            rate_limit_burst: rates.burst,
            rate_limit_key_rps: rates.key_rps,
            auth_failures_per_minute: rates.auth_failures_per_minute,
            limits: limits_from(flags, file)?,
            io_memory_bytes: storage.io_memory_bytes,
        })
    }
}

fn take(values: &mut Vec<String>) -> Vec<String> {
    std::mem::take(values)
}

/// A list from the flags when they give one, else from the file.
fn listed(flags: Vec<String>, file: Option<Vec<String>>) -> Vec<String> {
    match flags.is_empty() {
        true => file.unwrap_or_default(),
        false => flags,
    }
}

/// Request rates: per (key, user), their burst, per key, failed logins.
struct Rates {
    rps: u64,
    burst: u64,
    key_rps: u64,
    auth_failures_per_minute: u64,
}

fn rates_from(flags: &mut Flags, file: &mut FileSettings) -> Result<Rates, ConfigError> {
    let rps = pick!(flags, file, rate_limit_rps).unwrap_or(0);
    let burst = pick!(flags, file, rate_limit_burst).unwrap_or(rps);
    if rps > 0 && burst == 0 {
        return Err(invalid(
            "rate_limit_burst",
            "must be at least 1 when a rate is set",
        ));
    }
    Ok(Rates {
        rps,
        burst,
        key_rps: pick!(flags, file, rate_limit_key_rps).unwrap_or(0),
        auth_failures_per_minute: pick!(flags, file, auth_failures_per_minute)
            .unwrap_or(AUTH_FAILURES_PER_MINUTE_DEFAULT),
    })
}

fn limits_from(flags: &mut Flags, file: &mut FileSettings) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    let ms = |value: Option<u64>| value.map(|ms| ms as usize);
    Ok(Limits {
        request_body_bytes_max: request_body_bytes_max(
            pick!(flags, file, request_body_bytes_max),
            defaults.request_body_bytes_max,
        )?,
        request_head_bytes_max: positive(
            "request_head_bytes_max",
            pick!(flags, file, request_head_bytes_max),
            defaults.request_head_bytes_max,
            1024 * 1024,
        )?,
        json_depth_max: positive(
            "json_depth_max",
            pick!(flags, file, json_depth_max),
            defaults.json_depth_max,
            JSON_DEPTH_MAX_CEILING,
        )?,
        idle_timeout_ms: positive(
            "idle_timeout_ms",
            ms(pick!(flags, file, idle_timeout_ms)),
            defaults.idle_timeout_ms as usize,
            24 * 3600 * 1000,
        )? as u64,
        request_timeout_ms: positive(
            "request_timeout_ms",
            ms(pick!(flags, file, request_timeout_ms)),
            defaults.request_timeout_ms as usize,
            3600 * 1000,
        )? as u64,
        connections_per_shard_max: positive(
            "connections_per_shard_max",
            pick!(flags, file, connections_per_shard_max),
            defaults.connections_per_shard_max,
            1_000_000,
        )?,
        participants_per_thread_max: positive(
            "participants_per_thread_max",
            pick!(flags, file, participants_per_thread_max),
            defaults.participants_per_thread_max,
            1_000_000,
        )?,
        ..defaults
    })
}

/// The WAL, the store and the io_uring memory.
struct Storage {
    wal: WalOptions,
    wal_recovery: RecoveryPolicy,
    store_recovery: StoreRecovery,
    store: StoreOptions,
    io_memory_bytes: usize,
}

fn storage_from(flags: &mut Flags, file: &mut FileSettings) -> Result<Storage, ConfigError> {
    let durability = match pick!(flags, file, durability).as_deref() {
        None => Durability::Sync,
        Some(text) => Durability::parse(text).ok_or_else(|| {
            invalid(
                "durability",
                format!("must be sync, batch or none, got {text:?}"),
            )
        })?,
    };
    let wal_recovery = match pick!(flags, file, wal_recovery).as_deref() {
        None | Some("strict") => RecoveryPolicy::Strict,
        Some("truncate") => RecoveryPolicy::Truncate,
        Some(other) => {
            return Err(invalid(
                "wal_recovery",
                format!("must be strict or truncate, got {other:?}"),
            ));
        }
    };
    let store_recovery = match pick!(flags, file, store_recovery).as_deref() {
        None => StoreRecovery::Strict,
        Some(text) => StoreRecovery::parse(text).ok_or_else(|| {
            invalid(
                "store_recovery",
                format!("must be strict, rebuild or rebuild-lossy, got {text:?}"),
            )
        })?,
    };
    let wal_flush_ms = positive(
        "wal_flush_ms",
        pick!(flags, file, wal_flush_ms).map(|ms| ms as usize),
        WAL_FLUSH_MS_DEFAULT,
        10_000,
    )?;
    let wal_segment_bytes = sized(
        "wal_segment_bytes",
        pick!(flags, file, wal_segment_bytes),
        WAL_SEGMENT_BYTES_DEFAULT,
        (WAL_SEGMENT_BYTES_MIN, 1 << 40),
    )?;
    let memtable_bytes = sized(
        "memtable_bytes",
        pick!(flags, file, memtable_bytes),
        StoreOptions::default().memtable_bytes as usize,
        (MEMTABLE_BYTES_MIN, 1 << 30),
    )?;
    let io_memory_kib = positive(
        "io_memory_kib",
        pick!(flags, file, io_memory_kib),
        IO_MEMORY_KIB_DEFAULT,
        1024 * 1024,
    )?;
    Ok(Storage {
        wal: WalOptions {
            durability,
            flush_interval: std::time::Duration::from_millis(wal_flush_ms as u64),
            segment_bytes: wal_segment_bytes as u64,
            fail_after_flushes: injected_wal_fault(),
        },
        wal_recovery,
        store_recovery,
        store: StoreOptions {
            memtable_bytes: memtable_bytes as u64,
            ..StoreOptions::default()
        },
        io_memory_bytes: io_memory_kib * 1024,
    })
}

/// Where master keys live when encryption is on.
fn encryption_from(
    flags: &mut Flags,
    file: &mut FileSettings,
    db: &Path,
) -> Result<Option<KmsConfig>, ConfigError> {
    if !(flags.encryption || file.encryption.unwrap_or(false)) {
        return Ok(None);
    }
    match pick!(flags, file, kms).as_deref().unwrap_or("embedded") {
        "embedded" => Ok(Some(KmsConfig::Embedded {
            key_file: pick!(flags, file, kms_key_file)
                .unwrap_or_else(|| db.join("kms").join("master.keys")),
        })),
        "external" => {
            let url = pick!(flags, file, kms_url)
                .ok_or_else(|| invalid("kms_url", "is required with kms = external"))?;
            if !url.starts_with("http://") {
                return Err(invalid("kms_url", "must start with http://"));
            }
            let timeout_ms = positive(
                "kms_timeout_ms",
                pick!(flags, file, kms_timeout_ms).map(|ms| ms as usize),
                KMS_TIMEOUT_MS_DEFAULT,
                60_000,
            )?;
            Ok(Some(KmsConfig::External {
                url,
                timeout: std::time::Duration::from_millis(timeout_ms as u64),
            }))
        }
        other => Err(invalid(
            "kms",
            format!("must be embedded or external, got {other:?}"),
        )),
    }
}

fn log_level_from(flags: &mut Flags, file: &mut FileSettings) -> Result<Level, ConfigError> {
    match pick!(flags, file, log_level).as_deref() {
        None => Ok(Level::Info),
        Some(text) => Level::parse(text).ok_or_else(|| {
            invalid(
                "log_level",
                format!("must be error, warn, info or debug, got {text:?}"),
            )
        }),
    }
}

/// The listeners beside the API's: metrics, PostgreSQL, and TLS on both.
struct Listeners {
    metrics_addr: Option<SocketAddr>,
    pg_addr: Option<SocketAddr>,
    tls: Option<TlsConfig>,
}

fn listeners_from(
    flags: &mut Flags,
    file: &mut FileSettings,
    addr: SocketAddr,
) -> Result<Listeners, ConfigError> {
    let metrics_addr = match pick!(flags, file, metrics_addr) {
        None => None,
        Some(text) => {
            let metrics_addr =
                parse_addr(&text).map_err(|reason| invalid("metrics_addr", reason))?;
            // Port 0 picks a port distinct from the main one.
            if metrics_addr.port() != 0 && metrics_addr.port() == addr.port() {
                return Err(invalid(
                    "metrics_addr",
                    "must use a different port than `addr`",
                ));
            }
            Some(metrics_addr)
        }
    };
    let pg_addr = match pick!(flags, file, pg_addr) {
        None => None,
        Some(text) => {
            let pg_addr = parse_addr(&text).map_err(|reason| invalid("pg_addr", reason))?;
            // Port 0 picks a port distinct from the others.
            let mut taken = [Some(addr), metrics_addr].into_iter().flatten();
            if pg_addr.port() != 0 && taken.any(|other| other.port() == pg_addr.port()) {
                return Err(invalid(
                    "pg_addr",
                    "must use a different port than `addr` and `metrics_addr`",
                ));
            }
            Some(pg_addr)
        }
    };
    let tls = resolve_tls(
        TlsFlags {
            cert: pick!(flags, file, tls_cert),
            key: pick!(flags, file, tls_key),
            plain_addr: pick!(flags, file, plain_addr),
            handshake_timeout_ms: pick!(flags, file, tls_handshake_timeout_ms),
        },
        &[Some(addr), metrics_addr, pg_addr],
    )?;
    Ok(Listeners {
        metrics_addr,
        pg_addr,
        tls,
    })
}

fn retention_from(flags: &mut Flags, file: &mut FileSettings) -> Result<Retention, ConfigError> {
    resolve_retention(RetentionFlags {
        deleted_after: pick!(flags, file, retention_deleted_after),
        messages_max_age: pick!(flags, file, retention_messages_max_age),
        interval: pick!(flags, file, retention_interval),
    })
}

fn cluster_from(
    flags: &mut Flags,
    file: &mut FileSettings,
    addr: SocketAddr,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let cluster = resolve_cluster(
        ClusterFlags {
            on: flags.cluster || file.cluster.unwrap_or(false),
            node_id: pick!(flags, file, node_id),
            advertise: pick!(flags, file, advertise),
            nats_urls: listed(take(&mut flags.nats_urls), file.nats_urls.take()),
            nats_monitors: listed(take(&mut flags.nats_monitors), file.nats_monitors.take()),
            partitions: pick!(flags, file, partitions),
            standbys: pick!(flags, file, standbys),
        },
        addr,
    )?;
    Ok(cluster)
}

/// The retention settings as given, before parsing.
struct RetentionFlags {
    deleted_after: Option<String>,
    messages_max_age: Option<String>,
    interval: Option<String>,
}

const RETENTION_INTERVAL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Passes closer than this would keep a shard busy walking its keys.
const RETENTION_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest retention duration: about a hundred years.
const RETENTION_DURATION_MAX_MS: u64 = 36_500 * 86_400_000;

fn resolve_retention(given: RetentionFlags) -> Result<Retention, ConfigError> {
    let parse = |key: &'static str, text: Option<String>| {
        text.map(|text| parse_duration(&text).map_err(|reason| invalid(key, reason)))
            .transpose()
    };
    Ok(Retention {
        policy: crate::engine::RetentionPolicy {
            deleted_after: parse("retention_deleted_after", given.deleted_after)?,
            messages_max_age: parse("retention_messages_max_age", given.messages_max_age)?,
        },
        interval: match parse("retention_interval", given.interval)? {
            Some(interval) if interval < RETENTION_INTERVAL_MIN => {
                return Err(invalid("retention_interval", "must be at least 100ms"));
            }
            interval => interval.unwrap_or(RETENTION_INTERVAL_DEFAULT),
        },
    })
}

/// A duration written as a whole number and a unit: `250ms`, `30s`,
/// `15m`, `12h`, `30d`; more than zero and at most about a century.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "must be a whole number and a unit (ms, s, m, h or d), such as 30d; got {text:?}"
            ));
        }
    };
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit_ms))
        .filter(|ms| (1..=RETENTION_DURATION_MAX_MS).contains(ms))
        .ok_or_else(|| format!("must be more than 0 and at most 36500d; got {text:?}"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// `duration` in the largest unit that writes it exactly.
pub fn format_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis() as u64;
    let units = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    for (unit, size) in units {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The TLS settings as given, before validation.
struct TlsFlags {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    plain_addr: Option<String>,
    handshake_timeout_ms: Option<u64>,
}

const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: usize = 10_000;

/// TLS is on when a certificate and key are both given; `--plain-addr`
/// only makes sense beside it, on a port of its own.
fn resolve_tls(
    given: TlsFlags,
    taken: &[Option<SocketAddr>],
) -> Result<Option<TlsConfig>, ConfigError> {
    let (cert, key) = match (given.cert, given.key) {
        (None, None) => {
            if given.plain_addr.is_some() {
                return Err(invalid(
                    "plain_addr",
                    "only applies with tls_cert and tls_key (addr already serves plain HTTP)",
                ));
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => return Err(invalid("tls_key", "is required with tls_cert")),
        (None, Some(_)) => return Err(invalid("tls_cert", "is required with tls_key")),
    };
    let plain_addr = match given.plain_addr {
        None => None,
        Some(text) => {
            let plain = parse_addr(&text).map_err(|reason| invalid("plain_addr", reason))?;
            let clashes = taken
                .iter()
                .flatten()
                .any(|other| other.port() == plain.port());
            if plain.port() != 0 && clashes {
                return Err(invalid(
                    "plain_addr",
                    "must use a different port than `addr`, `metrics_addr` and `pg_addr`",
                ));
            }
            Some(plain)
        }
    };
    let handshake_timeout_ms = positive(
        "tls_handshake_timeout_ms",
        given.handshake_timeout_ms.map(|ms| ms as usize),
        TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
        600 * 1000,
    )?;
    Ok(Some(TlsConfig {
        cert,
        key,
        handshake_timeout: std::time::Duration::from_millis(handshake_timeout_ms as u64),
        plain_addr,
    }))
}

/// Failed authentications a source address may make per minute: plenty
/// for a client with a stale key, few for a key-guessing loop.
const AUTH_FAILURES_PER_MINUTE_DEFAULT: u64 = 600;

/// Debug builds only: `PROGRESSDB_DEBUG_FAIL_WAL_AFTER_FLUSHES=N` makes
/// every WAL flush after the first N fail, so tests can drive the
/// poisoned-shard path through the real binary. Release builds ignore it.
fn injected_wal_fault() -> Option<u64> {
    if cfg!(debug_assertions) {
        std::env::var("PROGRESSDB_DEBUG_FAIL_WAL_AFTER_FLUSHES")
            .ok()
            .and_then(|value| value.parse().ok())
    } else {
        None
    }
}

/// Debug builds only: `PROGRESSDB_DEBUG_REPLAY_EVENTS_MAX=N` lowers the
/// changes a live-tail resume replays per batch, so tests can drive a
/// many-batch resume through the real binary with a few hundred changes.
/// Release builds ignore it.
pub fn debug_replay_events_max() -> Option<usize> {
    debug_positive("PROGRESSDB_DEBUG_REPLAY_EVENTS_MAX")
}

/// Debug builds only: `PROGRESSDB_DEBUG_SEAL_BATCH=N` lowers the messages
/// one step of the encrypt-threads job seals, so tests drive a job of many
/// steps with a few dozen messages. Release builds ignore it.
pub fn debug_seal_batch() -> Option<usize> {
    debug_positive("PROGRESSDB_DEBUG_SEAL_BATCH")
}

/// Debug builds only: `PROGRESSDB_DEBUG_SEAL_PAUSE_AFTER=N` stops the
/// encrypt-threads job after N steps (it stays running), so a test kills
/// the server mid-job deterministically. Release builds ignore it.
pub fn debug_seal_pause_after() -> Option<usize> {
    debug_positive("PROGRESSDB_DEBUG_SEAL_PAUSE_AFTER")
}

/// Debug builds only: `PROGRESSDB_DEBUG_WAL_RECORD_BYTES_MAX=N` lowers the
/// largest WAL record the log accepts, so tests can drive the "too large
/// for one record" path through the real binary with small bodies.
/// Release builds ignore it.
pub fn debug_wal_record_bytes_max() -> Option<usize> {
    debug_positive("PROGRESSDB_DEBUG_WAL_RECORD_BYTES_MAX")
}

/// Debug builds only: `PROGRESSDB_DEBUG_FREE_BYTES=N` is taken as the free
/// space of the data directory's volume, so tests can drive the small-volume
/// path through the real binary without mounting one. Release builds
/// ignore it.
pub fn debug_free_bytes() -> Option<u64> {
    debug_positive("PROGRESSDB_DEBUG_FREE_BYTES").map(|bytes| bytes as u64)
}

/// A positive number from the environment variable `name`, in debug
/// builds only (test overrides).
fn debug_positive(name: &str) -> Option<usize> {
    if cfg!(debug_assertions) {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .filter(|&max| max > 0)
    } else {
        None
    }
}

/// Largest `request_body_bytes_max`: half a WAL record. A body of that
/// size fits one record with room for its envelope (and, encrypted, for
/// the 4/3 growth of sealing); an edit logs the old and the new body in
/// one record, and answers 413 when the two do not fit.
pub const REQUEST_BODY_BYTES_MAX_CEILING: usize = crate::wal::record::PAYLOAD_BYTES_MAX / 2;

/// A list of secrets from flags (or env) or else the file, validated
/// without ever echoing a value.
/// `--encrypt-field` paths, only with encryption, which is what they narrow.
fn encrypt_fields(patterns: Vec<String>, encryption: bool) -> Result<FieldPaths, ConfigError> {
    if !patterns.is_empty() && !encryption {
        return Err(invalid("encrypt_fields", "needs encryption to be on"));
    }
    FieldPaths::parse(&patterns).map_err(|why| invalid("encrypt_fields", why))
}

fn secrets(
    key: &'static str,
    from_flags: Vec<String>,
    from_file: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let values = if from_flags.is_empty() {
        from_file.unwrap_or_default()
    } else {
        from_flags
    };
    for value in &values {
        if value.len() < 8 || value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                key,
                "each key must be 8 to 256 printable ASCII characters without spaces",
            ));
        }
    }
    Ok(values)
}

const KMS_TIMEOUT_MS_DEFAULT: usize = 2_000;

/// `request_body_bytes_max`, refused above what one WAL record can log.
fn request_body_bytes_max(value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    let key = "request_body_bytes_max";
    match value {
        Some(bytes) if bytes > REQUEST_BODY_BYTES_MAX_CEILING => Err(invalid(
            key,
            format!(
                "must be at most {REQUEST_BODY_BYTES_MAX_CEILING} (half of a write-ahead log \
                 record, which must hold a body and, for an edit, its previous version), got {bytes}"
            ),
        )),
        value => positive(key, value, default, REQUEST_BODY_BYTES_MAX_CEILING),
    }
}

fn positive(
    key: &'static str,
    value: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v >= 1 && v <= max => Ok(v),
        Some(v) => Err(invalid(key, format!("must be 1..={max}, got {v}"))),
    }
}

/// A size in bytes within `(min, max)`, or `default` when not given.
fn sized(
    key: &'static str,
    value: Option<u64>,
    default: usize,
    (min, max): (usize, usize),
) -> Result<usize, ConfigError> {
    let bytes = positive(key, value.map(|b| b as usize), default, max)?;
    if bytes < min {
        return Err(invalid(key, format!("must be at least {min}")));
    }
    Ok(bytes)
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| invalid("config", format!("cannot read {}: {err}", path.display())))?;
    let is_json = path.extension().is_some_and(|ext| ext == "json");
    let whole = |reason: String| invalid("config", format!("{}: {reason}", path.display()));
    // Parsed to a generic table first so that a bad value can be blamed on
    // its own key: serde's errors for the whole struct do not name it.
    let entries: serde_json::Map<String, serde_json::Value> = if is_json {
        match serde_json::from_str(&text).map_err(|err| whole(err.to_string()))? {
            serde_json::Value::Object(map) => map,
            _ => return Err(whole("must be a JSON object of settings".into())),
        }
    } else {
        let table: toml::Table =
            toml::from_str(&text).map_err(|err| whole(toml_error_line(&text, &err)))?;
        match serde_json::to_value(table).map_err(|err| whole(err.to_string()))? {
            serde_json::Value::Object(map) => map,
            _ => return Err(whole("must be a table of settings".into())),
        }
    };
    for (key, value) in &entries {
        let Some(&name) = FILE_KEYS.iter().find(|known| **known == key) else {
            return Err(whole(format!(
                "unknown setting `{key}` (known: {})",
                FILE_KEYS.join(", ")
            )));
        };
        let single =
            serde_json::Value::Object([(key.clone(), value.clone())].into_iter().collect());
        if let Err(err) = serde_json::from_value::<FileSettings>(single) {
            // serde quotes the offending value, which must not happen to a key.
            let reason = if SECRET_FILE_KEYS.contains(&name) {
                "must be a list of strings".to_owned()
            } else {
                err.to_string()
            };
            return Err(invalid(name, format!("in {}: {reason}", path.display())));
        }
    }
    serde_json::from_value(serde_json::Value::Object(entries)).map_err(|err| whole(err.to_string()))
}

/// A TOML syntax error on one line: position and message, without the
/// multi-line source excerpt the parser's `Display` draws.
fn toml_error_line(text: &str, err: &toml::de::Error) -> String {
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// One line for a flag or environment value that clap rejected, naming
/// the setting (as the config file spells it) and where it can be set.
pub fn flag_error_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let named = err
        .get(clap::error::ContextKind::InvalidArg)
        .map(|arg| arg.to_string());
    let long = named
        .as_deref()
        .and_then(|arg| arg.strip_prefix("--"))
        .map(|arg| arg.split([' ', '=']).next().unwrap_or(arg));
    let command = Flags::command();
    let Some(arg) = long.and_then(|long| {
        command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long))
    }) else {
        return format!("invalid arguments: {first}");
    };
    let env = arg
        .get_env()
        .map(|env| format!(" or {}", env.to_string_lossy()))
        .unwrap_or_default();
    format!(
        "invalid config `{}`: {first} (set by --{}{env})",
        arg.get_id(),
        arg.get_long().unwrap_or_default()
    )
}

/// What `--print-config` shows: the file's keys with effective values.
#[derive(Serialize)]
struct EffectiveSettings {
    db: String,
    addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<usize>,
    api_keys: Vec<String>,
    frontend_keys: Vec<String>,
    admin_keys: Vec<String>,
    signing_keys: Vec<String>,
    cors_origins: Vec<String>,
    rate_limit_rps: u64,
    rate_limit_burst: u64,
    rate_limit_key_rps: u64,
    auth_failures_per_minute: u64,
    request_body_bytes_max: usize,
    request_head_bytes_max: usize,
    json_depth_max: usize,
    idle_timeout_ms: u64,
    request_timeout_ms: u64,
    connections_per_shard_max: usize,
    participants_per_thread_max: usize,
    io_memory_kib: usize,
    durability: &'static str,
    wal_flush_ms: u64,
    wal_segment_bytes: u64,
    memtable_bytes: u64,
    wal_recovery: &'static str,
    store_recovery: &'static str,
    encryption: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    encrypt_fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_timeout_ms: Option<u64>,
    log_level: &'static str,
    access_log: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pg_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plain_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_handshake_timeout_ms: Option<u64>,
    shutdown_timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_deleted_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_messages_max_age: Option<String>,
    retention_interval: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cluster: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_monitors: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    standbys: Option<usize>,
}

/// A secret as `--print-config` shows it: only a kind label such as `sk_`
/// survives, since that names the kind of key and holds no key material.
pub fn mask_secret(secret: &str) -> String {
    match secret.find('_') {
        Some(at) if (2..=3).contains(&at) && secret.len() > at + 1 => {
            format!("{}***(masked)", &secret[..=at])
        }
        _ => "***(masked)".to_owned(),
    }
}

impl Config {
    /// The effective configuration as TOML with the config file's keys,
    /// every secret masked. Comments explain values that are not settings.
    pub fn render_effective(&self) -> String {
        let masked = |keys: &[String]| keys.iter().map(|key| mask_secret(key)).collect();
        let settings = EffectiveSettings {
            db: self.db.display().to_string(),
            addr: self.addr.to_string(),
            shards: self.shards,
            api_keys: masked(&self.api_keys),
            frontend_keys: masked(&self.frontend_keys),
            admin_keys: masked(&self.admin_keys),
            signing_keys: masked(&self.signing_keys),
            cors_origins: self.cors_origins.clone(),
            rate_limit_rps: self.rate_limit_rps,
            rate_limit_burst: self.rate_limit_burst,
            rate_limit_key_rps: self.rate_limit_key_rps,
            auth_failures_per_minute: self.auth_failures_per_minute,
            request_body_bytes_max: self.limits.request_body_bytes_max,
            request_head_bytes_max: self.limits.request_head_bytes_max,
            json_depth_max: self.limits.json_depth_max,
            idle_timeout_ms: self.limits.idle_timeout_ms,
            request_timeout_ms: self.limits.request_timeout_ms,
            connections_per_shard_max: self.limits.connections_per_shard_max,
            participants_per_thread_max: self.limits.participants_per_thread_max,
            io_memory_kib: self.io_memory_bytes / 1024,
            durability: self.wal.durability.name(),
            wal_flush_ms: self.wal.flush_interval.as_millis() as u64,
            wal_segment_bytes: self.wal.segment_bytes,
            memtable_bytes: self.store.memtable_bytes,
            wal_recovery: match self.wal_recovery {
                RecoveryPolicy::Strict => "strict",
                RecoveryPolicy::Truncate => "truncate",
            },
            store_recovery: self.store_recovery.name(),
            encryption: self.encryption.is_some(),
            encrypt_fields: self.encrypt_fields.patterns().to_vec(),
            kms: self.encryption.as_ref().map(|kms| match kms {
                KmsConfig::Embedded { .. } => "embedded",
                KmsConfig::External { .. } => "external",
            }),
            kms_key_file: match &self.encryption {
                Some(KmsConfig::Embedded { key_file }) => Some(key_file.display().to_string()),
                _ => None,
            },
            kms_url: match &self.encryption {
                Some(KmsConfig::External { url, .. }) => Some(url.clone()),
                _ => None,
            },
            kms_timeout_ms: match &self.encryption {
                Some(KmsConfig::External { timeout, .. }) => Some(timeout.as_millis() as u64),
                _ => None,
            },
            log_level: self.log_level.name(),
            access_log: self.access_log,
            metrics_addr: self.metrics_addr.map(|addr| addr.to_string()),
            pg_addr: self.pg_addr.map(|addr| addr.to_string()),
            tls_cert: self.tls.as_ref().map(|tls| tls.cert.display().to_string()),
            tls_key: self.tls.as_ref().map(|tls| tls.key.display().to_string()),
            plain_addr: self
                .tls
                .as_ref()
                .and_then(|tls| tls.plain_addr)
                .map(|addr| addr.to_string()),
            tls_handshake_timeout_ms: self
                .tls
                .as_ref()
                .map(|tls| tls.handshake_timeout.as_millis() as u64),
            shutdown_timeout_ms: self.shutdown_timeout_ms,
            retention_deleted_after: self.retention.policy.deleted_after.map(format_duration),
            retention_messages_max_age: self.retention.policy.messages_max_age.map(format_duration),
            retention_interval: format_duration(self.retention.interval),
            cluster: self.cluster.is_some(),
            node_id: self.cluster.as_ref().map(|c| c.node_id.clone()),
            advertise: self.cluster.as_ref().map(|c| c.advertise.to_string()),
            nats_urls: self.cluster.as_ref().map(|c| c.nats_urls.clone()),
            nats_monitors: self.cluster.as_ref().map(|c| {
                c.nats_monitors
                    .iter()
                    .map(|addr| addr.to_string())
                    .collect()
            }),
            partitions: self.cluster.as_ref().map(|c| c.partitions),
            standbys: self.cluster.as_ref().map(|c| c.standbys),
        };
        let mut out = String::from(
            "# progressdb effective configuration: flags > PROGRESSDB_* environment > config file > defaults.\n\
             # Secrets are masked.\n",
        );
        if self.shards.is_none() {
            out.push_str("# shards: not set; the count stored in the data directory, else one per CPU core.\n");
        }
        if self.api_keys.is_empty() && self.frontend_keys.is_empty() && self.admin_keys.is_empty() {
            out.push_str("# No key configured: the server uses a development key kept in <db>/dev-api-key.\n");
        }
        if self.signing_keys.is_empty() {
            out.push_str("# signing_keys: none set; the backend keys sign user ids.\n");
        }
        if matches!(self.encryption, Some(KmsConfig::External { .. }))
            && std::env::var_os("PROGRESSDB_KMS_TOKEN").is_some()
        {
            out.push_str(
                "# The external KMS token comes from PROGRESSDB_KMS_TOKEN (***(masked)).\n",
            );
        }
        if self.encryption.is_some() && std::env::var_os("PROGRESSDB_KMS_MASTER_KEY").is_some() {
            out.push_str(
                "# The KMS master key comes from PROGRESSDB_KMS_MASTER_KEY (***(masked)).\n",
            );
        }
        out.push_str(
            &toml::to_string(&settings).expect("plain strings and numbers always serialize"),
        );
        out
    }
}

/// Accepts `HOST:PORT`, `[v6]:PORT`, and Go-style `:PORT` for all interfaces.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.to_socket_addrs()
        .map_err(|err| format!("{text:?} is not HOST:PORT ({err})"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_durations_take_units_and_refuse_the_rest() {
        let ms = |text: &str| parse_duration(text).map(|d| d.as_millis() as u64);
        assert_eq!(ms("200ms"), Ok(200));
        assert_eq!(ms("1s"), Ok(1000));
        assert_eq!(ms("15m"), Ok(900_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("30d"), Ok(2_592_000_000));
        for bad in [
            "",
            "30",
            "d",
            "0s",
            "-1d",
            "1.5h",
            "30 d",
            "1w",
            "36501d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for text in ["200ms", "90s", "15m", "2h", "30d"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        let flags = Flags {
            retention_deleted_after: Some("7x".into()),
            ..Flags::default()
        };
        let err = Config::resolve(flags).unwrap_err();
        assert_eq!(err.key, "retention_deleted_after");
        let flags = Flags {
            retention_deleted_after: Some("30d".into()),
            ..Flags::default()
        };
        let retention = Config::resolve(flags).unwrap().retention;
        assert_eq!(retention.interval, RETENTION_INTERVAL_DEFAULT);
        let flags = Flags {
            retention_interval: Some("10ms".into()),
            ..Flags::default()
        };
        assert_eq!(
            Config::resolve(flags).unwrap_err().key,
            "retention_interval"
        );
        assert_eq!(retention.policy.messages_max_age, None);
        let flags = Flags {
            retention_deleted_after: Some("30d".into()),
            cluster: true,
            node_id: Some("n1".into()),
            ..Flags::default()
        };
        let err = Config::resolve(flags).unwrap_err();
        assert_eq!(err.key, "retention_deleted_after");
        assert!(err.to_string().contains("clustered mode"), "{err}");
    }

    #[test]
    fn go_style_port_means_all_interfaces() {
        assert_eq!(
            parse_addr(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_addr("nonsense").is_err());
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progressdb.toml");
        std::fs::write(
            &path,
            "addr = \"127.0.0.1:9000\"\nshards = 3\nrequest_body_bytes_max = 2048\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(path),
            shards: Some(2),
            ..Flags::default()
        };
        let config = Config::resolve(flags).unwrap();
        assert_eq!(config.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.shards, Some(2));
        assert_eq!(config.limits.request_body_bytes_max, 2048);
        assert_eq!(config.db, PathBuf::from(DEFAULT_DB));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"no_such_setting": 1}"#).unwrap();
        let err = Config::resolve(Flags {
            config: Some(path),
            ..Flags::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "config");
        assert!(err.reason.contains("no_such_setting"));

        let err = Config::resolve(Flags {
            shards: Some(0),
            ..Flags::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "shards");
        let err = Config::resolve(Flags {
            api_keys: vec!["short".into()],
            ..Flags::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "api_keys");
        assert!(!err.to_string().contains("short"), "keys are never echoed");
    }

    #[test]
    fn file_keys_are_exactly_the_file_settings() {
        // serde lists every field it expects when it meets an unknown one.
        let err = toml::from_str::<FileSettings>("zz_not_a_setting = 1").unwrap_err();
        let message = err.message();
        let expected = message.split("expected one of").nth(1).expect(message);
        let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert_eq!(fields, FILE_KEYS);
    }

    #[test]
    fn file_errors_are_one_line_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("a.toml", "shards = \"two\"\n", "shards"),
            ("b.json", r#"{"wal_flush_ms": -1}"#, "wal_flush_ms"),
            ("c.toml", "api_keys = \"sk_not_a_list_0123\"\n", "api_keys"),
            ("d.toml", "db = \"x\"\nno_such_setting = true\n", "config"),
            ("e.toml", "db = \"x\"\naddr = = 1\n", "config"),
            ("f.json", "[1, 2]", "config"),
        ];
        for (name, text, key) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = Config::resolve(Flags {
                config: Some(path),
                ..Flags::default()
            })
            .unwrap_err();
            assert_eq!(err.key, key, "{name}: {err}");
            let line = err.to_string();
            assert!(!line.contains('\n'), "{name}: {line}");
            assert!(
                !line.contains("sk_not_a_list"),
                "secrets are never echoed: {line}"
            );
        }
        let path = dir.path().join("d.toml");
        let err = read_file(&path).unwrap_err();
        assert!(err.reason.contains("`no_such_setting`"), "{err}");
        let path = dir.path().join("e.toml");
        let err = read_file(&path).unwrap_err();
        assert!(err.reason.contains("line 2, column 8"), "{err}");
    }

    #[test]
    fn flag_errors_name_the_setting_and_its_variable() {
        let err = Flags::try_parse_from(["progressdb", "--rate-limit-rps", "fast"]).unwrap_err();
        let line = flag_error_line(&err);
        assert!(
            line.starts_with("invalid config `rate_limit_rps`: "),
            "{line}"
        );
        assert!(line.contains("PROGRESSDB_RATE_LIMIT_RPS"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let err = Flags::try_parse_from(["progressdb", "--no-such-flag"]).unwrap_err();
        let line = flag_error_line(&err);
        assert!(
            line.contains("--no-such-flag") && !line.contains('\n'),
            "{line}"
        );
    }

    #[test]
    fn secrets_are_masked_down_to_their_kind_label() {
        assert_eq!(mask_secret("sk_live_0123456789"), "sk_***(masked)");
        assert_eq!(mask_secret("adm_0123456789"), "adm_***(masked)");
        assert_eq!(mask_secret("plainsecret123"), "***(masked)");
        assert_eq!(mask_secret("longprefix_0123"), "***(masked)");
        assert_eq!(mask_secret("sk_"), "***(masked)");
    }

    #[test]
    fn printed_config_is_a_config_file_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(Flags {
            api_keys: vec!["sk_backend_secret_1".into()],
            frontend_keys: vec!["pk_frontend_secret_1".into()],
            admin_keys: vec!["admin_secret_value_1".into()],
            signing_keys: vec!["signing-secret-value-1".into()],
            encryption: true,
            db: Some(dir.path().join("db")),
            durability: Some("batch".into()),
            ..Flags::default()
        })
        .unwrap();
        let printed = config.render_effective();
        for secret in ["secret_1", "secret-value", "secret_value"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        // Every printed key is a config-file key, so the output can seed a file.
        let parsed: FileSettings = toml::from_str(&printed).unwrap();
        assert_eq!(parsed.api_keys, Some(vec!["sk_***(masked)".to_string()]));
        assert_eq!(parsed.durability.as_deref(), Some("batch"));
        assert_eq!(parsed.encryption, Some(true));
        assert_eq!(parsed.kms.as_deref(), Some("embedded"));
        assert_eq!(
            parsed.wal_segment_bytes,
            Some(WAL_SEGMENT_BYTES_DEFAULT as u64)
        );
        assert_eq!(parsed.shards, None);
        assert!(printed.contains("# shards: not set"), "{printed}");
    }

    #[test]
    fn debug_output_hides_keys() {
        let config = Config::resolve(Flags {
            api_keys: vec!["sk_secret_value".into()],
            ..Flags::default()
        })
        .unwrap();
        assert!(!format!("{config:?}").contains("sk_secret_value"));
    }

    #[test]
    fn operability_settings() {
        let config = Config::resolve(Flags::default()).unwrap();
        assert_eq!(config.log_level, Level::Info);
        assert!(!config.access_log);
        assert_eq!(config.metrics_addr, None);
        assert_eq!(config.shutdown_timeout_ms, 10_000);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "log_level = \"debug\"\naccess_log = true\nmetrics_addr = \"127.0.0.1:9100\"\nshutdown_timeout_ms = 500\n",
        )
        .unwrap();
        let config = Config::resolve(Flags {
            config: Some(path),
            log_level: Some("warn".into()),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(config.log_level, Level::Warn, "the flag wins");
        assert!(config.access_log);
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config.shutdown_timeout_ms, 500);

        let err = |flags: Flags| Config::resolve(flags).unwrap_err().key;
        assert_eq!(
            err(Flags {
                log_level: Some("loud".into()),
                ..Flags::default()
            }),
            "log_level"
        );
        assert_eq!(
            err(Flags {
                metrics_addr: Some("127.0.0.1:8080".into()),
                ..Flags::default()
            }),
            "metrics_addr"
        );
        assert_eq!(
            err(Flags {
                shutdown_timeout_ms: Some(0),
                ..Flags::default()
            }),
            "shutdown_timeout_ms"
        );
    }

    #[test]
    fn tls_needs_cert_and_key_and_plain_addr_needs_tls() {
        assert_eq!(Config::resolve(Flags::default()).unwrap().tls, None);
        let only_cert = Config::resolve(Flags {
            tls_cert: Some("cert.pem".into()),
            ..Flags::default()
        });
        assert_eq!(only_cert.unwrap_err().key, "tls_key");
        let plain_without_tls = Config::resolve(Flags {
            plain_addr: Some("127.0.0.1:8081".into()),
            ..Flags::default()
        });
        assert_eq!(plain_without_tls.unwrap_err().key, "plain_addr");
        let tls_flags = || Flags {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            plain_addr: Some("127.0.0.1:8081".into()),
            ..Flags::default()
        };
        let config = Config::resolve(tls_flags()).unwrap();
        let tls = config.tls.clone().unwrap();
        assert_eq!(tls.plain_addr, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
        assert!(
            config
                .render_effective()
                .contains("tls_cert = \"cert.pem\"")
        );
        let clash = Config::resolve(Flags {
            plain_addr: Some("127.0.0.1:8080".into()),
            ..tls_flags()
        });
        assert_eq!(clash.unwrap_err().key, "plain_addr");
    }

    #[test]
    fn pg_addr_is_off_by_default_and_needs_its_own_port() {
        assert_eq!(Config::resolve(Flags::default()).unwrap().pg_addr, None);
        let config = Config::resolve(Flags {
            pg_addr: Some("127.0.0.1:5433".into()),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(config.pg_addr, Some("127.0.0.1:5433".parse().unwrap()));
        assert!(
            config
                .render_effective()
                .contains("pg_addr = \"127.0.0.1:5433\"")
        );
        let clash = Config::resolve(Flags {
            pg_addr: Some("127.0.0.1:8080".into()),
            ..Flags::default()
        });
        assert_eq!(clash.unwrap_err().key, "pg_addr");
    }

    #[test]
    fn cluster_is_off_by_default_and_needs_a_node_id() {
        assert_eq!(Config::resolve(Flags::default()).unwrap().cluster, None);
        let nameless = Config::resolve(Flags {
            cluster: true,
            ..Flags::default()
        });
        assert_eq!(nameless.unwrap_err().key, "node_id");
        let config = Config::resolve(Flags {
            cluster: true,
            node_id: Some("n1".into()),
            addr: Some("127.0.0.1:9000".into()),
            ..Flags::default()
        })
        .unwrap();
        let cluster = config.cluster.clone().unwrap();
        assert_eq!(cluster.advertise, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cluster.nats_urls, vec![NATS_URL_DEFAULT.to_owned()]);
        assert_eq!((cluster.partitions, cluster.standbys), (64, 1));
        assert!(config.render_effective().contains("node_id = \"n1\""));
        for (flags, key) in [
            (
                Flags {
                    node_id: Some("a b".into()),
                    ..Flags::default()
                },
                "node_id",
            ),
            (
                Flags {
                    node_id: Some("n".into()),
                    partitions: Some(0),
                    ..Flags::default()
                },
                "partitions",
            ),
            (
                Flags {
                    node_id: Some("n".into()),
                    standbys: Some(99),
                    ..Flags::default()
                },
                "standbys",
            ),
        ] {
            let flags = Flags {
                cluster: true,
                ..flags
            };
            assert_eq!(Config::resolve(flags).unwrap_err().key, key);
        }
    }
}
