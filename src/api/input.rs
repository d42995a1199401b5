//! Decoding and validating what clients send: JSON bodies, query strings,
//! cursors. Every function here turns hostile input into typed values or a
//! 400 with a stable code.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::ApiError;
use crate::config::Limits;
use crate::engine::{
    MessagePage, MessagePosition, ParticipantCursor, ParticipantPage, ThreadSort, VersionPage,
    VersionPosition,
};
use crate::http::{Request, query_pairs};
use crate::model::{MessageId, Role, ThreadId, UserId, is_valid_key};

pub fn decode_body<T: DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    if request.body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body must be a JSON object",
        ));
    }
    serde_json::from_slice(&request.body)
        .map_err(|err| ApiError::bad_request("invalid_json", format!("request body: {err}")))
}

#[derive(Deserialize)]
pub struct CreateThread {
    /// The key a backend chooses for the thread (`id` before v0.2).
    #[serde(alias = "id")]
    pub key: Option<String>,
    pub title: Option<String>,
    pub slug: Option<String>,
    pub author: Option<String>,
    /// User ids to add as members (group chat).
    pub participants: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub struct AddParticipant {
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub author: Option<String>,
}

#[derive(Deserialize)]
pub struct MarkRead {
    pub message: Option<String>,
    pub author: Option<String>,
}

/// Members a thread may be created with.
pub const CREATE_PARTICIPANTS_MAX: usize = 100;

/// A user id a client names in a body or path: the `X-User-ID` rules.
pub fn user_id(text: &str, field: &str) -> Result<UserId, ApiError> {
    UserId::parse(text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_user_id",
            format!("`{field}` must be 1 to 128 printable ASCII characters without spaces"),
        )
    })
}

/// The members of a new thread: at most [`CREATE_PARTICIPANTS_MAX`].
pub fn participants(list: Option<Vec<String>>) -> Result<Vec<UserId>, ApiError> {
    let list = list.unwrap_or_default();
    if list.len() > CREATE_PARTICIPANTS_MAX {
        return Err(ApiError::bad_request(
            "too_many_participants",
            format!(
                "a thread is created with at most {CREATE_PARTICIPANTS_MAX} participants; add more afterwards"
            ),
        ));
    }
    list.iter()
        .map(|user| user_id(user, "participants"))
        .collect()
}

/// A role a participant may be given: `member` (the default) or `admin`.
pub fn participant_role(role: Option<&str>) -> Result<Role, ApiError> {
    match role {
        None | Some("member") => Ok(Role::Member),
        Some("admin") => Ok(Role::Admin),
        Some(_) => Err(ApiError::bad_request(
            "invalid_role",
            "`role` must be member or admin (a thread has one owner, its author)",
        )),
    }
}

#[derive(Deserialize)]
pub struct UpdateThread {
    pub title: Option<String>,
    pub slug: Option<String>,
    pub author: Option<String>,
}

#[derive(Deserialize)]
pub struct PostMessage {
    pub body: Option<Box<RawValue>>,
    pub role: Option<String>,
    pub reply_to: Option<String>,
    pub author: Option<String>,
}

#[derive(Deserialize)]
pub struct SeedPostMessage {
    pub thread: Option<String>,
    pub author: Option<String>,
    pub body: Option<Box<RawValue>>,
    pub role: Option<String>,
    pub reply_to: Option<String>,
}

#[derive(Deserialize)]
pub struct EditMessage {
    pub body: Option<Box<RawValue>>,
    pub author: Option<String>,
}

#[derive(Deserialize)]
pub struct Sign {
    #[serde(rename = "userId", alias = "user_id")]
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
pub struct React {
    pub reaction: Option<String>,
    pub author: Option<String>,
}

/// Longest reaction accepted, in bytes: room for an emoji sequence or a
/// short name like `thumbs_up`, not for a message.
pub const REACTION_BYTES_MAX: usize = 64;

pub fn reaction(reaction: Option<String>) -> Result<String, ApiError> {
    let reaction =
        reaction.ok_or_else(|| ApiError::bad_request("missing_field", "`reaction` is required"))?;
    if reaction.trim().is_empty()
        || reaction.len() > REACTION_BYTES_MAX
        || reaction.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "`reaction` must be 1 to {REACTION_BYTES_MAX} bytes of text without control characters"
            ),
        ));
    }
    Ok(reaction)
}

pub fn title(title: Option<String>, limits: &Limits) -> Result<String, ApiError> {
    let title =
        title.ok_or_else(|| ApiError::bad_request("missing_field", "`title` is required"))?;
    let trimmed = valid_title(&title, limits).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_field",
            format!(
                "`title` must be 1 to {} bytes of non-blank text without control or \
                 bidirectional override characters",
                limits.title_bytes_max
            ),
        )
    })?;
    Ok(trimmed.to_owned())
}

