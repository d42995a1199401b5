//! End-to-end tests of the load harness: open-loop rate accuracy and latency
//! from the planned time against a tiny in-test HTTP server, error counting
//! (status, I/O, timeout, connect), reconnects and chunked answers, the
//! JSON document written by the real `progressdb-bench` binary against the
//! real `progressdb` server, and its tail scenario (every live-tail event
//! delivered) against the real server.

#[path = "support.rs"]
mod support;

// The load generator is part of the `progressdb-bench` program, not of the
// server library; its tests drive it in-process through the same sources.
// Parts only the program's `main` uses are unused here.
#[allow(dead_code)]
#[path = "../loadgen/mod.rs"]
mod loadgen;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use loadgen::report::{Mode, Summary};
use loadgen::{Options, Report, run};
use serde_json::Value;

/// How the test server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a small JSON body, keep-alive.
    Ok,
    /// 500 for everything.
    Error500,
    /// 200, chunked body.
    Chunked,
    /// 200 with `Connection: close`, then closes.
    CloseEach,
    /// Closes without answering every `n`th request of a connection.
    DropEvery(u64),
    /// Reads requests and never answers.
    Silent,
    /// 200 after sleeping this long.
    Slow(Duration),
}

struct TestServer {
    addr: String,
    /// Requests read so far.
    requests: Arc<AtomicU64>,
    /// Connections accepted so far.
    connections: Arc<AtomicU64>,
}

/// A thread-per-connection HTTP/1.1 server on 127.0.0.1:0.
fn serve(answer: Answer) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (req, conns) = (requests.clone(), connections.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            conns.fetch_add(1, Ordering::SeqCst);
            let req = req.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, answer, &req);
            });
        }
    });
    TestServer {
        addr,
        requests,
        connections,
    }
}

fn handle(stream: TcpStream, answer: Answer, requests: &AtomicU64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut served = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        requests.fetch_add(1, Ordering::SeqCst);
        served += 1;
        let json = "{\"status\":\"ok\"}";
        let reply = match answer {
            Answer::Ok => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            ),
            Answer::Error500 => {
                let err = "{\"error\":\"internal\",\"message\":\"test\"}";
                format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{err}",
                    err.len()
                )
            }
            Answer::Chunked => format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                &json[..5],
                json.len() - 5,
                &json[5..]
            ),
            Answer::CloseEach => format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            ),
            Answer::DropEvery(n) => {
                if served.is_multiple_of(n) {
                    return Ok(());
                }
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                )
            }
            Answer::Silent => {
                std::thread::sleep(Duration::from_secs(30));
                return Ok(());
            }
            Answer::Slow(delay) => {
                std::thread::sleep(delay);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                )
            }
        };
        writer.write_all(reply.as_bytes())?;
        if matches!(answer, Answer::CloseEach) {
            return Ok(());
        }
    }
}

fn bench(args: &[&str]) -> Report {
    let mut argv = vec!["progressdb-bench", "--quiet"];
    argv.extend_from_slice(args);
    let options = Options::try_parse_from(argv).expect("flags parse");
    run(&options).expect("run")
}

#[test]
fn open_loop_hits_the_offered_rate() {
    let server = serve(Answer::Ok);
    let report = bench(&[
        "--addr",
        &server.addr,
        "--scenario",
        "url",
        "--url",
        "/healthz",
        "--rate",
        "2000",
        "--duration",
        "5",
        "--warmup",
        "0.5",
        "--connections",
        "16",
        "--workers",
        "2",
    ]);
    assert_eq!(report.mode, Mode::Open);
    assert_eq!(report.workers, 2);
    let expected = 2000.0 * 5.0;
    let got = report.stats.requests as f64;
    assert!(
        (got - expected).abs() / expected < 0.02,
        "measured {got} requests, expected {expected} ± 2%\n{}",
        report.table()
    );
    assert_eq!(report.stats.errors.total(), 0, "{}", report.table());
    assert_eq!(report.stats.ok, report.stats.requests);
    // The server really saw them: warmup plus measured window, at the rate.
    let seen = server.requests.load(Ordering::SeqCst) as f64;
    let sent = 2000.0 * 5.5;
    assert!(
        (seen - sent).abs() / sent < 0.02,
        "server saw {seen}, expected {sent} ± 2%"
    );
    // Every measured request went through the open-loop histograms.
    assert_eq!(report.stats.latency.len(), report.stats.requests);
    let service = report.stats.service.as_ref().expect("open loop keeps it");
    assert_eq!(service.len(), report.stats.requests);
}

