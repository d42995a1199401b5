//! Hard deletion on one shard: erasing a thread now, and the steps of the
//! retention job, which removes soft-deleted threads and messages once
//! they have been deleted for long enough (and, if asked, every message
//! past an age).
//!
//! Erasing a thread takes two parts. The first, one write, removes its
//! record, its author index entry and its participants' member index
//! entries and leaves an erasure marker: from then on the API does not
//! know the thread, and its id stays taken until the erasure ends. The
//! rest of its keys (messages, versions, replies, changes, participants)
//! are removed in batches by [`PurgeRequest`] steps, each bounded by a
//! budget of keys, until none is left and the marker goes.
//!
//! A retention pass walks the shard in three phases, each resumable from
//! a [`PurgeCursor`]: thread records (expired soft-deleted threads start
//! their erasure), messages (expired ones go with their versions and reply
//! index entries, and their thread's counters follow), then the erasure
//! markers. The caller yields between steps, so a pass over a large shard
//! never holds its executor for more than one step.
//!
//! Removals are tombstones: the data leaves the API at once and the disk
//! when compaction has merged the tombstones with the tables holding it
//! and the WAL segments holding it are checkpointed away (see README,
//! "Retention and erasure").

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

use super::command::EngineError;
use super::reply::Reply;
use super::{Engine, Executed};
use crate::model::{Message, MessageId, ThreadId, ThreadRecord};
use crate::store::{Direction, MessageCandidate, Ops, Space, Store, keys};
use crate::wal::record::Lsn;

/// Keys a retention step examines or removes before it hands back.
pub const PURGE_BUDGET_DEFAULT: usize = 1000;

/// Versions and replies of one message removed per step: a message edited
/// more often than this keeps its key until a later step.
const KEYS_PER_MESSAGE_MAX: usize = 1000;

/// What the retention job removes; `None` keeps that kind forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Soft-deleted threads and messages, this long after their deletion.
    pub deleted_after: Option<Duration>,
    /// Every message, this long after it was posted.
    pub messages_max_age: Option<Duration>,
}

/// What a purge removed, or with `dry_run` would remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeCounts {
    /// Threads whose erasure began (their messages count in `messages`).
    pub threads: u64,
    pub messages: u64,
    /// Past versions removed. A dry run counts those of single expired
    /// messages only: the versions of a whole thread are found as it is
    /// erased.
    pub versions: u64,
    /// Every stored key removed (index entries, replies, changes,
    /// participants and read markers included); 0 in a dry run.
    pub keys: u64,
    /// Dry run only: threads whose erasure began and is not finished.
    pub erasures_pending: u64,
}

impl std::ops::AddAssign for PurgeCounts {
    fn add_assign(&mut self, other: PurgeCounts) {
        self.threads += other.threads;
        self.messages += other.messages;
        self.versions += other.versions;
        self.keys += other.keys;
        self.erasures_pending += other.erasures_pending;
    }
}

/// The phases of a retention pass, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PurgePhase {
    #[default]
    Threads,
    Messages,
    Erasures,
    Done,
}

/// Where a pass is: its phase and the last key that phase handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeCursor {
    pub phase: PurgePhase,
    pub after: Option<Vec<u8>>,
}

impl PurgeCursor {
    fn next_phase(&mut self) {
        self.phase = match self.phase {
            PurgePhase::Threads => PurgePhase::Messages,
            PurgePhase::Messages => PurgePhase::Erasures,
            PurgePhase::Erasures | PurgePhase::Done => PurgePhase::Done,
        };
        self.after = None;
    }

    fn after_str(&self) -> Option<&str> {
        self.after
            .as_deref()
            .and_then(|after| std::str::from_utf8(after).ok())
    }
}

/// One step of a retention pass.
#[derive(Debug, Clone)]
pub struct PurgeRequest {
    pub dry_run: bool,
    pub policy: RetentionPolicy,
    /// The time expiry is measured from (nanoseconds since the epoch).
    pub now_ns: u64,
    pub budget: usize,
    pub cursor: PurgeCursor,
}

/// A step's answer: what it did and where the pass goes on.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub counts: PurgeCounts,
    pub cursor: PurgeCursor,
    /// Erased threads whose vault keys `Engine::run` destroys once the
    /// step's writes are durable (crypto-shredding).
    pub shred: Vec<String>,
}

