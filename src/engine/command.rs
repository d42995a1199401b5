//! What a shard can be asked to do, and why it may fail (what it answers
//! is in `reply`). These values cross cores, so they own their data and
//! are `Send`.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::page::PageKeys;
use super::reply::PageRenderer;
use crate::cluster::PartitionSet;
use crate::model::{MessageId, Role, ThreadId, UserId};

/// One change of a thread, as sent to live-tail clients.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// When the change happened (ns); also the SSE `id:` for resuming.
    pub id: u64,
    /// `message.created`, `message.updated`, `message.deleted`,
    /// `participant.added` or `participant.removed`.
    pub kind: &'static str,
    /// The message's (or participant's) JSON after the change.
    pub data: Arc<[u8]>,
}

/// Who is asking. `user: None` is a backend caller (seed routes) that may
/// act on any thread; `Some(user)` may only touch threads that user owns or
/// takes part in, as their role there allows.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Option<UserId>,
}

impl Caller {
    /// Whether a read that asks for deleted items also reaches into a
    /// deleted thread. Only callers holding a server-side key (no user:
    /// the seed routes and admins) do; a user's deleted thread hides its
    /// messages from that user, as documented.
    pub fn reads_deleted_threads(&self, include_deleted: bool) -> bool {
        include_deleted && self.user.is_none()
    }
}

/// Scan order of a thread listing (newest first is its display order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// Where a message page is, in the v0.2 contract's terms. Positions are
/// message ids; the owner checks that the message exists in the thread, so
/// a forged position or one from another thread is refused. Pages are
/// always oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagePosition {
    /// The newest `limit` messages (the contract's "no cursor").
    End,
    /// The oldest `limit` messages (embedded mode's oldest-first reading).
    Start,
    /// Up to `limit` messages just older than this one.
    Before(MessageId),
    /// Up to `limit` messages just newer than this one.
    After(MessageId),
    /// Up to `limit` older, this one (if visible), up to `limit` newer.
    Anchor(MessageId),
}

#[derive(Debug, Clone)]
pub struct MessagePage {
    pub position: MessagePosition,
    pub limit: usize,
    /// Also list soft-deleted messages (marked `"deleted": true`).
    pub include_deleted: bool,
}

/// Where a page of a message's versions is, by version number (versions
/// are numbered from 1, oldest first; the current one is the highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPosition {
    /// The newest `limit`.
    Newest,
    /// Up to `limit` just older than this version.
    Before(u32),
    /// Up to `limit` just newer than this version.
    After(u32),
    /// Up to `limit` older, this one, up to `limit` newer.
    Anchor(u32),
}

#[derive(Debug, Clone)]
pub struct VersionPage {
    pub position: VersionPosition,
    pub limit: usize,
    /// The message may be soft-deleted.
    pub include_deleted: bool,
}

/// What a thread listing is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadSort {
    CreatedTs,
    /// Last activity: a new message or a change of the thread itself.
    UpdatedTs,
}

/// A position in an author's thread list: `(sort_ts, thread_id)`, where
/// `sort_ts` is the thread's `created_ts` or `updated_ts` per the listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ThreadPosition {
    pub sort_ts: u64,
    pub thread_id: String,
}

#[derive(Debug, Clone)]
pub struct ThreadPage {
    pub author: UserId,
    pub sort: ThreadSort,
    /// Threads strictly past this position in `order`.
    pub after: Option<ThreadPosition>,
    pub order: Order,
    pub limit: usize,
    pub include_deleted: bool,
    /// Clustered mode: only threads of these partitions (the node's own),
    /// so that each node's part of a listing gathered from every node
    /// names a thread once. `None` (one node) lists every thread.
    pub partitions: Option<Arc<PartitionSet>>,
}

impl ThreadPage {
    /// Whether thread `id` belongs in this page's part.
    pub fn holds(&self, id: &str) -> bool {
        holds(&self.partitions, id)
    }
}

