//! Live-tail subscribers on one core.
//!
//! A connection streaming a thread's changes registers here, on the core
//! that accepted it, and tells the thread's owner that this core listens.
//! The owner sends each change once per listening core (over the mesh),
//! and the hub copies it into every local subscriber's bounded queue. A
//! subscriber whose queue is full is dropped and told so by its stream,
//! rather than letting a slow reader make the server buffer without bound.
//! Subscribers are keyed by topic: a thread's id, or `@<user>` for a
//! user's stream of all their threads (`engine::user_topic`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::engine::StreamEvent;

/// Events that may wait for one slow subscriber before it is dropped.
pub const SUBSCRIBER_QUEUE_MAX: usize = 256;

/// Bytes of event data that may wait for one subscriber before it is
/// dropped (at least one event always fits). Event data is shared between
/// a core's subscribers, so this bounds what one slow reader keeps alive
/// rather than a copy per reader: 256 events of 1 MiB messages would
/// otherwise pin 256 MiB.
pub const SUBSCRIBER_QUEUE_BYTES_MAX: usize = 4 << 20;

struct Subscriber {
    id: u64,
    sender: LocalSender<StreamEvent>,
    overflowed: Rc<Cell<bool>>,
    queued_bytes: Rc<Cell<usize>>,
}

/// A local subscriber's end: its events, and whether it was dropped for
/// falling behind.
pub struct Subscription {
    pub id: u64,
    events: LocalReceiver<StreamEvent>,
    pub overflowed: Rc<Cell<bool>>,
    /// Bytes of event data queued and not yet received.
    queued_bytes: Rc<Cell<usize>>,
}

impl Subscription {
    /// The next queued event; `None` once the subscriber was dropped.
    pub async fn next(&self) -> Option<StreamEvent> {
        let event = self.events.recv().await?;
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(event.data.len()));
        Some(event)
    }
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
        let queued_bytes = Rc::new(Cell::new(0));
        self.by_thread
            .borrow_mut()
            .entry(thread.to_owned())
            .or_default()
            .push(Subscriber {
                id,
                sender,
                overflowed: overflowed.clone(),
                queued_bytes: queued_bytes.clone(),
            });
        Subscription {
            id,
            events,
            overflowed,
            queued_bytes,
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
    /// whose queue is full, in events or bytes (closing it ends their
    /// stream).
    pub fn publish(&self, thread: &str, event: &StreamEvent) {
        self.hand_over(thread, event, |_| true);
    }

    /// Hands `event` to subscriber `id` of `thread` only (an event another
    /// node relayed for that one stream), as `publish` would.
    pub fn deliver(&self, thread: &str, id: u64, event: &StreamEvent) {
        self.hand_over(thread, event, |subscriber| subscriber.id == id);
    }

    fn hand_over(&self, thread: &str, event: &StreamEvent, to: impl Fn(&Subscriber) -> bool) {
        let mut by_thread = self.by_thread.borrow_mut();
        let Some(subscribers) = by_thread.get_mut(thread) else {
            return;
        };
        let size = event.data.len();
        subscribers.retain(|subscriber| {
            if !to(subscriber) {
                return true;
            }
            let queued = subscriber.queued_bytes.get();
            let fits = queued == 0 || queued.saturating_add(size) <= SUBSCRIBER_QUEUE_BYTES_MAX;
            if fits && subscriber.sender.try_send(event.clone()).is_ok() {
                subscriber.queued_bytes.set(queued + size);
                return true;
            }
            subscriber.overflowed.set(true);
            false
        });
        if subscribers.is_empty() {
            by_thread.remove(thread);
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.by_thread.borrow().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64) -> StreamEvent {
        StreamEvent {
            id,
            kind: "message.created",
            data: b"{}".as_slice().into(),
        }
    }

    #[test]
    fn deliver_reaches_one_subscriber_and_publish_all() {
        futures_lite::future::block_on(async {
            let hub = Hub::default();
            let (first, second) = (hub.subscribe("@alice"), hub.subscribe("@alice"));
            hub.deliver("@alice", second.id, &event(1));
            hub.publish("@alice", &event(2));
            assert_eq!(first.next().await.unwrap().id, 2);
            assert_eq!(second.next().await.unwrap().id, 1);
            assert_eq!(second.next().await.unwrap().id, 2);
            // Nothing for a subscriber that is gone, or a topic nobody follows.
            hub.unsubscribe("@alice", second.id);
            hub.deliver("@alice", second.id, &event(3));
            hub.deliver("@bob", first.id, &event(4));
            assert_eq!(hub.subscriber_count(), 1);
        });
    }
}
