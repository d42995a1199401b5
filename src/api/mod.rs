//! The HTTP/JSON contract: [`Route`] + request -> [`Command`] on the owning
//! shard -> [`Response`]. Everything a client sends is validated here, on
//! the accepting core, before it crosses to another core.

mod admin;
mod backup;
mod cluster;
mod cors;
pub mod docs;
mod encrypt_job;
mod error;
mod fanout;
mod frontend;
pub(crate) mod input;
mod limit;
mod page_stream;
mod render;
mod retention;
pub mod router;
mod threads;
pub mod viewer;

pub use error::ApiError;
pub use page_stream::PageStream;

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::auth::{Keys, Principal};
use crate::config::{Config, KmsConfig, Limits};
use crate::engine::{self, Caller, Command, EngineError, Reply, SecretKey, ThreadPart};
use crate::http::{Method, Request, Response};
use crate::logging;
use crate::mesh::Mesh;
use crate::metrics;
use crate::model::{ThreadId, UserId};
use crate::runtime;
use crate::shard::ShardId;
use cors::Cors;
use limit::{Limited, RateLimiter};
use router::{Route, RouteError, Routed};

use input::{Query, decode_body};

/// An authenticated request on its way to a handler.
pub(crate) struct Call<'a> {
    pub request: &'a Request,
    pub principal: Principal,
    pub query: Query,
}

/// What a request turned into: a response, a live tail the connection
/// serves until the client goes away, or a response whose body (a large
/// page) is rendered while it is sent.
pub enum Handled {
    Response(Response),
    Stream(LiveTail),
    /// Clustered mode: a live tail the thread's owner serves, to relay.
    Relay(Box<crate::cluster::relay::Relay>),
    /// The status and headers (the body is empty), and the body to send
    /// (boxed: the common answers stay small to move).
    Page(Response, Box<PageStream>),
}

/// A validated request to stream a thread's changes.
pub struct LiveTail {
    /// `None`: every thread of the caller (`GET /frontend/v1/stream`).
    pub thread: Option<ThreadId>,
    pub caller: Caller,
    /// Resume after this event id (`Last-Event-ID`), replaying what was missed.
    pub last_event_id: Option<u64>,
    /// Clustered mode, a user's own stream: the other nodes' streams of
    /// the same user, merged into this one.
    pub peers: Vec<crate::cluster::relay::Relay>,
}

/// How long a metrics scrape waits for each shard's sample.
const SCRAPE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-core request handler. Cheap to share between the core's connections.
pub struct Api {
    mesh: Rc<Mesh>,
    keys: Rc<Keys>,
    limits: Limits,
    cors: Cors,
    rate_limiter: RateLimiter,
    /// The embedded KMS keyring file when encryption is on.
    keyring_file: Option<std::path::PathBuf>,
    encryption: bool,
    kms_check_dir: std::path::PathBuf,
    /// The data directory (backups copy its KMS check files).
    db: std::path::PathBuf,
    /// Sequence for thread ids generated on this core.
    thread_sequence: Cell<u32>,
    /// What `POST /admin/v1/jobs/purge` removes.
    retention: crate::engine::RetentionPolicy,
    /// Clustered mode's state on this core; `None` without `--cluster`.
    cluster: Option<Rc<crate::cluster::shard::Replication>>,
}

impl Api {
    pub fn new(mesh: Rc<Mesh>, keys: Rc<Keys>, config: &Config) -> Api {
        let rate_limiter = RateLimiter::new(
            &limit::RateLimitSettings {
                user_rps: config.rate_limit_rps,
                user_burst: config.rate_limit_burst,
                key_rps: config.rate_limit_key_rps,
                auth_failures_per_minute: config.auth_failures_per_minute,
            },
            mesh.shard_count(),
        );
        Api {
            mesh,
            keys,
            limits: config.limits.clone(),
            cors: Cors::new(&config.cors_origins),
            rate_limiter,
            keyring_file: match &config.encryption {
                Some(KmsConfig::Embedded { key_file }) => Some(key_file.clone()),
                _ => None,
            },
            encryption: config.encryption.is_some(),
            kms_check_dir: config.db.join("kms"),
            db: config.db.clone(),
            thread_sequence: Cell::new(0),
            retention: config.retention.policy,
            cluster: None,
        }
    }

    /// Clustered mode: forward what another node owns, refuse what moves.
    pub fn with_cluster(self, cluster: Option<Rc<crate::cluster::shard::Replication>>) -> Api {
        Api { cluster, ..self }
    }

