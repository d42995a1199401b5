//! Who should own each partition, and the controller's compare-and-set
//! writes of that decision.
//!
//! The decision is pure ([`next_assignment`]): keep a live owner (moving a
//! partition costs a catch-up), else promote the first live standby (it
//! has been tailing the log), else the first live node in rendezvous order.
//! Standbys are the next live nodes in rendezvous order, so they spread
//! evenly and move little when membership changes. The epoch grows by one
//! exactly when the owner changes.

use serde::{Deserialize, Serialize};

use super::ports::{CoordError, Coordinator, Revision};
use super::{Epoch, NodeId, PartitionId};

/// The coordinator's record `assign/<p>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub owner: NodeId,
    pub standbys: Vec<NodeId>,
    pub epoch: Epoch,
}

/// The coordinator key of partition `p`'s assignment.
pub fn assignment_key(partition: PartitionId) -> String {
    format!("assign.{partition}")
}

/// Live nodes ordered by their rendezvous score for `partition`, highest
/// first; ties cannot occur between distinct ids in practice and are broken
/// by id so the order is total.
pub fn rendezvous_order(partition: PartitionId, live: &[NodeId]) -> Vec<NodeId> {
    let mut scored: Vec<(u64, &NodeId)> = live
        .iter()
        .map(|node| (score(partition, node), node))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, node)| node.clone()).collect()
}

/// FNV-1a over the node id and the partition number, then a final mix so
/// that ids differing in their last byte still spread.
fn score(partition: PartitionId, node: &NodeId) -> u64 {
    let bytes = node.0.bytes().chain(partition.0.to_le_bytes());
    let hash = bytes.fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    });
    let mixed = (hash ^ (hash >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    mixed ^ (mixed >> 33)
}

/// The assignment `partition` should have given the live nodes, or `None`
/// when `current` is already right (or no node is live).
pub fn next_assignment(
    partition: PartitionId,
    current: Option<&Assignment>,
    live: &[NodeId],
    standbys: usize,
) -> Option<Assignment> {
    let order = rendezvous_order(partition, live);
    let is_live = |node: &NodeId| order.contains(node);
    let (owner, epoch) = match current {
        Some(current) if is_live(&current.owner) => (current.owner.clone(), current.epoch),
        Some(current) => {
            let promoted = current
                .standbys
                .iter()
                .find(|node| is_live(node))
                .or(order.first())?;
            (promoted.clone(), Epoch(current.epoch.0 + 1))
        }
        None => (order.first()?.clone(), Epoch(1)),
    };
    let standbys: Vec<NodeId> = order
        .into_iter()
        .filter(|node| *node != owner)
        .take(standbys)
        .collect();
    let next = Assignment {
        owner,
        standbys,
        epoch,
    };
    (current != Some(&next)).then_some(next)
}

/// What one controller pass did to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    Unchanged,
    Written(Assignment),
    /// Someone else wrote first; the next pass starts from what they wrote.
    LostRace,
}

/// One controller step for one partition: read the assignment, decide, and
/// write with compare-and-set against the revision read.
pub fn reassign(
    coordinator: &impl Coordinator,
    partition: PartitionId,
    live: &[NodeId],
    standbys: usize,
) -> Result<PassOutcome, CoordError> {
    let key = assignment_key(partition);
    let stored = coordinator.get(&key)?;
    let current = match &stored {
        Some(versioned) => Some(decode(&versioned.value)?),
        None => None,
    };
    let Some(next) = next_assignment(partition, current.as_ref(), live, standbys) else {
        return Ok(PassOutcome::Unchanged);
    };
    write(
        coordinator,
        partition,
        next,
        stored.map(|versioned| versioned.revision),
    )
}

/// Writes `next` as `partition`'s assignment with compare-and-set: over
/// the revision `read_at`, or created when none was read. Someone who
/// wrote first wins, and this write is a lost race.
pub fn write(
    coordinator: &impl Coordinator,
    partition: PartitionId,
    next: Assignment,
    read_at: Option<Revision>,
) -> Result<PassOutcome, CoordError> {
    let key = assignment_key(partition);
    let value = serde_json::to_vec(&next).expect("an assignment always serialises");
    let written = match read_at {
        Some(revision) => coordinator.update(&key, &value, revision),
        None => coordinator.create(&key, &value),
    };
    match written {
        Ok(Revision(_)) => Ok(PassOutcome::Written(next)),
        Err(CoordError::Exists | CoordError::WrongRevision) => Ok(PassOutcome::LostRace),
        Err(other) => Err(other),
    }
}

/// Reads an assignment a node or controller stored.
pub fn decode(bytes: &[u8]) -> Result<Assignment, CoordError> {
    serde_json::from_slice(bytes)
        .map_err(|error| CoordError::Unavailable(format!("undecodable assignment: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names
            .iter()
            .map(|name| NodeId((*name).to_owned()))
            .collect()
    }

    #[test]
    fn first_assignment_spreads_owners_evenly() {
        let live = nodes(&["n1", "n2", "n3"]);
        let mut owned = std::collections::HashMap::new();
        for p in 0..300 {
            let assignment = next_assignment(PartitionId(p), None, &live, 1).unwrap();
            assert_eq!(assignment.epoch, Epoch(1));
            assert_eq!(assignment.standbys.len(), 1);
            assert_ne!(assignment.standbys[0], assignment.owner);
            *owned.entry(assignment.owner).or_insert(0) += 1;
        }
        assert!(
            owned.values().all(|&count| (70..=130).contains(&count)),
            "{owned:?}"
        );
    }

    #[test]
    fn live_owner_is_kept_and_dead_owner_hands_over_to_its_standby() {
        let live = nodes(&["n1", "n2", "n3"]);
        let first = next_assignment(PartitionId(5), None, &live, 1).unwrap();
        assert_eq!(
            next_assignment(PartitionId(5), Some(&first), &live, 1),
            None
        );
        let survivors: Vec<NodeId> = live
            .iter()
            .filter(|n| **n != first.owner)
            .cloned()
            .collect();
        let second = next_assignment(PartitionId(5), Some(&first), &survivors, 1).unwrap();
        assert_eq!(second.owner, first.standbys[0]);
        assert_eq!(second.epoch, Epoch(2));
        assert!(!second.standbys.contains(&second.owner));
        assert_eq!(
            next_assignment(PartitionId(5), Some(&second), &[], 1),
            None,
            "nobody live: keep"
        );
    }

    #[test]
    fn standby_change_alone_keeps_the_epoch() {
        let first = next_assignment(PartitionId(1), None, &nodes(&["n1", "n2"]), 1).unwrap();
        let grown =
            next_assignment(PartitionId(1), Some(&first), &nodes(&["n1", "n2", "n3"]), 2).unwrap();
        assert_eq!(
            (grown.owner.clone(), grown.epoch),
            (first.owner, first.epoch)
        );
        assert_eq!(grown.standbys.len(), 2);
    }
}
