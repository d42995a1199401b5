//! The PostgreSQL v3 front end (`--pg-addr`): psql and Postgres drivers
//! read and write threads and messages.
//!
//! This module owns one PostgreSQL connection from its first byte to its
//! close: framing ([`codec`]), startup (here), SCRAM-SHA-256 password
//! authentication ([`scram`]), the simple and extended query protocols
//! (`session.rs`), the statement matcher (`sql.rs`) and the mapping of
//! statements onto the HTTP API's entry point (`exec.rs`), which sends
//! engine commands to the owning shard. It runs on the same glommio
//! executors and connection slots as HTTP.
//!
//! The codec is ours rather than a crate's: `pgwire`, the maintained Rust
//! implementation, drives connections on tokio, while every connection
//! here lives on one glommio executor pinned to a core; and the part of the
//! protocol needed is small (about a dozen message types), so owning it
//! keeps every length and terminator check in code we test against hostile
//! input.

mod catalog;
pub mod codec;
mod exec;
pub mod scram;
mod session;
mod sql;

use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::api::Api;
use crate::auth::KeyKind;
use crate::model::UserId;
use crate::server::drain::Drain;
use codec::{Fatal, Out, Startup};
use exec::Identity;

/// What `server_version` and `version()` claim: the protocol and the type
/// OIDs here are those of PostgreSQL 16.
pub const SERVER_VERSION: &str = "16.0";

/// Bytes requested from the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Output buffered before it is written even if more input is waiting.
const WRITE_BUFFER_BYTES_MAX: usize = 256 * 1024;
/// A SASL message holds a nonce and a proof; anything longer is not one.
const AUTH_MESSAGE_BYTES_MAX: usize = 2048;
/// SSLRequest/GSSENCRequest answered before a client must start.
const ENCRYPTION_REQUESTS_MAX: usize = 2;

pub struct PgSettings {
    /// Largest message body accepted (a query or a Bind with its values).
    pub message_bytes_max: usize,
    /// Longest silence between messages.
    pub idle_timeout: Duration,
    /// Longest time from connecting to being authenticated.
    pub startup_timeout: Duration,
    /// Every key's SCRAM secrets, derived once per shard.
    pub verifier: scram::Verifier,
    /// The server's TLS: when set, every connection must start with an
    /// SSLRequest and speak the protocol inside TLS.
    pub tls: Option<Rc<crate::server::tls::Tls>>,
}

/// One client connection and its buffers.
struct Conn<'a, S> {
    stream: S,
    input: Vec<u8>,
    out: Out,
    drain: &'a Drain,
}

impl<'a, S> Conn<'a, S> {
    fn new(stream: S, drain: &'a Drain) -> Conn<'a, S> {
        Conn {
            stream,
            input: Vec::with_capacity(READ_CHUNK_BYTES),
            out: Out::default(),
            drain,
        }
    }
}

/// Serves one PostgreSQL connection until the client leaves, breaks the
/// protocol, goes silent for `idle_timeout`, or the shard drains.
pub async fn serve(stream: TcpStream, api: Rc<Api>, settings: Rc<PgSettings>, drain: &Drain) {
    let _ = stream.set_nodelay(true);
    // These bound every read and write TLS makes on the socket too.
    let _ = stream.set_read_timeout(Some(settings.idle_timeout));
    // A client that never reads cannot hold a response forever.
    let _ = stream.set_write_timeout(Some(settings.idle_timeout));
    let deadline = Instant::now() + settings.startup_timeout;
    let mut conn = Conn::new(stream, drain);
    let Some(tls) = settings.tls.clone() else {
        return run(conn, api, &settings, deadline).await;
    };
    if let Err(fatal) = accept_ssl_request(&mut conn, deadline).await {
        return conn.fail(fatal).await;
    }
    if conn.flush().await
        && let Some(stream) = tls.handshake(conn.stream).await
    {
        run(Conn::new(stream, drain), api, &settings, deadline).await;
    }
}

/// With TLS on, the connection must ask for it first (GSSENCRequest is
/// declined): answers `S` to the SSLRequest, which must be all the client
/// sent, since anything after it would be read as if it came over TLS.
async fn accept_ssl_request(
    conn: &mut Conn<'_, TcpStream>,
    deadline: Instant,
) -> Result<(), Option<Fatal>> {
    let mut declined = 0;
    loop {
        match codec::parse_startup(&conn.input)? {
            Some((Startup::Encryption, used))
                if conn.input[4..8] == codec::SSL_REQUEST.to_be_bytes() =>
            {
                if used != conn.input.len() {
                    return Err(Some(Fatal::new(
                        "08P01",
                        "unexpected data after SSLRequest",
                    )));
                }
                conn.input.clear();
                conn.out.bytes.push(b'S');
                return Ok(());
            }
            Some((Startup::Encryption, used)) if declined < ENCRYPTION_REQUESTS_MAX => {
                declined += 1;
                conn.input.drain(..used);
                conn.out.bytes.push(b'N');
            }
            Some((Startup::Cancel, _)) => return Err(None),
            Some(_) => {
                return Err(Some(Fatal::new(
                    "28000",
                    "this server accepts PostgreSQL connections over TLS only: connect with sslmode=require",
                )));
            }
            None => conn.read_before(deadline).await?,
        }
    }
}

/// The startup and then the session, on a plain or TLS stream.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<'_, S>,
    api: Rc<Api>,
    settings: &PgSettings,
    deadline: Instant,
) {
    let identity = match startup(&mut conn, &settings.verifier, deadline).await {
        Ok(identity) => identity,
        Err(fatal) => {
            conn.fail(fatal).await;
            return;
        }
    };
    // Room for a few full-size Parse/Bind messages at once.
    let retained_max = settings.message_bytes_max.saturating_mul(4);
    let mut session = session::Session::new(api, identity, retained_max);
    loop {
        match codec::parse_message(&conn.input, settings.message_bytes_max) {
            Ok(Some(message)) => {
                let (tag, body) = (message.tag, message.body.to_vec());
                conn.input.drain(..message.used);
                match session.handle(tag, &body, &mut conn.out).await {
                    Ok(true) => {}
                    Ok(false) => return conn.close().await,
                    Err(fatal) => return conn.fail(Some(fatal)).await,
                }
                if conn.out.bytes.len() >= WRITE_BUFFER_BYTES_MAX && !conn.flush().await {
                    return;
                }
                while session.busy() {
                    session.step(&mut conn.out).await;
                    if conn.out.bytes.len() >= WRITE_BUFFER_BYTES_MAX && !conn.flush().await {
                        return;
                    }
                }
            }
            Ok(None) => {
                if !conn.flush().await || !conn.read_idle().await {
                    return;
                }
            }
            Err(fatal) => return conn.fail(Some(fatal)).await,
        }
    }
}

