//! One function per [`Command`]: what the owning shard does for it and the
//! typed [`Reply`] it answers (front ends render it; see `reply`).

use super::authors::ThreadState;
use super::command::{
    AllThreadsPage, Caller, Command, EngineError, MessagePage, MessagePosition, Order, ThreadPage,
    ThreadSort, VersionPage, VersionPosition,
};
use super::page::Pagination;
use super::participants::{listed, manages};
use super::reply::{
    PageRenderer, PlannedPage, Reply, ShardStats, ThreadEntry, ThreadPart, VersionList,
};
use super::{Engine, Executed, REACTIONS_PER_MESSAGE_MAX, page};
use crate::cluster::PartitionSet;
use crate::model::{
    Message, MessageCounts, MessageId, Role, ThreadId, ThreadRecord, UserId, Version,
};
use crate::store::{Ops, Store};
use crate::wal::record::Lsn;

/// What the author index keys a thread by.
pub(super) fn state(record: &ThreadRecord) -> ThreadState {
    ThreadState {
        updated_ts: record.thread.updated_ts,
        deleted: record.thread.deleted,
    }
}

/// A new message's fields, as a command carries them.
pub(super) struct NewMessage {
    pub author: UserId,
    pub role: Option<String>,
    pub body: Box<serde_json::value::RawValue>,
    pub reply_to: Option<String>,
}

impl Engine {
    pub(super) fn execute(&self, command: Command) -> Result<Executed, EngineError> {
        match command {
            Command::CreateThread {
                id,
                author,
                title,
                slug,
                participants,
            } => self.create_thread(&id, &author, (title, slug), &participants),
            Command::GetThread {
                id,
                caller,
                include_deleted,
            } => {
                let record = self.thread_for(&id, &caller, include_deleted)?;
                Executed::read(Reply::thread(record.thread, false))
            }
            Command::UpdateThread {
                id,
                caller,
                title,
                slug,
            } => self.update_thread(&id, &caller, title, slug),
            Command::DeleteThread { id, caller } => self.set_thread_deleted(&id, &caller, true),
            Command::RestoreThread { id, caller } => self.set_thread_deleted(&id, &caller, false),
            Command::EraseThread { id } => self.erase_thread(&id),
            Command::Purge(request) => self.purge_step(&request),
            Command::AddMasterKey { id, key } => {
                self.add_master_key(id, key.0);
                Executed::read(Reply::Done)
            }
            Command::Stats => self.stats(),
            Command::CountIn(partitions) => self.count_in(&partitions),
            Command::ListAllThreads(page) => self.list_all_threads(&page),
            // The mesh answers this itself with the core's counters added;
            // run here directly, the shard reports what the engine knows.
            Command::Metrics => Executed::read(Reply::Metrics(Box::new(self.metrics_sample()))),
            Command::Snapshot { to } => self.send_snapshot(&to),
            Command::ListThreads(page) => self.list_threads(&page),
            Command::PostMessage {
                thread,
                caller,
                author,
                role,
                body,
                reply_to,
                create_thread_titled,
            } => {
                let message = NewMessage {
                    author,
                    role,
                    body,
                    reply_to,
                };
                self.post_message(&thread, &caller, message, create_thread_titled)
            }
            Command::ListMessages {
                thread,
                caller,
                page,
                in_pieces,
                rendering,
            } => self.list_messages(thread, &caller, &page, (in_pieces, rendering)),
            Command::PagePiece {
                thread,
                caller,
                keys,
                include_deleted,
            } => self.page_piece(&thread, &caller, keys, include_deleted),
            command => self.execute_on_message(command),
        }
    }