/// The title trimmed, if it is 1 to `title_bytes_max` bytes of non-blank
/// text without control or bidi override characters. Shared with embedded
/// mode so both refuse the same titles.
pub fn valid_title<'a>(title: &'a str, limits: &Limits) -> Option<&'a str> {
    let trimmed = title.trim();
    (!trimmed.is_empty()
        && trimmed.len() <= limits.title_bytes_max
        && !trimmed.chars().any(is_hidden_control))
    .then_some(trimmed)
}

/// Characters a title may not hold: controls (NUL, C0, DEL, C1), which
/// break logs and terminals, and the bidi embeddings, overrides and
/// isolates, which make a title display as different text than it is
/// (`invoice\u{202E}fdp.exe`). Plain direction marks (LRM, RLM) stay
/// allowed: right-to-left text needs them.
fn is_hidden_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Refuses a JSON body whose arrays and objects nest deeper than
/// `depth_max` (the outermost value counts as one) before anything parses
/// it: message bodies are kept as raw JSON, which the parser checks for
/// syntax but not depth, and 5,000 levels break common clients' parsers.
/// Not a validator: bytes inside strings are skipped, all else is counted.
pub fn check_json_depth(body: &[u8], depth_max: usize) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > depth_max {
                    return Err(ApiError::bad_request(
                        "json_too_deep",
                        format!(
                            "request body nests arrays and objects more than {depth_max} \
                             levels deep (the body itself is one)"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

pub fn optional_slug(slug: Option<String>) -> Result<Option<String>, ApiError> {
    match slug {
        Some(slug) if !is_valid_key(&slug) => Err(ApiError::bad_request(
            "invalid_field",
            "`slug` must be 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
        )),
        slug => Ok(slug),
    }
}

pub fn optional_role(role: Option<String>, limits: &Limits) -> Result<Option<String>, ApiError> {
    match role {
        Some(role)
            if role.is_empty()
                || role.len() > limits.role_bytes_max
                || role.chars().any(char::is_control) =>
        {
            Err(ApiError::bad_request(
                "invalid_field",
                format!(
                    "`role` must be 1 to {} bytes without control characters",
                    limits.role_bytes_max
                ),
            ))
        }
        role => Ok(role),
    }
}

/// A message body: any JSON value except `null`.
pub fn required_body(body: Option<Box<RawValue>>) -> Result<Box<RawValue>, ApiError> {
    body.ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            "`body` is required (any JSON value but null)",
        )
    })
}

/// Where a live tail resumes: the `Last-Event-ID` header a reconnecting
/// EventSource sends, or `last_event_id` in the query for clients that
/// cannot set headers.
pub fn last_event_id(request: &Request, query: &Query) -> Result<Option<u64>, ApiError> {
    let text = request
        .header("last-event-id")
        .or(query.last_event_id.as_deref());
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                "Last-Event-ID must be an event id from this stream",
            )
        }),
    }
}

/// The recognised query parameters of list routes.
#[derive(Default)]
pub struct Query {
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
    anchor: Option<String>,
    sort_by: Option<String>,
    include_deleted: Option<String>,
    last_event_id: Option<String>,
    /// `oldest`: a message page from the first message (our extension).
    from: Option<String>,
    /// The user a backend key acts for when no body `author` or
    /// `X-User-ID` names one.
    pub author: Option<String>,
}

/// Where a thread listing page is: at the newest threads, or relative to
/// a thread's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadCursor {
    Newest,
    /// Threads newer than this one.
    Before(ThreadId),
    /// Threads older than this one.
    After(ThreadId),
    /// Newer ones, this one, older ones.
    Anchor(ThreadId),
}

