//! What the cluster core needs from the engine underneath: an append-only
//! log per partition with compare-and-append, and a key-value coordinator
//! with compare-and-set and expiring entries. JetStream provides both
//! (streams, and KV buckets with `max_age`); so could Kafka/Redpanda plus
//! etcd. The calls block the calling thread, so a shard never calls them
//! directly: they run on a cluster thread, or through a bridge whose replies
//! a shard awaits.

use super::{PartitionId, Seq};

/// How many records one `read` returns at most.
pub const READ_BATCH_MAX: usize = 256;

/// Why an append did not (visibly) succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The log's last sequence was not the expected one: nothing was
    /// written. `last` is the log's last sequence when the log says it.
    WrongLastSequence { last: Option<Seq> },
    /// No answer (timeout, connection lost): the record may or may not be
    /// in the log, and may still land. Only reading the log can tell.
    Unclear,
    /// The log refused before writing anything (no quorum, not found).
    Unavailable(String),
}

/// Why a read failed; nothing was consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError(pub String);

/// A partitioned, replicated, append-only log.
pub trait Log {
    /// Appends `record` as the next entry of `partition` only if the log's
    /// last sequence is `expected_last`, and returns its sequence (which is
    /// then `expected_last + 1`). `dedupe_id` makes a retried append of the
    /// same record land at most once while the log remembers the id.
    fn append(
        &self,
        partition: PartitionId,
        expected_last: Seq,
        dedupe_id: &str,
        record: &[u8],
    ) -> Result<Seq, AppendError>;

    /// Up to `max` (at most [`READ_BATCH_MAX`]) records of `partition`
    /// from sequence `from` on, in order and without gaps; empty at the end.
    fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError>;

    /// The sequence of the last record of `partition` (0 when empty).
    fn last_seq(&self, partition: PartitionId) -> Result<Seq, LogError>;
}

/// Version of a key's value; changes on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub u64);

/// A value with the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// Why a coordinator call did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordError {
    /// `create` found the key present.
    Exists,
    /// `update` found another revision (or no key): someone else wrote.
    WrongRevision,
    /// No answer or no quorum; whether a write happened is unknown, so the
    /// caller re-reads before it acts on it.
    Unavailable(String),
}

/// A key-value store with compare-and-set. Entries of a bucket with a TTL
/// disappear once not written for that long.
pub trait Coordinator {
    fn get(&self, key: &str) -> Result<Option<Versioned>, CoordError>;
    /// Writes `key` only if absent (or expired).
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, CoordError>;
    /// Writes `key` only if its current revision is `expected`.
    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, CoordError>;
    /// Names of the present keys that start with `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Result<Vec<String>, CoordError>;
}
