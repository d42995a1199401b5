//! Pages of a thread's timeline, an author's threads and a message's
//! replies, with the ProgressDB v0.2 contract's pagination; front ends
//! render them.
//!
//! Positions are keys, not offsets: a page "older than message X" is a range
//! scan that starts at X's timestamp, so messages arriving or being edited
//! between pages never shift what the next page returns. Message pages are
//! always oldest first; `before_anchor` is a page's first key and
//! `after_anchor` its last, which is where the previous and next pages start.
//!
//! A page of messages or replies too large to answer whole (for a caller
//! that takes it in pieces) is only planned ([`Scanned::Planned`]: where
//! its messages are), then answered a [`piece`] at a time while it is sent.

use std::ops::Bound;

use super::command::{
    AllThreadsPage, EngineError, MessagePage, MessagePosition, Order, ThreadPage, ThreadPosition,
};
use super::reply::{MessageList, MessageRow, ThreadEntry, UserThread};
use crate::model::{MessageId, Thread, ThreadRecord, upgrade_legacy_message};
use crate::store::{Direction, Store};

/// Bytes of stored JSON one page (or one side of an anchor page) may
/// hold. A page stops early at this size, with `has_before` / `has_after`
/// saying more exist and its anchors where to go on. At least one item is
/// always listed, so a page is at most this or one message, whichever is
/// larger. A page of messages or replies this large is streamed, so
/// memory does not need the cap; it bounds the scan that plans such a
/// page, which reads it whole in one step on the shard.
pub const PAGE_BYTES_MAX: usize = 4 << 20;

/// Stored bytes of a page the owning shard renders whole, as one body. A
/// larger page of a caller that takes pages in pieces (HTTP) is only
/// planned here and then rendered [`PIECE_BYTES_MAX`] at a time, while the
/// client reads it, so neither shard nor connection holds the whole page.
pub const PAGE_WHOLE_BYTES_MAX: usize = 256 << 10;

/// Stored bytes of messages one piece of a streamed page renders; a piece
/// holds at least one message, so it is at most this or one message.
pub const PIECE_BYTES_MAX: usize = 128 << 10;

/// How much one scan may take: items and bytes; and how many bytes of
/// items it keeps before it only notes where they are (the page streams).
#[derive(Debug, Clone, Copy)]
struct Budget {
    items: usize,
    bytes: usize,
    keep: usize,
}

impl Budget {
    fn items(items: usize) -> Budget {
        Budget {
            items,
            bytes: PAGE_BYTES_MAX,
            keep: usize::MAX,
        }
    }

    /// A page's budget: one that may stream keeps only a whole page's bytes.
    fn page(items: usize, in_pieces: bool) -> Budget {
        Budget {
            keep: if in_pieces {
                PAGE_WHOLE_BYTES_MAX
            } else {
                usize::MAX
            },
            ..Budget::items(items)
        }
    }

    /// Whether an item of `size` bytes no longer fits after `taken` items
    /// of `bytes` in all; the first item always fits.
    fn full(&self, taken: usize, bytes: usize, size: usize) -> bool {
        taken == self.items || (taken > 0 && bytes.saturating_add(size) > self.bytes)
    }
}

/// Messages of one side of a position, in scan order.
struct Side {
    /// The listed messages scanned; empty when `kept` is false.
    items: Vec<(u64, Vec<u8>)>,
    /// More messages exist past the last item scanned.
    more: bool,
    /// Timestamps of the first and last listed message scanned.
    ends: Option<(u64, u64)>,
    /// Whether `items` holds every listed message scanned: false once they
    /// outgrew the budget's `keep`, and the page streams instead.
    kept: bool,
}

impl Side {
    /// The side in the opposite order.
    fn reversed(mut self) -> Side {
        self.items.reverse();
        self.ends = self.ends.map(|(first, last)| (last, first));
        self
    }
}

