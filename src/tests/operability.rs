//! End-to-end tests of operating the server: Prometheus metrics on the
//! main port and the metrics listener, structured and access logs, the
//! start-up banner, and graceful shutdown with requests in flight.

#[path = "support.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{API_KEY, Client, Server};

const ADMIN_KEY: &str = "admin-key-0123456789";

/// The value of the one series named exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every series of metric `name` whose labels contain all of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| {
            let (_, value) = line.rsplit_once(' ').expect("series value");
            value.parse::<u64>().expect("integer value")
        })
        .sum()
}

fn metrics_addr(banner: &str) -> SocketAddr {
    let rest = banner
        .split(" metrics=http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics address in {banner:?}"));
    rest.split('/').next().unwrap().parse().unwrap()
}

/// The exposition and the shard that accepted the scrape, if it says.
fn scrape(client: &mut Client) -> (String, Option<usize>) {
    let reply = client.get("/metrics");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let shard = reply
        .header("x-progressdb-shard")
        .map(|shard| shard.parse().unwrap());
    (String::from_utf8(reply.body).unwrap(), shard)
}

#[test]
fn metrics_count_requests_by_route_status_and_shard() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--admin-key",
        ADMIN_KEY,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    // "general" is owned by shard 1 and "thread-2" by shard 0 (see the
    // shard_for golden values).
    let mut client = server.client();
    let created = client.post("/frontend/v1/threads", r#"{"title":"t","id":"general"}"#);
    created.expect(201);
    let accepting: usize = created
        .header("x-progressdb-shard")
        .unwrap()
        .parse()
        .unwrap();
    for n in 0..5 {
        client
            .post(
                "/frontend/v1/threads/general/messages",
                &format!(r#"{{"body":"m{n}"}}"#),
            )
            .expect(201);
    }
    client
        .post("/frontend/v1/threads/general/messages", "{")
        .expect_error(400, "invalid_json");
    client
        .get("/frontend/v1/threads/thread-2")
        .expect_error(404, "thread_not_found");
    client.get("/no/such/path").expect_error(404, "not_found");

    // The main port's /metrics is an admin route.
    let mut anonymous = server.client();
    anonymous.key = None;
    anonymous.get("/metrics").expect_error(401, "unauthorized");
    let mut backend = server.client();
    backend.get("/metrics").expect_error(403, "forbidden");
    let mut admin = server.client();
    admin.key = Some(ADMIN_KEY.into());
    let (first, admin_shard) = scrape(&mut admin);
    let admin_shard = admin_shard.expect("main port names its shard");
    assert!(first.contains("# TYPE progressdb_http_requests_total counter\n"));

    // The metrics listener needs no key and serves nothing else.
    let mut scraper = Client::connect(metrics_addr(&server.banner));
    scraper.key = None;
    scraper.user = None;
    let (text, _) = scrape(&mut scraper);
    scraper.get("/healthz").expect(200);
    scraper.key = Some(API_KEY.into());
    scraper
        .get("/frontend/v1/threads")
        .expect_error(404, "not_found");

    let shard = format!("shard=\"{accepting}\"");
    let post = format!("{{{shard},route=\"post_message\"");
    assert_eq!(
        value(
            &text,
            &format!("progressdb_http_requests_total{post},status=\"201\"}}")
        ),
        Some(5),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("progressdb_http_requests_total{post},status=\"400\"}}")
        ),
        Some(1)
    );
    assert_eq!(
        sum(
            &text,
            "progressdb_http_requests_total",
            &["route=\"post_message\""]
        ),
        6,
        "requests are counted once, on the accepting shard"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "progressdb_http_requests_total{{{shard},route=\"create_thread\",status=\"201\"}}"
            )
        ),
        Some(1)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "progressdb_http_requests_total{{{shard},route=\"get_thread\",status=\"404\"}}"
            )
        ),
        Some(1)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "progressdb_http_requests_total{{{shard},route=\"unmatched\",status=\"404\"}}"
            )
        ),
        Some(1)
    );
    // Scrapes on the main port count like any request; the metrics
    // listener's own requests do not.
    for (status, count) in [("401", 1), ("403", 1), ("200", 1)] {
        assert_eq!(
            sum(
                &text,
                "progressdb_http_requests_total",
                &["route=\"metrics\"", &format!("status=\"{status}\"")]
            ),
            count,
            "metrics {status}: {text}"
        );
    }
    assert!(
        !text.contains("general") && !text.contains("thread-2"),
        "no raw path reaches a label"
    );

    // Histogram: cumulative buckets, +Inf == _count == requests.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|line| {
            line.starts_with(&format!(
                "progressdb_http_request_duration_seconds_bucket{post},le="
            ))
        })
        .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 17, "16 bounds and +Inf");
    assert!(
        buckets.windows(2).all(|pair| pair[0] <= pair[1]),
        "{buckets:?}"
    );
    assert_eq!(
        value(
            &text,
            &format!("progressdb_http_request_duration_seconds_bucket{post},le=\"+Inf\"}}")
        ),
        Some(6)
    );
    assert_eq!(
        value(
            &text,
            &format!("progressdb_http_request_duration_seconds_count{post}}}")
        ),
        Some(6)
    );

    // Both shards answer, each with its own label.
    for shard in 0..2 {
        assert_eq!(
            value(&text, &format!("progressdb_shard_up{{shard=\"{shard}\"}}")),
            Some(1)
        );
        assert!(
            text.contains(&format!(
                "progressdb_store_persisted_lsn{{shard=\"{shard}\"}} "
            )),
            "{text}"
        );
    }
    // One WAL append per write, all on shard 1 (the owner of "general"),
    // each fsynced in sync mode.
    assert_eq!(
        value(&text, "progressdb_wal_appends_total{shard=\"1\"}"),
        Some(6)
    );
    assert_eq!(
        value(&text, "progressdb_wal_appends_total{shard=\"0\"}"),
        Some(0)
    );
    let fsyncs = value(&text, "progressdb_wal_fsyncs_total{shard=\"1\"}").unwrap();
    assert!((1..=6).contains(&fsyncs), "fsyncs {fsyncs}");
    assert!(value(&text, "progressdb_wal_bytes_written_total{shard=\"1\"}").unwrap() >= 4096);
    // Every flush is in the duration histogram, and only once.
    assert_eq!(
        value(
            &text,
            "progressdb_wal_flush_duration_seconds_count{shard=\"1\"}"
        ),
        value(&text, "progressdb_wal_flushes_total{shard=\"1\"}")
    );
    assert_eq!(
        value(
            &text,
            "progressdb_wal_flush_duration_seconds_bucket{shard=\"1\",le=\"+Inf\"}"
        ),
        value(&text, "progressdb_wal_flushes_total{shard=\"1\"}")
    );
    // The fdatasyncs' share of the flushes' time.
    let seconds = |series: &str| -> f64 {
        let line = text.lines().find_map(|line| line.strip_prefix(series));
        line.and_then(|rest| rest.trim().parse().ok()).unwrap()
    };
    let flush_seconds = seconds("progressdb_wal_flush_duration_seconds_sum{shard=\"1\"}");
    let sync_seconds = seconds("progressdb_wal_fdatasync_seconds_total{shard=\"1\"}");
    assert!(
        sync_seconds > 0.0 && sync_seconds <= flush_seconds,
        "fdatasync {sync_seconds} s of {flush_seconds} s"
    );
    assert_eq!(
        value(&text, "progressdb_store_applied_lsn{shard=\"1\"}"),
        Some(6)
    );
    // Cross-core hops of the client's commands: the six writes go to shard
    // 1 and the 404 lookup to shard 0. The admin scrape added one hop on
    // its shard; the scrape being answered (on shard 0) may or may not have
    // sent its own before shard 0 took its sample.
    let expected = if accepting == 0 { 6 } else { 1 } + u64::from(admin_shard == accepting);
    let hops = value(
        &text,
        &format!("progressdb_mesh_hops_total{{shard=\"{accepting}\"}}"),
    )
    .unwrap();
    let in_flight = if accepting == 0 { 0..=1 } else { 0..=0 };
    assert!(
        hops >= expected && in_flight.contains(&(hops - expected)),
        "hops {hops} on shard {accepting}, expected {expected}"
    );
    // Every connection this test opened is open and was accepted once.
    assert_eq!(sum(&text, "progressdb_connections_accepted_total", &[]), 5);
    assert_eq!(sum(&text, "progressdb_connections_open", &[]), 5);
    assert_eq!(sum(&text, "progressdb_mesh_requests_executing", &[]), 0);
    // At most the answering scrape's own call to shard 1 is waiting.
    assert!(sum(&text, "progressdb_mesh_calls_waiting", &[]) <= 1);
    assert_eq!(sum(&text, "progressdb_connections_refused_total", &[]), 0);
    server.stop();
}

