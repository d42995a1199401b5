//! Answers to the catalog queries `psql`'s describe commands send (`\d`,
//! `\dt`, `\d messages`, `\d+ threads`): a read of `pg_catalog` whose rows
//! describe our two relations. There is no catalog to run SQL on, so a
//! query is answered by shape: the relation it reads (the first `FROM
//! pg_catalog.X`), the filters psql writes (`c.oid = '…'`, `a.attrelid =
//! '…'`, `relname OPERATOR(pg_catalog.~) '^(…)$'`, `relkind IN (…)`), and
//! one column per select-list item, valued by the identifiers in it.
//! Catalog tables we have nothing in (indexes, constraints, policies,
//! inheritance, publications, …) answer zero rows, which is the truth.

use super::sql::{BOOL, INT4, INT8, JSONB};
use super::sql::{Column, MESSAGE_COLUMNS, TEXT, THREAD_COLUMNS};

/// A catalog query's answer: column names (all `text`) and rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogAnswer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Catalog queries longer than this are not psql's.
const QUERY_BYTES_MAX: usize = 16 * 1024;

/// Our relations as `pg_class` lists them: name and a fixed OID.
const RELATIONS: [(&str, u32, &[Column]); 2] = [
    ("messages", 16_402, MESSAGE_COLUMNS),
    ("threads", 16_401, THREAD_COLUMNS),
];

/// `Some` when `sql` reads the system catalogs; `None` for every other
/// statement, which the statement matcher handles.
pub fn answer(sql: &str) -> Option<CatalogAnswer> {
    let lower = sql.to_ascii_lowercase();
    if sql.len() > QUERY_BYTES_MAX || !lower.trim_start().starts_with("select") {
        return None;
    }
    let (items, from) = select_items(sql);
    let table = catalog_table(&from.to_ascii_lowercase())?;
    // `*` names columns we cannot know: left to the matcher, which refuses.
    if items.iter().any(|item| item == "*" || item.ends_with(".*")) {
        return None;
    }
    let columns: Vec<String> = items.iter().map(|item| item_name(item)).collect();
    let rows = match table.as_str() {
        _ if reads_other_catalogs(&lower) => Vec::new(),
        "pg_class" => class_rows(&lower),
        "pg_attribute" => attribute_rows(&lower),
        _ => Vec::new(),
    };
    let rows = rows
        .iter()
        .map(|row| items.iter().map(|item| value(item, row)).collect())
        .collect();
    Some(CatalogAnswer { columns, rows })
}

/// `<table>` when the FROM clause starts with `pg_catalog.<table>`.
fn catalog_table(from: &str) -> Option<String> {
    let rest = from.trim_start().strip_prefix("from")?.trim_start();
    let rest = rest.strip_prefix("pg_catalog.")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// Catalog tables that describe relations and columns; a query that also
/// reads any other (indexes, inheritance, policies, …) is about things we
/// do not have.
const DESCRIBING: [&str; 8] = [
    "pg_class",
    "pg_namespace",
    "pg_am",
    "pg_attribute",
    "pg_attrdef",
    "pg_collation",
    "pg_type",
    "pg_description",
];

/// Whether the query names a `pg_catalog.` table (not a function) outside
/// [`DESCRIBING`].
fn reads_other_catalogs(lower: &str) -> bool {
    lower.match_indices("pg_catalog.").any(|(at, prefix)| {
        let rest = &lower[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let is_function = rest[end..].starts_with('(');
        !is_function && !DESCRIBING.contains(&&rest[..end]) && rest.starts_with("pg_")
    })
}

/// The top-level items between SELECT and FROM, split at commas outside
/// parentheses and quotes, and the text from that FROM on.
fn select_items(sql: &str) -> (Vec<String>, String) {
    let body = sql.trim_start()["select".len()..].trim_start();
    let mut items = vec![String::new()];
    let (mut depth, mut quote) = (0usize, None::<char>);
    let bytes: Vec<char> = body.chars().collect();
    let mut from = String::new();
    for (index, &c) in bytes.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    items.push(String::new());
                    continue;
                }
                _ if depth == 0 && starts_from(&bytes[index..]) => {
                    from = bytes[index..].iter().collect();
                    break;
                }
                _ => {}
            },
        }
        items.last_mut().expect("one item").push(c);
    }
    let items = items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .collect();
    (items, from)
}

