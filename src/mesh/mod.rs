//! The cross-core request/reply mesh, and each core's live-tail hub.
//!
//! Each executor joins one full glommio channel mesh. A [`Mesh::call`] for a
//! thread owned elsewhere sends `Envelope::Request` with a ticket to the
//! owner; the owner's receive loop executes it on its [`Engine`] and sends
//! `Envelope::Reply` with the same ticket back, where the receive loop hands
//! it to the waiting task through a core-local channel. All state here is
//! core-local (`Rc`, `RefCell`): nothing is shared between threads except
//! the channels themselves.

pub mod hub;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::{self, LocalSender};

use crate::engine::{Command, Engine, EngineError, Outcome, Published, Reply, StreamEvent};
use crate::metrics::{CoreMetrics, ShardSample};
use crate::shard::ShardId;
use hub::Hub;

pub enum Envelope {
    Request {
        ticket: u64,
        command: Command,
    },
    Reply {
        ticket: u64,
        outcome: Outcome,
    },
    /// A thread's change for the live-tail subscribers on the receiving core.
    Event {
        thread: String,
        event: StreamEvent,
    },
}

/// Messages that may wait in one direction of one core pair before senders
/// wait. In-flight commands are bounded anyway by one per connection.
pub const CHANNEL_CAPACITY: usize = 1024;

pub type MeshHandle = MeshBuilder<Envelope, Full>;

/// Creates the mesh every shard joins.
///
/// glommio 0.9's `MeshBuilder` keeps its peer list behind a plain `Rc`
/// although it is handed to several threads, so its reference count is
/// updated without atomics. Two rules keep that sound here: clones are made
/// only on the thread that calls this (the pool clones the shard closure
/// there), and one clone is leaked so the count can never reach zero while
/// the executor threads drop theirs concurrently — a racing decrement can
/// then only leave the count too high, never free the list early.
pub fn builder(shard_count: usize) -> MeshHandle {
    let handle = MeshBuilder::full(shard_count, CHANNEL_CAPACITY);
    std::mem::forget(handle.clone());
    handle
}

pub struct Mesh {
    engine: Rc<Engine>,
    hub: Hub,
    shard_count: usize,
    senders: Senders<Envelope>,
    pending: RefCell<HashMap<u64, LocalSender<Outcome>>>,
    next_ticket: Cell<u64>,
    /// Commands this core sent to other cores, for stats.
    hops: Cell<u64>,
    /// Commands from other cores being executed here now.
    executing: Cell<u64>,
    /// This core's HTTP and connection counters.
    metrics: CoreMetrics,
}

impl Mesh {
    /// Wraps this executor's ends of the joined mesh and starts the
    /// receive loops on the current executor.
    pub fn start(
        senders: Senders<Envelope>,
        receivers: Receivers<Envelope>,
        engine: Rc<Engine>,
    ) -> Rc<Mesh> {
        let mesh = Rc::new(Mesh {
            engine,
            hub: Hub::default(),
            shard_count: senders.nr_consumers(),
            senders,
            pending: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(0),
            hops: Cell::new(0),
            executing: Cell::new(0),
            metrics: CoreMetrics::default(),
        });
        mesh.clone().spawn_receivers(receivers);
        mesh
    }

    pub fn local_shard(&self) -> ShardId {
        self.engine.shard()
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn engine(&self) -> &Rc<Engine> {
        &self.engine
    }

    pub fn hops(&self) -> u64 {
        self.hops.get()
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// This core's whole part of a scrape: storage, mesh and HTTP counters.
    fn metrics_sample(&self) -> ShardSample {
        ShardSample {
            routes: self.metrics.routes(),
            connections_open: self.metrics.open_connections.get() as u64,
            connections_accepted: self.metrics.accepted.get(),
            connections_refused: self.metrics.refused.get(),
            mesh_hops: self.hops.get(),
            mesh_calls_waiting: self.pending.borrow().len() as u64,
            mesh_requests_executing: self.executing.get(),
            ..self.engine.metrics_sample()
        }
    }

    /// This core's live-tail subscribers.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Runs a command on this core's engine and delivers the change it made
    /// to every core listening to its thread.
    async fn run_local(&self, command: Command) -> Outcome {
        if let Command::Metrics = command {
            return Ok(Reply::Metrics(Box::new(self.metrics_sample())));
        }
        let (outcome, published) = self.engine.run(command).await;
        if let Some(published) = published {
            self.publish(published);
        }
        outcome
    }

    fn publish(&self, published: Published) {
        let Published {
            thread,
            cores,
            followers,
            event,
        } = published;
        // A thread's topic is its id; a user's stream has its own topic.
        for (topic, cores) in std::iter::once((thread, cores)).chain(followers) {
            for core in cores {
                if core == self.local_shard().0 {
                    self.hub.publish(&topic, &event);
                    continue;
                }
                let envelope = Envelope::Event {
                    thread: topic.clone(),
                    event: event.clone(),
                };
                // A full inbox means that core is far behind; its
                // subscribers will miss this event and can resume from
                // their last event id.
                let _ = self.senders.try_send_to(core, envelope);
            }
        }
    }

    /// Runs `command` on shard `target` and returns its outcome.
    pub async fn call(&self, target: ShardId, command: Command) -> Outcome {
        if target == self.local_shard() {
            return self.run_local(command).await;
        }
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket.wrapping_add(1));
        let (reply_tx, reply_rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(ticket, reply_tx);
        self.hops.set(self.hops.get() + 1);
        if self
            .senders
            .send_to(target.0, Envelope::Request { ticket, command })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&ticket);
            return Err(EngineError::Unavailable(format!(
                "{target} is not reachable"
            )));
        }
        match reply_rx.recv().await {
            Some(outcome) => outcome,
            None => Err(EngineError::Unavailable(format!(
                "{target} dropped the request"
            ))),
        }
    }

    fn spawn_receivers(self: Rc<Self>, mut receivers: Receivers<Envelope>) {
        for (peer, receiver) in receivers.streams() {
            let mesh = self.clone();
            glommio::spawn_local(async move {
                while let Some(envelope) = receiver.recv().await {
                    mesh.on_envelope(peer, envelope);
                }
            })
            .detach();
        }
    }

    fn on_envelope(self: &Rc<Self>, peer: usize, envelope: Envelope) {
        match envelope {
            Envelope::Request { ticket, command } => {
                // Never wait inside the receive loop: a write waits for its
                // fsync and a reply may wait for room in the peer's inbox, so
                // each request gets a task and two cores replying to each
                // other cannot deadlock.
                let mesh = self.clone();
                // A scrape does not count itself as load.
                let counted = u64::from(!matches!(command, Command::Metrics));
                mesh.executing.set(mesh.executing.get() + counted);
                glommio::spawn_local(async move {
                    let outcome = mesh.run_local(command).await;
                    mesh.executing.set(mesh.executing.get() - counted);
                    let _ = mesh
                        .senders
                        .send_to(peer, Envelope::Reply { ticket, outcome })
                        .await;
                })
                .detach();
            }
            Envelope::Reply { ticket, outcome } => {
                if let Some(waiter) = self.pending.borrow_mut().remove(&ticket) {
                    // The waiter may have gone (connection closed); then the
                    // outcome is simply dropped.
                    let _ = waiter.try_send(outcome);
                }
            }
            Envelope::Event { thread, event } => self.hub.publish(&thread, &event),
        }
    }
}