fn scan(
    store: &Store,
    thread: &str,
    range: (Bound<u64>, Bound<u64>),
    direction: Direction,
    budget: Budget,
    include_deleted: bool,
) -> Result<Side, EngineError> {
    let mut side = Side {
        items: Vec::with_capacity(budget.items.min(1024)),
        more: false,
        ends: None,
        kept: true,
    };
    let (mut taken, mut bytes) = (0usize, 0usize);
    store.scan_messages(thread, range, direction, |ts, deleted, json| {
        if deleted && !include_deleted {
            return Ok(true);
        }
        if budget.full(taken, bytes, json.len()) {
            side.more = true;
            return Ok(false);
        }
        taken += 1;
        bytes += json.len();
        side.ends = Some((side.ends.map_or(ts, |(first, _)| first), ts));
        if side.kept && bytes > budget.keep {
            // Only the page's bounds are needed now; free what was kept.
            side.kept = false;
            side.items = Vec::new();
        }
        if side.kept {
            let json = upgrade_legacy_message(json).unwrap_or_else(|| json.to_vec());
            side.items.push((ts, json));
        }
        Ok(true)
    })?;
    Ok(side)
}

/// Whether a listed message exists in `range`.
fn any_in(
    store: &Store,
    thread: &str,
    range: (Bound<u64>, Bound<u64>),
    direction: Direction,
    include_deleted: bool,
) -> Result<bool, EngineError> {
    Ok(scan(
        store,
        thread,
        range,
        direction,
        Budget::items(0),
        include_deleted,
    )?
    .more)
}

/// The timestamp of a cursor message, which must exist in this thread.
fn cursor_ts(store: &Store, thread: &str, id: &MessageId) -> Result<u64, EngineError> {
    match store.get_message(thread, id.ts)? {
        Some(message) if message.id == id.to_string() => Ok(id.ts),
        _ => Err(EngineError::InvalidCursor),
    }
}

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

/// The contract's pagination object `P`; every field is always sent.
#[derive(Debug, Default, serde::Serialize)]
pub struct Pagination {
    /// Key of the page's first item; empty on an empty page.
    pub before_anchor: String,
    /// Key of the page's last item; empty on an empty page.
    pub after_anchor: String,
    pub has_before: bool,
    pub has_after: bool,
    pub count: usize,
    /// Listed items in the whole list, not only this page.
    pub total: u64,
}

impl Pagination {
    /// `P` of a page whose first and last keys are `first` and `last`.
    pub fn of(
        first: Option<String>,
        last: Option<String>,
        count: usize,
        (has_before, has_after): (bool, bool),
        total: u64,
    ) -> Pagination {
        Pagination {
            before_anchor: first.unwrap_or_default(),
            after_anchor: last.unwrap_or_default(),
            has_before,
            has_after,
            count,
            total,
        }
    }
}

/// A page's sides oldest first (each oldest first), and whether listed
/// messages exist before (older) and after (newer) it.
type MessageSides = (Vec<Side>, bool, bool);

fn message_sides(
    store: &Store,
    thread: &str,
    page: &MessagePage,
    in_pieces: bool,
) -> Result<MessageSides, EngineError> {
    let (limit, deleted) = (Budget::page(page.limit, in_pieces), page.include_deleted);
    let all = (Bound::Unbounded, Bound::Unbounded);
    Ok(match page.position {
        MessagePosition::End => {
            let side = scan(store, thread, all, Direction::Descending, limit, deleted)?;
            let more = side.more;
            (vec![side.reversed()], more, false)
        }
        MessagePosition::Start => {
            let side = scan(store, thread, all, Direction::Ascending, limit, deleted)?;
            let more = side.more;
            (vec![side], false, more)
        }
        MessagePosition::Before(id) => {
            let ts = cursor_ts(store, thread, &id)?;
            let older = (Bound::Unbounded, Bound::Excluded(ts));
            let side = scan(store, thread, older, Direction::Descending, limit, deleted)?;
            let newer = (Bound::Included(ts), Bound::Unbounded);
            let has_after = any_in(store, thread, newer, Direction::Ascending, deleted)?;
            let more = side.more;
            (vec![side.reversed()], more, has_after)
        }
        MessagePosition::After(id) => {
            let ts = cursor_ts(store, thread, &id)?;
            let newer = (Bound::Excluded(ts), Bound::Unbounded);
            let side = scan(store, thread, newer, Direction::Ascending, limit, deleted)?;
            let older = (Bound::Unbounded, Bound::Included(ts));
            let has_before = any_in(store, thread, older, Direction::Descending, deleted)?;
            let more = side.more;
            (vec![side], has_before, more)
        }
        MessagePosition::Anchor(id) => anchor_sides(store, thread, &id, limit, deleted)?,
    })
}

