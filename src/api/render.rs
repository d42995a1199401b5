//! The HTTP rendering of the engine's typed answers: each [`Reply`] as the
//! ProgressDB v0.2 contract's JSON (field order, omitted nulls and all),
//! with its status (201 for what a command created).
//!
//! The engine keeps one rendering of its own: a thread's newest page,
//! which the owner renders with [`message_list`] (handed to it in
//! `Command::ListMessages`) and keeps in its first-page cache until the
//! thread's next write, so the most frequent read is sent as cached bytes.
//! Streamed pages (`page_stream`) are framed with [`list_head`] and
//! [`list_tail`] around pieces the owner renders.

use serde::Serialize;

use crate::engine::{
    MessageList, Pagination, ParticipantList, Reply, ShardStats, ThreadEntry, UserThread,
    VersionList,
};

/// The status and body of a reply to a route, `wrap` naming the member a
/// single read is wrapped in (`{"thread":…}`); `None` for a reply no route
/// answers with as it is.
pub fn reply(reply: Reply, wrap: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let status = |created| if created { 201 } else { 200 };
    Some(match reply {
        Reply::Thread { thread, created } => (status(created), object(wrap, &*thread)),
        Reply::Message { message, created } => (status(created), object(wrap, &*message)),
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
        Reply::ReadMarker(marker) => (200, object(None, &*marker)),
        Reply::Stats(_)
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
    let thread = list.thread.as_deref().map(|thread| ("thread", thread));
    let mut out = list_head(thread.as_slice(), "messages");
    out.reserve(list.rows.iter().map(|row| row.len() + 1).sum());
    for (index, row) in list.rows.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(row);
    }
    list_tail(&mut out, &list.pagination);
    out
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

/// `{"threads":[…],"pagination":P}` of merged thread entries.
pub fn thread_list(entries: &[ThreadEntry], flags: (bool, bool), total: u64) -> Vec<u8> {
    let key_of = |entry: Option<&ThreadEntry>| entry.map(|e| e.position.thread_id.clone());
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
        write_user_thread(&mut out, &entry.thread);
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