/// A thread listing request after validation.
pub struct ThreadPageRequest {
    pub cursor: ThreadCursor,
    pub sort: ThreadSort,
    pub limit: usize,
    pub include_deleted: bool,
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, ApiError> {
        let pairs = query_pairs(raw).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "query string has a malformed escape")
        })?;
        let mut query = Query::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "limit" => &mut query.limit,
                "before" => &mut query.before,
                "after" => &mut query.after,
                "anchor" => &mut query.anchor,
                "sort_by" => &mut query.sort_by,
                "include_deleted" => &mut query.include_deleted,
                "last_event_id" => &mut query.last_event_id,
                "from" => &mut query.from,
                "author" => &mut query.author,
                // Unknown parameters are ignored, as most HTTP APIs do, so
                // newer clients keep working against this server.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("`{key}` given twice"),
                ));
            }
        }
        Ok(query)
    }

    fn limit(&self, limits: &Limits) -> Result<usize, ApiError> {
        let Some(text) = &self.limit else {
            return Ok(limits.page_limit_default);
        };
        match text.parse::<usize>() {
            Ok(limit) if (1..=limits.page_limit_max).contains(&limit) => Ok(limit),
            _ => Err(ApiError::bad_request(
                "invalid_limit",
                format!(
                    "`limit` must be an integer from 1 to {}",
                    limits.page_limit_max
                ),
            )),
        }
    }

    /// `include_deleted=true` shows soft-deleted items (marked
    /// `"deleted": true`) to callers who may see the thread.
    pub fn include_deleted(&self) -> Result<bool, ApiError> {
        match self.include_deleted.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                "`include_deleted` must be true or false",
            )),
        }
    }

    fn single_position(&self) -> Result<Option<(&'static str, &str)>, ApiError> {
        let given: Vec<(&'static str, &str)> = [
            ("before", &self.before),
            ("after", &self.after),
            ("anchor", &self.anchor),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|value| (name, value)))
        .collect();
        match given.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(ApiError::bad_request(
                "invalid_query",
                "give at most one of `before`, `after` and `anchor`",
            )),
        }
    }

    /// Whether `from=oldest` asks for the first messages instead of the
    /// last; any other value is refused.
    fn starts_at_oldest(&self) -> Result<bool, ApiError> {
        match self.from.as_deref() {
            None => Ok(false),
            Some("oldest") => Ok(true),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                "`from` may only be `oldest`",
            )),
        }
    }

    /// `limit`, validated, for listings that build their own page.
    pub fn page_limit(&self, limits: &Limits) -> Result<usize, ApiError> {
        self.limit(limits)
    }

    /// The `after` cursor of a listing that pages forward only.
    pub fn forward_cursor(&self) -> Result<Option<&str>, ApiError> {
        match self.single_position()? {
            None => Ok(None),
            Some(("after", text)) => Ok(Some(text)),
            Some((name, _)) => Err(ApiError::bad_request(
                "invalid_query",
                format!("`{name}` is not supported here: this listing pages forward with `after`"),
            )),
        }
    }

    /// A page of a thread's messages, which are always oldest first:
    /// `sort_by` may only name that order.
    pub fn message_page(&self, limits: &Limits) -> Result<MessagePage, ApiError> {
        match self.sort_by.as_deref() {
            None | Some("created_ts" | "created_ts_asc" | "ts" | "ts_asc" | "asc") => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_sort_by",
                    "messages are listed oldest first: `sort_by` may only be created_ts",
                ));
            }
        }
        let position = match self.single_position()? {
            None if self.starts_at_oldest()? => MessagePosition::Start,
            None => MessagePosition::End,
            Some(_) if self.from.is_some() => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "`from=oldest` takes no `before`, `after` or `anchor`",
                ));
            }
            Some((name, text)) => {
                let id = MessageId::parse(text).ok_or_else(|| invalid_cursor(name))?;
                match name {
                    "before" => MessagePosition::Before(id),
                    "after" => MessagePosition::After(id),
                    _ => MessagePosition::Anchor(id),
                }
            }
        };
        Ok(MessagePage {
            include_deleted: self.include_deleted()?,
            position,
            limit: self.limit(limits)?,
        })
    }

    /// A page of a message's versions: cursors are version numbers.
    pub fn version_page(&self, limits: &Limits) -> Result<VersionPage, ApiError> {
        let position = match self.single_position()? {
            None => VersionPosition::Newest,
            Some((name, text)) => {
                let number = text.parse::<u32>().map_err(|_| invalid_cursor(name))?;
                match name {
                    "before" => VersionPosition::Before(number),
                    "after" => VersionPosition::After(number),
                    _ => VersionPosition::Anchor(number),
                }
            }
        };
        Ok(VersionPage {
            position,
            limit: self.limit(limits)?,
            include_deleted: self.include_deleted()?,
        })
    }

    /// Replies read like a conversation: without a cursor, the first ones.
    pub fn reply_page(&self, limits: &Limits) -> Result<MessagePage, ApiError> {
        let mut page = self.message_page(limits)?;
        match page.position {
            MessagePosition::End => page.position = MessagePosition::Start,
            MessagePosition::Anchor(_) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "replies page with `before` and `after`, not `anchor`",
                ));
            }
            _ => {}
        }
        Ok(page)
    }

    /// A page of participants: user ids as `before` / `after` cursors.
    pub fn participant_page(&self, limits: &Limits) -> Result<ParticipantPage, ApiError> {
        let cursor = match self.single_position()? {
            None => ParticipantCursor::Start,
            Some((name, text)) => {
                let user = UserId::parse(text).ok_or_else(|| invalid_cursor(name))?;
                match name {
                    "before" => ParticipantCursor::Before(user.to_string()),
                    "after" => ParticipantCursor::After(user.to_string()),
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_query",
                            "participants page with `before` and `after`, not `anchor`",
                        ));
                    }
                }
            }
        };
        Ok(ParticipantPage {
            cursor,
            limit: self.limit(limits)?,
        })
    }

    pub fn thread_page(&self, limits: &Limits) -> Result<ThreadPageRequest, ApiError> {
        let sort = match self.sort_by.as_deref() {
            None | Some("created_ts" | "created_ts_desc" | "ts_desc" | "desc") => {
                ThreadSort::CreatedTs
            }
            Some("updated_ts" | "updated_ts_desc") => ThreadSort::UpdatedTs,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_sort_by",
                    "`sort_by` must be created_ts (default) or updated_ts; threads are listed newest first",
                ));
            }
        };
        let cursor = match self.single_position()? {
            None => ThreadCursor::Newest,
            Some((name, text)) => {
                let key = ThreadId::parse(text).ok_or_else(|| invalid_cursor(name))?;
                match name {
                    "before" => ThreadCursor::Before(key),
                    "after" => ThreadCursor::After(key),
                    _ => ThreadCursor::Anchor(key),
                }
            }
        };
        Ok(ThreadPageRequest {
            cursor,
            sort,
            limit: self.limit(limits)?,
            include_deleted: self.include_deleted()?,
        })
    }
}

