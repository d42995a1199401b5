//! The stall watchdog: a shard thread that runs (or blocks) for a long
//! time without returning to its reactor delays every request on its core,
//! so such stalls are detected, logged with what the thread was doing, and
//! counted (`progressdb_shard_stalls_total`).
//!
//! Each shard runs a heartbeat task that stamps the time every
//! [`HEARTBEAT`]; it can only run when the shard returns to its reactor.
//! One watchdog thread for the process reads the stamps. A stamp older than
//! [`STALL_REPORT`] plus a heartbeat marks a stall; the watchdog then reads
//! from `/proc` what the shard thread is in (the system call it is blocked
//! in, or "running") and, once the shard beats again, logs the stall with
//! its length, how long the thread ran or waited for a CPU meanwhile, and
//! how much of its CPU's time the hypervisor took (steal). Reading `/proc`
//! costs the shard nothing, unlike capturing and symbolizing its stack,
//! which takes longer than the stalls it reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shard that has not beaten for this long (beyond its heartbeat
/// interval) is stalled.
pub const STALL_REPORT: Duration = Duration::from_millis(10);

/// How often each shard stamps its heartbeat and the watchdog looks.
pub const HEARTBEAT: Duration = Duration::from_millis(5);

/// Stalls reported since start, all shards.
static STALLS: AtomicU64 = AtomicU64::new(0);

pub fn count() -> u64 {
    STALLS.load(Ordering::Relaxed)
}

/// Per shard: its thread id and its last heartbeat, in µs since `epoch`.
pub struct Heartbeats {
    epoch: Instant,
    beats: Vec<AtomicU64>,
    threads: Vec<AtomicI32>,
}