/// The sides of an anchor page: older, the anchor itself, newer.
fn anchor_sides(
    store: &Store,
    thread: &str,
    id: &MessageId,
    limit: Budget,
    deleted: bool,
) -> Result<MessageSides, EngineError> {
    let ts = cursor_ts(store, thread, id)?;
    let (older, itself, newer) = (
        (Bound::Unbounded, Bound::Excluded(ts)),
        (Bound::Included(ts), Bound::Included(ts)),
        (Bound::Excluded(ts), Bound::Unbounded),
    );
    // Each side gets half the bytes, so the page stays in budget.
    let side = Budget {
        bytes: PAGE_BYTES_MAX / 2,
        keep: limit.keep / 2,
        ..limit
    };
    let older = scan(store, thread, older, Direction::Descending, side, deleted)?;
    let itself = scan(
        store,
        thread,
        itself,
        Direction::Ascending,
        Budget::items(1),
        deleted,
    )?;
    let newer = scan(store, thread, newer, Direction::Ascending, side, deleted)?;
    let flags = (older.more, newer.more);
    Ok((vec![older.reversed(), itself, newer], flags.0, flags.1))
}

/// What [`messages`] made of a page.
#[derive(Debug)]
pub enum Scanned {
    /// The whole page.
    Whole(MessageList),
    /// A page too large to answer whole: where it is, for [`piece`] to
    /// answer in order.
    Planned(PagePlan),
}

/// A page to render in pieces. Between pieces the page is found again by
/// key, not held open: a message edited or deleted meanwhile shows as it
/// is when its piece is rendered, and `count` and the anchors describe
/// what was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePlan {
    pub keys: PageKeys,
    pub has_before: bool,
    pub has_after: bool,
    /// Listed items in the whole list (the pagination's `total`).
    pub total: u64,
}

/// Where the messages of a planned page (or of its rest) are, oldest
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageKeys {
    /// The listed messages between two timestamps, both included.
    Range(u64, u64),
    /// The messages at these timestamps (replies, found through the reply
    /// index), at most a page's `limit` of them.
    Listed(Vec<u64>),
}

/// One page of a thread's messages, oldest first (the caller names the
/// thread, [`MessageList::thread`]); `total` is the
/// thread's listed message count, kept by the caller. With `in_pieces`, a
/// page over [`PAGE_WHOLE_BYTES_MAX`] is only planned.
pub fn messages(
    store: &Store,
    thread: &str,
    (page, in_pieces): (&MessagePage, bool),
    total: u64,
    reveal: Reveal,
) -> Result<Scanned, EngineError> {
    let (sides, has_before, has_after) = message_sides(store, thread, page, in_pieces)?;
    let range = sides
        .iter()
        .filter_map(|side| side.ends)
        .map(|(first, last)| (first.min(last), first.max(last)))
        .reduce(|(low, high), (first, last)| (low.min(first), high.max(last)));
    // A side that dropped its items scanned some, so the range is known.
    if let Some((low, high)) = range
        && sides.iter().any(|side| !side.kept)
    {
        return Ok(Scanned::Planned(PagePlan {
            keys: PageKeys::Range(low, high),
            has_before,
            has_after,
            total,
        }));
    }
    let mut items: Items = sides.into_iter().flat_map(|side| side.items).collect();
    reveal_all(&mut items, reveal)?;
    Ok(Scanned::Whole(message_list(
        items,
        (has_before, has_after),
        total,
    )))
}

/// Part of a streamed page: listed messages, oldest first.
#[derive(Debug, Default)]
pub struct Piece {
    pub rows: Vec<MessageRow>,
    /// Keys of the piece's first and last message.
    pub first_key: Option<String>,
    pub last_key: Option<String>,
    /// The rest of the page, when some is left to render.
    pub rest: Option<PageKeys>,
}

