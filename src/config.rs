//! Every setting and limit in one place, resolved once at start.
//!
//! Precedence, highest first: command-line flag, `PROGRESSDB_*` environment
//! variable, config file (`--config`, TOML or JSON), built-in default.
//! Invalid values are reported as one line naming the setting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::logging::Level;
use crate::wal::recovery::RecoveryPolicy;
use crate::wal::{Durability, WalOptions};

/// Command-line flags. Every flag can also be set by the environment
/// variable shown in `--help`; unset flags fall back to the config file.
#[derive(Debug, Parser, Default)]
#[command(
    name = "progressdb",
    version,
    about = "ProgressDB: a chat-native database server (threads, messages, HTTP/JSON API)"
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

    /// Requests per second each key may make, 0 for no limit. Kept per
    /// core (each core allows its share), so no state is shared. [default: 0]
    #[arg(long, env = "PROGRESSDB_RATE_LIMIT_RPS", value_name = "N")]
    pub rate_limit_rps: Option<u64>,

    /// Requests a key may make in a burst above its rate. [default: the rate]
    #[arg(long, env = "PROGRESSDB_RATE_LIMIT_BURST", value_name = "N")]
    pub rate_limit_burst: Option<u64>,

    /// Largest accepted request body in bytes. [default: 1048576]
    #[arg(long, env = "PROGRESSDB_REQUEST_BODY_BYTES_MAX", value_name = "BYTES")]
    pub request_body_bytes_max: Option<usize>,

    /// Largest accepted request line plus headers in bytes. [default: 16384]
    #[arg(long, env = "PROGRESSDB_REQUEST_HEAD_BYTES_MAX", value_name = "BYTES")]
    pub request_head_bytes_max: Option<usize>,

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

    /// What start-up does when the WAL is corrupt in the middle (not just a
    /// torn tail): `strict` refuses to start the shard, `truncate` cuts the
    /// log at the damage and loses what follows. [default: strict]
    #[arg(long, env = "PROGRESSDB_WAL_RECOVERY", value_name = "POLICY")]
    pub wal_recovery: Option<String>,

    /// Encrypt message bodies, past versions and thread titles at rest
    /// (AES-256-GCM, a key per thread, wrapped by the KMS master key).
    /// Applies to threads created while it is on.
    #[arg(long, env = "PROGRESSDB_ENCRYPTION")]
    pub encryption: bool,

    /// Where master keys live: `embedded` (a keyring file, or the
    /// PROGRESSDB_KMS_MASTER_KEY environment variable holding 64 hex
    /// digits). [default: embedded]
    #[arg(long, env = "PROGRESSDB_KMS", value_name = "KIND")]
    pub kms: Option<String>,

    /// The embedded KMS's keyring file, created with mode 0600 on first
    /// start. [default: <db>/kms/master.keys]
    #[arg(long, env = "PROGRESSDB_KMS_KEY_FILE", value_name = "FILE")]
    pub kms_key_file: Option<PathBuf>,

    /// Memory registered with io_uring per shard, in KiB. It is locked
    /// memory, so shards x this must fit under `ulimit -l`. [default: 512]
    #[arg(long, env = "PROGRESSDB_IO_MEMORY_KIB", value_name = "KIB")]
    pub io_memory_kib: Option<usize>,

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

    /// On SIGTERM/SIGINT, the longest wait in ms for requests in flight
    /// to finish before the store is flushed and the process exits.
    /// [default: 10000]
    #[arg(long, env = "PROGRESSDB_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
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
    request_body_bytes_max: Option<usize>,
    request_head_bytes_max: Option<usize>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    connections_per_shard_max: Option<usize>,
    io_memory_kib: Option<usize>,
    durability: Option<String>,
    wal_flush_ms: Option<u64>,
    wal_segment_bytes: Option<u64>,
    wal_recovery: Option<String>,
    encryption: Option<bool>,
    kms: Option<String>,
    kms_key_file: Option<PathBuf>,
    log_level: Option<String>,
    access_log: Option<bool>,
    metrics_addr: Option<String>,
    shutdown_timeout_ms: Option<u64>,
}

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
    /// Requests per second per key (0: unlimited) and burst size.
    pub rate_limit_rps: u64,
    pub rate_limit_burst: u64,
    pub limits: Limits,
    pub io_memory_bytes: usize,
    pub wal: WalOptions,
    pub wal_recovery: RecoveryPolicy,
    /// `Some(keyring file)` when encryption is on (embedded KMS).
    pub encryption: Option<PathBuf>,
    pub log_level: Level,
    pub access_log: bool,
    /// A second listener serving `/metrics` without a key.
    pub metrics_addr: Option<SocketAddr>,
    /// Longest wait for requests in flight on shutdown.
    pub shutdown_timeout_ms: u64,
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
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("limits", &self.limits)
            .field("io_memory_bytes", &self.io_memory_bytes)
            .field("wal", &self.wal)
            .field("wal_recovery", &self.wal_recovery)
            .field("log_level", &self.log_level)
            .field("access_log", &self.access_log)
            .field("metrics_addr", &self.metrics_addr)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .finish()
    }
}