/// A step in progress.
struct Step<'a> {
    request: &'a PurgeRequest,
    report: PurgeReport,
    budget: usize,
    lsn: Option<Lsn>,
}

impl Step<'_> {
    fn spend(&mut self, keys: usize) {
        self.budget = self.budget.saturating_sub(keys.max(1));
    }

    fn logged(&mut self, lsn: Lsn) {
        self.lsn = self.lsn.max(Some(lsn));
    }

    /// The latest deletion (or posting) time that has expired after `age`.
    fn cutoff(&self, age: Option<Duration>) -> Option<u64> {
        age.map(|age| {
            let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
            self.request.now_ns.saturating_sub(age)
        })
    }
}

/// When a soft-deleted message was deleted. Messages deleted before the
/// time was kept count from their last edit, the latest time they hold.
fn deleted_at(message: &Message) -> u64 {
    message
        .deleted_ts
        .or(message.updated_ts)
        .unwrap_or(message.ts)
}

/// A message the retention job removes.
struct Expired {
    ts: u64,
    deleted: bool,
    reply_to_ts: Option<u64>,
}

impl Engine {
    /// `Command::EraseThread`: the thread leaves the API now; its keys
    /// follow in the next purge steps.
    pub(super) fn erase_thread(&self, id: &ThreadId) -> Result<Executed, EngineError> {
        let record = self
            .store
            .get_thread(id.as_str())?
            .ok_or(EngineError::ThreadNotFound)?;
        let mut report = PurgeReport::default();
        let lsn = self.begin_erasure(&record, &mut report, false)?;
        let reply = Reply::Purged(report);
        match lsn {
            Some(lsn) => Executed::write(reply, lsn),
            None => Executed::read(reply),
        }
    }

    /// Removes the thread from the API in one write and marks it for the
    /// erasure of the rest of its keys; its vault key goes after the write.
    fn begin_erasure(
        &self,
        record: &ThreadRecord,
        report: &mut PurgeReport,
        dry_run: bool,
    ) -> Result<Option<Lsn>, EngineError> {
        let messages = self.counts(record)?.all;
        let counts = &mut report.counts;
        counts.threads += 1;
        counts.messages += messages;
        if dry_run {
            return Ok(None);
        }
        let id = record.thread.id.as_str();
        let mut members = Vec::new();
        self.store
            .scan_participants(id, None, Direction::Ascending, |participant| {
                members.push(participant.user_id);
                Ok(true)
            })?;
        let mut ops = Ops::default();
        ops.remove(Space::Threads, keys::thread(id));
        let thread = &record.thread;
        let author_key = keys::author_thread(&thread.author, thread.created_ts, id);
        ops.remove(Space::AuthorThreads, author_key);
        for user in &members {
            ops.remove(Space::MemberThreads, keys::member_thread(user, id));
        }
        counts.keys += ops.len() as u64;
        Store::erasure_op(&mut ops, id);
        let lsn = self.commit(ops)?;
        self.forget_erased(record, &members, messages);
        if record.vault_key {
            report.shred.push(id.to_owned());
        }
        Ok(Some(lsn))
    }

    /// Drops an erased thread from every in-memory index and counter.
    fn forget_erased(&self, record: &ThreadRecord, members: &[String], messages: u64) {
        let id = record.thread.id.as_str();
        self.authors.forget(&record.thread.author);
        self.user_streams.left(&record.thread.author, id);
        for user in members {
            self.members.left(user, id);
            self.user_streams.left(user, id);
        }
        if let Some(count) = self.thread_count.get() {
            self.thread_count.set(Some(count.saturating_sub(1)));
        }
        if let Some(count) = self.message_count.get() {
            self.message_count.set(Some(count.saturating_sub(messages)));
        }
        self.forget_dek(id);
    }

    /// `Command::Purge`: one bounded step of a retention pass.
    pub(super) fn purge_step(&self, request: &PurgeRequest) -> Result<Executed, EngineError> {
        let mut step = Step {
            request,
            report: PurgeReport {
                counts: PurgeCounts::default(),
                cursor: request.cursor.clone(),
                shred: Vec::new(),
            },
            budget: request.budget.max(1),
            lsn: None,
        };
        while step.budget > 0 && step.report.cursor.phase != PurgePhase::Done {
            match step.report.cursor.phase {
                PurgePhase::Threads => self.purge_threads(&mut step)?,
                PurgePhase::Messages => self.purge_messages(&mut step)?,
                PurgePhase::Erasures => self.purge_erasures(&mut step)?,
                PurgePhase::Done => {}
            }
        }
        let reply = Reply::Purged(step.report);
        match step.lsn {
            Some(lsn) => Executed::write(reply, lsn),
            None => Executed::read(reply),
        }
    }

