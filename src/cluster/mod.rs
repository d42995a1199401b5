//! Clustered mode (`--cluster`): partitions replicated through an external
//! log, with ownership decided by an external coordinator. No consensus of
//! our own: NATS JetStream (R3, file storage, `sync_interval: always`) is
//! both the log and, through its key-value buckets, the coordinator.
//!
//! This module owns the ownership and fencing protocol. Its core is pure and
//! synchronous: [`replica::Replica`] is the state of one partition on one
//! node, [`assignment`] decides who should own what, [`lease`] keeps time
//! for leases, and [`record`] is the byte layout of what goes into the log.
//! The engine it runs on is reached only through the two traits in
//! [`ports`], so the same logic runs against in-memory fakes in unit tests
//! (`fake`) and against JetStream ([`nats`], on its own thread). [`driver`]
//! runs one replica against a [`ports::Log`] synchronously, and [`node`]
//! runs a node's duties (membership, controller, following assignments)
//! one bounded step at a time.
//!
//! In the server, [`runtime`] is the cluster thread that runs the node and
//! appends its writes ([`flush`] is a record's body: the WAL bytes of the
//! writes it carries); [`shard`] is a shard's side (which partitions it may
//! write, the writes a command waits on, records to apply); [`forward`]
//! carries a request to the node that owns its partition. Thread listings
//! and counts are gathered from every node at the API edge
//! (`api/fanout.rs`), each node answering for the partitions it owns
//! ([`PartitionSet`]), so a standby's copy is never listed twice.
//!
//! # Protocol
//!
//! **Partitions.** `partition = fnv1a(thread) mod P` ([`partition_for`]),
//! the hash that places threads on shards. P is fixed when the cluster is
//! created and is a multiple of the shard count, so a partition lies inside
//! one shard of a single-node data directory. Each partition is one log
//! (one JetStream stream); its sequence numbers start at 1 and have no gaps.
//!
//! **Two kinds of ownership.** The coordinator says who *should* own a
//! partition: `assign.<p>` holds `{owner, standbys, epoch}` and is only
//! ever changed with compare-and-set on its revision, so epochs grow by one
//! per change of owner and two controllers cannot both win. The log says
//! who *does* own it: the last *barrier* record in the log, `{epoch, node}`.
//! Only the node named by the last barrier may append data, and it can only
//! append at the sequence it has applied up to (`expected last sequence`).
//! Whoever appends with a stale view fails that check. The coordinator can
//! be wrong for a while (a paused controller, an expired lease that has not
//! been noticed yet); the log cannot, because appends are serialised by the
//! log's own consensus.
//!
//! **Taking over.** A node assigned epoch `e` for partition `p` reads the
//! log to its end, applying every record, and refuses if the log already
//! names an epoch `>= e` (its assignment is stale). Then it appends
//! `Barrier{e, node, prev = last}` with expected last sequence `last`. A
//! mismatch means someone appended meanwhile (the previous owner, still
//! alive): it reads on and tries again, a bounded number of times. Once its
//! barrier is in the log it is the owner; the previous owner's next append
//! fails the sequence check, which fences it. A node that finds its own
//! barrier at its assigned epoch without owning the partition (it
//! restarted, or was fenced, and renewed its lease before the controller
//! saw it go) moves its assignment to the next epoch itself, with the same
//! compare-and-set, and takes over there: the controller keeps a live
//! owner's assignment as it is, so nobody else would.
//!
//! **A write.** The owner frames one group-commit flush as one `Frame{epoch,
//! flush, prev, payload}` record and appends it with expected last sequence
//! = what it has applied and dedupe id `p:epoch:flush` (unique: epochs are
//! unique per owner term, flush numbers count up within it). Only one flush
//! per partition is in flight. The clients of that flush are answered only
//! once the append is acknowledged (a quorum of the log's servers has it on
//! disk); then it is applied like any other record.
//!
//! **Fencing.** An owner stops accepting writes (503 with `Retry-After`)
//! when its append fails the sequence check and the record in its place is
//! not its own, when it reads a barrier of another node, when its
//! assignment names another owner, or when its node lease is no longer
//! valid by its own clock. It drops nothing it has not been told: pending
//! writes fail with 503, which is true (they are not in the log), and it
//! becomes a follower that reads on.
//!
//! **Unclear acknowledgements.** When an append times out or the connection
//! drops, the record may or may not be in the log, and may still land. The
//! owner never guesses: it reads from `expected + 1`. Its own record there
//! (matched by epoch and flush) means committed; another record there means
//! its record can never land (the expected-sequence check forbids it), so
//! the flush failed and the owner is fenced; nothing there means it appends
//! the same bytes again with the same dedupe id and expected sequence,
//! which either lands once or fails the sequence check, after which it reads
//! again. After a bounded number of rounds the partition stops taking
//! writes and keeps the flush unresolved, still answering nothing.
//!
//! **Appliers check.** Every record's `prev` must equal the sequence before
//! it, barriers must carry increasing epochs and data records the epoch of
//! the last barrier; anything else halts the partition loudly instead of
//! applying a log it does not understand.
//!
//! **Materialised state follows the log.** A replica applies only records
//! it read from (or had acknowledged by) the log, in sequence order. The
//! owner applies its own writes to its store as it executes them, before
//! the log has them, as the single-node write path does before its WAL
//! flush is durable; and as there, nothing is shown before it is settled:
//! a read that may see a write the log has not acknowledged waits for the
//! acknowledgement ([`shard`]'s `Unacknowledged`). A flush that is then
//! `Lost` stays in the fenced owner's store, unseen, and the owner exits so
//! that its next start rebuilds the store from the log.
//!
//! **Leases.** A node heartbeats `node.<id>` in a bucket whose entries
//! expire after the lease TTL. It counts its lease valid until
//! `sent + ttl - margin` by its own monotonic clock, where `sent` is when
//! the renewal left, so it gives up before the coordinator lets anyone
//! replace it. A
//! controller is elected the same way (`controller` created if absent,
//! renewed with compare-and-set).
//!
//! # Decisions, and why
//!
//! - **A record per partition, not per shard flush.** A shard's group
//!   commit mixes threads of several partitions, and partitions move
//!   between nodes one by one, so the cluster thread ([`runtime`]) splits
//!   the node's writes by partition and appends each part to its own
//!   stream (in parallel, each with its own expected sequence); each
//!   writer waits only for its partition's part.
//! - **Barriers in the log.** The expected-sequence check alone fences an
//!   old owner only once the new owner has appended something; between the
//!   new owner's catch-up and its first write both would think they own the
//!   partition. The barrier makes the change of owner a record, ordered
//!   with the data, and lets appliers verify who wrote what.
//! - **Leader reads.** Records and coordinator entries are read from the
//!   stream leader, not with direct gets that a lagging replica may answer:
//!   a stale read cannot break the protocol (a replica holds a prefix of
//!   the log) but makes controllers decide on old assignments.
//! - **The dedupe id helps, the sequence check decides.** JetStream forgets
//!   dedupe ids after its duplicate window; a retried record can land at
//!   most once because it can only land at `expected + 1`.
//! - **Leases by the holder's clock.** An owner stops serving before its
//!   lease can expire at the coordinator, so a partition is reassigned only
//!   after its old owner stopped by its own clock. The margin covers clock
//!   drift, not pauses: a process paused between its lease check and its
//!   answer can still give one stale read (never a lost write: the log
//!   fences those).
//! - **NATS KV, not etcd.** Compare-and-set (expected last subject
//!   sequence) and expiring entries (bucket `max_age`) are all the
//!   coordinator needs, on the servers that already hold the log.
//! - **Verified at startup.** Streams must be file-stored, R3, persisted
//!   before acknowledging and undeletable; every server must report
//!   `sync_always` (the default lazy fsync can lose acknowledged messages
//!   when servers fail together).