    /// The commands about one existing message, and the live tail's.
    fn execute_on_message(&self, command: Command) -> Result<Executed, EngineError> {
        match command {
            Command::GetMessage {
                thread,
                caller,
                id,
                include_deleted,
            } => {
                let (_, message) = self.message_for(&thread, &caller, &id, include_deleted)?;
                Executed::read(Reply::message(message, false))
            }
            Command::ListVersions {
                thread,
                caller,
                id,
                page,
            } => self.list_versions(&thread, &caller, &id, &page),
            Command::ListReplies {
                thread,
                caller,
                id,
                page,
                in_pieces,
            } => {
                let include_deleted = page.include_deleted;
                let (_, parent) = self.message_for(&thread, &caller, &id, include_deleted)?;
                let reveal = self.revealer(Engine::reveal_message_json);
                let parent = (thread.as_str(), parent.ts);
                let page = (&page, in_pieces);
                Executed::read(
                    match page::replies(&self.store, parent, page, reveal.as_deref())? {
                        page::Scanned::Whole(list) => Reply::Messages(list),
                        page::Scanned::Planned(plan) => {
                            planned((thread, caller), include_deleted, false, plan)
                        }
                    },
                )
            }
            Command::EditMessage {
                thread,
                caller,
                id,
                body,
            } => self.edit_message(&thread, &caller, &id, body),
            Command::DeleteMessage { thread, caller, id } => {
                self.set_message_deleted(&thread, &caller, &id, true)
            }
            Command::RestoreMessage { thread, caller, id } => {
                self.set_message_deleted(&thread, &caller, &id, false)
            }
            Command::React {
                thread,
                caller,
                id,
                reaction,
            } => self.react(&thread, &caller, &id, reaction),
            command => self.execute_live_tail(command),
        }
    }

    /// Commits a thread record (plus `extra` writes after it) and keeps the
    /// in-memory author index and thread counter current. `old` is the
    /// record's state before, `None` for a new thread. The stored author
    /// index entry is written only when it appears or its deleted flag
    /// changes: listings render threads from their records, so a post (the
    /// most frequent thread write) writes one key for its thread, not two.
    pub(super) fn write_thread(
        &self,
        old: Option<ThreadState>,
        record: &ThreadRecord,
        extra: Ops,
    ) -> Result<Lsn, EngineError> {
        let lsn = self.write_thread_uncached(old, record, extra)?;
        self.thread_records.put(record.clone());
        Ok(lsn)
    }

    /// [`Engine::write_thread`] for a caller that puts the record (as
    /// written) back into the cache itself, without copying it.
    fn write_thread_uncached(
        &self,
        old: Option<ThreadState>,
        record: &ThreadRecord,
        extra: Ops,
    ) -> Result<Lsn, EngineError> {
        let index_changes = old.is_none_or(|old| old.deleted != record.thread.deleted);
        let mut ops = if index_changes {
            self.thread_ops(record)?
        } else {
            self.thread_record_ops(record)?
        };
        ops.extend(extra);
        let lsn = self.commit(ops)?;
        let thread = &record.thread;
        self.authors
            .changed(&thread.author, &thread.id, old, state(record));
        self.members.changed(&thread.id, listed(record));
        if old.is_none() {
            self.user_streams.joined(&thread.author, &thread.id);
        }
        if old.is_none()
            && let Some(count) = self.thread_count.get()
        {
            self.thread_count.set(Some(count + 1));
        }
        Ok(lsn)
    }

    /// A new thread with its owner's participant record and `members`.
    fn create_thread(
        &self,
        id: &ThreadId,
        author: &UserId,
        (title, slug): (String, Option<String>),
        members: &[UserId],
    ) -> Result<Executed, EngineError> {
        if self.store.get_thread(id.as_str())?.is_some() {
            return Err(EngineError::ThreadExists);
        }
        // `new_thread` also refuses an id whose erasure is still going on.
        let mut record = self.new_thread(id, author.as_str(), title, slug)?;
        let mut ops = Ops::default();
        self.initial_participants(&mut record, members, &mut ops);
        let lsn = self.write_thread(None, &record, ops)?;
        let joined: Vec<&str> = members
            .iter()
            .map(UserId::as_str)
            .filter(|member| *member != author.as_str())
            .collect();
        self.members_joined(&record, &joined);
        Executed::write(Reply::thread(record.thread, true), lsn)
    }

    fn update_thread(
        &self,
        id: &ThreadId,
        caller: &Caller,
        title: Option<String>,
        slug: Option<String>,
    ) -> Result<Executed, EngineError> {
        let (mut record, role) = self.thread_with_role(id, caller, false)?;
        if !manages(role) {
            return Err(EngineError::Forbidden(
                "only the thread's owner and admins may change it",
            ));
        }
        let old = state(&record);
        if let Some(title) = title {
            record.thread.title = title;
        }
        if slug.is_some() {
            record.thread.slug = slug;
        }
        record.thread.updated_ts = self.tick(record.thread.updated_ts);
        let lsn = self.write_thread(Some(old), &record, Ops::default())?;
        Executed::write(Reply::thread(record.thread, false), lsn)
    }

