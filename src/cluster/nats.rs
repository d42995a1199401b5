//! The [`Log`] and [`Coordinator`] on NATS JetStream.
//!
//! async-nats needs tokio, and a shard must never block on it, so every
//! NATS call runs on one bridge thread ([`Bridge`]) with a tokio
//! current-thread runtime. Callers hand it a future and get a channel that
//! will hold the answer: a shard awaits that channel on its own executor,
//! while the blocking trait methods here (for the cluster thread and tests)
//! wait on it with a deadline. The thread exists only in clustered mode.
//!
//! Partition `p` is the stream `<prefix>-p<p>` on the subject
//! `<prefix>.p.<p>`: file storage, R3, deletes and purges denied (the log
//! is the source of truth and must have no holes). Startup verifies what
//! the protocol relies on ([`NatsLog::verify_stream`], [`verify_sync_always`])
//! and refuses to run otherwise.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream};
use futures_lite::StreamExt;

use super::ports::{
    AppendError, CoordError, Coordinator, Log, LogError, READ_BATCH_MAX, Revision, Versioned,
};
use super::record::RECORD_BYTES_MAX;
use super::{PartitionId, Seq};

/// Futures the bridge runs at once at most; past it, calls are refused.
pub const BRIDGE_IN_FLIGHT_MAX: usize = 4096;
/// Most keys one `keys` call returns.
pub const KEYS_MAX: usize = 10_000;
/// How long JetStream remembers dedupe ids. A retry after an unclear
/// append comes within seconds; past this window the expected-sequence
/// check alone keeps it from landing twice.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Extra time a blocking caller waits beyond the request timeout before it
/// calls the outcome unclear.
const CALL_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeError {
    Connect(String),
    /// Too many calls in flight: shed load (503).
    Busy,
    /// The bridge thread is gone.
    Closed,
    /// No answer within the deadline; the call may still take effect.
    TimedOut,
}

/// What a bridged future gets to work with (cheap clones of shared
/// handles).
#[derive(Clone)]
pub struct Session {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
}

/// The thread that runs every NATS call.
pub struct Bridge {
    session: Session,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
    request_timeout: Duration,
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Starts the bridge thread and connects to `urls`; `request_timeout`
    /// bounds every JetStream request (an append's acknowledgement too).
    pub fn connect(urls: &[String], request_timeout: Duration) -> Result<Bridge, BridgeError> {
        let (ready_tx, ready_rx) = flume::bounded(1);
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let urls = urls.to_vec();
        let thread = std::thread::Builder::new()
            .name("pdb-nats".into())
            .spawn(move || run_bridge(urls, request_timeout, ready_tx, stop_rx))
            .map_err(|error| BridgeError::Connect(error.to_string()))?;
        let (session, runtime) = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => return Err(BridgeError::Closed),
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (stop, thread) = (Some(stop_tx), Some(thread));
        Ok(Bridge {
            session,
            runtime,
            in_flight,
            request_timeout,
            stop,
            thread,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Runs `make(session)` on the bridge thread; the answer arrives on the
    /// returned channel. Never blocks: a shard may call it.
    pub fn submit<T, F>(
        &self,
        make: impl FnOnce(Session) -> F,
    ) -> Result<flume::Receiver<T>, BridgeError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= BRIDGE_IN_FLIGHT_MAX {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(BridgeError::Busy);
        }
        let (reply_tx, reply_rx) = flume::bounded(1);
        let (future, in_flight) = (make(self.session.clone()), self.in_flight.clone());
        self.runtime.spawn(async move {
            let _ = reply_tx.send(future.await);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(reply_rx)
    }

    /// [`Bridge::submit`] and wait for the answer. Blocks: never on a shard.
    pub fn call<T, F>(&self, make: impl FnOnce(Session) -> F) -> Result<T, BridgeError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let reply = self.submit(make)?;
        reply
            .recv_timeout(self.request_timeout + CALL_GRACE)
            .map_err(|error| match error {
                flume::RecvTimeoutError::Timeout => BridgeError::TimedOut,
                flume::RecvTimeoutError::Disconnected => BridgeError::Closed,
            })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Ready = Result<(Session, tokio::runtime::Handle), BridgeError>;

fn run_bridge(
    urls: Vec<String>,
    timeout: Duration,
    ready: flume::Sender<Ready>,
    stop: flume::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(BridgeError::Connect(error.to_string())));
            return;
        }
    };
    let connected = runtime.block_on(async {
        async_nats::ConnectOptions::new()
            .name("progressdb")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(urls)
            .await
    });
    let client = match connected {
        Ok(client) => client,
        Err(error) => {
            let _ = ready.send(Err(BridgeError::Connect(error.to_string())));
            return;
        }
    };
    // The context spawns its acknowledgement task: inside the runtime.
    let jetstream = {
        let _inside = runtime.enter();
        jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone())
    };
    let session = Session { client, jetstream };
    if ready.send(Ok((session, runtime.handle().clone()))).is_err() {
        return;
    }
    // Drives every spawned call until the bridge is dropped.
    runtime.block_on(async {
        let _ = stop.recv_async().await;
    });
}

/// Partition logs as JetStream streams.
pub struct NatsLog {
    bridge: Arc<Bridge>,
    prefix: String,
}

/// Why a partition's stream cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    Bridge(BridgeError),
    JetStream(String),
    /// The stream exists but breaks a rule the protocol relies on.
    Unsafe {
        stream: String,
        reason: String,
    },
}