pub mod assignment;
pub mod conformance;
pub mod driver;
#[cfg(test)]
pub mod fake;
pub mod flush;
pub mod forward;
pub mod lease;
pub mod nats;
pub mod node;
pub mod ports;
pub mod record;
pub mod relay;
pub mod replica;
pub mod runtime;
#[cfg(test)]
mod scenarios;
pub mod shard;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::shard::shard_for;

/// Index of a partition, `0..partition_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u32);

/// A node's stable name in the cluster (`--node-id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

/// Owner term of a partition; grows by one per change of owner.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// Sequence number of a record in a partition's log; 0 means "before the
/// first record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seq(pub u64);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// Milliseconds on a monotonic clock the caller owns. The core never reads
/// a clock itself, so tests can step time.
pub type Millis = u64;

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a partition count cannot be used with a shard count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionCountError {
    Zero,
    NotMultipleOfShards { partitions: u32, shards: usize },
}

/// Checks that `partitions` is usable with `shards` cores: positive and a
/// multiple of the shard count, so that `partition mod shards` is the shard
/// `shard_for` picks and a partition never spans two shards.
pub fn validate_partition_count(partitions: u32, shards: usize) -> Result<(), PartitionCountError> {
    if partitions == 0 || shards == 0 {
        return Err(PartitionCountError::Zero);
    }
    if !(partitions as usize).is_multiple_of(shards) {
        return Err(PartitionCountError::NotMultipleOfShards { partitions, shards });
    }
    Ok(())
}