    /// Soft-deletes (`deleted`) or restores a thread; answers the thread.
    fn set_thread_deleted(
        &self,
        id: &ThreadId,
        caller: &Caller,
        deleted: bool,
    ) -> Result<Executed, EngineError> {
        let (mut record, role) = self.thread_with_role(id, caller, !deleted)?;
        if role.is_some_and(|role| role != Role::Owner) {
            return Err(EngineError::Forbidden(
                "only the thread's owner may delete or restore it",
            ));
        }
        if record.thread.deleted == deleted {
            return Executed::read(Reply::thread(record.thread, false));
        }
        let old = state(&record);
        record.thread.deleted = deleted;
        record.thread.updated_ts = self.tick(record.thread.updated_ts);
        let lsn = self.write_thread(Some(old), &record, Ops::default())?;
        Executed::write(Reply::thread(record.thread, false), lsn)
    }

    /// The thread's message counters; counted once for a thread written
    /// before they were kept (the next write stores them).
    pub(super) fn counts(&self, record: &ThreadRecord) -> Result<MessageCounts, EngineError> {
        if let Some(counts) = record.counts {
            return Ok(counts);
        }
        let mut counts = MessageCounts::default();
        let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        let direction = crate::store::Direction::Ascending;
        self.store
            .scan_messages(&record.thread.id, all, direction, |_, deleted, _| {
                counts.all += 1;
                counts.deleted += u64::from(deleted);
                Ok(true)
            })?;
        Ok(counts)
    }

    fn post_message(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        new: NewMessage,
        create_thread_titled: Option<String>,
    ) -> Result<Executed, EngineError> {
        let (mut record, old) = match self.take_thread(thread.as_str())? {
            Some(record) => {
                // Access as for every command; the author's right to post
                // is checked with their participant record below.
                self.role_seeing(&record, caller, false)?;
                let old = state(&record);
                (record, Some(old))
            }
            None => match create_thread_titled {
                Some(title) => (
                    self.new_thread(thread, new.author.as_str(), title, None)?,
                    None,
                ),
                None => return Err(EngineError::ThreadNotFound),
            },
        };
        let (author, joined) =
            self.posting_participant(&mut record, caller, new.author.as_str())?;
        let parent_ts = match &new.reply_to {
            None => None,
            Some(reply_to) => match self.find_message(thread, reply_to)? {
                Some(target) if !target.deleted => Some(target.ts),
                _ => return Err(EngineError::InvalidReplyTo),
            },
        };
        let ts = self.tick(record.last_message_ts);
        let message = self.new_message(thread, new, ts);
        let mut counts = self.counts(&record)?;
        counts.all += 1;
        record.counts = Some(counts);
        record.last_message_ts = ts;
        // A new message is the thread's latest activity (`sort_by=updated_ts`).
        record.thread.updated_ts = ts;
        // The thread record is written with its message, so a thread
        // created on the fly never exists without its first message.
        let mut ops = self.message_ops(None, &message, ts)?;
        if let Some(parent_ts) = parent_ts {
            Store::reply_op(&mut ops, &message, parent_ts);
        }
        Store::participant_ops(&mut ops, thread.as_str(), &author, false);
        let lsn = self.write_thread_uncached(old, &record, ops)?;
        if joined {
            self.members_joined(&record, &[author.user_id.as_str()]);
        }
        // The records as just written, for the thread's next command and
        // the author's next post.
        self.thread_records.put(record);
        self.thread_records.put_participant(thread.as_str(), author);
        if let Some(count) = self.message_count.get() {
            self.message_count.set(Some(count + 1));
        }
        Ok(Executed {
            change: self.message_change(&message, ts),
            reply: Reply::message(message, true),
            lsn: Some(lsn),
        })
    }

    fn new_message(&self, thread: &ThreadId, new: NewMessage, ts: u64) -> Message {
        let id = MessageId {
            ts,
            salt: self.next_salt(),
        };
        Message {
            id: id.to_string(),
            thread: thread.to_string(),
            author: new.author.to_string(),
            role: new.role,
            ts,
            body: new.body,
            reply_to: new.reply_to,
            deleted: false,
            deleted_ts: None,
            updated_ts: Some(ts),
            version: 1,
            edited_by: None,
            reactions: Default::default(),
            reaction_counts: Default::default(),
            sealed_body: None,
            sealed_fields: Vec::new(),
        }
    }

