//! Group chat on the owning shard: who may do what in a thread, its
//! participants, and each participant's read marker and unread count.
//!
//! Access is decided here for every command: the owner (the thread's
//! author) and participants see a live thread; anyone else gets
//! `ThreadNotFound`, exactly as for a missing thread. A deleted thread is
//! its owner's alone. A caller without a user (backend seed routes,
//! admin reads) may do anything.

use std::ops::Bound;

use super::StreamEvent;
use super::command::{Caller, Command, EngineError, ParticipantCursor, ParticipantPage};
use super::commands::state;
use super::members::Listed;
use super::page::Pagination;
use super::reply::{Membership, ParticipantList, ReadMarker, Reply, UserThread};
use super::{Engine, Executed};
use crate::model::{Participant, Role, ThreadId, ThreadRecord, UserId};
use crate::store::{Direction, Ops, Store};

/// Newer messages a read marker's unread count is counted over when it
/// moves; past that, the oldest of them are not counted (README).
pub const UNREAD_SCAN_MAX: usize = 10_000;

/// Participants a thread may have besides its owner, unless configured.
pub const PARTICIPANTS_PER_THREAD_DEFAULT: usize = 10_000;

/// Whether a caller with `role` (`None`: no user, a backend) manages the
/// thread: adds and removes participants, renames, moderates.
pub(super) fn manages(role: Option<Role>) -> bool {
    role.is_none_or(Role::manages)
}

/// A message's author, read without decoding the whole message.
#[derive(serde::Deserialize)]
struct AuthorOf<'a> {
    #[serde(borrow)]
    author: std::borrow::Cow<'a, str>,
}

impl Engine {
    /// The thread and the caller's role in it (`None` for a caller without
    /// a user); `ThreadNotFound` when the caller may not see it.
    pub(super) fn thread_with_role(
        &self,
        id: &ThreadId,
        caller: &Caller,
        include_deleted: bool,
    ) -> Result<(ThreadRecord, Option<Role>), EngineError> {
        let record = self
            .get_thread(id.as_str())?
            .ok_or(EngineError::ThreadNotFound)?;
        let role = self.role_seeing(&record, caller, include_deleted)?;
        Ok((record, role))
    }

    /// The caller's role in the thread of `record` (`None` for a caller
    /// without a user); `ThreadNotFound` when the caller may not see it.
    pub(super) fn role_seeing(
        &self,
        record: &ThreadRecord,
        caller: &Caller,
        include_deleted: bool,
    ) -> Result<Option<Role>, EngineError> {
        if record.thread.deleted && !include_deleted {
            return Err(EngineError::ThreadNotFound);
        }
        let Some(user) = &caller.user else {
            return Ok(None);
        };
        let role = self.role_of(record, user.as_str())?;
        match role {
            Some(Role::Owner) => Ok(role),
            Some(_) if !record.thread.deleted => Ok(role),
            _ => Err(EngineError::ThreadNotFound),
        }
    }

    /// `user`'s role in the thread, `None` when they take no part in it.
    pub(super) fn role_of(
        &self,
        record: &ThreadRecord,
        user: &str,
    ) -> Result<Option<Role>, EngineError> {
        if record.thread.author == user {
            return Ok(Some(Role::Owner));
        }
        Ok(self
            .store
            .get_participant(&record.thread.id, user)?
            .map(|participant| participant.role))
    }

    /// `user`'s participant record; the owner's is made up when the thread
    /// predates participants (it is written with their next change), with
    /// nothing unread until then.
    pub(super) fn participant(
        &self,
        record: &ThreadRecord,
        user: &str,
    ) -> Result<Option<Participant>, EngineError> {
        let thread = &record.thread;
        if let Some(participant) = self.thread_records.participant(&thread.id, user) {
            return Ok(Some(participant));
        }
        let participant = match self.store.get_participant(&thread.id, user)? {
            Some(participant) => participant,
            None if thread.author == user => {
                let all = self.counts(record)?.all;
                Participant::new(user, Role::Owner, thread.created_ts, user, all)
            }
            None => return Ok(None),
        };
        self.thread_records
            .put_participant(&thread.id, participant.clone());
        Ok(Some(participant))
    }

