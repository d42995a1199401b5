//! The live tail in embedded mode: a [`Subscription`] receives every
//! change of one thread (new, edited, reacted-to, deleted or restored
//! messages) as the HTTP stream's events, in order, after the change is
//! durable. Subscribing with the id of the last event seen replays what
//! happened since, then goes live without a gap or a repeat.
//!
//! The executor keeps each thread's listeners and pushes events into a
//! bounded channel per subscription; a consumer that falls
//! [`EVENTS_BUFFERED_MAX`] events behind is dropped (its subscription ends
//! with [`Error::TailLagged`], and resuming from its last id loses
//! nothing).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Error, anyone};
use crate::engine::StreamEvent;
use crate::engine::{Command, Engine, EngineError, Published, Reply};
use crate::model::{Message, ThreadId};

/// Events a subscription holds before its consumer is considered gone.
pub const EVENTS_BUFFERED_MAX: usize = 10_000;

/// The only core of an embedded database, as the engine counts listeners.
const CORE: usize = 0;

/// One change of a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the change happened (ns); pass the last one seen to
    /// [`super::Db::subscribe`] to resume.
    pub id: u64,
    /// `message.created`, `message.updated` or `message.deleted`.
    pub kind: String,
    /// The message after the change, as JSON.
    pub data: String,
}

impl Event {
    /// The message this event carries, when it carries one.
    pub fn message(&self) -> Option<Message> {
        serde_json::from_str(&self.data).ok()
    }
}

/// A live tail of one thread. Dropping it ends the subscription.
pub struct Subscription {
    events: flume::Receiver<Event>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// The next event, waiting as long as it takes.
    pub fn recv(&self) -> Result<Event, Error> {
        self.events.recv().map_err(|_| self.ended())
    }

    /// The next event, or `None` after `timeout` without one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>, Error> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(flume::RecvTimeoutError::Timeout) => Ok(None),
            Err(flume::RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    fn ended(&self) -> Error {
        if self.lagged.load(Ordering::Acquire) {
            Error::TailLagged
        } else {
            Error::Closed("the database was closed".into())
        }
    }
}

/// The executor's side of one subscription.
pub(super) struct Listener {
    events: flume::Sender<Event>,
    lagged: Arc<AtomicBool>,
    /// The newest event delivered: a change replayed and then published
    /// live is sent once.
    last_id: u64,
}

impl Listener {
    /// A listener and the subscription it feeds.
    pub(super) fn pair() -> (Listener, Subscription) {
        let (sender, receiver) = flume::bounded(EVENTS_BUFFERED_MAX);
        let lagged = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            events: sender,
            lagged: lagged.clone(),
            last_id: 0,
        };
        (
            listener,
            Subscription {
                events: receiver,
                lagged,
            },
        )
    }

    /// Sends `event` unless it was sent already; `false` when the consumer
    /// is gone or too far behind, and the listener should be dropped.
    fn offer(&mut self, event: &StreamEvent) -> bool {
        if event.id <= self.last_id {
            return true;
        }
        let converted = Event {
            id: event.id,
            kind: event.kind.to_owned(),
            data: String::from_utf8_lossy(&event.data).into_owned(),
        };
        match self.events.try_send(converted) {
            Ok(()) => {
                self.last_id = event.id;
                true
            }
            Err(flume::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Release);
                false
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Every thread's listeners on the executor.
#[derive(Default)]
pub(super) struct Tails {
    listeners: RefCell<HashMap<String, Vec<Listener>>>,
}

impl Tails {
    /// Registers `listener` with the engine, replays the changes after
    /// `after` into it, then keeps it for live events.
    pub(super) async fn subscribe(
        &self,
        engine: &Rc<Engine>,
        thread: ThreadId,
        after: Option<u64>,
        mut listener: Listener,
    ) -> Result<(), EngineError> {
        let command = Command::Subscribe {
            thread: thread.clone(),
            caller: anyone(),
            core: CORE,
            after,
        };
        let mut reply = engine.run(command).await.0?;
        loop {
            let Reply::Events { events, more } = reply else {
                return Err(EngineError::Storage("a subscription got no events".into()));
            };
            if !events.iter().all(|event| listener.offer(event)) {
                unsubscribe(engine, &thread).await;
                return Ok(());
            }
            if !more {
                break;
            }
            let command = Command::ChangesAfter {
                thread: thread.clone(),
                caller: anyone(),
                after: listener.last_id,
            };
            reply = match engine.run(command).await.0 {
                Ok(reply) => reply,
                Err(err) => {
                    unsubscribe(engine, &thread).await;
                    return Err(err);
                }
            };
        }
        // No await since the last replay: every later change is published.
        self.listeners
            .borrow_mut()
            .entry(thread.to_string())
            .or_default()
            .push(listener);
        Ok(())
    }

    /// Sends a published change to its thread's listeners, dropping those
    /// whose consumer is gone or too far behind.
    pub(super) fn deliver(&self, engine: &Rc<Engine>, published: &Published) {
        let mut all = self.listeners.borrow_mut();
        let Some(listeners) = all.get_mut(&published.thread) else {
            return;
        };
        let before = listeners.len();
        listeners.retain_mut(|listener| listener.offer(&published.event));
        let dropped = before - listeners.len();
        if listeners.is_empty() {
            all.remove(&published.thread);
        }
        if let Some(thread) = ThreadId::parse(&published.thread) {
            for _ in 0..dropped {
                let (engine, thread) = (engine.clone(), thread.clone());
                crate::runtime::spawn_detached(async move { unsubscribe(&engine, &thread).await });
            }
        }
    }
}

async fn unsubscribe(engine: &Rc<Engine>, thread: &ThreadId) {
    let command = Command::Unsubscribe {
        thread: thread.clone(),
        core: CORE,
    };
    // Only bookkeeping: a failure leaves one listener count that a later
    // publish to nobody costs nothing.
    let _ = engine.run(command).await;
}
