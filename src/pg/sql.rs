//! The SQL this front end understands: a tokenizer and a matcher for the
//! few statement shapes that map onto existing engine commands (timeline
//! pages, reads by key, inserts, edits, soft deletes), plus what drivers
//! send on connect. Not a SQL engine: anything else is refused with the
//! SQLSTATE a PostgreSQL client expects, and the connection stays usable.

use super::catalog::{self, CatalogAnswer};
use crate::engine::ThreadSort;

pub const BOOL: u32 = 16;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const JSON: u32 = 114;
pub const UNKNOWN: u32 = 705;
pub const VARCHAR: u32 = 1043;
pub const JSONB: u32 = 3802;

/// Statements longer than this are not one of ours.
const TOKENS_MAX: usize = 512;
/// `$n` above this cannot be bound (Bind counts parameters in an i16).
const PARAMS_MAX: usize = i16::MAX as usize;

/// A relation's column: its name and type OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub oid: u32,
}

const fn column(name: &'static str, oid: u32) -> Column {
    Column { name, oid }
}

pub const THREAD_COLUMNS: &[Column] = &[
    column("key", TEXT),
    column("title", TEXT),
    column("author", TEXT),
    column("created_ts", INT8),
    column("updated_ts", INT8),
    column("deleted", BOOL),
];

pub const MESSAGE_COLUMNS: &[Column] = &[
    column("key", TEXT),
    column("thread", TEXT),
    column("author", TEXT),
    column("created_ts", INT8),
    column("updated_ts", INT8),
    column("body", JSONB),
    column("version", INT4),
    column("reply_to", TEXT),
    column("deleted", BOOL),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Threads,
    Messages,
}

impl Relation {
    pub fn columns(self) -> &'static [Column] {
        match self {
            Relation::Threads => THREAD_COLUMNS,
            Relation::Messages => MESSAGE_COLUMNS,
        }
    }
}

/// The conditions of a WHERE clause, each at most once.
#[derive(Default)]
struct Conditions {
    thread: Option<Value>,
    key: Option<(KeyOp, Value)>,
    /// `created_ts < v` or `> v` (messages only).
    created_ts: Option<(KeyOp, Value)>,
}

/// A statement that failed to match or to run: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SqlError {
        SqlError {
            code,
            message: message.into(),
        }
    }

    pub fn unsupported(message: impl Into<String>) -> SqlError {
        SqlError::new("0A000", message)
    }

    pub fn bad_input(message: impl Into<String>) -> SqlError {
        SqlError::new("22P02", message)
    }
}

/// A value in a statement: a literal, or `$n` (1-based) bound later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    Param(usize),
}

/// How a `key` condition limits a message page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    Eq,
    Before,
    After,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub relation: Relation,
    /// Indexes into the relation's columns, in output order.
    pub columns: Vec<usize>,
    pub thread: Option<Value>,
    pub key: Option<(KeyOp, Value)>,
    /// A timestamp bound on a message page (never with `key`).
    pub created_ts: Option<(KeyOp, Value)>,
    pub sort: ThreadSort,
    /// Whether `ORDER BY` was given; without it the order is ours to pick.
    pub ordered: bool,
    pub descending: bool,
    pub limit: Option<Value>,
}

/// `INSERT`, `UPDATE` and `DELETE` on one of the relations; `values` names
/// each assigned column with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub relation: Relation,
    pub values: Vec<(&'static str, Value)>,
    pub thread: Option<Value>,
    pub key: Option<Value>,
    pub returning: Option<Vec<usize>>,
}

/// What a one-row constant query answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constant {
    Version,
    CurrentUser,
    CurrentDatabase,
    CurrentSchema,
    One,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Empty,
    Begin,
    Commit,
    Rollback,
    /// SET/RESET/DISCARD: `Some` for the one setting with an effect,
    /// `None` for the rest (accepted, no effect).
    Set(Option<Setting>),
    Show(String),
    /// A read of the system catalogs, answered when parsed.
    Catalog(CatalogAnswer),
    Constant(Constant, String),
    Select(Select),
    Insert(Write),
    Update(Write),
    Delete(Write),
}

