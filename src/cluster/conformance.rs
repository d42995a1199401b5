//! What every [`Log`] and [`Coordinator`] must do, as checks that run
//! against the in-memory fakes (unit tests) and against JetStream (the
//! cluster test). If the fakes drifted from the engine, the protocol's unit
//! tests would prove things about an engine that does not exist.
//!
//! Each check panics with the broken rule; callers pass a partition or key
//! prefix that nothing else uses.

use super::ports::{AppendError, CoordError, Coordinator, Log};
use super::{PartitionId, Seq};

/// The log rules the protocol relies on, on an empty `partition`.
pub fn check_log(log: &impl Log, partition: PartitionId) {
    assert_eq!(
        log.last_seq(partition),
        Ok(Seq(0)),
        "a new partition is empty"
    );
    assert_eq!(
        log.read(partition, Seq(1), 10),
        Ok(vec![]),
        "reading an empty partition"
    );
    assert_eq!(
        log.append(partition, Seq(0), "c-1", b"one"),
        Ok(Seq(1)),
        "first append"
    );
    let stale = log.append(partition, Seq(0), "c-2", b"two");
    assert!(
        matches!(stale, Err(AppendError::WrongLastSequence { .. })),
        "stale expected sequence: {stale:?}"
    );
    let retried = log.append(partition, Seq(0), "c-1", b"one");
    let once = matches!(
        retried,
        Ok(Seq(1)) | Err(AppendError::WrongLastSequence { .. })
    );
    assert!(once, "a retried record lands at most once: {retried:?}");
    assert_eq!(
        log.append(partition, Seq(1), "c-3", b"three"),
        Ok(Seq(2)),
        "second append"
    );
    assert_eq!(log.last_seq(partition), Ok(Seq(2)));
    let all = vec![(Seq(1), b"one".to_vec()), (Seq(2), b"three".to_vec())];
    assert_eq!(
        log.read(partition, Seq(1), 10),
        Ok(all.clone()),
        "read everything, in order"
    );
    assert_eq!(
        log.read(partition, Seq(2), 10),
        Ok(all[1..].to_vec()),
        "read from the middle"
    );
    assert_eq!(
        log.read(partition, Seq(1), 1),
        Ok(all[..1].to_vec()),
        "read at most `max`"
    );
    assert_eq!(
        log.read(partition, Seq(3), 10),
        Ok(vec![]),
        "read past the end"
    );
}

/// The coordinator rules the protocol relies on, on keys under `prefix`.
pub fn check_coordinator(coordinator: &impl Coordinator, prefix: &str) {
    let key = format!("{prefix}a");
    assert_eq!(coordinator.get(&key), Ok(None), "a new key is absent");
    let first = coordinator
        .create(&key, b"1")
        .expect("create an absent key");
    assert_eq!(
        coordinator.create(&key, b"2"),
        Err(CoordError::Exists),
        "create a present key"
    );
    let second = coordinator
        .update(&key, b"2", first)
        .expect("update at the current revision");
    assert!(second > first, "revisions grow");
    assert_eq!(
        coordinator.update(&key, b"3", first),
        Err(CoordError::WrongRevision),
        "stale update"
    );
    let current = coordinator.get(&key).unwrap().expect("present");
    assert_eq!(
        (current.value.as_slice(), current.revision),
        (&b"2"[..], second),
        "reads the latest write"
    );
    coordinator.create(&format!("{prefix}b"), b"x").unwrap();
    let keys = coordinator.keys(prefix).unwrap();
    assert_eq!(
        keys,
        [format!("{prefix}a"), format!("{prefix}b")],
        "keys under the prefix, sorted"
    );
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::cluster::fake::{FakeKv, FakeLog};

    #[test]
    fn the_fakes_keep_the_rules() {
        check_log(&FakeLog::default(), PartitionId(0));
        check_coordinator(
            &FakeKv::new(Rc::new(Cell::new(0)), Some(1_000)),
            "conformance.",
        );
    }
}
