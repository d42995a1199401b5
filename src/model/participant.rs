//! Who may use a thread besides its author, and how far each has read.
//!
//! A thread's owner is its author; everyone else it is shared with is a
//! participant with a role. Each participant (the owner included) has one
//! stored record, which also holds that user's read marker and the
//! counters that make their unread count O(1) (see [`Participant::unread`]).

use serde::{Deserialize, Serialize};

/// What a user may do in a thread, most powerful first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The thread's author: everything, and only they delete or restore it.
    Owner,
    /// Adds and removes participants, renames the thread, moderates.
    Admin,
    /// Reads, posts, replies, reacts; edits and deletes their own messages.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Owner and admins manage participants, rename and moderate.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// One participant of one thread, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Participant {
    pub user_id: String,
    pub role: Role,
    /// Nanoseconds since the Unix epoch.
    pub added_ts: u64,
    pub added_by: String,
    /// Storage only: read marker and unread counters.
    #[serde(default)]
    pub read: ReadState,
}

/// A participant's read marker and the counters behind their unread count.
///
/// `mark_*` are taken when the marker was last moved (or when the user
/// joined): the thread's message counter, the user's own post counter,
/// and the exact unread count at that moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// Key of the newest message the user has read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read: Option<String>,
    /// That message's `created_ts`; markers never move back past it.
    #[serde(default)]
    pub last_read_ts: u64,
    /// Messages this user posted in the thread since joining.
    #[serde(default)]
    pub posted: u64,
    #[serde(default)]
    pub mark_all: u64,
    #[serde(default)]
    pub mark_posted: u64,
    #[serde(default)]
    pub mark_unread: u64,
}

impl Participant {
    /// A participant added now; unread counting starts at the thread's
    /// current message counter `thread_all` (history is not unread).
    pub fn new(user_id: &str, role: Role, added_ts: u64, added_by: &str, thread_all: u64) -> Self {
        Participant {
            user_id: user_id.to_owned(),
            role,
            added_ts,
            added_by: added_by.to_owned(),
            read: ReadState {
                mark_all: thread_all,
                ..ReadState::default()
            },
        }
    }

    /// Messages of others posted since the marker was set, plus the exact
    /// count at that moment: `mark_unread + (all - mark_all) - (posted -
    /// mark_posted)`, where `all` is the thread's counter of messages ever
    /// posted. O(1); a message deleted after the marker was set still
    /// counts until the marker is set again (README, "Group chat").
    pub fn unread(&self, thread_all: u64) -> u64 {
        let read = &self.read;
        let new_by_anyone = thread_all.saturating_sub(read.mark_all);
        let new_by_me = read.posted.saturating_sub(read.mark_posted);
        read.mark_unread + new_by_anyone.saturating_sub(new_by_me)
    }

    /// The wire object: `{"user_id","role","added_ts","added_by"}`.
    pub fn to_wire(&self) -> Vec<u8> {
        let wire = serde_json::json!({
            "user_id": self.user_id,
            "role": self.role.as_str(),
            "added_ts": self.added_ts,
            "added_by": self.added_by,
        });
        wire.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_counts_others_since_the_mark() {
        let mut bob = Participant::new("bob", Role::Member, 1, "alice", 10);
        assert_eq!(bob.unread(10), 0);
        // Three new messages, one of them bob's.
        bob.read.posted += 1;
        assert_eq!(bob.unread(13), 2);
        // Bob reads up to a point where one message of others is left.
        bob.read.mark_all = 13;
        bob.read.mark_posted = bob.read.posted;
        bob.read.mark_unread = 1;
        assert_eq!(bob.unread(13), 1);
        assert_eq!(bob.unread(15), 3);
    }

    #[test]
    fn wire_shape_has_no_storage_fields() {
        let carol = Participant::new("carol", Role::Admin, 7, "alice", 0);
        let wire: serde_json::Value = serde_json::from_slice(&carol.to_wire()).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"user_id":"carol","role":"admin","added_ts":7,"added_by":"alice"})
        );
    }
}
