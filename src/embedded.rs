//! Embedded mode: the storage engine as a Rust library, without HTTP.
//!
//! [`Db::open`] opens a data directory as a one-shard server would: the same
//! layout marker (`progressdb.json` with `"shards": 1`), the same
//! [`Engine`], store and write-ahead log under `shard-0/`, by default in
//! `sync` durability (a call that writes returns only after its WAL record
//! is fsynced; see [`Options`] for the others and for encryption at rest).
//! A directory written here can be served by
//! `progressdb --shards 1 --db <dir>` and the other way round, just not at
//! the same time: the store's lock file lets one process in.
//!
//! The engine is glommio code (DMA file I/O, `Rc`, async execution), so a
//! [`Db`] owns one background thread running a glommio `LocalExecutor`
//! with the engine on it. Each method sends its command over a flume
//! channel and blocks on a one-shot reply. The executor awaits the channel
//! asynchronously; a send from a plain thread wakes it through glommio's
//! foreign-waker path (an eventfd), so an idle `Db` does not spin.
//!
//! Each method runs the engine command the HTTP route runs and returns the
//! engine's typed answer as it is (`FromReply`); nothing is rendered to
//! JSON and read back. A page's messages are decoded from the rows the
//! engine copied from the store.
//!
//! Every command runs as its own task on that executor, so writes from
//! several threads share fsyncs (group commit) exactly as HTTP requests do.
//! Beyond the calls here: replies, renames, deletes and restores
//! (`conversation`), a user's threads and read markers ([`Db::threads`],
//! [`Db::mark_read`], `listing`), and the live tail ([`Db::subscribe`],
//! `tail`).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::value::RawValue;

use crate::api::input;
use crate::config::{Limits, WAL_FLUSH_MS_DEFAULT, WAL_SEGMENT_BYTES_DEFAULT};
use crate::crypto::Keyring;
use crate::crypto::fields::FieldPaths;
use crate::engine::{
    self, Caller, Command, Engine, EngineError, MessageList, MessagePage, MessagePosition, Order,
    Reply, VersionList,
};
use crate::model::{MessageId, ThreadId, UserId};
use crate::runtime;
use crate::server::{self, datadir};
use crate::shard::ShardId;
use crate::wal::WalOptions;
use crate::wal::recovery::RecoveryPolicy;

pub use crate::model::{Message, Participant, Role, Thread, Version};
pub use crate::wal::Durability;
pub use listing::{ListedThread, ReadMarker, Threads};
pub use tail::{EVENTS_BUFFERED_MAX, Event, Subscription};

mod conversation;
mod listing;
mod tail;

/// The only shard of an embedded database.
const SHARD: ShardId = ShardId(0);

/// io_uring buffer memory asked for, capped by `RLIMIT_MEMLOCK` like a
/// server shard's. Small, so a process can hold several databases under
/// the common 8 MiB `ulimit -l`.
const IO_MEMORY_BYTES: usize = 256 * 1024;

