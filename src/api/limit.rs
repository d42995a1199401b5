//! Rate limits: token buckets kept on each core.
//!
//! - Each (key, acting user) pair has its own bucket (`--rate-limit-rps`),
//!   so one browser user flooding through the shared frontend key does
//!   not put every other user of that key into 429.
//! - Each key also has a ceiling over all its users together
//!   (`--rate-limit-key-rps`), so a key cannot grow without bound by
//!   naming ever more users.
//! - Failed authentications are limited per source address
//!   (`--auth-failures-per-minute`): once an address has used its
//!   allowance, it gets 429 before any key is even compared.
//!
//! Every core admits its share of each configured rate (rate / shards,
//! burst / shards but at least one), so no counter is shared between
//! cores and a client spread over all cores gets the configured total.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

use crate::model::UserId;

/// Buckets kept per core before full ones are forgotten (a full bucket
/// behaves exactly like a missing one, so forgetting it changes nothing).
const BUCKETS_KEPT_MAX: usize = 65_536;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Token buckets by `K`, all with the same rate and burst.
struct Buckets<K> {
    /// Tokens per second on this core; 0 means no limit.
    rate: f64,
    burst: f64,
    by_key: RefCell<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate_per_s: f64, burst: u64, shards: usize) -> Buckets<K> {
        // A core's share of the rate may be a fraction (failures are
        // counted per minute); its share of the burst is at least one
        // request, or nothing would ever pass.
        Buckets {
            rate: rate_per_s.max(0.0) / shards as f64,
            burst: (burst as f64 / shards as f64).max(1.0),
            by_key: RefCell::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` (only checks when `!take`), or says after
    /// how many whole seconds one will be there.
    fn admit(&self, key: &K, now: Instant, take: bool) -> Result<(), u64> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let mut by_key = self.by_key.borrow_mut();
        if !by_key.contains_key(key) {
            if !take {
                return Ok(());
            }
            if by_key.len() >= BUCKETS_KEPT_MAX {
                self.forget_full(&mut by_key, now);
            }
        }
        let bucket = by_key.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    /// Drops the buckets that have refilled completely by `now`.
    fn forget_full(&self, by_key: &mut HashMap<K, Bucket>, now: Instant) {
        by_key.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens + elapsed * self.rate < self.burst
        });
    }
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// This user of this key (or a key acting for no user).
    User(u64),
    /// All users of this key together.
    Key(u64),
}

pub struct RateLimitSettings {
    pub user_rps: u64,
    pub user_burst: u64,
    pub key_rps: u64,
    pub auth_failures_per_minute: u64,
}

pub struct RateLimiter {
    per_user: Buckets<(usize, Option<UserId>)>,
    per_key: Buckets<usize>,
    auth_failures: Buckets<IpAddr>,
}

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings, shards: usize) -> RateLimiter {
        let failures = settings.auth_failures_per_minute;
        RateLimiter {
            per_user: Buckets::new(settings.user_rps as f64, settings.user_burst, shards),
            per_key: Buckets::new(settings.key_rps as f64, settings.key_rps, shards),
            auth_failures: Buckets::new(failures as f64 / 60.0, failures, shards),
        }
    }

    /// Takes a token for `user` of key `index`, then one of the key's.
    pub fn admit(&self, index: usize, user: Option<&UserId>, now: Instant) -> Result<(), Limited> {
        self.per_user
            .admit(&(index, user.cloned()), now, true)
            .map_err(Limited::User)?;
        self.per_key.admit(&index, now, true).map_err(Limited::Key)
    }

    /// Whether `peer` may try to authenticate; seconds to wait if not.
    pub fn may_authenticate(&self, peer: IpAddr, now: Instant) -> Result<(), u64> {
        self.auth_failures.admit(&address_block(peer), now, false)
    }

    /// Counts a failed authentication from `peer`.
    pub fn authentication_failed(&self, peer: IpAddr, now: Instant) {
        let _ = self.auth_failures.admit(&address_block(peer), now, true);
    }
}

/// The unit one client controls: an IPv4 address, or an IPv6 /64 (a host
/// usually gets a whole /64, so single IPv6 addresses cost it nothing).
fn address_block(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(user_rps: u64, user_burst: u64, key_rps: u64) -> RateLimitSettings {
        RateLimitSettings {
            user_rps,
            user_burst,
            key_rps,
            auth_failures_per_minute: 0,
        }
    }

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(&settings(4, 2, 0), 2);
        let start = Instant::now();
        // This core's share: 2 per second, burst 1.
        assert_eq!(limiter.admit(0, None, start), Ok(()));
        assert_eq!(limiter.admit(0, None, start), Err(Limited::User(1)));
        let early = start + Duration::from_millis(499);
        assert_eq!(limiter.admit(0, None, early), Err(Limited::User(1)));
        let refilled = start + Duration::from_millis(500);
        assert_eq!(limiter.admit(0, None, refilled), Ok(()));
    }

    #[test]
    fn users_and_keys_have_separate_buckets_and_zero_means_unlimited() {
        let limiter = RateLimiter::new(&settings(1, 1, 3), 1);
        let now = Instant::now();
        let (alice, bob) = (UserId::parse("alice"), UserId::parse("bob"));
        assert!(limiter.admit(0, alice.as_ref(), now).is_ok());
        assert!(limiter.admit(0, alice.as_ref(), now).is_err());
        assert!(limiter.admit(0, bob.as_ref(), now).is_ok());
        assert!(limiter.admit(1, alice.as_ref(), now).is_ok());
        // Key 0's ceiling of 3: alice and bob took two, carol the third.
        let (carol, dave) = (UserId::parse("carol"), UserId::parse("dave"));
        assert!(limiter.admit(0, carol.as_ref(), now).is_ok());
        assert_eq!(limiter.admit(0, dave.as_ref(), now), Err(Limited::Key(1)));
        let unlimited = RateLimiter::new(&settings(0, 0, 0), 1);
        assert!((0..1000).all(|_| unlimited.admit(0, None, now).is_ok()));
    }

    #[test]
    fn failed_authentications_are_limited_per_address_block() {
        let limiter = RateLimiter::new(
            &RateLimitSettings {
                auth_failures_per_minute: 2,
                ..settings(0, 0, 0)
            },
            1,
        );
        let now = Instant::now();
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same_block: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.may_authenticate(one, now).is_ok());
        limiter.authentication_failed(one, now);
        limiter.authentication_failed(same_block, now);
        assert_eq!(limiter.may_authenticate(one, now), Err(30));
        assert!(limiter.may_authenticate(other, now).is_ok());
    }
}