/// Runs the binary with stderr in a file, makes `requests` with a client,
/// stops it with SIGTERM and returns (exit success, stdout banner, stderr).
fn run_logged(extra: &[&str], requests: impl FnOnce(SocketAddr)) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args(["--db", dir.path().join("db").to_str().unwrap()])
        .args([
            "--addr",
            "127.0.0.1:0",
            "--api-key",
            API_KEY,
            "--shards",
            "2",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("listening on") {
        banner.clear();
        assert!(stdout.read_line(&mut banner).unwrap() > 0, "no banner");
    }
    let addr = banner
        .split("listening on http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    requests(addr);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    // Written by the process before it exited: complete now.
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    (status.success(), banner, stderr)
}

#[test]
fn access_log_has_one_line_per_request_and_no_secrets() {
    let (ok, _, stderr) = run_logged(&["--access-log"], |addr| {
        let mut client = Client::connect(addr);
        client
            .post(
                "/frontend/v1/threads",
                r#"{"title":"t","id":"secret-thread"}"#,
            )
            .expect(201);
        client
            .get("/frontend/v1/threads/secret-thread/messages/nope")
            .expect(404);
        client.key = Some("wrong-key-0123456789".into());
        client.get("/frontend/v1/threads").expect(401);
    });
    assert!(ok, "{stderr}");
    for line in stderr.lines() {
        assert!(line.starts_with("ts="), "not logfmt: {line}");
        assert!(line.contains(" level="), "no level: {line}");
        assert!(line.contains(" msg="), "no msg: {line}");
    }
    let requests: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(" msg=request "))
        .collect();
    assert_eq!(requests.len(), 3, "{stderr}");
    let expected = [
        "level=info msg=request method=POST route=create_thread status=201 duration_us=",
        "level=info msg=request method=GET route=get_message status=404 duration_us=",
        "level=info msg=request method=GET route=list_threads status=401 duration_us=",
    ];
    for (line, expected) in requests.iter().zip(expected) {
        assert!(line.contains(expected), "{line}");
        let shard = line.split(" shard=").nth(1).expect("shard field");
        assert!(shard == "0" || shard == "1", "{line}");
    }
    assert!(!stderr.contains(API_KEY) && !stderr.contains("wrong-key"));
    assert!(!stderr.contains("secret-thread"), "paths are not logged");
    assert!(!stderr.to_lowercase().contains("authorization"));
    assert!(
        stderr.contains("level=info msg=\"stopped cleanly\""),
        "{stderr}"
    );
}

#[test]
fn log_level_filters_events() {
    let request = |addr| {
        Client::connect(addr)
            .get("/frontend/v1/threads")
            .expect(200);
    };
    let (ok, _, quiet) = run_logged(&["--log-level", "error", "--access-log"], request);
    assert!(ok);
    assert!(
        !quiet.contains("level=info") && !quiet.contains("level=debug"),
        "{quiet}"
    );

    let (ok, _, normal) = run_logged(&[], request);
    assert!(ok);
    assert!(normal.contains("level=info msg=started"), "{normal}");
    assert!(
        !normal.contains("msg=request"),
        "access log is off by default"
    );
    assert!(!normal.contains("level=debug"), "{normal}");

    let (ok, _, verbose) = run_logged(&["--log-level", "debug"], request);
    assert!(ok);
    assert!(
        verbose.contains("level=debug msg=\"shard ready\" shard=0"),
        "{verbose}"
    );
}

fn connect_refused(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Starts a chunked POST of a message to "general" and sends only its
/// first chunk, so the request is in flight on the server.
fn start_slow_post(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /frontend/v1/threads/general/messages HTTP/1.1\r\nHost: t\r\n\
         Authorization: Bearer {API_KEY}\r\nX-User-ID: alice\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         7\r\n{{\"body\"\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(&db, &["--shards", "2"]);
    for field in [
        "listening on http://",
        " shards=2",
        " durability=sync",
        &format!(" data={}", db.display()),
    ] {
        assert!(
            server.banner.contains(field),
            "{field} in {:?}",
            server.banner
        );
    }
    let mut client = server.client();
    client
        .post("/frontend/v1/threads", r#"{"title":"t","id":"general"}"#)
        .expect(201);
    client
        .post(
            "/frontend/v1/threads/general/messages",
            r#"{"body":"before"}"#,
        )
        .expect(201);
    // `client` stays open and idle: shutdown must close it, not wait for it.
    let mut slow = start_slow_post(server.addr);
    std::thread::sleep(Duration::from_millis(200));

    server.terminate();
    assert!(connect_refused(server.addr), "still accepting connections");
    slow.write_all(b"9\r\n:\"during\"\r\n1\r\n}\r\n0\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201 "), "{response}");
    assert!(response.contains("Connection: close\r\n"), "{response}");
    assert!(response.contains(r#""body":"during""#), "{response}");
    assert!(client.is_closed(), "idle connection left open");
    let started = Instant::now();
    let status = server.wait_exit();
    assert!(status.success(), "exited with {status}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let server = Server::start_on(&db, &[]);
    let page = server
        .client()
        .get("/frontend/v1/threads/general/messages?sort_by=ts_asc")
        .expect(200);
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["before", "during"]);
    server.stop();
}

#[test]
fn shutdown_is_bounded_and_a_second_signal_exits_at_once() {
    // A request that never completes is cut off at the shutdown timeout.
    let server = Server::start(&["--shards", "2", "--shutdown-timeout-ms", "300"]);
    server
        .client()
        .post("/frontend/v1/threads", r#"{"title":"t","id":"general"}"#)
        .expect(201);
    let _stalled = start_slow_post(server.addr);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.terminate();
    let log = server.log.clone();
    let status = server.wait_exit();
    assert!(status.success(), "exited with {status}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("shutdown timeout"))
    {
        assert!(Instant::now() < deadline, "no shutdown timeout warning");
        std::thread::sleep(Duration::from_millis(20));
    }

    // With the default 10 s timeout, a second signal does not wait for it.
    let server = Server::start(&["--shards", "2"]);
    let _stalled = start_slow_post(server.addr);
    std::thread::sleep(Duration::from_millis(100));
    server.terminate();
    assert!(connect_refused(server.addr));
    let started = Instant::now();
    server.terminate();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(5));
}

// A shard that blocks is reported: a warning naming what it was blocked in
// and for how long, and a counter in /metrics.
#[test]
fn a_blocked_shard_is_logged_with_what_it_was_in_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("db"),
        &["--shards", "1", "--admin-key", ADMIN_KEY],
        &[("PROGRESSDB_DEBUG_STALL_MS", "400")],
    );
    // A loaded machine may report a stall of its own first (the shard
    // waiting for the CPU); the injected one is the stall in a sleep. It
    // lasts long enough for a watchdog that is itself kept waiting for a
    // CPU to still find the shard inside the sleep.
    let log = support::log_with(&server.log, "in=\"sleep");
    let line = log
        .lines()
        .find(|line| line.contains("msg=\"shard stalled\"") && line.contains("in=\"sleep"))
        .unwrap_or_else(|| panic!("no stall in a sleep reported: {log}"));
    let milliseconds = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    // How long it was blocked: the injected 400 ms, give or take a heartbeat.
    let stalled_ms = milliseconds("stalled_ms");
    assert!(stalled_ms >= 300, "{line}");
    // What the hypervisor took from the shard's CPU meanwhile (0 on an
    // idle host, never missing).
    assert!(milliseconds("stolen_ms") <= stalled_ms, "{line}");
    let mut admin = server.client();
    admin.key = Some(ADMIN_KEY.into());
    let (text, _) = scrape(&mut admin);
    let stalls = value(&text, "progressdb_shard_stalls_total").expect("stall counter");
    assert!(stalls >= 1, "{text}");
}