/// How long closing waits for the engine's cancelled tasks to drop it.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Why an embedded database call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An argument was refused before reaching the engine.
    InvalidInput {
        field: &'static str,
        reason: String,
    },
    /// The directory belongs to a server with more than one shard; a
    /// one-shard reader would look for threads on the wrong shard.
    ShardCount {
        dir: PathBuf,
        shards: usize,
    },
    /// The directory could not be opened (permissions, damaged metadata,
    /// WAL corruption, or another process holds it).
    Open(String),
    ThreadNotFound,
    ThreadExists,
    MessageNotFound,
    /// A page cursor names no message of this thread.
    InvalidCursor,
    /// The WAL failed (write or fsync); reads keep working, writes fail
    /// until the database is reopened.
    WritesUnavailable(String),
    /// The store failed or holds a value that no longer parses.
    Storage(String),
    /// The background executor stopped (it panicked or failed to close).
    Closed(String),
    /// A subscription's consumer fell [`EVENTS_BUFFERED_MAX`] events
    /// behind and was dropped; subscribe again from the last event's id.
    TailLagged,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidInput { field, reason } => write!(f, "invalid {field}: {reason}"),
            Error::ShardCount { dir, shards } => write!(
                f,
                "{} was created with {shards} shards; embedded mode opens only one-shard directories (serve it with `progressdb --shards {shards}`)",
                dir.display()
            ),
            Error::Open(why) => write!(f, "cannot open the database: {why}"),
            Error::ThreadNotFound => f.write_str("thread not found"),
            Error::ThreadExists => f.write_str("thread already exists"),
            Error::MessageNotFound => f.write_str("message not found"),
            Error::InvalidCursor => f.write_str("cursor names no message of this thread"),
            Error::WritesUnavailable(why) => write!(f, "writes unavailable: {why}"),
            Error::Storage(why) => write!(f, "storage: {why}"),
            Error::Closed(why) => write!(f, "database closed: {why}"),
            Error::TailLagged => write!(
                f,
                "the subscription fell {EVENTS_BUFFERED_MAX} events behind and ended; resume from the last event's id"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<EngineError> for Error {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::ThreadNotFound => Error::ThreadNotFound,
            EngineError::MessageNotFound => Error::MessageNotFound,
            EngineError::ThreadExists => Error::ThreadExists,
            EngineError::InvalidCursor => Error::InvalidCursor,
            EngineError::InvalidReplyTo => invalid("reply_to", "names no live message"),
            EngineError::TooManyReactions => invalid("reaction", "too many reactions"),
            EngineError::Forbidden(why) => invalid("caller", why),
            EngineError::TooManyParticipants(_) => invalid("participant", "too many participants"),
            EngineError::ParticipantNotFound => invalid("participant", "not a participant"),
            EngineError::TooLarge { bytes, max } => invalid(
                "body",
                format!("the change would log {bytes} bytes, more than one WAL record ({max})"),
            ),
            // Embedded mode is never clustered; mapped for completeness.
            EngineError::WritesUnavailable(why) | EngineError::PartitionUnavailable(why) => {
                Error::WritesUnavailable(why)
            }
            // The embedded KMS is the caller's key, in memory.
            EngineError::KmsUnavailable(why) => Error::Storage(format!("key service: {why}")),
            EngineError::Unavailable(why) | EngineError::Storage(why) => Error::Storage(why),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        field,
        reason: reason.into(),
    }
}

/// How an embedded database runs.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// When a write returns: [`Durability::Sync`] (default) after its WAL
    /// record is fsynced, `Batch` after it is logged (fsynced within the
    /// flush interval), `None` after it is logged, never fsynced.
    pub durability: Durability,
    /// 32 bytes that seal message bodies, versions and titles at rest
    /// (AES-256-GCM, a key per thread wrapped by this one), as the server's
    /// `--encryption` does. Keep it outside the data directory: the
    /// directory cannot be read without it. `None`: no encryption.
    pub master_key: Option<[u8; crate::crypto::KEY_BYTES]>,
    /// With a master key, the body paths sealed one by one instead of the
    /// whole body (`body.text`, `body.*.text`), as `--encrypt-field`.
    pub encrypt_fields: Vec<String>,
}

impl Options {
    pub fn with_durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    pub fn with_master_key(mut self, key: [u8; crate::crypto::KEY_BYTES]) -> Options {
        self.master_key = Some(key);
        self
    }

    pub fn with_encrypted_field(mut self, path: &str) -> Options {
        self.encrypt_fields.push(path.to_owned());
        self
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Sync,
            master_key: None,
            encrypt_fields: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("master_key", &self.master_key.map(|_| "(hidden)"))
            .field("encrypt_fields", &self.encrypt_fields)
            .finish()
    }
}