    pub(super) fn execute_participants(&self, command: Command) -> Result<Executed, EngineError> {
        match command {
            Command::AddParticipant {
                thread,
                caller,
                user,
                role,
            } => self.add_participant(&thread, &caller, &user, role),
            Command::RemoveParticipant {
                thread,
                caller,
                user,
            } => self.remove_participant(&thread, &caller, &user),
            Command::ListParticipants {
                thread,
                caller,
                page,
            } => self.list_participants(&thread, &caller, &page),
            Command::MarkRead { thread, caller, id } => self.mark_read(&thread, &caller, &id),
            Command::GetListedThread { id, user } => {
                let caller = Caller {
                    user: Some(user.clone()),
                };
                self.thread_with_role(&id, &caller, true)?;
                let thread = self.user_thread(id.as_str(), user.as_str())?;
                Executed::read(Reply::UserThread(thread))
            }
            Command::SubscribeUser { user, core } => {
                let user = user.as_str();
                self.user_streams
                    .subscribe(user, core, || self.threads_of(user))?;
                Executed::read(Reply::Done)
            }
            Command::UnsubscribeUser { user, core } => {
                self.user_streams.unsubscribe(user.as_str(), core);
                Executed::read(Reply::Done)
            }
            _ => unreachable!("every other command is executed before"),
        }
    }

    /// The members a new thread starts with, written with it.
    pub(super) fn initial_participants(
        &self,
        record: &mut ThreadRecord,
        members: &[UserId],
        ops: &mut Ops,
    ) {
        let thread = &record.thread;
        let owner = Participant::new(
            &thread.author,
            Role::Owner,
            thread.created_ts,
            &thread.author,
            0,
        );
        Store::participant_ops(ops, &thread.id, &owner, false);
        let mut added = std::collections::BTreeSet::new();
        for member in members {
            if member.as_str() == thread.author || !added.insert(member.as_str()) {
                continue;
            }
            let participant = Participant::new(
                member.as_str(),
                Role::Member,
                thread.created_ts,
                &thread.author,
                0,
            );
            Store::participant_ops(ops, &thread.id, &participant, false);
        }
        record.participants = added.len() as u64;
    }

    /// Tells the member listings that users joined a thread just written.
    pub(super) fn members_joined(&self, record: &ThreadRecord, users: &[&str]) {
        for user in users {
            self.members.joined(user, &record.thread.id, listed(record));
            self.user_streams.joined(user, &record.thread.id);
        }
    }

    fn add_participant(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        user: &UserId,
        role: Role,
    ) -> Result<Executed, EngineError> {
        let (mut record, caller_role) = self.thread_with_role(thread, caller, false)?;
        if !manages(caller_role) {
            return Err(EngineError::Forbidden(
                "only the thread's owner and admins may add participants",
            ));
        }
        if record.thread.author == user.as_str() {
            return Err(EngineError::Forbidden("the owner's role cannot change"));
        }
        let existing = self.store.get_participant(thread.as_str(), user.as_str())?;
        let (participant, created) = match existing {
            Some(participant) if participant.role == role => {
                return Executed::read(Reply::participant(participant, false));
            }
            Some(mut participant) => {
                participant.role = role;
                (participant, false)
            }
            None => {
                if record.participants >= self.participants_max.get() as u64 {
                    return Err(EngineError::TooManyParticipants(
                        self.participants_max.get(),
                    ));
                }
                record.participants += 1;
                let added_by = caller
                    .user
                    .as_ref()
                    .map_or(record.thread.author.as_str(), UserId::as_str);
                let all = self.counts(&record)?.all;
                let ts = self.tick(0);
                (
                    Participant::new(user.as_str(), role, ts, added_by, all),
                    true,
                )
            }
        };
        let mut ops = Ops::default();
        Store::participant_ops(&mut ops, thread.as_str(), &participant, false);
        let lsn = self.write_thread(Some(state(&record)), &record, ops)?;
        self.members_joined(&record, &[user.as_str()]);
        let wire = participant.to_wire();
        let event = self.participant_event("participant.added", thread.as_str(), &wire);
        Ok(Executed {
            reply: Reply::participant(participant, created),
            lsn: Some(lsn),
            change: Some((thread.to_string(), event)),
        })
    }

