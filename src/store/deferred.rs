//! Write-back of the records that every post rewrites: a thread's record
//! (counters, last activity) and its author's participant record (posted
//! count). Inserting each new version into the memtable cost two skiplist
//! inserts per post, and every superseded version was then flushed and
//! compacted again. Here a record's versions wait in a map until the
//! memtable is sealed (or a scan needs the tree to be whole), and only the
//! versions that may still matter go into the memtable then.
//!
//! Nothing is lost by waiting: the write-ahead log already holds every
//! version, and the log is truncated only up to what the tables hold, which
//! includes everything drained here before the memtable was sealed.
//!
//! A key keeps its newest version the log has on disk (its `durable` LSN
//! when the key was last written) and every newer one, so that after a log
//! failure ([`Deferred::forget_after`]) the newest version the log kept can
//! still be read.

use std::collections::HashMap;

/// A version of a record: its LSN and value (`None`: removed).
type Version = (u64, Option<Vec<u8>>);

/// Bytes counted for a version besides its key and value.
const VERSION_OVERHEAD: u64 = 48;

/// Records waiting for the memtable, by stored key.
#[derive(Default)]
pub(super) struct Deferred {
    /// Versions of each key, oldest first; never empty.
    versions: HashMap<Vec<u8>, Vec<Version>>,
    bytes: u64,
}

fn version_bytes(key_len: usize, version: &Version) -> u64 {
    let value = version.1.as_ref().map_or(0, Vec::len);
    (key_len + value) as u64 + VERSION_OVERHEAD
}

impl Deferred {
    /// Memory the waiting versions take, roughly, counted against the
    /// memtable's size so that the two together stay within its limit.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Adds `key`'s version written at `lsn`. Versions older than the
    /// newest one at or below `durable` (the log's LSN on disk) can never
    /// be read again and are dropped.
    pub fn put(&mut self, key: &[u8], lsn: u64, value: Option<Vec<u8>>, durable: u64) {
        let version = (lsn, value);
        let key_len = key.len();
        self.bytes += version_bytes(key_len, &version);
        // Keys are rewritten far more often than they are new: look up
        // before copying the key.
        let Some(versions) = self.versions.get_mut(key) else {
            self.versions.insert(key.to_vec(), vec![version]);
            return;
        };
        versions.push(version);
        let base = versions
            .iter()
            .rposition(|(lsn, _)| *lsn <= durable)
            .unwrap_or(0);
        for dropped in versions.drain(..base) {
            self.bytes -= version_bytes(key_len, &dropped);
        }
    }

    /// The newest version of `key`: `Some(None)` when it was removed,
    /// `None` when nothing of it waits here.
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let versions = self.versions.get(key)?;
        versions.last().map(|(_, value)| value.as_deref())
    }

    /// Drops every version written after `lsn` (the log lost them).
    pub fn forget_after(&mut self, lsn: u64) {
        let mut bytes = 0;
        self.versions.retain(|key, versions| {
            versions.retain(|version| version.0 <= lsn);
            bytes += versions
                .iter()
                .map(|version| version_bytes(key.len(), version))
                .sum::<u64>();
            !versions.is_empty()
        });
        self.bytes = bytes;
    }

    /// Takes every waiting version, as (key, LSN, value), for the memtable.
    pub fn drain(&mut self) -> impl Iterator<Item = (Vec<u8>, u64, Option<Vec<u8>>)> {
        self.bytes = 0;
        self.versions.drain().flat_map(|(key, versions)| {
            versions
                .into_iter()
                .map(move |(lsn, value)| (key.clone(), lsn, value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<Vec<u8>> {
        Some(text.as_bytes().to_vec())
    }

    fn drained(deferred: &mut Deferred) -> Vec<(Vec<u8>, u64, Option<Vec<u8>>)> {
        let mut items: Vec<_> = deferred.drain().collect();
        items.sort();
        items
    }

    #[test]
    fn reads_the_newest_version_and_a_removal() {
        let mut deferred = Deferred::default();
        assert_eq!(deferred.get(b"t"), None);
        deferred.put(b"t", 1, value("one"), 0);
        deferred.put(b"t", 2, value("two"), 0);
        assert_eq!(deferred.get(b"t"), Some(Some(&b"two"[..])));
        deferred.put(b"t", 3, None, 0);
        assert_eq!(deferred.get(b"t"), Some(None));
        assert_eq!(deferred.get(b"u"), None);
    }

    #[test]
    fn keeps_only_the_newest_durable_version_and_newer_ones() {
        let mut deferred = Deferred::default();
        deferred.put(b"t", 1, value("one"), 0);
        deferred.put(b"t", 2, value("two"), 1);
        deferred.put(b"t", 3, value("three"), 2);
        // Durable through 2: version 1 can no longer be read, 2 can (if
        // the log loses 3).
        let items = drained(&mut deferred);
        let lsns: Vec<u64> = items.iter().map(|item| item.1).collect();
        assert_eq!(lsns, vec![2, 3]);
        assert!(deferred.is_empty());
        assert_eq!(deferred.bytes(), 0);
    }

    #[test]
    fn forgetting_lost_writes_reads_the_version_the_log_kept() {
        let mut deferred = Deferred::default();
        deferred.put(b"t", 4, value("four"), 4);
        deferred.put(b"t", 5, value("five"), 4);
        deferred.put(b"u", 6, value("six"), 4);
        deferred.forget_after(4);
        assert_eq!(deferred.get(b"t"), Some(Some(&b"four"[..])));
        assert_eq!(deferred.get(b"u"), None);
        assert_eq!(deferred.bytes(), version_bytes(1, &(4, value("four"))));
    }

    #[test]
    fn counts_the_bytes_of_what_waits() {
        let mut deferred = Deferred::default();
        deferred.put(b"key", 1, value("12345"), 0);
        assert_eq!(deferred.bytes(), 8 + VERSION_OVERHEAD);
        deferred.put(b"key", 2, value("1"), 2);
        // Version 1 is dropped: version 2 is durable.
        assert_eq!(deferred.bytes(), 4 + VERSION_OVERHEAD);
        let _ = drained(&mut deferred);
        assert_eq!(deferred.bytes(), 0);
    }
}