/// Whether thread `id` lies in `partitions`, when a page names some.
fn holds(partitions: &Option<Arc<PartitionSet>>, id: &str) -> bool {
    partitions
        .as_ref()
        .is_none_or(|partitions| partitions.holds_thread(id))
}

/// A page of every thread of a shard, in thread id order (admin listing).
#[derive(Debug, Clone)]
pub struct AllThreadsPage {
    /// Only ids starting with this; empty for all.
    pub id_prefix: String,
    /// Threads strictly past this id in `order`.
    pub after: Option<String>,
    /// `OldestFirst` is ascending id order, `NewestFirst` descending.
    pub order: Order,
    pub limit: usize,
    pub include_deleted: bool,
    /// As [`ThreadPage::partitions`].
    pub partitions: Option<Arc<PartitionSet>>,
}

impl AllThreadsPage {
    /// The page restricted to `partitions`.
    pub fn of(&self, partitions: Arc<PartitionSet>) -> AllThreadsPage {
        AllThreadsPage {
            partitions: Some(partitions),
            ..self.clone()
        }
    }

    /// Whether thread `id` belongs in this page's part.
    pub fn holds(&self, id: &str) -> bool {
        holds(&self.partitions, id)
    }
}

#[derive(Debug)]
pub enum Command {
    CreateThread {
        id: ThreadId,
        author: UserId,
        title: String,
        slug: Option<String>,
        /// Members added with the thread (validated and bounded by the caller).
        participants: Vec<UserId>,
    },
    GetThread {
        id: ThreadId,
        caller: Caller,
        include_deleted: bool,
    },
    UpdateThread {
        id: ThreadId,
        caller: Caller,
        title: Option<String>,
        slug: Option<String>,
    },
    DeleteThread {
        id: ThreadId,
        caller: Caller,
    },
    RestoreThread {
        id: ThreadId,
        caller: Caller,
    },
    /// One shard's part of a thread listing; the caller merges the parts.
    ListThreads(ThreadPage),
    /// One shard's part of the admin listing of every thread.
    ListAllThreads(AllThreadsPage),
    /// One shard's counters.
    Stats,
    /// One shard's threads (deleted included) and messages in these
    /// partitions: clustered mode, where a node counts those it owns.
    CountIn(Arc<PartitionSet>),
    /// One shard's part of a Prometheus scrape.
    Metrics,
    /// Takes a consistent view of the shard's store and sends it to a
    /// backup's thread, which reads it while the shard goes on; the reply
    /// is `{"shard","lsn"}`. Sent to every shard.
    Snapshot {
        to: std::sync::mpsc::Sender<(usize, crate::store::Snapshot)>,
    },
    /// Adds a rotated master key to a shard's keyring.
    AddMasterKey {
        id: u32,
        key: SecretKey,
    },
    PostMessage {
        thread: ThreadId,
        caller: Caller,
        author: UserId,
        role: Option<String>,
        body: Box<RawValue>,
        reply_to: Option<String>,
        /// Seed route semantics: create the thread (with this title) when it
        /// does not exist yet.
        create_thread_titled: Option<String>,
    },
    ListMessages {
        thread: ThreadId,
        caller: Caller,
        page: MessagePage,
        /// The caller can take a large page in pieces: it is answered with
        /// a [`Reply::Page`] plan, and `PagePiece` renders it.
        in_pieces: bool,
        /// How the caller renders a whole page to bytes. With it, the
        /// newest page is answered as those bytes ([`Reply::Rendered`]),
        /// from the owner's first-page cache when it holds them; without
        /// it, every page is answered typed and the cache is not used.
        rendering: Option<PageRenderer>,
    },
    /// The next piece of a planned page: the first listed messages of
    /// `keys`.
    PagePiece {
        thread: ThreadId,
        caller: Caller,
        keys: PageKeys,
        include_deleted: bool,
    },
    GetMessage {
        thread: ThreadId,
        caller: Caller,
        id: String,
        include_deleted: bool,
    },
    /// A page of a message's versions, oldest first, the current one last.
    ListVersions {
        thread: ThreadId,
        caller: Caller,
        id: String,
        page: VersionPage,
    },
    /// Direct replies to a message, oldest first; `page.position` is
    /// `Start`, `Before` or `After` a reply's id. `in_pieces` as for
    /// `ListMessages`.
    ListReplies {
        thread: ThreadId,
        caller: Caller,
        id: String,
        page: MessagePage,
        in_pieces: bool,
    },
    /// Sets (`Some`) or removes (`None`) the caller's reaction.
    React {
        thread: ThreadId,
        caller: Caller,
        id: String,
        reaction: Option<String>,
    },
    RestoreMessage {
        thread: ThreadId,
        caller: Caller,
        id: String,
    },
    /// Registers core `core` as listening to the thread's changes and
    /// returns the changes after `after` (a Last-Event-ID) to replay.
    Subscribe {
        thread: ThreadId,
        caller: Caller,
        core: usize,
        after: Option<u64>,
    },
    /// More changes after `after`, when a replay did not fit one reply.
    ChangesAfter {
        thread: ThreadId,
        caller: Caller,
        after: u64,
    },
    /// Undoes one `Subscribe` of `core`.
    Unsubscribe {
        thread: ThreadId,
        core: usize,
    },
    EditMessage {
        thread: ThreadId,
        caller: Caller,
        id: String,
        body: Box<RawValue>,
    },
    DeleteMessage {
        thread: ThreadId,
        caller: Caller,
        id: String,
    },
    /// Adds `user` with `role`, or changes an existing participant's role.
    AddParticipant {
        thread: ThreadId,
        caller: Caller,
        user: UserId,
        role: Role,
    },
    /// Removes `user`; the caller may be `user` leaving.
    RemoveParticipant {
        thread: ThreadId,
        caller: Caller,
        user: UserId,
    },
    ListParticipants {
        thread: ThreadId,
        caller: Caller,
        page: ParticipantPage,
    },
    /// A thread as `user`'s listing shows it (with their `role` and
    /// `unread_count`), deleted or not: a listing's cursor thread.
    GetListedThread {
        id: ThreadId,
        user: UserId,
    },
    /// Moves the caller's read marker forward to message `id`.
    MarkRead {
        thread: ThreadId,
        caller: Caller,
        id: String,
    },
    /// Registers a stream of `user` on core `core` for every change of
    /// the user's threads on this shard (sent to every shard).
    SubscribeUser {
        user: UserId,
        core: usize,
    },
    /// Undoes one `SubscribeUser`.
    UnsubscribeUser {
        user: UserId,
        core: usize,
    },
    /// Erases a thread now (admin): it leaves the API at once, its keys
    /// follow in the next `Purge` steps.
    EraseThread {
        id: ThreadId,
    },
    /// One bounded step of a retention pass over a shard (sent to each).
    Purge(super::purge::PurgeRequest),
    /// Forces what erasure left on disk out of it: a new WAL segment, a
    /// major compaction, then a checkpoint (sent to each shard).
    Compact,
    /// Reports the encrypt-threads job's progress on a shard and, with
    /// `start`, starts it there unless it runs already (sent to each).
    EncryptThreads {
        start: bool,
    },
}