/// The first listed messages of `keys`, up to [`PIECE_BYTES_MAX`] of JSON
/// and at least one.
pub fn piece(
    store: &Store,
    thread: &str,
    keys: PageKeys,
    include_deleted: bool,
    reveal: Reveal,
) -> Result<Piece, EngineError> {
    let (mut items, rest) = match keys {
        PageKeys::Range(from, to) => range_piece(store, thread, (from, to), include_deleted)?,
        PageKeys::Listed(timestamps) => listed_piece(store, thread, timestamps, include_deleted)?,
    };
    reveal_all(&mut items, reveal)?;
    Ok(Piece {
        first_key: key_of(items.first()),
        last_key: key_of(items.last()),
        rest,
        rows: rows(items),
    })
}

/// A piece's budget: no item count, [`PIECE_BYTES_MAX`] of JSON.
const PIECE: Budget = Budget {
    items: usize::MAX,
    bytes: PIECE_BYTES_MAX,
    keep: usize::MAX,
};

fn range_piece(
    store: &Store,
    thread: &str,
    (from, to): (u64, u64),
    include_deleted: bool,
) -> Result<(Items, Option<PageKeys>), EngineError> {
    let bounds = (Bound::Included(from), Bound::Included(to));
    let side = scan(
        store,
        thread,
        bounds,
        Direction::Ascending,
        PIECE,
        include_deleted,
    )?;
    // Timestamps are unique in a thread and never u64::MAX.
    let rest = side
        .more
        .then(|| side.items.last().map(|(ts, _)| PageKeys::Range(ts + 1, to)))
        .flatten();
    Ok((side.items, rest))
}

fn listed_piece(
    store: &Store,
    thread: &str,
    timestamps: Vec<u64>,
    include_deleted: bool,
) -> Result<(Items, Option<PageKeys>), EngineError> {
    let (mut items, mut bytes) = (Vec::new(), 0usize);
    for (index, &ts) in timestamps.iter().enumerate() {
        let Some(json) = listed_message(store, thread, ts, include_deleted)? else {
            continue;
        };
        if PIECE.full(items.len(), bytes, json.len()) {
            return Ok((items, Some(PageKeys::Listed(timestamps[index..].to_vec()))));
        }
        bytes += json.len();
        items.push((ts, json));
    }
    Ok((items, None))
}

/// The message at `ts` as a list shows it; `None` when it is gone, or
/// deleted and deleted messages are not listed.
fn listed_message(
    store: &Store,
    thread: &str,
    ts: u64,
    include_deleted: bool,
) -> Result<Option<Vec<u8>>, EngineError> {
    let Some(mut message) = store.get_message(thread, ts)? else {
        return Ok(None);
    };
    if message.deleted && !include_deleted {
        return Ok(None);
    }
    message.normalize();
    Ok(Some(
        serde_json::to_vec(&message).expect("messages serialize"),
    ))
}

/// A page of `items`; the caller names its thread when it does.
fn message_list(items: Items, flags: (bool, bool), total: u64) -> MessageList {
    let pagination = Pagination::of(
        key_of(items.first()),
        key_of(items.last()),
        items.len(),
        flags,
        total,
    );
    MessageList {
        thread: None,
        rows: rows(items),
        pagination,
    }
}

/// `items` as rows, collected in place (a row is laid out as an item).
fn rows(items: Items) -> Vec<MessageRow> {
    items
        .into_iter()
        .map(|(ts, json)| MessageRow { ts, json })
        .collect()
}

/// The `key` of a listed item's message.
fn key_of(item: Option<&(u64, Vec<u8>)>) -> Option<String> {
    item.and_then(|(_, json)| message_id_of(json))
}

/// The `key` of a stored message, read without decoding the body.
fn message_id_of(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct KeyOnly {
        #[serde(rename = "key", alias = "id")]
        id: String,
    }
    serde_json::from_slice::<KeyOnly>(json).ok().map(|m| m.id)
}