#[test]
fn open_loop_measures_from_the_planned_time() {
    // One connection, 20 ms per answer, offered 100 req/s: the server can do
    // 50 req/s, so requests fall further and further behind their plan.
    let server = serve(Answer::Slow(Duration::from_millis(20)));
    let report = bench(&[
        "--addr",
        &server.addr,
        "--scenario",
        "url",
        "--url",
        "/",
        "--rate",
        "100",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--connections",
        "1",
    ]);
    let latency = Summary::of(&report.stats.latency);
    let service = Summary::of(report.stats.service.as_ref().unwrap());
    let achieved = report.throughput_rps();
    assert!(
        (35.0..=60.0).contains(&achieved),
        "achieved {achieved} req/s\n{}",
        report.table()
    );
    assert!(
        (19_000..60_000).contains(&service.p50),
        "service p50 {} µs\n{}",
        service.p50,
        report.table()
    );
    // The last requests were planned ~1 s before they could be sent.
    assert!(
        latency.max > 800_000 && latency.p50 > 200_000,
        "latency from plan {latency:?}\n{}",
        report.table()
    );
}

#[test]
fn every_500_is_counted() {
    let server = serve(Answer::Error500);
    let report = bench(&[
        "--addr",
        &server.addr,
        "--scenario",
        "url",
        "--url",
        "/anything",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--connections",
        "4",
    ]);
    assert_eq!(report.mode, Mode::Closed);
    assert!(report.stats.requests > 100, "{}", report.table());
    assert_eq!(report.stats.ok, 0);
    assert_eq!(
        report.stats.errors.by_status.get(&500).copied(),
        Some(report.stats.requests)
    );
    assert_eq!(report.stats.errors.total(), report.stats.requests);
    let json = report.to_json();
    assert_eq!(json["errors"]["by_status"]["500"], report.stats.requests);
    assert_eq!(json["errors"]["total"], report.stats.requests);
    // Answered with a status: they have latencies.
    assert_eq!(report.stats.latency.len(), report.stats.requests);
    assert!(report.table().contains("HTTP 500"), "{}", report.table());
}

#[test]
fn broken_connections_are_counted_and_replaced() {
    let server = serve(Answer::DropEvery(5));
    let report = bench(&[
        "--addr",
        &server.addr,
        "--scenario",
        "url",
        "--url",
        "/",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--connections",
        "4",
    ]);
    let errors = &report.stats.errors;
    assert!(errors.io > 10, "{}", report.table());
    assert!(report.stats.ok > 4 * errors.io / 2, "{}", report.table());
    assert_eq!(report.stats.ok + errors.io, report.stats.requests);
    // Every broken connection was accepted first; its replacement may not
    // be yet when the run ends, so `>=`, not `>`.
    assert!(server.connections.load(Ordering::SeqCst) >= errors.io);
}

#[test]
fn connection_close_and_chunked_answers_work() {
    for answer in [Answer::CloseEach, Answer::Chunked] {
        let server = serve(answer);
        let report = bench(&[
            "--addr",
            &server.addr,
            "--scenario",
            "url",
            "--url",
            "/",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--connections",
            "2",
        ]);
        assert!(report.stats.requests > 20, "{}", report.table());
        assert_eq!(report.stats.errors.total(), 0, "{}", report.table());
        let connections = server.connections.load(Ordering::SeqCst);
        if matches!(answer, Answer::CloseEach) {
            assert!(connections >= report.stats.requests, "{connections}");
        } else {
            assert_eq!(connections, 2);
        }
    }
}

