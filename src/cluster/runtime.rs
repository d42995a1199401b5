//! Clustered mode inside the server: the cluster thread.
//!
//! One thread per node (`pdb-cluster`, only with `--cluster`) runs the
//! node's duties (membership, controller, following assignments, tailing
//! standby partitions; see [`Duties`]) and every append of the node's
//! writes. Shards never touch NATS: they send each write's WAL bytes here
//! ([`WriteRequest`]) and await the answer on a channel. This thread keeps
//! one record in flight per partition: the writes a partition queued
//! meanwhile become its next record, appended as soon as the previous one
//! is acknowledged, so partitions never wait for each other; each write is
//! answered once the log acknowledged its record (a quorum has it on
//! disk). What the thread learns goes back to the shards as
//! [`ShardEvent`]s: the records a standby must apply, and the [`View`] of
//! who owns what.
//!
//! The owner applies a write to its store before the log has it (reads
//! that may see it wait for the acknowledgement), so a write the log then
//! refuses leaves the owner's store ahead of the log. The node cannot
//! repair that in place: it stops the process (exit 75) and, like every
//! start in clustered mode, rebuilds its store from the log. A fenced
//! owner therefore never serves a write the log lost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::assignment::Assignment;
use super::driver::WriteError;
use super::nats::{AppendAnswer, Bridge, NatsKv, NatsLog};
use super::node::{ControlPass, NODE_KEY_PREFIX, Node, NodeConfig, Tick};
use super::ports::{CoordError, Coordinator};
use super::record::RECORD_BYTES_MAX;
use super::replica::{Append, Role};
use super::{NodeId, PartitionId, flush};
use crate::logging;

/// Names the streams (`pdb-p<p>`) and subjects (`pdb.p.<p>`).
pub const STREAM_PREFIX: &str = "pdb";
const LEASE_BUCKET: &str = "pdb-leases";
const ASSIGNMENT_BUCKET: &str = "pdb-assignments";
/// Where each node publishes the address it serves forwarded requests on.
const ADDRESS_KEY_PREFIX: &str = "addr.";
/// Ticks between two readings of every live node's address.
const ADDRESS_REFRESH_TICKS: u64 = 10;
/// Copies of every log and bucket: a quorum of two survives one failure.
const REPLICAS: usize = 3;
pub const LEASE_TTL_MS: u64 = 3_000;
const LEASE_MARGIN_MS: u64 = 1_000;
/// How often the membership lease is renewed and a round of duties may
/// start: several times per lease TTL.
const TICK_EVERY: Duration = Duration::from_millis(300);
const FIRST_ASSIGNMENT_AFTER_MS: u64 = 4_000;
/// Bound on every NATS request, an append's acknowledgement included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes taken off the queue at once; the rest wait for the next turn.
const WRITES_PER_ROUND_MAX: usize = 4_096;
/// Room a record needs besides its body (its header and the message's
/// NATS headers).
const RECORD_OVERHEAD: usize = 1_024;
/// Exit status of a node whose store went ahead of its log.
pub const DIVERGED_EXIT: i32 = 75;

/// What the server passes to start clustered mode.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeId,
    pub advertise: SocketAddr,
    pub nats_urls: Vec<String>,
    /// NATS monitoring endpoints to check for `sync_always` first.
    pub nats_monitors: Vec<SocketAddr>,
    pub partitions: u32,
    pub standbys: usize,
    pub shards: usize,
}

/// One write of a shard for the log; the reply comes once the log has it
/// (`Ok`), or says why not.
pub struct WriteRequest {
    pub partition: PartitionId,
    pub payload: Vec<u8>,
    pub reply: flume::Sender<Result<(), String>>,
}

/// What the cluster thread tells a shard, in order.
pub enum ShardEvent {
    /// Who owns what now, and where nodes are.
    View(Arc<View>),
    /// A record of `partition` someone else wrote, to apply to the store.
    Apply {
        partition: PartitionId,
        payload: Vec<u8>,
    },
}

/// What a node knows about the cluster, as `GET /cluster/v1/status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct View {
    pub node: String,
    pub lease_held: bool,
    pub controller: bool,
    /// Live nodes and the addresses they serve on.
    pub nodes: BTreeMap<String, String>,
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionView {
    pub partition: u32,
    pub owner: Option<String>,
    pub epoch: u64,
    pub standbys: Vec<String>,
    /// This node's part: owner, candidate, standby, halted or none.
    pub role: &'static str,
    /// Last log sequence this node applied.
    pub applied: u64,
}