fn direction(order: Order) -> Direction {
    match order {
        Order::NewestFirst => Direction::Descending,
        Order::OldestFirst => Direction::Ascending,
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Ascending => Direction::Descending,
        Direction::Descending => Direction::Ascending,
    }
}

/// One shard's part of an author's listing by `created_ts`: the positions
/// of up to `limit + 1` listed threads past the position (so the merging
/// caller can tell whether more exist), and whether a listed thread lies
/// strictly behind the position. The threads themselves are read from
/// their records, as they are now.
pub fn threads(
    store: &Store,
    page: &ThreadPage,
) -> Result<(Vec<ThreadPosition>, bool), EngineError> {
    let direction = direction(page.order);
    let after = page
        .after
        .as_ref()
        .map(|position| (position.sort_ts, position.thread_id.as_str()));
    let wanted = page.limit + 1;
    let mut positions = Vec::with_capacity(wanted.min(1024));
    let author = page.author.as_str();
    store.scan_author_threads(author, after, direction, |created_ts, id, deleted, _| {
        if (page.include_deleted || !deleted) && page.holds(id) {
            positions.push(ThreadPosition {
                sort_ts: created_ts,
                thread_id: id.to_owned(),
            });
        }
        Ok(positions.len() < wanted)
    })?;
    let mut behind = false;
    if after.is_some() {
        store.scan_author_threads(author, after, opposite(direction), |_, id, deleted, _| {
            behind = (page.include_deleted || !deleted) && page.holds(id);
            Ok(!behind)
        })?;
    }
    Ok((positions, behind))
}

/// One shard's part of the admin listing: up to `limit + 1` threads in id
/// order past `page.after`, so the merging caller can tell whether more
/// exist. `open` turns a stored record into the thread clients see.
pub fn all_threads(
    store: &Store,
    page: &AllThreadsPage,
    open: &dyn Fn(ThreadRecord) -> Result<Thread, EngineError>,
) -> Result<Vec<ThreadEntry>, EngineError> {
    let wanted = page.limit + 1;
    let mut records = Vec::with_capacity(wanted.min(1024));
    store.scan_threads(
        &page.id_prefix,
        page.after.as_deref(),
        direction(page.order),
        |_, record| {
            if (page.include_deleted || !record.thread.deleted) && page.holds(&record.thread.id) {
                records.push(record);
            }
            Ok(records.len() < wanted)
        },
    )?;
    records
        .into_iter()
        .map(|record| {
            let position = ThreadPosition {
                sort_ts: record.thread.created_ts,
                thread_id: record.thread.id.clone(),
            };
            let thread = UserThread {
                thread: open(record)?,
                membership: None,
            };
            Ok(ThreadEntry { position, thread })
        })
        .collect()
}

/// `(ts, json)` of listed messages, in a page's order.
type Items = Vec<(u64, Vec<u8>)>;

/// Listed replies of one side of a position, in scan order.
struct ReplySide {
    /// The replies scanned; empty when `kept` is false.
    items: Items,
    /// Timestamps of the replies scanned, kept or not.
    timestamps: Vec<u64>,
    /// More replies exist past the last one scanned.
    more: bool,
    /// Whether `items` holds every reply scanned (see [`Side::kept`]).
    kept: bool,
}

/// Listed replies past `after` (exclusive) in `direction`, as many as
/// `budget` allows, and whether more exist.
fn reply_side(
    store: &Store,
    (thread, parent_ts): (&str, u64),
    mut after: Option<u64>,
    direction: Direction,
    budget: Budget,
    include_deleted: bool,
) -> Result<ReplySide, EngineError> {
    let wanted = budget.items.saturating_add(1);
    let mut side = ReplySide {
        items: Vec::new(),
        timestamps: Vec::new(),
        more: false,
        kept: true,
    };
    let mut bytes = 0usize;
    // Deleted replies are skipped, so fetch in rounds until a page is full.
    loop {
        let batch = store.replies(thread, parent_ts, after, direction, wanted)?;
        let exhausted = batch.len() < wanted;
        for ts in batch {
            after = Some(ts);
            let Some(json) = listed_message(store, thread, ts, include_deleted)? else {
                continue;
            };
            if budget.full(side.timestamps.len(), bytes, json.len()) {
                side.more = true;
                return Ok(side);
            }
            bytes += json.len();
            side.timestamps.push(ts);
            if side.kept && bytes > budget.keep {
                side.kept = false;
                side.items = Vec::new();
            }
            if side.kept {
                side.items.push((ts, json));
            }
        }
        if exhausted {
            return Ok(side);
        }
    }
}

