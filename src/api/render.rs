//! The HTTP rendering of the engine's typed answers: each [`Reply`] as the
//! ProgressDB v0.2 contract's JSON (field order, omitted nulls and all),
//! with its status (201 for what a command created).
//!
//! The engine keeps one rendering of its own: a thread's newest page,
//! which the owner renders with [`message_list`] (handed to it in
//! `Command::ListMessages`) and keeps in its first-page cache until the
//! thread's next write, so the most frequent read is sent as cached bytes.
//! Streamed pages (`page_stream`) are framed with [`list_head`] and
//! [`list_tail`] around the rows of the pieces the owner answers.

use serde::Serialize;

use crate::engine::{
    MessageList, MessageRow, Pagination, ParticipantList, Reply, ShardStats, ThreadEntry,
    UserThread, VersionList,
};

/// The status and body of a reply to a route, `wrap` naming the member a
/// single read is wrapped in (`{"thread":…}`); `None` for a reply no route
/// answers with as it is.
pub fn reply(reply: Reply, wrap: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let status = |created| if created { 201 } else { 200 };
    Some(match reply {
        Reply::Thread { thread, created } => (status(created), object(wrap, &thread)),
        Reply::Message { message, created } => (status(created), object(wrap, &message)),
        Reply::Participant {
            participant,
            created,
        } => (status(created), participant.to_wire()),
        Reply::UserThread(thread) => {
            let mut out = Vec::with_capacity(256);
            write_user_thread(&mut out, &thread);
            (200, out)
        }
        Reply::Messages(list) => (200, message_list(&list)),
        Reply::Rendered(body) => (200, body),
        Reply::Versions(list) => (200, version_list(&list)),
        Reply::Participants(list) => (200, participant_list(&list)),
        Reply::ParticipantRemoved(user) => {
            let body = serde_json::json!({ "key": user.as_str(), "removed": true });
            (200, body.to_string().into_bytes())
        }
        Reply::ReadMarker(marker) => (200, object(None, &marker)),
        Reply::Stats(_)
        | Reply::Counts { .. }
        | Reply::SealProgress(_)
        | Reply::Done
        | Reply::Threads(_)
        | Reply::Events { .. }
        | Reply::Metrics(_)
        | Reply::Page(_)
        | Reply::Piece(_)
        | Reply::Purged(_) => return None,
    })
}

/// `value`'s JSON, wrapped as `{"<name>":…}` when `wrap` names a member.
fn object<T: Serialize>(wrap: Option<&str>, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    if let Some(name) = wrap {
        out.extend_from_slice(b"{");
        serde_json::to_writer(&mut out, name).expect("strings serialize");
        out.push(b':');
    }
    serde_json::to_writer(&mut out, value).expect("model types serialize");
    if wrap.is_some() {
        out.push(b'}');
    }
    out
}

/// `{"thread":"<key>","messages":[…],"pagination":P}` (replies without
/// `thread`). The engine's first-page cache holds what this renders.
pub fn message_list(list: &MessageList) -> Vec<u8> {
    let thread = list
        .thread
        .as_ref()
        .map(|thread| ("thread", thread.as_str()));
    let mut out = list_head(thread.as_slice(), "messages");
    push_rows(&mut out, &list.rows, false);
    list_tail(&mut out, &list.pagination);
    out
}

/// Appends `rows` comma separated, after a comma when `after_others`.
pub fn push_rows(out: &mut Vec<u8>, rows: &[MessageRow], after_others: bool) {
    out.reserve(rows.iter().map(|row| row.json.len() + 1).sum());
    for (index, row) in rows.iter().enumerate() {
        if after_others || index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&row.json);
    }
}

/// `{"message":"<key>","versions":[…],"pagination":P}`.
fn version_list(list: &VersionList) -> Vec<u8> {
    let mut out = list_head(&[("message", &list.message)], "versions");
    for (index, version) in list.versions.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, version).expect("versions serialize");
    }
    list_tail(&mut out, &list.pagination);
    out
}

