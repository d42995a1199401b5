//! The failures clustered mode exists to survive, played against the
//! in-memory log and coordinator: every acknowledged write must be in the
//! log exactly once, and every write the log does not hold must have been
//! refused, never acknowledged.

use std::cell::Cell;
use std::rc::Rc;

use super::assignment::{Assignment, PassOutcome, assignment_key, decode, reassign};
use super::driver::{Driver, DriverError, ROUNDS_MAX, WriteError};
use super::fake::{FakeKv, FakeLog, Fault};
use super::lease::{Lease, Renewal};
use super::node::{Node, NodeConfig};
use super::ports::{AppendError, Coordinator, Log};
use super::record::Record;
use super::replica::{Effect, Refusal, Replica, Role};
use super::{Epoch, NodeId, PartitionId, Seq};

const P: PartitionId = PartitionId(3);

fn node(name: &str) -> NodeId {
    NodeId(name.to_owned())
}

fn driver<'l>(log: &'l FakeLog, name: &str) -> Driver<'l, FakeLog> {
    Driver::new(log, P, Replica::new(node(name), P))
}

fn owner<'l>(log: &'l FakeLog, name: &str, epoch: u64) -> Driver<'l, FakeLog> {
    let mut driver = driver(log, name);
    driver.take_over(Epoch(epoch)).unwrap();
    driver
}

/// The payloads of the log's data records, in order.
fn payloads_in_log(log: &FakeLog) -> Vec<Vec<u8>> {
    payloads_of(log, P)
}

/// The payloads of `partition`'s data records in the log, in order.
fn payloads_of(log: &FakeLog, partition: PartitionId) -> Vec<Vec<u8>> {
    let records = log
        .records(partition)
        .into_iter()
        .map(|bytes| Record::decode(&bytes).unwrap());
    records
        .filter_map(|record| match record {
            Record::Frame { payload, .. } => Some(payload),
            Record::Barrier { .. } => None,
        })
        .collect()
}

fn data_effects(effects: Vec<(Seq, Effect)>) -> Vec<Vec<u8>> {
    effects
        .into_iter()
        .filter_map(|(_, effect)| effect.into_data())
        .collect()
}

// A standby that tails the log holds what the owner wrote, and after the
// owner is gone it takes over at the log's end and continues it.
#[test]
fn standby_catches_up_then_takes_over() {
    let log = FakeLog::default();
    let mut a = owner(&log, "a", 1);
    let mut b = driver(&log, "b");
    for i in 0..3 {
        a.write(format!("m{i}").into_bytes()).unwrap();
        b.catch_up().unwrap();
    }
    assert_eq!(data_effects(b.take_effects()), [b"m0", b"m1", b"m2"]);
    a.write(b"m3".to_vec()).unwrap();
    drop(a); // the owner dies
    b.take_over(Epoch(2)).unwrap();
    assert_eq!(
        data_effects(b.take_effects()),
        [b"m3"],
        "caught up before its barrier"
    );
    assert_eq!(b.write(b"m4".to_vec()), Ok(Seq(7)));
    assert_eq!(payloads_in_log(&log), [b"m0", b"m1", b"m2", b"m3", b"m4"]);
}

// A paused owner wakes after a takeover: its append fails the sequence
// check, the record in its place is the new barrier, so the write is
// refused (it is not in the log) and the old owner takes no more writes.
#[test]
fn zombie_owner_is_fenced_by_the_log() {
    let log = FakeLog::default();
    let mut a = owner(&log, "a", 1);
    a.write(b"before".to_vec()).unwrap();
    let mut b = owner(&log, "b", 2);
    assert_eq!(a.write(b"zombie".to_vec()), Err(WriteError::Lost));
    let refused = a.write(b"again".to_vec());
    assert_eq!(
        refused,
        Err(WriteError::Refused(Refusal::NotOwner {
            owner: Some(node("b"))
        }))
    );
    b.write(b"after".to_vec()).unwrap();
    assert_eq!(
        payloads_in_log(&log),
        [b"before".to_vec(), b"after".to_vec()]
    );
}