/// Limits on what a client can make the server hold or do.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_head_bytes_max: usize,
    pub request_header_count_max: usize,
    pub request_body_bytes_max: usize,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub connections_per_shard_max: usize,
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
            idle_timeout_ms: 60_000,
            request_timeout_ms: 10_000,
            connections_per_shard_max: 10_000,
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
const WAL_FLUSH_MS_DEFAULT: usize = 5;
const WAL_SEGMENT_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
const WAL_SEGMENT_BYTES_MIN: usize = 64 * 1024;
const SHUTDOWN_TIMEOUT_MS_DEFAULT: usize = 10_000;

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
    pub fn resolve(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let defaults = Limits::default();
        let addr_text = flags
            .addr
            .or(file.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = parse_addr(&addr_text).map_err(|reason| invalid("addr", reason))?;
        let shards = flags.shards.or(file.shards);
        if let Some(count) = shards
            && !(1..=SHARDS_MAX).contains(&count)
        {
            return Err(invalid(
                "shards",
                format!("must be 1..={SHARDS_MAX}, got {count}"),
            ));
        }
        let api_keys = secrets("api_keys", flags.api_keys, file.api_keys)?;
        let frontend_keys = secrets("frontend_keys", flags.frontend_keys, file.frontend_keys)?;
        let admin_keys = secrets("admin_keys", flags.admin_keys, file.admin_keys)?;
        let signing_keys = secrets("signing_keys", flags.signing_keys, file.signing_keys)?;
        let cors_origins = if flags.cors_origins.is_empty() {
            file.cors_origins.unwrap_or_default()
        } else {
            flags.cors_origins
        };
        let rate_limit_rps = flags.rate_limit_rps.or(file.rate_limit_rps).unwrap_or(0);
        let rate_limit_burst = flags
            .rate_limit_burst
            .or(file.rate_limit_burst)
            .unwrap_or(rate_limit_rps);
        if rate_limit_rps > 0 && rate_limit_burst == 0 {
            return Err(invalid(
                "rate_limit_burst",
                "must be at least 1 when a rate is set",
            ));
        }
        let limits = Limits {
            request_body_bytes_max: positive(
                "request_body_bytes_max",
                flags.request_body_bytes_max.or(file.request_body_bytes_max),
                defaults.request_body_bytes_max,
                64 * 1024 * 1024,
            )?,
            request_head_bytes_max: positive(
                "request_head_bytes_max",
                flags.request_head_bytes_max.or(file.request_head_bytes_max),
                defaults.request_head_bytes_max,
                1024 * 1024,
            )?,
            idle_timeout_ms: positive(
                "idle_timeout_ms",
                flags
                    .idle_timeout_ms
                    .or(file.idle_timeout_ms)
                    .map(|ms| ms as usize),
                defaults.idle_timeout_ms as usize,
                24 * 3600 * 1000,
            )? as u64,
            request_timeout_ms: positive(
                "request_timeout_ms",
                flags
                    .request_timeout_ms
                    .or(file.request_timeout_ms)
                    .map(|ms| ms as usize),
                defaults.request_timeout_ms as usize,
                3600 * 1000,
            )? as u64,
            connections_per_shard_max: positive(
                "connections_per_shard_max",
                flags
                    .connections_per_shard_max
                    .or(file.connections_per_shard_max),
                defaults.connections_per_shard_max,
                1_000_000,
            )?,
            ..defaults
        };
        let io_memory_kib = positive(
            "io_memory_kib",
            flags.io_memory_kib.or(file.io_memory_kib),
            IO_MEMORY_KIB_DEFAULT,
            1024 * 1024,
        )?;
        let durability_text = flags.durability.or(file.durability);
        let durability = match durability_text.as_deref() {
            None => Durability::Sync,
            Some(text) => Durability::parse(text).ok_or_else(|| {
                invalid(
                    "durability",
                    format!("must be sync, batch or none, got {text:?}"),
                )
            })?,
        };
        let wal_recovery = match flags.wal_recovery.or(file.wal_recovery).as_deref() {
            None | Some("strict") => RecoveryPolicy::Strict,
            Some("truncate") => RecoveryPolicy::Truncate,
            Some(other) => {
                return Err(invalid(
                    "wal_recovery",
                    format!("must be strict or truncate, got {other:?}"),
                ));
            }
        };
        let wal_flush_ms = positive(
            "wal_flush_ms",
            flags
                .wal_flush_ms
                .or(file.wal_flush_ms)
                .map(|ms| ms as usize),
            WAL_FLUSH_MS_DEFAULT,
            10_000,
        )?;
        let wal_segment_bytes = positive(
            "wal_segment_bytes",
            flags
                .wal_segment_bytes
                .or(file.wal_segment_bytes)
                .map(|b| b as usize),
            WAL_SEGMENT_BYTES_DEFAULT,
            1 << 40,
        )?;
        if wal_segment_bytes < WAL_SEGMENT_BYTES_MIN {
            return Err(invalid(
                "wal_segment_bytes",
                format!("must be at least {WAL_SEGMENT_BYTES_MIN}"),
            ));
        }
        let db = flags
            .db
            .clone()
            .or(file.db.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
        let encryption = if flags.encryption || file.encryption.unwrap_or(false) {
            match flags
                .kms
                .as_deref()
                .or(file.kms.as_deref())
                .unwrap_or("embedded")
            {
                "embedded" => Some(
                    flags
                        .kms_key_file
                        .clone()
                        .or(file.kms_key_file.clone())
                        .unwrap_or_else(|| db.join("kms").join("master.keys")),
                ),
                "external" => {
                    return Err(invalid(
                        "kms",
                        "the external KMS is not supported yet; use embedded",
                    ));
                }
                other => return Err(invalid("kms", format!("must be embedded, got {other:?}"))),
            }
        } else {
            None
        };
        let log_level = match flags.log_level.or(file.log_level).as_deref() {
            None => Level::Info,
            Some(text) => Level::parse(text).ok_or_else(|| {
                invalid(
                    "log_level",
                    format!("must be error, warn, info or debug, got {text:?}"),
                )
            })?,
        };
        let access_log = flags.access_log || file.access_log.unwrap_or(false);
        let metrics_addr = match flags.metrics_addr.or(file.metrics_addr) {
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
        let shutdown_timeout_ms = positive(
            "shutdown_timeout_ms",
            flags
                .shutdown_timeout_ms
                .or(file.shutdown_timeout_ms)
                .map(|ms| ms as usize),
            SHUTDOWN_TIMEOUT_MS_DEFAULT,
            3600 * 1000,
        )? as u64;
        Ok(Config {
            log_level,
            access_log,
            metrics_addr,
            shutdown_timeout_ms,
            encryption,
            wal: WalOptions {
                durability,
                flush_interval: std::time::Duration::from_millis(wal_flush_ms as u64),
                segment_bytes: wal_segment_bytes as u64,
                fail_after_flushes: injected_wal_fault(),
            },
            wal_recovery,
            db,
            addr,
            shards,
            api_keys,
            frontend_keys,
            admin_keys,
            signing_keys,
            cors_origins,
            rate_limit_rps,
            rate_limit_burst,
            limits,
            io_memory_bytes: io_memory_kib * 1024,
        })
    }
}

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

/// A list of secrets from flags (or env) or else the file, validated
/// without ever echoing a value.
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

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| invalid("config", format!("cannot read {}: {err}", path.display())))?;
    let is_json = path.extension().is_some_and(|ext| ext == "json");
    let parsed = if is_json {
        serde_json::from_str(&text).map_err(|err| err.to_string())
    } else {
        toml::from_str(&text).map_err(|err| err.to_string())
    };
    parsed.map_err(|reason| invalid("config", format!("{}: {reason}", path.display())))
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
}