/// Answers a connection over the per-shard limit with a FATAL error
/// (`too_many_connections`), then closes it.
pub async fn refuse(mut stream: TcpStream) {
    let mut out = Out::default();
    out.error(b'E', "FATAL", "53300", "sorry, too many clients already");
    let _ = stream.write_all(&out.bytes).await;
    let _ = stream.close().await;
}

/// Reads the startup packets and the password; answers `N` to encryption
/// requests. `Err(None)` closes without a word (a cancel request).
async fn startup<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    verifier: &scram::Verifier,
    deadline: Instant,
) -> Result<Identity, Option<Fatal>> {
    let mut encryption_requests = 0;
    let params = loop {
        match codec::parse_startup(&conn.input)? {
            Some((Startup::Encryption, used)) if encryption_requests < ENCRYPTION_REQUESTS_MAX => {
                encryption_requests += 1;
                conn.input.drain(..used);
                conn.out.bytes.push(b'N');
            }
            Some((Startup::Encryption, _)) => {
                return Err(Some(Fatal::new("08P01", "too many encryption requests")));
            }
            // Cancelling needs a backend that runs queries long enough to
            // cancel; here none does, so the request is dropped.
            Some((Startup::Cancel, _)) => return Err(None),
            Some((Startup::Start { params }, used)) => {
                conn.input.drain(..used);
                break params;
            }
            None => conn.read_before(deadline).await?,
        }
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let user = param("user").unwrap_or_default();
    let user = UserId::parse(&user).ok_or_else(|| {
        Fatal::new(
            "28000",
            "the user name must be the acting user id: 1 to 128 printable ASCII characters",
        )
    })?;
    let (kind, key) = authenticate(conn, verifier, &user, deadline).await?;
    let admin = match kind {
        KeyKind::Backend => false,
        KeyKind::Admin => true,
        // The verifier holds no frontend keys.
        KeyKind::Frontend => return Err(Some(auth_failed(&user))),
    };
    greet(&mut conn.out);
    Ok(Identity {
        database: param("database").unwrap_or_else(|| user.as_str().to_owned()),
        user,
        key,
        admin,
        include_deleted: false,
    })
}

/// The SCRAM-SHA-256 exchange: the key the client proved it holds, and
/// its kind.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    verifier: &scram::Verifier,
    user: &UserId,
    deadline: Instant,
) -> Result<(KeyKind, String), Option<Fatal>> {
    conn.out.auth_sasl(scram::MECHANISM);
    let initial = read_auth_message(conn, deadline).await?;
    let mut reader = codec::Reader::new(&initial);
    let mechanism = reader.cstr()?;
    let length = usize::try_from(reader.i32()?).map_err(|_| malformed_sasl())?;
    let client_first = reader.take(length)?;
    reader.finish()?;
    if mechanism != scram::MECHANISM {
        return Err(Some(Fatal::new("28000", "only SCRAM-SHA-256 is offered")));
    }
    let exchange = std::str::from_utf8(client_first)
        .ok()
        .and_then(|text| verifier.start(text))
        .ok_or_else(malformed_sasl)?;
    conn.out.auth_sasl_data(11, exchange.server_first());
    let client_final = read_auth_message(conn, deadline).await?;
    let client_final = std::str::from_utf8(&client_final).map_err(|_| malformed_sasl())?;
    let (kind, key, server_final) = verifier
        .finish(&exchange, client_final)
        .ok_or_else(|| auth_failed(user))?;
    conn.out.auth_sasl_data(12, &server_final);
    Ok((kind, key))
}