    /// Starts the erasure of soft-deleted threads whose deletion expired,
    /// and of encrypted threads whose vault key is gone (records of erased
    /// threads that came back with a backup restored since).
    fn purge_threads(&self, step: &mut Step) -> Result<(), EngineError> {
        let cutoff = step.cutoff(step.request.policy.deleted_after);
        let orphans = self.has_vault();
        if cutoff.is_none() && !orphans {
            step.report.cursor.next_phase();
            return Ok(());
        }
        let (limit, mut examined, mut last) = (step.budget, 0, None);
        let mut expired = Vec::new();
        let after = step.report.cursor.after_str().map(str::to_owned);
        let ascending = Direction::Ascending;
        self.store
            .scan_threads("", after.as_deref(), ascending, |id, record| {
                examined += 1;
                last = Some(id.as_bytes().to_vec());
                let thread = &record.thread;
                let deleted_at = thread.deleted.then_some(thread.updated_ts);
                let expired_now = deleted_at.zip(cutoff).is_some_and(|(at, cut)| at <= cut);
                if expired_now || (orphans && record.vault_key && !self.vault_holds(id)) {
                    expired.push(record);
                }
                Ok(examined < limit)
            })?;
        step.spend(examined);
        match examined < limit {
            true => step.report.cursor.next_phase(),
            false => step.report.cursor.after = last,
        }
        for record in expired {
            let dry_run = step.request.dry_run;
            if let Some(lsn) = self.begin_erasure(&record, &mut step.report, dry_run)? {
                step.logged(lsn);
            }
        }
        Ok(())
    }

    /// Removes expired messages with their versions and reply entries.
    fn purge_messages(&self, step: &mut Step) -> Result<(), EngineError> {
        let policy = step.request.policy;
        let deleted_cutoff = step.cutoff(policy.deleted_after);
        let age_cutoff = step.cutoff(policy.messages_max_age);
        if deleted_cutoff.is_none() && age_cutoff.is_none() {
            step.report.cursor.next_phase();
            return Ok(());
        }
        let limit = step.budget;
        let after = step.report.cursor.after.clone();
        let batch = self.store.message_candidates(after.as_deref(), limit)?;
        step.spend(batch.len());
        match batch.len() < limit {
            true => step.report.cursor.next_phase(),
            false => step.report.cursor.after = batch.last().map(|found| found.key.clone()),
        }
        let mut by_thread: BTreeMap<String, Vec<Expired>> = BTreeMap::new();
        for found in batch {
            if let Some(expired) = expiry(&found, deleted_cutoff, age_cutoff)? {
                by_thread.entry(found.thread).or_default().push(expired);
            }
        }
        for (thread, expired) in by_thread {
            self.purge_thread_messages(step, &thread, &expired)?;
        }
        Ok(())
    }