    /// Whether this server runs as a node of a cluster.
    pub(crate) fn in_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Answers `request`, which came from `peer` (failed authentications
    /// are limited per source address).
    pub async fn handle(&self, request: &Request, peer: Option<IpAddr>) -> Handled {
        let started = Instant::now();
        crate::metrics::requests::record(started);
        let routed = router::route(request.method, &request.path);
        let route = routed
            .as_ref()
            .map_or(metrics::ROUTE_UNMATCHED, |routed| routed.endpoint.name);
        let (response, page) = match self.dispatch(request, routed, peer).await {
            Ok(Handled::Response(response)) => (response, None),
            Ok(Handled::Page(head, page)) => (head, Some(page)),
            Ok(Handled::Stream(tail)) if request.method == Method::Head => (
                self.stream_head(tail)
                    .await
                    .unwrap_or_else(ApiError::into_response),
                None,
            ),
            Ok(stream) => {
                // A live tail counts once, as started, with the time it
                // took to validate; its lifetime is not a latency.
                self.observe(request.method.as_str(), route, 200, started.elapsed());
                return stream;
            }
            Err(err) => (err.into_response(), None),
        };
        // Names the core that accepted the connection: operators and tests
        // use it to see requests being routed across shards.
        let response =
            response.with_header("X-ProgressDB-Shard", self.mesh.local_shard().0.to_string());
        self.observe(
            request.method.as_str(),
            route,
            response.status,
            started.elapsed(),
        );
        let response = self.cors.decorate(request, response);
        match page {
            Some(page) => Handled::Page(response, page),
            None => Handled::Response(response),
        }
    }

    /// Counts a request in this core's metrics and writes its access log
    /// line. Only bounded, non-secret values: no path, header or body.
    pub fn observe(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.mesh.metrics().observe(route, status, elapsed);
        logging::access(&[
            ("method", &method),
            ("route", &route),
            ("status", &status),
            ("duration_us", &elapsed.as_micros()),
            ("shard", &self.mesh.local_shard().0),
        ]);
    }

    /// The metrics listener (`--metrics-addr`): `GET /metrics` and
    /// `/healthz` without a key, nothing else. Its requests are not counted,
    /// so scrapes do not show up in what they measure.
    pub async fn handle_metrics_port(&self, request: &Request) -> Response {
        let answer = match router::route(request.method, &request.path).map(|r| r.route) {
            Ok(Route::Metrics) => self.metrics().await,
            Ok(Route::Healthz) => Ok(json(200, br#"{"status":"ok"}"#.to_vec())),
            Ok(_) | Err(RouteError::NotFound) | Err(RouteError::BadPath) => Err(ApiError::new(
                404,
                "not_found",
                "this listener serves only GET /metrics and /healthz",
            )),
            Err(err) => Err(err.into()),
        };
        answer.unwrap_or_else(ApiError::into_response)
    }

    pub fn mesh(&self) -> &Rc<Mesh> {
        &self.mesh
    }

    /// The configured keys, for front ends that authenticate once per
    /// connection (the PostgreSQL listener) rather than per request.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn dispatch(
        &self,
        request: &Request,
        routed: Result<Routed, RouteError>,
        peer: Option<IpAddr>,
    ) -> Result<Handled, ApiError> {
        let Routed { route, endpoint } = match routed {
            // Any OPTIONS is a browser's preflight: answered before auth,
            // even on a path this server does not serve.
            Err(RouteError::NotFound) if request.method == Method::Options => Routed {
                route: Route::Options("OPTIONS"),
                endpoint: &router::PREFLIGHT,
            },
            routed => routed?,
        };
        let Some(scope) = endpoint.scope else {
            return Ok(Handled::Response(self.public(&route, request)));
        };
        let principal = self.authenticate(request, scope, peer)?;
        // Boxed: the hop's future is large, and without `--cluster` it must
        // not grow every request's future (a shard's stack holds them).
        if (self.cluster.is_some() || route == Route::ClusterStatus)
            && let Some(handled) = Box::pin(self.cluster_route(&route, request)).await
        {
            return handled;
        }
        let admitted =
            self.rate_limiter
                .admit(principal.key_index, principal.user.as_ref(), Instant::now());
        if let Err(limited) = admitted {
            let (retry_after_s, message) = match limited {
                Limited::User(s) => (
                    s,
                    "too many requests for this user of this key; retry later",
                ),
                Limited::Key(s) => (s, "too many requests for this key; retry later"),
            };
            return Err(ApiError {
                retry_after_s: Some(retry_after_s),
                ..ApiError::new(429, "rate_limited", message)
            });
        }
        let query = Query::parse(&request.query)?;
        input::check_json_depth(&request.body, self.limits.json_depth_max)?;
        if let Some(handled) = self.admin_read(&route, request, &query).await {
            return handled;
        }
        if let Some(handled) = self.backup_route(&route, request).await {
            return handled;
        }
        if let Some(handled) = self.retention_route(&route, request).await {
            return handled;
        }
        if let Some(handled) = self.encrypt_job_route(&route, request).await {
            return handled;
        }
        let call = Call {
            request,
            principal,
            query,
        };
        self.authenticated(route, &call).await
    }

    /// Checks the key, unless `peer` has failed too often lately; counts
    /// this attempt against `peer` when it fails (401).
    fn authenticate(
        &self,
        request: &Request,
        scope: crate::auth::Scope,
        peer: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
        let now = Instant::now();
        if let Some(peer) = peer
            && let Err(retry_after_s) = self.rate_limiter.may_authenticate(peer, now)
        {
            return Err(ApiError {
                retry_after_s: Some(retry_after_s),
                ..ApiError::new(
                    429,
                    "too_many_auth_failures",
                    "too many failed authentications from this address; retry later",
                )
            });
        }
        let error = match self.keys.authenticate(request, scope) {
            Ok(principal) => return Ok(principal),
            Err(err) => ApiError::from(err),
        };
        if let (Some(peer), 401) = (peer, error.status) {
            self.rate_limiter.authentication_failed(peer, now);
        }
        Err(error)
    }

    /// The routes anyone may call, answered without a key.
    fn public(&self, route: &Route, request: &Request) -> Response {
        match route {
            Route::Healthz => json(200, br#"{"status":"ok"}"#.to_vec()),
            Route::Readyz => status_ok(),
            Route::Options(allow) => self.cors.preflight(request, allow),
            Route::OpenApi => docs::openapi(),
            Route::Docs => docs::page(),
            Route::Viewer(asset) => viewer::response(asset),
            route => frontend::not_a_command(route).into_response(),
        }
    }

    /// `HEAD` on a stream route: what `GET` would answer, without the
    /// stream. Answered as an ordinary response so the connection stays
    /// framed (a stream is close-delimited and would swallow the next
    /// pipelined request). The access check is the stream's own, so `HEAD`
    /// reveals no more than `GET`.
    async fn stream_head(&self, tail: LiveTail) -> Result<Response, ApiError> {
        // A user's own stream needs no check beyond the request's identity.
        if let Some(thread) = tail.thread {
            let owner = crate::shard::shard_for(thread.as_str(), self.mesh.shard_count());
            let command = Command::GetThread {
                id: thread,
                caller: tail.caller,
                include_deleted: false,
            };
            self.mesh.call(owner, command).await?;
        }
        Ok(Response {
            status: 200,
            headers: vec![
                ("Content-Type", "text/event-stream".to_owned()),
                ("Cache-Control", "no-cache".to_owned()),
            ],
            body: Vec::new(),
        })
    }

    /// Sends `command` to every shard at once; replies in shard order.
    async fn ask_every_shard(&self, command: impl Fn() -> Command) -> Result<Vec<Reply>, ApiError> {
        // One task per shard so the calls overlap instead of queueing.
        let calls: Vec<_> = (0..self.mesh.shard_count())
            .map(|shard| {
                let mesh = self.mesh.clone();
                let command = command();
                runtime::spawn(async move { mesh.call(ShardId(shard), command).await })
            })
            .collect();
        let mut replies = Vec::with_capacity(calls.len());
        for call in calls {
            replies.push(call.await?);
        }
        Ok(replies)
    }

    /// A thread listing asked of every shard: the parts' entries
    /// concatenated (each caller merges them in its own order), their
    /// totals summed, `behind` if any shard has one.
    async fn threads_of_every_shard(
        &self,
        command: impl Fn() -> Command,
    ) -> Result<ThreadPart, ApiError> {
        let mut all = ThreadPart::default();
        for reply in self.ask_every_shard(command).await? {
            let Reply::Threads(part) = reply else {
                return Err(EngineError::Storage("unexpected reply to a listing".into()).into());
            };
            all.entries.extend(part.entries);
            all.total += part.total;
            all.behind |= part.behind;
        }
        Ok(all)
    }

    /// `POST /backend/v1/sign {"userId"}`: the signature a frontend sends
    /// as `X-User-Signature` for that user.
    fn sign(&self, request: &Request) -> Result<Response, ApiError> {
        let body: input::Sign = decode_body(request)?;
        let user = body
            .user_id
            .as_deref()
            .and_then(UserId::parse)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_field",
                    "`userId` must be 1 to 128 printable ASCII characters without spaces",
                )
            })?;
        let secret = self.keys.signing_secret().ok_or_else(|| {
            ApiError::new(503, "signing_unavailable", "no signing key is configured")
        })?;
        let body = serde_json::json!({
            "userId": user.as_str(),
            "signature": crate::auth::sign(secret, user.as_str()),
        });
        Ok(json(200, body.to_string().into_bytes()))
    }

