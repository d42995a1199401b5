//! An authenticated connection's messages: the simple query protocol
//! (`Q`), the extended one (Parse/Bind/Describe/Execute/Sync/Close with
//! named and unnamed statements and portals, text and binary formats), and
//! transaction status. Statement errors are answered with an ErrorResponse
//! and the connection stays usable; only broken framing ends it.
//!
//! Every statement commits as it runs (the engine has no multi-statement
//! transactions): BEGIN/COMMIT are accepted so drivers that open
//! transactions work, and ROLLBACK warns that nothing was undone.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::codec::{self, Fatal, Out, Reader};
use super::exec::{self, Identity, Outcome};
use super::sql::{self, BOOL, INT2, INT4, INT8, JSON, JSONB, Matched, SqlError, Statement};
use crate::api::Api;

/// Prepared statements, and portals, a connection may hold at once; their
/// bytes are bounded too (see [`Session::new`]), so a client cannot grow
/// the server's memory without bound.
const PREPARED_MAX: usize = 256;

struct Prepared {
    /// The Parse message's size, counted against the connection's budget.
    bytes: usize,
    statement: Statement,
    /// One OID per parameter: the client's where it named one, else ours.
    param_oids: Vec<u32>,
}

struct Portal {
    /// The Bind message's size, counted against the connection's budget.
    bytes: usize,
    statement: Statement,
    params: Vec<Option<String>>,
    /// Result column formats as Bind gave them (0 text, 1 binary).
    formats: Vec<i16>,
    /// How far Execute has run this portal.
    progress: PortalProgress,
}

/// A portal runs its statement once: the first Execute runs it, an
/// Execute with a row limit keeps the rest for the next one, and an
/// Execute after the last row runs nothing again (so a write is never
/// repeated), as PostgreSQL does.
enum PortalProgress {
    NotRun,
    /// Stopped at a row limit (PortalSuspended); these rows are next.
    Suspended(Outcome),
    /// Every row was sent; a further Execute answers this tag alone.
    Finished(String),
}

pub struct Session {
    api: Rc<Api>,
    identity: Identity,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    /// ReadyForQuery status: `I` idle, `T` in a block, `E` failed block.
    status: u8,
    /// After an error in the extended protocol, messages are skipped until
    /// Sync, as PostgreSQL does.
    skipping: bool,
    /// Statements of a simple query not yet answered.
    pending: VecDeque<Result<Matched, SqlError>>,
    /// Most bytes of Parse and Bind messages kept at once.
    retained_max: usize,
}

impl Session {
    /// `retained_max` bounds the bytes of the statements and portals the
    /// connection keeps.
    pub fn new(api: Rc<Api>, identity: Identity, retained_max: usize) -> Session {
        Session {
            api,
            identity,
            statements: HashMap::new(),
            portals: HashMap::new(),
            status: b'I',
            skipping: false,
            pending: VecDeque::new(),
            retained_max,
        }
    }

    /// Handles one message. `Ok(false)` ends the connection (Terminate);
    /// `Err` is a protocol violation answered FATAL.
    pub async fn handle(&mut self, tag: u8, body: &[u8], out: &mut Out) -> Result<bool, Fatal> {
        match tag {
            b'X' => return Ok(false),
            b'S' => {
                self.skipping = false;
                out.ready(self.status);
                return Ok(true);
            }
            // Flush: the connection writes whenever it waits for input.
            // CopyData/CopyDone/CopyFail outside COPY: ignored, as
            // PostgreSQL does.
            b'H' | b'd' | b'c' | b'f' => return Ok(true),
            // A function call is answered like a simple query.
            b'F' => {
                let err = SqlError::unsupported("function calls are not supported");
                self.fail(&err, out);
                out.ready(self.status);
                return Ok(true);
            }
            _ => {}
        }
        if self.skipping && matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C') {
            return Ok(true);
        }
        let result = match tag {
            b'Q' => return self.simple_query(body).map(|()| true),
            b'P' => self.parse(body, out),
            b'B' => self.bind(body, out),
            b'D' => self.describe(body, out),
            b'E' => self.execute(body, out).await,
            b'C' => self.close(body, out),
            other => {
                return Err(Fatal::new(
                    "08P01",
                    format!("invalid frontend message type {other}"),
                ));
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(Step::Fatal(fatal)) => Err(fatal),
            Err(Step::Sql(err)) => {
                self.fail(&err, out);
                self.skipping = true;
                Ok(true)
            }
        }
    }

