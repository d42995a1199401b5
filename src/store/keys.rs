//! Storage key layout. Integers inside keys are big-endian on purpose, so
//! that byte order equals numeric order and range scans walk time order.
//!
//! ```text
//! threads         <thread_id>                               -> ThreadRecord JSON
//! messages        <thread_id> 0x00 <ts: u64 BE>             -> Message JSON
//! author_threads  <author> 0x00 <created_ts: u64 BE> <thread_id> -> flag + Thread JSON
//! versions        <thread_id> 0x00 <ts: u64 BE> <version: u32 BE> -> Version JSON
//! replies         <thread_id> 0x00 <parent ts: u64 BE> <reply ts: u64 BE> -> empty
//! changes         <thread_id> 0x00 <change ts: u64 BE>       -> message ts (u64 BE)
//! participants    <thread_id> 0x00 <user_id>                  -> flag + Participant JSON
//! member_threads  <user_id> 0x00 <thread_id>                  -> flag
//! ```
//!
//! A removed participant keeps its keys with the deleted flag set (the
//! chat operations only put; keys are removed only by erasure and
//! retention, see `engine::purge`). `member_threads` indexes the threads
//! a user takes part in without owning them, on the shard that owns each
//! thread.
//!
//! ```text
//! erasures        <thread_id>                               -> empty
//! ```
//!
//! An `erasures` key marks a thread whose record is gone and whose other
//! keys are still being removed; its id stays taken until it goes.
//!
//! An author index entry is written when its thread is created and when
//! its deleted flag changes; its JSON is the thread as of then. Listings
//! take the order and the flag from it and render each thread from its
//! record.
//!
//! `changes` records, for every edited, reacted-to, deleted or restored
//! message, the time of that change; a live-tail client that reconnects
//! replays the changes after the last one it saw, merged with the messages
//! created since (a creation's time is the message's own key, so it needs
//! no entry of its own).
//!
//! Thread ids and user ids never contain `0x00` (see `model::ids`), so the
//! separator makes `<id> 0x00` an exact prefix: thread `a` never sees the
//! messages of thread `a0`.

const SEPARATOR: u8 = 0x00;

pub fn thread(thread_id: &str) -> Vec<u8> {
    thread_id.as_bytes().to_vec()
}

/// Prefix shared by every message of a thread.
pub fn message_prefix(thread_id: &str) -> Vec<u8> {
    prefix_with_room(thread_id, 0)
}

/// `<thread_id> 0x00`, with room for `more` bytes after it.
fn prefix_with_room(thread_id: &str, more: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(thread_id.len() + 1 + more);
    key.extend_from_slice(thread_id.as_bytes());
    key.push(SEPARATOR);
    key
}

/// The thread id a `threads` or `messages` key belongs to.
pub fn thread_of(key: &[u8]) -> &[u8] {
    match key.iter().position(|&byte| byte == SEPARATOR) {
        Some(end) => &key[..end],
        None => key,
    }
}

pub fn message(thread_id: &str, ts: u64) -> Vec<u8> {
    let mut key = prefix_with_room(thread_id, 8);
    key.extend_from_slice(&ts.to_be_bytes());
    key
}

/// The timestamp of a message key, or `None` if the key is not one.
pub fn message_ts(thread_id: &str, key: &[u8]) -> Option<u64> {
    let rest = key
        .strip_prefix(thread_id.as_bytes())?
        .strip_prefix(&[SEPARATOR])?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// `<thread_id> 0x00 <a> <b...>`: keys below a thread ordered by `a`, then `b`.
fn thread_key(thread_id: &str, parts: &[&[u8]]) -> Vec<u8> {
    let more = parts.iter().map(|part| part.len()).sum();
    let mut key = prefix_with_room(thread_id, more);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub fn version(thread_id: &str, message_ts: u64, version: u32) -> Vec<u8> {
    thread_key(
        thread_id,
        &[&message_ts.to_be_bytes(), &version.to_be_bytes()],
    )
}

/// Prefix of every stored version of one message.
pub fn versions_prefix(thread_id: &str, message_ts: u64) -> Vec<u8> {
    thread_key(thread_id, &[&message_ts.to_be_bytes()])
}

pub fn reply(thread_id: &str, parent_ts: u64, reply_ts: u64) -> Vec<u8> {
    thread_key(
        thread_id,
        &[&parent_ts.to_be_bytes(), &reply_ts.to_be_bytes()],
    )
}

/// The reply's timestamp from a `replies` key under `parent_prefix`.
pub fn reply_ts(parent_prefix: &[u8], key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.strip_prefix(parent_prefix)?.try_into().ok()?,
    ))
}