    /// A page of a thread's messages. The newest page of a caller that
    /// renders pages (`rendering`) is answered rendered, and kept rendered
    /// in `tail_pages` until the thread's next write.
    fn list_messages(
        &self,
        thread: ThreadId,
        caller: &Caller,
        page: &MessagePage,
        (in_pieces, rendering): (bool, Option<PageRenderer>),
    ) -> Result<Executed, EngineError> {
        let include_deleted = page.include_deleted;
        let record = self.thread_for(
            &thread,
            caller,
            caller.reads_deleted_threads(include_deleted),
        )?;
        let cached = rendering.filter(|_| page.position == MessagePosition::End);
        if cached.is_some()
            && let Some(body) = self
                .tail_pages
                .get(thread.as_str(), page.limit, include_deleted)
            // A large page cached for a caller that takes it whole is not
            // sent whole to one that takes it in pieces.
            && (!in_pieces || body.len() <= page::PAGE_WHOLE_BYTES_MAX)
        {
            return Executed::read(Reply::Rendered(body));
        }
        let total = self.counts(&record)?.visible(include_deleted);
        let reveal = self.revealer(Engine::reveal_message_json);
        let page = (page, in_pieces);
        match page::messages(&self.store, thread.as_str(), page, total, reveal.as_deref())? {
            page::Scanned::Whole(mut list) => {
                list.thread = Some(thread);
                let Some(render) = cached else {
                    return Executed::read(Reply::Messages(list));
                };
                let body = render(&list);
                let thread = list.thread.as_ref().map_or("", ThreadId::as_str);
                self.tail_pages
                    .put(thread, page.0.limit, include_deleted, &body);
                Executed::read(Reply::Rendered(body))
            }
            page::Scanned::Planned(plan) => {
                let of = (thread, caller.clone());
                Executed::read(planned(of, include_deleted, true, plan))
            }
        }
    }

    /// The next piece of a planned page. Access is checked again: the
    /// caller may have lost it since the page began.
    fn page_piece(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        keys: page::PageKeys,
        include_deleted: bool,
    ) -> Result<Executed, EngineError> {
        self.thread_for(
            thread,
            caller,
            caller.reads_deleted_threads(include_deleted),
        )?;
        let reveal = self.revealer(Engine::reveal_message_json);
        let piece = page::piece(
            &self.store,
            thread.as_str(),
            keys,
            include_deleted,
            reveal.as_deref(),
        )?;
        Executed::read(Reply::Piece(Box::new(piece)))
    }

    /// A page of a message's versions, oldest first, current last; anchors
    /// are version numbers (as strings, like every other anchor). Only the
    /// page's bodies are read and opened.
    fn list_versions(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
        page: &VersionPage,
    ) -> Result<Executed, EngineError> {
        let (_, message) = self.message_for(thread, caller, id, page.include_deleted)?;
        // Versions are numbered 1..=current, the past ones stored, so the
        // window is arithmetic and only its versions are read, nearest the
        // cursor first, until the page's byte budget is spent.
        let newest = message.version;
        let (start, end) = version_window(newest, page)?;
        let numbers = fill_order(start + 1..=end, page.position);
        let mut versions = Vec::new();
        let mut bytes = 0;
        for number in numbers {
            let version = match number == newest {
                true => Some(message.current_version()),
                false => self.store.version(&message.thread, message.ts, number)?,
            };
            let Some(version) = version else { continue };
            bytes += stored_size(&version);
            if bytes > page::PAGE_BYTES_MAX && !versions.is_empty() {
                break;
            }
            versions.push(version);
        }
        versions.sort_by_key(|version| version.version);
        for version in &mut versions {
            self.open_version(&message, version)?;
        }
        // The window actually sent, as indices: what the budget kept.
        let (start, end) = match (versions.first(), versions.last()) {
            (Some(first), Some(last)) => (first.version - 1, last.version),
            _ => (start, end),
        };
        let pagination = Pagination::of(
            versions.first().map(|v| v.version.to_string()),
            versions.last().map(|v| v.version.to_string()),
            versions.len(),
            (start > 0, end < newest),
            u64::from(newest),
        );
        Executed::read(Reply::Versions(VersionList {
            message: message.id,
            versions,
            pagination,
        }))
    }