    fn fail(&mut self, err: &SqlError, out: &mut Out) {
        out.error(b'E', "ERROR", err.code, &err.message);
        if self.status == b'T' {
            self.status = b'E';
        }
    }

    /// `Q`: queues its statements; [`Session::step`] answers them one at
    /// a time, so the connection can write each answer before the next
    /// statement runs and a string of many statements cannot pile up
    /// their results in memory.
    fn simple_query(&mut self, body: &[u8]) -> Result<(), Fatal> {
        let mut reader = Reader::new(body);
        let text = reader.cstr()?;
        reader.finish()?;
        self.pending = sql::parse_many(text).into();
        Ok(())
    }

    /// Whether statements of a simple query are still to run.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Runs the next queued statement of a simple query; the first error
    /// drops the rest. After the last one, ReadyForQuery.
    pub async fn step(&mut self, out: &mut Out) {
        let Some(matched) = self.pending.pop_front() else {
            return;
        };
        let ran = match matched {
            Ok(matched) if matched.param_oids.is_empty() => self
                .run(&matched.statement, &[], out)
                .await
                .map(|outcome| (exec::result_columns(&matched.statement), outcome)),
            Ok(_) => Err(SqlError::new(
                "08P01",
                "a simple query has no parameters: use the extended protocol for $n",
            )),
            Err(err) => Err(err),
        };
        match ran {
            Ok((columns, Some(outcome))) => {
                if let Some(columns) = columns {
                    row_description(out, &columns, &[]);
                }
                // Text results: no format can be wrong.
                if let Err(err) = send_outcome(out, outcome, &[]) {
                    self.fail(&err, out);
                }
            }
            Ok((_, None)) => {}
            Err(err) => {
                self.fail(&err, out);
                self.pending.clear();
            }
        }
        if self.pending.is_empty() {
            out.ready(self.status);
        }
    }

