//! End-to-end tests of HTTPS: a certificate authority and server
//! certificates made with the `openssl` command in each test, `curl
//! --cacert` against the API and the metrics listener, the plain-HTTP
//! listener beside TLS, garbage and silence on the TLS port, SIGHUP
//! reloading the certificate while a connection stays open, a large page
//! streamed in chunks through TLS, and the
//! published Python SDK (PyPI, in src/tests/sdk/site, installed by
//! scripts/install-test-deps.sh) over HTTPS.

#[path = "support.rs"]
mod support;
#[path = "tls_support.rs"]
mod tls_support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::Value;
use support::{API_KEY, Client, Reply, Server, log_with, read_reply_from};
use tls_support::{Pki, client_config, make_pki};

fn start_tls(pki: &Pki, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ];
    args.extend(extra);
    Server::start(&args)
}

/// The address after `field=scheme://` in the start-up banner.
fn banner_addr(server: &Server, field: &str) -> SocketAddr {
    let rest = server
        .banner
        .split(field)
        .nth(1)
        .unwrap_or_else(|| panic!("no {field} in {:?}", server.banner));
    let addr = rest.split("://").nth(1).unwrap();
    addr.split(['/', ' ']).next().unwrap().parse().unwrap()
}

/// Runs curl trusting only `ca`; returns its exit code and what it printed.
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (i32, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// A TLS session to the server over loopback, trusting only `ca`.
struct TlsClient {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, ca: &Path) -> std::io::Result<TlsClient> {
        let name = ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(client_config(ca), name).unwrap();
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut stream = rustls::StreamOwned::new(connection, socket);
        // Drive the handshake now, so a refused certificate shows here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream: BufReader::new(stream),
        })
    }

    fn get(&mut self, path: &str) -> std::io::Result<Reply> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\nX-User-ID: alice\r\n\r\n"
        );
        self.stream.get_mut().write_all(request.as_bytes())?;
        self.stream.get_mut().flush()?;
        read_reply_from(&mut self.stream, false)
    }
}

#[test]
fn curl_with_the_ca_reaches_the_api_and_metrics_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "main");
    let server = start_tls(
        &pki,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--plain-addr",
            "127.0.0.1:0",
        ],
    );
    assert!(server.banner.contains("listening on https://"));
    let base = format!("https://localhost:{}", server.addr.port());
    let auth = format!("Authorization: Bearer {API_KEY}");
    let json_headers = ["-H", &auth, "-H", "X-User-ID: alice"];

    let mut create = json_headers.to_vec();
    create.extend(["-H", "Content-Type: application/json"]);
    create.extend(["-d", r#"{"title":"over tls"}"#]);
    let (code, text) = curl(&pki.ca, &format!("{base}/frontend/v1/threads"), &create);
    assert_eq!(code, 0, "{text}");
    let thread: Value = serde_json::from_str(&text).unwrap();
    let key = thread["key"].as_str().unwrap();
    assert_eq!(thread["title"], "over tls");

    // TLS 1.2 and 1.3 both serve the same answer.
    let url = format!("{base}/frontend/v1/threads/{key}");
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let mut args = json_headers.to_vec();
        args.extend(version);
        let (code, text) = curl(&pki.ca, &url, &args);
        assert_eq!(code, 0, "{version:?}: {text}");
        let read: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(read["thread"]["title"], "over tls");
    }

    // Without the CA, curl refuses the server (exit 60: peer certificate).
    let (code, _) = curl(Path::new("/dev/null"), &url, &json_headers);
    assert_ne!(code, 0);

    let metrics = banner_addr(&server, " metrics=");
    assert!(server.banner.contains(" metrics=https://"));
    let metrics_url = format!("https://localhost:{}/metrics", metrics.port());
    let (code, text) = curl(&pki.ca, &metrics_url, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("progressdb_"), "{text}");

    // The plain listener serves the same data without TLS.
    let plain = banner_addr(&server, " plain=");
    let mut client = Client::connect(plain);
    assert_eq!(
        client
            .get(&format!("/frontend/v1/threads/{key}"))
            .expect(200)["thread"]["title"],
        "over tls"
    );
    server.stop();
}

#[test]
fn a_large_page_streams_over_tls_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "main");
    let server = start_tls(&pki, &["--plain-addr", "127.0.0.1:0"]);
    let mut plain = Client::connect(banner_addr(&server, " plain="));
    let filler = "x".repeat(60_000);
    for n in 0..10 {
        let body = serde_json::json!({
            "thread": "big", "author": "alice", "body": { "n": n, "filler": filler },
        });
        plain.post("/v1/messages", &body.to_string()).expect(201);
    }
    let path = "/v1/threads/big/messages?limit=1000";
    let whole = plain.get(path);
    let mut tls = TlsClient::connect(server.addr, &pki.ca).unwrap();
    // 600 KB: sent in chunks while it is rendered, through TLS.
    let streamed = tls.get(path).unwrap();
    assert_eq!(streamed.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(streamed.status, 200);
    assert!(streamed.body == whole.body, "the same page");
    assert_eq!(streamed.json()["pagination"]["count"], 10);
    // The session serves the next request after the last chunk.
    let newest = tls.get("/v1/threads/big/messages?limit=1").unwrap();
    assert_eq!(newest.expect(200)["messages"][0]["body"]["n"], 9);
    server.stop();
}

