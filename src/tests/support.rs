//! Shared by the end-to-end tests: start the real `progressdb` binary on a
//! temporary directory and port 0, and speak plain HTTP/1.1 to it over
//! loopback with a deliberately simple client.

#![allow(dead_code, reason = "each test target uses a different subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The items of a list answer: its `messages`, `threads` or `versions`.
pub fn items(page: &serde_json::Value) -> &Vec<serde_json::Value> {
    ["messages", "threads", "versions"]
        .iter()
        .find_map(|name| page[name].as_array())
        .unwrap_or_else(|| panic!("not a list answer: {page}"))
}

/// The `key`s of a list answer's items, in order.
pub fn ids(page: &serde_json::Value) -> Vec<String> {
    items(page)
        .iter()
        .map(|item| item["key"].as_str().expect("key").to_string())
        .collect()
}

/// Every message of a thread, oldest first, paging with cursors (the
/// `/v1` route, so any author's thread; empty if there is no such thread).
pub fn all_messages(client: &mut Client, thread: &str) -> Vec<serde_json::Value> {
    all_messages_retrying(client, thread, Duration::ZERO)
}

/// [`all_messages`], asking again after a 503 for up to `retry_for` (a
/// cluster whose nodes' views are still settling).
pub fn all_messages_retrying(
    client: &mut Client,
    thread: &str,
    retry_for: Duration,
) -> Vec<serde_json::Value> {
    let path = format!("/v1/threads/{thread}/messages");
    messages_paging_back(client, &path, 1000, retry_for, |_| {})
}

/// Every message under `messages_path`, oldest first, read back from the
/// newest in pages of `limit`; `check` sees each answer first. Empty if
/// there is no such thread. A 503 is asked again for up to `retry_for`.
pub fn messages_paging_back(
    client: &mut Client,
    messages_path: &str,
    limit: usize,
    retry_for: Duration,
    check: impl Fn(&Reply),
) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut path = format!("{messages_path}?limit={limit}");
    let started = std::time::Instant::now();
    loop {
        let reply = client.get(&path);
        if reply.status == 404 {
            return out;
        }
        if reply.status == 503 && started.elapsed() < retry_for {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        check(&reply);
        let page = reply.expect(200);
        let mut older = page["messages"].as_array().expect("messages").clone();
        older.extend(out);
        out = older;
        if page["pagination"]["has_before"] != true {
            return out;
        }
        let anchor = page["pagination"]["before_anchor"].as_str().unwrap();
        path = format!("{messages_path}?limit={limit}&before={anchor}");
    }
}

/// Polls `check` until it returns `Some`, failing after `within`.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(done) = check() {
            return done;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Posts `body` to `thread`, as a reply to `reply_to` if given, and
/// returns the new message's key.
pub fn post_message_key(
    client: &mut Client,
    thread: &str,
    body: serde_json::Value,
    reply_to: Option<&str>,
) -> String {
    let request = serde_json::json!({"body": body, "reply_to": reply_to}).to_string();
    let path = format!("/frontend/v1/threads/{thread}/messages");
    client.post(&path, &request).expect(201)["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Files under `dir` whose bytes contain `marker`.
pub fn files_containing(dir: &Path, marker: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes
                .windows(marker.len())
                .any(|window| window == marker.as_bytes())
        })
        .collect()
}

/// A client of `server` calling with `key` and no user (an admin key).
pub fn keyed_client(server: &Server, key: &str) -> Client {
    let mut client = server.client();
    client.key = Some(key.into());
    client.user = None;
    client
}

// Backups and the command line, for the backup and retention tests.

/// Starts an online backup into `dir`; returns the job as answered.
pub fn start_backup(admin: &mut Client, dir: &Path) -> serde_json::Value {
    let body = serde_json::json!({"target": file_url(dir)}).to_string();
    admin.post("/admin/v1/backups", &body).expect(202)
}

