//! The chat data model: identifiers, threads, messages and their JSON shapes.
//!
//! The JSON written to storage is the JSON sent on the wire, so a page of
//! messages is served by concatenating stored values without re-encoding.

mod ids;
mod participant;

pub use ids::{
    ID_BYTES_MAX, MessageId, ThreadId, UserId, decode_base32, encode_base32, is_valid_key,
};
pub use participant::{Participant, ReadState, Role};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

fn is_false(value: &bool) -> bool {
    !*value
}

/// A thread as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thread {
    /// The thread's key (`"key"` on the wire, as the ProgressDB SDKs read
    /// it; data written before v0.2 stored it as `"id"`).
    #[serde(rename = "key", alias = "id")]
    pub id: String,
    pub title: String,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub created_ts: u64,
    /// Nanoseconds since the Unix epoch of the thread's last activity: a
    /// new message or a change of its own fields (title, deletion).
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
    /// The thread's data-encryption key, wrapped by the KMS, for threads
    /// encrypted before keys moved to the key vault (`vault_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dek: Option<crate::crypto::WrappedKey>,
    /// The thread is encrypted and its wrapped key is in the key vault
    /// (`crypto::vault`), never in the data log; no key there means the
    /// thread was erased.
    #[serde(default, skip_serializing_if = "is_false")]
    pub vault_key: bool,
    /// How many messages the thread holds, and how many of them are
    /// soft-deleted: a listing's `total` without a scan. `None` for threads
    /// written before these were kept; counted once when first needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<MessageCounts>,
    /// Participants besides the owner (group chat); bounds their number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub participants: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A thread's message counters, kept by every post, delete and restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub all: u64,
    pub deleted: u64,
}

impl MessageCounts {
    /// Items a listing shows: live ones, or all with `include_deleted`.
    pub fn visible(&self, include_deleted: bool) -> u64 {
        if include_deleted {
            self.all
        } else {
            self.all - self.deleted
        }
    }
}

/// A message as clients see it and as it is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// `"key"` on the wire (`"id"` in data written before v0.2).
    #[serde(rename = "key", alias = "id")]
    pub id: String,
    pub thread: String,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Nanoseconds since the Unix epoch; strictly increasing within a
    /// thread. `"created_ts"` on the wire (`"ts"` before v0.2).
    #[serde(rename = "created_ts", alias = "ts")]
    pub ts: u64,
    /// Any JSON value, kept byte-for-byte as the client sent it.
    pub body: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Nanoseconds since the Unix epoch of the soft deletion, while the
    /// message is deleted: what retention counts from. Absent in data
    /// deleted before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_ts: Option<u64>,
    /// Nanoseconds since the Unix epoch of the last edit of the content
    /// (deleting, restoring and reacting are not edits); the creation time
    /// until the first edit. `None` only in data written before v0.2,
    /// which [`Message::normalize`] fills in on read.
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
    /// Storage only, with field-path encryption: where in `body` values
    /// were sealed (RFC 6901 pointers). Never sent to clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed_fields: Vec<String>,
}

impl Message {
    /// Fills in what data written before v0.2 lacks, so every message on
    /// the wire carries `updated_ts`.
    pub fn normalize(&mut self) {
        self.updated_ts.get_or_insert(self.ts);
    }

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
            sealed_fields: Vec::new(),
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
    /// When this version was written, in nanoseconds since the Unix epoch
    /// (`"created_ts"` on the wire, `"ts"` in data written before v0.2).
    #[serde(rename = "created_ts", alias = "ts")]
    pub ts: u64,
    pub author: String,
    pub body: Box<RawValue>,
    /// Storage only: the sealed body, as on `Message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_body: Option<String>,
    /// Storage only: the sealed fields, as on `Message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed_fields: Vec<String>,
}

fn first_version() -> u32 {
    1
}

/// The wire JSON of a stored message written before v0.2 (`"id"`, `"ts"`,
/// no `updated_ts`), which page scans would otherwise copy as stored;
/// `None` when `json` already has the wire shape, which costs one prefix
/// comparison (serde writes `key` first).
pub fn upgrade_legacy_message(json: &[u8]) -> Option<Vec<u8>> {
    if !json.starts_with(br#"{"id":"#) {
        return None;
    }
    let mut message: Message = serde_json::from_slice(json).ok()?;
    message.normalize();
    serde_json::to_vec(&message).ok()
}

/// What opening a stored message's sealed body needs, borrowed from its
/// JSON without building a [`Message`] (pages open many of them).
#[derive(Deserialize)]
pub struct SealedMessageRef<'a> {
    #[serde(borrow, rename = "key", alias = "id")]
    pub id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub thread: std::borrow::Cow<'a, str>,
    #[serde(rename = "created_ts", alias = "ts")]
    pub ts: u64,
    #[serde(default = "first_version")]
    pub version: u32,
    #[serde(borrow, default)]
    pub sealed_body: Option<std::borrow::Cow<'a, str>>,
    /// Non-empty when values of the body were sealed one by one.
    #[serde(default)]
    pub sealed_fields: Vec<serde::de::IgnoredAny>,
}