    /// Removes `expired` messages of `thread` and updates its counters.
    fn purge_thread_messages(
        &self,
        step: &mut Step,
        thread: &str,
        expired: &[Expired],
    ) -> Result<(), EngineError> {
        // A thread being erased has no record, and one whose vault key is
        // gone is erased whole: either way its erasure takes the messages.
        let mut record = match self.get_thread(thread) {
            Ok(Some(record)) => record,
            Ok(None) | Err(EngineError::ThreadNotFound) => return Ok(()),
            Err(err) => return Err(err),
        };
        // An expired deleted thread is erased whole (a dry run counted it).
        let erased_whole = step.cutoff(step.request.policy.deleted_after);
        if record.thread.deleted && erased_whole.is_some_and(|at| record.thread.updated_ts <= at) {
            return Ok(());
        }
        let mut ops = Ops::default();
        let (mut removed, mut removed_deleted) = (0, 0);
        for message in expired {
            let prefix = keys::versions_prefix(thread, message.ts);
            let versions = self
                .store
                .keys_under(Space::Versions, &prefix, KEYS_PER_MESSAGE_MAX)?;
            let replies = self
                .store
                .keys_under(Space::Replies, &prefix, KEYS_PER_MESSAGE_MAX)?;
            let whole =
                versions.len() < KEYS_PER_MESSAGE_MAX && replies.len() < KEYS_PER_MESSAGE_MAX;
            step.report.counts.versions += versions.len() as u64;
            for key in versions {
                ops.remove(Space::Versions, key);
            }
            for key in replies {
                ops.remove(Space::Replies, key);
            }
            if !whole {
                continue;
            }
            if let Some(parent_ts) = message.reply_to_ts {
                ops.remove(Space::Replies, keys::reply(thread, parent_ts, message.ts));
            }
            ops.remove(Space::Messages, keys::message(thread, message.ts));
            removed += 1;
            removed_deleted += u64::from(message.deleted);
        }
        step.spend(ops.len());
        step.report.counts.messages += removed;
        if step.request.dry_run || ops.is_empty() {
            return Ok(());
        }
        step.report.counts.keys += ops.len() as u64;
        if let Some(counts) = record.counts.as_mut() {
            counts.all = counts.all.saturating_sub(removed);
            counts.deleted = counts.deleted.saturating_sub(removed_deleted);
            ops.extend(self.thread_record_ops(&record)?);
        }
        step.logged(self.commit(ops)?);
        if let Some(count) = self.message_count.get() {
            self.message_count.set(Some(count.saturating_sub(removed)));
        }
        Ok(())
    }

    /// Removes the keys of threads being erased, a budget's worth at a
    /// time; a thread with none left ends its erasure.
    fn purge_erasures(&self, step: &mut Step) -> Result<(), EngineError> {
        let after = step.report.cursor.after_str().map(str::to_owned);
        let ids = self.store.erasures(after.as_deref(), step.budget)?;
        let seen_all = ids.len() < step.budget;
        for id in ids {
            if step.request.dry_run {
                step.report.counts.erasures_pending += 1;
                step.spend(1);
                step.report.cursor.after = Some(id.into_bytes());
                continue;
            }
            let found = self.store.thread_keys(&id, step.budget)?;
            step.spend(found.keys.len());
            let mut ops = Ops::default();
            for (space, key) in found.keys {
                step.report.counts.versions += u64::from(space == Space::Versions);
                ops.remove(space, key);
            }
            step.report.counts.keys += ops.len() as u64;
            // The marker stays until the vault key is gone: a crash between
            // the two leaves the erasure to finish, never a live key.
            let shredded = !self.vault_holds(&id);
            if found.complete && shredded {
                Store::erasure_done_op(&mut ops, &id);
            }
            if !ops.is_empty() {
                step.logged(self.commit(ops)?);
            }
            if !shredded {
                // The step ends here: `Engine::run` destroys the key, and
                // the next step finds the marker again and removes it.
                step.report.shred.push(id);
                step.budget = 0;
                return Ok(());
            }
            if !found.complete {
                return Ok(());
            }
            step.report.cursor.after = Some(id.into_bytes());
            if step.budget == 0 {
                return Ok(());
            }
        }
        if seen_all {
            step.report.cursor.next_phase();
        }
        Ok(())
    }
}

/// Whether retention removes `found`, and what removing it takes.
fn expiry(
    found: &MessageCandidate,
    deleted_cutoff: Option<u64>,
    age_cutoff: Option<u64>,
) -> Result<Option<Expired>, EngineError> {
    let too_old = age_cutoff.is_some_and(|cutoff| found.ts <= cutoff);
    let may_be_expired = found.deleted && deleted_cutoff.is_some();
    if !(too_old || may_be_expired) {
        return Ok(None);
    }
    let message: Message = serde_json::from_slice(&found.json)
        .map_err(|err| EngineError::Storage(format!("stored message: {err}")))?;
    let deleted_expired =
        found.deleted && deleted_cutoff.is_some_and(|cutoff| deleted_at(&message) <= cutoff);
    if !too_old && !deleted_expired {
        return Ok(None);
    }
    let reply_to_ts = message
        .reply_to
        .as_deref()
        .and_then(MessageId::parse)
        .map(|parent| parent.ts);
    Ok(Some(Expired {
        ts: found.ts,
        deleted: found.deleted,
        reply_to_ts,
    }))
}

