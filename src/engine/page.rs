//! Cursor pagination over a thread's timeline and an author's threads.
//!
//! Positions are keys, not offsets: a page "older than message X" is a range
//! scan that starts at X's timestamp, so messages arriving or being edited
//! between pages never shift what the next page returns.
//!
//! Message cursors are message ids. `next_cursor` continues in the page's
//! display order (pass it as `before` for newest-first pages, as `after` for
//! oldest-first), `prev_cursor` goes the other way.

use std::ops::Bound;

use super::command::{
    AllThreadsPage, EngineError, MessagePage, MessagePosition, Order, ThreadEntry, ThreadPage,
    ThreadPosition,
};
use crate::model::{MessageId, ThreadRecord};
use crate::store::{Direction, Store};

/// Messages of one side of a position, in scan order.
struct Side {
    items: Vec<(u64, Vec<u8>)>,
    /// More messages exist past the last item scanned.
    more: bool,
}

fn scan(
    store: &Store,
    thread: &str,
    range: (Bound<u64>, Bound<u64>),
    direction: Direction,
    limit: usize,
    include_deleted: bool,
) -> Result<Side, EngineError> {
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    store.scan_messages(thread, range, direction, |ts, deleted, json| {
        if deleted && !include_deleted {
            return Ok(true);
        }
        if items.len() == limit {
            more = true;
            return Ok(false);
        }
        items.push((ts, json.to_vec()));
        Ok(true)
    })?;
    Ok(Side { items, more })
}

/// The timestamp of a cursor message, which must exist in this thread.
fn cursor_ts(store: &Store, thread: &str, id: &MessageId) -> Result<u64, EngineError> {
    match store.get_message(thread, id.ts)? {
        Some(message) if message.id == id.to_string() => Ok(id.ts),
        _ => Err(EngineError::InvalidCursor),
    }
}

/// Renders one page of a thread's messages as the list envelope.
/// Turns a stored item's JSON into what a client sees (opens sealed
/// fields); `None` when stored JSON is already that.
pub type Reveal<'a> = Option<&'a dyn Fn(&[u8]) -> Result<Vec<u8>, EngineError>>;

/// An owned `Reveal` function.
pub type RevealFn<'a> = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, EngineError> + 'a>;

fn reveal_all<T>(items: &mut [(T, Vec<u8>)], reveal: Reveal) -> Result<(), EngineError> {
    if let Some(reveal) = reveal {
        for (_, json) in items.iter_mut() {
            *json = reveal(json)?;
        }
    }
    Ok(())
}

pub fn messages(
    store: &Store,
    thread: &str,
    page: &MessagePage,
    reveal: Reveal,
) -> Result<Vec<u8>, EngineError> {
    let all = (Bound::Unbounded, Bound::Unbounded);
    // Items oldest first, plus whether more exist beyond each end.
    let (ascending, more_older, more_newer) = match page.position {
        MessagePosition::End => {
            let direction = match page.order {
                Order::NewestFirst => Direction::Descending,
                Order::OldestFirst => Direction::Ascending,
            };
            let side = scan(
                store,
                thread,
                all,
                direction,
                page.limit,
                page.include_deleted,
            )?;
            match page.order {
                Order::NewestFirst => (reversed(side.items), side.more, false),
                Order::OldestFirst => (side.items, false, side.more),
            }
        }
        MessagePosition::Before(id) => {
            let ts = cursor_ts(store, thread, &id)?;
            let range = (Bound::Unbounded, Bound::Excluded(ts));
            let side = scan(
                store,
                thread,
                range,
                Direction::Descending,
                page.limit,
                page.include_deleted,
            )?;
            (reversed(side.items), side.more, true)
        }
        MessagePosition::After(id) => {
            let ts = cursor_ts(store, thread, &id)?;
            let range = (Bound::Excluded(ts), Bound::Unbounded);
            let side = scan(
                store,
                thread,
                range,
                Direction::Ascending,
                page.limit,
                page.include_deleted,
            )?;
            (side.items, true, side.more)
        }
        MessagePosition::Anchor(id) => {
            let ts = cursor_ts(store, thread, &id)?;
            let older_limit = (page.limit - 1) / 2;
            let older = scan(
                store,
                thread,
                (Bound::Unbounded, Bound::Excluded(ts)),
                Direction::Descending,
                older_limit,
                page.include_deleted,
            )?;
            let newer = scan(
                store,
                thread,
                (Bound::Included(ts), Bound::Unbounded),
                Direction::Ascending,
                page.limit - older.items.len(),
                page.include_deleted,
            )?;
            let mut items = reversed(older.items);
            items.extend(newer.items);
            (items, older.more, newer.more)
        }
    };
    let (mut items, more_next, more_prev) = match page.order {
        Order::NewestFirst => (reversed(ascending), more_older, more_newer),
        Order::OldestFirst => (ascending, more_newer, more_older),
    };
    reveal_all(&mut items, reveal)?;
    let cursor_of = |item: Option<&(u64, Vec<u8>)>, wanted: bool| -> Option<String> {
        let (_, json) = item.filter(|_| wanted)?;
        message_id_of(json)
    };
    let next_cursor = cursor_of(items.last(), more_next);
    let prev_cursor = cursor_of(items.first(), more_prev);
    Ok(envelope(
        items.iter().map(|(_, json)| json.as_slice()),
        next_cursor.is_some(),
        next_cursor.as_deref(),
        prev_cursor.as_deref(),
    ))
}