/// A stored sealed message's JSON with `body` set to the opened `body` and
/// `sealed_body` gone: the bytes serde would write for the opened
/// [`Message`], made without parsing it. That works because serde writes a
/// `Message` compactly and in field order, so `ts` is directly followed by
/// `"body":null` and `sealed_body` is the last field; neither pattern can
/// occur inside a string, whose quotes are escaped. `None` when `json` is
/// not laid out that way (as data written before v0.2 is not); the caller
/// then takes the parsing path.
pub fn splice_opened_body(json: &[u8], ts: u64, sealed: &str, body: &[u8]) -> Option<Vec<u8>> {
    let head = json.strip_suffix(format!(",\"sealed_body\":\"{sealed}\"}}").as_bytes())?;
    let marker = format!(",\"created_ts\":{ts},\"body\":null");
    // Compared only where a field starts: a comparison per byte would cost
    // more than the rest of the splice.
    let marker_at = (0..=head.len().checked_sub(marker.len())?)
        .find(|&at| head[at] == b',' && head[at..].starts_with(marker.as_bytes()))?;
    let null_at = marker_at + marker.len() - b"null".len();
    // As `RawValue` does: surrounding whitespace is not part of the value.
    let body = body.trim_ascii();
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(&head[..null_at]);
    out.extend_from_slice(body);
    out.extend_from_slice(&head[null_at + b"null".len()..]);
    out.push(b'}');
    Some(out)
}

/// A live thread record owned by alice, for tests.
#[cfg(test)]
pub fn example_record(id: &str) -> ThreadRecord {
    ThreadRecord {
        thread: Thread {
            id: id.into(),
            title: format!("title {id}"),
            author: "alice".into(),
            slug: None,
            created_ts: 1,
            updated_ts: 1,
            deleted: false,
            sealed_title: None,
        },
        last_message_ts: 0,
        dek: None,
        vault_key: false,
        counts: None,
        participants: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    /// The opened message as serde renders it: what the splice must equal.
    fn opened_by_parsing(stored: &[u8], body: &str) -> Vec<u8> {
        let mut message: Message = serde_json::from_slice(stored).unwrap();
        message.body = raw(body);
        message.sealed_body = None;
        serde_json::to_vec(&message).unwrap()
    }

    #[test]
    fn splicing_an_opened_body_matches_parsing() {
        // Strings that contain the splice's own patterns, escaped.
        let tricky = r#"a","ts":5,"body":null,"sealed_body":"ab"}"#;
        let mut message = Message {
            id: "m1".into(),
            thread: "t1".into(),
            author: tricky.into(),
            role: Some("user".into()),
            ts: 5,
            body: raw("null"),
            reply_to: Some("m0".into()),
            deleted: true,
            deleted_ts: Some(8),
            updated_ts: Some(9),
            version: 3,
            edited_by: Some(tricky.into()),
            reactions: BTreeMap::from([(tricky.to_string(), "👍".to_string())]),
            reaction_counts: BTreeMap::from([("body".to_string(), 1)]),
            sealed_body: Some("00ff".into()),
            sealed_fields: Vec::new(),
        };
        for body in [r#"{"text":"hi"}"#, r#" [1, "two"] "#, "7"] {
            let stored = serde_json::to_vec(&message).unwrap();
            let spliced = splice_opened_body(&stored, 5, "00ff", body.as_bytes())
                .expect("the layout serde writes");
            assert_eq!(
                String::from_utf8(spliced).unwrap(),
                String::from_utf8(opened_by_parsing(&stored, body)).unwrap()
            );
            let view: SealedMessageRef = serde_json::from_slice(&stored).unwrap();
            assert_eq!((view.id.as_ref(), view.ts, view.version), ("m1", 5, 3));
            assert_eq!(view.sealed_body.as_deref(), Some("00ff"));
        }
        // The smallest message: no optional fields.
        message.role = None;
        message.reply_to = None;
        message.deleted = false;
        message.deleted_ts = None;
        message.updated_ts = None;
        message.edited_by = None;
        message.reactions.clear();
        message.reaction_counts.clear();
        let stored = serde_json::to_vec(&message).unwrap();
        assert_eq!(
            splice_opened_body(&stored, 5, "00ff", b"1").unwrap(),
            opened_by_parsing(&stored, "1")
        );
        // Anything else is refused, not guessed at.
        assert_eq!(splice_opened_body(&stored, 6, "00ff", b"1"), None);
        assert_eq!(splice_opened_body(&stored, 5, "00fe", b"1"), None);
        assert_eq!(splice_opened_body(b"{}", 5, "00ff", b"1"), None);
    }
}