fn invalid_cursor(name: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        format!("`{name}` is not a key from this listing"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_rejects_zero_negative_text_and_too_large() {
        let limits = Limits::default();
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=abc",
            "limit=1001",
            "limit=",
            "limit=1&limit=2",
        ] {
            let result = Query::parse(bad).and_then(|q| q.message_page(&limits));
            assert_eq!(result.err().map(|e| e.status), Some(400), "{bad}");
        }
        assert_eq!(
            Query::parse("limit=7")
                .unwrap()
                .message_page(&limits)
                .unwrap()
                .limit,
            7
        );
        assert_eq!(
            Query::parse("")
                .unwrap()
                .message_page(&limits)
                .unwrap()
                .limit,
            50
        );
    }

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert!(check_json_depth(br#"{"a":[1,{"b":2}]}"#, 3).is_ok());
        assert!(check_json_depth(br#"{"a":[1,{"b":2}]}"#, 2).is_err());
        // Brackets and escaped quotes inside strings are text, not nesting.
        assert!(check_json_depth(br#"{"a":"[[[{{\"[[["}"#, 1).is_ok());
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        let err = check_json_depth(deep.as_bytes(), 64).unwrap_err();
        assert_eq!((err.status, err.code), (400, "json_too_deep"));
    }

    #[test]
    fn titles_refuse_controls_and_bidi_overrides() {
        let limits = Limits::default();
        for bad in [
            "a\0b",
            "a\u{7}b",
            "a\u{7f}",
            "a\u{85}b",
            "x\u{202E}gpj",
            "a\u{2067}b",
        ] {
            assert!(valid_title(bad, &limits).is_none(), "{bad:?}");
        }
        for good in ["Café ☕", "שלום \u{200F}", "  padded  "] {
            assert!(valid_title(good, &limits).is_some(), "{good:?}");
        }
    }

    #[test]
    fn positions_are_exclusive_and_validated() {
        let limits = Limits::default();
        let id = MessageId { ts: 9, salt: 1 }.to_string();
        let page = Query::parse(&format!("before={id}"))
            .unwrap()
            .message_page(&limits)
            .unwrap();
        assert!(matches!(page.position, MessagePosition::Before(m) if m.ts == 9));
        let both = Query::parse(&format!("before={id}&after={id}"))
            .unwrap()
            .message_page(&limits);
        assert_eq!(both.err().map(|e| e.code), Some("invalid_query"));
        let forged = Query::parse("after=nope").unwrap().message_page(&limits);
        assert_eq!(forged.err().map(|e| e.code), Some("invalid_cursor"));
    }

    #[test]
    fn from_oldest_starts_at_the_first_message_and_takes_no_cursor() {
        let limits = Limits::default();
        let page = |query: &str| Query::parse(query).unwrap().message_page(&limits);
        assert!(matches!(
            page("from=oldest").unwrap().position,
            MessagePosition::Start
        ));
        let id = MessageId { ts: 9, salt: 1 }.to_string();
        for bad in [format!("from=oldest&after={id}"), "from=newest".into()] {
            assert_eq!(
                page(&bad).err().map(|e| e.code),
                Some("invalid_query"),
                "{bad}"
            );
        }
    }
}