    /// Runs one statement, keeping the transaction status. `None` when the
    /// statement answered through `out` itself (an empty query).
    async fn run(
        &mut self,
        statement: &Statement,
        params: &[Option<String>],
        out: &mut Out,
    ) -> Result<Option<Outcome>, SqlError> {
        if self.status == b'E' && !matches!(statement, Statement::Commit | Statement::Rollback) {
            return Err(SqlError::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let tag = match statement {
            Statement::Empty => {
                out.empty_query();
                return Ok(None);
            }
            Statement::Begin => {
                self.status = b'T';
                "BEGIN"
            }
            Statement::Commit => {
                let failed = self.status == b'E';
                self.status = b'I';
                if failed { "ROLLBACK" } else { "COMMIT" }
            }
            Statement::Rollback => {
                if self.status == b'T' {
                    out.error(
                        b'N',
                        "WARNING",
                        "01000",
                        "each statement commits as it runs here: nothing was rolled back",
                    );
                }
                self.status = b'I';
                "ROLLBACK"
            }
            Statement::Set(setting) => {
                if let Some(sql::Setting::IncludeDeleted(on)) = setting {
                    self.identity.include_deleted = *on;
                }
                "SET"
            }
            other => {
                return exec::execute(&self.api, &self.identity, other, params)
                    .await
                    .map(Some);
            }
        };
        Ok(Some(Outcome {
            columns: Vec::new(),
            rows: Vec::new(),
            tag: tag.to_owned(),
        }))
    }

    /// Parse: name, query, parameter type OIDs.
    fn parse(&mut self, body: &[u8], out: &mut Out) -> Result<(), Step> {
        let mut reader = Reader::new(body);
        let name = reader.cstr()?.to_owned();
        let text = reader.cstr()?;
        let count = reader.count16()?;
        let mut declared = Vec::with_capacity(count);
        for _ in 0..count {
            declared.push(reader.i32()? as u32);
        }
        reader.finish()?;
        if !name.is_empty() && self.statements.contains_key(&name) {
            return Err(Step::Sql(SqlError::new(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            )));
        }
        let replaced = self.statements.get(&name).map(|held| held.bytes);
        let full = replaced.is_none() && self.statements.len() >= PREPARED_MAX;
        self.admit("prepared statements", full, replaced, body.len())?;
        let matched = sql::parse_one(text)?;
        let mut param_oids = matched.param_oids;
        param_oids.resize(param_oids.len().max(declared.len()), 0);
        for (oid, declared) in param_oids.iter_mut().zip(declared) {
            if declared != 0 {
                *oid = declared;
            }
        }
        self.statements.insert(
            name,
            Prepared {
                bytes: body.len(),
                statement: matched.statement,
                param_oids,
            },
        );
        out.message(b'1', |_| {});
        Ok(())
    }

    /// Refuses to keep one more statement or portal of `bytes` when the
    /// connection holds as many as it may (`full`) or the bytes held would
    /// pass the budget; `replaced` is the size of the one it replaces.
    fn admit(
        &self,
        what: &str,
        full: bool,
        replaced: Option<usize>,
        bytes: usize,
    ) -> Result<(), Step> {
        let held: usize = self
            .statements
            .values()
            .map(|held| held.bytes)
            .sum::<usize>()
            + self.portals.values().map(|held| held.bytes).sum::<usize>();
        if full || held - replaced.unwrap_or(0) + bytes > self.retained_max {
            return Err(Step::Sql(SqlError::new(
                "54000",
                format!("this connection holds too many {what}: close some"),
            )));
        }
        Ok(())
    }

    fn prepared(&self, name: &str) -> Result<&Prepared, Step> {
        lookup(&self.statements, name, "26000", "prepared statement")
    }

    /// Bind: portal, statement, parameter formats and values, result
    /// formats.
    fn bind(&mut self, body: &[u8], out: &mut Out) -> Result<(), Step> {
        let mut reader = Reader::new(body);
        let portal = reader.cstr()?.to_owned();
        let name = reader.cstr()?;
        let param_formats = formats(&mut reader)?;
        let count = reader.count16()?;
        let mut raw = Vec::with_capacity(count);
        for _ in 0..count {
            let length = reader.i32()?;
            raw.push(match usize::try_from(length) {
                Ok(length) => Some(reader.take(length)?),
                Err(_) => None,
            });
        }
        let result_formats = formats(&mut reader)?;
        reader.finish()?;
        let prepared = self.prepared(name)?;
        if raw.len() != prepared.param_oids.len() {
            return Err(Step::Sql(SqlError::new(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement \"{name}\" requires {}",
                    raw.len(),
                    prepared.param_oids.len()
                ),
            )));
        }
        let mut params = Vec::with_capacity(raw.len());
        for (index, (value, oid)) in raw.into_iter().zip(&prepared.param_oids).enumerate() {
            let format = format_of(&param_formats, index, count)?;
            params.push(
                value
                    .map(|value| decode_param(value, *oid, format))
                    .transpose()?,
            );
        }
        let statement = prepared.statement.clone();
        let replaced = self.portals.get(&portal).map(|held| held.bytes);
        let full = replaced.is_none() && self.portals.len() >= PREPARED_MAX;
        self.admit("portals", full, replaced, body.len())?;
        self.portals.insert(
            portal,
            Portal {
                bytes: body.len(),
                statement,
                params,
                formats: result_formats,
                progress: PortalProgress::NotRun,
            },
        );
        out.message(b'2', |_| {});
        Ok(())
    }

    /// Describe a statement (parameter types, then columns) or a portal
    /// (columns in the formats Bind asked for).
    fn describe(&mut self, body: &[u8], out: &mut Out) -> Result<(), Step> {
        let (kind, name) = Reader::new(body).kind_and_name()?;
        let (statement, formats) = match kind {
            b'S' => {
                let prepared = self.prepared(name)?;
                out.message(b't', |body| {
                    body.extend_from_slice(&(prepared.param_oids.len() as i16).to_be_bytes());
                    for oid in &prepared.param_oids {
                        let oid = if *oid == 0 { sql::TEXT } else { *oid };
                        body.extend_from_slice(&oid.to_be_bytes());
                    }
                });
                (&prepared.statement, &[][..])
            }
            b'P' => {
                let portal = self.portal(name)?;
                (&portal.statement, &portal.formats[..])
            }
            _ => return Err(Step::Fatal(Fatal::new("08P01", "invalid Describe kind"))),
        };
        match exec::result_columns(statement) {
            Some(columns) => {
                check_formats(formats, columns.len())?;
                row_description(out, &columns, formats);
            }
            None => out.message(b'n', |_| {}),
        }
        Ok(())
    }

    fn portal(&self, name: &str) -> Result<&Portal, Step> {
        lookup(&self.portals, name, "34000", "portal")
    }

    /// Execute: up to `max_rows` rows (all when it is 0), then
    /// PortalSuspended if rows remain for the next Execute.
    async fn execute(&mut self, body: &[u8], out: &mut Out) -> Result<(), Step> {
        let mut reader = Reader::new(body);
        let name = reader.cstr()?.to_owned();
        let max_rows = usize::try_from(reader.i32()?).unwrap_or(0);
        reader.finish()?;
        let portal = self.portal(&name)?;
        let formats = portal.formats.clone();
        let outcome = match &portal.progress {
            PortalProgress::Finished(tag) => {
                out.command_complete(tag);
                return Ok(());
            }
            PortalProgress::Suspended(_) => self.take_suspended(&name),
            PortalProgress::NotRun => {
                let (statement, params) = (portal.statement.clone(), portal.params.clone());
                match self.run(&statement, &params, out).await? {
                    Some(outcome) => outcome,
                    None => return Ok(()),
                }
            }
        };
        let progress = send_limited(out, outcome, &formats, max_rows)?;
        if let Some(portal) = self.portals.get_mut(&name) {
            portal.progress = progress;
        }
        Ok(())
    }

    /// The held rows of a suspended portal.
    fn take_suspended(&mut self, name: &str) -> Outcome {
        let held = self
            .portals
            .get_mut(name)
            .map(|portal| std::mem::replace(&mut portal.progress, PortalProgress::NotRun));
        match held {
            Some(PortalProgress::Suspended(outcome)) => outcome,
            _ => unreachable!("called for a suspended portal only"),
        }
    }

    fn close(&mut self, body: &[u8], out: &mut Out) -> Result<(), Step> {
        let (kind, name) = Reader::new(body).kind_and_name()?;
        match kind {
            b'S' => self.statements.remove(name).map(drop),
            b'P' => self.portals.remove(name).map(drop),
            _ => return Err(Step::Fatal(Fatal::new("08P01", "invalid Close kind"))),
        };
        out.message(b'3', |_| {});
        Ok(())
    }
}

/// Why an extended-protocol step failed: a statement error (the
/// connection goes on after Sync) or broken framing (it ends).
enum Step {
    Sql(SqlError),
    Fatal(Fatal),
}

impl From<SqlError> for Step {
    fn from(err: SqlError) -> Step {
        Step::Sql(err)
    }
}

impl From<Fatal> for Step {
    fn from(fatal: Fatal) -> Step {
        Step::Fatal(fatal)
    }
}

/// A named statement or portal, or the SQLSTATE `code` saying it does
/// not exist.
fn lookup<'a, T>(
    map: &'a HashMap<String, T>,
    name: &str,
    code: &'static str,
    what: &str,
) -> Result<&'a T, Step> {
    map.get(name).ok_or_else(|| {
        Step::Sql(SqlError::new(
            code,
            format!("{what} \"{name}\" does not exist"),
        ))
    })
}

