//! Live-tail subscribers on one core.
//!
//! A connection streaming a thread's changes registers here, on the core
//! that accepted it, and tells the thread's owner that this core listens.
//! The owner sends each change once per listening core (over the mesh),
//! and the hub copies it into every local subscriber's bounded queue. A
//! subscriber whose queue is full is dropped and told so by its stream,
//! rather than letting a slow reader make the server buffer without bound.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

/// Events that may wait for one slow subscriber before it is dropped.
pub const SUBSCRIBER_QUEUE_MAX: usize = 256;

/// One change of a thread, as sent to live-tail clients.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// When the change happened (ns); also the SSE `id:` for resuming.
    pub id: u64,
    /// `message.created`, `message.updated` or `message.deleted`.
    pub kind: &'static str,
    /// The message's JSON after the change.
    pub data: Arc<[u8]>,
}

struct Subscriber {
    id: u64,
    sender: LocalSender<StreamEvent>,
    overflowed: Rc<Cell<bool>>,
}

/// A local subscriber's end: its events, and whether it was dropped for
/// falling behind.
pub struct Subscription {
    pub id: u64,
    pub events: LocalReceiver<StreamEvent>,
    pub overflowed: Rc<Cell<bool>>,
}

#[derive(Default)]
pub struct Hub {
    by_thread: RefCell<HashMap<String, Vec<Subscriber>>>,
    next_id: Cell<u64>,
}

impl Hub {
    pub fn subscribe(&self, thread: &str) -> Subscription {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (sender, events) = local_channel::new_bounded(SUBSCRIBER_QUEUE_MAX);
        let overflowed = Rc::new(Cell::new(false));
        self.by_thread
            .borrow_mut()
            .entry(thread.to_owned())
            .or_default()
            .push(Subscriber {
                id,
                sender,
                overflowed: overflowed.clone(),
            });
        Subscription {
            id,
            events,
            overflowed,
        }
    }

    pub fn unsubscribe(&self, thread: &str, id: u64) {
        let mut by_thread = self.by_thread.borrow_mut();
        if let Some(subscribers) = by_thread.get_mut(thread) {
            subscribers.retain(|subscriber| subscriber.id != id);
            if subscribers.is_empty() {
                by_thread.remove(thread);
            }
        }
    }

    /// Hands `event` to every local subscriber of `thread`; drops those
    /// whose queue is full (closing it ends their stream).
    pub fn publish(&self, thread: &str, event: &StreamEvent) {
        let mut by_thread = self.by_thread.borrow_mut();
        let Some(subscribers) = by_thread.get_mut(thread) else {
            return;
        };
        subscribers.retain(
            |subscriber| match subscriber.sender.try_send(event.clone()) {
                Ok(()) => true,
                Err(_) => {
                    subscriber.overflowed.set(true);
                    false
                }
            },
        );
        if subscribers.is_empty() {
            by_thread.remove(thread);
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.by_thread.borrow().values().map(Vec::len).sum()
    }
}