/// One page of the direct replies to the message at `parent_ts`, oldest
/// first, as `{"messages":[…],"pagination":P}`: the first replies, or
/// those just before or after a reply. `total` counts the listed replies
/// by walking the reply index (replies have no counter yet). With
/// `in_pieces`, a page over [`PAGE_WHOLE_BYTES_MAX`] is only planned.
pub fn replies(
    store: &Store,
    (thread, parent_ts): (&str, u64),
    (page, in_pieces): (&MessagePage, bool),
    reveal: Reveal,
) -> Result<Scanned, EngineError> {
    let parent = (thread, parent_ts);
    let deleted = page.include_deleted;
    let (direction, from) = match page.position {
        MessagePosition::Start | MessagePosition::End => (Direction::Ascending, None),
        MessagePosition::After(id) => (Direction::Ascending, Some(cursor_ts(store, thread, &id)?)),
        MessagePosition::Before(id) => {
            (Direction::Descending, Some(cursor_ts(store, thread, &id)?))
        }
        MessagePosition::Anchor(_) => return Err(EngineError::InvalidCursor),
    };
    let budget = Budget::page(page.limit, in_pieces);
    let mut side = reply_side(store, parent, from, direction, budget, deleted)?;
    // Behind the cursor, the cursor itself included: one nanosecond past
    // it, against the scan (timestamps are never 0 or u64::MAX).
    let behind = match from {
        None => false,
        Some(ts) => {
            let (back, inclusive) = match direction {
                Direction::Ascending => (Direction::Descending, ts + 1),
                Direction::Descending => (Direction::Ascending, ts - 1),
            };
            let none = Budget::items(0);
            reply_side(store, parent, Some(inclusive), back, none, deleted)?.more
        }
    };
    let (has_before, has_after) = match direction {
        Direction::Ascending => (behind, side.more),
        Direction::Descending => {
            side.items.reverse();
            side.timestamps.reverse();
            (side.more, behind)
        }
    };
    let total = count_replies(store, parent, deleted)?;
    if !side.kept {
        return Ok(Scanned::Planned(PagePlan {
            keys: PageKeys::Listed(side.timestamps),
            has_before,
            has_after,
            total,
        }));
    }
    reveal_all(&mut side.items, reveal)?;
    let flags = (has_before, has_after);
    Ok(Scanned::Whole(message_list(side.items, flags, total)))
}