/// A session setting that changes what statements do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Reads list soft-deleted rows too.
    IncludeDeleted(bool),
}

/// A matched statement and the type OID of each `$n` it uses (0 where
/// nothing says; reported as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub statement: Statement,
    pub param_oids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Unquoted identifiers and keywords, lowercased; quoted ones as written.
    Word(String),
    Str(String),
    Number(String),
    Param(usize),
    Symbol(&'static str),
}

/// Splits `sql` into one statement per `;` (for simple queries, which may
/// hold several) and matches each.
pub fn parse_many(sql: &str) -> Vec<Result<Matched, SqlError>> {
    if let Some(answer) = catalog::answer(sql) {
        return vec![Ok(Matched {
            statement: Statement::Catalog(answer),
            param_oids: Vec::new(),
        })];
    }
    match tokenize(sql) {
        Err(err) => vec![Err(err)],
        Ok(tokens) => {
            let mut out: Vec<_> = tokens
                .split(|token| *token == Token::Symbol(";"))
                .filter(|part| !part.is_empty())
                .map(matched)
                .collect();
            if out.is_empty() {
                out.push(Ok(Matched {
                    statement: Statement::Empty,
                    param_oids: Vec::new(),
                }));
            }
            out
        }
    }
}

/// One statement (the extended protocol allows only one).
pub fn parse_one(sql: &str) -> Result<Matched, SqlError> {
    let mut all = parse_many(sql);
    if all.len() > 1 {
        return Err(SqlError::new(
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ));
    }
    all.pop().expect("at least one statement")
}

fn matched(tokens: &[Token]) -> Result<Matched, SqlError> {
    let mut parser = Parser {
        tokens,
        at: 0,
        param_oids: Vec::new(),
    };
    let statement = parser.statement()?;
    if parser.at != tokens.len() {
        return Err(SqlError::unsupported(
            "statement not supported: unexpected text after a supported form (see README, SQL access)",
        ));
    }
    Ok(Matched {
        statement,
        param_oids: parser.param_oids,
    })
}

fn tokenize(sql: &str) -> Result<Vec<Token>, SqlError> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if tokens.len() > TOKENS_MAX {
            return Err(SqlError::unsupported("statement too long for this server"));
        }
        let byte = bytes[at];
        let rest = &sql[at..];
        if byte.is_ascii_whitespace() {
            at += 1;
        } else if rest.starts_with("--") {
            at += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let end = rest
                .find("*/")
                .ok_or_else(|| SqlError::new("42601", "unterminated /* comment"))?;
            at += end + 2;
        } else if byte == b'\'' || byte == b'"' {
            let (text, used) = quoted(rest, byte as char)?;
            tokens.push(if byte == b'\'' {
                Token::Str(text)
            } else {
                Token::Word(text)
            });
            at += used;
        } else if byte == b'$' {
            let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
            let index: usize = rest[1..1 + digits]
                .parse()
                .ok()
                .filter(|index| (1..=PARAMS_MAX).contains(index))
                .ok_or_else(|| SqlError::new("42601", "invalid parameter reference"))?;
            tokens.push(Token::Param(index));
            at += 1 + digits;
        } else if byte.is_ascii_digit() {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b'.')
                .count();
            tokens.push(Token::Number(rest[..len].to_owned()));
            at += len;
        } else if byte.is_ascii_alphabetic() || byte == b'_' {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
                .count();
            tokens.push(Token::Word(rest[..len].to_ascii_lowercase()));
            at += len;
        } else {
            let symbol = [
                "::", "<=", ">=", "<>", "!=", "(", ")", ",", "=", "<", ">", "*", ";", ".", "-",
            ]
            .into_iter()
            .find(|symbol| rest.starts_with(symbol))
            .ok_or_else(|| {
                SqlError::new(
                    "42601",
                    format!("syntax error at {:?}", rest.chars().next().unwrap_or(' ')),
                )
            })?;
            tokens.push(Token::Symbol(symbol));
            at += symbol.len();
        }
    }
    Ok(tokens)
}