/// Which page to read: of a thread's messages, of a message's replies
/// (oldest first only) or of a user's threads (newest activity first
/// only, [`Db::threads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    order: Order,
    limit: usize,
    cursor: Option<String>,
    include_deleted: bool,
}

impl Page {
    /// The newest `limit` messages, newest first.
    pub fn newest_first(limit: usize) -> Page {
        Page {
            order: Order::NewestFirst,
            limit,
            cursor: None,
            include_deleted: false,
        }
    }

    /// The oldest `limit` messages, oldest first.
    pub fn oldest_first(limit: usize) -> Page {
        Page {
            order: Order::OldestFirst,
            ..Page::newest_first(limit)
        }
    }

    /// Continues past `cursor` (a [`Messages::next_cursor`] or
    /// [`Threads::next_cursor`]) in this page's order: older messages when
    /// newest first, newer ones when oldest first.
    pub fn after(mut self, cursor: impl Into<String>) -> Page {
        self.cursor = Some(cursor.into());
        self
    }

    /// Also lists soft-deleted messages (marked `deleted`), or the user's
    /// own deleted threads.
    pub fn include_deleted(mut self) -> Page {
        self.include_deleted = true;
        self
    }
}

/// One page of messages.
#[derive(Debug)]
pub struct Messages {
    pub messages: Vec<Message>,
    /// Where the next page starts (pass to [`Page::after`]); `None` on the
    /// last page.
    pub next_cursor: Option<String>,
}

/// What a [`Db`] asks of its executor.
enum Request {
    /// A command and where its outcome goes.
    Command {
        command: Command,
        reply: flume::Sender<crate::engine::Outcome>,
    },
    /// A live tail of `thread` from after `after`.
    Subscribe {
        thread: ThreadId,
        after: Option<u64>,
        listener: tail::Listener,
        reply: flume::Sender<Result<(), EngineError>>,
    },
}

/// An open embedded database.
///
/// `Db` is `Send + Sync`: share it between threads with `Arc<Db>` (every
/// method takes `&self`). Calls from different threads run concurrently on
/// the background executor, and concurrent writes share fsyncs.
///
/// Dropping it closes it: the executor finishes, the store is synced and
/// the thread joined. [`Db::close`] does the same and reports a failure.
///
/// ```
/// use progressdb::Db;
/// use progressdb::embedded::Page;
///
/// # fn main() -> Result<(), progressdb::embedded::Error> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path().join("chat-data");
/// let db = Db::open(&dir)?;
/// let thread = db.create_thread("alice", "Launch plan")?;
/// let first = db.post_message(&thread.id, "alice", r#"{"text":"hello"}"#)?;
/// db.post_message(&thread.id, "bob", r#"{"text":"hi there"}"#)?;
///
/// // Newest first, two per page; follow next_cursor for older ones.
/// let page = db.list_messages(&thread.id, &Page::newest_first(2))?;
/// assert_eq!(page.messages[0].body.get(), r#"{"text":"hi there"}"#);
/// assert!(page.next_cursor.is_none());
///
/// // Edits keep history; deletes are soft.
/// db.edit_message(&thread.id, &first.id, r#"{"text":"hello, all"}"#)?;
/// assert_eq!(db.versions(&thread.id, &first.id)?.len(), 2);
/// db.delete_message(&thread.id, &first.id)?;
/// let page = db.list_messages(&thread.id, &Page::oldest_first(50))?;
/// assert_eq!(page.messages.len(), 1);
/// db.close()?; // or drop it
/// # Ok(())
/// # }
/// ```
pub struct Db {
    requests: Option<flume::Sender<Request>>,
    executor: Option<runtime::ExecutorJoinHandle<Result<(), String>>>,
    dir: PathBuf,
    /// Makes ids of threads created in the same millisecond differ.
    thread_sequence: AtomicU32,
}

// Compile-time proof of the thread-safety promise above.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Db>();
};