impl NatsLog {
    /// `prefix` names this cluster's streams and subjects (`[a-z0-9_-]`).
    pub fn new(bridge: Arc<Bridge>, prefix: &str) -> NatsLog {
        NatsLog {
            bridge,
            prefix: prefix.to_owned(),
        }
    }

    pub fn stream_name(&self, partition: PartitionId) -> String {
        format!("{}-p{}", self.prefix, partition.0)
    }

    fn subject(&self, partition: PartitionId) -> String {
        format!("{}.p.{}", self.prefix, partition.0)
    }

    /// Creates the stream of `partition` if missing, then verifies it.
    pub fn ensure_stream(
        &self,
        partition: PartitionId,
        replicas: usize,
    ) -> Result<(), StreamError> {
        let config = stream::Config {
            name: self.stream_name(partition),
            subjects: vec![self.subject(partition)],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: RECORD_BYTES_MAX as i32,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        };
        let created = self.bridge.call(move |session| async move {
            session
                .jetstream
                .get_or_create_stream(config)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        created
            .map_err(StreamError::Bridge)?
            .map_err(StreamError::JetStream)?;
        self.verify_stream(partition, replicas)
    }

    /// Refuses a stream that is not file-stored, not `replicas`-way
    /// replicated, acknowledges before storing, or allows deleting records.
    pub fn verify_stream(
        &self,
        partition: PartitionId,
        replicas: usize,
    ) -> Result<(), StreamError> {
        let name = self.stream_name(partition);
        let lookup = name.clone();
        let info = self.bridge.call(move |session| async move {
            let stream = session
                .jetstream
                .get_stream_no_info(&lookup)
                .await
                .map_err(|e| e.to_string())?;
            stream.get_info().await.map_err(|e| e.to_string())
        });
        let config = info
            .map_err(StreamError::Bridge)?
            .map_err(StreamError::JetStream)?
            .config;
        let unsafe_because = |reason: String| {
            Err(StreamError::Unsafe {
                stream: name.clone(),
                reason,
            })
        };
        if config.storage != stream::StorageType::File {
            return unsafe_because("not file storage".into());
        }
        if config.num_replicas != replicas {
            return unsafe_because(format!("{} replicas, not {replicas}", config.num_replicas));
        }
        if !matches!(
            config.persist_mode,
            None | Some(stream::PersistenceMode::Default)
        ) {
            return unsafe_because("asynchronous persistence".into());
        }
        if !config.deny_delete || !config.deny_purge {
            return unsafe_because("records can be deleted or purged".into());
        }
        Ok(())
    }

    fn last(&self, partition: PartitionId) -> Result<Result<u64, String>, BridgeError> {
        let name = self.stream_name(partition);
        self.bridge.call(move |session| async move {
            let stream = session
                .jetstream
                .get_stream_no_info(&name)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .get_info()
                .await
                .map(|info| info.state.last_sequence)
                .map_err(|e| e.to_string())
        })
    }
}

fn append_error(kind: PublishErrorKind, detail: String) -> AppendError {
    match kind {
        PublishErrorKind::WrongLastSequence => AppendError::WrongLastSequence { last: None },
        // Refused before anything was stored.
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::MaxAckPending => AppendError::Unavailable(detail),
        // Anything else may have been stored: only the log can tell.
        _ => AppendError::Unclear,
    }
}

/// An append on its way; [`PendingAppend::wait`] for the log's answer.
pub struct PendingAppend {
    reply:
        flume::Receiver<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>>,
    timeout: Duration,
}

impl PendingAppend {
    /// Blocks until the log answers (or the deadline says unclear).
    pub fn wait(self) -> Result<Seq, AppendError> {
        match self.reply.recv_timeout(self.timeout + CALL_GRACE) {
            Ok(Ok(ack)) => Ok(Seq(ack.sequence)),
            Ok(Err(error)) => Err(append_error(error.kind(), error.to_string())),
            Err(_) => Err(AppendError::Unclear),
        }
    }
}

impl NatsLog {
    /// Starts appending `record` like [`Log::append`] without waiting, so
    /// the appends of several partitions travel at once.
    pub fn submit_append(
        &self,
        partition: PartitionId,
        expected_last: Seq,
        dedupe_id: &str,
        record: Vec<u8>,
    ) -> Result<PendingAppend, AppendError> {
        let subject = self.subject(partition);
        let message = jetstream::message::PublishMessage::build()
            .payload(record.into())
            .message_id(dedupe_id)
            .expected_last_sequence(expected_last.0);
        let submitted = self.bridge.submit(move |session| async move {
            let ack = session.jetstream.send_publish(subject, message).await?;
            ack.await
        });
        match submitted {
            Ok(reply) => Ok(PendingAppend {
                reply,
                timeout: self.bridge.request_timeout,
            }),
            Err(BridgeError::Busy) => Err(AppendError::Unavailable("bridge busy".into())),
            Err(_) => Err(AppendError::Unavailable("bridge closed".into())),
        }
    }
}

/// An append's answer as it arrives for [`NatsLog::submit_append_to`].
pub type AppendAnswer = (PartitionId, Result<Seq, AppendError>);

impl NatsLog {
    /// Starts appending `record` like [`Log::append`]; the answer arrives
    /// on `answers`, so one thread can wait for the appends of many
    /// partitions and for new work at once.
    pub fn submit_append_to(
        &self,
        partition: PartitionId,
        expected_last: Seq,
        dedupe_id: &str,
        record: Vec<u8>,
        answers: flume::Sender<AppendAnswer>,
    ) -> Result<(), AppendError> {
        let pending = self.submit_append(partition, expected_last, dedupe_id, record)?;
        let (reply, timeout) = (pending.reply, pending.timeout + CALL_GRACE);
        let forwarded = self.bridge.submit(move |_| async move {
            let answer = match tokio::time::timeout(timeout, reply.recv_async()).await {
                Ok(Ok(Ok(ack))) => Ok(Seq(ack.sequence)),
                Ok(Ok(Err(error))) => Err(append_error(error.kind(), error.to_string())),
                // No answer: only the log can tell.
                Ok(Err(_)) | Err(_) => Err(AppendError::Unclear),
            };
            let _ = answers.send((partition, answer));
        });
        forwarded.map(|_| ()).map_err(|_| AppendError::Unclear)
    }
}

impl Log for NatsLog {
    fn append(
        &self,
        partition: PartitionId,
        expected_last: Seq,
        dedupe_id: &str,
        record: &[u8],
    ) -> Result<Seq, AppendError> {
        self.submit_append(partition, expected_last, dedupe_id, record.to_vec())?
            .wait()
    }

    fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let last = self
            .last(partition)
            .map_err(|e| LogError(format!("{e:?}")))?
            .map_err(LogError)?;
        let from = from.0.max(1);
        let until = last.min(
            from.saturating_add(max.min(READ_BATCH_MAX) as u64)
                .saturating_sub(1),
        );
        if from > until {
            return Ok(Vec::new());
        }
        let name = self.stream_name(partition);
        // Reads go to the stream leader (not direct gets, which a lagging
        // replica may answer), one request per record, all in flight at
        // once (a batch is one round trip, not one per record).
        let read = self.bridge.call(move |session| async move {
            let stream = session
                .jetstream
                .get_stream_no_info(&name)
                .await
                .map_err(|e| e.to_string())?;
            let gets: Vec<_> = (from..=until)
                .map(|seq| {
                    let stream = stream.clone();
                    tokio::spawn(async move { (seq, stream.get_raw_message(seq).await) })
                })
                .collect();
            let mut records = Vec::with_capacity(gets.len());
            for get in gets {
                let (seq, got) = get.await.map_err(|e| e.to_string())?;
                let message = got.map_err(|e| format!("record {seq}: {e}"))?;
                records.push((Seq(message.sequence), message.payload.to_vec()));
            }
            Ok::<_, String>(records)
        });
        read.map_err(|e| LogError(format!("{e:?}")))?
            .map_err(LogError)
    }

    fn last_seq(&self, partition: PartitionId) -> Result<Seq, LogError> {
        let last = self
            .last(partition)
            .map_err(|e| LogError(format!("{e:?}")))?;
        last.map(Seq).map_err(LogError)
    }
}

/// One coordinator bucket on JetStream KV.
pub struct NatsKv {
    bridge: Arc<Bridge>,
    store: kv::Store,
}

impl NatsKv {
    /// Opens (creating if missing) `bucket`; with `ttl`, entries expire
    /// once not written for that long (leases).
    pub fn open(
        bridge: Arc<Bridge>,
        bucket: &str,
        ttl: Option<Duration>,
        replicas: usize,
    ) -> Result<NatsKv, StreamError> {
        let config = kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            max_age: ttl.unwrap_or_default(),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let opened = bridge.call(move |session| async move {
            match session.jetstream.get_key_value(&config.bucket).await {
                Ok(store) => Ok(store),
                Err(_) => session
                    .jetstream
                    .create_key_value(config)
                    .await
                    .map_err(|e| e.to_string()),
            }
        });
        let store = opened
            .map_err(StreamError::Bridge)?
            .map_err(StreamError::JetStream)?;
        Ok(NatsKv { bridge, store })
    }

