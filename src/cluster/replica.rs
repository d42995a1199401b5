//! One partition on one node: follower, candidate, owner — and the checks
//! that keep a stale owner from answering a write it cannot have committed.
//!
//! Pure: it decides what to append and what a record read back means, and
//! never performs I/O. [`super::driver`] feeds it a log.

use super::record::{DecodeError, EncodeError, Record};
use super::{Epoch, NodeId, PartitionId, Seq};

/// What the replica is doing with its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Applies what the log holds; refuses writes.
    Follower,
    /// Assigned `epoch`; owner once its barrier is in the log.
    Candidate { epoch: Epoch },
    /// Named by the log's last barrier; appends flushes.
    Owner { epoch: Epoch, next_flush: u64 },
    /// Read a record it cannot apply; serves nothing until an operator
    /// looks (a log it does not understand must not be half-applied).
    Halted(Halt),
}

/// Why a replica stopped applying its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    Gap {
        expected: Seq,
        got: Seq,
    },
    PrevMismatch {
        seq: Seq,
        prev: Seq,
    },
    Undecodable {
        seq: Seq,
        error: DecodeError,
    },
    /// A barrier whose epoch is not above the last one.
    StaleBarrier {
        seq: Seq,
        epoch: Epoch,
    },
    /// Data written in an epoch that does not own the log.
    ForeignEpoch {
        seq: Seq,
        epoch: Epoch,
    },
}

/// Why a write is refused; each is a 503 with `Retry-After` at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not the owner (never was, or fenced); `owner` is who the log names.
    NotOwner {
        owner: Option<NodeId>,
    },
    /// The previous flush has no answer yet.
    FlushInFlight,
    /// The flush could not be framed.
    Encode(EncodeError),
    Halted,
}

impl Refusal {
    /// Seconds a client should wait before retrying: about one lease
    /// renewal, the time a failover needs to make progress.
    pub fn retry_after_s(&self) -> u32 {
        match self {
            Refusal::Halted => 30,
            _ => 1,
        }
    }
}

/// A record to append, exactly as it must be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub expected_last: Seq,
    pub dedupe_id: String,
    pub bytes: Vec<u8>,
}

/// The owner's flush waiting for its answer from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    epoch: Epoch,
    flush: u64,
    append: Append,
}

/// What applying one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Ownership moved to `node` in `epoch`.
    Barrier { epoch: Epoch, node: NodeId },
    /// A flush to apply to the store and live tail.
    Data { payload: Vec<u8> },
}

impl Effect {
    /// The flush to apply, if this is one.
    pub fn into_data(self) -> Option<Vec<u8>> {
        match self {
            Effect::Data { payload } => Some(payload),
            Effect::Barrier { .. } => None,
        }
    }
}

/// The answer for the flush in flight, learnt from the log itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The flush is the log's record `seq`.
    Committed { flush: u64, seq: Seq },
    /// Another record took the flush's place: it is not in the log and can
    /// never land there.
    Lost { flush: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub seq: Seq,
    pub effect: Effect,
    pub resolved: Option<Resolved>,
}

/// A candidate's assignment is older than what the log already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleEpoch {
    pub log_epoch: Epoch,
}

#[derive(Debug)]
pub struct Replica {
    node: NodeId,
    partition: PartitionId,
    applied: Seq,
    log_owner: Option<(Epoch, NodeId)>,
    role: Role,
    in_flight: Option<InFlight>,
}