    fn remove_participant(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        user: &UserId,
    ) -> Result<Executed, EngineError> {
        let (mut record, caller_role) = self.thread_with_role(thread, caller, false)?;
        let leaving = caller.user.as_ref() == Some(user);
        if record.thread.author == user.as_str() {
            return Err(EngineError::Forbidden(
                "the owner cannot leave or be removed; delete the thread instead",
            ));
        }
        if !leaving && !manages(caller_role) {
            return Err(EngineError::Forbidden(
                "only the thread's owner and admins may remove other participants",
            ));
        }
        let participant = self
            .store
            .get_participant(thread.as_str(), user.as_str())?
            .ok_or(EngineError::ParticipantNotFound)?;
        record.participants = record.participants.saturating_sub(1);
        let mut ops = Ops::default();
        Store::participant_ops(&mut ops, thread.as_str(), &participant, true);
        let lsn = self.write_thread(Some(state(&record)), &record, ops)?;
        self.members.left(user.as_str(), thread.as_str());
        self.user_streams.left(user.as_str(), thread.as_str());
        let wire = participant.to_wire();
        let event = self.participant_event("participant.removed", thread.as_str(), &wire);
        Ok(Executed {
            reply: Reply::ParticipantRemoved(user.clone()),
            lsn: Some(lsn),
            change: Some((thread.to_string(), event)),
        })
    }

    /// Live-tail events of participants are not replayed on resume (they
    /// are not message changes); their id still orders them among those.
    /// Their data is the participant object with its `thread`, so a
    /// user's stream of all their threads tells which one changed.
    fn participant_event(&self, kind: &'static str, thread: &str, wire: &[u8]) -> StreamEvent {
        let mut data = format!("{{\"thread\":{},", serde_json::Value::from(thread)).into_bytes();
        data.extend_from_slice(&wire[1..]);
        StreamEvent {
            id: self.tick(0),
            kind,
            data: data.into(),
        }
    }

    /// The ids of the threads `user` owns or takes part in on this shard.
    fn threads_of(&self, user: &str) -> Result<Vec<String>, EngineError> {
        let mut ids = self.store.member_threads(user)?;
        let ascending = Direction::Ascending;
        self.store
            .scan_author_threads(user, None, ascending, |_, id, _, _| {
                ids.push(id.to_owned());
                Ok(true)
            })?;
        Ok(ids)
    }

    /// A page of the thread's participants in user id order.
    fn list_participants(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        page: &ParticipantPage,
    ) -> Result<Executed, EngineError> {
        // Admins (no user) see a deleted thread's participants too.
        let deleted_too = caller.reads_deleted_threads(true);
        let (record, _) = self.thread_with_role(thread, caller, deleted_too)?;
        let id = thread.as_str();
        let (mut found, has_before_after) = self.participants_page(id, page)?;
        let owner_listed = self
            .store
            .get_participant(id, &record.thread.author)?
            .is_some();
        let total = record.participants + u64::from(owner_listed);
        let pagination = Pagination::of(
            found.first().map(|p| p.user_id.clone()),
            found.last().map(|p| p.user_id.clone()),
            found.len(),
            has_before_after,
            total,
        );
        for participant in &mut found {
            // Storage only; not part of the answer.
            participant.read = Default::default();
        }
        Executed::read(Reply::Participants(ParticipantList {
            participants: found,
            pagination,
        }))
    }

    /// Up to `page.limit` participants of thread `id` in user id order, and
    /// whether others exist before and after them.
    fn participants_page(
        &self,
        id: &str,
        page: &ParticipantPage,
    ) -> Result<(Vec<Participant>, (bool, bool)), EngineError> {
        let (after, direction, opposite) = match &page.cursor {
            ParticipantCursor::Start => (None, Direction::Ascending, Direction::Descending),
            ParticipantCursor::After(user) => (
                Some(user.as_str()),
                Direction::Ascending,
                Direction::Descending,
            ),
            ParticipantCursor::Before(user) => (
                Some(user.as_str()),
                Direction::Descending,
                Direction::Ascending,
            ),
        };
        let mut found = Vec::new();
        self.store
            .scan_participants(id, after, direction, |participant| {
                found.push(participant);
                Ok(found.len() <= page.limit)
            })?;
        let more = found.len() > page.limit;
        found.truncate(page.limit);
        // The cursor itself lies behind the page when it is listed.
        let mut behind = match after {
            Some(user) => self.store.get_participant(id, user)?.is_some(),
            None => false,
        };
        if after.is_some() && !behind {
            self.store.scan_participants(id, after, opposite, |_| {
                behind = true;
                Ok(false)
            })?;
        }
        Ok(match direction {
            Direction::Ascending => (found, (behind, more)),
            Direction::Descending => {
                found.reverse();
                (found, (more, behind))
            }
        })
    }