/// A page of a thread's participants, in user id order.
#[derive(Debug, Clone)]
pub struct ParticipantPage {
    pub cursor: ParticipantCursor,
    pub limit: usize,
}

/// Where a participant page is: user ids as cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantCursor {
    /// From the first user id.
    Start,
    /// Up to `limit` users just before this one.
    Before(String),
    /// Up to `limit` users just after this one.
    After(String),
}

/// Key material crossing cores; `Debug` never shows it.
pub struct SecretKey(pub [u8; crate::crypto::KEY_BYTES]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(hidden)")
    }
}

/// Why a command failed. The HTTP layer maps each to one status and code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    ThreadNotFound,
    MessageNotFound,
    ThreadExists,
    /// `before`/`after`/`anchor` names no message of this thread.
    InvalidCursor,
    /// `reply_to` names no live message of this thread.
    InvalidReplyTo,
    /// The message already has reactions from `reactions_per_message_max` users.
    TooManyReactions,
    /// The caller takes part in the thread but their role does not allow this.
    Forbidden(&'static str),
    /// The thread has as many participants as the server allows.
    TooManyParticipants(usize),
    /// The user named is not a participant of the thread.
    ParticipantNotFound,
    /// The owning shard could not be reached or failed internally.
    Unavailable(String),
    /// The shard's log failed (write or fsync); reads still work.
    WritesUnavailable(String),
    /// The external KMS could not be reached; nothing was changed.
    KmsUnavailable(String),
    /// Clustered mode: this node does not own the thread's partition now
    /// (it moved, or the log did not take the write); retry shortly.
    PartitionUnavailable(String),
    /// The change would log more bytes than one WAL record holds (an edit
    /// logs the old and the new body); nothing was changed.
    TooLarge {
        bytes: usize,
        max: usize,
    },
    Storage(String),
}