/// The partition that holds `thread_id` in a cluster of `partition_count`
/// partitions: the same FNV-1a hash as [`shard_for`], reduced modulo P.
pub fn partition_for(thread_id: &str, partition_count: u32) -> PartitionId {
    PartitionId(shard_for(thread_id, partition_count as usize).0 as u32)
}

/// Some partitions of a cluster of `count`: those a node answers a
/// listing for (the ones it owns), so that a listing gathered from every
/// node names each thread once, by its owner, and never twice through a
/// standby's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSet {
    count: u32,
    members: Vec<bool>,
}

impl PartitionSet {
    pub fn new(count: u32, members: impl IntoIterator<Item = PartitionId>) -> PartitionSet {
        let mut set = vec![false; count as usize];
        for partition in members {
            if let Some(member) = set.get_mut(partition.0 as usize) {
                *member = true;
            }
        }
        PartitionSet {
            count,
            members: set,
        }
    }

    pub fn contains(&self, partition: PartitionId) -> bool {
        self.members.get(partition.0 as usize) == Some(&true)
    }

    /// Whether `thread_id` lies in one of these partitions.
    pub fn holds_thread(&self, thread_id: &str) -> bool {
        self.contains(partition_for(thread_id, self.count))
    }

    pub fn members(&self) -> impl Iterator<Item = PartitionId> + '_ {
        (0..self.count)
            .map(PartitionId)
            .filter(|partition| self.contains(*partition))
    }

    /// The set as text for a header: the partition count, `:`, and the
    /// members as a bitmap in hex (4 partitions a digit, lowest first).
    pub fn encode(&self) -> String {
        let digits = self.members.chunks(4).map(|nibble| {
            let bits = nibble
                .iter()
                .enumerate()
                .fold(0u32, |bits, (at, member)| bits | (u32::from(*member) << at));
            char::from_digit(bits, 16).expect("a nibble is one hex digit")
        });
        format!("{}:{}", self.count, digits.collect::<String>())
    }

    /// Reads [`PartitionSet::encode`]'s text, for a cluster of `count`
    /// partitions; `None` when it is not that.
    pub fn decode(text: &str, count: u32) -> Option<PartitionSet> {
        let (given, digits) = text.split_once(':')?;
        if given.parse::<u32>().ok()? != count || digits.len() != (count as usize).div_ceil(4) {
            return None;
        }
        let mut members = Vec::with_capacity(count as usize);
        for digit in digits.chars() {
            let bits = digit.to_digit(16)?;
            members.extend((0..4).map(|at| bits & (1 << at) != 0));
        }
        if members[count as usize..].iter().any(|member| *member) {
            return None;
        }
        members.truncate(count as usize);
        Some(PartitionSet { count, members })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Guards the mapping of existing single-node data onto partitions: when
    // P is a multiple of the shard count, a thread's partition lies in the
    // shard that holds it today.
    #[test]
    fn partition_lies_inside_the_threads_shard() {
        for shards in [1usize, 2, 4, 8] {
            let partitions = 64;
            validate_partition_count(partitions, shards).unwrap();
            for i in 0..2_000 {
                let thread = format!("thread-{i}");
                let p = partition_for(&thread, partitions);
                assert_eq!(p.0 as usize % shards, shard_for(&thread, shards).0);
            }
        }
    }

    #[test]
    fn partition_count_must_be_a_positive_multiple_of_shards() {
        assert_eq!(
            validate_partition_count(0, 2),
            Err(PartitionCountError::Zero)
        );
        assert_eq!(
            validate_partition_count(10, 4),
            Err(PartitionCountError::NotMultipleOfShards {
                partitions: 10,
                shards: 4
            })
        );
        assert_eq!(validate_partition_count(8, 4), Ok(()));
    }

    #[test]
    fn a_partition_set_round_trips_its_header_text_and_refuses_others() {
        let set = PartitionSet::new(10, [0, 5, 9].map(PartitionId));
        assert_eq!(set.encode(), "10:122");
        assert_eq!(PartitionSet::decode(&set.encode(), 10), Some(set.clone()));
        let members: Vec<u32> = set.members().map(|p| p.0).collect();
        assert_eq!(members, vec![0, 5, 9]);
        for bad in ["", "10", "8:12", "10:12", "10:1g2", "10:12f"] {
            assert_eq!(PartitionSet::decode(bad, 10), None, "{bad}");
        }
        let thread = (0..).map(|i| format!("t{i}")).find(|t| set.holds_thread(t));
        assert!(set.contains(partition_for(&thread.unwrap(), 10)));
    }
}
