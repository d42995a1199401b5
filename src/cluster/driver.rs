//! Runs one [`Replica`] against a [`Log`], synchronously: catching up,
//! taking over, writing a flush and finding out what became of it. Each
//! call is bounded in log round trips. The blocking calls make it a tool
//! for a cluster thread and for tests; a shard drives the same replica
//! through the bridge's channels instead.

use super::ports::{AppendError, Log, LogError, READ_BATCH_MAX};
use super::replica::{Append, Applied, Effect, Halt, Refusal, Replica, Resolved, Role, StaleEpoch};
use super::{Epoch, PartitionId, Seq};

/// How many append/read rounds one call may take before it reports.
pub const ROUNDS_MAX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    Halted(Halt),
    Log(LogError),
    /// The log already names an epoch at least as new as ours.
    Stale(StaleEpoch),
    /// The log refused outright (nothing written).
    Unavailable(String),
    /// Kept losing the race for the log's end; try again later.
    RoundsExhausted,
}

/// Why a write was not acknowledged. Every variant is a 503 with
/// `Retry-After` at the edge; only `Unresolved` leaves the outcome open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    Refused(Refusal),
    /// Definitely not in the log: another owner's record took its place.
    Lost,
    /// The log refused it outright; definitely not in the log.
    Unavailable(String),
    /// No answer within the bounded rounds: it may still be in the log.
    /// The partition takes no writes until [`Driver::reconcile`] settles it.
    Unresolved,
    Driver(DriverError),
}

impl From<DriverError> for WriteError {
    fn from(error: DriverError) -> WriteError {
        WriteError::Driver(error)
    }
}

pub struct Driver<'l, L: Log> {
    log: &'l L,
    partition: PartitionId,
    pub replica: Replica,
    /// What applying the log did, in order, for the caller to apply to its
    /// store; drained with [`Driver::take_effects`].
    effects: Vec<(Seq, Effect)>,
}

impl<'l, L: Log> Driver<'l, L> {
    pub fn new(log: &'l L, partition: PartitionId, replica: Replica) -> Self {
        Driver {
            log,
            partition,
            replica,
            effects: Vec::new(),
        }
    }

    pub fn take_effects(&mut self) -> Vec<(Seq, Effect)> {
        std::mem::take(&mut self.effects)
    }

    fn apply(&mut self, seq: Seq, bytes: &[u8]) -> Result<Option<Resolved>, DriverError> {
        let Applied {
            seq,
            effect,
            resolved,
        } = self
            .replica
            .apply(seq, bytes)
            .map_err(DriverError::Halted)?;
        self.effects.push((seq, effect));
        Ok(resolved)
    }

    /// Applies the log up to its current end; returns what that said about
    /// the flush in flight, if anything.
    pub fn catch_up(&mut self) -> Result<Option<Resolved>, DriverError> {
        let mut resolved = None;
        loop {
            let from = self.replica.applied().next();
            let batch = self
                .log
                .read(self.partition, from, READ_BATCH_MAX)
                .map_err(DriverError::Log)?;
            if batch.is_empty() {
                return Ok(resolved);
            }
            for (seq, bytes) in batch {
                resolved = self.apply(seq, &bytes)?.or(resolved);
            }
        }
    }

    /// Becomes the log's owner in `epoch`: catch up, append the barrier,
    /// and read on and retry while someone else appends first.
    pub fn take_over(&mut self, epoch: Epoch) -> Result<(), DriverError> {
        self.replica
            .begin_takeover(epoch)
            .map_err(DriverError::Stale)?;
        for _ in 0..ROUNDS_MAX {
            self.catch_up()?;
            if matches!(self.replica.role(), Role::Owner { epoch: owned, .. } if *owned == epoch) {
                return Ok(()); // an earlier, unclear attempt landed
            }
            let Some(barrier) = self.replica.barrier() else {
                let log_epoch = self
                    .replica
                    .log_owner()
                    .map_or(Epoch(0), |(epoch, _)| *epoch);
                return Err(DriverError::Stale(StaleEpoch { log_epoch }));
            };
            match self.append(&barrier) {
                Ok(seq) => _ = self.apply_own(seq, &barrier)?,
                Err(AppendError::WrongLastSequence { .. } | AppendError::Unclear) => continue,
                Err(AppendError::Unavailable(error)) => {
                    return Err(DriverError::Unavailable(error));
                }
            }
        }
        Err(DriverError::RoundsExhausted)
    }

    fn append(&self, append: &Append) -> Result<Seq, AppendError> {
        self.log.append(
            self.partition,
            append.expected_last,
            &append.dedupe_id,
            &append.bytes,
        )
    }

    /// Applies our own record the log accepted at `seq` without reading it
    /// back, unless `seq` is not the next one (a duplicate answered with
    /// the original's place): then the log is read instead.
    fn apply_own(&mut self, seq: Seq, append: &Append) -> Result<Option<Resolved>, DriverError> {
        if seq == self.replica.applied().next() && seq == append.expected_last.next() {
            return self.apply(seq, &append.bytes);
        }
        self.catch_up()
    }

    /// Writes one flush and answers only what the log says: `Ok(seq)` once
    /// it is the log's record `seq`.
    pub fn write(&mut self, payload: Vec<u8>) -> Result<Seq, WriteError> {
        let append = self.propose(payload)?;
        self.settle(append)
    }

    /// Frames one flush; the caller appends it and hands the log's answer
    /// to [`Driver::settle_answered`].
    pub fn propose(&mut self, payload: Vec<u8>) -> Result<Append, WriteError> {
        self.replica.propose(payload).map_err(WriteError::Refused)
    }

    /// Settles a flush left [`WriteError::Unresolved`] by an earlier call.
    pub fn reconcile(&mut self) -> Result<Seq, WriteError> {
        if let Some(Resolved::Committed { seq, .. }) = self.catch_up()? {
            return Ok(seq);
        }
        match self.replica.retry() {
            Some(append) => self.settle(append),
            None => Err(WriteError::Lost),
        }
    }

    fn settle(&mut self, append: Append) -> Result<Seq, WriteError> {
        let answer = self.append(&append);
        self.settle_answered(append, answer)
    }

    /// Finds out what became of `append` given the log's first `answer`
    /// to it: reads the log and appends the same bytes again as needed,
    /// a bounded number of rounds.
    pub fn settle_answered(
        &mut self,
        mut append: Append,
        answer: Result<Seq, AppendError>,
    ) -> Result<Seq, WriteError> {
        let mut first = Some(answer);
        for _ in 0..ROUNDS_MAX {
            let answer = first.take().unwrap_or_else(|| self.append(&append));
            let resolved = match answer {
                Ok(seq) => self.apply_own(seq, &append)?,
                Err(AppendError::WrongLastSequence { .. } | AppendError::Unclear) => {
                    self.catch_up()?
                }
                Err(AppendError::Unavailable(error)) => {
                    self.replica.abandon();
                    return Err(WriteError::Unavailable(error));
                }
            };
            match resolved {
                Some(Resolved::Committed { seq, .. }) => return Ok(seq),
                Some(Resolved::Lost { .. }) => return Err(WriteError::Lost),
                None => {}
            }
            // Nothing in the flush's place yet: the same bytes again.
            append = self.replica.retry().ok_or(WriteError::Unresolved)?;
        }
        Err(WriteError::Unresolved)
    }
}