/// A `'…'` or `"…"` token starting at `text[0]`, doubled quotes escaped:
/// its content and the bytes it spans.
fn quoted(text: &str, quote: char) -> Result<(String, usize), SqlError> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((at, ch)) = chars.next() {
        if ch == quote {
            if chars.peek().map(|(_, next)| *next) == Some(quote) {
                chars.next();
                out.push(quote);
                continue;
            }
            return Ok((out, at + 1));
        }
        out.push(ch);
    }
    Err(SqlError::new("42601", "unterminated quoted string"))
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    param_oids: Vec<u32>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn word(&mut self, word: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w == word);
        self.at += usize::from(found);
        found
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        self.at += usize::from(found);
        found
    }

    fn expect_word(&mut self, word: &str) -> Result<(), SqlError> {
        if self.word(word) {
            Ok(())
        } else {
            Err(unsupported_shape())
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), SqlError> {
        if self.symbol(symbol) {
            Ok(())
        } else {
            Err(unsupported_shape())
        }
    }

    fn identifier(&mut self) -> Result<String, SqlError> {
        match self.peek() {
            Some(Token::Word(word)) => {
                let word = word.clone();
                self.at += 1;
                Ok(word)
            }
            _ => Err(unsupported_shape()),
        }
    }

    fn statement(&mut self) -> Result<Statement, SqlError> {
        let first = self.identifier()?;
        match first.as_str() {
            "begin" | "start" => {
                self.word("transaction");
                self.word("work");
                self.skip_rest();
                Ok(Statement::Begin)
            }
            "commit" | "end" => {
                self.skip_rest();
                Ok(Statement::Commit)
            }
            "rollback" | "abort" => {
                self.skip_rest();
                Ok(Statement::Rollback)
            }
            "set" | "reset" | "discard" | "deallocate" => self.setting(&first),
            "show" => {
                let name = self.setting_name()?;
                Ok(Statement::Show(name))
            }
            "select" => self.select(),
            "insert" => self.insert(),
            "update" => self.update(),
            "delete" => self.delete(),
            _ => Err(SqlError::unsupported(format!(
                "{} statements are not supported (see README, SQL access)",
                first.to_uppercase()
            ))),
        }
    }

    /// `SET progressdb.include_deleted = on|off`, `RESET` of it (or
    /// `RESET ALL`, `DISCARD ALL`); other settings are accepted without
    /// effect, since the parameters a client reads back are fixed.
    fn setting(&mut self, verb: &str) -> Result<Statement, SqlError> {
        let name = match verb {
            "set" | "reset" => self.setting_name().unwrap_or_default(),
            _ => self.identifier().unwrap_or_default(),
        };
        let setting = match (verb, name.as_str()) {
            ("set", "progressdb.include_deleted") => {
                if !self.symbol("=") {
                    self.expect_word("to")?;
                }
                Some(Setting::IncludeDeleted(self.on_or_off()?))
            }
            (_, "progressdb.include_deleted" | "all") => Some(Setting::IncludeDeleted(false)),
            (_, other) if other.starts_with("progressdb.") => {
                return Err(SqlError::new(
                    "42704",
                    format!("unrecognized configuration parameter \"{other}\""),
                ));
            }
            _ => None,
        };
        self.skip_rest();
        Ok(Statement::Set(setting))
    }

    /// A setting's name, `a` or `a.b`.
    fn setting_name(&mut self) -> Result<String, SqlError> {
        let mut name = self.identifier()?;
        if self.symbol(".") {
            name.push('.');
            name.push_str(&self.identifier()?);
        }
        Ok(name)
    }

    fn on_or_off(&mut self) -> Result<bool, SqlError> {
        let value = match self.tokens.get(self.at) {
            Some(Token::Word(word) | Token::Str(word) | Token::Number(word)) => {
                word.to_ascii_lowercase()
            }
            _ => String::new(),
        };
        self.at += 1;
        match value.as_str() {
            "on" | "true" | "1" | "yes" => Ok(true),
            "off" | "false" | "0" | "no" => Ok(false),
            _ => Err(SqlError::bad_input(
                "progressdb.include_deleted is on or off",
            )),
        }
    }

    fn skip_rest(&mut self) {
        self.at = self.tokens.len();
    }

    /// `FROM <relation>`: one of ours, optionally `public.`-qualified.
    fn relation(&mut self) -> Result<Relation, SqlError> {
        let mut name = self.identifier()?;
        if self.symbol(".") {
            let schema = name;
            name = self.identifier()?;
            if schema != "public" {
                return Err(undefined_table(&format!("{schema}.{name}")));
            }
        }
        match name.as_str() {
            "threads" => Ok(Relation::Threads),
            "messages" => Ok(Relation::Messages),
            other => Err(undefined_table(other)),
        }
    }

    fn value(&mut self, oid: u32) -> Result<Value, SqlError> {
        let value = match self.peek().cloned() {
            Some(Token::Param(index)) => {
                if self.param_oids.len() < index {
                    self.param_oids.resize(index, 0);
                }
                let slot = &mut self.param_oids[index - 1];
                if *slot == 0 {
                    *slot = oid;
                }
                Value::Param(index)
            }
            Some(Token::Str(text)) => Value::Text(text),
            Some(Token::Number(text)) => Value::Text(text),
            Some(Token::Word(word)) if word == "null" => Value::Null,
            Some(Token::Word(word)) if word == "true" || word == "false" => Value::Text(word),
            _ => return Err(unsupported_shape()),
        };
        self.at += 1;
        // A cast such as `$1::text` or `'{}'::jsonb` changes nothing here:
        // the column's type decides how the value is read.
        if self.symbol("::") {
            self.identifier()?;
        }
        Ok(value)
    }

    fn select(&mut self) -> Result<Statement, SqlError> {
        if let Some(constant) = self.constant()? {
            return Ok(constant);
        }
        let projection = self.projection()?;
        self.expect_word("from")?;
        let relation = self.relation()?;
        let columns = resolve_columns(relation, projection)?;
        let Conditions {
            thread,
            key,
            created_ts,
        } = if self.word("where") {
            self.conditions(relation)?
        } else {
            Conditions::default()
        };
        let ordered = matches!(self.peek(), Some(Token::Word(word)) if word == "order");
        let (sort, descending) = self.order_by(relation)?;
        let limit = if self.word("limit") {
            Some(self.value(INT8)?)
        } else {
            None
        };
        Ok(Statement::Select(Select {
            relation,
            columns,
            thread,
            key,
            created_ts,
            sort,
            ordered,
            descending,
            limit,
        }))
    }

    /// `SELECT version()`, `current_user`, `current_database()`,
    /// `current_schema()` and `SELECT 1`: what drivers and tools check on
    /// connect. `None` when the statement is not one of them.
    fn constant(&mut self) -> Result<Option<Statement>, SqlError> {
        let start = self.at;
        let constant = match self.peek() {
            Some(Token::Number(number)) if number == "1" => {
                self.at += 1;
                Constant::One
            }
            Some(Token::Word(word)) => {
                let constant = match word.as_str() {
                    "version" => Constant::Version,
                    "current_user" | "session_user" | "user" => Constant::CurrentUser,
                    "current_database" => Constant::CurrentDatabase,
                    "current_schema" => Constant::CurrentSchema,
                    _ => return Ok(None),
                };
                self.at += 1;
                let call = self.symbol("(");
                if call && !self.symbol(")") {
                    return Err(unsupported_shape());
                }
                constant
            }
            _ => return Ok(None),
        };
        let mut name = match self.tokens.get(start) {
            Some(Token::Word(word)) => word.clone(),
            _ => "?column?".to_owned(),
        };
        if self.word("as") {
            name = self.identifier()?;
        }
        if self.at != self.tokens.len() {
            // `SELECT version() FROM …` and the like: not a constant.
            self.at = start;
            return Ok(None);
        }
        Ok(Some(Statement::Constant(constant, name)))
    }

    /// `*` or a comma-separated list of column names.
    fn projection(&mut self) -> Result<Option<Vec<String>>, SqlError> {
        if self.symbol("*") {
            return Ok(None);
        }
        let mut names = vec![self.identifier()?];
        while self.symbol(",") {
            names.push(self.identifier()?);
        }
        Ok(Some(names))
    }

    /// `thread = v`, `key = v`, `key < v`, `key > v`, `created_ts < v`,
    /// `created_ts > v`, joined by AND, in any order, each at most once.
    fn conditions(&mut self, relation: Relation) -> Result<Conditions, SqlError> {
        let mut found = Conditions::default();
        loop {
            let name = self.identifier()?;
            let op = match self.peek() {
                Some(Token::Symbol("=")) => KeyOp::Eq,
                Some(Token::Symbol("<")) => KeyOp::Before,
                Some(Token::Symbol(">")) => KeyOp::After,
                _ => return Err(unsupported_shape()),
            };
            self.at += 1;
            let messages = relation == Relation::Messages;
            let value = self.value(if name == "created_ts" { INT8 } else { TEXT })?;
            match (name.as_str(), op) {
                ("thread", KeyOp::Eq) if messages && found.thread.is_none() => {
                    found.thread = Some(value);
                }
                ("key", _) if found.key.is_none() && found.created_ts.is_none() => {
                    found.key = Some((op, value));
                }
                ("created_ts", KeyOp::Before | KeyOp::After)
                    if messages && found.key.is_none() && found.created_ts.is_none() =>
                {
                    found.created_ts = Some((op, value));
                }
                _ => return Err(unsupported_shape()),
            }
            if !self.word("and") {
                return Ok(found);
            }
        }
    }

    /// `ORDER BY created_ts|updated_ts [ASC|DESC]`; messages are ordered by
    /// `created_ts`, threads newest first.
    fn order_by(&mut self, relation: Relation) -> Result<(ThreadSort, bool), SqlError> {
        if !self.word("order") {
            return Ok((ThreadSort::CreatedTs, relation == Relation::Threads));
        }
        self.expect_word("by")?;
        let sort = match self.identifier()?.as_str() {
            "created_ts" => ThreadSort::CreatedTs,
            "updated_ts" if relation == Relation::Threads => ThreadSort::UpdatedTs,
            _ => return Err(unsupported_shape()),
        };
        let descending = self.word("desc");
        if !descending {
            self.word("asc");
        }
        Ok((sort, descending))
    }

    fn returning(&mut self, relation: Relation) -> Result<Option<Vec<usize>>, SqlError> {
        if !self.word("returning") {
            return Ok(None);
        }
        let projection = self.projection()?;
        resolve_columns(relation, projection).map(Some)
    }

    fn insert(&mut self) -> Result<Statement, SqlError> {
        self.expect_word("into")?;
        let relation = self.relation()?;
        let allowed: &[&'static str] = match relation {
            Relation::Messages => &["thread", "body", "author", "reply_to"],
            Relation::Threads => &["title", "key"],
        };
        self.expect_symbol("(")?;
        let mut names = Vec::new();
        loop {
            let name = self.identifier()?;
            let known = allowed
                .iter()
                .find(|allowed| **allowed == name)
                .ok_or_else(|| {
                    SqlError::unsupported(format!(
                        "INSERT INTO {relation:?} sets only {}",
                        allowed.join(", ")
                    ))
                })?;
            if names.contains(known) {
                return Err(SqlError::new(
                    "42701",
                    format!("column {name} specified more than once"),
                ));
            }
            names.push(*known);
            if !self.symbol(",") {
                break;
            }
        }
        self.expect_symbol(")")?;
        self.expect_word("values")?;
        self.expect_symbol("(")?;
        let mut values = Vec::new();
        for (index, name) in names.iter().enumerate() {
            if index > 0 {
                self.expect_symbol(",")?;
            }
            values.push((*name, self.value(column_oid(relation, name))?));
        }
        self.expect_symbol(")")?;
        let returning = self.returning(relation)?;
        Ok(Statement::Insert(Write {
            relation,
            values,
            thread: None,
            key: None,
            returning,
        }))
    }

    fn update(&mut self) -> Result<Statement, SqlError> {
        let relation = self.relation()?;
        self.expect_word("set")?;
        let target = match relation {
            Relation::Messages => "body",
            Relation::Threads => "title",
        };
        if self.identifier()? != target {
            return Err(SqlError::unsupported(format!(
                "UPDATE {relation:?} may only SET {target}"
            )));
        }
        self.expect_symbol("=")?;
        let value = self.value(column_oid(relation, target))?;
        let (thread, key) = self.target_row(relation)?;
        let returning = self.returning(relation)?;
        Ok(Statement::Update(Write {
            relation,
            values: vec![(target, value)],
            thread,
            key,
            returning,
        }))
    }

    fn delete(&mut self) -> Result<Statement, SqlError> {
        self.expect_word("from")?;
        let relation = self.relation()?;
        let (thread, key) = self.target_row(relation)?;
        let returning = self.returning(relation)?;
        Ok(Statement::Delete(Write {
            relation,
            values: Vec::new(),
            thread,
            key,
            returning,
        }))
    }

    /// `WHERE` naming exactly one row: `key = v` (and `thread = v` for
    /// messages). Writes never touch more than one row.
    fn target_row(
        &mut self,
        relation: Relation,
    ) -> Result<(Option<Value>, Option<Value>), SqlError> {
        let one_row = || {
            SqlError::unsupported(match relation {
                Relation::Messages => "writes to messages need WHERE thread = … AND key = …",
                Relation::Threads => "writes to threads need WHERE key = …",
            })
        };
        if !self.word("where") {
            return Err(one_row());
        }
        let Conditions {
            thread,
            key,
            created_ts,
        } = self.conditions(relation)?;
        let key = match key {
            Some((KeyOp::Eq, key)) if created_ts.is_none() => key,
            _ => return Err(one_row()),
        };
        if relation == Relation::Messages && thread.is_none() {
            return Err(one_row());
        }
        Ok((thread, Some(key)))
    }
}

