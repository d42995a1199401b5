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
