//! The HTTP/JSON contract: [`Route`] + request -> [`Command`] on the owning
//! shard -> [`Response`]. Everything a client sends is validated here, on
//! the accepting core, before it crosses to another core.

mod admin;
mod cors;
pub mod docs;
mod error;
pub(crate) mod input;
mod limit;
pub mod viewer;

pub use error::ApiError;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::auth::{Keys, Principal};
use crate::config::{Config, KmsConfig, Limits};
use crate::engine::{
    self, Caller, Command, EngineError, Order, Reply, SecretKey, ThreadEntry, ThreadPage,
};
use crate::http::router::{self, Route, RouteError};
use crate::http::{Request, Response};
use crate::logging;
use crate::metrics;
use crate::model::{ThreadId, UserId};
use crate::shard::{ShardId, mesh::Mesh, shard_for};
use cors::Cors;
use limit::RateLimiter;

use input::{Query, decode_body};

/// What a request turned into: a response, or a live tail the connection
/// serves until the client goes away.
pub enum Handled {
    Response(Response),
    Stream(LiveTail),
}

/// A validated request to stream a thread's changes.
pub struct LiveTail {
    pub thread: ThreadId,
    pub caller: Caller,
    /// Resume after this event id (`Last-Event-ID`), replaying what was missed.
    pub last_event_id: Option<u64>,
}

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
    /// Sequence for thread ids generated on this core.
    thread_sequence: Cell<u32>,
}

impl Api {
    pub fn new(mesh: Rc<Mesh>, keys: Rc<Keys>, config: &Config) -> Api {
        let rate_limiter = RateLimiter::new(
            config.rate_limit_rps,
            config.rate_limit_burst,
            mesh.shard_count(),
            keys.key_count(),
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
            thread_sequence: Cell::new(0),
        }
    }