/// How long a forced compaction may take before its answer gives up.
const COMPACT_WAIT: Duration = Duration::from_secs(120);
/// How often the shard looks whether the compaction or checkpoint is done.
const COMPACT_POLL: Duration = Duration::from_millis(20);

impl Engine {
    /// `Command::Compact`: starts a new WAL segment, merges every table
    /// into the last level (tombstones drop what they cover), then waits
    /// for the checkpoint to remove the older segments. The shard keeps
    /// serving meanwhile: the work runs on the maintenance thread and the
    /// checkpoint task, and this only polls them.
    pub(super) async fn compact_now(&self) -> Result<Reply, EngineError> {
        let deadline = std::time::Instant::now() + COMPACT_WAIT;
        self.wal.start_new_segment();
        // The tree frees the tables a compaction replaced only once a later
        // change of its table set finds them older than every write since:
        // the second pass is that change, so the files replaced by the first
        // (which may hold bytes written before a restart) leave the disk.
        for _ in 0..2 {
            self.major_compaction_pass(deadline).await?;
        }
        // The checkpoint task removes the segments the tables now cover.
        while self.wal.segment_count() > 1 && std::time::Instant::now() < deadline {
            crate::runtime::sleep(COMPACT_POLL).await;
        }
        Ok(Reply::Done)
    }
}

impl Engine {
    /// Flushes the memtable and merges every table into the last level.
    async fn major_compaction_pass(&self, deadline: std::time::Instant) -> Result<(), EngineError> {
        // The first record of the new segment removes a key that never
        // exists (no thread id is empty): unlike an empty record it lands
        // in the memtable, so the flush covers its LSN and the checkpoint
        // may drop every older segment, however often this runs.
        let mut marker = Ops::default();
        Store::erasure_done_op(&mut marker, "");
        let lsn = self.commit(marker)?;
        self.wal
            .wait_flushed(lsn)
            .await
            .map_err(|err| EngineError::WritesUnavailable(err.to_string()))?;
        let ticket = loop {
            match self.store.major_compact_soon() {
                Some(ticket) => break ticket?,
                None => crate::runtime::sleep(COMPACT_POLL).await,
            }
        };
        loop {
            match self.store.major_compacted() {
                (done, Some(why)) if done >= ticket => return Err(EngineError::Storage(why)),
                (done, None) if done >= ticket => return Ok(()),
                _ if std::time::Instant::now() > deadline => {
                    return Err(EngineError::Unavailable(
                        "the compaction is still running".into(),
                    ));
                }
                _ => crate::runtime::sleep(COMPACT_POLL).await,
            }
        }
    }
}

impl Engine {
    /// Starts this shard's retention job: a pass at start and every
    /// `interval`, one bounded step at a time with a yield between steps.
    /// With no policy a pass only finishes erasures left unfinished (by a
    /// crash) and erases threads whose vault key is gone (in a restored
    /// backup).
    pub fn start_retention(self: &Rc<Self>, policy: RetentionPolicy, interval: Duration) {
        let engine = self.clone();
        let job = crate::runtime::spawn_detached(async move {
            // A pass at start finishes erasures a crash or a restore left.
            loop {
                engine.retention_pass(policy).await;
                crate::runtime::sleep(interval).await;
            }
        });
        *self.retention_job.borrow_mut() = Some(job);
    }