/// `{"participants":[…],"pagination":P}`.
fn participant_list(list: &ParticipantList) -> Vec<u8> {
    let mut out = list_head(&[], "participants");
    for (index, participant) in list.participants.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&participant.to_wire());
    }
    list_tail(&mut out, &list.pagination);
    out
}

/// A thread of a listing, as [`thread_list`] writes it.
pub trait ListedThread {
    fn key(&self) -> &str;
    /// Appends the thread's JSON object to `out`.
    fn write(&self, out: &mut Vec<u8>);
}

impl ListedThread for ThreadEntry {
    fn key(&self) -> &str {
        &self.position.thread_id
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_user_thread(out, &self.thread);
    }
}

/// `{"threads":[…],"pagination":P}` of merged thread entries.
pub fn thread_list<T: ListedThread>(entries: &[T], flags: (bool, bool), total: u64) -> Vec<u8> {
    let key_of = |entry: Option<&T>| entry.map(|e| e.key().to_owned());
    let pagination = Pagination::of(
        key_of(entries.first()),
        key_of(entries.last()),
        entries.len(),
        flags,
        total,
    );
    let mut out = list_head(&[], "threads");
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        entry.write(&mut out);
    }
    list_tail(&mut out, &pagination);
    out
}

/// A thread as a user's listing shows it: the thread, then the user's
/// `role` and `unread_count` when they take part in it.
fn write_user_thread(out: &mut Vec<u8>, listed: &UserThread) {
    serde_json::to_writer(&mut *out, &listed.thread).expect("threads serialize");
    if let Some(membership) = &listed.membership {
        // Reopen the object: serde closed it.
        out.pop();
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(membership.role.as_str().as_bytes());
        out.extend_from_slice(b"\",\"unread_count\":");
        out.extend_from_slice(membership.unread_count.to_string().as_bytes());
        out.push(b'}');
    }
}

/// `{<fields>,"<name>":[`: a list up to its first item; `fields` are
/// string-valued members written before the array.
pub fn list_head(fields: &[(&str, &str)], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.push(b'{');
    for (field, value) in fields {
        serde_json::to_writer(&mut out, field).expect("strings serialize");
        out.push(b':');
        serde_json::to_writer(&mut out, value).expect("strings serialize");
        out.push(b',');
    }
    serde_json::to_writer(&mut out, name).expect("strings serialize");
    out.extend_from_slice(b":[");
    out
}

/// Appends `],"pagination":P}`: the end of a list [`list_head`] began.
pub fn list_tail(out: &mut Vec<u8>, pagination: &Pagination) {
    out.extend_from_slice(b"],\"pagination\":");
    serde_json::to_writer(&mut *out, pagination).expect("pagination serializes");
    out.push(b'}');
}

