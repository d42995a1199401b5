//! Running a matched statement: each one becomes the HTTP API call that
//! does the same thing, answered in-process by [`Api::handle`] (no socket).
//! Going through the API's own entry point, not around it, keeps SQL and
//! HTTP identical by construction: the same key check and rate limit, the
//! same input validation, the same engine command on the owning shard over
//! the mesh, the same access rules, soft deletes and decryption. The JSON
//! answer is then turned into rows.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::sql::{
    Column, Constant, INT4, KeyOp, Relation, Select, SqlError, Statement, TEXT, Value, Write,
};
use crate::api::{Api, ApiError, Handled};
use crate::engine::ThreadSort;
use crate::http::{Headers, Method, Request, Response};
use crate::model::UserId;

/// Who a connection acts as, settled at startup.
pub struct Identity {
    /// The acting user (the startup `user`).
    pub user: UserId,
    /// The password: a backend key (acting as `user`) or an admin key.
    pub key: String,
    pub admin: bool,
    pub database: String,
    /// The session's `progressdb.include_deleted` setting.
    pub include_deleted: bool,
}

/// The rows and command tag a statement produced.
pub struct Outcome {
    pub columns: Vec<(String, u32)>,
    pub rows: Vec<Vec<Option<String>>>,
    pub tag: String,
}

/// The columns a statement answers, known before it runs (for Describe);
/// `None` for statements without rows.
pub fn result_columns(statement: &Statement) -> Option<Vec<(String, u32)>> {
    let named = |relation: Relation, indexes: &[usize]| {
        indexes
            .iter()
            .map(|&index| {
                let column: Column = relation.columns()[index];
                (column.name.to_owned(), column.oid)
            })
            .collect()
    };
    match statement {
        Statement::Select(select) => Some(named(select.relation, &select.columns)),
        Statement::Insert(write) | Statement::Update(write) | Statement::Delete(write) => write
            .returning
            .as_ref()
            .map(|columns| named(write.relation, columns)),
        Statement::Show(name) => Some(vec![(name.clone(), TEXT)]),
        Statement::Catalog(answer) => Some(
            answer
                .columns
                .iter()
                .map(|name| (name.clone(), TEXT))
                .collect(),
        ),
        Statement::Constant(constant, name) => Some(vec![(
            name.clone(),
            if *constant == Constant::One {
                INT4
            } else {
                TEXT
            },
        )]),
        _ => None,
    }
}

/// Runs `statement` with `params` (text, already decoded from the wire).
pub async fn execute(
    api: &Api,
    identity: &Identity,
    statement: &Statement,
    params: &[Option<String>],
) -> Result<Outcome, SqlError> {
    let call = Call {
        api,
        identity,
        params,
    };
    match statement {
        Statement::Select(select) => call.select(select).await,
        Statement::Insert(write) => call.insert(write).await,
        Statement::Update(write) => call.update(write).await,
        Statement::Delete(write) => call.delete(write).await,
        Statement::Show(name) => Ok(single(statement, show(name, identity)?, "SHOW")),
        Statement::Catalog(answer) => Ok(Outcome {
            columns: result_columns(statement).unwrap_or_default(),
            rows: answer.rows.clone(),
            tag: format!("SELECT {}", answer.rows.len()),
        }),
        Statement::Constant(constant, _) => {
            let value = match constant {
                Constant::Version => format!(
                    "PostgreSQL {} (ProgressDB {}, threads and messages only)",
                    super::SERVER_VERSION,
                    env!("CARGO_PKG_VERSION")
                ),
                Constant::CurrentUser => identity.user.as_str().to_owned(),
                Constant::CurrentDatabase => identity.database.clone(),
                Constant::CurrentSchema => "public".to_owned(),
                Constant::One => "1".to_owned(),
            };
            Ok(single(statement, value, "SELECT 1"))
        }
        Statement::Empty
        | Statement::Begin
        | Statement::Commit
        | Statement::Rollback
        | Statement::Set(_) => Err(SqlError::new(
            "XX000",
            "statement is answered by the connection",
        )),
    }
}

fn single(statement: &Statement, value: String, tag: &str) -> Outcome {
    Outcome {
        columns: result_columns(statement).unwrap_or_default(),
        rows: vec![vec![Some(value)]],
        tag: tag.to_owned(),
    }
}

