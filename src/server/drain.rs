//! A core's shutdown notice for its connections.
//!
//! When the shard starts draining, every connection waiting idle between
//! requests (or holding a live tail) is woken and closes; a connection in
//! the middle of a request finishes it and answers with `Connection: close`.
//! Core-local: one per executor, no atomics.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    /// One waker per pending `wait`, keyed so a re-polled wait replaces its
    /// own entry and a dropped one removes it: the map never outgrows the
    /// number of connections.
    waiters: RefCell<HashMap<u64, Waker>>,
    next_id: Cell<u64>,
}

impl Drain {
    pub fn start(&self) {
        self.draining.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves once draining has started.
    pub fn wait(&self) -> DrainWait<'_> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        DrainWait { drain: self, id }
    }
}

pub struct DrainWait<'a> {
    drain: &'a Drain,
    id: u64,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.draining.get() {
            return Poll::Ready(());
        }
        self.drain
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        self.drain.waiters.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waits_resolve_on_start_and_never_pile_up() {
        let drain = Drain::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut first = Box::pin(drain.wait());
        for _ in 0..5 {
            assert_eq!(first.as_mut().poll(&mut cx), Poll::Pending);
        }
        {
            let mut dropped = Box::pin(drain.wait());
            assert_eq!(dropped.as_mut().poll(&mut cx), Poll::Pending);
            assert_eq!(drain.waiters.borrow().len(), 2);
        }
        assert_eq!(
            drain.waiters.borrow().len(),
            1,
            "re-polls replace, drops remove"
        );
        drain.start();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(()));
        assert!(drain.is_draining());
        assert_eq!(
            Box::pin(drain.wait()).as_mut().poll(&mut cx),
            Poll::Ready(())
        );
    }
}