    /// One pass of the retention job; failures are logged, and the next
    /// pass starts over.
    async fn retention_pass(&self, policy: RetentionPolicy) {
        let now_ns = super::now_ns();
        let (mut cursor, mut counts) = (PurgeCursor::default(), PurgeCounts::default());
        while cursor.phase != PurgePhase::Done {
            let request = PurgeRequest {
                dry_run: false,
                policy,
                now_ns,
                budget: PURGE_BUDGET_DEFAULT,
                cursor,
            };
            match self.run(super::Command::Purge(request)).await.0 {
                Ok(Reply::Purged(report)) => {
                    counts += report.counts;
                    cursor = report.cursor;
                }
                Ok(_) => return,
                Err(err) => {
                    crate::logging::warn(
                        "retention pass failed; the next one starts over",
                        &[("shard", &self.shard.0), ("error", &format!("{err:?}"))],
                    );
                    return;
                }
            }
            futures_lite::future::yield_now().await;
        }
        if counts != PurgeCounts::default() {
            let counts = serde_json::to_string(&counts).unwrap_or_default();
            crate::logging::info(
                "retention purged",
                &[("shard", &self.shard.0), ("purged", &counts)],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Command;
    use crate::engine::testing::{ADMIN, ok, post, with_engine};

    async fn step(engine: &Engine, request: &PurgeRequest) -> PurgeReport {
        match ok(engine, Command::Purge(request.clone())).await {
            Reply::Purged(report) => report,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_maximum_age_removes_old_messages_and_keeps_the_thread_and_its_counters() {
        with_engine(async |engine: Rc<Engine>| {
            let thread = ThreadId::parse("chat").unwrap();
            for n in 0..3 {
                post(&engine, &thread, &format!("m{n}")).await;
            }
            let mut request = PurgeRequest {
                dry_run: false,
                policy: RetentionPolicy {
                    deleted_after: None,
                    messages_max_age: Some(Duration::from_secs(3600)),
                },
                now_ns: crate::engine::now_ns(),
                budget: 2,
                cursor: PurgeCursor::default(),
            };
            // Nothing is an hour old yet.
            while request.cursor.phase != PurgePhase::Done {
                let report = step(&engine, &request).await;
                assert_eq!(report.counts, PurgeCounts::default());
                request.cursor = report.cursor;
            }
            request.now_ns += 2 * 3600 * 1_000_000_000;
            request.cursor = PurgeCursor::default();
            let mut removed = 0;
            while request.cursor.phase != PurgePhase::Done {
                let report = step(&engine, &request).await;
                assert!(report.counts.messages <= 2, "{report:?}");
                removed += report.counts.messages;
                request.cursor = report.cursor;
            }
            assert_eq!(removed, 3);
            let record = engine.store.get_thread("chat").unwrap().unwrap();
            assert_eq!(record.counts.map(|counts| counts.all), Some(0));
            post(&engine, &thread, "new").await;
        });
    }

    #[test]
    fn a_purge_pass_works_in_bounded_steps_until_the_erasure_is_done() {
        with_engine(async |engine: Rc<Engine>| {
            let thread = ThreadId::parse("doomed").unwrap();
            for n in 0..25 {
                let id = post(&engine, &thread, &format!("m{n}")).await;
                if n % 5 == 0 {
                    let body = serde_json::value::RawValue::from_string("\"edited\"".into());
                    let edit = Command::EditMessage {
                        thread: thread.clone(),
                        caller: ADMIN,
                        id,
                        body: body.unwrap(),
                    };
                    ok(&engine, edit).await;
                }
            }
            let delete = Command::DeleteThread {
                id: thread.clone(),
                caller: ADMIN,
            };
            ok(&engine, delete).await;
            let budget = 4;
            let mut request = PurgeRequest {
                dry_run: true,
                policy: RetentionPolicy {
                    deleted_after: Some(Duration::from_nanos(1)),
                    messages_max_age: None,
                },
                now_ns: crate::engine::now_ns() + 1,
                budget,
                cursor: PurgeCursor::default(),
            };
            let dry = step(&engine, &request).await;
            assert_eq!((dry.counts.threads, dry.counts.messages), (1, 25));
            request.dry_run = false;
            let (mut total, mut steps) = (PurgeCounts::default(), 0);
            while request.cursor.phase != PurgePhase::Done {
                let report = step(&engine, &request).await;
                // A step removes about a budget's worth: a participant
                // key brings its member index entry, an erasure its marker.
                assert!(report.counts.keys <= budget as u64 + 2, "{report:?}");
                total += report.counts;
                request.cursor = report.cursor;
                steps += 1;
            }
            // 25 messages, 5 versions, 1 participant (+ member entry none
            // for the owner), the record and the author index entry.
            assert_eq!((total.threads, total.messages, total.versions), (1, 25, 5));
            assert!(total.keys >= 32, "{total:?}");
            assert!(steps >= total.keys as usize / (budget + 2), "{steps} steps");
            // The id is free again, and the new thread starts empty.
            post(&engine, &thread, "reborn").await;
            request.cursor = PurgeCursor::default();
            request.policy = RetentionPolicy::default();
            assert_eq!(step(&engine, &request).await.counts, PurgeCounts::default());
            let stored = engine.store.get_thread("doomed").unwrap().unwrap();
            assert_eq!(stored.counts.map(|counts| counts.all), Some(1));
        });
    }
}