/// The settings a client may read with SHOW; the same values are sent as
/// ParameterStatus at startup.
/// The one session setting with an effect (see `sql::Setting`).
pub const INCLUDE_DELETED: &str = "progressdb.include_deleted";

pub fn show(name: &str, identity: &Identity) -> Result<String, SqlError> {
    let value = match name {
        INCLUDE_DELETED => {
            return Ok(if identity.include_deleted {
                "on"
            } else {
                "off"
            }
            .to_owned());
        }
        "server_version" => super::SERVER_VERSION,
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "integer_datetimes" | "standard_conforming_strings" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "search_path" => "public",
        "application_name" => "",
        "max_identifier_length" => "63",
        _ => {
            return Err(SqlError::new(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        }
    };
    Ok(value.to_owned())
}

/// A thread as the API answers it; unknown fields are ignored.
#[derive(Deserialize)]
struct ThreadRow {
    key: String,
    title: String,
    author: String,
    created_ts: u64,
    updated_ts: u64,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
struct MessageRow {
    key: String,
    thread: String,
    author: String,
    created_ts: u64,
    updated_ts: Option<u64>,
    body: Box<RawValue>,
    version: Option<u32>,
    reply_to: Option<String>,
    #[serde(default)]
    deleted: bool,
}

fn flag(value: bool) -> Option<String> {
    Some(if value { "t" } else { "f" }.to_owned())
}

impl ThreadRow {
    fn cells(self) -> Vec<Option<String>> {
        vec![
            Some(self.key),
            Some(self.title),
            Some(self.author),
            Some(self.created_ts.to_string()),
            Some(self.updated_ts.to_string()),
            flag(self.deleted),
        ]
    }
}

impl MessageRow {
    fn cells(self) -> Vec<Option<String>> {
        vec![
            Some(self.key),
            Some(self.thread),
            Some(self.author),
            Some(self.created_ts.to_string()),
            Some(self.updated_ts.unwrap_or(self.created_ts).to_string()),
            Some(self.body.get().to_owned()),
            Some(self.version.unwrap_or(1).to_string()),
            self.reply_to,
            flag(self.deleted),
        ]
    }
}

/// Full rows (every column of the relation) decoded from an API answer.
fn rows_of(
    relation: Relation,
    body: &[u8],
    list: bool,
) -> Result<Vec<Vec<Option<String>>>, SqlError> {
    #[derive(Deserialize)]
    struct Threads {
        threads: Vec<ThreadRow>,
    }
    #[derive(Deserialize)]
    struct Messages {
        messages: Vec<MessageRow>,
    }
    #[derive(Deserialize)]
    struct OneThread {
        thread: ThreadRow,
    }
    #[derive(Deserialize)]
    struct OneMessage {
        message: MessageRow,
    }
    let decoded = match (relation, list) {
        (Relation::Threads, true) => serde_json::from_slice::<Threads>(body)
            .map(|page| page.threads.into_iter().map(ThreadRow::cells).collect()),
        (Relation::Messages, true) => serde_json::from_slice::<Messages>(body)
            .map(|page| page.messages.into_iter().map(MessageRow::cells).collect()),
        // Reads wrap the object (`{"thread":…}`); mutations answer it bare.
        (Relation::Threads, false) => serde_json::from_slice::<OneThread>(body)
            .map(|one| one.thread)
            .or_else(|_| serde_json::from_slice::<ThreadRow>(body))
            .map(|row| vec![row.cells()]),
        (Relation::Messages, false) => serde_json::from_slice::<OneMessage>(body)
            .map(|one| one.message)
            .or_else(|_| serde_json::from_slice::<MessageRow>(body))
            .map(|row| vec![row.cells()]),
    };
    decoded.map_err(|err| SqlError::new("XX000", format!("unexpected answer from the API: {err}")))
}

/// Keeps the `columns` of each full row, in that order.
fn project(rows: Vec<Vec<Option<String>>>, columns: &[usize]) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|row| columns.iter().map(|&index| row[index].clone()).collect())
        .collect()
}

/// One statement's API calls, with what they need.
struct Call<'a> {
    api: &'a Api,
    identity: &'a Identity,
    params: &'a [Option<String>],
}