fn formats(reader: &mut Reader<'_>) -> Result<Vec<i16>, Fatal> {
    let count = reader.count16()?;
    (0..count).map(|_| reader.i16()).collect()
}

/// Format of value `index` of `count`: none given is text, one applies to
/// all, else one each.
fn format_of(formats: &[i16], index: usize, count: usize) -> Result<i16, SqlError> {
    let format = match formats.len() {
        0 => 0,
        1 => formats[0],
        n if n == count => formats[index],
        _ => return Err(SqlError::new("08P01", "format code count does not match")),
    };
    match format {
        0 | 1 => Ok(format),
        _ => Err(SqlError::new(
            "08P01",
            format!("invalid format code {format}"),
        )),
    }
}

fn check_formats(formats: &[i16], columns: usize) -> Result<(), SqlError> {
    (0..columns).try_for_each(|index| format_of(formats, index, columns).map(drop))
}

/// A bound value as text. Binary values are read per type; the types
/// offered are those of our columns.
fn decode_param(value: &[u8], oid: u32, format: i16) -> Result<String, SqlError> {
    let utf8 = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| SqlError::new("22021", "invalid byte sequence for encoding \"UTF8\""))
    };
    if format == 0 {
        return utf8(value);
    }
    let wrong = || SqlError::bad_input(format!("invalid binary value for type {oid}"));
    Ok(match oid {
        INT8 => i64::from_be_bytes(value.try_into().map_err(|_| wrong())?).to_string(),
        INT4 => i32::from_be_bytes(value.try_into().map_err(|_| wrong())?).to_string(),
        INT2 => i16::from_be_bytes(value.try_into().map_err(|_| wrong())?).to_string(),
        BOOL => match value {
            [0] => "false".to_owned(),
            [1] => "true".to_owned(),
            _ => return Err(wrong()),
        },
        JSONB => match value.split_first() {
            Some((1, text)) => utf8(text)?,
            _ => return Err(wrong()),
        },
        JSON | sql::TEXT | sql::VARCHAR | sql::UNKNOWN | 0 => utf8(value)?,
        _ => {
            return Err(SqlError::unsupported(format!(
                "binary parameters of type {oid} are not supported; send text"
            )));
        }
    })
}