    fn edit_message(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
        body: Box<serde_json::value::RawValue>,
    ) -> Result<Executed, EngineError> {
        let (_, mut message) = self.message_for(thread, caller, id, false)?;
        if caller
            .user
            .as_ref()
            .is_some_and(|user| user.as_str() != message.author)
        {
            return Err(EngineError::Forbidden(
                "only a message's author may edit it",
            ));
        }
        let mut ops = Ops::default();
        self.version_op(&mut ops, &message, &message.current_version())?;
        let change_ts = self.tick(message.updated_ts.unwrap_or(message.ts));
        message.body = body;
        message.version += 1;
        message.updated_ts = Some(change_ts);
        message.edited_by = caller.user.as_ref().map(ToString::to_string);
        self.update_message(None, message, ops, change_ts)
    }

    /// Soft-deletes (`deleted`) or restores a message and keeps its
    /// thread's counters; answers the message. Not an edit: `updated_ts`
    /// and the version stay as they are.
    fn set_message_deleted(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
        deleted: bool,
    ) -> Result<Executed, EngineError> {
        let (mut record, mut message, role) =
            self.message_with_role(thread, caller, id, !deleted)?;
        let own = caller
            .user
            .as_ref()
            .is_some_and(|user| user.as_str() == message.author);
        if !own && !manages(role) {
            return Err(EngineError::Forbidden(
                "only a message's author, the thread's owner and admins may delete or restore it",
            ));
        }
        if message.deleted == deleted {
            return Executed::read(Reply::message(message, false));
        }
        let mut counts = self.counts(&record)?;
        if deleted {
            counts.deleted += 1;
        } else {
            counts.deleted -= 1;
        }
        record.counts = Some(counts);
        let change_ts = self.tick(message.updated_ts.unwrap_or(message.ts));
        message.deleted = deleted;
        message.deleted_ts = deleted.then_some(change_ts);
        self.update_message(Some(&record), message, Ops::default(), change_ts)
    }

    fn react(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
        reaction: Option<String>,
    ) -> Result<Executed, EngineError> {
        let (_, mut message) = self.message_for(thread, caller, id, false)?;
        let user = caller
            .user
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let adds_user = !message.reactions.contains_key(&user);
        if reaction.is_some() && adds_user && message.reactions.len() >= REACTIONS_PER_MESSAGE_MAX {
            return Err(EngineError::TooManyReactions);
        }
        if message.reactions.get(&user) == reaction.as_ref() {
            return Executed::read(Reply::message(message, false));
        }
        message.set_reaction(&user, reaction);
        // Reactions are changes for the live tail, not edits: the
        // version and updated_ts stay as they are.
        let change_ts = self.tick(message.updated_ts.unwrap_or(message.ts));
        self.update_message(None, message, Ops::default(), change_ts)
    }

    /// Commits a changed message (with its thread's record when given, plus
    /// `extra` writes) and answers the message.
    fn update_message(
        &self,
        record: Option<&ThreadRecord>,
        message: Message,
        mut extra: Ops,
        change_ts: u64,
    ) -> Result<Executed, EngineError> {
        extra.extend(self.message_ops(record, &message, change_ts)?);
        let lsn = self.commit(extra)?;
        Ok(Executed {
            change: self.message_change(&message, change_ts),
            reply: Reply::message(message, false),
            lsn: Some(lsn),
        })
    }

    /// One shard's part of a user's listing: the threads they own (the
    /// author index) and those they take part in (the member index),
    /// merged in scan order, each with the user's `role` and
    /// `unread_count`.
    fn list_threads(&self, page: &ThreadPage) -> Result<Executed, EngineError> {
        let user = page.author.as_str();
        let owned = self.authors.total(&self.store, page)?;
        let (mut positions, mut behind) = match page.sort {
            // The index gives the order; the records give the threads as
            // they are now (the index entry is not rewritten on every
            // activity, see `write_thread`).
            ThreadSort::CreatedTs => page::threads(&self.store, page)?,
            ThreadSort::UpdatedTs => self.authors.by_updated(&self.store, page)?,
        };
        let member = self.members.page(&self.store, page)?;
        positions.extend(member.positions);
        behind |= member.behind;
        positions.sort_unstable();
        if page.order == Order::NewestFirst {
            positions.reverse();
        }
        positions.truncate(page.limit + 1);
        let mut entries = Vec::with_capacity(positions.len());
        for position in positions {
            let thread = self.user_thread(&position.thread_id, user)?;
            entries.push(ThreadEntry { position, thread });
        }
        Executed::read(Reply::Threads(ThreadPart {
            entries,
            total: owned + member.total,
            behind,
        }))
    }