fn count_replies(
    store: &Store,
    (thread, parent_ts): (&str, u64),
    include_deleted: bool,
) -> Result<u64, EngineError> {
    let mut total = 0;
    for ts in store.replies(thread, parent_ts, None, Direction::Ascending, usize::MAX)? {
        if let Some(message) = store.get_message(thread, ts)?
            && (include_deleted || !message.deleted)
        {
            total += 1;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;
    use crate::store::StoreOptions;
    use crate::wal::record::Lsn;

    const THREAD: &str = "t";

    /// 60 messages of 20 KB (1.2 MB, so their pages stream), every seventh
    /// deleted, each after the first a reply to it; returns their ids,
    /// oldest first.
    fn store_with_messages(dir: &std::path::Path) -> (Store, Vec<MessageId>) {
        let store = Store::open(dir, StoreOptions::default(), "test").unwrap();
        store
            .log_durable_watermark()
            .store(u64::MAX, std::sync::atomic::Ordering::Release);
        let filler = "x".repeat(20_000);
        let mut ids: Vec<MessageId> = Vec::new();
        for n in 1..=60u64 {
            let id = MessageId {
                ts: n * 1000,
                salt: n,
            };
            let json = serde_json::json!({
                "key": id.to_string(), "thread": THREAD, "author": "a", "created_ts": id.ts,
                "body": { "n": n, "filler": filler }, "deleted": n % 7 == 0,
            });
            let message: Message = serde_json::from_str(&json.to_string()).unwrap();
            let mut ops = Store::message_ops(None, &message, message.ts);
            if n > 1 {
                // Every later message also answers the first.
                Store::reply_op(&mut ops, &message, ids[0].ts);
            }
            store.apply(Lsn(n), ops).unwrap();
            ids.push(id);
        }
        (store, ids)
    }

    /// A planned page put together as the accepting core sends it: its
    /// messages comma separated, and its pagination.
    fn assembled(store: &Store, plan: PagePlan, deleted: bool) -> (Vec<u8>, Pagination) {
        let mut out = Vec::new();
        let (mut keys, mut count) = (Some(plan.keys), 0);
        let (mut first, mut last) = (None, None);
        while let Some(now) = keys {
            let piece = piece(store, THREAD, now, deleted, None).unwrap();
            let bytes: usize = piece.rows.iter().map(|row| row.json.len()).sum();
            assert!(bytes <= PIECE_BYTES_MAX + 25_000, "one piece");
            for row in &piece.rows {
                if count > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&row.json);
                count += 1;
            }
            if !piece.rows.is_empty() {
                first = first.or(piece.first_key);
                last = piece.last_key;
            }
            keys = piece.rest;
        }
        let flags = (plan.has_before, plan.has_after);
        (out, Pagination::of(first, last, count, flags, plan.total))
    }

    /// For each position, with and without deleted messages: the page
    /// `render` plans (in pieces) assembles into the page it answers whole.
    fn pieces_make_the_whole(
        store: &Store,
        positions: &[MessagePosition],
        render: impl Fn(&MessagePage, bool) -> Result<Scanned, EngineError>,
    ) {
        for &position in positions {
            for include_deleted in [false, true] {
                let page = MessagePage {
                    position,
                    limit: 1000,
                    include_deleted,
                };
                let Ok(Scanned::Whole(whole)) = render(&page, false) else {
                    panic!("{position:?}: not rendered whole");
                };
                let Ok(Scanned::Planned(plan)) = render(&page, true) else {
                    panic!("{position:?}: not planned");
                };
                // Compared without printing: the pages are 1 MB.
                let (pieces, pagination) = assembled(store, plan, include_deleted);
                let rows: Vec<&[u8]> = whole.rows.iter().map(|row| &row.json[..]).collect();
                let rows = rows.join(&b',');
                assert!(pieces == rows, "{position:?} {include_deleted}");
                let json = |p: &Pagination| serde_json::to_string(p).unwrap();
                assert_eq!(json(&pagination), json(&whole.pagination));
            }
        }
    }

    #[test]
    fn a_page_rendered_in_pieces_is_the_page_rendered_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = store_with_messages(dir.path());
        let positions = [
            MessagePosition::End,
            MessagePosition::Start,
            MessagePosition::Before(ids[40]),
            MessagePosition::After(ids[10]),
            MessagePosition::Anchor(ids[30]),
        ];
        let render =
            |page: &MessagePage, in_pieces| messages(&store, THREAD, (page, in_pieces), 60, None);
        pieces_make_the_whole(&store, &positions, render);
        // A page within PAGE_WHOLE_BYTES_MAX is rendered whole either way.
        let small = MessagePage {
            position: MessagePosition::End,
            limit: 5,
            include_deleted: false,
        };
        assert!(matches!(
            messages(&store, THREAD, (&small, true), 60, None),
            Ok(Scanned::Whole(_))
        ));
    }

    #[test]
    fn a_page_of_replies_rendered_in_pieces_is_the_page_rendered_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = store_with_messages(dir.path());
        let parent = (THREAD, ids[0].ts);
        let positions = [
            MessagePosition::Start,
            MessagePosition::After(ids[10]),
            MessagePosition::Before(ids[40]),
        ];
        let render =
            |page: &MessagePage, in_pieces| replies(&store, parent, (page, in_pieces), None);
        pieces_make_the_whole(&store, &positions, render);
    }
}