impl Db {
    /// Opens (or creates) the database in `dir`, recovering its WAL.
    ///
    /// Fails with [`Error::ShardCount`] when `dir` was created by a server
    /// with more than one shard, and with [`Error::Open`] when it cannot be
    /// read or another process (a server or another `Db`) has it open.
    pub fn open(dir: impl AsRef<Path>) -> Result<Db, Error> {
        Db::open_with(dir, Options::default())
    }

    /// [`Db::open`] with [`Options`]. A directory encrypted with a master
    /// key opens only with that key ([`Error::Open`] otherwise).
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Db, Error> {
        let dir = dir.as_ref().to_path_buf();
        match datadir::stored_shards(&dir).map_err(Error::Open)? {
            None | Some(1) => {}
            Some(shards) => return Err(Error::ShardCount { dir, shards }),
        }
        datadir::prepare(&dir, Some(1), 1).map_err(Error::Open)?;
        let io_memory = server::io_memory_per_shard(IO_MEMORY_BYTES, 1).map_err(Error::Open)?;

        let (requests, incoming) = flume::unbounded::<Request>();
        let (opened_tx, opened_rx) = flume::bounded::<Result<(), String>>(1);
        let shard_root = dir.clone();
        let executor =
            runtime::start_thread("progressdb-embedded", io_memory, move || async move {
                let engine = match open_engine(&shard_root, &options) {
                    Ok(engine) => engine,
                    Err(why) => {
                        let _ = opened_tx.send(Err(why));
                        return Ok(());
                    }
                };
                let _ = opened_tx.send(Ok(()));
                serve(engine, incoming).await
            })
            .map_err(Error::Open)?;
        let opened = opened_rx.recv().unwrap_or_else(|_| {
            // The executor dropped the sender without a word: it panicked
            // or could not be built; `join` below says which.
            Err("the executor stopped while opening".into())
        });
        if let Err(why) = opened {
            let why = match executor.join() {
                Err(err) => format!("{why}: {err}"),
                Ok(_) => why,
            };
            return Err(Error::Open(why));
        }
        Ok(Db {
            requests: Some(requests),
            executor: Some(executor),
            dir,
            thread_sequence: AtomicU32::new(0),
        })
    }

    /// The data directory this database was opened on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a thread with a generated id. `author` is 1 to 128 printable
    /// ASCII characters; `title` 1 to 512 bytes of non-blank text (trimmed)
    /// without control or bidi override characters.
    pub fn create_thread(&self, author: &str, title: &str) -> Result<Thread, Error> {
        let author = user_id("author", author)?;
        let limits = Limits::default();
        let title = input::valid_title(title, &limits).ok_or_else(|| {
            invalid(
                "title",
                format!(
                    "must be 1 to {} bytes of non-blank text without control or bidi override characters",
                    limits.title_bytes_max
                ),
            )
        })?;
        let id = engine::new_thread_id(SHARD, self.thread_sequence.fetch_add(1, Ordering::Relaxed));
        self.call(Command::CreateThread {
            id,
            author,
            title: title.to_owned(),
            slug: None,
            participants: Vec::new(),
        })
    }

    /// The thread `id` unless it is missing or deleted.
    pub fn thread(&self, id: &str) -> Result<Thread, Error> {
        self.call(Command::GetThread {
            id: thread_id(id)?,
            caller: anyone(),
            include_deleted: false,
        })
    }

    /// Appends a message to `thread`. `body_json` is any JSON value but
    /// `null`, at most 1 MiB; it is stored and returned byte for byte.
    pub fn post_message(
        &self,
        thread: &str,
        author: &str,
        body_json: &str,
    ) -> Result<Message, Error> {
        self.post(thread, author, body_json, None)
    }