/// Polls a backup until it is no longer running; returns its last state.
pub fn wait_for_backup(client: &mut Client, id: &str) -> serde_json::Value {
    loop {
        let status = client.get(&format!("/admin/v1/backups/{id}")).expect(200);
        if status["state"] != "running" {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `progressdb <args>`; returns success and what it printed.
pub fn progressdb(args: &[&str]) -> (bool, String) {
    progressdb_with_env(args, &[])
}

pub fn progressdb_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run progressdb");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Runs `progressdb restore`; returns success and what it printed.
pub fn run_restore(backup: &Path, db: &Path) -> (bool, String) {
    let from = file_url(backup);
    progressdb(&["restore", "--from", &from, "--db", db.to_str().unwrap()])
}

/// Copies the key vault of data directory `from` into `to`, as an
/// operator restoring an encrypted backup does.
pub fn copy_vault(from: &Path, to: &Path) {
    let (from, to) = (from.join("kms").join("vault"), to.join("kms").join("vault"));
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

pub const API_KEY: &str = "test-key-0123456789";
/// A start takes milliseconds; this bounds it on a machine whose disk is
/// saturated by other tests' fsyncs (the cluster tests' NATS servers sync
/// every message), where a start has been seen to wait for half a minute.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub db: PathBuf,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The stdout line announcing the listening address.
    pub banner: String,
    /// Keeps the temporary directory alive for the server's lifetime.
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh temporary directory.
    pub fn start(extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("db");
        let mut server = Server::start_on(&db, extra_args);
        server._dir = Some(dir);
        server
    }

    /// A server on `db`, which may hold data from an earlier run.
    pub fn start_on(db: &Path, extra_args: &[&str]) -> Server {
        Server::start_with_env(db, extra_args, &[])
    }

    /// Like [`Server::start_on`], with extra environment variables.
    pub fn start_with_env(db: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = vec![
            "--db".into(),
            db.display().to_string(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--api-key".into(),
            API_KEY.into(),
        ];
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let started = spawn_and_wait(&args, env).unwrap_or_else(|err| panic!("{err}"));
        Server {
            child: Some(started.child),
            addr: started.addr,
            db: db.to_path_buf(),
            log: started.log,
            banner: started.banner,
            _dir: None,
        }
    }

    /// Keeps `dir` (which holds this server's data) until the server is dropped.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._dir = Some(dir);
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then waits; asserts a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGTERM);
        let status = child.wait().expect("wait");
        assert!(status.success(), "server exited with {status}");
    }

    /// Sends SIGTERM without waiting (see `wait_exit`).
    pub fn terminate(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// Waits for the process to exit by itself and returns its status.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }

    /// Sends `signal` (SIGSTOP, SIGCONT...) to the running server.
    pub fn signal(&self, signal_number: i32) {
        signal(self.pid(), signal_number);
    }

    /// The exit status once the process has exited by itself, without
    /// waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }

    /// Stops this server and starts a new one on the same directory.
    pub fn restart(mut self, extra_args: &[&str]) -> Server {
        let dir = self._dir.take();
        let db = self.db.clone();
        self.stop();
        let mut server = Server::start_on(&db, extra_args);
        server._dir = dir;
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child process id we own.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

pub struct Started {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    pub banner: String,
}

/// Spawns the binary and waits for its "listening on" line. Returns the
/// child, its bound address and its stderr (kept up to date), or
/// everything it printed if it failed.
/// The server's stderr so far, once it holds `needle` or after a few
/// seconds: it is read on another thread, so a line the server wrote just
/// before answering may not have arrived yet.
pub fn log_with(log: &Mutex<Vec<String>>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = log.lock().unwrap().join("\n");
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Server-Sent Events stream, opened on `stream` by `GET path` for
/// `user` with `extra` header lines: the head is checked (200,
/// `text/event-stream`) and read, and the reader comes back at the first
/// event with the `X-ProgressDB-Shard` the head named.
pub fn open_event_stream(
    mut stream: TcpStream,
    path: &str,
    user: &str,
    extra: &str,
) -> (BufReader<TcpStream>, String) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nAuthorization: Bearer {API_KEY}\r\nX-User-ID: {user}\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (mut shard, mut content_type) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "x-progressdb-shard" => shard = value.trim().to_string(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
    }
    assert_eq!(content_type, "text/event-stream");
    (reader, shard)
}

/// Runs a Python test client with `site` (its pinned packages) on the
/// path; see [`run_client`].
pub fn run_python_client(script: &Path, site: &Path, args: &[String], env: &[(&str, &str)]) {
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(args)
        .env("PYTHONPATH", site)
        .envs(env.iter().copied());
    run_client(command, &script.display().to_string());
}

/// Runs a test client program and asserts that it succeeded and printed
/// "ok" last.
pub fn run_client(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ok"),
        "{what} failed:\n{stdout}\n{stderr}"
    );
}

/// Starts the binary with `args` from `/bin/sh` after `shell_command`
/// (a `ulimit`, say), so the server inherits what it sets.
pub fn spawn_after_shell_command(shell_command: &str, args: &[&str]) -> Started {
    let script = format!("{shell_command} && exec \"$0\" \"$@\"");
    let mut argv: Vec<String> = vec!["-c".into(), script];
    argv.push(env!("CARGO_BIN_EXE_progressdb").into());
    argv.extend(args.iter().map(|arg| arg.to_string()));
    spawn_program_and_wait(Path::new("/bin/sh"), &argv, &[]).unwrap_or_else(|err| panic!("{err}"))
}

pub fn spawn_and_wait(args: &[String], env: &[(&str, &str)]) -> Result<Started, String> {
    spawn_program_and_wait(Path::new(env!("CARGO_BIN_EXE_progressdb")), args, env)
}

/// [`spawn_and_wait`] for another of the package's programs that prints
/// the same "listening on http://<addr>" line.
pub fn spawn_program_and_wait(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<Started, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().map_err(|err| format!("spawn: {err}"))?;
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let err_tx = tx.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log_writer = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(Some(line));
        }
        let _ = tx.send(None);
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if let Ok(mut log) = log_writer.lock() {
                log.push(line.clone());
            }
            let _ = err_tx.send(Some(format!("stderr: {line}")));
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(line)) => {
                let announced = ["listening on http://", "listening on https://"]
                    .iter()
                    .find_map(|prefix| line.split(prefix).nth(1));
                if let Some(rest) = announced {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let addr = addr
                        .parse()
                        .map_err(|err| format!("bad address {addr:?}: {err}"))?;
                    // Keep draining stdout so the server never blocks on it.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Ok(Started {
                        child,
                        addr,
                        log,
                        banner: line,
                    });
                }
                seen.push(line);
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(format!(
                    "server did not start ({status:?}); output:\n{}",
                    seen.join("\n")
                ));
            }
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and returns the JSON body, printing it on mismatch.
    pub fn expect(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error reply with this status and stable code.
    pub fn expect_error(&self, status: u16, code: &str) {
        let body = self.expect(status);
        assert_eq!(body["error"], code, "body: {body}");
        assert!(body["message"].is_string(), "body: {body}");
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

/// A keep-alive HTTP/1.1 client over one TCP connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub user: Option<String>,
    pub key: Option<String>,
    /// Raw header lines (each ending in CRLF) added to every request.
    pub extra_headers: String,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            user: Some("alice".into()),
            key: Some(API_KEY.into()),
            extra_headers: String::new(),
        }
    }

    pub fn acting_for(mut self, user: &str) -> Client {
        self.user = Some(user.into());
        self
    }

    /// The request bytes this client would send (for pipelining tests).
    pub fn request_bytes(&self, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        if let Some(key) = &self.key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        if let Some(user) = &self.user {
            head.push_str(&format!("X-User-ID: {user}\r\n"));
        }
        head.push_str(&self.extra_headers);
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.try_request(method, path, body).expect("request")
    }

    /// Like `request`, but an I/O failure (a killed server) is an error.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<Reply> {
        let bytes = self.request_bytes(method, path, body);
        self.writer.write_all(&bytes)?;
        self.try_read_reply(method == "HEAD")
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &str) -> Reply {
        self.request("POST", path, Some(body))
    }

    pub fn put(&mut self, path: &str, body: &str) -> Reply {
        self.request("PUT", path, Some(body))
    }

    pub fn delete(&mut self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    /// Reads one response (Content-Length framed, as the server sends).
    pub fn read_reply(&mut self, head_only: bool) -> Reply {
        self.try_read_reply(head_only).expect("response")
    }

    /// Like `read_reply`, but a closed or broken connection is an error.
    pub fn try_read_reply(&mut self, head_only: bool) -> std::io::Result<Reply> {
        read_reply_from(&mut self.reader, head_only)
    }

    /// True once the server has closed this connection.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// Reads one response (Content-Length framed, or chunked as large pages
/// are sent) from any byte stream, such as a TLS session.
pub fn read_reply_from(reader: &mut impl BufRead, head_only: bool) -> std::io::Result<Reply> {
    let broken = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| broken(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| broken(format!("bad header {header:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length: usize = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        Some((_, value)) => value
            .parse()
            .map_err(|_| broken(format!("bad content-length {value:?}")))?,
        None => 0,
    };
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head_only || status == 100 {
        Vec::new()
    } else if chunked {
        read_chunked_body(reader)?
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A chunked body (RFC 9112 7.1), without trailers, as the server sends it.
pub fn read_chunked_body(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let broken = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let size = usize::from_str_radix(line.trim_end(), 16)
            .map_err(|_| broken(format!("bad chunk size {line:?}")))?;
        let start = body.len();
        body.resize(start + size + 2, 0);
        reader.read_exact(&mut body[start..])?;
        if &body[start + size..] != b"\r\n" {
            return Err(broken("chunk without CRLF".into()));
        }
        body.truncate(start + size);
        if size == 0 {
            return Ok(body);
        }
    }
}

/// `count` distinct free ports on 127.0.0.1 for servers that cannot listen
/// on port 0 (nats-server's routes, Redis), drawn from below the kernel's
/// ephemeral range: a port from port 0 could be handed to any outgoing
/// connection between its release and the server's bind (or a restart's).
/// `salt` varies the draw between callers in one process; a server that
/// still finds its port taken must be started again on another.
pub fn free_ports(count: usize, salt: u64) -> Vec<u16> {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_low: u32 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .unwrap_or(32_768);
    let (low, span) = (10_000u32, ephemeral_low.saturating_sub(10_000).max(1));
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = u64::from(std::process::id()) ^ clock.as_nanos() as u64;
    let mut state = seed ^ salt ^ 0x9e37_79b9_7f4a_7c15;
    let mut held = Vec::new();
    for _ in 0..10_000 {
        if held.len() == count {
            break;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = (low + (state % u64::from(span)) as u32) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), count, "no free ports below the ephemeral range");
    held.iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}