fn column_oid(relation: Relation, name: &str) -> u32 {
    relation
        .columns()
        .iter()
        .find(|column| column.name == name)
        .map_or(TEXT, |column| column.oid)
}

/// Column names to indexes; `None` (`*`) is every column.
fn resolve_columns(relation: Relation, names: Option<Vec<String>>) -> Result<Vec<usize>, SqlError> {
    let columns = relation.columns();
    let Some(names) = names else {
        return Ok((0..columns.len()).collect());
    };
    names
        .iter()
        .map(|name| {
            columns
                .iter()
                .position(|column| column.name == name)
                .ok_or_else(|| SqlError::new("42703", format!("column \"{name}\" does not exist")))
        })
        .collect()
}

fn undefined_table(name: &str) -> SqlError {
    if name.starts_with("pg_") || name.starts_with("information_schema") {
        return SqlError::unsupported(format!(
            "catalog relation \"{name}\" is not served: this server has only threads and messages"
        ));
    }
    SqlError::new("42P01", format!("relation \"{name}\" does not exist"))
}

fn unsupported_shape() -> SqlError {
    SqlError::unsupported(
        "statement form not supported (see README, SQL access, for the supported forms)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        parse_one(sql).unwrap().statement
    }

    #[test]
    fn timeline_pages_match() {
        let Statement::Select(select) = one(
            "SELECT key, body FROM messages WHERE thread = $1 AND key < $2 ORDER BY created_ts DESC LIMIT 20;",
        ) else {
            panic!("not a select")
        };
        assert_eq!(select.relation, Relation::Messages);
        assert_eq!(select.columns, vec![0, 5]);
        assert_eq!(select.thread, Some(Value::Param(1)));
        assert_eq!(select.key, Some((KeyOp::Before, Value::Param(2))));
        assert!(select.descending);
        assert_eq!(select.limit, Some(Value::Text("20".into())));
        let matched = parse_one(
            "SELECT key FROM messages WHERE created_ts > $2 AND thread = $1 ORDER BY created_ts LIMIT 5",
        )
        .unwrap();
        assert_eq!(matched.param_oids, vec![TEXT, INT8]);
        let Statement::Select(select) = matched.statement else {
            panic!("not a select")
        };
        assert_eq!(select.created_ts, Some((KeyOp::After, Value::Param(2))));
        let err = parse_one(
            "SELECT key FROM messages WHERE thread = 't' AND key < 'k' AND created_ts < 1",
        );
        assert_eq!(err.unwrap_err().code, "0A000", "one bound at a time");
        let matched = parse_one("select * from public.threads where key = $1::text").unwrap();
        assert_eq!(matched.param_oids, vec![TEXT]);
    }

    #[test]
    fn writes_match_and_name_one_row() {
        let matched =
            parse_one("INSERT INTO messages (thread, body) VALUES ($1, $2) RETURNING key, version")
                .unwrap();
        assert_eq!(matched.param_oids, vec![TEXT, JSONB]);
        assert!(matches!(matched.statement, Statement::Insert(_)));
        assert!(matches!(
            one("UPDATE messages SET body = '{\"a\":1}' WHERE thread = 't' AND key = 'k'"),
            Statement::Update(_)
        ));
        let err = parse_one("DELETE FROM messages WHERE thread = 't'").unwrap_err();
        assert_eq!(err.code, "0A000");
    }

    #[test]
    fn include_deleted_is_the_one_setting_with_an_effect() {
        let set = |on| Statement::Set(Some(Setting::IncludeDeleted(on)));
        assert_eq!(one("SET progressdb.include_deleted = on"), set(true));
        assert_eq!(one("set progressdb.include_deleted to 'off'"), set(false));
        assert_eq!(one("RESET progressdb.include_deleted"), set(false));
        assert_eq!(one("RESET ALL"), set(false));
        assert_eq!(one("DISCARD ALL"), set(false));
        assert_eq!(one("SET extra_float_digits = 3"), Statement::Set(None));
        assert_eq!(
            one("SHOW progressdb.include_deleted"),
            Statement::Show("progressdb.include_deleted".into())
        );
        let code = |sql: &str| parse_one(sql).unwrap_err().code;
        assert_eq!(code("SET progressdb.include_deleted = maybe"), "22P02");
        assert_eq!(code("SET progressdb.nothing = 1"), "42704");
    }

    #[test]
    fn everything_else_gets_a_sqlstate() {
        let code = |sql: &str| parse_one(sql).unwrap_err().code;
        assert_eq!(code("SELECT * FROM users"), "42P01");
        assert_eq!(code("DROP TABLE messages"), "0A000");
        assert_eq!(
            code("SELECT nope FROM messages WHERE thread = 't'"),
            "42703"
        );
        assert_eq!(code("SELECT 'unterminated"), "42601");
        assert_eq!(code("SELECT $0"), "42601");
        assert_eq!(code("SELECT $99999999999999999999999"), "42601");
        assert_eq!(code("SELECT * FROM pg_catalog.pg_type"), "0A000");
        assert_eq!(code("SELECT * FROM pg_type"), "0A000");
        assert_eq!(code("select 1; select 2"), "42601");
        assert_eq!(parse_many("select 1; select version()").len(), 2);
        assert_eq!(one(" -- nothing\n "), Statement::Empty);
    }

    /// Hostile-input smoke test of the tokenizer and matcher: mutated
    /// statements never panic, and each gets a statement or a SQLSTATE.
    #[test]
    fn mutated_statements_never_panic() {
        const SEEDS: &[&str] = &[
            "SELECT key, body FROM messages WHERE thread = $1 AND key < $2 ORDER BY created_ts DESC LIMIT 20",
            "INSERT INTO messages (thread, body, author, reply_to) VALUES ('t', '{\"a\":\"\\u00e9\"}', $1::text, NULL) RETURNING *",
            "UPDATE threads SET title = 'it''s' WHERE key = $1 RETURNING key; SHOW DateStyle",
            "/* c */ DELETE FROM public.messages WHERE key = 'k' AND thread = \"t\" -- end",
        ];
        let tokens = [
            "'", "\"", "$", "$0", "::", "/*", "--", ";", "(", "é", "\u{0}", "9",
        ];
        let mut rng = crate::rng::XorShift::new(0x5a1_u64);
        for _ in 0..20_000 {
            let mut chars: Vec<char> = SEEDS[rng.below(SEEDS.len())].chars().collect();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(chars.len() + 1);
                match rng.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.truncate(at),
                    _ => {
                        let token = tokens[rng.below(tokens.len())];
                        chars.splice(at..at, token.chars());
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            for result in parse_many(&text) {
                if let Err(err) = result {
                    assert_eq!(err.code.len(), 5, "{text:?}: {err:?}");
                }
            }
        }
    }
}
