//! End-to-end tests of the PostgreSQL listener (`--pg-addr`) on the real
//! binary: Debian's `psql` running a scripted session, psycopg (PyPI) with
//! server-side prepared statements, pgjdbc (Debian's JDBC driver) with
//! named prepared statements, access isolation compared with HTTP, and
//! hostile clients speaking raw bytes. The clients come from
//! `scripts/install-test-deps.sh`; without them the tests fail saying so.

#[path = "support.rs"]
mod support;
#[path = "tls_support.rs"]
#[allow(dead_code, reason = "only the certificates are used here")]
mod tls_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use progressdb::pg::{codec, scram};
use support::{API_KEY, Server};

const ADMIN_KEY: &str = "admin-key-0123456789";
const FRONTEND_KEY: &str = "pk_frontend-0123456789";
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Where Debian's libpostgresql-jdbc-java puts the driver.
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// A server with the PostgreSQL listener on, and its port. The startup
/// timeout is the default request timeout (10 s): the unterminated-startup
/// case waits for it, and every login must never come near it, even on a
/// loaded machine.
fn start() -> (Server, u16) {
    let server = Server::start(&[
        "--pg-addr",
        "127.0.0.1:0",
        "--admin-key",
        ADMIN_KEY,
        "--frontend-key",
        FRONTEND_KEY,
    ]);
    let port = pg_port(&server);
    (server, port)
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests/pg")
}

/// Fails (never skips) when a client is missing, naming the fix.
fn require(tool: &str, present: bool) {
    assert!(
        present,
        "the SQL tests need {tool}: run scripts/install-test-deps.sh"
    );
}

