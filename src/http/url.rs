//! Percent-decoding of path segments and query strings.

/// Decodes `%XX` escapes (either hex case). `plus_as_space` turns `+` into a
/// space, as HTML forms encode query strings. `None` for a truncated or
/// non-hex escape, or when the decoded bytes are not UTF-8.
pub fn percent_decode(input: &str, plus_as_space: bool) -> Option<String> {
    if !input.contains(['%', '+']) {
        return Some(input.to_owned());
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let high = hex_value(*bytes.get(index + 1)?)?;
                let low = hex_value(*bytes.get(index + 2)?)?;
                out.push(high << 4 | low);
                index += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                index += 1;
            }
            byte => {
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

/// Splits a raw query string into decoded `(key, value)` pairs. Empty
/// segments are skipped; a segment without `=` has an empty value. `None`
/// when any part fails to decode.
pub fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            Some((percent_decode(key, true)?, percent_decode(value, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("a%2Fb", false).as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%e2%9c%93", false).as_deref(), Some("✓"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("plain", false).as_deref(), Some("plain"));
    }

    #[test]
    fn rejects_bad_escapes_and_invalid_utf8() {
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(percent_decode("%ff", false), None);
    }

    #[test]
    fn splits_queries() {
        assert_eq!(
            query_pairs("limit=5&&before=a%20b&flag").unwrap(),
            vec![
                ("limit".to_string(), "5".to_string()),
                ("before".to_string(), "a b".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert!(query_pairs("limit=%zz").is_none());
        assert!(query_pairs("").unwrap().is_empty());
    }
}