/// RowDescription for `columns`, each in its format.
fn row_description(out: &mut Out, columns: &[(String, u32)], formats: &[i16]) {
    out.message(b'T', |body| {
        body.extend_from_slice(&(columns.len() as i16).to_be_bytes());
        for (index, (name, oid)) in columns.iter().enumerate() {
            codec::cstr(body, name);
            body.extend_from_slice(&0i32.to_be_bytes()); // no table OID
            body.extend_from_slice(&0i16.to_be_bytes()); // no column number
            body.extend_from_slice(&oid.to_be_bytes());
            let size: i16 = match *oid {
                INT8 => 8,
                INT4 => 4,
                BOOL => 1,
                _ => -1,
            };
            body.extend_from_slice(&size.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes()); // no type modifier
            let format = format_of(formats, index, columns.len()).unwrap_or(0);
            body.extend_from_slice(&format.to_be_bytes());
        }
    });
}

/// Sends at most `max_rows` rows of `outcome` (all when 0): then
/// PortalSuspended and the rest to keep, or CommandComplete. A SELECT's
/// tag counts the rows of this Execute, as PostgreSQL's does.
fn send_limited(
    out: &mut Out,
    mut outcome: Outcome,
    formats: &[i16],
    max_rows: usize,
) -> Result<PortalProgress, SqlError> {
    let is_select = outcome.tag.starts_with("SELECT");
    if max_rows > 0 && outcome.rows.len() > max_rows {
        let rest = outcome.rows.split_off(max_rows);
        send_rows(out, &outcome, formats)?;
        out.message(b's', |_| {});
        outcome.rows = rest;
        return Ok(PortalProgress::Suspended(outcome));
    }
    let again = if is_select {
        outcome.tag = format!("SELECT {}", outcome.rows.len());
        "SELECT 0".to_owned()
    } else {
        outcome.tag.clone()
    };
    send_outcome(out, outcome, formats)?;
    Ok(PortalProgress::Finished(again))
}

/// DataRows and CommandComplete of an outcome.
fn send_outcome(out: &mut Out, outcome: Outcome, formats: &[i16]) -> Result<(), SqlError> {
    send_rows(out, &outcome, formats)?;
    out.command_complete(&outcome.tag);
    Ok(())
}

/// The DataRows of an outcome.
fn send_rows(out: &mut Out, outcome: &Outcome, formats: &[i16]) -> Result<(), SqlError> {
    let count = outcome.columns.len();
    for row in &outcome.rows {
        let mut cells = Vec::with_capacity(count);
        for (index, (cell, (_, oid))) in row.iter().zip(&outcome.columns).enumerate() {
            let format = format_of(formats, index, count)?;
            cells.push(
                cell.as_deref()
                    .map(|text| encode(text, *oid, format))
                    .transpose()?,
            );
        }
        out.message(b'D', |body| {
            body.extend_from_slice(&(cells.len() as i16).to_be_bytes());
            for cell in &cells {
                match cell {
                    Some(bytes) => {
                        body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        body.extend_from_slice(bytes);
                    }
                    None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        });
    }
    Ok(())
}

/// A cell's bytes in `format`; cells are rendered as text, so binary
/// integers and booleans are parsed back from it.
fn encode(text: &str, oid: u32, format: i16) -> Result<Vec<u8>, SqlError> {
    if format == 0 {
        return Ok(text.as_bytes().to_vec());
    }
    let number = || {
        text.parse::<i64>()
            .map_err(|_| SqlError::new("XX000", format!("not an integer: {text}")))
    };
    Ok(match oid {
        INT8 => number()?.to_be_bytes().to_vec(),
        INT4 => (number()? as i32).to_be_bytes().to_vec(),
        BOOL => vec![u8::from(text == "t")],
        JSONB => {
            let mut bytes = vec![1];
            bytes.extend_from_slice(text.as_bytes());
            bytes
        }
        _ => text.as_bytes().to_vec(),
    })
}