    fn call<T: Send + 'static, F: Future<Output = Result<T, CoordError>> + Send + 'static>(
        &self,
        make: impl FnOnce(kv::Store) -> F,
    ) -> Result<T, CoordError> {
        let store = self.store.clone();
        self.bridge
            .call(move |_| make(store))
            .map_err(|e| CoordError::Unavailable(format!("{e:?}")))?
    }
}

impl Coordinator for NatsKv {
    /// Reads from the bucket's stream leader. async-nats's own `entry`
    /// uses direct gets, which any replica may answer before it has the
    /// latest write: a controller would then decide on a stale assignment.
    fn get(&self, key: &str) -> Result<Option<Versioned>, CoordError> {
        let key = key.to_owned();
        self.call(move |store| async move {
            let subject = format!("{}{}", store.prefix, key);
            match store.stream.get_last_raw_message_by_subject(&subject).await {
                // Deletes, purges and expiry markers carry one of these.
                Ok(message) if message.headers.get("KV-Operation").is_some() => Ok(None),
                Ok(message) if message.headers.get("Nats-Marker-Reason").is_some() => Ok(None),
                Ok(message) => {
                    let (value, revision) = (message.payload.to_vec(), Revision(message.sequence));
                    Ok(Some(Versioned { value, revision }))
                }
                Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                    Ok(None)
                }
                Err(e) => Err(CoordError::Unavailable(e.to_string())),
            }
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, CoordError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(move |store| async move {
            match store.create(key, value.into()).await {
                Ok(revision) => Ok(Revision(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(CoordError::Exists),
                Err(e) => Err(CoordError::Unavailable(e.to_string())),
            }
        })
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, CoordError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(move |store| async move {
            match store.update(key, value.into(), expected.0).await {
                Ok(revision) => Ok(Revision(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Err(CoordError::WrongRevision)
                }
                Err(e) => Err(CoordError::Unavailable(e.to_string())),
            }
        })
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        let prefix = prefix.to_owned();
        self.call(move |store| async move {
            let mut keys = store
                .keys()
                .await
                .map_err(|e| CoordError::Unavailable(e.to_string()))?;
            let mut found = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| CoordError::Unavailable(e.to_string()))?;
                if key.starts_with(&prefix) && found.len() < KEYS_MAX {
                    found.push(key);
                }
            }
            found.sort();
            Ok(found)
        })
    }
}

/// Asks a nats-server's monitoring endpoint (`http: HOST:PORT` in its
/// config) whether JetStream fsyncs every message before acknowledging it;
/// clustered mode refuses to start on any server that does not. Blocking:
/// startup only.
pub fn verify_sync_always(monitor: SocketAddr, timeout: Duration) -> Result<(), String> {
    let varz = http_get_json(monitor, "/varz", timeout)?;
    match varz.pointer("/jetstream/config/sync_always") {
        Some(serde_json::Value::Bool(true)) => Ok(()),
        other => Err(format!(
            "nats-server at {monitor} does not sync always (sync_always = {other:?})"
        )),
    }
}

/// Most bytes read from a monitoring answer (`/varz` is a few KiB).
const MONITOR_BYTES_MAX: u64 = 1024 * 1024;

fn http_get_json(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let failed = |error: std::io::Error| format!("GET http://{addr}{path}: {error}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    // HTTP/1.0: the server closes after the answer, so the body ends at EOF.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(failed)?;
    let mut answer = Vec::new();
    stream
        .take(MONITOR_BYTES_MAX)
        .read_to_end(&mut answer)
        .map_err(failed)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    if !answer.starts_with(b"HTTP/1.1 200") && !answer.starts_with(b"HTTP/1.0 200") {
        return Err(format!("GET http://{addr}{path}: not 200"));
    }
    serde_json::from_slice(&answer[split + 4..])
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))
}
