//! The async runtime everything above the server's I/O runs on: one glommio
//! executor per thread, io_uring underneath. Layers that only need tasks,
//! timers and a way out for blocking calls (engine, API, embedded mode,
//! offline tools) use these few functions, so the runtime is named in the
//! files that do I/O through it (server, mesh, WAL, PostgreSQL listener)
//! and here, not throughout the code.

use std::future::Future;
use std::time::Duration;

pub use glommio::task::JoinHandle;
pub use glommio::{ExecutorJoinHandle, Task};

/// Runs `future` on this thread's executor; dropping the task cancels it.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

/// Runs `future` on this thread's executor until it finishes on its own.
pub fn spawn_detached<T: 'static>(future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
    glommio::spawn_local(future).detach()
}

pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `work` on the executor's blocking-call thread pool, so a call that
/// may wait (a KMS round trip, a large file copy) never stalls the shard.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(work).await
}

/// Starts a thread named `name` running one executor (not pinned to a
/// core) with `io_memory` bytes of io_uring buffers, and runs the future
/// `start` makes on it.
pub fn start_thread<T, F>(
    name: &str,
    io_memory: usize,
    start: impl FnOnce() -> F + Send + 'static,
) -> Result<ExecutorJoinHandle<T>, String>
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(name)
        .io_memory(io_memory)
        .spawn(start)
        .map_err(|err| format!("cannot start the {name} executor: {err}"))
}

/// Whether glommio's rings are set up with cooperative task running, as the
/// project's copy of liburing asks (`src/vendor/liburing/PATCHES.md`).
/// False on kernels older than 5.19, and when glommio was built with its own
/// bundled liburing: cargo does not rebuild glommio when
/// `.cargo/config.toml` first points it at ours, so a target directory from
/// before that keeps the old build until `cargo clean -p glommio`.
pub fn rings_are_cooperative() -> bool {
    /// IORING_SETUP_COOP_TASKRUN.
    const COOP_TASKRUN: u32 = 1 << 8;
    /// The kernel's `struct io_uring_params`: seven words, three reserved,
    /// then the two ring-offset structures (ten words each, ending in a
    /// 64-bit field, hence the alignment).
    #[repr(C, align(8))]
    struct Params {
        words: [u32; 10],
        offsets: [u32; 20],
    }
    const FLAGS: usize = 2;
    unsafe extern "C" {
        // liburing as glommio links it into this binary.
        fn io_uring_queue_init_params(entries: u32, ring: *mut u64, params: *mut Params) -> i32;
        fn io_uring_queue_exit(ring: *mut u64);
    }
    // liburing's `struct io_uring` is about 220 bytes; this is room to spare.
    let mut ring = [0u64; 64];
    let mut params = Params {
        words: [0; 10],
        offsets: [0; 20],
    };
    // SAFETY: both buffers outlive the calls and are larger than the
    // structures liburing writes; a ring set up here is torn down before
    // `ring` goes out of scope, and one that failed to set up holds nothing.
    unsafe {
        if io_uring_queue_init_params(2, ring.as_mut_ptr(), &mut params) != 0 {
            return false;
        }
        io_uring_queue_exit(ring.as_mut_ptr());
    }
    params.words[FLAGS] & COOP_TASKRUN != 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn rings_are_set_up_with_cooperative_task_running() {
        assert!(
            super::rings_are_cooperative(),
            "glommio's liburing does not ask for IORING_SETUP_COOP_TASKRUN: \
             run `cargo clean -p glommio` (or the kernel is older than 5.19)"
        );
    }
}