    /// Starts wrapping new thread keys under a new master key. Embedded:
    /// created on this core (which saves the keyring) and added to every
    /// other shard. External: the KMS rotates.
    async fn rotate_master_key(&self) -> Result<Response, ApiError> {
        if !self.encryption {
            return Err(ApiError::new(
                409,
                "encryption_off",
                "encryption is not enabled",
            ));
        }
        if self.keyring_file.is_some() && std::env::var_os("PROGRESSDB_KMS_MASTER_KEY").is_some() {
            return Err(ApiError::new(
                409,
                "rotation_unavailable",
                "the master key comes from PROGRESSDB_KMS_MASTER_KEY; rotate it by configuring a keyring file",
            ));
        }
        let (id, key) = self
            .mesh
            .engine()
            .rotate_master_key(self.keyring_file.as_deref(), &self.kms_check_dir)?;
        // An external KMS rotated on its side; nothing to hand to the shards.
        let Some(key) = key else {
            let body = serde_json::json!({ "rotated": true, "key_id": id });
            return Ok(json(200, body.to_string().into_bytes()));
        };
        let local = self.mesh.local_shard();
        for shard in (0..self.mesh.shard_count())
            .map(ShardId)
            .filter(|shard| *shard != local)
        {
            self.mesh
                .call(
                    shard,
                    Command::AddMasterKey {
                        id,
                        key: SecretKey(key),
                    },
                )
                .await?;
        }
        let body = serde_json::json!({ "rotated": true, "key_id": id });
        Ok(json(200, body.to_string().into_bytes()))
    }

