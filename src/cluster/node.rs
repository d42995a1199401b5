//! One node's cluster duties, one bounded step at a time: keep its
//! membership lease, act as controller while it holds that lease, and make
//! its replicas follow the assignments — take over what it should own,
//! fence what it no longer owns, tail what it stands by for.
//!
//! Synchronous over the [`Log`] and [`Coordinator`] traits, with the clock
//! passed in, so the same code runs against the in-memory fakes and against
//! JetStream; in the server it runs on the cluster thread
//! ([`super::runtime`]), never on a shard. Assignments are re-read every tick (a KV watch can replace the
//! polling later without changing the decisions).

use std::collections::BTreeMap;

use super::assignment::{self, Assignment, PassOutcome, assignment_key, reassign};
use super::driver::{Driver, DriverError, WriteError};
use super::lease::{Lease, Renewal};
use super::ports::{AppendError, CoordError, Coordinator, Log, Revision};
use super::replica::{Append, Refusal, Replica, Role};
use super::{Epoch, Millis, NodeId, PartitionId, Seq};

/// Prefix of the membership keys in the lease bucket: `node.<id>`.
pub const NODE_KEY_PREFIX: &str = "node.";
/// The controller's lease key in the lease bucket.
pub const CONTROLLER_KEY: &str = "controller";

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node: NodeId,
    pub partitions: u32,
    pub standbys: usize,
    /// The lease bucket's TTL, and how much earlier a node gives up.
    pub lease_ttl_ms: Millis,
    pub lease_margin_ms: Millis,
    /// How long a new controller lets nodes register before it gives
    /// partitions without an assignment their first owner. Owners are
    /// sticky, so without it the first node up would own everything.
    /// Replacing a dead owner never waits.
    pub first_assignment_after_ms: Millis,
}

/// What a controller's pass over the partitions decides from.
#[derive(Debug, Clone)]
pub struct ControlPass {
    live: Vec<NodeId>,
    /// A new controller lets nodes register before first assignments.
    settling: bool,
}

/// What one tick saw and did, for status and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    pub lease_held: bool,
    pub controller: bool,
    pub reassigned: Vec<PartitionId>,
    pub took_over: Vec<(PartitionId, Epoch)>,
    pub fenced: Vec<PartitionId>,
    pub errors: Vec<String>,
}

pub struct Node<'l, L: Log, C: Coordinator> {
    config: NodeConfig,
    log: &'l L,
    leases: &'l C,
    assignments: &'l C,
    membership: Lease,
    controller: Lease,
    /// When this node last became controller.
    controller_since: Option<Millis>,
    /// Partitions this node owns or stands by for.
    replicas: BTreeMap<PartitionId, Driver<'l, L>>,
    /// The assignment of each partition as last read, for status.
    seen: BTreeMap<PartitionId, Assignment>,
    now: Millis,
}