// The old owner appends between the new owner's catch-up and its barrier:
// that write is valid (acknowledged and kept); the barrier goes after it.
#[test]
fn zombie_write_before_the_barrier_is_kept_not_lost() {
    let log = FakeLog::default();
    let mut a = owner(&log, "a", 1);
    let mut b = driver(&log, "b");
    b.catch_up().unwrap();
    b.replica.begin_takeover(Epoch(2)).unwrap();
    let barrier = b.replica.barrier().unwrap();
    assert_eq!(a.write(b"late but acknowledged".to_vec()), Ok(Seq(2)));
    let refused = log.append(P, barrier.expected_last, &barrier.dedupe_id, &barrier.bytes);
    assert_eq!(
        refused,
        Err(AppendError::WrongLastSequence { last: Some(Seq(2)) })
    );
    b.take_over(Epoch(2)).unwrap();
    assert_eq!(data_effects(b.take_effects()), [b"late but acknowledged"]);
    assert_eq!(a.write(b"too late".to_vec()), Err(WriteError::Lost));
    assert_eq!(payloads_in_log(&log), [b"late but acknowledged"]);
}

// Unclear acknowledgements, each way the record can turn out: the owner
// answers only what the log holds, and the record is there exactly once.
#[test]
fn unclear_ack_is_settled_by_reading_the_log() {
    let faults = [
        Fault::LandThenTimeout,
        Fault::TimeoutWithoutLanding,
        Fault::LandLater { remember_id: true },
        Fault::LandLater { remember_id: false },
    ];
    for fault in faults {
        let log = FakeLog::default();
        let mut a = owner(&log, "a", 1);
        log.fail_appends(fault, 1);
        assert_eq!(a.write(b"once".to_vec()), Ok(Seq(2)), "{fault:?}");
        a.write(b"next".to_vec()).unwrap();
        assert_eq!(
            payloads_in_log(&log),
            [b"once".to_vec(), b"next".to_vec()],
            "{fault:?}"
        );
    }
}

// Unclear acknowledgement, and meanwhile another node took over: the
// record can never land, so the write is refused, not acknowledged.
#[test]
fn unclear_ack_then_takeover_is_a_refusal() {
    let log = FakeLog::default();
    let mut a = owner(&log, "a", 1);
    let mut b = driver(&log, "b");
    log.fail_appends(Fault::TimeoutWithoutLanding, ROUNDS_MAX);
    assert_eq!(a.write(b"unknown".to_vec()), Err(WriteError::Unresolved));
    assert_eq!(
        a.write(b"blocked".to_vec()),
        Err(WriteError::Refused(Refusal::FlushInFlight))
    );
    b.take_over(Epoch(2)).unwrap();
    assert_eq!(a.reconcile(), Err(WriteError::Lost));
    assert!(payloads_in_log(&log).is_empty());
}

// A flush whose record lands only after the bounded rounds ran out is
// left unresolved (not guessed either way), then acknowledged once the log
// shows it.
#[test]
fn unresolved_flush_that_landed_is_acknowledged_on_reconcile() {
    let log = FakeLog::default();
    let mut a = owner(&log, "a", 1);
    log.fail_appends(Fault::TimeoutWithoutLanding, ROUNDS_MAX - 1);
    log.fail_appends(Fault::LandLater { remember_id: true }, 1);
    assert_eq!(a.write(b"landed".to_vec()), Err(WriteError::Unresolved));
    assert_eq!(a.reconcile(), Ok(Seq(2)));
    a.write(b"next".to_vec()).unwrap();
    assert_eq!(
        payloads_in_log(&log),
        [b"landed".to_vec(), b"next".to_vec()]
    );
}

