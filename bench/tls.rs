//! What TLS costs: requests/s of the same requests over plain HTTP and
//! over HTTPS, to one server in the same run (its `--addr` speaks TLS,
//! its `--plain-addr` plain HTTP), and new TLS connections per second.
//!
//! The server (release build of `progressdb`, 1 shard) and the clients
//! share the machine; each client is a thread with one keep-alive
//! connection sending one request at a time (rustls on the client side
//! too, so the TLS rows also pay the client's crypto). Certificates are
//! made with the `openssl` command. Cells: `GET /healthz` (the cheapest
//! route, so the largest relative cost) and the newest-20 page of a
//! 200-message thread.
//! Run: `cargo bench --bench tls`

#[path = "machine.rs"]
mod machine;
#[path = "../src/tests/tls_support.rs"]
mod tls_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

/// Each cell runs for about this long.
const CELL_TIME: Duration = Duration::from_secs(4);
const CLIENTS: usize = 8;
const KEY: &str = "bench-key-0123456789";

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make_pki(dir.path(), "server");
    let db = dir.path().join("db");
    let mut server = Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args([
            "--shards",
            "1",
            "--addr",
            "127.0.0.1:0",
            "--plain-addr",
            "127.0.0.1:0",
        ])
        .args(["--api-key", KEY, "--log-level", "error", "--db"])
        .arg(&db)
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start progressdb");
    let banner = BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|line| line.contains("listening on"))
        .expect("banner");
    let address = |field: &str| -> SocketAddr {
        let rest = banner.split(field).nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (tls_addr, plain_addr) = (address("listening on https://"), address("plain=http://"));
    let tls = tls_support::client_config(&pki.ca);
    let thread = seed_thread(plain_addr);
    println!(
        "TLS cost, {} ({CLIENTS} closed-loop clients)",
        machine::describe()
    );
    println!("| request | plain req/s | TLS req/s | TLS / plain |");
    println!("|---|---|---|---|");
    let page = format!("/frontend/v1/threads/{thread}/messages?limit=20");
    for (name, path) in [
        ("GET /healthz", "/healthz"),
        ("GET newest-20 page", page.as_str()),
    ] {
        let plain = run(plain_addr, path, None);
        let secure = run(tls_addr, path, Some(&tls));
        println!(
            "| {name} | {plain:.0} | {secure:.0} | {:.2} |",
            secure / plain
        );
    }
    println!(
        "new TLS connections/s (handshake + one GET /healthz): {:.0}",
        handshakes(tls_addr, &tls)
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A connection, over TLS when `tls` is given.
fn connect(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn ReadWrite> {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_nodelay(true).unwrap();
    match tls {
        None => Box::new(socket),
        Some(config) => {
            let name = ServerName::try_from("localhost").unwrap();
            let connection = rustls::ClientConnection::new(config.clone(), name).unwrap();
            Box::new(rustls::StreamOwned::new(connection, socket))
        }
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\nX-User-ID: bench\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` and reads one Content-Length framed answer.
fn exchange(stream: &mut BufReader<Box<dyn ReadWrite>>, request: &[u8]) {
    stream.get_mut().write_all(request).unwrap();
    stream.get_mut().flush().unwrap();
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
}

/// Requests/s of `CLIENTS` keep-alive connections for `CELL_TIME`.
fn run(addr: SocketAddr, path: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> f64 {
    let request = request(path);
    closed_loop(|| {
        let mut stream = BufReader::new(connect(addr, tls));
        let request = request.clone();
        move || exchange(&mut stream, &request)
    })
}

/// New connections/s, each a full TLS handshake and one request.
fn handshakes(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> f64 {
    let request = request("/healthz");
    closed_loop(|| {
        let (request, tls) = (request.clone(), tls.clone());
        move || exchange(&mut BufReader::new(connect(addr, Some(&tls))), &request)
    })
}

/// Runs `CLIENTS` threads, each repeating the step `client()` made for
/// it, for `CELL_TIME`; returns steps per second.
fn closed_loop<S: FnMut() + Send + 'static>(mut client: impl FnMut() -> S) -> f64 {
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut step = client();
            std::thread::spawn(move || {
                let mut done = 0u64;
                while started.elapsed() < CELL_TIME {
                    step();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let done: u64 = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    done as f64 / started.elapsed().as_secs_f64()
}

/// A 200-message thread to page through; returns its id.
fn seed_thread(addr: SocketAddr) -> String {
    let mut stream = BufReader::new(connect(addr, None));
    for n in 0..200 {
        let body = format!(
            r#"{{"thread":"bench-tls","author":"bench","body":{{"text":"message {n} of the TLS benchmark"}}}}"#
        );
        let request = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(&mut stream, request.as_bytes());
    }
    "bench-tls".into()
}