/// Whether `rest` starts with the keyword FROM (after whitespace).
fn starts_from(rest: &[char]) -> bool {
    rest.first().is_some_and(|c| c.is_whitespace())
        && rest[1..]
            .iter()
            .take(5)
            .collect::<String>()
            .to_ascii_lowercase()
            .starts_with("from")
        && rest.get(5).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// An item's output name: its alias, else its last identifier.
fn item_name(item: &str) -> String {
    if let Some(alias) = alias(item) {
        return alias;
    }
    identifiers(item)
        .last()
        .map_or_else(|| "?column?".to_owned(), |last| last.to_owned())
}

fn alias(item: &str) -> Option<String> {
    let lower = item.to_ascii_lowercase();
    let at = lower.rfind(" as ")?;
    let alias = item[at + 4..].trim().trim_matches('"');
    (!alias.is_empty() && !alias.contains(' ')).then(|| alias.to_owned())
}

fn identifiers(item: &str) -> impl Iterator<Item = &str> {
    item.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
}

/// A catalog row: attribute names and their values (`None` is NULL).
type Row = Vec<(&'static str, Option<String>)>;

/// An item's value in `row`: the alias if the row has it, else the first
/// identifier the row has; NULL when none.
fn value(item: &str, row: &Row) -> Option<String> {
    let lookup = |name: &str| {
        row.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    if let Some(found) = alias(item).and_then(|alias| lookup(&alias)) {
        return found;
    }
    identifiers(item).find_map(lookup).flatten()
}

fn text(value: &str) -> Option<String> {
    Some(value.to_owned())
}

/// `pg_class` rows of our relations that pass psql's filters.
fn class_rows(lower: &str) -> Vec<Row> {
    if let Some(kinds) = between(lower, "relkind in (", ")")
        && !kinds.contains("'r'")
    {
        return Vec::new();
    }
    let oid = between(lower, "c.oid = '", "'").and_then(|oid| oid.parse::<u32>().ok());
    let pattern = between(lower, "operator(pg_catalog.~) '^(", ")$'");
    RELATIONS
        .iter()
        .filter(|(name, relation_oid, _)| {
            oid.is_none_or(|oid| oid == *relation_oid)
                && pattern.is_none_or(|pattern| name_matches(pattern, name))
        })
        .map(|(name, relation_oid, _)| class_row(name, *relation_oid))
        .collect()
}

fn class_row(name: &str, oid: u32) -> Row {
    let no = || text("f");
    vec![
        ("oid", text(&oid.to_string())),
        ("relname", text(name)),
        ("nspname", text("public")),
        ("Schema", text("public")),
        ("Name", text(name)),
        ("Type", text("table")),
        ("Owner", text("progressdb")),
        ("relkind", text("r")),
        ("relchecks", text("0")),
        ("relhasindex", no()),
        ("relhasrules", no()),
        ("relhastriggers", no()),
        ("relrowsecurity", no()),
        ("relforcerowsecurity", no()),
        ("relhasoids", no()),
        ("relispartition", no()),
        ("reltablespace", text("0")),
        ("reloftype", text("")),
        ("relpersistence", text("p")),
        ("relreplident", text("d")),
        ("amname", text("heap")),
        ("reloptions", text("")),
    ]
}

/// `pg_attribute` rows of the relation `a.attrelid = '…'` names.
fn attribute_rows(lower: &str) -> Vec<Row> {
    let Some(oid) = between(lower, "a.attrelid = '", "'").and_then(|oid| oid.parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let Some((_, _, columns)) = RELATIONS.iter().find(|(_, relation, _)| *relation == oid) else {
        return Vec::new();
    };
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            vec![
                ("attname", text(column.name)),
                ("attnum", text(&(index + 1).to_string())),
                ("format_type", text(type_name(column.oid))),
                ("pg_get_expr", None),
                (
                    "attnotnull",
                    text(if column.name == "key" { "t" } else { "f" }),
                ),
                ("attcollation", None),
                ("attidentity", text("")),
                ("attgenerated", text("")),
                (
                    "attstorage",
                    text(if column.oid == TEXT || column.oid == JSONB {
                        "x"
                    } else {
                        "p"
                    }),
                ),
                ("attcompression", text("")),
                ("attstattarget", None),
                ("col_description", None),
            ]
        })
        .collect()
}

fn type_name(oid: u32) -> &'static str {
    match oid {
        INT8 => "bigint",
        INT4 => "integer",
        BOOL => "boolean",
        JSONB => "jsonb",
        _ => "text",
    }
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// psql's name patterns as it sends them: alternatives of literal text
/// with `.*` and `.` (from the user's `*` and `?`).
fn name_matches(pattern: &str, name: &str) -> bool {
    pattern
        .split('|')
        .any(|alternative| glob(alternative.as_bytes(), name.as_bytes()))
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern {
        [] => name.is_empty(),
        [b'.', b'*', rest @ ..] => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        [b'.', rest @ ..] => !name.is_empty() && glob(rest, &name[1..]),
        [c, rest @ ..] => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r','p','v','m','S','f','')
      AND n.nspname !~ '^pg_toast'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#;

    #[test]
    fn psql_lists_both_relations() {
        let answer = answer(LIST).unwrap();
        assert_eq!(answer.columns, ["Schema", "Name", "Type", "Owner"]);
        let names: Vec<_> = answer
            .rows
            .iter()
            .map(|row| row[1].clone().unwrap())
            .collect();
        assert_eq!(names, ["messages", "threads"]);
        assert_eq!(answer.rows[0][2].as_deref(), Some("table"));
        // \dv asks for views only: none.
        let views = LIST.replace("('r','p','v','m','S','f','')", "('v','')");
        assert!(answer_rows(&views).is_empty());
    }

    fn answer_rows(sql: &str) -> Vec<Vec<Option<String>>> {
        answer(sql).unwrap().rows
    }

    #[test]
    fn psql_finds_a_relation_by_pattern_then_its_columns() {
        let lookup = "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relname OPERATOR(pg_catalog.~) '^(thr.*)$' COLLATE pg_catalog.default\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 2, 3;";
        let rows = answer_rows(lookup);
        assert_eq!(rows, [[text("16401"), text("public"), text("threads")]]);
        let columns = "SELECT a.attname,\n  pg_catalog.format_type(a.atttypid, a.atttypmod),\n  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)\n   FROM pg_catalog.pg_attrdef d\n   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),\n  a.attnotnull,\n  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t\n   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,\n  a.attidentity,\n  a.attgenerated\nFROM pg_catalog.pg_attribute a\nWHERE a.attrelid = '16401' AND a.attnum > 0 AND NOT a.attisdropped\nORDER BY a.attnum;";
        let answer = answer(columns).unwrap();
        assert_eq!(answer.columns.len(), 7);
        assert_eq!(answer.rows.len(), THREAD_COLUMNS.len());
        assert_eq!(
            answer.rows[3],
            [
                text("created_ts"),
                text("bigint"),
                None,
                text("f"),
                None,
                text(""),
                text("")
            ]
        );
    }

    #[test]
    fn other_catalogs_answer_no_rows_and_other_statements_are_not_ours() {
        let indexes = "SELECT c2.relname, i.indisprimary FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i WHERE c.oid = '16401' AND c.oid = i.indrelid";
        assert_eq!(
            answer(indexes).unwrap().columns,
            ["relname", "indisprimary"]
        );
        assert!(answer_rows(indexes).is_empty());
        let inherits = "SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i WHERE c.oid = i.inhparent";
        assert!(answer_rows(inherits).is_empty(), "no relation has parents");
        assert!(answer("SELECT key FROM messages WHERE thread = 't' LIMIT 1").is_none());
        assert!(answer("INSERT INTO threads (title) VALUES ('pg_catalog.x')").is_none());
        assert!(
            answer("SELECT key FROM messages WHERE thread = 'from pg_catalog.pg_class'").is_none()
        );
    }

    #[test]
    fn patterns_match_like_psql_means_them() {
        assert!(name_matches("messages", "messages"));
        assert!(!name_matches("messages", "messages2"));
        assert!(name_matches("t.*", "threads"));
        assert!(name_matches("x|threads", "threads"));
        assert!(name_matches("thread.", "threads"));
    }
}