// A barrier whose answer is lost is settled the same way: read, and
// append again only if it is not there; exactly one barrier results.
#[test]
fn unclear_barrier_is_settled_by_reading_the_log() {
    for fault in [
        Fault::LandThenTimeout,
        Fault::TimeoutWithoutLanding,
        Fault::LandLater { remember_id: false },
    ] {
        let log = FakeLog::default();
        log.fail_appends(fault, 1);
        let mut a = owner(&log, "a", 1);
        assert!(
            matches!(
                a.replica.role(),
                Role::Owner {
                    epoch: Epoch(1),
                    ..
                }
            ),
            "{fault:?}"
        );
        assert_eq!(a.write(b"m".to_vec()), Ok(Seq(2)), "{fault:?}");
        assert_eq!(log.records(P).len(), 2, "{fault:?}");
    }
}

// Two candidates from a reassignment race (an old controller's epoch 2 and
// the new one's epoch 3): whichever barrier lands first, the newer epoch
// ends up owning the log, and the older one is refused or fenced.
#[test]
fn reassignment_race_is_won_by_the_newer_epoch() {
    for older_first in [true, false] {
        let log = FakeLog::default();
        let mut a = owner(&log, "a", 1);
        a.write(b"m".to_vec()).unwrap();
        let (mut b, mut c) = (driver(&log, "b"), driver(&log, "c"));
        if older_first {
            b.take_over(Epoch(2)).unwrap();
            c.take_over(Epoch(3)).unwrap();
            assert!(matches!(b.write(b"x".to_vec()), Err(WriteError::Lost)));
        } else {
            c.take_over(Epoch(3)).unwrap();
            let stale = b.take_over(Epoch(2));
            assert_eq!(
                stale,
                Err(DriverError::Stale(super::replica::StaleEpoch {
                    log_epoch: Epoch(3)
                }))
            );
        }
        assert!(matches!(
            c.replica.role(),
            Role::Owner {
                epoch: Epoch(3),
                ..
            }
        ));
        c.write(b"n".to_vec()).unwrap();
        assert_eq!(payloads_in_log(&log), [b"m".to_vec(), b"n".to_vec()]);
    }
}

// Two controllers read the same assignment and both decide to move the
// partition: compare-and-set lets exactly one write, and the epoch grows
// by exactly one.
#[test]
fn controllers_race_and_exactly_one_write_wins() {
    let clock = Rc::new(Cell::new(0));
    let kv = FakeKv::new(clock, None);
    let all = [node("a"), node("b"), node("c")];
    assert!(matches!(
        reassign(&kv, P, &all, 1),
        Ok(PassOutcome::Written(_))
    ));
    let first = decode(&kv.get(&assignment_key(P)).unwrap().unwrap().value).unwrap();
    let survivors: Vec<NodeId> = all.iter().filter(|n| **n != first.owner).cloned().collect();
    // Both controllers read revision r; one writes; the other's CAS fails.
    let stale = kv.get(&assignment_key(P)).unwrap().unwrap();
    assert!(matches!(
        reassign(&kv, P, &survivors, 1),
        Ok(PassOutcome::Written(_))
    ));
    let moved = Assignment {
        owner: node("z"),
        standbys: vec![],
        epoch: Epoch(2),
    };
    let value = serde_json::to_vec(&moved).unwrap();
    assert_eq!(
        kv.update(&assignment_key(P), &value, stale.revision),
        Err(super::ports::CoordError::WrongRevision)
    );
    let second = decode(&kv.get(&assignment_key(P)).unwrap().unwrap().value).unwrap();
    assert_eq!(second.epoch, Epoch(first.epoch.0 + 1));
    assert_eq!(second.owner, first.standbys[0]);
    assert_eq!(reassign(&kv, P, &survivors, 1), Ok(PassOutcome::Unchanged));
    assert_eq!(
        kv.create(&assignment_key(P), b"{}"),
        Err(super::ports::CoordError::Exists)
    );
}

