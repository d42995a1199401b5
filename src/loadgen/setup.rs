//! The unmeasured setup phase: creating the threads a scenario targets and
//! preloading messages (`--preload-threads`, `--preload-messages`).
//!
//! Work is a numbered list of jobs shared by several connections through an
//! atomic counter, so fast connections take more jobs. A setup request that
//! the server refuses (non-2xx) aborts the run: a benchmark against a
//! half-built data set would measure the wrong thing. Connection failures
//! and timeouts are retried a few times on a fresh connection; a retried
//! POST may therefore store a message twice, which does not matter here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::Conn;
use super::scenario::Http;
use super::{Error, spawn_workers};

/// Most connections the setup phase uses.
const SETUP_CONNECTIONS_MAX: usize = 32;
/// Attempts per job before the run is abandoned.
const ATTEMPTS: u32 = 3;

/// What to create.
pub struct Plan {
    pub addr: SocketAddr,
    pub http: Http,
    pub workers: usize,
    pub connections: usize,
    pub timeout: Duration,
    /// Threads to create.
    pub create_threads: usize,
    /// The first `preload_threads` of them get `preload_messages` each.
    pub preload_threads: usize,
    pub preload_messages: usize,
    pub post_body: Vec<u8>,
    pub quiet: bool,
}

enum Job {
    CreateThreads,
    PostMessages { threads: Arc<Vec<String>> },
}

struct Shared {
    job: Job,
    addr: SocketAddr,
    http: Http,
    timeout: Duration,
    post_body: Vec<u8>,
    total: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    abort: AtomicBool,
    failure: Mutex<Option<String>>,
    created: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(why);
        self.abort.store(true, Ordering::SeqCst);
    }
}

/// Runs the setup and returns the created thread ids (creation order).
pub fn prepare(plan: Plan) -> Result<Vec<String>, Error> {
    if plan.create_threads == 0 {
        return Ok(Vec::new());
    }
    let Plan {
        addr,
        http,
        workers,
        connections,
        timeout,
        create_threads,
        preload_threads,
        preload_messages,
        post_body,
        quiet,
    } = plan;
    let connections = connections.clamp(1, SETUP_CONNECTIONS_MAX);
    let workers = workers.clamp(1, connections);
    let shared = |job, total| Shared {
        job,
        addr,
        http: http.clone(),
        timeout,
        post_body: post_body.clone(),
        total,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        abort: AtomicBool::new(false),
        failure: Mutex::new(None),
        created: Mutex::new(Vec::with_capacity(total)),
    };
    let created = run_phase(
        shared(Job::CreateThreads, create_threads),
        "creating threads",
        workers,
        connections,
        quiet,
    )?;
    let messages = preload_threads.min(created.len()) * preload_messages;
    if messages > 0 {
        let threads = Arc::new(created[..preload_threads].to_vec());
        run_phase(
            shared(Job::PostMessages { threads }, messages),
            "preloading messages",
            workers,
            connections,
            quiet,
        )?;
    }
    Ok(created)
}

fn run_phase(
    shared: Shared,
    what: &str,
    workers: usize,
    connections: usize,
    quiet: bool,
) -> Result<Vec<String>, Error> {
    let shared = Arc::new(shared);
    let started = Instant::now();
    let handles = {
        let shared = shared.clone();
        spawn_workers(workers, "bench-setup", move |worker| {
            let shared = shared.clone();
            async move {
                let mut tasks = Vec::new();
                for _ in (worker..connections).step_by(workers) {
                    tasks.push(monoio::spawn(setup_connection(shared.clone())));
                }
                for task in tasks {
                    task.await;
                }
            }
        })?
    };
    // Progress once a second while the workers run.
    let mut last_print = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if !quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let done = shared.done.load(Ordering::Relaxed);
            eprintln!(
                "setup: {what} {done}/{} ({:.0}/s)",
                shared.total,
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    for handle in handles {
        handle
            .join()
            .map_err(|_| Error::new("a setup worker panicked"))??;
    }
    if let Some(why) = shared
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(Error::new(format!("setup failed while {what}: {why}")));
    }
    if !quiet {
        eprintln!(
            "setup: {what} {}/{} done in {:.1} s",
            shared.done.load(Ordering::Relaxed),
            shared.total,
            started.elapsed().as_secs_f64()
        );
    }
    let created = std::mem::take(&mut *shared.created.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(created)
}

async fn setup_connection(shared: Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    while !shared.abort.load(Ordering::Relaxed) {
        let job = shared.next.fetch_add(1, Ordering::Relaxed);
        if job >= shared.total {
            return;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match one_job(&shared, &mut conn, job).await {
                Ok(()) => {
                    shared.done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(Failure::Refused(why)) => return shared.fail(why),
                Err(Failure::Transient(why)) => {
                    conn = None;
                    if attempt >= ATTEMPTS {
                        return shared.fail(format!("{why} ({ATTEMPTS} attempts)"));
                    }
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

enum Failure {
    /// The server answered, with a refusal: retrying will not help.
    Refused(String),
    /// Connect, timeout or I/O trouble: worth another connection.
    Transient(String),
}

async fn one_job(shared: &Shared, conn: &mut Option<Conn>, job: usize) -> Result<(), Failure> {
    if conn.is_none() {
        let connected = monoio::time::timeout(shared.timeout, Conn::connect(shared.addr)).await;
        match connected {
            Ok(Ok(c)) => *conn = Some(c),
            Ok(Err(err)) => return Err(Failure::Transient(format!("connect: {err}"))),
            Err(_) => return Err(Failure::Transient("connect timed out".into())),
        }
    }
    let c = conn.as_mut().expect("connected above");
    match &shared.job {
        Job::CreateThreads => {
            let body = format!("{{\"title\":\"bench {job}\"}}");
            shared
                .http
                .post_json(c.request_buf(), &[b"/frontend/v1/threads"], body.as_bytes());
        }
        Job::PostMessages { threads } => {
            // Round robin, so every thread grows evenly while the phase runs.
            let thread = &threads[job % threads.len()];
            shared.http.post_json(
                c.request_buf(),
                &[b"/frontend/v1/threads/", thread.as_bytes(), b"/messages"],
                &shared.post_body,
            );
        }
    }
    let reply = match monoio::time::timeout(shared.timeout, c.round_trip()).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) => return Err(Failure::Transient(format!("i/o: {err}"))),
        Err(_) => return Err(Failure::Transient("request timed out".into())),
    };
    if !(200..300).contains(&reply.status) {
        let body = String::from_utf8_lossy(c.body());
        let body: String = body.chars().take(300).collect();
        return Err(Failure::Refused(format!("HTTP {}: {body}", reply.status)));
    }
    if let Job::CreateThreads = shared.job {
        let id = serde_json::from_slice::<serde_json::Value>(c.body())
            .ok()
            .and_then(|v| v.get("key").and_then(|key| key.as_str()).map(str::to_owned))
            .ok_or_else(|| {
                Failure::Refused(format!(
                    "thread creation answered without a \"key\": {}",
                    String::from_utf8_lossy(c.body())
                ))
            })?;
        shared
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
    }
    if reply.close {
        *conn = None;
    }
    Ok(())
}
