//! The chat operations one shard performs on the threads it owns.
//!
//! An [`Engine`] is owned by exactly one executor and is the only writer of
//! its [`Store`]; commands for its threads are executed here one at a time,
//! which is what makes per-thread timestamps strictly increasing without
//! locks.

mod command;
mod page;

pub use page::envelope;

pub use command::{
    Caller, Command, EngineError, MessagePage, MessagePosition, Order, Outcome, Reply, ThreadEntry,
    ThreadPage, ThreadPosition,
};

use std::cell::Cell;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Message, MessageId, Thread, ThreadId, ThreadRecord};
use crate::shard::ShardId;
use crate::store::{Store, StoreError};

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        EngineError::Storage(err.to_string())
    }
}

pub struct Engine {
    shard: ShardId,
    store: Store,
    /// Last timestamp this shard handed out; keeps thread timestamps
    /// strictly increasing even when the wall clock steps back.
    clock_ns: Cell<u64>,
    /// State of the generator for message id salts.
    salt_state: Cell<u64>,
}

/// Block cache per shard for fjall.
const CACHE_BYTES_PER_SHARD: u64 = 64 * 1024 * 1024;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

impl Engine {
    pub fn open(shard: ShardId, dir: &Path) -> Result<Engine, StoreError> {
        let store = Store::open(dir, CACHE_BYTES_PER_SHARD)?;
        let seed = now_ns() ^ ((shard.0 as u64) << 56) ^ u64::from(std::process::id());
        Ok(Engine {
            shard,
            store,
            clock_ns: Cell::new(0),
            salt_state: Cell::new(seed),
        })
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn persist(&self) -> Result<(), StoreError> {
        self.store.persist()
    }

    /// A timestamp greater than both `floor` and anything this shard issued.
    fn tick(&self, floor: u64) -> u64 {
        let ts = now_ns().max(floor + 1).max(self.clock_ns.get() + 1);
        self.clock_ns.set(ts);
        ts
    }

    fn next_salt(&self) -> u64 {
        // splitmix64: salts only need to differ, not to be secret.
        let state = self.salt_state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.salt_state.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn execute(&self, command: Command) -> Outcome {
        match command {
            Command::CreateThread {
                id,
                author,
                title,
                slug,
            } => {
                if self.store.get_thread(id.as_str())?.is_some() {
                    return Err(EngineError::ThreadExists);
                }
                let record = self.new_thread(&id, author.as_str(), title, slug)?;
                Ok(Reply::Created(to_json(&record.thread)))
            }
            Command::GetThread { id, caller } => {
                let record = self.visible_thread(&id, &caller)?;
                Ok(Reply::Ok(to_json(&record.thread)))
            }
            Command::UpdateThread {
                id,
                caller,
                title,
                slug,
            } => {
                let mut record = self.visible_thread(&id, &caller)?;
                if let Some(title) = title {
                    record.thread.title = title;
                }
                if slug.is_some() {
                    record.thread.slug = slug;
                }
                record.thread.updated_ts = self.tick(record.thread.updated_ts);
                self.store.put_thread(&record)?;
                Ok(Reply::Ok(to_json(&record.thread)))
            }
            Command::DeleteThread { id, caller } => {
                let mut record = self.visible_thread(&id, &caller)?;
                record.thread.deleted = true;
                record.thread.updated_ts = self.tick(record.thread.updated_ts);
                self.store.put_thread(&record)?;
                Ok(Reply::Ok(br#"{"deleted":true}"#.to_vec()))
            }
            Command::ListThreads(page) => page::threads(&self.store, &page).map(Reply::Threads),
            Command::PostMessage {
                thread,
                caller,
                author,
                role,
                body,
                reply_to,
                create_thread_titled,
            } => {
                let mut record = match self.store.get_thread(thread.as_str())? {
                    Some(record)
                        if !record.thread.deleted && caller.may_access(&record.thread.author) =>
                    {
                        record
                    }
                    Some(_) => return Err(EngineError::ThreadNotFound),
                    None => match create_thread_titled {
                        Some(title) => self.new_thread(&thread, author.as_str(), title, None)?,
                        None => return Err(EngineError::ThreadNotFound),
                    },
                };
                if let Some(reply_to) = &reply_to {
                    match self.find_message(&thread, reply_to)? {
                        Some(target) if !target.deleted => {}
                        _ => return Err(EngineError::InvalidReplyTo),
                    }
                }
                let ts = self.tick(record.last_message_ts);
                let id = MessageId {
                    ts,
                    salt: self.next_salt(),
                };
                let message = Message {
                    id: id.to_string(),
                    thread: thread.to_string(),
                    author: author.to_string(),
                    role,
                    ts,
                    body,
                    reply_to,
                    deleted: false,
                    updated_ts: None,
                    version: 1,
                };
                record.last_message_ts = ts;
                self.store.put_message(&record, &message)?;
                Ok(Reply::Created(to_json(&message)))
            }
            Command::ListMessages {
                thread,
                caller,
                page,
            } => {
                self.visible_thread(&thread, &caller)?;
                page::messages(&self.store, thread.as_str(), &page).map(Reply::Ok)
            }
            Command::GetMessage { thread, caller, id } => {
                let message = self.visible_message(&thread, &caller, &id)?.1;
                Ok(Reply::Ok(to_json(&message)))
            }
            Command::EditMessage {
                thread,
                caller,
                id,
                body,
            } => {
                let (record, mut message) = self.visible_message(&thread, &caller, &id)?;
                message.body = body;
                message.version += 1;
                message.updated_ts = Some(self.tick(message.updated_ts.unwrap_or(message.ts)));
                self.store.put_message(&record, &message)?;
                Ok(Reply::Ok(to_json(&message)))
            }
            Command::DeleteMessage { thread, caller, id } => {
                let (record, mut message) = self.visible_message(&thread, &caller, &id)?;
                message.deleted = true;
                message.updated_ts = Some(self.tick(message.updated_ts.unwrap_or(message.ts)));
                self.store.put_message(&record, &message)?;
                Ok(Reply::Ok(br#"{"deleted":true}"#.to_vec()))
            }
        }
    }

    fn new_thread(
        &self,
        id: &ThreadId,
        author: &str,
        title: String,
        slug: Option<String>,
    ) -> Result<ThreadRecord, EngineError> {
        let ts = self.tick(0);
        let record = ThreadRecord {
            thread: Thread {
                id: id.to_string(),
                title,
                author: author.to_owned(),
                slug,
                created_ts: ts,
                updated_ts: ts,
                deleted: false,
            },
            last_message_ts: 0,
        };
        self.store.put_thread(&record)?;
        Ok(record)
    }

    /// The thread if it exists, is not deleted, and the caller may see it.
    /// Every failure is `ThreadNotFound`, so ids of other users' threads
    /// cannot be probed.
    fn visible_thread(&self, id: &ThreadId, caller: &Caller) -> Result<ThreadRecord, EngineError> {
        match self.store.get_thread(id.as_str())? {
            Some(record) if !record.thread.deleted && caller.may_access(&record.thread.author) => {
                Ok(record)
            }
            _ => Err(EngineError::ThreadNotFound),
        }
    }

    /// A message by its text id, only if it belongs to this thread.
    fn find_message(&self, thread: &ThreadId, id: &str) -> Result<Option<Message>, EngineError> {
        let Some(parsed) = MessageId::parse(id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_message(thread.as_str(), parsed.ts)?
            .filter(|message| message.id == id))
    }

    fn visible_message(
        &self,
        thread: &ThreadId,
        caller: &Caller,
        id: &str,
    ) -> Result<(ThreadRecord, Message), EngineError> {
        let record = self.visible_thread(thread, caller)?;
        match self.find_message(thread, id)? {
            Some(message) if !message.deleted => Ok((record, message)),
            _ => Err(EngineError::MessageNotFound),
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("model types always serialize")
}