#[test]
fn timeouts_and_refused_connections_are_counted() {
    let server = serve(Answer::Silent);
    let report = bench(&[
        "--addr",
        &server.addr,
        "--scenario",
        "url",
        "--url",
        "/",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--connections",
        "2",
        "--timeout-ms",
        "150",
    ]);
    let errors = &report.stats.errors;
    assert!(errors.timeout >= 8, "{}", report.table());
    assert_eq!(errors.timeout, report.stats.requests);
    assert_eq!(report.stats.latency.len(), 0);

    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let report = bench(&[
        "--addr",
        &addr,
        "--scenario",
        "url",
        "--url",
        "/",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--connections",
        "2",
    ]);
    let errors = &report.stats.errors;
    assert!(errors.connect > 10, "{}", report.table());
    assert_eq!(errors.connect, report.stats.requests);
}

#[test]
fn unsupported_and_bad_flags_are_refused() {
    for args in [
        &["--addr", "127.0.0.1:1", "--scenario", "tail"][..],
        &[
            "--addr",
            "127.0.0.1:1",
            "--scenario",
            "tail",
            "--rate",
            "1",
            "--subscribers",
            "0",
        ][..],
        &[
            "--addr",
            "127.0.0.1:1",
            "--scenario",
            "tail",
            "--rate",
            "1",
            "--tail-threads",
            "0",
        ][..],
        &["--addr", "127.0.0.1:1", "--scenario", "url"][..],
        &["--addr", "127.0.0.1:1", "--rate", "0"][..],
        &["--addr", "127.0.0.1:1", "--duration", "0"][..],
        &["--addr", "127.0.0.1:1", "--threads", "0"][..],
    ] {
        let mut argv = vec!["progressdb-bench", "--quiet"];
        argv.extend_from_slice(args);
        let options = Options::try_parse_from(argv).expect("flags parse");
        let err = run(&options).expect_err("refused");
        if args == ["--addr", "127.0.0.1:1", "--scenario", "tail"] {
            assert!(err.to_string().contains("needs --rate"), "{err}");
        }
    }
    assert!(Options::try_parse_from(["progressdb-bench", "--read-percent", "101"]).is_err());
}

/// Asserts `value[key]` exists and satisfies `check`.
fn expect_key(value: &Value, key: &str, check: fn(&Value) -> bool) {
    let field = value
        .get(key)
        .unwrap_or_else(|| panic!("missing {key:?} in {value}"));
    assert!(check(field), "{key:?} has the wrong type: {field}");
}