// A node that stops renewing loses its lease by its own clock before the
// coordinator expires its key, so it stops serving before anyone can be
// assigned its partitions.
#[test]
fn lease_lapses_locally_before_the_coordinator_expires_it() {
    let clock = Rc::new(Cell::new(1_000));
    let kv = FakeKv::new(clock.clone(), Some(4_000));
    let mut lease = Lease::new("node.a".into(), 4_000, 500);
    assert_eq!(
        lease.renew(&kv, b"a", clock.get()),
        Ok(Renewal::Held { valid_until: 4_500 })
    );
    let mut other = Lease::new("node.a".into(), 4_000, 500);
    assert_eq!(
        other.renew(&kv, b"impostor", clock.get()),
        Ok(Renewal::Lost)
    );
    clock.set(4_499);
    assert!(lease.is_valid(clock.get()));
    clock.set(4_500);
    assert!(!lease.is_valid(clock.get()), "invalid locally");
    assert_eq!(
        kv.keys("node.").unwrap(),
        ["node.a"],
        "still present at the coordinator"
    );
    clock.set(5_000);
    assert!(
        kv.keys("node.").unwrap().is_empty(),
        "expired at the coordinator"
    );
    // The late renewal finds its key gone: lost, never silently re-held.
    assert_eq!(lease.renew(&kv, b"a", clock.get()), Ok(Renewal::Lost));
    assert!(matches!(
        lease.renew(&kv, b"a", clock.get()),
        Ok(Renewal::Held { .. })
    ));
}

// The whole failover: heartbeats, a controller pass after the owner's
// lease expires, the standby's takeover, and the zombie's refusal.
#[test]
fn failover_from_expired_lease_to_new_owner() {
    let clock = Rc::new(Cell::new(0));
    let leases = FakeKv::new(clock.clone(), Some(4_000));
    let assignments = FakeKv::new(clock.clone(), None);
    let log = FakeLog::default();
    let mut node_leases: Vec<Lease> = ["a", "b"]
        .iter()
        .map(|n| Lease::new(format!("node.{n}"), 4_000, 500))
        .collect();
    let live = |kv: &FakeKv| -> Vec<NodeId> {
        kv.keys("node.")
            .unwrap()
            .iter()
            .map(|key| node(&key["node.".len()..]))
            .collect()
    };
    node_leases
        .iter_mut()
        .for_each(|lease| _ = lease.renew(&leases, b"up", 0).unwrap());
    let PassOutcome::Written(first) = reassign(&assignments, P, &live(&leases), 1).unwrap() else {
        panic!()
    };
    let mut owner_driver = owner(&log, &first.owner.0, first.epoch.0);
    owner_driver.write(b"acked".to_vec()).unwrap();
    // Only the standby keeps renewing; the owner is paused.
    let standby_index = usize::from(first.owner == node("a"));
    for now in [2_000, 4_000, 6_000] {
        clock.set(now);
        node_leases[standby_index]
            .renew(&leases, b"up", now)
            .unwrap();
    }
    assert!(!node_leases[1 - standby_index].is_valid(clock.get()));
    let PassOutcome::Written(second) = reassign(&assignments, P, &live(&leases), 1).unwrap() else {
        panic!()
    };
    assert_eq!(
        (second.owner.clone(), second.epoch),
        (first.standbys[0].clone(), Epoch(2))
    );
    let mut new_owner = driver(&log, &second.owner.0);
    new_owner.take_over(second.epoch).unwrap();
    assert_eq!(
        owner_driver.write(b"zombie".to_vec()),
        Err(WriteError::Lost)
    );
    new_owner.write(b"after failover".to_vec()).unwrap();
    assert_eq!(
        payloads_in_log(&log),
        [b"acked".to_vec(), b"after failover".to_vec()]
    );
}