    async fn stats(&self, request: &Request) -> Result<Response, ApiError> {
        let mut body = b"{".to_vec();
        if let Some(cluster) = &self.cluster {
            // The cluster's counts, besides this node's shards (whose
            // stores hold standby copies too).
            let counts = match self.gathered_counts(cluster, request).await? {
                threads::Counted::Asked(part) => return Ok(part),
                threads::Counted::All(counts) => counts,
            };
            let (threads, messages) = (counts.threads, counts.messages);
            body.extend(format!("\"threads\":{threads},\"messages\":{messages},").bytes());
        }
        body.extend_from_slice(b"\"shards\":[");
        for (index, reply) in self
            .ask_every_shard(|| Command::Stats)
            .await?
            .into_iter()
            .enumerate()
        {
            let Reply::Stats(stats) = reply else {
                return Err(EngineError::Storage("unexpected reply to stats".into()).into());
            };
            if index > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, &render::shard_stats(&stats))
                .expect("JSON values serialize");
        }
        body.extend_from_slice(b"]}");
        Ok(json(200, body))
    }

    /// Every shard's counters in the Prometheus text format, each series
    /// labelled with its shard.
    /// A shard that has not answered within [`SCRAPE_WAIT`] reads as down
    /// (`progressdb_shard_up` 0) instead of holding up the whole scrape.
    async fn metrics(&self) -> Result<Response, ApiError> {
        let calls: Vec<_> = (0..self.mesh.shard_count())
            .map(|shard| {
                let mesh = self.mesh.clone();
                runtime::spawn(async move { mesh.call(ShardId(shard), Command::Metrics).await })
            })
            .collect();
        let (mut samples, mut down) = (Vec::new(), Vec::new());
        for (shard, call) in calls.into_iter().enumerate() {
            let answered = futures_lite::future::or(async { Some(call.await) }, async {
                runtime::sleep(SCRAPE_WAIT).await;
                None
            })
            .await;
            match answered {
                Some(Ok(Reply::Metrics(sample))) => samples.push(*sample),
                _ => down.push(shard),
            }
        }
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type", metrics::CONTENT_TYPE.to_owned())],
            body: (metrics::render(&samples, &down)
                + &self
                    .cluster
                    .as_ref()
                    .map(|cluster| metrics::render_cluster(&cluster.view()))
                    .unwrap_or_default())
                .into_bytes(),
        })
    }

    fn generate_local_thread_id(&self) -> ThreadId {
        let sequence = self.thread_sequence.get();
        self.thread_sequence.set(sequence.wrapping_add(1));
        engine::new_thread_id(self.mesh.local_shard(), sequence)
    }
}

