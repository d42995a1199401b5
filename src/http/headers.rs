//! A request's header fields, kept in one buffer: every request carries
//! several, and two allocations per field (name and value) were a visible
//! share of a small request's cost.

/// Header fields in arrival order. Names are lower-cased (they are
/// case-insensitive tokens); values are the raw bytes as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Each field's name followed by its value, back to back.
    bytes: Vec<u8>,
    /// Per field, where its name ends and where its value ends in `bytes`;
    /// its name starts where the previous field's value ended.
    ends: Vec<(u32, u32)>,
}

impl Headers {
    /// Room for `fields` fields of `bytes` bytes in all.
    pub fn with_capacity(fields: usize, bytes: usize) -> Headers {
        Headers {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Appends a field, lower-casing its name.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.bytes
            .extend(name.bytes().map(|byte| byte.to_ascii_lowercase()));
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        // A request head is bounded far below 4 GiB by the parser's limits.
        self.ends.push((name_end as u32, self.bytes.len() as u32));
    }

    /// Fields as (lower-case name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let name = &self.bytes[start..name_end];
            start = value_end;
            // Names are pushed as `str` and lower-casing keeps them UTF-8.
            let name = std::str::from_utf8(name).unwrap_or_default();
            (name, &self.bytes[name_end..value_end])
        })
    }

    /// Keeps only the fields for which `keep(name, value)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        let mut kept = Headers::with_capacity(self.ends.len(), self.bytes.len());
        for (name, value) in self.iter().filter(|(name, value)| keep(name, value)) {
            kept.push(name, value);
        }
        *self = kept;
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in fields {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_values_with_lower_case_names() {
        let headers: Headers = [
            ("Host", "h"),
            ("X-User-Id", "U1"),
            ("empty", ""),
            ("host", "2"),
        ]
        .into_iter()
        .collect();
        let fields: Vec<(&str, &[u8])> = headers.iter().collect();
        assert_eq!(
            fields,
            [
                ("host", &b"h"[..]),
                ("x-user-id", b"U1"),
                ("empty", b""),
                ("host", b"2")
            ]
        );
        assert_eq!(headers.len(), 4);
        assert!(Headers::default().is_empty());
        assert_eq!(Headers::default().iter().count(), 0);
    }

    #[test]
    fn retain_drops_only_the_fields_refused() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "")]
            .into_iter()
            .collect();
        headers.retain(|name, _| name != "a");
        headers.push("D", b"4");
        let fields: Vec<(&str, &[u8])> = headers.iter().collect();
        assert_eq!(fields, [("b", &b"2"[..]), ("c", b""), ("d", b"4")]);
    }
}
