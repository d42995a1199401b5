//! Per-key rate limits: a token bucket per key, kept on each core.
//!
//! Every core admits its share of the configured rate (rate / shards,
//! burst / shards, at least one), so no counter is shared between cores and
//! a client spread over all cores gets the configured total.

use std::cell::RefCell;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct RateLimiter {
    /// Tokens per second on this core; 0 means no limit.
    rate: f64,
    burst: f64,
    buckets: RefCell<Vec<Option<Bucket>>>,
}

impl RateLimiter {
    pub fn new(rate_per_s: u64, burst: u64, shards: usize, keys: usize) -> RateLimiter {
        let share = |total: u64| (total as f64 / shards as f64).max(1.0);
        RateLimiter {
            rate: if rate_per_s == 0 {
                0.0
            } else {
                share(rate_per_s)
            },
            burst: share(burst),
            buckets: RefCell::new((0..keys).map(|_| None).collect()),
        }
    }

    /// Takes a token for key `index`, or says after how many whole seconds
    /// one will be there.
    pub fn admit(&self, index: usize, now: Instant) -> Result<(), u64> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.borrow_mut();
        let Some(slot) = buckets.get_mut(index) else {
            return Ok(());
        };
        let bucket = slot.get_or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(4, 2, 2, 1);
        let start = Instant::now();
        // This core's share: 2 per second, burst 1.
        assert_eq!(limiter.admit(0, start), Ok(()));
        assert_eq!(limiter.admit(0, start), Err(1));
        assert_eq!(limiter.admit(0, start + Duration::from_millis(499)), Err(1));
        assert_eq!(limiter.admit(0, start + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn keys_have_separate_buckets_and_zero_means_unlimited() {
        let limiter = RateLimiter::new(1, 1, 1, 2);
        let now = Instant::now();
        assert!(limiter.admit(0, now).is_ok());
        assert!(limiter.admit(1, now).is_ok());
        assert!(limiter.admit(0, now).is_err());
        let unlimited = RateLimiter::new(0, 0, 1, 1);
        assert!((0..1000).all(|_| unlimited.admit(0, now).is_ok()));
    }
}