    /// Moves the caller's read marker forward to message `id` (never back)
    /// and answers `{"key","last_read","unread_count"}`.
    fn mark_read(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
    ) -> Result<Executed, EngineError> {
        let (record, _) = self.thread_with_role(thread, caller, false)?;
        let user = caller
            .user
            .as_ref()
            .ok_or(EngineError::Forbidden("a read marker belongs to a user"))?;
        let message = self
            .find_message(thread, id)?
            .ok_or(EngineError::MessageNotFound)?;
        let mut participant = self
            .participant(&record, user.as_str())?
            .ok_or(EngineError::ThreadNotFound)?;
        let all = self.counts(&record)?.all;
        let mut lsn = None;
        if message.ts > participant.read.last_read_ts {
            let read = &mut participant.read;
            read.mark_unread = self.unread_after(thread.as_str(), message.ts, user.as_str())?;
            read.last_read = Some(message.id.clone());
            read.last_read_ts = message.ts;
            read.mark_all = all;
            read.mark_posted = read.posted;
            let mut ops = Ops::default();
            Store::participant_ops(&mut ops, thread.as_str(), &participant, false);
            lsn = Some(self.commit(ops)?);
        }
        let marker = ReadMarker {
            thread: thread.to_string(),
            unread_count: participant.unread(all),
            last_read: participant.read.last_read,
        };
        Ok(Executed {
            reply: Reply::ReadMarker(marker),
            lsn,
            change: None,
        })
    }

    /// Live messages newer than `ts` not written by `user`, among the
    /// newest [`UNREAD_SCAN_MAX`] newer than `ts`.
    fn unread_after(&self, thread: &str, ts: u64, user: &str) -> Result<u64, EngineError> {
        let (mut scanned, mut unread) = (0, 0);
        let newer = (Bound::Excluded(ts), Bound::Unbounded);
        self.store
            .scan_messages(thread, newer, Direction::Descending, |_, deleted, json| {
                scanned += 1;
                if !deleted {
                    let of: AuthorOf = serde_json::from_slice(json)
                        .map_err(|err| crate::store::StoreError::Corrupt(err.to_string()))?;
                    unread += u64::from(of.author != user);
                }
                Ok(scanned < UNREAD_SCAN_MAX)
            })?;
        Ok(unread)
    }

    /// A listed thread as `user` sees it: the thread with their `role`
    /// and `unread_count`.
    pub(super) fn user_thread(&self, id: &str, user: &str) -> Result<UserThread, EngineError> {
        let record = self
            .get_thread(id)?
            .ok_or_else(|| EngineError::Storage("an indexed thread has no record".into()))?;
        let participant = self.participant(&record, user)?;
        let all = self.counts(&record)?.all;
        let membership = participant.map(|participant| Membership {
            role: participant.role,
            unread_count: participant.unread(all),
        });
        Ok(UserThread {
            thread: record.thread,
            membership,
        })
    }

    /// A post's author's participant record with the post counted: a
    /// backend post (no user) by someone who takes no part in the thread
    /// adds them as a member first (`true` then). `ThreadNotFound` when the
    /// author takes no part in the thread.
    pub(super) fn posting_participant(
        &self,
        record: &mut ThreadRecord,
        caller: &Caller,
        author: &str,
    ) -> Result<(Participant, bool), EngineError> {
        let (mut participant, joined) = match self.participant(record, author)? {
            Some(participant) => (participant, false),
            None if caller.user.is_none() => {
                if record.participants >= self.participants_max.get() as u64 {
                    return Err(EngineError::TooManyParticipants(
                        self.participants_max.get(),
                    ));
                }
                record.participants += 1;
                let all = self.counts(record)?.all;
                let ts = self.tick(0);
                (
                    Participant::new(author, Role::Member, ts, author, all),
                    true,
                )
            }
            None => return Err(EngineError::ThreadNotFound),
        };
        participant.read.posted += 1;
        Ok((participant, joined))
    }
}

/// The user a `participant.removed` event removes.
pub fn removed_user(event: &StreamEvent) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Removed {
        user_id: String,
    }
    if event.kind != "participant.removed" {
        return None;
    }
    serde_json::from_slice::<Removed>(&event.data)
        .ok()
        .map(|removed| removed.user_id)
}

/// What the member listings sort a thread by.
pub(super) fn listed(record: &ThreadRecord) -> Listed {
    Listed {
        created_ts: record.thread.created_ts,
        updated_ts: record.thread.updated_ts,
        deleted: record.thread.deleted,
    }
}