impl Call<'_> {
    fn value(&self, value: &Value) -> Option<String> {
        match value {
            Value::Null => None,
            Value::Text(text) => Some(text.clone()),
            // Bind checked the count, so the index is in range.
            Value::Param(index) => self.params.get(index - 1).cloned().flatten(),
        }
    }

    /// A value that may not be NULL.
    fn required(&self, value: Option<&Value>, name: &str) -> Result<String, SqlError> {
        value
            .and_then(|value| self.value(value))
            .ok_or_else(|| SqlError::new("23502", format!("{name} must not be null")))
    }

    fn no_admin_writes(&self) -> Result<(), SqlError> {
        if self.identity.admin {
            return Err(SqlError::new(
                "42501",
                "the admin key reads only; sign in with a backend key to write",
            ));
        }
        Ok(())
    }

    /// Sends one API request acting as this connection's identity. `Ok(None)`
    /// for 404, which over SQL means "no such row": a thread the user may
    /// not see is indistinguishable from one that does not exist, as over
    /// HTTP.
    async fn http(
        &self,
        method: Method,
        path: String,
        mut query: String,
        body: Option<serde_json::Value>,
    ) -> Result<Option<Vec<u8>>, SqlError> {
        // `SET progressdb.include_deleted = on`: every read shows deleted
        // rows too (`deleted` reads `t`).
        if self.identity.include_deleted && method == Method::Get {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("include_deleted=true");
        }
        let mut headers = Headers::default();
        headers.push("x-api-key", self.identity.key.as_bytes());
        if !self.identity.admin {
            headers.push("x-user-id", self.identity.user.as_str().as_bytes());
        }
        let request = Request {
            method,
            path,
            query,
            headers,
            body: body
                .map(|body| body.to_string().into_bytes())
                .unwrap_or_default(),
            keep_alive: true,
            http11: true,
        };
        // The key was proven at login, so this request cannot fail to
        // authenticate: no source address is needed for failure limits.
        let response = match self.api.handle(&request, None).await {
            Handled::Response(response) => response,
            // Rows are built from the whole page, so a streamed one is
            // gathered (it is bounded by the page byte cap).
            Handled::Page(head, page) => match page.collect(self.api.mesh()).await {
                Ok(body) => Response { body, ..head },
                Err(err) => ApiError::from(err).into_response(),
            },
            Handled::Stream(_) | Handled::Relay(_) => {
                return Err(SqlError::new("XX000", "unexpected stream"));
            }
        };
        match response.status {
            200..=299 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(api_error(status, &response.body)),
        }
    }

    async fn select(&self, select: &Select) -> Result<Outcome, SqlError> {
        let columns = result_columns(&Statement::Select(select.clone())).unwrap_or_default();
        let rows = match select.relation {
            Relation::Messages => self.select_messages(select).await?,
            Relation::Threads => self.select_threads(select).await?,
        };
        let rows = project(rows, &select.columns);
        Ok(Outcome {
            tag: format!("SELECT {}", rows.len()),
            columns,
            rows,
        })
    }

    async fn select_messages(&self, select: &Select) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        let thread = match &select.thread {
            Some(thread) => self.required(Some(thread), "thread")?,
            None => {
                return Err(SqlError::unsupported(
                    "messages are read one thread at a time: add WHERE thread = …",
                ));
            }
        };
        let base = if self.identity.admin {
            "/admin/v1/threads"
        } else {
            "/frontend/v1/threads"
        };
        let messages = format!("{base}/{}/messages", segment(&thread));
        if let Some((KeyOp::Eq, key)) = &select.key {
            let key = self.required(Some(key), "key")?;
            return self.message_by_key(&messages, &key).await;
        }
        let limit = self.limit(select)?;
        if let Some((op, bound)) = &select.created_ts {
            let bound = self
                .required(Some(bound), "created_ts")?
                .parse()
                .map_err(|_| {
                    SqlError::bad_input(
                        "created_ts is an integer: nanoseconds since the Unix epoch",
                    )
                })?;
            return self
                .messages_by_time(&messages, (*op, bound), &limit, select)
                .await;
        }
        let (cursor, reverse) = match (&select.key, select.descending) {
            (None, false) if select.ordered => ("&from=oldest".to_owned(), false),
            (None, descending) => (String::new(), descending),
            (Some((KeyOp::Before, key)), descending) if descending || !select.ordered => (
                format!("&before={}", segment(&self.required(Some(key), "key")?)),
                descending,
            ),
            (Some((KeyOp::After, key)), false) => (
                format!("&after={}", segment(&self.required(Some(key), "key")?)),
                false,
            ),
            _ => {
                return Err(SqlError::unsupported(
                    "timeline pages are `key < $k ORDER BY created_ts DESC` (older) or `key > $k ORDER BY created_ts` (newer)",
                ));
            }
        };
        let query = format!("limit={}{cursor}", segment(&limit));
        let Some(mut rows) = self.message_page(&messages, query).await? else {
            return Ok(Vec::new());
        };
        // Pages come oldest first.
        if reverse {
            rows.reverse();
        }
        Ok(rows)
    }

    /// A page bounded by a timestamp. The API pages by message key, so the
    /// thread is walked back from its newest page, `limit` messages at a
    /// time, until the page is complete or the bound is passed; past
    /// [`TIME_WALK_MESSAGES_MAX`] messages the statement is refused, so a
    /// bound far back cannot make one statement read a whole long thread.
    async fn messages_by_time(
        &self,
        messages: &str,
        (op, bound): (KeyOp, u64),
        limit: &str,
        select: &Select,
    ) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        let descending = select.descending || (!select.ordered && op == KeyOp::Before);
        if op == KeyOp::Before && !descending {
            return Err(SqlError::unsupported(
                "the oldest messages before a time are not a page: ORDER BY created_ts DESC",
            ));
        }
        let wanted: usize = limit
            .parse()
            .map_err(|_| SqlError::bad_input("LIMIT is a positive integer"))?;
        // Newest first; for the oldest after a time, only the last `wanted`.
        let mut kept = VecDeque::new();
        let (mut cursor, mut scanned) = (String::new(), 0);
        loop {
            let query = format!("limit={}{cursor}", segment(limit));
            let Some(page) = self.message_page(messages, query).await? else {
                return Ok(Vec::new());
            };
            let more = page.len() >= wanted.max(1);
            let oldest = page.first().and_then(|row| row[0].clone());
            scanned += page.len();
            for row in page.into_iter().rev() {
                let ts: u64 = row[3]
                    .as_deref()
                    .and_then(|ts| ts.parse().ok())
                    .unwrap_or(0);
                let inside = if op == KeyOp::Before {
                    ts < bound
                } else {
                    ts > bound
                };
                if !inside && op == KeyOp::After {
                    return Ok(finish_time_page(kept, descending));
                }
                if inside {
                    kept.push_back(row);
                }
                if kept.len() > wanted {
                    kept.pop_front();
                }
                if kept.len() == wanted && (op == KeyOp::Before || descending) {
                    return Ok(finish_time_page(kept, descending));
                }
            }
            match oldest {
                Some(oldest) if more => cursor = format!("&before={}", segment(&oldest)),
                _ => return Ok(finish_time_page(kept, descending)),
            }
            if scanned >= TIME_WALK_MESSAGES_MAX {
                return Err(SqlError::new(
                    "54000",
                    "the created_ts bound is too far back to page to; page by key instead",
                ));
            }
        }
    }

    /// One page of a thread's messages (oldest first) at `query`; `None`
    /// when the thread is not there for this caller.
    async fn message_page(
        &self,
        messages: &str,
        query: String,
    ) -> Result<Option<Vec<Vec<Option<String>>>>, SqlError> {
        let Some(body) = self
            .http(Method::Get, messages.to_owned(), query, None)
            .await?
        else {
            return Ok(None);
        };
        rows_of(Relation::Messages, &body, true).map(Some)
    }

    async fn message_by_key(
        &self,
        messages: &str,
        key: &str,
    ) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        if self.identity.admin {
            // The admin API has no single-message read: the page anchored
            // at the key holds it.
            let query = format!("anchor={}&limit=1", segment(key));
            let rows = self
                .message_page(messages, query)
                .await?
                .unwrap_or_default();
            return Ok(rows
                .into_iter()
                .filter(|row| row[0].as_deref() == Some(key))
                .collect());
        }
        let path = format!("{messages}/{}", segment(key));
        match self.http(Method::Get, path, String::new(), None).await {
            Ok(Some(body)) => rows_of(Relation::Messages, &body, false),
            Ok(None) => Ok(Vec::new()),
            // A malformed key names no message: no rows, as in SQL.
            Err(err) if err.code == "22P02" => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    fn limit(&self, select: &Select) -> Result<String, SqlError> {
        match &select.limit {
            Some(limit) => self.required(Some(limit), "LIMIT"),
            None => Err(SqlError::unsupported(
                "reads are pages: add LIMIT n (up to the server's page limit)",
            )),
        }
    }

    async fn select_threads(&self, select: &Select) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        let base = if self.identity.admin {
            "/admin/v1/threads"
        } else {
            "/frontend/v1/threads"
        };
        match &select.key {
            Some((KeyOp::Eq, key)) => {
                let key = self.required(Some(key), "key")?;
                let path = format!("{base}/{}", segment(&key));
                return match self.http(Method::Get, path, String::new(), None).await {
                    Ok(Some(body)) => rows_of(Relation::Threads, &body, false),
                    Ok(None) => Ok(Vec::new()),
                    Err(err) if err.code == "22P02" => Ok(Vec::new()),
                    Err(err) => Err(err),
                };
            }
            Some((KeyOp::After, _)) if self.identity.admin => {}
            Some(_) => {
                return Err(SqlError::unsupported(
                    "threads are read by key = … or listed newest first",
                ));
            }
            None => {}
        }
        if self.identity.admin {
            return self.admin_thread_listing(select).await;
        }
        if select.ordered && !select.descending {
            return Err(SqlError::unsupported(
                "threads are listed newest first: ORDER BY … DESC",
            ));
        }
        let sort = match select.sort {
            ThreadSort::CreatedTs => "created_ts",
            ThreadSort::UpdatedTs => "updated_ts",
        };
        let query = format!("limit={}&sort_by={sort}", segment(&self.limit(select)?));
        let body = self
            .http(Method::Get, base.to_owned(), query, None)
            .await?
            .unwrap_or_default();
        rows_of(Relation::Threads, &body, true)
    }

    /// The admin key's listing of every thread, in key order (the admin
    /// API's order), paged with `key > $k`.
    async fn admin_thread_listing(
        &self,
        select: &Select,
    ) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        if select.ordered {
            return Err(SqlError::unsupported(
                "the admin listing of every thread is in key order: leave out ORDER BY, page with key > $k",
            ));
        }
        let mut query = format!("limit={}", segment(&self.limit(select)?));
        if let Some((KeyOp::After, key)) = &select.key {
            query.push_str(&format!(
                "&after={}",
                segment(&self.required(Some(key), "key")?)
            ));
        }
        let body = self
            .http(Method::Get, "/admin/v1/threads".to_owned(), query, None)
            .await?
            .unwrap_or_default();
        rows_of(Relation::Threads, &body, true)
    }
}

