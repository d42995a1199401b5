//! File descriptors: the server raises its own limit at start, keeps the
//! connection limit within it, and keeps one spare descriptor per shard so
//! a client arriving when descriptors run out anyway gets a 503 instead of
//! waiting in the accept queue forever.

use std::fs::File;

use crate::logging;

/// Descriptors the process needs besides shards: stdio, the signal and
/// port-reservation sockets, the KMS, logs.
const PROCESS_FDS: u64 = 64;
/// Descriptors one shard needs besides its connections: the store's table
/// descriptor cache (256), WAL segments, io_uring rings, eventfds, the
/// mesh, listeners, and its spare descriptor.
pub const SHARD_FDS: u64 = 320;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit now in force (`None` if it cannot be read, or is unlimited).
pub fn raise_nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and has no other effects.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `configured` connections per shard, lowered so that every shard's
/// connections fit under `soft_limit` descriptors; at least one.
pub fn connections_that_fit(configured: usize, shards: usize, soft_limit: Option<u64>) -> usize {
    let Some(soft_limit) = soft_limit else {
        return configured;
    };
    let shards = shards as u64;
    let spare = soft_limit.saturating_sub(PROCESS_FDS + shards * SHARD_FDS);
    let fit = usize::try_from(spare / shards).unwrap_or(usize::MAX).max(1);
    if fit < configured {
        logging::warn(
            "connections per shard lowered to fit the open-files limit",
            &[
                ("connections_per_shard_max", &fit),
                ("configured", &configured),
                ("nofile", &soft_limit),
                ("shards", &shards),
            ],
        );
    }
    fit.min(configured)
}

/// One descriptor held in reserve. When `accept` fails for lack of
/// descriptors, the reserve is given up so the waiting client can be
/// accepted and told 503, then taken again.
pub struct Spare(Option<File>);

impl Spare {
    pub fn new() -> Spare {
        Spare(File::open("/dev/null").ok())
    }

    /// Gives the descriptor back to the process; false if none was held.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes a descriptor in reserve again (after the 503 is sent).
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

/// Whether an accept error means the process or system is out of
/// descriptors.
pub fn out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_clamped_to_the_descriptors_left() {
        assert_eq!(connections_that_fit(10_000, 2, None), 10_000);
        assert_eq!(connections_that_fit(10_000, 2, Some(1 << 20)), 10_000);
        // 1024 - 64 - 2 * 320 = 320 left, 160 per shard.
        assert_eq!(connections_that_fit(10_000, 2, Some(1024)), 160);
        assert_eq!(connections_that_fit(10_000, 4, Some(100)), 1);
    }
}