    /// A new message of `thread`, a reply when `reply_to` names its parent.
    fn post(
        &self,
        thread: &str,
        author: &str,
        body_json: &str,
        reply_to: Option<&str>,
    ) -> Result<Message, Error> {
        self.call(Command::PostMessage {
            thread: thread_id(thread)?,
            caller: anyone(),
            author: user_id("author", author)?,
            role: None,
            body: body(body_json)?,
            reply_to: reply_to.map(str::to_owned),
            create_thread_titled: None,
        })
    }

    /// The message `id` of `thread` unless it is missing or deleted.
    pub fn message(&self, thread: &str, id: &str) -> Result<Message, Error> {
        self.call(Command::GetMessage {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: id.to_owned(),
            include_deleted: false,
        })
    }

    /// One page of `thread`'s messages; `limit` must be 1 to 1000.
    pub fn list_messages(&self, thread: &str, page: &Page) -> Result<Messages, Error> {
        let limit = checked_limit(page.limit)?;
        let newest_first = page.order == Order::NewestFirst;
        let position = match (&page.cursor, newest_first) {
            (None, true) => MessagePosition::End,
            (None, false) => MessagePosition::Start,
            (Some(cursor), _) => {
                let id = MessageId::parse(cursor).ok_or(Error::InvalidCursor)?;
                if newest_first {
                    MessagePosition::Before(id)
                } else {
                    MessagePosition::After(id)
                }
            }
        };
        // The engine answers oldest first, with the contract's anchors.
        let list: MessageList = self.call(Command::ListMessages {
            thread: thread_id(thread)?,
            caller: anyone(),
            page: MessagePage {
                position,
                limit,
                include_deleted: page.include_deleted,
            },
            // Embedded callers read a page as one value, typed.
            in_pieces: false,
            rendering: None,
        })?;
        let mut messages = list.messages()?;
        let pagination = list.pagination;
        let next_cursor = if newest_first {
            messages.reverse();
            pagination.has_before.then_some(pagination.before_anchor)
        } else {
            pagination.has_after.then_some(pagination.after_anchor)
        };
        Ok(Messages {
            messages,
            next_cursor,
        })
    }

    /// Replaces a message's body, keeping the previous one as a version.
    /// Returns the message with `version` incremented.
    pub fn edit_message(&self, thread: &str, id: &str, body_json: &str) -> Result<Message, Error> {
        self.call(Command::EditMessage {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: id.to_owned(),
            body: body(body_json)?,
        })
    }

    /// Every version of a message, oldest first; the current one is last.
    pub fn versions(&self, thread: &str, id: &str) -> Result<Vec<Version>, Error> {
        // Embedded callers asked for the whole history: one page of all.
        let versions: VersionList = self.call(Command::ListVersions {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: id.to_owned(),
            page: crate::engine::VersionPage {
                position: crate::engine::VersionPosition::Newest,
                limit: usize::MAX,
                include_deleted: false,
            },
        })?;
        Ok(versions.versions)
    }

    /// Soft-deletes a message: reads hide it unless they include deleted
    /// messages; nothing is erased.
    pub fn delete_message(&self, thread: &str, id: &str) -> Result<(), Error> {
        self.run(Command::DeleteMessage {
            thread: thread_id(thread)?,
            caller: anyone(),
            id: id.to_owned(),
        })
        .map(drop)
    }