/// Messages a timestamp-bounded page may walk past before it is refused.
const TIME_WALK_MESSAGES_MAX: usize = 100_000;

/// The rows a timestamp walk kept (newest first), in the statement's order.
fn finish_time_page(
    kept: VecDeque<Vec<Option<String>>>,
    descending: bool,
) -> Vec<Vec<Option<String>>> {
    let mut rows: Vec<_> = kept.into();
    if !descending {
        rows.reverse();
    }
    rows
}

/// A written row's outcome: the object the API answered, as RETURNING rows.
fn written(
    relation: Relation,
    write: &Write,
    verb: &str,
    body: Option<Vec<u8>>,
) -> Result<Outcome, SqlError> {
    let rows = match &body {
        Some(body) => rows_of(relation, body, false)?,
        None => Vec::new(),
    };
    let count = rows.len();
    let tag = if verb == "INSERT" {
        format!("INSERT 0 {count}")
    } else {
        format!("{verb} {count}")
    };
    let columns = match &write.returning {
        Some(indexes) => indexes
            .iter()
            .map(|&index| {
                (
                    relation.columns()[index].name.to_owned(),
                    relation.columns()[index].oid,
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let rows = match &write.returning {
        Some(indexes) => project(rows, indexes),
        None => Vec::new(),
    };
    Ok(Outcome { columns, rows, tag })
}

impl Call<'_> {
    fn assigned(&self, write: &Write, name: &str) -> Option<String> {
        write
            .values
            .iter()
            .find(|(column, _)| *column == name)
            .and_then(|(_, value)| self.value(value))
    }

    /// A `body` value: JSON text, kept as sent.
    fn json_body(&self, write: &Write) -> Result<serde_json::Value, SqlError> {
        let text = self
            .assigned(write, "body")
            .ok_or_else(|| SqlError::new("23502", "body must not be null"))?;
        serde_json::from_str(&text).map_err(|err| {
            SqlError::bad_input(format!("invalid input syntax for type jsonb: {err}"))
        })
    }

    async fn insert(&self, write: &Write) -> Result<Outcome, SqlError> {
        self.no_admin_writes()?;
        let (path, body) = match write.relation {
            Relation::Messages => {
                let thread = self.required(
                    write
                        .values
                        .iter()
                        .find(|(name, _)| *name == "thread")
                        .map(|(_, value)| value),
                    "thread",
                )?;
                let mut body = serde_json::json!({ "body": self.json_body(write)? });
                for optional in ["author", "reply_to"] {
                    if let Some(value) = self.assigned(write, optional) {
                        body[optional] = serde_json::Value::String(value);
                    }
                }
                (
                    format!("/frontend/v1/threads/{}/messages", segment(&thread)),
                    body,
                )
            }
            Relation::Threads => {
                let mut body = serde_json::json!({ "title": self.assigned(write, "title") });
                if let Some(key) = self.assigned(write, "key") {
                    body["key"] = serde_json::Value::String(key);
                }
                ("/frontend/v1/threads".to_owned(), body)
            }
        };
        match self
            .http(Method::Post, path, String::new(), Some(body))
            .await?
        {
            Some(answer) => written(write.relation, write, "INSERT", Some(answer)),
            // Posting into a thread this user cannot see: as over HTTP, it
            // reads as a thread that does not exist.
            None => Err(SqlError::new("23503", "thread does not exist")),
        }
    }

    async fn update(&self, write: &Write) -> Result<Outcome, SqlError> {
        self.no_admin_writes()?;
        let (path, body) = match write.relation {
            Relation::Messages => (
                self.message_path(write)?,
                serde_json::json!({ "body": self.json_body(write)? }),
            ),
            Relation::Threads => (
                self.thread_path(write)?,
                serde_json::json!({ "title": self.assigned(write, "title") }),
            ),
        };
        let answer = self
            .http(Method::Put, path, String::new(), Some(body))
            .await?;
        written(write.relation, write, "UPDATE", answer)
    }

    async fn delete(&self, write: &Write) -> Result<Outcome, SqlError> {
        self.no_admin_writes()?;
        let path = match write.relation {
            Relation::Messages => self.message_path(write)?,
            Relation::Threads => self.thread_path(write)?,
        };
        let answer = self.http(Method::Delete, path, String::new(), None).await?;
        written(write.relation, write, "DELETE", answer)
    }

    fn thread_path(&self, write: &Write) -> Result<String, SqlError> {
        let key = self.required(write.key.as_ref(), "key")?;
        Ok(format!("/frontend/v1/threads/{}", segment(&key)))
    }

    fn message_path(&self, write: &Write) -> Result<String, SqlError> {
        let thread = self.required(write.thread.as_ref(), "thread")?;
        let key = self.required(write.key.as_ref(), "key")?;
        Ok(format!(
            "/frontend/v1/threads/{}/messages/{}",
            segment(&thread),
            segment(&key)
        ))
    }
}

/// Percent-encodes a value for a path segment or query value, so no value
/// can change which route or parameter a request names.
fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An API error answer as an SQL error: the API's message, under the
/// SQLSTATE a PostgreSQL client expects for that kind of failure.
fn api_error(status: u16, body: &[u8]) -> SqlError {
    #[derive(Deserialize)]
    struct Error {
        error: String,
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Error>(body) {
        Ok(err) => (err.error, err.message),
        Err(_) => (
            "error".to_owned(),
            String::from_utf8_lossy(body).into_owned(),
        ),
    };
    let sqlstate = match status {
        400 | 413 | 422 => "22P02",
        401 | 403 => "42501",
        409 => "23505",
        429 => "53400",
        503 => "57P03",
        _ => "XX000",
    };
    SqlError::new(sqlstate, format!("{message} ({code})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_escape_their_path_segment() {
        assert_eq!(segment("a/b?c=d&e"), "a%2Fb%3Fc%3Dd%26e");
        assert_eq!(segment("t-1_x"), "t-1_x");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn api_errors_map_to_sqlstates() {
        let body = br#"{"error":"invalid_limit","message":"`limit` must be an integer"}"#;
        assert_eq!(api_error(400, body).code, "22P02");
        assert_eq!(api_error(403, b"not json").code, "42501");
        assert_eq!(api_error(500, b"").code, "XX000");
    }
}