/// The index of the node (other than `paused`, whose view is stale) whose
/// replica of `partition` is its owner.
fn owner_index<L: Log, C: Coordinator>(
    nodes: &[Node<'_, L, C>],
    partition: PartitionId,
    paused: Option<usize>,
) -> Option<usize> {
    let owns = |node: &Node<'_, L, C>| {
        matches!(
            node.replica(partition).map(Replica::role),
            Some(Role::Owner { .. })
        )
    };
    (0..nodes.len()).find(|i| Some(*i) != paused && owns(&nodes[*i]))
}

/// A fake log and coordinator on one manual clock, shared by nodes.
struct Cluster {
    clock: Rc<Cell<u64>>,
    leases: FakeKv,
    assignments: FakeKv,
    log: FakeLog,
}

impl Cluster {
    /// Leases expire after 3 s, as in the node configs below.
    fn new() -> Cluster {
        let clock = Rc::new(Cell::new(0));
        let leases = FakeKv::new(clock.clone(), Some(3_000));
        let assignments = FakeKv::new(clock.clone(), None);
        Cluster {
            clock,
            leases,
            assignments,
            log: FakeLog::default(),
        }
    }

    /// Nodes a, b and c over `partitions`, one standby each.
    fn nodes(
        &self,
        partitions: u32,
        first_assignment_after_ms: u64,
    ) -> Vec<Node<'_, FakeLog, FakeKv>> {
        let config = |name: &str| NodeConfig {
            node: node(name),
            partitions,
            standbys: 1,
            lease_ttl_ms: 3_000,
            lease_margin_ms: 500,
            first_assignment_after_ms,
        };
        let nodes = ["a", "b", "c"].iter();
        nodes
            .map(|name| Node::new(config(name), &self.log, &self.leases, &self.assignments))
            .collect()
    }
}

// Three nodes run their duties; the node that is both controller and
// owner stops (paused, not dead). Another node becomes controller once the
// leases expire, the standbys take over at epoch 2, the paused node finds
// its lease gone and refuses writes, and the log holds every acknowledged
// write exactly once, in order.
#[test]
fn nodes_fail_over_when_the_owner_and_controller_stops() {
    const PARTITIONS: u32 = 4;
    let cluster = Cluster::new();
    let (clock, log) = (&cluster.clock, &cluster.log);
    let mut nodes = cluster.nodes(PARTITIONS, 0);
    let run = |nodes: &mut [Node<'_, FakeLog, FakeKv>], skip: Option<usize>, from: u64, to: u64| {
        for now in (from..=to).step_by(1_000) {
            clock.set(now);
            for (i, node) in nodes.iter_mut().enumerate() {
                if Some(i) != skip {
                    let tick = node.tick(now);
                    assert!(tick.errors.iter().all(|e| e.contains("lease")), "{tick:?}");
                }
            }
        }
    };
    run(&mut nodes, None, 0, 2_000);
    let mut acked: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PARTITIONS as usize];
    let mut write_everywhere = |nodes: &mut [Node<'_, FakeLog, FakeKv>], round: u32, now: u64| {
        for p in 0..PARTITIONS {
            let owner =
                owner_index(nodes, PartitionId(p), None).expect("every partition has an owner");
            let payload = format!("p{p}-{round}").into_bytes();
            nodes[owner]
                .write(PartitionId(p), payload.clone(), now)
                .unwrap();
            acked[p as usize].push(payload);
        }
    };
    write_everywhere(&mut nodes, 1, 2_000);
    let paused = owner_index(&nodes, PartitionId(0), None).unwrap();
    run(&mut nodes, Some(paused), 3_000, 8_000);
    for p in 0..PARTITIONS {
        let owner = owner_index(&nodes, PartitionId(p), Some(paused));
        assert!(owner.is_some(), "partition {p} has no live owner");
    }
    let refused = nodes[paused].write(PartitionId(0), b"zombie".to_vec(), clock.get());
    assert!(
        matches!(refused, Err(WriteError::Refused(_))),
        "{refused:?}"
    );
    let woke = nodes[paused].tick(clock.get());
    assert!(!woke.lease_held && !woke.fenced.is_empty(), "{woke:?}");
    write_everywhere(&mut nodes, 2, clock.get());
    for p in 0..PARTITIONS {
        let data = payloads_of(log, PartitionId(p));
        assert_eq!(data, acked[p as usize], "partition {p}");
    }
}

