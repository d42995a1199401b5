//! The chat data model: identifiers, threads, messages and their JSON shapes.
//!
//! The JSON written to storage is the JSON sent on the wire, so a page of
//! messages is served by concatenating stored values without re-encoding.

mod ids;

pub use ids::{
    ID_BYTES_MAX, MessageId, ThreadId, UserId, decode_base32, encode_base32, is_valid_key,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

fn is_false(value: &bool) -> bool {
    !*value
}

/// A thread as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thread {
    pub id: String,
    pub title: String,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub created_ts: u64,
    /// Nanoseconds since the Unix epoch of the last change to the thread's
    /// own fields (title, deletion).
    pub updated_ts: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Storage only, with encryption on: the title sealed with the thread's
    /// key (`title` is then empty). Never sent to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_title: Option<String>,
}

/// What the owning shard stores for a thread: the public fields plus the
/// timestamp of its newest message, which keeps message timestamps strictly
/// increasing across restarts even if the wall clock steps back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub thread: Thread,
    pub last_message_ts: u64,
    /// The thread's data-encryption key, wrapped by the KMS; present when
    /// the thread was created with encryption on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dek: Option<crate::crypto::WrappedKey>,
}

/// A message as clients see it and as it is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub thread: String,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Nanoseconds since the Unix epoch; strictly increasing within a thread.
    pub ts: u64,
    /// Any JSON value, kept byte-for-byte as the client sent it.
    pub body: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Nanoseconds since the Unix epoch of the last edit of the content
    /// (deleting, restoring and reacting are not edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_ts: Option<u64>,
    /// 1 for the original content, incremented by every edit.
    #[serde(default = "first_version")]
    pub version: u32,
    /// Who made the current version, when it is not the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_by: Option<String>,
    /// Each user's reaction: user id -> reaction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, String>,
    /// How many users gave each reaction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reaction_counts: BTreeMap<String, u32>,
    /// Storage only, with encryption on: the body sealed with the thread's
    /// key (`body` is then `null`). Never sent to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_body: Option<String>,
}

impl Message {
    /// The current content as a version entry.
    pub fn current_version(&self) -> Version {
        Version {
            version: self.version,
            ts: if self.version == 1 {
                self.ts
            } else {
                self.updated_ts.unwrap_or(self.ts)
            },
            author: self
                .edited_by
                .clone()
                .unwrap_or_else(|| self.author.clone()),
            body: self.body.clone(),
            sealed_body: None,
        }
    }

    /// Sets (or with `None` removes) `user`'s reaction, keeping counts exact.
    pub fn set_reaction(&mut self, user: &str, reaction: Option<String>) {
        if let Some(old) = self.reactions.remove(user)
            && let Some(count) = self.reaction_counts.get_mut(&old)
        {
            *count -= 1;
            if *count == 0 {
                self.reaction_counts.remove(&old);
            }
        }
        if let Some(reaction) = reaction {
            *self.reaction_counts.entry(reaction.clone()).or_insert(0) += 1;
            self.reactions.insert(user.to_owned(), reaction);
        }
    }
}

/// One past content of a message, as `.../versions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    /// When this version was written, in nanoseconds since the Unix epoch.
    pub ts: u64,
    pub author: String,
    pub body: Box<RawValue>,
    /// Storage only: the sealed body, as on `Message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_body: Option<String>,
}

fn first_version() -> u32 {
    1
}