/// Reads until the server closes the connection; true if it did (rather
/// than the read timing out on our side).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) => {
                return !matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn garbage_and_silence_on_the_tls_port_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "garbage");
    let server = start_tls(&pki, &["--tls-handshake-timeout-ms", "300"]);

    // Plain HTTP on the TLS port.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut plain));

    // A TLS record header announcing a huge handshake, then noise.
    let mut noise = TcpStream::connect(server.addr).unwrap();
    let mut bytes = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    let mut state = 0x9e37_79b9_u32;
    bytes.extend((0..64 * 1024).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    }));
    let _ = noise.write_all(&bytes);
    assert!(closed_by_server(&mut noise));

    // A client that connects and says nothing is dropped after the
    // handshake timeout, long before the idle timeout.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    assert!(closed_by_server(&mut silent));

    // A truncated ClientHello, then silence.
    let mut truncated = TcpStream::connect(server.addr).unwrap();
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00])
        .unwrap();
    assert!(closed_by_server(&mut truncated));

    let mut client = TlsClient::connect(server.addr, &pki.ca).unwrap();
    assert_eq!(client.get("/healthz").unwrap().status, 200);
    server.stop();
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_pki(dir.path(), "first");
    let second = make_pki(dir.path(), "second");
    let served = Pki {
        ca: first.ca.clone(),
        cert: dir.path().join("served.pem"),
        key: dir.path().join("served.key"),
    };
    std::fs::copy(&first.cert, &served.cert).unwrap();
    std::fs::copy(&first.key, &served.key).unwrap();
    let server = start_tls(&served, &[]);

    let mut open = TlsClient::connect(server.addr, &first.ca).unwrap();
    assert_eq!(open.get("/healthz").unwrap().status, 200);
    assert!(TlsClient::connect(server.addr, &second.ca).is_err());

    std::fs::copy(&second.cert, &served.cert).unwrap();
    std::fs::copy(&second.key, &served.key).unwrap();
    sighup(&server);
    // The reload happens on the server's signal thread: wait for its line.
    let log = log_with(&server.log, "reloaded the TLS certificate");
    assert!(log.contains("reloaded the TLS certificate"), "{log}");

    let mut fresh = TlsClient::connect(server.addr, &second.ca).unwrap();
    assert_eq!(fresh.get("/healthz").unwrap().status, 200);
    assert!(TlsClient::connect(server.addr, &first.ca).is_err());
    // The connection made before the reload still works.
    assert_eq!(open.get("/healthz").unwrap().status, 200);
    let (code, text) = curl(
        &second.ca,
        &format!("https://localhost:{}/healthz", server.addr.port()),
        &[],
    );
    assert_eq!(code, 0, "{text}");

    // A key that does not match is refused; the loaded pair stays.
    std::fs::copy(&first.key, &served.key).unwrap();
    sighup(&server);
    let log = log_with(&server.log, "the new one did not load");
    assert!(log.contains("does not match"), "{log}");
    let mut after = TlsClient::connect(server.addr, &second.ca).unwrap();
    assert_eq!(after.get("/healthz").unwrap().status, 200);
    server.stop();
}

fn sighup(server: &Server) {
    // SAFETY: kill(2) on the child process this test started.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
}

#[test]
fn start_up_refuses_a_key_that_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_pki(dir.path(), "one");
    let second = make_pki(dir.path(), "two");
    let output = Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .arg("--db")
        .arg(dir.path().join("db"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&first.cert)
        .arg("--tls-key")
        .arg(&second.key)
        .output()
        .expect("run progressdb");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
}

#[test]
fn the_python_sdk_works_over_https_with_the_ca() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests/sdk");
    assert!(
        sdk.join("site/progressdb").is_dir(),
        "the Python SDK in src/tests/sdk/site: run scripts/install-test-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "sdk");
    let server = start_tls(&pki, &[]);
    let base = format!("https://localhost:{}", server.addr.port());
    let run = |ca: &Path| {
        Command::new("python3")
            .arg(sdk.join("https_client.py"))
            .args([base.as_str(), API_KEY])
            .env("PYTHONPATH", sdk.join("site"))
            .env("REQUESTS_CA_BUNDLE", ca)
            .output()
            .expect("run python3")
    };
    let output = run(&pki.ca);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(read["health"]["status"], "ok");
    assert_eq!(read["texts"], serde_json::json!(["hello over https"]));
    // Trusting only another CA, the SDK refuses the server.
    let other = make_pki(dir.path(), "other");
    assert!(!run(&other.ca).status.success());
    server.stop();
}
