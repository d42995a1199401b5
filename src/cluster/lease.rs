//! Leases on coordinator keys that expire: a node's membership
//! (`node.<id>`) and the controller's office (`controller`).
//!
//! A lease is held from a successful create or compare-and-set update until
//! `sent + ttl - margin` by the holder's monotonic clock, where `sent` is
//! when the request left. The coordinator starts its TTL when the write
//! arrives, which is later, so the holder gives up first; `margin` covers
//! the two clocks running at slightly different rates.

use super::Millis;
use super::ports::{CoordError, Coordinator, Revision};

#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    ttl_ms: Millis,
    margin_ms: Millis,
    revision: Option<Revision>,
    valid_until: Option<Millis>,
}

/// What a renewal attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Held {
        valid_until: Millis,
    },
    /// Someone else holds the key, or ours expired and was replaced: every
    /// partition owned under this lease must be fenced now.
    Lost,
}

impl Lease {
    /// A lease not yet held. Panics if `margin_ms >= ttl_ms` (a lease that
    /// would never be valid is a configuration bug caught at start).
    pub fn new(key: String, ttl_ms: Millis, margin_ms: Millis) -> Lease {
        assert!(margin_ms < ttl_ms, "lease margin must be below its TTL");
        Lease {
            key,
            ttl_ms,
            margin_ms,
            revision: None,
            valid_until: None,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn is_valid(&self, now: Millis) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }

    /// Acquires or renews the lease; `sent` is the clock when the request
    /// leaves (read it before calling). An unclear answer keeps the old
    /// deadline, which runs out by itself; the stale revision then makes the
    /// next renewal fail, so an unclear write is never taken as held.
    pub fn renew(
        &mut self,
        coordinator: &impl Coordinator,
        value: &[u8],
        sent: Millis,
    ) -> Result<Renewal, CoordError> {
        let written = match self.revision {
            None => coordinator.create(&self.key, value),
            Some(revision) => coordinator.update(&self.key, value, revision),
        };
        match written {
            Ok(revision) => {
                let valid_until = sent + self.ttl_ms - self.margin_ms;
                self.revision = Some(revision);
                self.valid_until = Some(valid_until);
                Ok(Renewal::Held { valid_until })
            }
            Err(CoordError::Exists | CoordError::WrongRevision) => {
                self.revision = None;
                self.valid_until = None;
                Ok(Renewal::Lost)
            }
            Err(unavailable) => Err(unavailable),
        }
    }
}