#[test]
fn psql_runs_a_scripted_session() {
    require(
        "psql (postgresql-client)",
        Command::new("psql").arg("--version").output().is_ok(),
    );
    let (_server, port) = start();
    let output = Command::new("psql")
        .args(["-X", "-A", "-h", "127.0.0.1", "-U", "dave", "-d", "chat"])
        .args(["-p", &port.to_string()])
        .arg("-f")
        .arg(tests_dir().join("session.sql"))
        .env("PGPASSWORD", API_KEY)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql failed: {stderr}\n{stdout}");
    let expected = "\
key|title|author
psql-t|psql thread|dave
(1 row)
INSERT 0 1
INSERT 0 1
INSERT 0 1
INSERT 0 1
newest page
body|version
{\"text\":\"three\"}|1
{\"text\":\"two\"}|1
(2 rows)
older page
body
{\"text\":\"two\"}
{\"text\":\"one\"}
(2 rows)
body|version
{\"text\":\"one, edited\"}|2
(1 row)
UPDATE 1
DELETE 1
after the delete
body|deleted
{\"text\":\"three\"}|f
{\"text\":\"one, edited\"}|f
(2 rows)
oldest page
body
{\"text\":\"one, edited\"}
(1 row)
SET
progressdb.include_deleted
on
(1 row)
body|deleted
{\"text\":\"three\"}|f
{\"text\":\"two\"}|t
{\"text\":\"one, edited\"}|f
(3 rows)
SET
still usable
title|author
psql thread|dave
(1 row)
current_user
dave
(1 row)
title
renamed
(1 row)
UPDATE 1
DELETE 1
after deleting the thread
title
(0 rows)
body
(0 rows)
describe
List of relations
Schema|Name|Type|Owner
public|messages|table|progressdb
public|threads|table|progressdb
(2 rows)
Table \"public.messages\"
Column|Type|Collation|Nullable|Default
key|text||not null|
thread|text|||
author|text|||
created_ts|bigint|||
updated_ts|bigint|||
body|jsonb|||
version|integer|||
reply_to|text|||
deleted|boolean|||
";
    assert_eq!(stdout, expected, "stderr: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.split("ERROR:  ").nth(1))
        .collect();
    assert_eq!(
        errors,
        [
            "42P01: relation \"nowhere\" does not exist",
            "0A000: DROP statements are not supported (see README, SQL access)",
            "22P02: `limit` must be an integer from 1 to 1000 (invalid_limit)",
        ],
        "stderr: {stderr}"
    );
}

#[test]
fn psycopg_uses_prepared_statements_and_returning() {
    let site = tests_dir().join("site");
    require(
        "psycopg in src/tests/pg/site",
        site.join("psycopg").is_dir(),
    );
    require(
        "python3",
        Command::new("python3").arg("--version").output().is_ok(),
    );
    let (_server, port) = start();
    support::run_python_client(
        &tests_dir().join("client.py"),
        &site,
        &[port.to_string(), API_KEY.to_string()],
        &[("PGCONNECT_TIMEOUT", "20")],
    );
}

#[test]
fn jdbc_uses_named_prepared_statements_and_keeps_the_connection_after_errors() {
    let jar = Path::new(JDBC_JAR);
    require("pgjdbc (libpostgresql-jdbc-java)", jar.is_file());
    require(
        "javac (default-jdk-headless)",
        Command::new("javac").arg("-version").output().is_ok(),
    );
    let classes = tempfile::tempdir().expect("temp dir");
    let compiled = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg(tests_dir().join("JdbcSession.java"))
        .output()
        .expect("run javac");
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let (_server, port) = start();
    let classpath = format!("{}:{}", jar.display(), classes.path().display());
    let mut java = Command::new("java");
    java.args(["-cp", &classpath, "JdbcSession", &port.to_string(), API_KEY]);
    support::run_client(java, "the JDBC session");
}

/// One backend message: its type and body.
type Message = (u8, Vec<u8>);

/// A deliberately small PostgreSQL client for cases real clients will not
/// produce.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Raw { stream }
    }

    /// Connects and authenticates; panics unless the server is ready.
    fn login(port: u16, user: &str, password: &str) -> Raw {
        let mut raw = Raw::connect(port);
        let answer = raw.startup(user, password);
        assert_eq!(answer.last().map(|m| m.0), Some(b'Z'), "{answer:?}");
        raw
    }

    /// StartupMessage, then the SCRAM-SHA-256 exchange when asked; the
    /// answer up to ReadyForQuery or an error.
    fn startup(&mut self, user: &str, password: &str) -> Vec<Message> {
        self.send(&codec::startup_packet(&[
            ("user", user),
            ("database", "chat"),
        ]));
        match self.read() {
            Some((b'R', auth)) if auth.starts_with(&10i32.to_be_bytes()) => {}
            other => return other.into_iter().collect(),
        }
        let client_first_bare = "n=,r=raw-test-nonce";
        let mut initial = b"SCRAM-SHA-256\0".to_vec();
        let client_first = format!("n,,{client_first_bare}");
        initial.extend_from_slice(&(client_first.len() as i32).to_be_bytes());
        initial.extend_from_slice(client_first.as_bytes());
        self.send(&message(b'p', &initial));
        let server_first = match self.read() {
            Some((b'R', data)) if data.starts_with(&11i32.to_be_bytes()) => {
                String::from_utf8(data[4..].to_vec()).unwrap()
            }
            other => return other.into_iter().collect(),
        };
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|field| field.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        let salt = scram::base64_decode(&field("s=")).unwrap();
        let salted =
            scram::salted_password(password.as_bytes(), &salt, field("i=").parse().unwrap());
        let client_key = scram::hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={}", field("r="));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = scram::hmac(&scram::sha256(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let client_final = format!("{without_proof},p={}", scram::base64_encode(&proof));
        self.send(&message(b'p', client_final.as_bytes()));
        self.read_until_ready()
    }

    /// SSLRequest, answered `N` (no TLS here).
    fn ssl_request_refused(&mut self) {
        let mut ssl = 8i32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&codec::SSL_REQUEST.to_be_bytes());
        self.send(&ssl);
        let mut answer = [0u8; 1];
        self.stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"N");
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next message; `None` once the server has closed.
    fn read(&mut self) -> Option<Message> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).ok()?;
        let length = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; length - 4];
        self.stream.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Messages up to ReadyForQuery, or up to an error the server closes
    /// after.
    fn read_until_ready(&mut self) -> Vec<Message> {
        let mut all = Vec::new();
        while let Some(message) = self.read() {
            let done = message.0 == b'Z';
            all.push(message);
            if done {
                break;
            }
        }
        all
    }

    fn query(&mut self, sql: &str) -> Vec<Message> {
        let mut text = sql.as_bytes().to_vec();
        text.push(0);
        self.send(&message(b'Q', &text));
        self.read_until_ready()
    }

    /// Whether the server closed the connection (reads end, no data).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok()
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The SQLSTATE of the first ErrorResponse among `messages`.
fn sqlstate(messages: &[Message]) -> Option<String> {
    let (_, body) = messages.iter().find(|(tag, _)| *tag == b'E')?;
    body.split(|&byte| byte == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
}

/// The text cells of every DataRow among `messages`.
fn rows(messages: &[Message]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| {
            let count = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            (0..count)
                .map(|_| {
                    let length = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    let length = usize::try_from(length).ok()?;
                    at += length;
                    Some(String::from_utf8_lossy(&body[at - length..at]).into_owned())
                })
                .collect()
        })
        .collect()
}

/// The CommandComplete tags among `messages`.
fn tags(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'C')
        .map(|(_, body)| String::from_utf8_lossy(&body[..body.len() - 1]).into_owned())
        .collect()
}

#[test]
fn startup_answers_ssl_and_authenticates_with_api_keys() {
    let (_server, port) = start();
    let mut raw = Raw::connect(port);
    raw.ssl_request_refused();
    let ready = raw.startup("alice", API_KEY);
    let statuses: Vec<String> = ready
        .iter()
        .filter(|(tag, _)| *tag == b'S')
        .map(|(_, body)| String::from_utf8_lossy(body).replace('\0', "="))
        .collect();
    for expected in [
        "server_version=16.0=",
        "client_encoding=UTF8=",
        "DateStyle=ISO, MDY=",
        "integer_datetimes=on=",
        "standard_conforming_strings=on=",
    ] {
        assert!(statuses.iter().any(|s| s == expected), "{statuses:?}");
    }
    assert!(ready.iter().any(|(tag, _)| *tag == b'K'), "BackendKeyData");
    assert_eq!(ready.last(), Some(&(b'Z', b"I".to_vec())));

    for (user, password, code) in [
        ("alice", "wrong-key-0123456789", "28P01"),
        // A frontend key needs a per-user signature a password cannot carry.
        ("alice", FRONTEND_KEY, "28P01"),
        ("", API_KEY, "28000"),
    ] {
        let mut raw = Raw::connect(port);
        let answer = raw.startup(user, password);
        assert_eq!(
            sqlstate(&answer).as_deref(),
            Some(code),
            "{user:?} {password:?}"
        );
        assert!(raw.closed(), "closed after {code}");
    }
}

#[test]
fn another_users_thread_is_invisible_over_sql_as_over_http() {
    let (server, port) = start();
    let mut alice = Raw::login(port, "alice", API_KEY);
    alice.query("INSERT INTO threads (title, key) VALUES ('private', 'alice-t')");
    let posted = alice.query(
        "INSERT INTO messages (thread, body) VALUES ('alice-t', '{\"secret\":1}') RETURNING key",
    );
    let key = rows(&posted)[0][0].clone().expect("key");

    let mut bob = Raw::login(port, "bob", API_KEY);
    let reads = [
        "SELECT * FROM messages WHERE thread = 'alice-t' ORDER BY created_ts DESC LIMIT 10"
            .to_owned(),
        format!("SELECT * FROM messages WHERE thread = 'alice-t' AND key = '{key}'"),
        "SELECT * FROM threads WHERE key = 'alice-t'".to_owned(),
        "SELECT * FROM threads ORDER BY created_ts DESC LIMIT 10".to_owned(),
    ];
    for sql in &reads {
        let answer = bob.query(sql);
        assert_eq!(sqlstate(&answer), None, "{sql}");
        assert!(rows(&answer).is_empty(), "bob sees rows of {sql}");
    }
    let edit = format!("UPDATE messages SET body = '1' WHERE thread = 'alice-t' AND key = '{key}'");
    assert_eq!(tags(&bob.query(&edit)), ["UPDATE 0"]);
    let delete = format!("DELETE FROM messages WHERE thread = 'alice-t' AND key = '{key}'");
    assert_eq!(tags(&bob.query(&delete)), ["DELETE 0"]);
    assert_eq!(
        tags(&bob.query("DELETE FROM threads WHERE key = 'alice-t'")),
        ["DELETE 0"]
    );
    let post = bob.query("INSERT INTO messages (thread, body) VALUES ('alice-t', '2')");
    assert_eq!(sqlstate(&post).as_deref(), Some("23503"));

    // The same over HTTP: 404 for bob, the message untouched for alice.
    let mut http = server.client().acting_for("bob");
    http.get("/frontend/v1/threads/alice-t")
        .expect_error(404, "thread_not_found");
    let mut http = server.client().acting_for("alice");
    let message = http
        .get(&format!("/frontend/v1/threads/alice-t/messages/{key}"))
        .expect(200);
    assert_eq!(message["message"]["body"], serde_json::json!({"secret": 1}));
    assert_eq!(message["message"]["version"], 1);

    // The admin key reads any thread and writes none.
    let mut admin = Raw::login(port, "ops", ADMIN_KEY);
    let page = admin.query(
        "SELECT key FROM messages WHERE thread = 'alice-t' ORDER BY created_ts DESC LIMIT 5",
    );
    assert_eq!(rows(&page), [[Some(key.clone())]]);
    let thread = admin.query("SELECT author FROM threads WHERE key = 'alice-t'");
    assert_eq!(rows(&thread), [[Some("alice".to_owned())]]);
    let write = admin.query("INSERT INTO messages (thread, body) VALUES ('alice-t', '3')");
    assert_eq!(sqlstate(&write).as_deref(), Some("42501"));
    // It lists every user's threads, in key order, a page at a time.
    bob.query("INSERT INTO threads (title, key) VALUES ('bob', 'bob-t')");
    let first = admin.query("SELECT key, author FROM threads LIMIT 1");
    let next = admin.query("SELECT key, author FROM threads WHERE key > 'alice-t' LIMIT 5");
    let cell = |text: &str| Some(text.to_owned());
    assert_eq!(rows(&first), [[cell("alice-t"), cell("alice")]]);
    assert_eq!(rows(&next), [[cell("bob-t"), cell("bob")]]);
}

/// Sends `bytes` on a fresh connection (after logging in when `login`)
/// and returns what the server answered before closing.
fn answer_then_close(port: u16, login: bool, bytes: &[u8]) -> Vec<Message> {
    let mut raw = if login {
        Raw::login(port, "mallory", API_KEY)
    } else {
        Raw::connect(port)
    };
    raw.send(bytes);
    // Far beyond the server's own startup and idle timeouts, so it is
    // always the server that ends the connection.
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let mut answer = Vec::new();
    while let Some(message) = raw.read() {
        answer.push(message);
    }
    answer
}

#[test]
fn hostile_framing_is_refused_and_closes_only_that_connection() {
    let (server, port) = start();
    // Opened first and used last: it must be unaffected by everything below.
    let mut bystander = Raw::login(port, "alice", API_KEY);

    let negative_length = (-8i32).to_be_bytes();
    assert_eq!(
        sqlstate(&answer_then_close(port, false, &negative_length)).as_deref(),
        Some("08P01")
    );
    let mut wrong_protocol = 8i32.to_be_bytes().to_vec();
    wrong_protocol.extend_from_slice(&0x0002_0000i32.to_be_bytes());
    assert_eq!(
        sqlstate(&answer_then_close(port, false, &wrong_protocol)).as_deref(),
        Some("0A000")
    );
    // A startup packet that never ends: cut off at the startup timeout.
    let mut unterminated = 100i32.to_be_bytes().to_vec();
    unterminated.extend_from_slice(&196_608i32.to_be_bytes());
    unterminated.extend_from_slice(b"user\0ali");
    assert_eq!(
        sqlstate(&answer_then_close(port, false, &unterminated)).as_deref(),
        Some("08006")
    );
    // A query claiming 100 MB: refused from its header, connection closed.
    let mut oversized = vec![b'Q'];
    oversized.extend_from_slice(&100_000_000i32.to_be_bytes());
    oversized.extend_from_slice(b"SELECT");
    assert_eq!(
        sqlstate(&answer_then_close(port, true, &oversized)).as_deref(),
        Some("54000")
    );
    // Fields running past their message, an unknown type, a bad length.
    for (bytes, code) in [
        (message(b'B', b"\0\0\0\x05"), "08P01"),
        (message(b'P', b"name-without-end"), "08P01"),
        (message(b'Q', b"no terminator"), "08P01"),
        (message(b'D', b"X\0"), "08P01"),
        (message(b'!', b""), "08P01"),
        (vec![b'Q', 0, 0, 0, 2], "08P01"),
    ] {
        let answer = answer_then_close(port, true, &bytes);
        assert_eq!(sqlstate(&answer).as_deref(), Some(code), "{bytes:?}");
    }

    let page = bystander.query("SELECT current_user");
    assert_eq!(rows(&page), [[Some("alice".to_owned())]]);
    server.stop();
}

#[test]
fn errors_keep_connections_usable_and_a_deaf_client_blocks_nobody() {
    let (server, port) = start();
    let mut bystander = Raw::login(port, "alice", API_KEY);
    // Statement errors leave the connection usable, extended protocol too:
    // after an error everything up to Sync is skipped.
    let mut raw = Raw::login(port, "mallory", API_KEY);
    let mut batch = message(b'P', b"\0SELECT * FROM nope\0\0\0");
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    raw.send(&batch);
    let answer = raw.read_until_ready();
    assert_eq!(sqlstate(&answer).as_deref(), Some("42P01"));
    assert_eq!(answer.iter().filter(|(tag, _)| *tag == b'E').count(), 1);
    assert_eq!(rows(&raw.query("SELECT 1")), [[Some("1".to_owned())]]);
    // A function call gets an error and ReadyForQuery; stray COPY messages
    // are ignored.
    raw.send(&message(b'd', b"stray"));
    raw.send(&message(b'F', b"\0\0\0\x01\0\0\0\0\0\0"));
    assert_eq!(sqlstate(&raw.read_until_ready()).as_deref(), Some("0A000"));
    // Several statements in one query run in order; the first error drops
    // the rest, and one ReadyForQuery ends the whole string.
    let answer = raw.query("SELECT 1; SELECT current_user; SELECT * FROM nope; SELECT 1");
    assert_eq!(
        rows(&answer),
        [[Some("1".to_owned())], [Some("mallory".to_owned())]]
    );
    assert_eq!(sqlstate(&answer).as_deref(), Some("42P01"));
    assert_eq!(answer.iter().filter(|(tag, _)| *tag == b'Z').count(), 1);

    // A client that sends and never reads: its answers pile up until its
    // socket is full and the server stops reading it; nobody else waits.
    let mut deaf = Raw::login(port, "mallory", API_KEY);
    deaf.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let query = message(b'Q', b"SELECT version()\0").repeat(1000);
    for _ in 0..1000 {
        match deaf.stream.write(&query) {
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(err) => panic!("unexpected write error: {err}"),
        }
    }
    let page = bystander.query("SELECT current_user");
    assert_eq!(rows(&page), [[Some("alice".to_owned())]]);
    let fresh = Raw::login(port, "alice", API_KEY).query("SELECT 1");
    assert_eq!(rows(&fresh), [[Some("1".to_owned())]]);
    drop(deaf);
    server.stop();
}

/// The port of the `pg=` address in a start-up banner.
fn pg_port(server: &Server) -> u16 {
    server
        .banner
        .split(" pg=postgresql://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no pg= address in the banner: {}", server.banner))
}

#[test]
fn with_tls_on_psql_connects_over_tls_only() {
    require(
        "psql (postgresql-client)",
        Command::new("psql").arg("--version").output().is_ok(),
    );
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make_pki(pki_dir.path(), "pg");
    let server = Server::start(&[
        "--pg-addr",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
    let port = pg_port(&server);
    let psql = |sslmode: &str, sql: &str| {
        let conninfo = format!(
            "host=127.0.0.1 port={port} user=tess dbname=chat sslmode={sslmode} sslrootcert={}",
            pki.ca.display()
        );
        Command::new("psql")
            .args(["-X", "-A", "-t", &conninfo, "-c", sql])
            .env("PGPASSWORD", API_KEY)
            .env("PGCONNECT_TIMEOUT", "20")
            .output()
            .expect("run psql")
    };
    // verify-full checks the certificate chain and the name (127.0.0.1).
    let inside = psql("verify-full", "\\conninfo");
    let text = String::from_utf8_lossy(&inside.stdout);
    assert!(
        inside.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    assert!(text.contains("SSL connection (protocol: TLSv1."), "{text}");
    let user = psql("verify-full", "SELECT current_user");
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "tess");
    // Without TLS the startup is refused, saying how to connect.
    let plain = psql("disable", "SELECT 1");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "{stderr}");
    assert!(stderr.contains("over TLS only"), "{stderr}");
    // Bytes after the SSLRequest would be read as if they came over TLS.
    let mut raw = Raw::connect(port);
    let mut smuggled = vec![0, 0, 0, 8];
    smuggled.extend_from_slice(&80_877_103i32.to_be_bytes());
    smuggled.extend(message(b'Q', b"SELECT 1\0"));
    raw.send(&smuggled);
    let mut answer = Vec::new();
    let _ = raw.stream.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).contains("unexpected data after SSLRequest"),
        "{answer:?}"
    );
}

/// Execute of `portal` with a row limit; Sync'd so its answer ends in
/// ReadyForQuery.
fn execute_limited(raw: &mut Raw, portal: &str, max_rows: i32) -> Vec<Message> {
    let mut body = portal.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&max_rows.to_be_bytes());
    let mut batch = message(b'E', &body);
    batch.extend(message(b'S', b""));
    raw.send(&batch);
    raw.read_until_ready()
}

/// Parse + Bind of `sql` (no parameters) into the portal `portal`.
fn bind_portal(raw: &mut Raw, portal: &str, sql: &str) {
    let mut batch = message(b'P', format!("\0{sql}\0\0\0").as_bytes());
    batch.extend(message(
        b'B',
        format!("{portal}\0\0\0\0\0\0\0\0").as_bytes(),
    ));
    raw.send(&batch);
}

#[test]
fn execute_row_limits_suspend_the_portal_and_never_rerun_it() {
    let (_server, port) = start();
    let mut raw = Raw::login(port, "rita", API_KEY);
    raw.query("INSERT INTO threads (title, key) VALUES ('limits', 'rl')");
    for n in 0..5 {
        raw.query(&format!(
            "INSERT INTO messages (thread, body) VALUES ('rl', '{n}')"
        ));
    }
    bind_portal(
        &mut raw,
        "page",
        "SELECT body FROM messages WHERE thread = 'rl' ORDER BY created_ts LIMIT 5",
    );
    let suspended = |answer: &[Message]| answer.iter().filter(|(tag, _)| *tag == b's').count();
    let body_rows = |answer: &[Message]| -> Vec<String> {
        rows(answer)
            .into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    };
    let first = execute_limited(&mut raw, "page", 2);
    assert_eq!(
        (body_rows(&first), suspended(&first)),
        (vec!["0".into(), "1".into()], 1)
    );
    assert!(tags(&first).is_empty(), "{first:?}");
    let second = execute_limited(&mut raw, "page", 2);
    assert_eq!(
        (body_rows(&second), suspended(&second)),
        (vec!["2".into(), "3".into()], 1)
    );
    let last = execute_limited(&mut raw, "page", 2);
    assert_eq!(
        (body_rows(&last), tags(&last)),
        (vec!["4".into()], vec!["SELECT 1".into()])
    );
    let after = execute_limited(&mut raw, "page", 2);
    assert_eq!(
        (rows(&after).len(), tags(&after)),
        (0, vec!["SELECT 0".into()])
    );

    // A write's portal executed twice writes once.
    bind_portal(
        &mut raw,
        "post",
        "INSERT INTO messages (thread, body) VALUES ('rl', '5') RETURNING body",
    );
    let posted = execute_limited(&mut raw, "post", 0);
    assert_eq!(body_rows(&posted), ["5"]);
    let again = execute_limited(&mut raw, "post", 0);
    assert_eq!((rows(&again).len(), tags(&again)), (0, tags(&posted)));
    let all =
        raw.query("SELECT body FROM messages WHERE thread = 'rl' ORDER BY created_ts LIMIT 10");
    assert_eq!(rows(&all).len(), 6);
}

/// A well-formed extended-protocol exchange and a simple query: the seeds
/// the mutation test below corrupts.
fn seed_messages() -> Vec<u8> {
    let mut bytes = message(
        b'P',
        b"s1\0SELECT key FROM messages WHERE thread = $1 ORDER BY created_ts DESC LIMIT $2\0\0\x02\0\0\0\x19\0\0\0\x14",
    );
    bytes.extend(message(
        b'B',
        b"p1\0s1\0\0\x01\0\x01\0\x02\0\0\0\x01t\0\0\0\x08\0\0\0\0\0\0\0\x05\0\x01\0\x01",
    ));
    bytes.extend(message(b'D', b"Pp1\0"));
    bytes.extend(message(b'E', b"p1\0\0\0\0\0"));
    bytes.extend(message(b'C', b"Ss1\0"));
    bytes.extend(message(b'S', b""));
    bytes.extend(message(
        b'Q',
        b"INSERT INTO threads (title, key) VALUES ('fuzz', 't') RETURNING *\0",
    ));
    bytes
}

/// Logs in, sends `bytes`, half-closes (so a message cut short is an end
/// of input rather than a wait for more) and reads every message until the
/// server closes.
fn send_and_half_close(port: u16, bytes: &[u8]) -> std::io::Result<Vec<Message>> {
    let mut raw = Raw::login(port, "mallory", API_KEY);
    raw.send(bytes);
    // The server may already have refused the bytes and reset the
    // connection; the read below says so.
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    raw.stream.read_to_end(&mut rest)?;
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 5 <= rest.len() {
        let length = i32::from_be_bytes(rest[at + 1..at + 5].try_into().unwrap()) as usize;
        let end = (at + 1 + length).min(rest.len());
        messages.push((rest[at], rest[at + 5..end].to_vec()));
        at = end;
    }
    Ok(messages)
}

#[test]
fn mutated_messages_never_take_the_server_down() {
    let (server, port) = start();
    let seed = 0x5eed_u64;
    let mut rng = progressdb::rng::XorShift::new(seed);
    let valid = seed_messages();
    let answer = send_and_half_close(port, &valid).expect("answered");
    assert_eq!(tags(&answer)[..2], ["SELECT 0", "INSERT 0 1"], "{answer:?}");
    for case in 0..60 {
        let mut bytes = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next_u64() as u8,
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        // Answered or cut off (a reset), but always ended by the server,
        // never left waiting until the client's read timeout.
        if let Err(err) = send_and_half_close(port, &bytes) {
            assert!(
                !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "seed {seed:#x} case {case}: {err}"
            );
        }
    }
    let mut after = Raw::login(port, "alice", API_KEY);
    assert_eq!(rows(&after.query("SELECT 1")), [[Some("1".to_owned())]]);
    server.stop();
}

/// A Parse of statement `name` followed by Sync.
fn parse_and_sync(name: &str, sql: &str) -> Vec<u8> {
    let mut body = format!("{name}\0{sql}\0").into_bytes();
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut bytes = message(b'P', &body);
    bytes.extend(message(b'S', b""));
    bytes
}

#[test]
fn prepared_statements_are_bounded_per_connection() {
    let (_server, port) = start();
    let mut raw = Raw::login(port, "mallory", API_KEY);
    let refused = (0..300).find_map(|index| {
        raw.send(&parse_and_sync(&format!("s{index}"), "SELECT 1"));
        sqlstate(&raw.read_until_ready()).map(|code| (index, code))
    });
    assert_eq!(refused, Some((256, "54000".to_owned())));

    // Bytes held are bounded too: large statements run out before 256.
    let mut raw = Raw::login(port, "mallory", API_KEY);
    let body = format!("'\"{}\"'", "x".repeat(600 * 1024));
    let sql = format!("INSERT INTO messages (thread, body) VALUES ('t', {body})");
    let refused = (0..20).find_map(|index| {
        raw.send(&parse_and_sync(&format!("big{index}"), &sql));
        sqlstate(&raw.read_until_ready()).map(|code| (index, code))
    });
    assert!(
        matches!(&refused, Some((index, code)) if *index < 10 && code == "54000"),
        "{refused:?}"
    );
    // Closing one makes room again, and the connection still works.
    let mut close = message(b'C', b"Sbig0\0");
    close.extend(message(b'S', b""));
    raw.send(&close);
    assert_eq!(sqlstate(&raw.read_until_ready()), None);
    raw.send(&parse_and_sync("big-again", &sql));
    assert_eq!(sqlstate(&raw.read_until_ready()), None);
    assert_eq!(rows(&raw.query("SELECT 1")), [[Some("1".to_owned())]]);
}

#[test]
fn shutdown_closes_starting_and_idle_connections() {
    let (server, port) = start();
    let mut starting = Raw::connect(port);
    // The `N` proves a shard accepted it and is in its startup.
    starting.ssl_request_refused();
    starting.send(&codec::startup_packet(&[("user", "alice")])[..10]);
    let mut idle = Raw::login(port, "alice", API_KEY);
    assert_eq!(rows(&idle.query("SELECT 1")), [[Some("1".to_owned())]]);
    server.stop();
    let mut answer = Vec::new();
    while let Some(message) = starting.read() {
        answer.push(message);
    }
    assert_eq!(sqlstate(&answer).as_deref(), Some("57P01"), "{answer:?}");
    assert_eq!(idle.read(), None, "the idle connection is closed");
}