impl Command {
    /// The thread whose owner executes this command.
    ///
    /// # Panics
    /// For listings, `Stats` and `Metrics`, which are sent to every shard instead.
    pub fn thread(&self) -> &ThreadId {
        self.single_thread()
            .expect("sent to every shard, not to one owner")
    }

    /// True for the commands that only read (or subscribe).
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::GetThread { .. }
                | Command::ListThreads(_)
                | Command::ListAllThreads(_)
                | Command::Stats
                | Command::CountIn(_)
                | Command::Metrics
                | Command::ListMessages { .. }
                | Command::PagePiece { .. }
                | Command::GetMessage { .. }
                | Command::ListVersions { .. }
                | Command::ListReplies { .. }
                | Command::Subscribe { .. }
                | Command::ChangesAfter { .. }
                | Command::Unsubscribe { .. }
        )
    }

    /// The one thread this command is about; `None` for the commands sent
    /// to every shard.
    pub fn single_thread(&self) -> Option<&ThreadId> {
        match self {
            Command::CreateThread { id, .. }
            | Command::GetThread { id, .. }
            | Command::UpdateThread { id, .. }
            | Command::DeleteThread { id, .. }
            | Command::RestoreThread { id, .. }
            | Command::EraseThread { id } => Some(id),
            Command::PostMessage { thread, .. }
            | Command::ListMessages { thread, .. }
            | Command::PagePiece { thread, .. }
            | Command::GetMessage { thread, .. }
            | Command::ListVersions { thread, .. }
            | Command::ListReplies { thread, .. }
            | Command::React { thread, .. }
            | Command::RestoreMessage { thread, .. }
            | Command::Subscribe { thread, .. }
            | Command::ChangesAfter { thread, .. }
            | Command::Unsubscribe { thread, .. }
            | Command::EditMessage { thread, .. }
            | Command::DeleteMessage { thread, .. }
            | Command::AddParticipant { thread, .. }
            | Command::RemoveParticipant { thread, .. }
            | Command::ListParticipants { thread, .. }
            | Command::MarkRead { thread, .. }
            | Command::GetListedThread { id: thread, .. } => Some(thread),
            Command::ListThreads(_)
            | Command::ListAllThreads(_)
            | Command::Stats
            | Command::CountIn(_)
            | Command::Metrics
            | Command::AddMasterKey { .. }
            | Command::Snapshot { .. }
            | Command::SubscribeUser { .. }
            | Command::UnsubscribeUser { .. }
            | Command::Purge(_)
            | Command::Compact
            | Command::EncryptThreads { .. } => None,
        }
    }
}