/// One shard's entry of `GET /admin/v1/stats`'s `shards`.
pub fn shard_stats(stats: &ShardStats) -> serde_json::Value {
    let wal = &stats.wal;
    let records_per_fsync = if wal.fsyncs == 0 {
        0.0
    } else {
        wal.records_flushed as f64 / wal.fsyncs as f64
    };
    let requests = &stats.requests;
    serde_json::json!({
        "shard": stats.shard,
        "applied_lsn": stats.applied_lsn,
        "threads": stats.threads,
        "messages": stats.messages,
        "requests": {
            "total": requests.total,
            "per_second_10s": requests.per_second_10s,
            "per_second_60s": requests.per_second_60s,
        },
        "wal": {
            "appends": wal.appends,
            "flushes": wal.flushes,
            "fsyncs": wal.fsyncs,
            "records_flushed": wal.records_flushed,
            "records_per_fsync": records_per_fsync,
            "bytes_written": wal.bytes_written,
            "segments": wal.segments,
            "durable_lsn": wal.durable_lsn,
            "disk_bytes": stats.wal_disk_bytes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Membership, ReadMarker, ThreadPosition};
    use crate::model::{Participant, Role, Thread, ThreadId, UserId};

    fn thread(deleted: bool) -> Thread {
        Thread {
            id: "t1".into(),
            title: "Plans".into(),
            author: "alice".into(),
            slug: None,
            created_ts: 5,
            updated_ts: 7,
            deleted,
            sealed_title: None,
        }
    }

    fn text(reply: Reply, wrap: Option<&str>) -> (u16, String) {
        let (status, body) = super::reply(reply, wrap).expect("a route's reply");
        (status, String::from_utf8(body).unwrap())
    }

    #[test]
    fn single_objects_are_wrapped_and_created_ones_are_201() {
        let plain =
            r#"{"key":"t1","title":"Plans","author":"alice","created_ts":5,"updated_ts":7}"#;
        assert_eq!(
            text(Reply::thread(thread(false), true), None),
            (201, plain.into())
        );
        assert_eq!(
            text(Reply::thread(thread(false), false), Some("thread")),
            (200, format!(r#"{{"thread":{plain}}}"#))
        );
        let marker = ReadMarker {
            thread: "t1".into(),
            last_read: None,
            unread_count: 3,
        };
        assert_eq!(
            text(Reply::ReadMarker(marker), None).1,
            r#"{"key":"t1","last_read":null,"unread_count":3}"#
        );
        let removed = Reply::ParticipantRemoved(UserId::parse("bob").unwrap());
        assert_eq!(text(removed, None).1, r#"{"key":"bob","removed":true}"#);
        let mut bob = Participant::new("bob", Role::Admin, 9, "alice", 4);
        bob.read.posted = 2;
        assert_eq!(
            text(Reply::participant(bob, true), None),
            (
                201,
                r#"{"added_by":"alice","added_ts":9,"role":"admin","user_id":"bob"}"#.into()
            )
        );
    }

    #[test]
    fn listed_threads_carry_the_users_part_after_the_thread() {
        let entry = |thread: Thread, membership| ThreadEntry {
            position: ThreadPosition {
                sort_ts: thread.created_ts,
                thread_id: thread.id.clone(),
            },
            thread: UserThread { thread, membership },
        };
        let member = Membership {
            role: Role::Member,
            unread_count: 2,
        };
        let entries = [
            entry(thread(true), Some(member)),
            entry(thread(false), None),
        ];
        let body = String::from_utf8(thread_list(&entries, (false, true), 9)).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"threads":[{"key":"t1","title":"Plans","author":"alice","created_ts":5,"updated_ts":7,"deleted":true,"role":"member","unread_count":2},"#,
                r#"{"key":"t1","title":"Plans","author":"alice","created_ts":5,"updated_ts":7}],"#,
                r#""pagination":{"before_anchor":"t1","after_anchor":"t1","has_before":false,"has_after":true,"count":2,"total":9}}"#
            )
        );
    }

    #[test]
    fn message_pages_copy_their_rows_between_head_and_pagination() {
        let row = |ts, json: &[u8]| MessageRow {
            ts,
            json: json.to_vec(),
        };
        let list = MessageList {
            thread: ThreadId::parse("t1"),
            rows: vec![row(1, br#"{"key":"a"}"#), row(2, br#"{"key":"b"}"#)],
            pagination: Pagination::of(Some("a".into()), Some("b".into()), 2, (true, false), 5),
        };
        assert_eq!(
            String::from_utf8(message_list(&list)).unwrap(),
            concat!(
                r#"{"thread":"t1","messages":[{"key":"a"},{"key":"b"}],"#,
                r#""pagination":{"before_anchor":"a","after_anchor":"b","has_before":true,"has_after":false,"count":2,"total":5}}"#
            )
        );
        let replies = MessageList::default();
        assert_eq!(
            String::from_utf8(message_list(&replies)).unwrap(),
            r#"{"messages":[],"pagination":{"before_anchor":"","after_anchor":"","has_before":false,"has_after":false,"count":0,"total":0}}"#
        );
    }
}