    /// One shard's part of the admin listing. `total` is this shard's
    /// thread counter for the whole listing, a count of the matches for an
    /// id prefix search.
    fn list_all_threads(&self, page: &AllThreadsPage) -> Result<Executed, EngineError> {
        let entries =
            page::all_threads(&self.store, page, &|record| self.open_thread_record(record))?;
        let counted = page.id_prefix.is_empty() && page.include_deleted;
        let total = if counted && page.partitions.is_none() {
            self.thread_count()?
        } else {
            let mut matches = 0;
            let ascending = crate::store::Direction::Ascending;
            self.store
                .scan_threads(&page.id_prefix, None, ascending, |_, record| {
                    let listed = page.include_deleted || !record.thread.deleted;
                    matches += u64::from(listed && page.holds(&record.thread.id));
                    Ok(true)
                })?;
            matches
        };
        Executed::read(Reply::Threads(ThreadPart {
            entries,
            total,
            behind: false,
        }))
    }

    /// Threads stored on this shard, deleted ones included; counted on the
    /// first need (a scan, so not at startup) and kept by every create.
    fn thread_count(&self) -> Result<u64, EngineError> {
        if let Some(count) = self.thread_count.get() {
            return Ok(count);
        }
        let mut count = 0;
        let ascending = crate::store::Direction::Ascending;
        self.store.scan_threads("", None, ascending, |_, _| {
            count += 1;
            Ok(true)
        })?;
        self.thread_count.set(Some(count));
        Ok(count)
    }

    fn stats(&self) -> Result<Executed, EngineError> {
        let messages = match self.message_count.get() {
            Some(count) => count,
            None => {
                let count = self.store.count_messages()?;
                self.message_count.set(Some(count));
                count
            }
        };
        Executed::read(Reply::Stats(ShardStats {
            shard: self.shard.0,
            applied_lsn: self.store.applied_lsn().0,
            threads: self.thread_count()?,
            messages,
            requests: crate::metrics::requests::snapshot(),
            wal: self.wal_stats(),
            wal_disk_bytes: self.wal.disk_bytes(),
        }))
    }

    /// Threads and messages of `partitions` on this shard: scans of both,
    /// as no counter is kept per partition (and a standby's replicated
    /// writes reset the shard's own).
    fn count_in(&self, partitions: &PartitionSet) -> Result<Executed, EngineError> {
        let mut threads = 0;
        let ascending = crate::store::Direction::Ascending;
        self.store.scan_threads("", None, ascending, |_, record| {
            threads += u64::from(partitions.holds_thread(&record.thread.id));
            Ok(true)
        })?;
        let messages = self
            .store
            .count_messages_of(&|thread| partitions.holds_thread(thread))?;
        Executed::read(Reply::Counts { threads, messages })
    }

    /// Live-tail bookkeeping: subscriptions and replays.
    fn execute_live_tail(&self, command: Command) -> Result<Executed, EngineError> {
        match command {
            Command::Subscribe {
                thread,
                caller,
                core,
                after,
            } => {
                self.visible_thread(&thread, &caller)?;
                *self
                    .listeners
                    .borrow_mut()
                    .entry(thread.to_string())
                    .or_default()
                    .entry(core)
                    .or_insert(0) += 1;
                match after {
                    Some(after) => Executed::read(self.replay(&thread, after)?),
                    None => Executed::read(Reply::Events {
                        events: Vec::new(),
                        more: false,
                    }),
                }
            }
            Command::ChangesAfter {
                thread,
                caller,
                after,
            } => {
                self.visible_thread(&thread, &caller)?;
                Executed::read(self.replay(&thread, after)?)
            }
            Command::Unsubscribe { thread, core } => {
                let mut listeners = self.listeners.borrow_mut();
                if let Some(cores) = listeners.get_mut(thread.as_str()) {
                    if let Some(count) = cores.get_mut(&core) {
                        *count -= 1;
                        if *count == 0 {
                            cores.remove(&core);
                        }
                    }
                    if cores.is_empty() {
                        listeners.remove(thread.as_str());
                    }
                }
                Executed::read(Reply::Done)
            }
            command => self.execute_participants(command),
        }
    }
}