fn reversed<T>(mut items: Vec<T>) -> Vec<T> {
    items.reverse();
    items
}

/// The `id` field of a stored message, read without decoding the body.
fn message_id_of(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_slice::<IdOnly>(json).ok().map(|m| m.id)
}

/// `{"data":[...],"pagination":{...}}` from already-encoded items.
pub fn envelope<'a>(
    items: impl Iterator<Item = &'a [u8]>,
    has_more: bool,
    next_cursor: Option<&str>,
    prev_cursor: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"data\":[");
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"],\"pagination\":");
    let pagination = serde_json::json!({
        "has_more": has_more,
        "next_cursor": next_cursor,
        "prev_cursor": prev_cursor,
    });
    let mut pagination = pagination;
    if let Some(map) = pagination.as_object_mut() {
        map.retain(|_, value| !value.is_null());
    }
    serde_json::to_writer(&mut out, &pagination).expect("json values always serialize");
    out.push(b'}');
    out
}

/// One shard's part of a thread listing: up to `limit + 1` live threads
/// past the position, so the merging caller can tell whether more exist.
pub fn threads(
    store: &Store,
    page: &ThreadPage,
    reveal: Reveal,
) -> Result<Vec<ThreadEntry>, EngineError> {
    let direction = match page.order {
        Order::NewestFirst => Direction::Descending,
        Order::OldestFirst => Direction::Ascending,
    };
    let after = page
        .after
        .as_ref()
        .map(|position| (position.created_ts, position.thread_id.as_str()));
    let wanted = page.limit + 1;
    let mut entries = Vec::with_capacity(wanted.min(1024));
    store.scan_author_threads(
        page.author.as_str(),
        after,
        direction,
        |created_ts, id, deleted, json| {
            if page.include_deleted || !deleted {
                entries.push(ThreadEntry {
                    position: ThreadPosition {
                        created_ts,
                        thread_id: id.to_owned(),
                    },
                    json: json.to_vec(),
                });
            }
            Ok(entries.len() < wanted)
        },
    )?;
    if let Some(reveal) = reveal {
        for entry in &mut entries {
            entry.json = reveal(&entry.json)?;
        }
    }
    Ok(entries)
}

/// One shard's part of the admin listing: up to `limit + 1` threads in id
/// order past `page.after`, so the merging caller can tell whether more
/// exist. `render` turns a stored record into the thread's JSON.
pub fn all_threads(
    store: &Store,
    page: &AllThreadsPage,
    render: &dyn Fn(ThreadRecord) -> Result<Vec<u8>, EngineError>,
) -> Result<Vec<ThreadEntry>, EngineError> {
    let direction = match page.order {
        Order::NewestFirst => Direction::Descending,
        Order::OldestFirst => Direction::Ascending,
    };
    let wanted = page.limit + 1;
    let mut records = Vec::with_capacity(wanted.min(1024));
    store.scan_threads(
        &page.id_prefix,
        page.after.as_deref(),
        direction,
        |_, record| {
            if page.include_deleted || !record.thread.deleted {
                records.push(record);
            }
            Ok(records.len() < wanted)
        },
    )?;
    records
        .into_iter()
        .map(|record| {
            let position = ThreadPosition {
                created_ts: record.thread.created_ts,
                thread_id: record.thread.id.clone(),
            };
            Ok(ThreadEntry {
                position,
                json: render(record)?,
            })
        })
        .collect()
}

/// One page of the direct replies to the message at `parent_ts`. Replies
/// page forward only: from the start in the page's order, then past
/// `next_cursor` (`after` oldest-first, `before` newest-first).
pub fn replies(
    store: &Store,
    thread: &str,
    parent_ts: u64,
    page: &MessagePage,
    reveal: Reveal,
) -> Result<Vec<u8>, EngineError> {
    let direction = match page.order {
        Order::NewestFirst => Direction::Descending,
        Order::OldestFirst => Direction::Ascending,
    };
    let mut after = match (page.order, page.position) {
        (_, MessagePosition::End) => None,
        (Order::OldestFirst, MessagePosition::After(id))
        | (Order::NewestFirst, MessagePosition::Before(id)) => Some(cursor_ts(store, thread, &id)?),
        _ => return Err(EngineError::InvalidCursor),
    };
    let wanted = page.limit + 1;
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    // Deleted replies are skipped, so fetch in rounds until a page is full.
    loop {
        let batch = store.replies(thread, parent_ts, after, direction, wanted)?;
        let exhausted = batch.len() < wanted;
        for ts in batch {
            after = Some(ts);
            let Some(message) = store.get_message(thread, ts)? else {
                continue;
            };
            if message.deleted && !page.include_deleted {
                continue;
            }
            if items.len() < wanted {
                ids.push(message.id.clone());
                let json = serde_json::to_vec(&message).expect("messages serialize");
                items.push(match reveal {
                    Some(reveal) => reveal(&json)?,
                    None => json,
                });
            }
        }
        if exhausted || items.len() >= wanted {
            break;
        }
    }
    let has_more = items.len() > page.limit;
    items.truncate(page.limit);
    let next_cursor = if has_more {
        ids.get(page.limit - 1).cloned()
    } else {
        None
    };
    Ok(envelope(
        items.iter().map(Vec::as_slice),
        has_more,
        next_cursor.as_deref(),
        None,
    ))
}
