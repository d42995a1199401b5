//! A shard's side of clustered mode: which partitions this node may write
//! now (its copy of the cluster thread's [`View`]), the writes a command
//! made that the log must acknowledge before its client is answered, and
//! the task that applies records other owners wrote.
//!
//! Everything here lives on the shard's executor. The shard never waits
//! on NATS: it hands writes to the cluster thread over a channel and
//! awaits the answer, serving other connections meanwhile.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::forward::Pool;
use super::runtime::{ClusterHandle, DIVERGED_EXIT, ShardEvent, View, WriteRequest};
use super::{PartitionId, flush, partition_for};
use crate::engine::{Engine, EngineError};
use crate::logging;

pub struct Replication {
    handle: ClusterHandle,
    view: RefCell<Arc<View>>,
    /// Writes of the command executing now: `(partition, WAL bytes)`.
    staged: RefCell<Vec<(PartitionId, Vec<u8>)>>,
    /// Connections to other nodes for forwarded requests.
    pool: Pool,
}

impl Replication {
    pub fn new(handle: ClusterHandle) -> Rc<Replication> {
        Rc::new(Replication {
            handle,
            view: RefCell::new(Arc::new(View::default())),
            staged: RefCell::new(Vec::new()),
            pool: Pool::default(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub fn node(&self) -> &str {
        &self.handle.node.0
    }

    /// The cluster's partition count.
    pub fn partitions(&self) -> u32 {
        self.handle.partitions
    }

    pub fn partition_of(&self, thread: &str) -> PartitionId {
        partition_for(thread, self.handle.partitions)
    }

    /// The partition a write of `thread` goes to, refused unless this node
    /// may write it now.
    pub fn admit(&self, thread: &[u8]) -> Result<PartitionId, EngineError> {
        let thread = std::str::from_utf8(thread)
            .map_err(|_| EngineError::PartitionUnavailable("thread id is not UTF-8".into()))?;
        let partition = self.partition_of(thread);
        if !self.view.borrow().writable(partition) {
            return Err(EngineError::PartitionUnavailable(format!(
                "partition {partition} is not writable on this node"
            )));
        }
        Ok(partition)
    }

    /// Keeps a write the store applied until [`Replication::publish`].
    pub fn stage(&self, partition: PartitionId, wal_bytes: Vec<u8>) {
        self.staged.borrow_mut().push((partition, wal_bytes));
    }

    /// Sends the writes staged by the command that just executed to the
    /// log and waits until the log acknowledged every one.
    pub async fn publish(&self) -> Result<(), EngineError> {
        let staged = std::mem::take(&mut *self.staged.borrow_mut());
        let mut answers = Vec::with_capacity(staged.len());
        for (partition, payload) in staged {
            let (reply, answer) = flume::bounded(1);
            let request = WriteRequest {
                partition,
                payload,
                reply,
            };
            if self.handle.writes.send(request).is_err() {
                return Err(EngineError::PartitionUnavailable(
                    "the cluster thread stopped".into(),
                ));
            }
            answers.push(answer);
        }
        for answer in answers {
            match answer.recv_async().await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(EngineError::PartitionUnavailable(why)),
                Err(_) => {
                    return Err(EngineError::PartitionUnavailable(
                        "the cluster thread stopped".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Applies the cluster thread's events in order until it stops: views
    /// replace this shard's copy, records of other owners go to the store.
    pub async fn follow(self: Rc<Self>, events: flume::Receiver<ShardEvent>, engine: Rc<Engine>) {
        while let Ok(event) = events.recv_async().await {
            match event {
                ShardEvent::View(view) => *self.view.borrow_mut() = view,
                ShardEvent::Apply { partition, payload } => {
                    if let Err(why) = apply(&engine, &payload) {
                        // The store can no longer follow the log.
                        logging::error(
                            "cannot apply a partition's record; exiting so the next start rebuilds from the log",
                            &[("partition", &partition.0), ("error", &why)],
                        );
                        std::process::exit(DIVERGED_EXIT);
                    }
                }
            }
        }
    }
}

fn apply(engine: &Engine, payload: &[u8]) -> Result<(), String> {
    let writes = flush::split(payload).map_err(|_| "record body cut short".to_owned())?;
    for write in writes {
        engine.apply_replicated(write)?;
    }
    Ok(())
}