/// The answer to a page too large to render whole: its plan, with what
/// the pieces need to render it.
fn planned(
    (thread, caller): (ThreadId, Caller),
    include_deleted: bool,
    names_thread: bool,
    plan: page::PagePlan,
) -> Reply {
    Reply::Page(Box::new(PlannedPage {
        thread,
        caller,
        include_deleted,
        names_thread,
        plan,
    }))
}

/// Bytes a version takes as stored (sealed or not).
fn stored_size(version: &Version) -> usize {
    version
        .sealed_body
        .as_ref()
        .map_or(version.body.get().len(), String::len)
}

/// The numbers of `window` in the order a page fills them when its bytes
/// run out: the newest first for the newest page or one before a cursor,
/// the oldest first after a cursor, and outward from an anchor.
fn fill_order(window: std::ops::RangeInclusive<u32>, position: VersionPosition) -> Vec<u32> {
    match position {
        VersionPosition::Newest | VersionPosition::Before(_) => window.rev().collect(),
        VersionPosition::After(_) => window.collect(),
        VersionPosition::Anchor(anchor) => {
            let (low, high) = (*window.start(), *window.end());
            let mut order = vec![anchor];
            for step in 1..=high.saturating_sub(low) {
                order.extend((anchor.checked_sub(step)).filter(|v| *v >= low));
                order.extend((anchor.checked_add(step)).filter(|v| *v <= high));
            }
            order
        }
    }
}

/// The index range of versions `1..=newest` (index `i` is version `i + 1`)
/// that `page` selects. A cursor must be one of the message's versions.
fn version_window(newest: u32, page: &VersionPage) -> Result<(u32, u32), EngineError> {
    let limit = u32::try_from(page.limit).unwrap_or(u32::MAX);
    let cursor = match page.position {
        VersionPosition::Newest => None,
        VersionPosition::Before(v) | VersionPosition::After(v) | VersionPosition::Anchor(v) => {
            Some(v)
        }
    };
    if cursor.is_some_and(|v| v == 0 || v > newest) {
        return Err(EngineError::InvalidCursor);
    }
    Ok(match page.position {
        VersionPosition::Newest => (newest.saturating_sub(limit), newest),
        VersionPosition::Before(v) => ((v - 1).saturating_sub(limit), v - 1),
        VersionPosition::After(v) => (v, v.saturating_add(limit).min(newest)),
        VersionPosition::Anchor(v) => (
            (v - 1).saturating_sub(limit),
            v.saturating_add(limit).min(newest),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(position: VersionPosition, limit: usize) -> VersionPage {
        VersionPage {
            position,
            limit,
            include_deleted: false,
        }
    }

    #[test]
    fn version_windows_are_arithmetic_on_numbers() {
        use VersionPosition::*;
        assert_eq!(version_window(7, &page(Newest, 2)).unwrap(), (5, 7));
        assert_eq!(version_window(7, &page(Before(3), 5)).unwrap(), (0, 2));
        assert_eq!(version_window(7, &page(After(6), 5)).unwrap(), (6, 7));
        assert_eq!(version_window(7, &page(Anchor(4), 1)).unwrap(), (2, 5));
        assert_eq!(version_window(7, &page(Before(1), 5)).unwrap(), (0, 0));
        for bad in [0, 8] {
            assert!(version_window(7, &page(Before(bad), 1)).is_err());
        }
    }

    #[test]
    fn pages_fill_from_the_cursor_outward() {
        use VersionPosition::*;
        assert_eq!(fill_order(3..=5, Newest), [5, 4, 3]);
        assert_eq!(fill_order(1..=2, Before(3)), [2, 1]);
        assert_eq!(fill_order(4..=6, After(3)), [4, 5, 6]);
        assert_eq!(fill_order(2..=6, Anchor(3)), [3, 2, 4, 5, 6]);
        assert_eq!(fill_order(1..=1, Anchor(1)), [1]);
    }
}