    /// Closes the database: stops the executor after syncing the store and
    /// joins its thread. Dropping does the same but can only log a failure.
    pub fn close(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        // No call is in flight: every method borrows `self` until its reply
        // arrives. Disconnecting ends the executor's request loop.
        drop(self.requests.take());
        match self.executor.take() {
            None => Ok(()),
            Some(executor) => match executor.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(Error::Closed(why)),
                Err(err) => Err(Error::Closed(err.to_string())),
            },
        }
    }

    /// Runs `command` and takes the value it answers.
    fn call<T: FromReply>(&self, command: Command) -> Result<T, Error> {
        T::from_reply(self.run(command)?).ok_or_else(|| unexpected_reply().into())
    }

    fn run(&self, command: Command) -> Result<Reply, Error> {
        let closed = || Error::Closed("the executor has stopped".into());
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        let (reply, outcome) = flume::bounded(1);
        requests
            .send(Request::Command { command, reply })
            .map_err(|_| closed())?;
        Ok(outcome.recv().map_err(|_| closed())??)
    }

    /// A live tail of `thread`: every change from now on, or, with
    /// `after` (an [`Event::id`] seen before), every change since then
    /// first. Fails with [`Error::ThreadNotFound`] for a missing thread.
    pub fn subscribe(&self, thread: &str, after: Option<u64>) -> Result<Subscription, Error> {
        let thread = thread_id(thread)?;
        let closed = || Error::Closed("the executor has stopped".into());
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        let (listener, subscription) = tail::Listener::pair();
        let (reply, outcome) = flume::bounded(1);
        requests
            .send(Request::Subscribe {
                thread,
                after,
                listener,
                reply,
            })
            .map_err(|_| closed())?;
        outcome.recv().map_err(|_| closed())??;
        Ok(subscription)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(err) = self.shut_down() {
            eprintln!("progressdb: {}: {err}", self.dir.display());
        }
    }
}

/// Opens the one shard on the executor thread, as a server shard does.
fn open_engine(dir: &Path, options: &Options) -> Result<Rc<Engine>, String> {
    let wal = WalOptions {
        durability: options.durability,
        flush_interval: std::time::Duration::from_millis(WAL_FLUSH_MS_DEFAULT as u64),
        segment_bytes: WAL_SEGMENT_BYTES_DEFAULT as u64,
        fail_after_flushes: None,
    };
    let store = crate::store::StoreOptions::default();
    let kms = options
        .master_key
        .map(|key| server::checked_keyring(Keyring::with_key(key), &server::kms_dir(dir)?))
        .transpose()?;
    if kms.is_none() && !options.encrypt_fields.is_empty() {
        return Err("encrypted fields need a master key".into());
    }
    let fields = FieldPaths::parse(&options.encrypt_fields)?;
    let policy = (RecoveryPolicy::Strict, crate::engine::StoreRecovery::Strict);
    let engine = server::open_shard(dir, SHARD, store, wal, policy, kms)?;
    engine.encrypt_fields(fields);
    Ok(engine)
}

/// The executor's loop: runs each request as its own task until every
/// sender is gone, then syncs the store.
async fn serve(engine: Rc<Engine>, incoming: flume::Receiver<Request>) -> Result<(), String> {
    let tails = Rc::new(tail::Tails::default());
    while let Ok(request) = incoming.recv_async().await {
        let (engine, tails) = (engine.clone(), tails.clone());
        runtime::spawn_detached(async move {
            match request {
                Request::Command { command, reply } => {
                    let (outcome, published) = engine.run(command).await;
                    if let Some(published) = published {
                        tails.deliver(&engine, &published);
                    }
                    let _ = reply.send(outcome);
                }
                Request::Subscribe {
                    thread,
                    after,
                    listener,
                    reply,
                } => {
                    let _ = reply.send(tails.subscribe(&engine, thread, after, listener).await);
                }
            }
        });
    }
    // In `batch` and `none` modes the log's newest records may not be on
    // disk yet; the store writes out only what the log has.
    let flushed = engine
        .flush_wal()
        .await
        .map_err(|err| format!("cannot sync the log on close: {err}"));
    let persisted = flushed.and_then(|()| {
        engine
            .persist()
            .map_err(|err| format!("cannot sync the store on close: {err}"))
    });
    // The background tasks hold the engine; once they are gone, dropping it
    // closes the store and releases the directory for the next opener.
    engine.stop();
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    while Rc::strong_count(&engine) > 1 {
        if std::time::Instant::now() > deadline {
            return Err("background tasks did not stop; the directory stays locked".into());
        }
        runtime::sleep(STOP_POLL).await;
    }
    drop(engine);
    persisted
}

