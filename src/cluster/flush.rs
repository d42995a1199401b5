//! The body of a data record: the writes of one partition that one flush
//! of the owner carries, each exactly the bytes the shard's WAL logged for
//! it (an encoded `store::Ops`), so a standby applies them like WAL replay.
//!
//! ```text
//! per write: length u32 LE, then that many bytes
//! ```

/// Joins `writes` into one record body.
pub fn join<'a>(writes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for write in writes {
        body.extend_from_slice(&(write.len() as u32).to_le_bytes());
        body.extend_from_slice(write);
    }
    body
}

/// The bytes one write adds to a record body.
pub fn framed_len(write: &[u8]) -> usize {
    4 + write.len()
}

/// Why a record body does not split into writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated;

/// The writes of a record body, in order.
pub fn split(mut body: &[u8]) -> Result<Vec<&[u8]>, Truncated> {
    let mut writes = Vec::new();
    while !body.is_empty() {
        let (length, rest) = body.split_first_chunk::<4>().ok_or(Truncated)?;
        let length = u32::from_le_bytes(*length) as usize;
        if rest.len() < length {
            return Err(Truncated);
        }
        writes.push(&rest[..length]);
        body = &rest[length..];
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip_in_order() {
        let writes: [&[u8]; 3] = [b"first", b"", b"third write"];
        let body = join(writes);
        assert_eq!(
            body.len(),
            writes.iter().map(|w| framed_len(w)).sum::<usize>()
        );
        assert_eq!(split(&body).unwrap(), writes.to_vec());
        assert_eq!(split(&[]).unwrap(), Vec::<&[u8]>::new());
    }

    // A body cut anywhere but between writes is refused, never half read.
    #[test]
    fn a_cut_body_is_refused() {
        let body = join([b"abc".as_slice(), b"defg"]);
        for cut in 1..body.len() {
            if cut == 7 {
                continue; // exactly after the first write
            }
            assert_eq!(split(&body[..cut]), Err(Truncated), "cut at {cut}");
        }
    }
}