pub fn change(thread_id: &str, change_ts: u64) -> Vec<u8> {
    thread_key(thread_id, &[&change_ts.to_be_bytes()])
}

pub fn participant(thread_id: &str, user_id: &str) -> Vec<u8> {
    thread_key(thread_id, &[user_id.as_bytes()])
}

/// The user id of a `participants` key of `thread_id`.
pub fn participant_user<'a>(thread_id: &str, key: &'a [u8]) -> Option<&'a str> {
    let rest = key
        .strip_prefix(thread_id.as_bytes())?
        .strip_prefix(&[SEPARATOR])?;
    std::str::from_utf8(rest).ok()
}

pub fn member_thread(user_id: &str, thread_id: &str) -> Vec<u8> {
    thread_key(user_id, &[thread_id.as_bytes()])
}

pub fn author_prefix(author: &str) -> Vec<u8> {
    message_prefix(author)
}

pub fn author_thread(author: &str, created_ts: u64, thread_id: &str) -> Vec<u8> {
    let mut key = author_prefix(author);
    key.extend_from_slice(&created_ts.to_be_bytes());
    key.extend_from_slice(thread_id.as_bytes());
    key
}

/// `(created_ts, thread_id)` of an author index key.
pub fn author_thread_position(author: &str, key: &[u8]) -> Option<(u64, String)> {
    let rest = key
        .strip_prefix(author.as_bytes())?
        .strip_prefix(&[SEPARATOR])?;
    if rest.len() <= 8 {
        return None;
    }
    let (ts, id) = rest.split_at(8);
    let ts = u64::from_be_bytes(ts.try_into().ok()?);
    Some((ts, String::from_utf8(id.to_vec()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_of_names_the_thread_of_thread_and_message_keys() {
        assert_eq!(thread_of(&thread("general")), b"general");
        assert_eq!(thread_of(&message("general", 0)), b"general");
        assert_eq!(thread_of(&message("a", u64::MAX)), b"a");
    }

    // Guards the on-disk layout: changing it silently orphans stored data.
    #[test]
    fn layout_is_pinned() {
        assert_eq!(message("ab", 0x0102), b"ab\0\0\0\0\0\0\0\x01\x02".to_vec());
        assert_eq!(
            author_thread("u", 1, "t"),
            b"u\0\0\0\0\0\0\0\0\x01t".to_vec()
        );
    }

    #[test]
    fn message_keys_sort_by_ts_and_stay_inside_their_thread() {
        assert!(message("a", 1) < message("a", 256));
        assert!(message("a", u64::MAX) < message_prefix("a0"));
        assert_eq!(message_ts("a", &message("a", 42)), Some(42));
        assert_eq!(message_ts("a", &message("a0", 42)), None);
    }

    #[test]
    fn thread_scoped_keys_sort_by_time() {
        assert_eq!(
            version("t", 1, 2),
            b"t\0\0\0\0\0\0\0\0\x01\0\0\0\x02".to_vec()
        );
        assert!(version("t", 1, 9) < version("t", 2, 1));
        assert!(version("t", 1, 9).starts_with(&versions_prefix("t", 1)));
        let parent = versions_prefix("t", 5);
        assert_eq!(reply_ts(&parent, &reply("t", 5, 77)), Some(77));
        assert!(change("t", 3) < change("t", 256));
    }

    #[test]
    fn participant_keys_stay_inside_their_thread() {
        assert_eq!(participant("t", "bob"), b"t\0bob".to_vec());
        assert_eq!(participant_user("t", &participant("t", "bob")), Some("bob"));
        assert_eq!(participant_user("t0", &participant("t", "bob")), None);
        assert_eq!(member_thread("bob", "t"), b"bob\0t".to_vec());
    }

    #[test]
    fn author_positions_round_trip() {
        let key = author_thread("user-1", 99, "thread-x");
        assert_eq!(
            author_thread_position("user-1", &key),
            Some((99, "thread-x".into()))
        );
        assert_eq!(author_thread_position("user-2", &key), None);
    }
}
