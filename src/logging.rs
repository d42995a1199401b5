//! Structured logs: one logfmt line per event on stderr.
//!
//! ```text
//! ts=2025-01-02T03:04:05.678Z level=info msg="stopped cleanly"
//! ts=2025-01-02T03:04:05.678Z level=info msg=request method=POST route=post_message status=201 duration_us=412 shard=1
//! ```
//!
//! The level (`--log-level`) and the access log switch (`--access-log`)
//! are set once at start, before any shard runs, and only read afterwards;
//! they are the only state here. Each line is formatted in full and handed
//! to stderr in one write, so lines from different cores never interleave.
//! Callers pass field values that are safe to print: never keys, headers or
//! bodies.

use std::fmt::{Display, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity, most severe first: a configured level shows itself and
/// everything above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Sets the level and access log switch; called once before shards start.
/// Also routes the warnings and errors our libraries report through the
/// `log` facade (the storage engine, glommio) here.
pub fn init(level: Level, access_log: bool) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    ACCESS_LOG.store(access_log, Ordering::Relaxed);
    // Fails only when a logger is already set (a second init): keep it.
    if log::set_logger(&LIBRARY_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Events from libraries, as `source=<crate::module>` lines.
struct LibraryLog;

static LIBRARY_LOG: LibraryLog = LibraryLog;

impl log::Log for LibraryLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            _ => return,
        };
        let detail = record.args().to_string();
        log(
            level,
            "library event",
            &[("source", &record.target()), ("detail", &detail)],
        );
    }

    fn flush(&self) {}
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn access_log_enabled() -> bool {
    ACCESS_LOG.load(Ordering::Relaxed)
}

/// A field value: printed bare when it is a plain token, else quoted.
pub type Field<'a> = (&'a str, &'a dyn Display);

pub fn error(msg: &str, fields: &[Field<'_>]) {
    log(Level::Error, msg, fields);
}

pub fn warn(msg: &str, fields: &[Field<'_>]) {
    log(Level::Warn, msg, fields);
}

pub fn info(msg: &str, fields: &[Field<'_>]) {
    log(Level::Info, msg, fields);
}

pub fn debug(msg: &str, fields: &[Field<'_>]) {
    log(Level::Debug, msg, fields);
}

pub fn log(level: Level, msg: &str, fields: &[Field<'_>]) {
    if enabled(level) {
        emit(level, msg, fields);
    }
}

/// One access log line. Access lines are info events like any other, so
/// `--log-level warn` or `error` hides them too.
pub fn access(fields: &[Field<'_>]) {
    if access_log_enabled() {
        log(Level::Info, "request", fields);
    }
}

fn emit(level: Level, msg: &str, fields: &[Field<'_>]) {
    let mut line = format_line(SystemTime::now(), level, msg, fields);
    line.push('\n');
    // One write per line; a failing stderr has nowhere to report to.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn format_line(now: SystemTime, level: Level, msg: &str, fields: &[Field<'_>]) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("ts=");
    push_timestamp(&mut line, now);
    line.push_str(" level=");
    line.push_str(level.name());
    line.push_str(" msg=");
    push_value(&mut line, msg);
    let mut value = String::new();
    for (key, field) in fields {
        value.clear();
        let _ = write!(value, "{field}");
        line.push(' ');
        line.push_str(key);
        line.push('=');
        push_value(&mut line, &value);
    }
    line
}

/// Bare if the value is a non-empty run of characters that cannot be
/// confused with logfmt syntax; otherwise quoted with `"` `\` and control
/// characters escaped, so one event is always exactly one line.
fn push_value(line: &mut String, value: &str) {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != '"' && c != '=' && c != '\\');
    if bare {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
fn push_timestamp(line: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, millis: u64| {
            let mut out = String::new();
            push_timestamp(
                &mut out,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
            );
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789.
        assert_eq!(at(951_827_696, 789), "2000-02-29T12:34:56.789Z");
        assert_eq!(at(1_735_787_045, 5), "2025-01-02T03:04:05.005Z");
    }

    #[test]
    fn values_are_bare_or_quoted_and_escaped() {
        let line = format_line(
            UNIX_EPOCH,
            Level::Warn,
            "checkpoint failed",
            &[
                ("shard", &3),
                ("why", &"disk \"full\"\nnext=line"),
                ("empty", &""),
                ("route", &"post_message"),
            ],
        );
        assert_eq!(
            line,
            "ts=1970-01-01T00:00:00.000Z level=warn msg=\"checkpoint failed\" shard=3 \
             why=\"disk \\\"full\\\"\\nnext=line\" empty=\"\" route=post_message"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("ERROR"), Some(Level::Error));
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("debug"), Some(Level::Debug));
        assert_eq!(Level::parse("trace"), None);
        assert!(Level::Error < Level::Info);
    }
}