impl Replica {
    pub fn new(node: NodeId, partition: PartitionId) -> Replica {
        Replica {
            node,
            partition,
            applied: Seq(0),
            log_owner: None,
            role: Role::Follower,
            in_flight: None,
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn applied(&self) -> Seq {
        self.applied
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn log_owner(&self) -> Option<&(Epoch, NodeId)> {
        self.log_owner.as_ref()
    }

    pub fn has_flush_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    fn log_epoch(&self) -> Epoch {
        self.log_owner
            .as_ref()
            .map_or(Epoch(0), |(epoch, _)| *epoch)
    }

    fn dedupe_id(&self, epoch: Epoch, flush: u64) -> String {
        format!("{}:{}:{}", self.partition, epoch.0, flush)
    }

    /// Starts taking over in `epoch` (the coordinator assigned it). The
    /// caller reads the log to its end, then appends [`Replica::barrier`].
    pub fn begin_takeover(&mut self, epoch: Epoch) -> Result<(), StaleEpoch> {
        if self.log_epoch() >= epoch {
            return Err(StaleEpoch {
                log_epoch: self.log_epoch(),
            });
        }
        if !matches!(self.role, Role::Halted(_)) {
            self.role = Role::Candidate { epoch };
        }
        Ok(())
    }

    /// The barrier a candidate appends after the last record it applied.
    /// `None` unless a candidate whose epoch is still above the log's.
    pub fn barrier(&self) -> Option<Append> {
        let Role::Candidate { epoch } = self.role else {
            return None;
        };
        if self.log_epoch() >= epoch {
            return None;
        }
        let record = Record::Barrier {
            epoch,
            prev: self.applied,
            node: self.node.clone(),
        };
        let bytes = record.encode().ok()?;
        Some(Append {
            expected_last: self.applied,
            dedupe_id: self.dedupe_id(epoch, 0),
            bytes,
        })
    }

    /// Frames one flush for the log; the clients of it wait for
    /// [`Resolved::Committed`].
    pub fn propose(&mut self, payload: Vec<u8>) -> Result<Append, Refusal> {
        let (epoch, flush) = match &mut self.role {
            Role::Owner { epoch, next_flush } => (*epoch, *next_flush),
            Role::Halted(_) => return Err(Refusal::Halted),
            _ => {
                return Err(Refusal::NotOwner {
                    owner: self.log_owner.clone().map(|(_, node)| node),
                });
            }
        };
        if self.in_flight.is_some() {
            return Err(Refusal::FlushInFlight);
        }
        let record = Record::Frame {
            epoch,
            prev: self.applied,
            flush,
            payload,
        };
        let bytes = record.encode().map_err(Refusal::Encode)?;
        let append = Append {
            expected_last: self.applied,
            dedupe_id: self.dedupe_id(epoch, flush),
            bytes,
        };
        if let Role::Owner { next_flush, .. } = &mut self.role {
            *next_flush += 1;
        }
        self.in_flight = Some(InFlight {
            epoch,
            flush,
            append: append.clone(),
        });
        Ok(append)
    }

    /// The flush still in flight, to append again unchanged (same dedupe
    /// id, same expected sequence) — only after reading the log showed
    /// nothing in its place.
    pub fn retry(&self) -> Option<Append> {
        let in_flight = self.in_flight.as_ref()?;
        (in_flight.append.expected_last == self.applied).then(|| in_flight.append.clone())
    }

    /// Gives up the flush in flight when the log refused it outright
    /// (nothing was written); returns its number.
    pub fn abandon(&mut self) -> Option<u64> {
        self.in_flight.take().map(|in_flight| in_flight.flush)
    }

    /// Stops accepting writes: the assignment or the node lease says this
    /// node no longer owns the partition. A flush in flight stays until the
    /// log tells what became of it.
    pub fn fence(&mut self) {
        if matches!(self.role, Role::Owner { .. } | Role::Candidate { .. }) {
            self.role = Role::Follower;
        }
    }

    /// Applies the log's record `seq`, checking it continues the log
    /// exactly; on any surprise the replica halts.
    pub fn apply(&mut self, seq: Seq, bytes: &[u8]) -> Result<Applied, Halt> {
        if let Role::Halted(halt) = &self.role {
            return Err(halt.clone());
        }
        let checked = self.check(seq, bytes);
        let record = checked.inspect_err(|halt| self.role = Role::Halted(halt.clone()))?;
        let resolved = self.resolve_in_flight(seq, &record);
        self.applied = seq;
        let effect = match record {
            Record::Barrier { epoch, node, .. } => self.take_barrier(epoch, node),
            Record::Frame { payload, .. } => Effect::Data { payload },
        };
        Ok(Applied {
            seq,
            effect,
            resolved,
        })
    }

    fn check(&self, seq: Seq, bytes: &[u8]) -> Result<Record, Halt> {
        if seq != self.applied.next() {
            return Err(Halt::Gap {
                expected: self.applied.next(),
                got: seq,
            });
        }
        let record = Record::decode(bytes).map_err(|error| Halt::Undecodable { seq, error })?;
        if record.prev() != self.applied {
            return Err(Halt::PrevMismatch {
                seq,
                prev: record.prev(),
            });
        }
        match &record {
            Record::Barrier { epoch, .. } if *epoch <= self.log_epoch() => {
                Err(Halt::StaleBarrier { seq, epoch: *epoch })
            }
            Record::Frame { epoch, .. }
                if self.log_owner.is_none() || *epoch != self.log_epoch() =>
            {
                Err(Halt::ForeignEpoch { seq, epoch: *epoch })
            }
            _ => Ok(record),
        }
    }

    /// The record at the flush's place decides it: ours is a commit,
    /// anything else means ours can never land.
    fn resolve_in_flight(&mut self, seq: Seq, record: &Record) -> Option<Resolved> {
        let in_flight = self.in_flight.as_ref()?;
        if seq != in_flight.append.expected_last.next() {
            return None;
        }
        let flush = in_flight.flush;
        let ours = matches!(record, Record::Frame { epoch, flush: f, .. }
            if *epoch == in_flight.epoch && *f == flush);
        self.in_flight = None;
        Some(if ours {
            Resolved::Committed { flush, seq }
        } else {
            Resolved::Lost { flush }
        })
    }

    fn take_barrier(&mut self, epoch: Epoch, node: NodeId) -> Effect {
        let mine = node == self.node;
        self.role = match self.role {
            Role::Candidate { epoch: wanted } if mine && wanted == epoch => Role::Owner {
                epoch,
                next_flush: 1,
            },
            // A candidate from an older assignment got in first: ours is
            // newer, so we go on and append our barrier after it.
            Role::Candidate { epoch: wanted } if epoch < wanted => {
                Role::Candidate { epoch: wanted }
            }
            // Anyone else's barrier (or our own from an older attempt)
            // ends whatever we were doing with this partition.
            _ => Role::Follower,
        };
        self.log_owner = Some((epoch, node.clone()));
        Effect::Barrier { epoch, node }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId(name.to_owned())
    }

    /// A replica that owns partition 0 in epoch 1 after its own barrier.
    fn owner(name: &str) -> Replica {
        let mut replica = Replica::new(node(name), PartitionId(0));
        replica.begin_takeover(Epoch(1)).unwrap();
        let barrier = replica.barrier().unwrap();
        replica.apply(Seq(1), &barrier.bytes).unwrap();
        assert!(matches!(replica.role(), Role::Owner { .. }));
        replica
    }

    #[test]
    fn only_one_flush_in_flight_and_ids_are_unique() {
        let mut replica = owner("a");
        let first = replica.propose(b"one".to_vec()).unwrap();
        assert_eq!(first.expected_last, Seq(1));
        assert_eq!(first.dedupe_id, "0:1:1");
        assert_eq!(
            replica.propose(b"two".to_vec()),
            Err(Refusal::FlushInFlight)
        );
        let applied = replica.apply(Seq(2), &first.bytes).unwrap();
        assert_eq!(
            applied.resolved,
            Some(Resolved::Committed {
                flush: 1,
                seq: Seq(2)
            })
        );
        assert_eq!(replica.propose(b"two".to_vec()).unwrap().dedupe_id, "0:1:2");
    }

    // A foreign barrier in the flush's place: the flush is lost (and the
    // client is told so), the owner is fenced.
    #[test]
    fn foreign_barrier_in_place_of_flush_fences_and_loses_it() {
        let mut a = owner("a");
        let _ = a.propose(b"x".to_vec()).unwrap();
        let barrier = Record::Barrier {
            epoch: Epoch(2),
            prev: Seq(1),
            node: node("b"),
        };
        let applied = a.apply(Seq(2), &barrier.encode().unwrap()).unwrap();
        assert_eq!(applied.resolved, Some(Resolved::Lost { flush: 1 }));
        assert_eq!(a.role(), &Role::Follower);
        assert_eq!(
            a.propose(b"y".to_vec()),
            Err(Refusal::NotOwner {
                owner: Some(node("b"))
            })
        );
    }

    #[test]
    fn stale_assignment_cannot_start_a_takeover() {
        let mut b = Replica::new(node("b"), PartitionId(0));
        let barrier = Record::Barrier {
            epoch: Epoch(3),
            prev: Seq(0),
            node: node("c"),
        };
        b.apply(Seq(1), &barrier.encode().unwrap()).unwrap();
        assert_eq!(
            b.begin_takeover(Epoch(3)),
            Err(StaleEpoch {
                log_epoch: Epoch(3)
            })
        );
        assert!(b.begin_takeover(Epoch(4)).is_ok());
    }

    // Appliers halt loudly on a log that breaks the protocol.
    #[test]
    fn surprises_halt_the_replica() {
        let frame = |epoch, prev| Record::Frame {
            epoch: Epoch(epoch),
            prev: Seq(prev),
            flush: 1,
            payload: vec![],
        };
        type IsExpected = fn(&Halt) -> bool;
        let cases: Vec<(Seq, Record, IsExpected)> = vec![
            (Seq(3), frame(1, 1), |h| matches!(h, Halt::Gap { .. })),
            (Seq(2), frame(1, 0), |h| {
                matches!(h, Halt::PrevMismatch { .. })
            }),
            (Seq(2), frame(7, 1), |h| {
                matches!(h, Halt::ForeignEpoch { .. })
            }),
            (
                Seq(2),
                Record::Barrier {
                    epoch: Epoch(1),
                    prev: Seq(1),
                    node: node("z"),
                },
                |h| matches!(h, Halt::StaleBarrier { .. }),
            ),
        ];
        for (seq, record, expected) in cases {
            let mut replica = owner("a");
            let halt = replica.apply(seq, &record.encode().unwrap()).unwrap_err();
            assert!(expected(&halt), "{halt:?}");
            assert_eq!(replica.propose(vec![]), Err(Refusal::Halted));
            assert!(
                replica
                    .apply(Seq(2), &frame(1, 1).encode().unwrap())
                    .is_err()
            );
        }
        let mut replica = Replica::new(node("a"), PartitionId(0));
        let halt = replica
            .apply(Seq(1), &frame(0, 0).encode().unwrap())
            .unwrap_err();
        assert!(
            matches!(halt, Halt::ForeignEpoch { .. }),
            "data before any barrier"
        );
    }
}