// Owners are sticky, so the first assignments decide the spread: a new
// controller waits for nodes to register before it assigns, instead of
// giving every partition to whoever was up first.
#[test]
fn first_assignments_wait_for_nodes_to_register() {
    const PARTITIONS: u32 = 12;
    for (grace, spread) in [(0, false), (2_000, true)] {
        let cluster = Cluster::new();
        let clock = &cluster.clock;
        let mut nodes = cluster.nodes(PARTITIONS, grace);
        // The nodes come up half a second apart; then all keep ticking.
        for (i, node) in nodes.iter_mut().enumerate() {
            let now = i as u64 * 500;
            clock.set(now);
            node.tick(now);
        }
        for now in [2_000, 2_500, 3_000] {
            clock.set(now);
            nodes.iter_mut().for_each(|node| _ = node.tick(now));
        }
        let owned = |i: usize| {
            (0..PARTITIONS)
                .filter(|p| owner_index(&nodes, PartitionId(*p), None) == Some(i))
                .count()
        };
        let counts: Vec<usize> = (0..nodes.len()).map(owned).collect();
        assert_eq!(
            counts.iter().sum::<usize>(),
            PARTITIONS as usize,
            "grace {grace}: {counts:?}"
        );
        assert_eq!(
            counts.iter().all(|count| *count > 0),
            spread,
            "grace {grace}: {counts:?}"
        );
    }
}

// An owner restarts and renews its membership before the controller sees
// it go, so its assignment stays as it was, in an epoch whose barrier the
// earlier run already wrote. The new run claims the next epoch itself and
// serves the partition again; what the earlier run acknowledged stays.
#[test]
fn owner_restarted_within_its_lease_serves_again_in_a_new_epoch() {
    const PARTITIONS: u32 = 2;
    let cluster = Cluster::new();
    let clock = &cluster.clock;
    let mut nodes = cluster.nodes(PARTITIONS, 0);
    let tick_all = |nodes: &mut [Node<'_, FakeLog, FakeKv>], now: u64| {
        clock.set(now);
        nodes.iter_mut().for_each(|node| _ = node.tick(now));
    };
    for now in (0..=2_000).step_by(1_000) {
        tick_all(&mut nodes, now);
    }
    let restarted = owner_index(&nodes, PartitionId(0), None).unwrap();
    nodes[restarted]
        .write(PartitionId(0), b"before".to_vec(), 2_000)
        .unwrap();
    let config = NodeConfig {
        node: nodes[restarted].node().clone(),
        partitions: PARTITIONS,
        standbys: 1,
        lease_ttl_ms: 3_000,
        lease_margin_ms: 500,
        first_assignment_after_ms: 0,
    };
    nodes[restarted] = Node::new(config, &cluster.log, &cluster.leases, &cluster.assignments);
    // The new run ticks first, so it renews in the instant its earlier
    // run's lease expires and no controller pass sees it missing.
    nodes.rotate_left(restarted);
    for now in (3_000..=8_000).step_by(1_000) {
        tick_all(&mut nodes, now);
    }
    let replica = nodes[0].replica(PartitionId(0));
    assert!(
        matches!(replica.map(Replica::role), Some(Role::Owner { epoch, .. }) if *epoch == Epoch(2)),
        "{:?}",
        replica.map(Replica::role)
    );
    nodes[0]
        .write(PartitionId(0), b"after".to_vec(), clock.get())
        .unwrap();
    assert_eq!(
        payloads_of(&cluster.log, PartitionId(0)),
        [b"before".to_vec(), b"after".to_vec()]
    );
}
