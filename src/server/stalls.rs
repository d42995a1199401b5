//! Shard stall reports: a shard thread that runs (or blocks) for longer
//! than [`STALL_REPORT`] without returning to its reactor delays every
//! request on its core. glommio's stall detector arms a timer around each
//! run of tasks; when it fires it signals the shard thread and captures its
//! stack there (what it is blocked in is the cause), then logs it through
//! the `log` facade once the run ends; `logging` prints and counts it.

use std::time::Duration;

use glommio::{StallDetectionHandler, TaskQueueHandle};

/// A shard run longer than this is logged as a stall.
pub const STALL_REPORT: Duration = Duration::from_millis(10);

/// How long a shard runs tasks before it polls for I/O again. Shorter than
/// [`STALL_REPORT`], so a long run of short tasks is not taken for a stall.
pub const PREEMPT_TIMER: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub struct StallLog;

impl StallDetectionHandler for StallLog {
    fn threshold(&self, _queue: TaskQueueHandle, expected: Duration) -> Option<Duration> {
        Some(
            STALL_REPORT
                .saturating_sub(expected)
                .max(Duration::from_millis(1)),
        )
    }
}