impl Heartbeats {
    /// Starts the watchdog thread for `shards` shards.
    pub fn start(shards: usize) -> std::io::Result<Arc<Heartbeats>> {
        let heartbeats = Arc::new(Heartbeats {
            epoch: Instant::now(),
            beats: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            threads: (0..shards).map(|_| AtomicI32::new(0)).collect(),
        });
        let watched = heartbeats.clone();
        std::thread::Builder::new()
            .name("stall-watchdog".into())
            .spawn(move || watched.watch())?;
        Ok(heartbeats)
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Runs on shard `shard`'s executor for the life of the process.
    pub fn beat_forever(self: Arc<Self>, shard: usize) {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        self.threads[shard].store(tid, Ordering::Relaxed);
        glommio::spawn_local(async move {
            loop {
                self.beats[shard].store(self.now_us(), Ordering::Relaxed);
                glommio::timer::sleep(HEARTBEAT).await;
            }
        })
        .detach();
    }

    fn watch(&self) {
        let limit = (STALL_REPORT + HEARTBEAT).as_micros() as u64;
        let mut stalled: Vec<Option<Stall>> = (0..self.beats.len()).map(|_| None).collect();
        loop {
            std::thread::sleep(HEARTBEAT);
            let now = self.now_us();
            for (shard, beat) in self.beats.iter().enumerate() {
                let last = beat.load(Ordering::Relaxed);
                let tid = self.threads[shard].load(Ordering::Relaxed);
                if last == 0 || tid == 0 {
                    continue;
                }
                match &stalled[shard] {
                    None if now.saturating_sub(last) > limit => {
                        stalled[shard] = Some(Stall {
                            since: last,
                            cause: doing(tid),
                            schedule: schedule(tid),
                            steal: cpu_of(tid).map(|cpu| (cpu, stolen_ticks(cpu))),
                        });
                    }
                    Some(stall) if last != stall.since => {
                        report(shard, last.saturating_sub(stall.since), stall, tid);
                        stalled[shard] = None;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A stall in progress: the heartbeat it began after, what the thread was
/// in when it was noticed, and the thread's scheduling counters then.
struct Stall {
    since: u64,
    cause: String,
    schedule: (u64, u64),
    /// The CPU the thread was on, and that CPU's steal counter then.
    steal: Option<(usize, u64)>,
}

fn report(shard: usize, gap_us: u64, stall: &Stall, tid: i32) {
    STALLS.fetch_add(1, Ordering::Relaxed);
    let stalled_ms = gap_us.saturating_sub(HEARTBEAT.as_micros() as u64) / 1000;
    // Time the thread ran, and time it was runnable but waited for a CPU
    // (another process on its core), since the stall was noticed.
    let (ran, waited) = schedule(tid);
    let ms = |after: u64, before: u64| after.saturating_sub(before) / 1_000_000;
    // Time the hypervisor ran something else on that CPU meanwhile: in a
    // virtual machine a stall can be nobody's in this process.
    let stolen_ms = stall.steal.map_or(0, |(cpu, before)| {
        stolen_ticks(cpu).saturating_sub(before) * 1000 / ticks_per_second()
    });
    crate::logging::warn(
        "shard stalled",
        &[
            ("shard", &shard),
            ("stalled_ms", &stalled_ms),
            ("in", &stall.cause),
            ("ran_ms", &ms(ran, stall.schedule.0)),
            ("waited_for_cpu_ms", &ms(waited, stall.schedule.1)),
            ("stolen_ms", &stolen_ms),
        ],
    );
}

/// Nanoseconds thread `tid` has run and has waited runnable for a CPU.
fn schedule(tid: i32) -> (u64, u64) {
    let text =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap_or_default();
    let mut fields = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// The CPU thread `tid` of this process last ran on.
fn cpu_of(tid: i32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    processor_in_stat(&stat)
}

/// Field 39 (`processor`) of a `/proc/.../stat` line. The thread name
/// before it is parenthesised and may hold spaces, so fields are counted
/// from the last `)`, after which field 3 starts.
fn processor_in_stat(stat: &str) -> Option<usize> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(39 - 3)?
        .parse()
        .ok()
}

/// Ticks (of [`ticks_per_second`]) the hypervisor took from `cpu` since boot.
fn stolen_ticks(cpu: usize) -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    steal_in_proc_stat(&text, cpu).unwrap_or(0)
}

/// The steal column (the eighth number) of `cpu`'s line in `/proc/stat`.
fn steal_in_proc_stat(text: &str, cpu: usize) -> Option<u64> {
    let name = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some(&name))?;
    line.split_whitespace().nth(8)?.parse().ok()
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// What thread `tid` of this process is doing now: the system call it is
/// blocked in, or that it is running on a CPU.
fn doing(tid: i32) -> String {
    let task = format!("/proc/self/task/{tid}");
    let state = std::fs::read_to_string(format!("{task}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised thread name.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_default();
    if state == "R" {
        // Running, or runnable and waiting for its core: `waited_for_cpu_ms`
        // in the report tells which.
        return "running (profile with scripts/profile.sh)".into();
    }
    let syscall = std::fs::read_to_string(format!("{task}/syscall")).unwrap_or_default();
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    match syscall
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok())
    {
        Some(number) => format!("{} (kernel: {wchan})", syscall_name(number)),
        None => format!("state {state} (kernel: {wchan})"),
    }
}

/// Names of the system calls a shard thread is expected to block in.
fn syscall_name(number: i64) -> String {
    let name = match number {
        libc::SYS_futex => "futex: waiting for a lock",
        libc::SYS_fsync => "fsync",
        libc::SYS_fdatasync => "fdatasync",
        libc::SYS_read => "read",
        libc::SYS_write => "write",
        libc::SYS_pread64 => "pread",
        libc::SYS_pwrite64 => "pwrite",
        libc::SYS_openat => "openat",
        libc::SYS_unlinkat | libc::SYS_unlink => "unlink",
        libc::SYS_renameat | libc::SYS_renameat2 | libc::SYS_rename => "rename",
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => "sleep",
        // A sleep or wait interrupted by a signal and resumed.
        libc::SYS_restart_syscall => "sleep or wait, resumed after a signal",
        libc::SYS_io_uring_enter => "io_uring_enter",
        libc::SYS_fallocate => "fallocate",
        libc::SYS_mmap | libc::SYS_munmap | libc::SYS_madvise => "memory mapping",
        _ => return format!("system call {number}"),
    };
    name.to_owned()
}

/// Debug builds only: `PROGRESSDB_DEBUG_STALL_MS=N` blocks the shard once,
/// for N ms, right after it starts, so tests can watch a stall being
/// reported through the real binary. Release builds ignore it.
pub fn inject_stall_for_tests() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(ms) = std::env::var("PROGRESSDB_DEBUG_STALL_MS")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
    else {
        return;
    };
    glommio::spawn_local(async move {
        // Let the heartbeat stamp once first, so the gap is measured.
        glommio::timer::sleep(HEARTBEAT * 4).await;
        std::thread::sleep(Duration::from_millis(ms.min(1000)));
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_thread_is_named_as_sleeping() {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            tid_tx
                .send(unsafe { libc::syscall(libc::SYS_gettid) } as i32)
                .unwrap();
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let tid = tid_rx.recv().unwrap();
        // The thread spends nearly all its time asleep; look until seen so.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = doing(tid);
        while !seen.starts_with("sleep") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            seen = doing(tid);
        }
        stop.store(true, Ordering::Relaxed);
        sleeper.join().unwrap();
        assert!(seen.starts_with("sleep"), "{seen}");
        assert_eq!(syscall_name(libc::SYS_fdatasync), "fdatasync");
        assert_eq!(syscall_name(99_999), "system call 99999");
    }

    #[test]
    fn reads_the_cpu_of_a_thread_and_the_steal_of_a_cpu() {
        // A name with spaces and a parenthesis, then fields 3 to 39.
        let fields: Vec<String> = (3..=41).map(|field| field.to_string()).collect();
        let stat = format!("42 (shard (x) 1) {}", fields.join(" "));
        assert_eq!(processor_in_stat(&stat), Some(39));
        assert_eq!(processor_in_stat("42 (short) S 1"), None);
        let proc_stat = "cpu  10 0 5 900 1 0 2 77 0 0\n\
                         cpu0 5 0 2 450 1 0 1 30 0 0\n\
                         cpu1 5 0 3 450 0 0 1 47 0 0\n\
                         intr 12345";
        assert_eq!(steal_in_proc_stat(proc_stat, 0), Some(30));
        assert_eq!(steal_in_proc_stat(proc_stat, 1), Some(47));
        assert_eq!(steal_in_proc_stat(proc_stat, 2), None);
        // This machine's own counters read, whatever they hold.
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let cpu = cpu_of(tid);
        assert!(cpu.is_some_and(|cpu| {
            steal_in_proc_stat(&std::fs::read_to_string("/proc/stat").unwrap(), cpu).is_some()
        }));
    }
}
