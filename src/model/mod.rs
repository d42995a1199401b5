//! The chat data model: identifiers, threads, messages and their JSON shapes.
//!
//! The JSON written to storage is the JSON sent on the wire, so a page of
//! messages is served by concatenating stored values without re-encoding.

mod ids;

pub use ids::{
    ID_BYTES_MAX, MessageId, ThreadId, UserId, decode_base32, encode_base32, is_valid_key,
};

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
}

/// What the owning shard stores for a thread: the public fields plus the
/// timestamp of its newest message, which keeps message timestamps strictly
/// increasing across restarts even if the wall clock steps back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub thread: Thread,
    pub last_message_ts: u64,
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
    /// Nanoseconds since the Unix epoch of the last edit or deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_ts: Option<u64>,
    /// 1 for the original content, incremented by every edit.
    #[serde(default = "first_version")]
    pub version: u32,
}

fn first_version() -> u32 {
    1
}
