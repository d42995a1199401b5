//! Percent-decoding of path segments and query strings.

use std::borrow::Cow;

/// Decodes `%XX` escapes (either hex case). `plus_as_space` turns `+` into a
/// space, as HTML forms encode query strings; in paths `+` is literal. `None`
/// on a truncated or non-hex escape, or when the decoded bytes are not UTF-8.
/// Borrows `input` when it has nothing to decode (most path segments).
pub fn percent_decode(input: &str, plus_as_space: bool) -> Option<Cow<'_, str>> {
    let plain = |byte: &u8| *byte != b'%' && !(plus_as_space && *byte == b'+');
    if input.as_bytes().iter().all(plain) {
        return Some(Cow::Borrowed(input));
    }
    decode_escapes(input, plus_as_space).map(Cow::Owned)
}

fn decode_escapes(input: &str, plus_as_space: bool) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let high = hex_value(*bytes.get(index + 1)?)?;
                let low = hex_value(*bytes.get(index + 2)?)?;
                out.push((high << 4) | low);
                index += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                index += 1;
            }
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Splits a raw query string on `&`, each pair on its first `=`, and decodes
/// both sides with `+` as space. Empty segments are skipped; a segment
/// without `=` has an empty value. `None` when any part fails to decode.
pub fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            let decoded = |part| percent_decode(part, true).map(Cow::into_owned);
            Some((decoded(key)?, decoded(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &str, plus_as_space: bool) -> Option<String> {
        percent_decode(input, plus_as_space).map(Cow::into_owned)
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode("a%2Fb", false).as_deref(), Some("a/b"));
        assert_eq!(decode("a%2fb", false).as_deref(), Some("a/b"));
        assert_eq!(decode("%e2%9c%93", false).as_deref(), Some("✓"));
        assert_eq!(decode("%E2%9C%93ok", false).as_deref(), Some("✓ok"));
        assert_eq!(decode("%25", false).as_deref(), Some("%"));
        assert_eq!(decode("%2B", true).as_deref(), Some("+"));
        assert_eq!(decode("%00", false).as_deref(), Some("\0"));
        assert_eq!(decode("plain", false).as_deref(), Some("plain"));
        assert_eq!(decode("", false).as_deref(), Some(""));
        assert_eq!(decode("ü✓", false).as_deref(), Some("ü✓"));
    }

    #[test]
    fn plus_is_space_only_when_asked() {
        assert_eq!(decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(decode("++", true).as_deref(), Some("  "));
    }

    #[test]
    fn rejects_bad_escapes_and_invalid_utf8() {
        for bad in [
            "%zz", "%4", "%", "a%", "%4g", "%g4", "%%41", "%ff", "%c3", "%c3%28",
        ] {
            assert_eq!(decode(bad, false), None, "{bad}");
            assert_eq!(decode(bad, true), None, "{bad}");
        }
    }

    #[test]
    fn splits_queries() {
        assert_eq!(
            query_pairs("limit=5&&before=a%20b+c&flag&k=v=w&=x&").expect("valid query"),
            vec![
                ("limit".to_string(), "5".to_string()),
                ("before".to_string(), "a b c".to_string()),
                ("flag".to_string(), String::new()),
                ("k".to_string(), "v=w".to_string()),
                (String::new(), "x".to_string()),
            ]
        );
        assert_eq!(
            query_pairs("a%26b=c%3Dd").expect("valid query"),
            vec![("a&b".to_string(), "c=d".to_string())]
        );
        assert!(query_pairs("").expect("empty query").is_empty());
        assert_eq!(query_pairs("limit=%zz"), None);
        assert_eq!(query_pairs("ok=1&%ff=2"), None);
    }
}