#[cfg(test)]
impl PartitionView {
    /// A partition owned by `owner`, this node's part in it being `role`.
    pub fn owned_by(owner: &str, role: &'static str) -> PartitionView {
        PartitionView {
            owner: Some(owner.into()),
            role,
            ..PartitionView::default()
        }
    }
}

impl View {
    /// Whether this node may take writes for `partition`: it owns it in
    /// the log, in the epoch the coordinator assigned, with a valid lease.
    pub fn writable(&self, partition: PartitionId) -> bool {
        self.lease_held
            && self
                .partitions
                .get(partition.0 as usize)
                .is_some_and(|p| p.role == "owner" && p.owner.as_deref() == Some(&self.node))
    }

    /// Where the owner of `partition` serves, when it is another live node.
    pub fn owner_address(&self, partition: PartitionId) -> Option<&str> {
        let owner = self.partitions.get(partition.0 as usize)?.owner.as_ref()?;
        (*owner != self.node)
            .then(|| self.nodes.get(owner).map(String::as_str))
            .flatten()
    }
}

/// What each shard holds to reach the cluster thread.
#[derive(Clone)]
pub struct ClusterHandle {
    pub writes: flume::Sender<WriteRequest>,
    pub node: NodeId,
    pub partitions: u32,
}

/// Connects to NATS, creates and verifies every partition's stream and
/// the coordinator buckets, and starts the cluster thread. Blocking: call
/// before the shards start. Returns the handle and one event channel per
/// shard.
pub fn start(
    settings: Settings,
) -> Result<(ClusterHandle, Vec<flume::Receiver<ShardEvent>>), String> {
    verify_fsync(&settings.nats_monitors)?;
    let bridge = Arc::new(
        Bridge::connect(&settings.nats_urls, REQUEST_TIMEOUT)
            .map_err(|error| format!("cannot connect to NATS: {error:?}"))?,
    );
    let log = NatsLog::new(bridge.clone(), STREAM_PREFIX);
    for p in 0..settings.partitions {
        retrying(&format!("partition {p}'s stream"), || {
            log.ensure_stream(PartitionId(p), REPLICAS)
                .map_err(|error| format!("{error:?}"))
        })?;
    }
    let ttl = Some(Duration::from_millis(LEASE_TTL_MS));
    let leases = retrying("the lease bucket", || {
        NatsKv::open(bridge.clone(), LEASE_BUCKET, ttl, REPLICAS).map_err(|e| format!("{e:?}"))
    })?;
    let assignments = retrying("the assignment bucket", || {
        NatsKv::open(bridge.clone(), ASSIGNMENT_BUCKET, None, REPLICAS)
            .map_err(|e| format!("{e:?}"))
    })?;
    retrying("this node's address", || {
        publish_address(&assignments, &settings.node, settings.advertise)
            .map_err(|e| format!("{e:?}"))
    })?;
    let (writes, queue) = flume::unbounded();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..settings.shards).map(|_| flume::unbounded()).unzip();
    let handle = ClusterHandle {
        writes,
        node: settings.node.clone(),
        partitions: settings.partitions,
    };
    let stores = Stores {
        log,
        leases,
        assignments,
    };
    std::thread::Builder::new()
        .name("pdb-cluster".into())
        .spawn(move || run(settings, stores, queue, senders))
        .map_err(|error| format!("cannot start the cluster thread: {error}"))?;
    Ok((handle, receivers))
}

/// Refuses to run on a NATS server that acknowledges before it fsyncs
/// (JetStream's default lazy fsync can lose acknowledged messages when
/// servers fail together). Servers named by no `--nats-monitor` cannot be
/// checked from here: said once in the log.
fn verify_fsync(monitors: &[SocketAddr]) -> Result<(), String> {
    if monitors.is_empty() {
        logging::warn(
            "NATS servers not checked for sync_interval: always; pass --nats-monitor for each",
            &[],
        );
    }
    for monitor in monitors {
        super::nats::verify_sync_always(*monitor, REQUEST_TIMEOUT)?;
    }
    Ok(())
}

/// How long startup keeps trying a step JetStream refuses: a cluster that
/// just formed, or nodes creating the same bucket at once, settle within
/// seconds.
const SETUP_RETRY_FOR: Duration = Duration::from_secs(30);