impl<'l, L: Log, C: Coordinator> Node<'l, L, C> {
    pub fn new(config: NodeConfig, log: &'l L, leases: &'l C, assignments: &'l C) -> Self {
        let lease = |key: String| Lease::new(key, config.lease_ttl_ms, config.lease_margin_ms);
        let membership = lease(format!("{NODE_KEY_PREFIX}{}", config.node));
        let controller = lease(CONTROLLER_KEY.to_owned());
        Node {
            config,
            log,
            leases,
            assignments,
            membership,
            controller,
            controller_since: None,
            replicas: BTreeMap::new(),
            seen: BTreeMap::new(),
            now: 0,
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.config.node
    }

    pub fn replica(&self, partition: PartitionId) -> Option<&Replica> {
        self.replicas.get(&partition).map(|driver| &driver.replica)
    }

    /// The assignment of `partition` as the last tick read it.
    pub fn assignment(&self, partition: PartitionId) -> Option<&Assignment> {
        self.seen.get(&partition)
    }

    /// Whether this node's membership lease is valid at `now` by its clock.
    pub fn lease_valid(&self, now: Millis) -> bool {
        self.membership.is_valid(now)
    }

    /// One round of duties at time `now`; call it about three times per
    /// lease TTL. The same steps one at a time ([`Node::renew`],
    /// [`Node::begin_control`] and [`Node::control`], [`Node::follow`])
    /// let a caller keep its lease renewed between slow steps.
    pub fn tick(&mut self, now: Millis) -> Tick {
        let mut tick = self.renew(now);
        if let Some(pass) = self.begin_control(now, &mut tick) {
            for p in 0..self.config.partitions {
                self.control(PartitionId(p), &pass, &mut tick);
            }
        }
        for p in 0..self.config.partitions {
            self.follow(PartitionId(p), now, &mut tick);
        }
        tick
    }

    /// Renews this node's membership lease; fences everything it owns when
    /// the lease is no longer valid.
    pub fn renew(&mut self, now: Millis) -> Tick {
        self.now = now;
        let mut tick = Tick::default();
        self.renew_membership(now, &mut tick);
        tick
    }

    /// Makes `partition` follow its assignment: take it over, fence it, or
    /// tail it.
    pub fn follow(&mut self, partition: PartitionId, now: Millis, tick: &mut Tick) {
        self.now = now;
        tick.lease_held = self.membership.is_valid(now);
        if let Err(error) = self.follow_assignment(partition, tick) {
            tick.errors
                .push(format!("partition {partition}: {error:?}"));
        }
    }

    fn renew_membership(&mut self, now: Millis, tick: &mut Tick) {
        let value = self.config.node.0.clone().into_bytes();
        match self.membership.renew(self.leases, &value, now) {
            Ok(Renewal::Held { .. }) => {}
            Ok(Renewal::Lost) => tick.errors.push("membership lease lost".into()),
            Err(error) => tick.errors.push(format!("membership lease: {error:?}")),
        }
        tick.lease_held = self.membership.is_valid(now);
        if !tick.lease_held {
            self.fence_all(tick);
        }
    }

    fn fence_all(&mut self, tick: &mut Tick) {
        for (partition, driver) in &mut self.replicas {
            if matches!(
                driver.replica.role(),
                Role::Owner { .. } | Role::Candidate { .. }
            ) {
                driver.replica.fence();
                tick.fenced.push(*partition);
            }
        }
    }

    /// While this node's lease is held, renews the controller lease and,
    /// when this node is the controller, returns what a pass over the
    /// partitions ([`Node::control`]) needs.
    pub fn begin_control(&mut self, now: Millis, tick: &mut Tick) -> Option<ControlPass> {
        if !self.membership.is_valid(now) {
            return None;
        }
        let value = self.config.node.0.clone().into_bytes();
        if !matches!(
            self.controller.renew(self.leases, &value, now),
            Ok(Renewal::Held { .. })
        ) {
            self.controller_since = None;
            return None;
        }
        tick.controller = true;
        let since = *self.controller_since.get_or_insert(now);
        let settling = now < since + self.config.first_assignment_after_ms;
        match self.live_nodes() {
            Ok(live) => Some(ControlPass { live, settling }),
            Err(error) => {
                tick.errors.push(format!("membership: {error:?}"));
                None
            }
        }
    }

    /// The controller's step for one partition: reassign it if its owner
    /// or standbys should change.
    pub fn control(&self, partition: PartitionId, pass: &ControlPass, tick: &mut Tick) {
        match self.assign(partition, &pass.live, pass.settling) {
            Ok(PassOutcome::Written(_)) => tick.reassigned.push(partition),
            Ok(PassOutcome::Unchanged | PassOutcome::LostRace) => {}
            Err(error) => tick.errors.push(format!("assign {partition}: {error:?}")),
        }
    }

    /// One controller pass over `partition`; while `settling`, a partition
    /// that never had an owner keeps waiting for more nodes to register.
    fn assign(
        &self,
        partition: PartitionId,
        live: &[NodeId],
        settling: bool,
    ) -> Result<PassOutcome, CoordError> {
        if settling && self.assignments.get(&assignment_key(partition))?.is_none() {
            return Ok(PassOutcome::Unchanged);
        }
        reassign(self.assignments, partition, live, self.config.standbys)
    }

    fn live_nodes(&self) -> Result<Vec<NodeId>, CoordError> {
        let keys = self.leases.keys(NODE_KEY_PREFIX)?;
        Ok(keys
            .into_iter()
            .map(|key| NodeId(key[NODE_KEY_PREFIX.len()..].to_owned()))
            .collect())
    }

    fn follow_assignment(
        &mut self,
        partition: PartitionId,
        tick: &mut Tick,
    ) -> Result<(), DriverError> {
        let stored = self.assignments.get(&assignment_key(partition));
        let stored = stored.map_err(|e| DriverError::Unavailable(format!("{e:?}")))?;
        let Some(stored) = stored else { return Ok(()) };
        let wanted = assignment::decode(&stored.value)
            .map_err(|e| DriverError::Unavailable(format!("{e:?}")))?;
        self.seen.insert(partition, wanted.clone());
        let me = &self.config.node;
        let standing_by = wanted.standbys.contains(me);
        if wanted.owner != *me && !standing_by {
            self.replicas.remove(&partition);
            return Ok(());
        }
        let (log, node) = (self.log, me.clone());
        let driver = self
            .replicas
            .entry(partition)
            .or_insert_with(|| Driver::new(log, partition, Replica::new(node, partition)));
        let owning =
            matches!(driver.replica.role(), Role::Owner { epoch, .. } if *epoch == wanted.epoch);
        if wanted.owner != *me || !tick.lease_held {
            if matches!(
                driver.replica.role(),
                Role::Owner { .. } | Role::Candidate { .. }
            ) {
                driver.replica.fence();
                tick.fenced.push(partition);
            }
            return driver.catch_up().map(|_| ());
        }
        if owning {
            return Ok(());
        }
        match driver.take_over(wanted.epoch) {
            Ok(()) => {
                tick.took_over.push((partition, wanted.epoch));
                Ok(())
            }
            Err(DriverError::Stale(_)) if barrier_is_mine(&driver.replica, &wanted) => {
                self.claim_next_epoch(partition, stored.revision, wanted, tick)
            }
            // The log already moved past this assignment: wait for the next.
            Err(DriverError::Stale(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Moves this node's own assignment of `partition` to the next epoch
    /// and takes it over there. Needed when the log's newest barrier is
    /// this node's in the assigned epoch but its replica does not own it:
    /// an earlier run of the node took it over, then restarted (or was
    /// fenced) and renewed its membership before the controller saw it go,
    /// so the controller keeps the assignment as it is. Only a new barrier
    /// fences what that run may still have in flight. The write is a
    /// compare-and-set on the revision read, so a controller that changed
    /// the assignment meanwhile wins and the next tick follows its choice.
    fn claim_next_epoch(
        &mut self,
        partition: PartitionId,
        read_at: Revision,
        wanted: Assignment,
        tick: &mut Tick,
    ) -> Result<(), DriverError> {
        let next = Assignment {
            epoch: Epoch(wanted.epoch.0 + 1),
            ..wanted
        };
        let written = assignment::write(self.assignments, partition, next, Some(read_at));
        let next = match written.map_err(|e| DriverError::Unavailable(format!("{e:?}")))? {
            PassOutcome::Written(next) => next,
            PassOutcome::Unchanged | PassOutcome::LostRace => return Ok(()),
        };
        tick.reassigned.push(partition);
        self.seen.insert(partition, next.clone());
        let Some(driver) = self.replicas.get_mut(&partition) else {
            return Ok(());
        };
        match driver.take_over(next.epoch) {
            Ok(()) => tick.took_over.push((partition, next.epoch)),
            Err(DriverError::Stale(_)) => {}
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Writes one flush to `partition`, refused unless this node owns it
    /// and its lease is valid at `now` by its own clock.
    pub fn write(
        &mut self,
        partition: PartitionId,
        payload: Vec<u8>,
        now: Millis,
    ) -> Result<Seq, WriteError> {
        self.leased_driver(partition, now)?.write(payload)
    }

    /// The driver of `partition` while this node's lease is valid at `now`.
    fn leased_driver(
        &mut self,
        partition: PartitionId,
        now: Millis,
    ) -> Result<&mut Driver<'l, L>, WriteError> {
        let not_owner = || WriteError::Refused(Refusal::NotOwner { owner: None });
        if !self.membership.is_valid(now) {
            return Err(not_owner());
        }
        self.replicas.get_mut(&partition).ok_or_else(not_owner)
    }

    /// [`Node::write`] in two halves, so a caller can append the flushes
    /// of several partitions at once: frames `payload` for the log (same
    /// refusals as `write`); the caller appends it and hands the answer to
    /// [`Node::settle`].
    pub fn propose(
        &mut self,
        partition: PartitionId,
        payload: Vec<u8>,
        now: Millis,
    ) -> Result<Append, WriteError> {
        self.leased_driver(partition, now)?.propose(payload)
    }

    /// What the log's `answer` to a proposed `append` means, reading the
    /// log (blocking, bounded) when the answer alone cannot tell.
    pub fn settle(
        &mut self,
        partition: PartitionId,
        append: Append,
        answer: Result<Seq, AppendError>,
    ) -> Result<Seq, WriteError> {
        let not_owner = || WriteError::Refused(Refusal::NotOwner { owner: None });
        let driver = self.replicas.get_mut(&partition).ok_or_else(not_owner)?;
        driver.settle_answered(append, answer)
    }

    /// Settles a flush of `partition` that an earlier write left
    /// [`WriteError::Unresolved`] (or cut short by a log error).
    pub fn reconcile(&mut self, partition: PartitionId) -> Result<Seq, WriteError> {
        let not_owner = || WriteError::Refused(Refusal::NotOwner { owner: None });
        self.replicas
            .get_mut(&partition)
            .ok_or_else(not_owner)?
            .reconcile()
    }

    /// The data this node has applied for `partition` since the last call,
    /// in log order, to apply to its store.
    pub fn take_applied(&mut self, partition: PartitionId) -> Vec<(Seq, Vec<u8>)> {
        let Some(driver) = self.replicas.get_mut(&partition) else {
            return Vec::new();
        };
        let effects = driver.take_effects().into_iter();
        effects
            .filter_map(|(seq, effect)| effect.into_data().map(|data| (seq, data)))
            .collect()
    }
}

/// Whether the log's newest barrier is `replica`'s own node taking over in
/// `wanted`'s epoch, which `wanted` assigns to that node.
fn barrier_is_mine(replica: &Replica, wanted: &Assignment) -> bool {
    replica
        .log_owner()
        .is_some_and(|(epoch, node)| *epoch == wanted.epoch && *node == wanted.owner)
        && wanted.owner == *replica.node()
}