/// A value embedded mode hands to its caller, taken from the engine's
/// typed reply as it is; `None` from a reply of another kind.
trait FromReply: Sized {
    fn from_reply(reply: Reply) -> Option<Self>;
}

/// `FromReply` for a type one reply variant carries.
macro_rules! from_reply {
    ($type:ty, $variant:pat => $value:expr) => {
        impl FromReply for $type {
            fn from_reply(reply: Reply) -> Option<Self> {
                match reply {
                    $variant => Some($value),
                    _ => None,
                }
            }
        }
    };
}

from_reply!(Thread, Reply::Thread { thread, .. } => thread);
from_reply!(Message, Reply::Message { message, .. } => message);
from_reply!(Participant, Reply::Participant { participant, .. } => participant);
from_reply!(MessageList, Reply::Messages(list) => list);
from_reply!(VersionList, Reply::Versions(list) => list);
from_reply!(ReadMarker, Reply::ReadMarker(marker) => marker);

fn unexpected_reply() -> EngineError {
    EngineError::Storage("unexpected reply kind for an embedded command".into())
}

/// Embedded callers are trusted code, like the server's backend key: they
/// may act on any thread.
fn anyone() -> Caller {
    Caller { user: None }
}

/// A page size within the API's bounds.
fn checked_limit(limit: usize) -> Result<usize, Error> {
    let limit_max = Limits::default().page_limit_max;
    if limit == 0 || limit > limit_max {
        return Err(invalid("limit", format!("must be 1 to {limit_max}")));
    }
    Ok(limit)
}

fn thread_id(text: &str) -> Result<ThreadId, Error> {
    ThreadId::parse(text).ok_or_else(|| {
        invalid(
            "thread",
            "must be 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
        )
    })
}

fn user_id(field: &'static str, text: &str) -> Result<UserId, Error> {
    UserId::parse(text).ok_or_else(|| invalid(field, "must be 1 to 128 printable ASCII characters"))
}

fn body(json: &str) -> Result<Box<RawValue>, Error> {
    let limits = Limits::default();
    let body_max = limits.request_body_bytes_max;
    if json.len() > body_max {
        return Err(invalid("body", format!("must be at most {body_max} bytes")));
    }
    input::check_json_depth(json.as_bytes(), limits.json_depth_max)
        .map_err(|err| invalid("body", err.message))?;
    let raw = RawValue::from_string(json.to_owned())
        .map_err(|err| invalid("body", format!("is not JSON: {err}")))?;
    if raw.get().trim() == "null" {
        return Err(invalid("body", "may be any JSON value but null"));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_must_be_json_and_not_null() {
        assert!(body(r#"{"text":"hi"}"#).is_ok());
        assert_eq!(body("\"plain\"").unwrap().get(), "\"plain\"");
        for bad in ["", "null", " null ", "{", "hi"] {
            assert!(
                matches!(body(bad), Err(Error::InvalidInput { field: "body", .. })),
                "{bad:?}"
            );
        }
        let huge = format!(
            "\"{}\"",
            "x".repeat(Limits::default().request_body_bytes_max)
        );
        assert!(matches!(body(&huge), Err(Error::InvalidInput { .. })));
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert!(matches!(body(&deep), Err(Error::InvalidInput { .. })));
        assert!(body(&("[".repeat(64) + &"]".repeat(64))).is_ok());
    }

    #[test]
    fn engine_errors_map_to_typed_errors() {
        assert_eq!(
            Error::from(EngineError::ThreadNotFound),
            Error::ThreadNotFound
        );
        assert_eq!(
            Error::from(EngineError::WritesUnavailable("fsync".into())),
            Error::WritesUnavailable("fsync".into())
        );
        assert!(matches!(
            Error::from(EngineError::InvalidReplyTo),
            Error::InvalidInput {
                field: "reply_to",
                ..
            }
        ));
    }
}