    pub async fn handle(&self, request: &Request) -> Handled {
        let started = Instant::now();
        crate::shard::requests::record(started);
        let routed = router::route(request.method, &request.path);
        let route = metrics::route_name(&routed);
        let response = match self.dispatch(request, routed).await {
            Ok(Handled::Response(response)) => response,
            Ok(stream) => {
                // A live tail counts once, as started, with the time it
                // took to validate; its lifetime is not a latency.
                self.observe(request.method.as_str(), route, 200, started.elapsed());
                return stream;
            }
            Err(err) => err.into_response(),
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
        Handled::Response(self.cors.decorate(request, response))
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
        let answer = match router::route(request.method, &request.path) {
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

    async fn dispatch(
        &self,
        request: &Request,
        routed: Result<Route, RouteError>,
    ) -> Result<Handled, ApiError> {
        let route = routed?;
        match route {
            Route::Healthz => {
                return Ok(Handled::Response(json(200, br#"{"status":"ok"}"#.to_vec())));
            }
            Route::Readyz => {
                let body =
                    serde_json::json!({"status": "ready", "version": env!("CARGO_PKG_VERSION")});
                return Ok(Handled::Response(json(200, body.to_string().into_bytes())));
            }
            Route::Options(allow) => {
                return Ok(Handled::Response(self.cors.preflight(request, allow)));
            }
            Route::OpenApi => return Ok(Handled::Response(docs::openapi())),
            Route::Docs => return Ok(Handled::Response(docs::page())),
            Route::Viewer(asset) => return Ok(Handled::Response(viewer::response(asset))),
            _ => {}
        }
        let scope = route
            .scope()
            .expect("only unauthenticated routes have no scope");
        let principal = self.keys.authenticate(request, scope)?;
        if let Err(retry_after_s) = self.rate_limiter.admit(principal.key_index, Instant::now()) {
            return Err(ApiError {
                retry_after_s: Some(retry_after_s),
                ..ApiError::new(
                    429,
                    "rate_limited",
                    "too many requests for this key; retry later",
                )
            });
        }
        let query = Query::parse(&request.query)?;
        if let Some(handled) = self.admin_read(&route, request, &query).await {
            return handled;
        }
        let limits = &self.limits;
        let command = match route {
            Route::Healthz
            | Route::Readyz
            | Route::OpenApi
            | Route::Docs
            | Route::Options(_)
            | Route::Viewer(_) => {
                unreachable!("answered above")
            }
            Route::AdminListThreads
            | Route::AdminGetThread(_)
            | Route::AdminListMessages(_)
            | Route::AdminListVersions(..)
            | Route::AdminStreamMessages(_) => unreachable!("answered by admin_read"),
            Route::ListThreads => {
                return self
                    .list_threads(principal.require_user()?, &query)
                    .await
                    .map(Handled::Response);
            }
            Route::Stats => return self.stats().await.map(Handled::Response),
            Route::Metrics => return self.metrics().await.map(Handled::Response),
            Route::Sign => return self.sign(request).map(Handled::Response),
            Route::RotateMasterKey => return self.rotate_master_key().await.map(Handled::Response),
            Route::CreateThread => {
                let author = principal.require_user()?;
                let body: input::CreateThread = decode_body(request)?;
                Command::CreateThread {
                    id: match body.id {
                        Some(id) => thread_id(&id)?,
                        None => self.generate_thread_id(),
                    },
                    author,
                    title: input::title(body.title, limits)?,
                    slug: input::optional_slug(body.slug)?,
                }
            }
            Route::GetThread(id) => Command::GetThread {
                id: thread_id(&id)?,
                caller: user_caller(&principal)?,
                include_deleted: query.include_deleted()?,
            },
            Route::RestoreThread(id) => Command::RestoreThread {
                id: thread_id(&id)?,
                caller: user_caller(&principal)?,
            },
            Route::UpdateThread(id) => {
                let body: input::UpdateThread = decode_body(request)?;
                let title = body
                    .title
                    .map(|t| input::title(Some(t), limits))
                    .transpose()?;
                let slug = input::optional_slug(body.slug)?;
                if title.is_none() && slug.is_none() {
                    return Err(ApiError::bad_request(
                        "missing_field",
                        "send `title` or `slug`",
                    ));
                }
                Command::UpdateThread {
                    id: thread_id(&id)?,
                    caller: user_caller(&principal)?,
                    title,
                    slug,
                }
            }
            Route::DeleteThread(id) => Command::DeleteThread {
                id: thread_id(&id)?,
                caller: user_caller(&principal)?,
            },
            Route::PostMessage(id) => {
                let author = principal.require_user()?;
                let body: input::PostMessage = decode_body(request)?;
                Command::PostMessage {
                    thread: thread_id(&id)?,
                    caller: Caller {
                        user: Some(author.clone()),
                    },
                    author,
                    role: input::optional_role(body.role, limits)?,
                    body: input::required_body(body.body)?,
                    reply_to: body.reply_to,
                    create_thread_titled: None,
                }
            }
            Route::SeedPostMessage => {
                let body: input::SeedPostMessage = decode_body(request)?;
                let Some(thread) = body.thread else {
                    return Err(ApiError::bad_request(
                        "missing_field",
                        "`thread` is required",
                    ));
                };
                let thread = thread_id(&thread)?;
                let author = match body.author {
                    Some(author) => UserId::parse(&author).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_field",
                            "`author` must be 1 to 128 printable ASCII characters",
                        )
                    })?,
                    None => principal.require_user()?,
                };
                Command::PostMessage {
                    create_thread_titled: Some(thread.to_string()),
                    thread,
                    caller: Caller { user: None },
                    author,
                    role: input::optional_role(body.role, limits)?,
                    body: input::required_body(body.body)?,
                    reply_to: body.reply_to,
                }
            }
            Route::ListMessages(id) => Command::ListMessages {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                page: query.message_page(limits)?,
            },
            Route::SeedListMessages(id) => Command::ListMessages {
                thread: thread_id(&id)?,
                caller: Caller { user: None },
                page: query.message_page(limits)?,
            },
            Route::GetMessage(id, mid) => Command::GetMessage {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                id: mid,
                include_deleted: query.include_deleted()?,
            },
            Route::ListVersions(id, mid) => Command::ListVersions {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                id: mid,
                include_deleted: query.include_deleted()?,
            },
            Route::ListReplies(id, mid) => Command::ListReplies {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                id: mid,
                page: query.reply_page(limits)?,
            },
            Route::React(id, mid) => {
                let body: input::React = decode_body(request)?;
                Command::React {
                    thread: thread_id(&id)?,
                    caller: user_caller(&principal)?,
                    id: mid,
                    reaction: Some(input::reaction(body.reaction)?),
                }
            }
            Route::Unreact(id, mid) => Command::React {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                id: mid,
                reaction: None,
            },
            Route::RestoreMessage(id, mid) => Command::RestoreMessage {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                id: mid,
            },
            Route::StreamMessages(id) => {
                return Ok(Handled::Stream(LiveTail {
                    thread: thread_id(&id)?,
                    caller: user_caller(&principal)?,
                    last_event_id: input::last_event_id(request, &query)?,
                }));
            }
            Route::EditMessage(id, mid) => {
                let body: input::EditMessage = decode_body(request)?;
                Command::EditMessage {
                    thread: thread_id(&id)?,
                    caller: user_caller(&principal)?,
                    id: mid,
                    body: input::required_body(body.body)?,
                }
            }
            Route::DeleteMessage(id, mid) => Command::DeleteMessage {
                thread: thread_id(&id)?,
                caller: user_caller(&principal)?,
                id: mid,
            },
        };
        let owner = shard_for(command.thread().as_str(), self.mesh.shard_count());
        match self.mesh.call(owner, command).await? {
            Reply::Created(body) => Ok(Handled::Response(json(201, body))),
            Reply::Ok(body) => Ok(Handled::Response(json(200, body))),
            Reply::Threads(_) | Reply::Events { .. } | Reply::Metrics(_) => {
                Err(EngineError::Storage("unexpected reply".into()).into())
            }
        }
    }

    /// Sends `command` to every shard at once; replies in shard order.
    async fn ask_every_shard(&self, command: impl Fn() -> Command) -> Result<Vec<Reply>, ApiError> {
        // One task per shard so the calls overlap instead of queueing.
        let calls: Vec<_> = (0..self.mesh.shard_count())
            .map(|shard| {
                let mesh = self.mesh.clone();
                let command = command();
                glommio::spawn_local(async move { mesh.call(ShardId(shard), command).await })
            })
            .collect();
        let mut replies = Vec::with_capacity(calls.len());
        for call in calls {
            replies.push(call.await?);
        }
        Ok(replies)
    }

    /// A thread listing asked of every shard, its parts concatenated
    /// (each caller merges them in its own order).
    async fn threads_of_every_shard(
        &self,
        command: impl Fn() -> Command,
    ) -> Result<Vec<ThreadEntry>, ApiError> {
        let mut entries = Vec::new();
        for reply in self.ask_every_shard(command).await? {
            let Reply::Threads(part) = reply else {
                return Err(EngineError::Storage("unexpected reply to a listing".into()).into());
            };
            entries.extend(part);
        }
        Ok(entries)
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

    async fn stats(&self) -> Result<Response, ApiError> {
        let mut body = b"{\"shards\":[".to_vec();
        for (index, reply) in self
            .ask_every_shard(|| Command::Stats)
            .await?
            .into_iter()
            .enumerate()
        {
            let Reply::Ok(json) = reply else {
                return Err(EngineError::Storage("unexpected reply to stats".into()).into());
            };
            if index > 0 {
                body.push(b',');
            }
            body.extend(json);
        }
        body.extend_from_slice(b"]}");
        Ok(json(200, body))
    }

    /// Every shard's counters in the Prometheus text format, each series
    /// labelled with its shard.
    async fn metrics(&self) -> Result<Response, ApiError> {
        let mut samples = Vec::with_capacity(self.mesh.shard_count());
        for reply in self.ask_every_shard(|| Command::Metrics).await? {
            let Reply::Metrics(sample) = reply else {
                return Err(EngineError::Storage("unexpected reply to metrics".into()).into());
            };
            samples.push(*sample);
        }
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type", metrics::CONTENT_TYPE.to_owned())],
            body: metrics::render(&samples).into_bytes(),
        })
    }

    /// Asks every shard for its part of the author's threads, then merges.
    async fn list_threads(&self, author: UserId, query: &Query) -> Result<Response, ApiError> {
        let request = query.thread_page(&self.limits)?;
        self.merge_author_threads(author, request).await
    }

    async fn merge_author_threads(
        &self,
        author: UserId,
        request: input::ThreadPageRequest,
    ) -> Result<Response, ApiError> {
        let page = ThreadPage {
            author,
            after: request.position.clone(),
            order: request.scan_order,
            limit: request.limit,
            include_deleted: request.include_deleted,
        };
        let mut entries = self
            .threads_of_every_shard(|| Command::ListThreads(page.clone()))
            .await?;
        entries.sort_by(|a, b| a.position.cmp(&b.position));
        if request.scan_order == Order::NewestFirst {
            entries.reverse();
        }
        let more_in_scan = entries.len() > request.limit;
        entries.truncate(request.limit);
        // A cursor was given, so items exist on the side the scan started from.
        let more_behind_scan = request.position.is_some();
        let (more_next, more_prev) = if request.reverse_for_display {
            entries.reverse();
            (more_behind_scan, more_in_scan)
        } else {
            (more_in_scan, more_behind_scan)
        };
        let cursor = |entry: Option<&ThreadEntry>, wanted: bool| {
            entry
                .filter(|_| wanted)
                .map(|entry| input::thread_cursor(&entry.position))
        };
        let next_cursor = cursor(entries.last(), more_next);
        let prev_cursor = cursor(entries.first(), more_prev);
        let body = engine::envelope(
            entries.iter().map(|entry| entry.json.as_slice()),
            next_cursor.is_some(),
            next_cursor.as_deref(),
            prev_cursor.as_deref(),
        );
        Ok(json(200, body))
    }

    fn generate_thread_id(&self) -> ThreadId {
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

fn user_caller(principal: &Principal) -> Result<Caller, ApiError> {
    Ok(Caller {
        user: Some(principal.require_user()?),
    })
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
            let _ = http::router::route(request.method, &request.path);
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