fn malformed_sasl() -> Fatal {
    Fatal::new("08P01", "malformed SCRAM-SHA-256 message")
}

fn auth_failed(user: &UserId) -> Fatal {
    Fatal::new(
        "28P01",
        format!(
            "password authentication failed for user \"{}\"",
            user.as_str()
        ),
    )
}

/// Waits for the next authentication message (`p`) and returns its body.
async fn read_auth_message<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    deadline: Instant,
) -> Result<Vec<u8>, Option<Fatal>> {
    loop {
        match codec::parse_message(&conn.input, AUTH_MESSAGE_BYTES_MAX)? {
            Some(message) if message.tag == b'p' => {
                let body = message.body.to_vec();
                let used = message.used;
                conn.input.drain(..used);
                return Ok(body);
            }
            Some(_) => {
                return Err(Some(Fatal::new(
                    "08P01",
                    "expected an authentication message",
                )));
            }
            None => conn.read_before(deadline).await?,
        }
    }
}

/// AuthenticationOk, the parameters clients read, BackendKeyData and the
/// first ReadyForQuery.
fn greet(out: &mut Out) {
    out.auth_ok();
    for (name, value) in [
        ("server_version", SERVER_VERSION),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        out.parameter_status(name, value);
    }
    // Cancel requests are ignored, so the key only has to be well formed.
    out.backend_key_data(std::process::id() as i32, 0);
    out.ready(b'I');
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// Writes what is buffered; `false` when the client is gone.
    async fn flush(&mut self) -> bool {
        if self.out.bytes.is_empty() {
            return true;
        }
        let written = self.stream.write_all(&self.out.bytes).await.is_ok();
        self.out.bytes.clear();
        written
    }

    /// Reads more input between messages: `false` on close, error, idle
    /// timeout (set on the socket) or shutdown.
    async fn read_idle(&mut self) -> bool {
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK_BYTES, 0);
        let buffer = &mut self.input[start..];
        let stream = &mut self.stream;
        let drain = self.drain;
        let read =
            futures_lite::future::or(async move { Some(stream.read(buffer).await) }, async {
                drain.wait().await;
                None
            })
            .await;
        match read {
            Some(Ok(count)) if count > 0 => {
                self.input.truncate(start + count);
                true
            }
            _ => {
                self.input.truncate(start);
                false
            }
        }
    }

    /// Reads more of the startup before `deadline` (after flushing what we
    /// owe the client); a client that is too slow or leaves gets a FATAL
    /// error (if it still listens) and is closed.
    async fn read_before(&mut self, deadline: Instant) -> Result<(), Option<Fatal>> {
        if !self.flush().await {
            return Err(None);
        }
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK_BYTES, 0);
        let left = deadline.saturating_duration_since(Instant::now());
        let buffer = &mut self.input[start..];
        let stream = &mut self.stream;
        let drain = self.drain;
        // A connection still starting up does not hold shutdown back.
        let read = futures_lite::future::or(
            async move {
                let read = async move {
                    stream
                        .read(buffer)
                        .await
                        .map_err(glommio::GlommioError::from)
                };
                Some(glommio::timer::timeout(left, read).await)
            },
            async {
                drain.wait().await;
                None
            },
        )
        .await;
        let outcome = match read {
            Some(Ok(count)) if count > 0 => {
                self.input.truncate(start + count);
                return Ok(());
            }
            None => Some(Fatal::new("57P01", "the server is shutting down")),
            Some(Ok(_)) => None,
            Some(Err(glommio::GlommioError::IoError(err))) if err.kind() != ErrorKind::TimedOut => {
                None
            }
            Some(Err(_)) => Some(Fatal::new("08006", "startup not completed in time")),
        };
        self.input.truncate(start);
        Err(outcome)
    }

    /// Sends a FATAL error (if any) and closes.
    async fn fail(&mut self, fatal: Option<Fatal>) {
        if let Some(fatal) = fatal {
            self.out.error(b'E', "FATAL", fatal.code, &fatal.message);
        }
        self.close().await;
    }

    async fn close(&mut self) {
        self.flush().await;
        let _ = self.stream.close().await;
    }
}
