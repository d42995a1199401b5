//! What a shard answers: typed values, one [`Reply`] variant per kind of
//! answer. The owner resolves and reveals (opens sealed titles, bodies and
//! fields) what it answers; each front end renders the values its own way
//! (`api::render` as the v0.2 contract's JSON, embedded mode hands them to
//! Rust callers as they are). These values cross cores, so they own their
//! data and are `Send`.
//!
//! One answer is bytes, for speed: the first-page cache holds the HTTP
//! rendering of a thread's newest page ([`Reply::Rendered`]), which the
//! engine drops with the thread's next write. A page too large to answer
//! whole is planned, then answered in [`Piece`]s of rows.

use super::command::{Caller, EngineError, StreamEvent, ThreadPosition};
use super::page::{PagePlan, Pagination, Piece};
use super::seal_job::SealProgress;
use crate::model::{Message, Participant, Role, Thread, ThreadId, UserId, Version};

/// A successful answer.
// Answers travel unboxed: a post's message or a page is moved to the
// accepting core, not allocated again on its way there.
#[derive(Debug)]
pub enum Reply {
    /// A thread as it is now; `created` when the command made it.
    Thread { thread: Thread, created: bool },
    /// A thread as one user's listing shows it.
    UserThread(UserThread),
    /// A message as it is now (after the change, for a mutation);
    /// `created` when the command posted it.
    Message { message: Message, created: bool },
    /// A page of a thread's messages or of a message's replies.
    Messages(MessageList),
    /// A page of a message's versions.
    Versions(VersionList),
    /// A participant as it is now; `created` when the command added them.
    Participant {
        participant: Participant,
        created: bool,
    },
    /// The participant `user` was removed.
    ParticipantRemoved(UserId),
    /// A page of a thread's participants.
    Participants(ParticipantList),
    /// A user's read marker after it moved (or stayed).
    ReadMarker(ReadMarker),
    /// A page the caller's renderer rendered, as [`super::Command::ListMessages`]
    /// asked: a thread's newest page, possibly from the first-page cache,
    /// which holds these bytes until the engine invalidates them with the
    /// thread's next write.
    Rendered(Vec<u8>),
    /// A shard's counters (`Command::Stats`).
    Stats(ShardStats),
    /// Threads and messages in some partitions (`Command::CountIn`).
    Counts { threads: u64, messages: u64 },
    /// The encrypt-threads job's progress on a shard.
    SealProgress(SealProgress),
    /// Done; nothing to report.
    Done,
    /// One shard's part of a thread listing.
    Threads(ThreadPart),
    /// Changes to replay, oldest first; `more` when the replay was cut at
    /// its size limit.
    Events {
        events: Vec<StreamEvent>,
        more: bool,
    },
    /// A shard's answer to `Command::Metrics`.
    Metrics(Box<crate::metrics::ShardSample>),
    /// A message page too large to render whole, to fetch in pieces.
    Page(Box<PlannedPage>),
    /// One piece of a planned page.
    Piece(Box<Piece>),
    /// A shard's answer to `Command::Purge`.
    Purged(super::purge::PurgeReport),
}

pub type Outcome = Result<Reply, EngineError>;

impl Reply {
    pub fn thread(thread: Thread, created: bool) -> Reply {
        Reply::Thread { thread, created }
    }

    pub fn message(message: Message, created: bool) -> Reply {
        Reply::Message { message, created }
    }

    /// A participant's answer, without their storage-only read state.
    pub fn participant(mut participant: Participant, created: bool) -> Reply {
        participant.read = Default::default();
        Reply::Participant {
            participant,
            created,
        }
    }
}

/// How a front end renders a whole message page to bytes; the HTTP one is
/// what the first-page cache holds.
pub type PageRenderer = fn(&MessageList) -> Vec<u8>;

/// A page of messages, oldest first.
#[derive(Debug, Default)]
pub struct MessageList {
    /// The thread, when the list names it (a thread's messages; replies
    /// do not).
    pub thread: Option<ThreadId>,
    pub rows: Vec<MessageRow>,
    pub pagination: Pagination,
}

/// One listed message, revealed, in its wire encoding: messages are stored
/// that way, so a page is copied from the store rather than decoded and
/// encoded again.
#[derive(Debug)]
pub struct MessageRow {
    /// The message's `created_ts`.
    pub ts: u64,
    pub json: Vec<u8>,
}

impl MessageList {
    /// The listed messages as values.
    pub fn messages(&self) -> Result<Vec<Message>, EngineError> {
        self.rows
            .iter()
            .map(|row| {
                serde_json::from_slice(&row.json)
                    .map_err(|err| EngineError::Storage(err.to_string()))
            })
            .collect()
    }
}

/// A page of a message's versions, oldest first, the current one last;
/// anchors are version numbers.
#[derive(Debug)]
pub struct VersionList {
    /// The message's key.
    pub message: String,
    /// Opened versions.
    pub versions: Vec<Version>,
    pub pagination: Pagination,
}

/// A page of a thread's participants, in user id order (their storage-only
/// read state is not part of the answer).
#[derive(Debug)]
pub struct ParticipantList {
    pub participants: Vec<Participant>,
    pub pagination: Pagination,
}

/// A user's read marker in a thread.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadMarker {
    /// The thread's key.
    #[serde(rename = "key")]
    pub thread: String,
    /// Key of the newest message the user has read.
    pub last_read: Option<String>,
    pub unread_count: u64,
}

/// A thread as a user's listing shows it.
#[derive(Debug, Clone)]
pub struct UserThread {
    pub thread: Thread,
    /// The user's part in it; `None` in listings not made for a user (the
    /// admin's) and for a thread the user has no record in.
    pub membership: Option<Membership>,
}

/// A user's role in a thread and what is unread there for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub role: Role,
    /// Messages newer than the user's read marker that others wrote.
    pub unread_count: u64,
}

/// A shard's counters.
#[derive(Debug, Clone)]
pub struct ShardStats {
    pub shard: usize,
    pub applied_lsn: u64,
    pub threads: u64,
    pub messages: u64,
    pub requests: crate::metrics::requests::Snapshot,
    pub wal: crate::wal::WalStats,
    /// Bytes of the shard's log on disk.
    pub wal_disk_bytes: u64,
}

/// A message page to fetch in pieces: what it lists and where it is.
#[derive(Debug)]
pub struct PlannedPage {
    pub thread: ThreadId,
    /// Who asked; each piece checks access again.
    pub caller: Caller,
    pub include_deleted: bool,
    /// The list names its thread (`{"thread":…}`, a thread's messages;
    /// replies do not).
    pub names_thread: bool,
    pub plan: PagePlan,
}

/// One shard's part of a thread listing.
#[derive(Debug, Default)]
pub struct ThreadPart {
    /// Up to `limit + 1` threads past the position, in scan order.
    pub entries: Vec<ThreadEntry>,
    /// The threads of the whole listing on this shard (a counter, not a
    /// scan, for author listings).
    pub total: u64,
    /// A listed thread exists on this shard strictly behind the position
    /// (against the scan order); `false` without a position.
    pub behind: bool,
}

/// One thread of a shard's part of a listing.
#[derive(Debug)]
pub struct ThreadEntry {
    pub position: ThreadPosition,
    pub thread: UserThread,
}
