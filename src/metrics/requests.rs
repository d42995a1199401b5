//! Per-core HTTP request counters for the admin stats: a total and the
//! recent rate. Each core counts the requests it accepted in its own
//! thread-local state (every shard is one pinned thread), so counting needs
//! no lock and no atomic shared between cores; `Command::Stats` reads the
//! counters of the shard it runs on.

use std::cell::RefCell;
use std::time::Instant;

/// One bucket per second; more than the longest window reported.
const BUCKETS: usize = 64;

/// What the stats report for one core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub total: u64,
    /// Mean requests per second over the last 10 whole seconds.
    pub per_second_10s: f64,
    /// Mean requests per second over the last 60 whole seconds.
    pub per_second_60s: f64,
}

/// Requests counted in per-second buckets, so the rate over the last
/// minute costs a 60-step sum and no per-request allocation.
struct Counter {
    started: Instant,
    total: u64,
    /// `(second since started, requests in that second)`; a bucket whose
    /// second is not the one asked about is stale and counts as zero.
    buckets: [(u64, u64); BUCKETS],
}

impl Counter {
    fn new(started: Instant) -> Counter {
        Counter {
            started,
            total: 0,
            buckets: [(u64::MAX, 0); BUCKETS],
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    fn record(&mut self, now: Instant) {
        let second = self.second(now);
        let bucket = &mut self.buckets[second as usize % BUCKETS];
        if bucket.0 != second {
            *bucket = (second, 0);
        }
        bucket.1 += 1;
        self.total += 1;
    }

    /// Mean rate over the `window` whole seconds before the current one
    /// (the current second is still filling up).
    fn rate(&self, now: Instant, window: u64) -> f64 {
        let current = self.second(now);
        let sum: u64 = (1..=window)
            .filter_map(|back| current.checked_sub(back))
            .map(|second| match self.buckets[second as usize % BUCKETS] {
                (stamp, count) if stamp == second => count,
                _ => 0,
            })
            .sum();
        sum as f64 / window as f64
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            total: self.total,
            per_second_10s: self.rate(now, 10),
            per_second_60s: self.rate(now, 60),
        }
    }
}

thread_local! {
    static COUNTER: RefCell<Counter> = RefCell::new(Counter::new(Instant::now()));
}

/// Counts one request accepted on this core.
pub fn record(now: Instant) {
    COUNTER.with(|counter| counter.borrow_mut().record(now));
}

/// This core's counters now.
pub fn snapshot() -> Snapshot {
    COUNTER.with(|counter| counter.borrow().snapshot(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_cover_whole_past_seconds_only() {
        let start = Instant::now();
        let mut counter = Counter::new(start);
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        for _ in 0..20 {
            counter.record(at(0.5));
        }
        for _ in 0..10 {
            counter.record(at(5.2));
        }
        // Still in second 5: the requests of second 5 are not counted yet.
        let now = counter.snapshot(at(5.9));
        assert_eq!(now.total, 30);
        assert_eq!(now.per_second_10s, 2.0);
        assert_eq!(now.per_second_60s, 20.0 / 60.0);
        let later = counter.snapshot(at(6.0));
        assert_eq!(later.per_second_10s, 3.0);
        // Second 0 has left the 10 s window, but not the 60 s one.
        let after = counter.snapshot(at(12.0));
        assert_eq!(after.per_second_10s, 1.0);
        assert_eq!(after.per_second_60s, 0.5);
    }

    #[test]
    fn stale_buckets_are_not_counted_after_wrapping() {
        let start = Instant::now();
        let mut counter = Counter::new(start);
        counter.record(start + Duration::from_secs(1));
        // Second 65 shares second 1's bucket; the old count must not leak in.
        let later = start + Duration::from_secs(66);
        assert_eq!(counter.snapshot(later).per_second_60s, 0.0);
        counter.record(start + Duration::from_secs(65));
        assert_eq!(counter.snapshot(later).per_second_10s, 0.1);
        assert_eq!(counter.total, 2);
    }
}
