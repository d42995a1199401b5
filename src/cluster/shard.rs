//! A shard's side of clustered mode: which partitions this node may write
//! now (its copy of the cluster thread's [`View`]), the writes a command
//! made that the log must acknowledge before its client is answered, the
//! writes the store holds that the log has not acknowledged yet (a read
//! that may see one waits for its acknowledgement, so no client is ever
//! shown a write the log then refuses), and the task that applies records
//! other owners wrote.
//!
//! Everything here lives on the shard's executor. The shard never waits
//! on NATS: it hands writes to the cluster thread over a channel and
//! awaits the answer, serving other connections meanwhile.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::forward::Pool;
use super::runtime::{ClusterHandle, DIVERGED_EXIT, ShardEvent, View, WriteRequest};
use super::{PartitionId, flush, partition_for};
use crate::engine::{Engine, EngineError};
use crate::logging;
use crate::wal::record::Lsn;

/// Longest a read waits for the log to acknowledge a write it saw. The
/// cluster thread resolves every append within a few of its 5 s request
/// bounds or the node exits; past this the read answers 503 instead.
const ACK_WAIT_MAX: Duration = Duration::from_secs(20);

pub struct Replication {
    handle: ClusterHandle,
    view: RefCell<Arc<View>>,
    /// Writes of the command executing now: `(partition, LSN, WAL bytes)`.
    staged: RefCell<Vec<(PartitionId, Lsn, Vec<u8>)>>,
    /// Writes the store applied that the log has not acknowledged yet.
    unacknowledged: Unacknowledged,
    /// Connections to other nodes for forwarded requests.
    pool: Pool,
}

impl Replication {
    pub fn new(handle: ClusterHandle) -> Rc<Replication> {
        Rc::new(Replication {
            handle,
            view: RefCell::new(Arc::new(View::default())),
            staged: RefCell::new(Vec::new()),
            unacknowledged: Unacknowledged::default(),
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

    /// Keeps a write the store applied (as `lsn`) until
    /// [`Replication::publish`], and counts it unacknowledged till then.
    pub fn stage(&self, partition: PartitionId, lsn: Lsn, wal_bytes: Vec<u8>) {
        self.unacknowledged.insert(lsn);
        self.staged.borrow_mut().push((partition, lsn, wal_bytes));
    }

    /// Sends the writes staged by the command that just executed to the
    /// log and waits until the log acknowledged every one. A write the log
    /// did not take stays unacknowledged: the store holds it and the log
    /// does not, so reads that may see it never answer (the cluster thread
    /// stops the node, whose next start rebuilds from the log).
    pub async fn publish(&self) -> Result<(), EngineError> {
        let staged = std::mem::take(&mut *self.staged.borrow_mut());
        let mut answers = Vec::with_capacity(staged.len());
        for (partition, lsn, payload) in staged {
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
            answers.push((lsn, answer));
        }
        for (lsn, answer) in answers {
            match answer.recv_async().await {
                Ok(Ok(())) => self.unacknowledged.acknowledge(lsn),
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

    /// The oldest write the store holds and the log has not acknowledged.
    pub fn oldest_unacknowledged(&self) -> Option<Lsn> {
        self.unacknowledged.oldest()
    }

    /// Waits until the log acknowledged every write up to `lsn`, which a
    /// read saw in the store; 503 when that takes longer than
    /// [`ACK_WAIT_MAX`].
    pub async fn wait_acknowledged(&self, lsn: Lsn) -> Result<(), EngineError> {
        let timeout = async {
            crate::runtime::sleep(ACK_WAIT_MAX).await;
            false
        };
        match futures_lite::future::or(self.unacknowledged.wait(lsn), timeout).await {
            true => Ok(()),
            false => Err(EngineError::PartitionUnavailable(format!(
                "the log has not acknowledged LSN {} yet",
                lsn.0
            ))),
        }
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

/// LSNs of writes the store applied and the log has not acknowledged, and
/// the reads waiting for them.
#[derive(Default)]
struct Unacknowledged {
    lsns: RefCell<BTreeSet<Lsn>>,
    waiters: RefCell<Vec<(Lsn, flume::Sender<()>)>>,
}

impl Unacknowledged {
    fn insert(&self, lsn: Lsn) {
        self.lsns.borrow_mut().insert(lsn);
    }

    fn oldest(&self) -> Option<Lsn> {
        self.lsns.borrow().first().copied()
    }

    fn through(&self, lsn: Lsn) -> bool {
        self.oldest().is_none_or(|oldest| oldest > lsn)
    }

    /// True once every write up to `lsn` is acknowledged; false if this
    /// set is dropped first.
    async fn wait(&self, lsn: Lsn) -> bool {
        if self.through(lsn) {
            return true;
        }
        let (wake, woken) = flume::bounded(1);
        self.waiters.borrow_mut().push((lsn, wake));
        woken.recv_async().await.is_ok()
    }

    fn acknowledge(&self, lsn: Lsn) {
        self.lsns.borrow_mut().remove(&lsn);
        // A waiter that gave up dropped its receiver: forget it here.
        self.waiters
            .borrow_mut()
            .retain(|(waits_for, wake)| match self.through(*waits_for) {
                true => {
                    let _ = wake.try_send(());
                    false
                }
                false => !wake.is_disconnected(),
            });
    }
}

fn apply(engine: &Engine, payload: &[u8]) -> Result<(), String> {
    let writes = flush::split(payload).map_err(|_| "record body cut short".to_owned())?;
    for write in writes {
        engine.apply_replicated(write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_lite::future::{block_on, poll_once};

    use super::*;

    #[test]
    fn a_read_waits_until_every_write_up_to_what_it_saw_is_acknowledged() {
        let pending = Unacknowledged::default();
        pending.insert(Lsn(3));
        pending.insert(Lsn(5));
        assert_eq!(pending.oldest(), Some(Lsn(3)));
        assert!(pending.through(Lsn(2)));
        assert!(!pending.through(Lsn(3)));
        let mut saw_five = Box::pin(pending.wait(Lsn(5)));
        let mut saw_three = Box::pin(pending.wait(Lsn(3)));
        assert_eq!(block_on(poll_once(&mut saw_five)), None);
        assert_eq!(block_on(poll_once(&mut saw_three)), None);
        // Acknowledgements of different partitions come in any order: 5
        // alone settles neither read, since 3 is older and still open.
        pending.acknowledge(Lsn(5));
        assert_eq!(block_on(poll_once(&mut saw_five)), None);
        assert_eq!(pending.oldest(), Some(Lsn(3)));
        pending.acknowledge(Lsn(3));
        assert!(block_on(saw_five));
        assert!(block_on(saw_three));
        assert_eq!(pending.oldest(), None);
        assert!(block_on(pending.wait(Lsn(9))), "nothing open: no wait");
    }

    #[test]
    fn a_read_that_gave_up_is_forgotten() {
        let pending = Unacknowledged::default();
        pending.insert(Lsn(1));
        pending.insert(Lsn(2));
        let mut gives_up = Box::pin(pending.wait(Lsn(2)));
        assert_eq!(block_on(poll_once(&mut gives_up)), None);
        drop(gives_up);
        assert_eq!(pending.waiters.borrow().len(), 1);
        pending.acknowledge(Lsn(1));
        assert!(pending.waiters.borrow().is_empty());
    }
}