fn json(status: u16, body: Vec<u8>) -> Response {
    Response::json(status, body)
}

fn thread_id(text: &str) -> Result<ThreadId, ApiError> {
    ThreadId::parse(text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_thread_id",
            "thread ids are 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
        )
    })
}

/// `{"status":"ok","version":…}`: `GET /readyz` and `GET /admin/health`
/// (the SDKs check for `"ok"`).
fn status_ok() -> Response {
    let body = serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")});
    json(200, body.to_string().into_bytes())
}

/// Hostile-input smoke test of everything that decodes a request before it
/// reaches a shard: framing, routing, query strings, cursors and JSON bodies.
/// `PROGRESSDB_FUZZ_CASES` sets the number of cases (CI runs the default;
/// `scripts/fuzz.sh` runs a million).
#[cfg(test)]
mod fuzz {
    use super::input::{self, Query};
    use crate::config::Limits;
    use crate::http::{self, HeadLimits, Parse};
    use crate::rng::XorShift;

    const SEEDS: &[&[u8]] = &[
        b"GET /frontend/v1/threads?limit=10&before=0000000000000abcgeneral&sort_by=created_ts_asc HTTP/1.1\r\nX-User-ID: u\r\n\r\n",
        b"POST /frontend/v1/threads HTTP/1.1\r\nContent-Length: 30\r\n\r\n{\"title\":\"t\",\"id\":\"x\",\"slug\":1}",
        b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2a\r\n{\"thread\":\"g\",\"author\":\"a\",\"body\":[1,{}]}\r\n0\r\n\r\n",
        b"GET /frontend/v1/threads/a%2Fb/messages/33n7p71hm22r0rcvr6rq3m3ccc/versions?include_deleted=true&anchor=x HTTP/1.1\r\n\r\n",
        b"PUT /frontend/v1/threads/t/messages/m HTTP/1.1\r\nContent-Length: 16\r\nExpect: 100-continue\r\n\r\n{\"body\":\"\\u00e9\"}",
        b"POST /frontend/v1/threads/t/messages/m/reactions HTTP/1.1\r\nContent-Length: 19\r\n\r\n{\"reaction\":\"\xf0\x9f\x91\x8d\"}",
    ];

    fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(bytes.len().max(1));
            match rng.below(6) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.insert(at.min(bytes.len()), rng.next_u64() as u8),
                2 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                4 => {
                    let other = SEEDS[rng.below(SEEDS.len())];
                    let from = rng.below(other.len());
                    bytes.splice(
                        at.min(bytes.len())..at.min(bytes.len()),
                        other[from..].iter().copied(),
                    );
                }
                _ => {
                    let tokens: [&[u8]; 6] = [b"%", b"%zz", b"\r\n", b"\"", b"{", b"\xff"];
                    let token = tokens[rng.below(tokens.len())];
                    bytes.splice(
                        at.min(bytes.len())..at.min(bytes.len()),
                        token.iter().copied(),
                    );
                }
            }
        }
        bytes
    }

    #[test]
    fn hostile_requests_never_panic() {
        let cases: usize = std::env::var("PROGRESSDB_FUZZ_CASES")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(20_000);
        let seed = 0xf022_u64;
        let mut rng = XorShift::new(seed);
        let head = HeadLimits {
            head_bytes_max: 4096,
            header_count_max: 32,
            body_bytes_max: 4096,
        };
        let limits = Limits::default();
        let mut complete = 0;
        for _ in 0..cases {
            let seed_request = SEEDS[rng.below(SEEDS.len())];
            let bytes = mutate(&mut rng, seed_request);
            let Parse::Complete { request, .. } = http::parse_request(&bytes, &head) else {
                continue;
            };
            complete += 1;
            let _ = super::router::route(request.method, &request.path);
            if let Ok(query) = Query::parse(&request.query) {
                let _ = query.message_page(&limits);
                let _ = query.thread_page(&limits);
                let _ = query.reply_page(&limits);
                let _ = query.include_deleted();
                let _ = input::last_event_id(&request, &query);
            }
            let _ = input::decode_body::<input::CreateThread>(&request);
            let _ = input::decode_body::<input::SeedPostMessage>(&request);
            if let Ok(body) = input::decode_body::<input::PostMessage>(&request) {
                let _ = input::optional_role(body.role, &limits);
                let _ = input::required_body(body.body);
            }
            if let Ok(body) = input::decode_body::<input::React>(&request) {
                let _ = input::reaction(body.reaction);
            }
        }
        assert!(
            complete > cases / 20,
            "seed {seed:#x}: too few mutants parsed ({complete})"
        );
    }
}
