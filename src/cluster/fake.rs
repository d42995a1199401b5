//! In-memory stand-ins for the log and the coordinator, with the failures
//! the protocol must survive injected on demand. Single-threaded, like the
//! unit tests that drive them.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use super::ports::{
    AppendError, CoordError, Coordinator, Log, LogError, READ_BATCH_MAX, Revision, Versioned,
};
use super::{Millis, PartitionId, Seq};

/// What the next append suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Written, but the acknowledgement is lost.
    LandThenTimeout,
    /// Not written, and no answer.
    TimeoutWithoutLanding,
    /// Not written yet and no answer; lands just before the second call
    /// on the log after it (a proposal still in the log's pipeline), and
    /// registers its dedupe id only if `remember_id` (else the duplicate
    /// window has closed by the time of the retry).
    LandLater { remember_id: bool },
}

struct Pending {
    calls_left: u32,
    partition: PartitionId,
    expected_last: Seq,
    id: Option<String>,
    record: Vec<u8>,
}

#[derive(Default)]
struct Stream {
    records: Vec<Vec<u8>>,
    /// Dedupe ids seen, like JetStream's duplicate window (which here never
    /// closes; tests that need it closed use `forget_dedupe_ids`).
    dedupe: HashMap<String, Seq>,
}

#[derive(Default)]
pub struct FakeLog {
    streams: RefCell<BTreeMap<PartitionId, Stream>>,
    faults: RefCell<VecDeque<Fault>>,
    landing_later: RefCell<Option<Pending>>,
}

impl FakeLog {
    /// The next appends suffer `fault`, one each.
    pub fn fail_appends(&self, fault: Fault, count: usize) {
        self.faults
            .borrow_mut()
            .extend(std::iter::repeat_n(fault, count));
    }

    /// Every record of `partition`, for audits.
    pub fn records(&self, partition: PartitionId) -> Vec<Vec<u8>> {
        self.streams
            .borrow()
            .get(&partition)
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }

    /// Counts one call on the log, landing a pending record when its time
    /// has come.
    fn tick(&self) {
        let mut pending = self.landing_later.borrow_mut();
        if let Some(p) = pending.as_mut() {
            p.calls_left -= 1;
            if p.calls_left == 0 {
                let p = pending.take().unwrap();
                let _ = self.write(p.partition, p.expected_last, p.id.as_deref(), &p.record);
            }
        }
    }

    fn write(
        &self,
        partition: PartitionId,
        expected_last: Seq,
        id: Option<&str>,
        record: &[u8],
    ) -> Result<Seq, AppendError> {
        let mut streams = self.streams.borrow_mut();
        let stream = streams.entry(partition).or_default();
        if let Some(seq) = id.and_then(|id| stream.dedupe.get(id)) {
            return Ok(*seq);
        }
        let last = Seq(stream.records.len() as u64);
        if last != expected_last {
            return Err(AppendError::WrongLastSequence { last: Some(last) });
        }
        stream.records.push(record.to_vec());
        if let Some(id) = id {
            stream.dedupe.insert(id.to_owned(), last.next());
        }
        Ok(last.next())
    }
}

impl Log for FakeLog {
    fn append(
        &self,
        partition: PartitionId,
        expected_last: Seq,
        id: &str,
        record: &[u8],
    ) -> Result<Seq, AppendError> {
        self.tick();
        let fault = self.faults.borrow_mut().pop_front();
        match fault {
            None => self.write(partition, expected_last, Some(id), record),
            Some(Fault::LandThenTimeout) => {
                let _ = self.write(partition, expected_last, Some(id), record);
                Err(AppendError::Unclear)
            }
            Some(Fault::TimeoutWithoutLanding) => Err(AppendError::Unclear),
            Some(Fault::LandLater { remember_id }) => {
                let id = remember_id.then(|| id.to_owned());
                let record = record.to_vec();
                *self.landing_later.borrow_mut() = Some(Pending {
                    calls_left: 2,
                    partition,
                    expected_last,
                    id,
                    record,
                });
                Err(AppendError::Unclear)
            }
        }
    }

    fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.tick();
        let records = self.records(partition);
        let start = from.0.max(1);
        let records = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| (Seq(i as u64 + 1), record));
        Ok(records
            .skip(start as usize - 1)
            .take(max.min(READ_BATCH_MAX))
            .collect())
    }

    fn last_seq(&self, partition: PartitionId) -> Result<Seq, LogError> {
        self.tick();
        Ok(Seq(self.records(partition).len() as u64))
    }
}

/// A manual clock shared by a fake coordinator and the test driving it.
pub type Clock = Rc<Cell<Millis>>;

struct Entry {
    value: Vec<u8>,
    revision: Revision,
    written_at: Millis,
}

/// One key-value bucket; with a TTL, entries vanish once not written for
/// that long (as JetStream's `max_age` removes them).
pub struct FakeKv {
    clock: Clock,
    ttl_ms: Option<Millis>,
    entries: RefCell<BTreeMap<String, Entry>>,
    last_revision: Cell<u64>,
}

impl FakeKv {
    pub fn new(clock: Clock, ttl_ms: Option<Millis>) -> FakeKv {
        FakeKv {
            clock,
            ttl_ms,
            entries: RefCell::default(),
            last_revision: Cell::new(0),
        }
    }

    fn expire(&self) {
        let now = self.clock.get();
        if let Some(ttl) = self.ttl_ms {
            self.entries
                .borrow_mut()
                .retain(|_, entry| now < entry.written_at + ttl);
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Revision {
        let revision = Revision(self.last_revision.get() + 1);
        self.last_revision.set(revision.0);
        let entry = Entry {
            value: value.to_vec(),
            revision,
            written_at: self.clock.get(),
        };
        self.entries.borrow_mut().insert(key.to_owned(), entry);
        revision
    }
}

impl Coordinator for FakeKv {
    fn get(&self, key: &str) -> Result<Option<Versioned>, CoordError> {
        self.expire();
        let entries = self.entries.borrow();
        Ok(entries.get(key).map(|entry| Versioned {
            value: entry.value.clone(),
            revision: entry.revision,
        }))
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, CoordError> {
        self.expire();
        if self.entries.borrow().contains_key(key) {
            return Err(CoordError::Exists);
        }
        Ok(self.put(key, value))
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, CoordError> {
        self.expire();
        let current = self.entries.borrow().get(key).map(|entry| entry.revision);
        if current != Some(expected) {
            return Err(CoordError::WrongRevision);
        }
        Ok(self.put(key, value))
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        self.expire();
        Ok(self
            .entries
            .borrow()
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect())
    }
}