fn retrying<T>(what: &str, mut step: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match step() {
            Ok(done) => return Ok(done),
            Err(error) if started.elapsed() >= SETUP_RETRY_FOR => {
                return Err(format!("{what}: {error}"));
            }
            Err(error) => {
                logging::warn(
                    "cluster setup: retrying",
                    &[("step", &what), ("error", &error)],
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn publish_address(kv: &NatsKv, node: &NodeId, address: SocketAddr) -> Result<(), CoordError> {
    let key = format!("{ADDRESS_KEY_PREFIX}{node}");
    let value = address.to_string().into_bytes();
    match kv.get(&key)? {
        Some(current) => kv.update(&key, &value, current.revision).map(|_| ()),
        None => kv.create(&key, &value).map(|_| ()),
    }
}

/// The NATS-backed log and buckets the node runs on.
struct Stores {
    log: NatsLog,
    leases: NatsKv,
    assignments: NatsKv,
}

/// The cluster thread's state besides the node.
struct Runtime {
    settings: Settings,
    shards: Vec<flume::Sender<ShardEvent>>,
    started: Instant,
    view: Arc<View>,
    /// Advertised addresses of the nodes seen so far.
    addresses: BTreeMap<String, String>,
    /// Last errors logged by a tick, so a lasting failure logs once.
    last_errors: Vec<String>,
    ticks: u64,
    duties: Duties,
    /// Whether the last round found this node the controller.
    controller: bool,
    writes: Writes,
}

fn run(
    settings: Settings,
    stores: Stores,
    queue: flume::Receiver<WriteRequest>,
    shards: Vec<flume::Sender<ShardEvent>>,
) {
    let config = NodeConfig {
        node: settings.node.clone(),
        partitions: settings.partitions,
        standbys: settings.standbys,
        lease_ttl_ms: LEASE_TTL_MS,
        lease_margin_ms: LEASE_MARGIN_MS,
        first_assignment_after_ms: FIRST_ASSIGNMENT_AFTER_MS,
    };
    let mut node = Node::new(config, &stores.log, &stores.leases, &stores.assignments);
    let mut runtime = Runtime {
        settings,
        shards,
        started: Instant::now(),
        view: Arc::new(View::default()),
        addresses: BTreeMap::new(),
        last_errors: Vec::new(),
        ticks: 0,
        duties: Duties::default(),
        controller: false,
        writes: Writes::default(),
    };
    let (answers, answered) = flume::unbounded::<AppendAnswer>();
    let mut last_step = Instant::now();
    loop {
        // Writes and the log's answers first; the node's duties run one
        // step when nothing else is ready, and at least every few ms.
        let wait = runtime.duties.wait();
        let event = flume::Selector::new()
            .recv(&queue, |write| write.map(Event::Write))
            .recv(&answered, |answer| answer.map(Event::Answer))
            .wait_timeout(wait);
        let busy = matches!(event, Ok(Ok(_)));
        match event {
            Ok(Ok(Event::Write(first))) => {
                let more = queue.try_iter().take(WRITES_PER_ROUND_MAX - 1);
                runtime.writes.queue(std::iter::once(first).chain(more));
                runtime.launch(&mut node, &stores.log, &answers);
            }
            Ok(Ok(Event::Answer((partition, answer)))) => {
                runtime.settle(&mut node, partition, answer);
                runtime.launch(&mut node, &stores.log, &answers);
            }
            Ok(Err(_)) => return, // every shard is gone
            Err(_) => {}          // timed out: time for duties
        }
        if !busy || last_step.elapsed() >= DUTY_STARVATION_MAX {
            runtime.step(&mut node, &stores);
            last_step = Instant::now();
        }
    }
}

/// Where the node's duties stand. A round renews the controller lease,
/// passes over every partition as controller, then makes every partition
/// follow its assignment, one partition per step; the membership lease is
/// renewed every [`TICK_EVERY`] whatever the round is doing, so a slow
/// round (catching up, taking over many partitions) never lets it lapse.
struct Duties {
    next_renewal: Instant,
    /// Round in progress: the controller's pass and its next partition,
    /// then the next partition to follow.
    round: Option<Round>,
    tick: Tick,
}

struct Round {
    control: Option<(ControlPass, u32)>,
    follow_next: u32,
}

impl Default for Duties {
    fn default() -> Duties {
        Duties {
            next_renewal: Instant::now(),
            round: None,
            tick: Tick::default(),
        }
    }
}

impl Duties {
    /// How long the loop may wait for writes before the next step.
    fn wait(&self) -> Duration {
        match self.round {
            Some(_) => Duration::ZERO,
            None => self.next_renewal.saturating_duration_since(Instant::now()),
        }
    }
}

/// A partition's record on its way: what was appended and the writes it
/// carries.
struct InFlight {
    append: Append,
    waiters: Waiters,
}

/// Writes waiting for their partition's record, and the one record in
/// flight per partition (the log's expected-sequence check allows no
/// more). Partitions do not wait for each other.
#[derive(Default)]
struct Writes {
    queued: BTreeMap<PartitionId, Vec<WriteRequest>>,
    in_flight: BTreeMap<PartitionId, InFlight>,
}

impl Writes {
    /// Queues `batch` by partition, each partition's in arrival order.
    fn queue(&mut self, batch: impl IntoIterator<Item = WriteRequest>) {
        for write in batch {
            self.queued.entry(write.partition).or_default().push(write);
        }
    }
}

type AnswerSender = flume::Sender<AppendAnswer>;

/// What woke the cluster thread.
enum Event {
    Write(WriteRequest),
    Answer(AppendAnswer),
}

/// Longest a busy write path keeps the node's duties waiting.
const DUTY_STARVATION_MAX: Duration = Duration::from_millis(10);

type NatsNode<'l> = Node<'l, NatsLog, NatsKv>;

impl Runtime {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Starts the next record of every partition that has writes queued
    /// and no record in flight.
    fn launch(&mut self, node: &mut NatsNode<'_>, log: &NatsLog, answers: &AnswerSender) {
        let now = self.now_ms();
        let ready: Vec<PartitionId> = self
            .writes
            .queued
            .keys()
            .filter(|p| !self.writes.in_flight.contains_key(p))
            .copied()
            .collect();
        for partition in ready {
            let queued = self.writes.queued.get_mut(&partition).expect("listed");
            let (body, waiters) = take_record(queued);
            if queued.is_empty() {
                self.writes.queued.remove(&partition);
            }
            let append = match node.propose(partition, body, now) {
                Ok(append) => append,
                Err(error) => diverged(partition, &error, waiters),
            };
            let submitted = log.submit_append_to(
                partition,
                append.expected_last,
                &append.dedupe_id,
                append.bytes.clone(),
                answers.clone(),
            );
            if let Err(refused) = submitted {
                let _ = answers.send((partition, Err(refused)));
            }
            self.writes
                .in_flight
                .insert(partition, InFlight { append, waiters });
        }
    }

    /// What the log answered for `partition`'s record in flight: its
    /// writes are acknowledged once the log says it holds the record.
    fn settle(
        &mut self,
        node: &mut NatsNode<'_>,
        partition: PartitionId,
        answer: Result<super::Seq, super::ports::AppendError>,
    ) {
        let Some(record) = self.writes.in_flight.remove(&partition) else {
            return;
        };
        let settled = match node.settle(partition, record.append, answer) {
            Err(WriteError::Unresolved | WriteError::Driver(_)) => reconcile(node, partition),
            settled => settled,
        };
        // Our own record, applied to our store already.
        node.take_applied(partition);
        match settled {
            Ok(_) => {
                for waiter in record.waiters {
                    let _ = waiter.send(Ok(()));
                }
            }
            Err(error) => diverged(partition, &error, record.waiters),
        }
    }

    /// One step of the node's duties (see [`Duties`]); hands what it
    /// applied to the shards and tells them the view when it changed.
    fn step(&mut self, node: &mut NatsNode<'_>, stores: &Stores) {
        let now = self.now_ms();
        if Instant::now() >= self.duties.next_renewal {
            let renewed = node.renew(now);
            self.duties.tick.errors.extend(renewed.errors);
            self.duties.next_renewal = Instant::now() + TICK_EVERY;
            if self.duties.round.is_none() {
                let control = node
                    .begin_control(now, &mut self.duties.tick)
                    .map(|pass| (pass, 0));
                let follow_next = 0;
                self.duties.round = Some(Round {
                    control,
                    follow_next,
                });
            }
        } else if let Some(round) = &mut self.duties.round {
            match &mut round.control {
                Some((pass, next)) => {
                    node.control(PartitionId(*next), pass, &mut self.duties.tick);
                    *next += 1;
                    if *next == self.settings.partitions {
                        round.control = None;
                    }
                }
                None => {
                    let partition = PartitionId(round.follow_next);
                    round.follow_next += 1;
                    let round_over = round.follow_next == self.settings.partitions;
                    node.follow(partition, now, &mut self.duties.tick);
                    self.hand_over_applied(node, partition);
                    if round_over {
                        self.duties.round = None;
                        self.end_round(stores);
                    }
                }
            }
        }
        self.publish_view(node, now);
    }

    /// Sends what `partition`'s replica applied from the log to its shard.
    fn hand_over_applied(&self, node: &mut NatsNode<'_>, partition: PartitionId) {
        for (_, payload) in node.take_applied(partition) {
            let shard = partition.0 as usize % self.shards.len();
            let _ = self.shards[shard].send(ShardEvent::Apply { partition, payload });
        }
    }

    /// Logs what a round saw (a lasting failure once) and reads the nodes'
    /// addresses.
    fn end_round(&mut self, stores: &Stores) {
        let tick = std::mem::take(&mut self.duties.tick);
        if tick.errors != self.last_errors {
            for error in &tick.errors {
                logging::warn("cluster duty failed", &[("error", error)]);
            }
            self.last_errors = tick.errors;
        }
        for (partition, epoch) in &tick.took_over {
            logging::info(
                "took over partition",
                &[("partition", &partition.0), ("epoch", &epoch.0)],
            );
        }
        self.controller = tick.controller;
        self.learn_addresses(stores);
    }

    fn publish_view(&mut self, node: &NatsNode<'_>, now: u64) {
        let view = self.view_of(node, now, self.controller);
        if view != *self.view {
            self.view = Arc::new(view);
            for shard in &self.shards {
                let _ = shard.send(ShardEvent::View(self.view.clone()));
            }
        }
    }

    /// Reads the live nodes and the address of any not seen before.
    fn learn_addresses(&mut self, stores: &Stores) {
        let Ok(keys) = stores.leases.keys(NODE_KEY_PREFIX) else {
            return;
        };
        let live: Vec<String> = keys
            .iter()
            .map(|key| key[NODE_KEY_PREFIX.len()..].to_owned())
            .collect();
        // Known addresses are read again now and then: a node restarted
        // within its lease on another port keeps its id.
        self.ticks += 1;
        let refresh = self.ticks.is_multiple_of(ADDRESS_REFRESH_TICKS);
        for id in &live {
            if self.addresses.contains_key(id) && !refresh {
                continue;
            }
            let key = format!("{ADDRESS_KEY_PREFIX}{id}");
            if let Ok(Some(stored)) = stores.assignments.get(&key)
                && let Ok(address) = String::from_utf8(stored.value)
            {
                self.addresses.insert(id.clone(), address);
            }
        }
        self.addresses.retain(|id, _| live.contains(id));
    }

    fn view_of(&self, node: &NatsNode<'_>, now: u64, controller: bool) -> View {
        let partitions = (0..self.settings.partitions)
            .map(|p| partition_view(node, PartitionId(p)))
            .collect();
        View {
            node: self.settings.node.0.clone(),
            lease_held: node.lease_valid(now),
            controller,
            nodes: self.addresses.clone(),
            partitions,
        }
    }
}

fn partition_view(node: &NatsNode<'_>, partition: PartitionId) -> PartitionView {
    let assignment = node.assignment(partition);
    let replica = node.replica(partition);
    let role = match replica.map(|replica| replica.role()) {
        None => "none",
        Some(Role::Owner { .. }) => "owner",
        Some(Role::Candidate { .. }) => "candidate",
        Some(Role::Follower) => "standby",
        Some(Role::Halted(_)) => "halted",
    };
    let Assignment {
        owner,
        standbys,
        epoch,
    } = assignment.cloned().unwrap_or(Assignment {
        owner: NodeId(String::new()),
        standbys: Vec::new(),
        epoch: Default::default(),
    });
    PartitionView {
        partition: partition.0,
        owner: (!owner.0.is_empty()).then_some(owner.0),
        epoch: epoch.0,
        standbys: standbys.into_iter().map(|node| node.0).collect(),
        role,
        applied: replica.map_or(0, |replica| replica.applied().0),
    }
}

type Waiters = Vec<flume::Sender<Result<(), String>>>;

/// How long a flush whose outcome the log has not told yet (the append's
/// answer was lost, then reading the log failed: a leader election, a
/// lost server) is reconciled before the node gives up on it.
const RECONCILE_FOR: Duration = Duration::from_secs(15);
const RECONCILE_PAUSE: Duration = Duration::from_millis(250);

/// Reads the log at the flush's place until it says what became of it:
/// committed (`Ok`), lost, or still unknown after [`RECONCILE_FOR`]. Its
/// clients keep waiting meanwhile: the log decides, never a guess.
fn reconcile(node: &mut NatsNode<'_>, partition: PartitionId) -> Result<super::Seq, WriteError> {
    let started = Instant::now();
    loop {
        std::thread::sleep(RECONCILE_PAUSE);
        match node.reconcile(partition) {
            Err(WriteError::Unresolved | WriteError::Driver(_))
                if started.elapsed() < RECONCILE_FOR => {}
            settled => return settled,
        }
    }
}

/// Takes from the front of `writes` as many as one record holds (at least
/// one: a single write too large for a record fails when framed).
fn take_record(writes: &mut Vec<WriteRequest>) -> (Vec<u8>, Waiters) {
    let room = RECORD_BYTES_MAX - RECORD_OVERHEAD;
    let (mut bytes, mut count) = (0, 0);
    for write in writes.iter() {
        let framed = flush::framed_len(&write.payload);
        if count > 0 && bytes + framed > room {
            break;
        }
        bytes += framed;
        count += 1;
    }
    let taken: Vec<WriteRequest> = writes.drain(..count).collect();
    let body = flush::join(taken.iter().map(|write| write.payload.as_slice()));
    (body, taken.into_iter().map(|write| write.reply).collect())
}

/// The log did not take writes this node's store already holds: answer
/// them 503 and stop, so the next start rebuilds the store from the log.
fn diverged(partition: PartitionId, error: &WriteError, waiters: Waiters) -> ! {
    let why = format!("{error:?}");
    for waiter in waiters {
        let _ = waiter.send(Err(why.clone()));
    }
    logging::error(
        "the partition's log did not take writes this node applied; exiting so the next start rebuilds from the log",
        &[("partition", &partition.0), ("error", &why)],
    );
    std::process::exit(DIVERGED_EXIT);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(partition: u32, bytes: usize) -> (WriteRequest, flume::Receiver<Result<(), String>>) {
        let (reply, answer) = flume::bounded(1);
        let request = WriteRequest {
            partition: PartitionId(partition),
            payload: vec![7; bytes],
            reply,
        };
        (request, answer)
    }

    // A flush is split by partition, keeping each partition's order, and
    // a partition's part is cut into records the log accepts.
    #[test]
    fn writes_are_grouped_by_partition_and_cut_to_record_size() {
        let mut writes = Writes::default();
        writes.queue([write(1, 10).0, write(0, 20).0, write(1, 30).0]);
        let grouped = &mut writes.queued;
        let ones: Vec<usize> = grouped[&PartitionId(1)]
            .iter()
            .map(|w| w.payload.len())
            .collect();
        assert_eq!(ones, vec![10, 30]);
        let (body, waiters) = take_record(grouped.get_mut(&PartitionId(1)).unwrap());
        assert_eq!(
            (flush::split(&body).unwrap().len(), waiters.len()),
            (2, 1 + 1)
        );
        let half = RECORD_BYTES_MAX / 2;
        let mut big = vec![write(2, half).0, write(2, half).0, write(2, 5).0];
        let (first, waiters) = take_record(&mut big);
        assert_eq!((waiters.len(), big.len()), (1, 2));
        assert!(first.len() <= RECORD_BYTES_MAX - RECORD_OVERHEAD);
    }

    #[test]
    fn a_view_names_writable_partitions_and_owner_addresses() {
        let owned = PartitionView::owned_by;
        let view = View {
            node: "a".into(),
            lease_held: true,
            controller: false,
            nodes: [("b".to_owned(), "127.0.0.1:9".to_owned())].into(),
            partitions: vec![
                owned("a", "owner"),
                owned("b", "standby"),
                owned("a", "candidate"),
            ],
        };
        assert!(view.writable(PartitionId(0)));
        assert!(!view.writable(PartitionId(1)) && !view.writable(PartitionId(2)));
        assert_eq!(view.owner_address(PartitionId(1)), Some("127.0.0.1:9"));
        assert_eq!(view.owner_address(PartitionId(0)), None);
        let lapsed = View {
            lease_held: false,
            ..view
        };
        assert!(!lapsed.writable(PartitionId(0)));
    }
}