#[test]
fn json_schema_against_the_real_server() {
    let server = support::Server::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("bench.json");
    let addr = server.addr.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_progressdb-bench"))
        .args([
            "--addr",
            &addr,
            "--key",
            support::API_KEY,
            "--scenario",
            "post",
            "--threads",
            "10",
            "--connections",
            "8",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            // The test checks the report, not latency: a slow fsync on a
            // busy machine must not turn into a timeout error.
            "--timeout-ms",
            "60000",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .expect("run progressdb-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("throughput"), "{stdout}");
    assert!(stderr.contains("creating threads"), "{stderr}");
    assert!(stderr.contains("req/s"), "no progress line: {stderr}");

    let text = std::fs::read_to_string(&json_path).expect("json written");
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["scenario"], "post");
    assert_eq!(v["mode"], "closed");
    assert_eq!(v["connections"], 8);
    assert_eq!(v["threads"], 10);
    assert!(v["offered_rate"].is_null());
    expect_key(&v, "duration_s", Value::is_f64);
    expect_key(&v, "warmup_s", Value::is_f64);
    expect_key(&v, "requests", Value::is_u64);
    expect_key(&v, "ok", Value::is_u64);
    expect_key(&v, "throughput_rps", Value::is_number);
    expect_key(&v, "achieved_rate", Value::is_number);
    expect_key(&v, "latency_us", Value::is_object);
    for key in ["p50", "p90", "p99", "p999", "max", "min"] {
        expect_key(&v["latency_us"], key, Value::is_u64);
    }
    expect_key(&v["latency_us"], "mean", Value::is_number);
    expect_key(&v, "errors", Value::is_object);
    expect_key(&v["errors"], "by_status", Value::is_object);
    for key in ["io", "timeout", "connect", "total"] {
        expect_key(&v["errors"], key, Value::is_u64);
    }
    expect_key(&v, "histogram", Value::is_array);
    expect_key(&v, "percentiles", Value::is_array);
    expect_key(&v, "timeline", Value::is_array);

    let requests = v["requests"].as_u64().unwrap();
    assert!(requests > 0, "{text}");
    assert_eq!(v["ok"], requests, "{stdout}");
    assert_eq!(v["errors"]["total"], 0, "{stdout}");
    assert!(v["errors"]["by_status"].as_object().unwrap().is_empty());
    let p50 = v["latency_us"]["p50"].as_u64().unwrap();
    let max = v["latency_us"]["max"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= max, "{}", v["latency_us"]);
    let buckets = v["histogram"].as_array().unwrap();
    let counted: u64 = buckets
        .iter()
        .map(|b| {
            assert!(b["value_us"].is_u64(), "{b}");
            b["count"].as_u64().expect("count")
        })
        .sum();
    assert_eq!(counted, requests);
    let seconds = v["timeline"].as_array().unwrap();
    assert!(
        seconds.iter().any(|s| s["phase"] == "measure"),
        "{seconds:?}"
    );

    // The server stored what was acknowledged (10 threads of posts).
    let mut client = server.client().acting_for("bench");
    let threads = client.get("/frontend/v1/threads?limit=100").expect(200);
    assert_eq!(threads["threads"].as_array().unwrap().len(), 10);
}

/// Runs the real `progressdb-bench` binary; returns stdout, stderr and the
/// JSON it wrote, after asserting it succeeded.
fn bench_binary(args: &[&str]) -> (String, String, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_progressdb-bench"))
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run progressdb-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&json_path).expect("json written");
    let json = serde_json::from_str(&text).expect("valid JSON");
    (stdout, stderr, json)
}

#[test]
fn tail_scenario_delivers_every_event_against_the_real_server() {
    // Two shards, so most streams are served by a core that does not own
    // their thread and events cross the mesh.
    let server = support::Server::start(&["--shards", "2"]);
    let addr = server.addr.to_string();
    let (stdout, stderr, v) = bench_binary(&[
        "--addr",
        &addr,
        "--key",
        support::API_KEY,
        "--scenario",
        "tail",
        "--subscribers",
        "20",
        "--tail-threads",
        "2",
        "--threads",
        "3",
        "--rate",
        "40",
        "--connections",
        "4",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    ]);
    assert!(stderr.contains("20 streams open"), "{stderr}");
    assert!(stdout.contains("post to event"), "{stdout}");
    assert!(stdout.contains("every subscriber got every"), "{stdout}");
    assert_eq!(v["scenario"], "tail");
    assert_eq!(v["mode"], "open");
    assert_eq!(v["threads"], 3);
    let tail = &v["tail"];
    assert_eq!(tail["subscribers"], 20);
    assert_eq!(tail["tail_threads"], 2);
    for key in [
        "posts_acked",
        "expected",
        "received",
        "missing",
        "unacked",
        "out_of_order",
        "overflowed",
        "ended_early",
        "timed_out",
        "delivery_samples",
    ] {
        expect_key(tail, key, Value::is_u64);
    }
    for key in ["p50", "p90", "p99", "p999", "max", "min"] {
        expect_key(&tail["delivery_us"], key, Value::is_u64);
    }
    expect_key(tail, "missing_examples", Value::is_array);

    // Each acknowledged post reached every subscriber of its thread: 20
    // subscribers over 3 threads is 7, 7 and 6 per thread.
    let acked = tail["posts_acked"].as_u64().unwrap();
    let expected = tail["expected"].as_u64().unwrap();
    assert!(acked >= v["ok"].as_u64().unwrap() && acked > 0, "{stdout}");
    assert!((6 * acked..=7 * acked).contains(&expected), "{stdout}");
    assert_eq!(tail["received"], expected, "{stdout}");
    assert_eq!(tail["missing"], 0, "{stdout}");
    assert_eq!(tail["end_marker"], true, "{stdout}");
    for key in ["out_of_order", "overflowed", "ended_early", "timed_out"] {
        assert_eq!(tail[key], 0, "{key}: {stdout}");
    }
    assert!(tail["delivery_samples"].as_u64().unwrap() > 0, "{stdout}");
    let p50 = tail["delivery_us"]["p50"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= tail["delivery_us"]["max"].as_u64().unwrap());

    // The server holds every acknowledged post plus one end marker per thread.
    let mut client = server.client().acting_for("bench");
    let threads = client.get("/frontend/v1/threads?limit=100").expect(200);
    let stored: usize = support::ids(&threads)
        .iter()
        .map(|id| {
            let path = format!("/frontend/v1/threads/{id}/messages?limit=1000");
            let page = client.get(&path).expect(200);
            assert_eq!(page["pagination"]["has_before"], false);
            page["messages"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(support::ids(&threads).len(), 3);
    assert!(
        stored as u64 >= acked + 3,
        "stored {stored}, acknowledged {acked}"
    );
}

/// A real redis-server with `appendfsync always` (as `scripts/bench.sh`
/// runs it), killed when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Redis cannot listen on port 0: it gets a port from
    /// [`support::free_ports`], and another if Redis still finds it taken.
    fn start() -> Redis {
        let redis = Command::new("redis-server").arg("--version").output();
        assert!(
            redis.is_ok_and(|out| out.status.success()),
            "the xadd test needs redis-server: run scripts/install-test-deps.sh"
        );
        for attempt in 0..20u64 {
            let port = support::free_ports(1, attempt)[0];
            let dir = tempfile::tempdir().expect("temp dir");
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start redis-server");
            let redis =
                support::eventually("redis-server to answer", Duration::from_secs(10), || {
                    if child.try_wait().ok().flatten().is_some() {
                        return Some(false); // it exited: the port was taken after all
                    }
                    let answered = Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "PING"])
                        .output()
                        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG");
                    answered.then_some(true)
                });
            if redis {
                return Redis {
                    child,
                    port,
                    _dir: dir,
                };
            }
        }
        panic!("redis-server found no free port");
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn xadd_scenario_appends_to_a_real_redis_and_counts_its_errors() {
    let redis = Redis::start();
    let addr = format!("127.0.0.1:{}", redis.port);
    let run = |rate: &str| {
        bench_binary(&[
            "--addr",
            &addr,
            "--scenario",
            "xadd",
            "--rate",
            rate,
            "--connections",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--message-bytes",
            "24",
        ])
    };
    let (stdout, _, v) = run("300");
    assert_eq!(v["scenario"], "xadd", "{stdout}");
    let requests = v["requests"].as_u64().unwrap();
    assert!(requests > 0 && v["ok"] == requests, "{stdout}");
    // Every answered request is one entry, carrying the message text. The
    // first request of connection 0 is planned at the window's very start
    // and may go out up to 1 ms early (see the timing notes in
    // src/loadgen/load.rs): then it is appended but counted before the
    // window, so Redis may hold one entry more than the report counts.
    let entries: u64 = redis.cli(&["XLEN", "progressdb-bench"]).parse().unwrap();
    assert!(
        (requests..=requests + 1).contains(&entries),
        "{entries} entries for {requests} requests: {stdout}"
    );
    let newest = redis.cli(&["XREVRANGE", "progressdb-bench", "+", "-", "COUNT", "1"]);
    assert!(
        newest
            .lines()
            .any(|line| line == "a benchmark message with"),
        "{newest}"
    );

    // An error reply (XADD to a key that is not a stream) is a failed request.
    redis.cli(&["DEL", "progressdb-bench"]);
    redis.cli(&["SET", "progressdb-bench", "not a stream"]);
    let (stdout, _, v) = run("100");
    assert!(v["requests"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(v["ok"], 0, "{stdout}");
    assert_eq!(v["errors"]["by_status"]["500"], v["requests"], "{stdout}");
}
