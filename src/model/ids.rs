//! Identifier newtypes and their text forms.
//!
//! Generated ids are 16 bytes written as 26 characters of lower-case
//! Crockford base32, so they are URL-safe and sort as text in the same order
//! as their bytes. The first 8 bytes are a big-endian timestamp, which makes
//! ids sort by creation time.

use std::fmt;

/// Longest client-chosen thread id or user id we accept, in bytes.
pub const ID_BYTES_MAX: usize = 128;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes 16 bytes as 26 base32 characters (the last character carries the
/// 3 spare bits as zero), preserving byte order under text comparison.
pub fn encode_base32(bytes: &[u8; 16]) -> String {
    let value = u128::from_be_bytes(*bytes);
    let mut out = String::with_capacity(26);
    // 26 digits hold 130 bits: the 128 data bits fill the top and the last
    // digit's low 2 bits stay zero, so text order matches numeric order.
    for index in 0..26i32 {
        let shift = 123 - 5 * index;
        let digit = if shift >= 0 {
            (value >> shift) & 0x1f
        } else {
            (value << (-shift)) & 0x1f
        };
        out.push(CROCKFORD[digit as usize] as char);
    }
    out
}

/// Inverse of [`encode_base32`]; `None` for anything that is not exactly 26
/// valid lower-case characters encoding 128 bits.
pub fn decode_base32(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let digit = CROCKFORD.iter().position(|&c| c == byte)? as u128;
        let shift = 123 - 5 * index as i32;
        if shift >= 0 {
            value |= digit << shift;
        } else {
            // Last digit: only its top 3 bits are data, the rest must be 0.
            if digit & ((1 << (-shift)) - 1) != 0 {
                return None;
            }
            value |= digit >> (-shift);
        }
    }
    Some(value.to_be_bytes())
}

/// True for ids made only of `[A-Za-z0-9_-]`, 1 to [`ID_BYTES_MAX`] bytes.
/// Such ids need no escaping in URLs or keys and cannot be `.` or `..`.
pub fn is_valid_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= ID_BYTES_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A thread id: server-generated or client-chosen (`"general"`), always
    /// matching [`is_valid_key`]. The owning shard is `shard_for(id)`.
    ThreadId
);

impl ThreadId {
    pub fn parse(text: &str) -> Option<ThreadId> {
        is_valid_key(text).then(|| ThreadId(text.to_owned()))
    }

    /// A new id unique across shards and restarts: 48 bits of wall-clock
    /// milliseconds (as in ULIDs, good until the year 10889), the generating
    /// shard, a per-shard sequence, and random bits against clock resets.
    pub fn generate(now_ms: u64, shard: u16, sequence: u32, random: u32) -> ThreadId {
        let mut bytes = [0u8; 16];
        bytes[0..6].copy_from_slice(&now_ms.to_be_bytes()[2..8]);
        bytes[6..8].copy_from_slice(&shard.to_be_bytes());
        bytes[8..12].copy_from_slice(&sequence.to_be_bytes());
        bytes[12..16].copy_from_slice(&random.to_be_bytes());
        ThreadId(encode_base32(&bytes))
    }
}

string_id!(
    /// A user id as named by `X-User-ID` (or `author` on the seed route).
    /// Printable ASCII without spaces, 1 to [`ID_BYTES_MAX`] bytes, so it can
    /// be used inside storage keys next to a `0x00` separator.
    UserId
);

impl UserId {
    pub fn parse(text: &str) -> Option<UserId> {
        let valid = !text.is_empty()
            && text.len() <= ID_BYTES_MAX
            && text.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| UserId(text.to_owned()))
    }
}

/// A message id: the message's timestamp in nanoseconds (unique within its
/// thread, because the owner makes timestamps strictly increasing) and 64
/// random bits so ids are also unique across threads. The timestamp half lets
/// the owner find the message's storage key without a secondary index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub ts: u64,
    pub salt: u64,
}

impl MessageId {
    pub fn parse(text: &str) -> Option<MessageId> {
        let bytes = decode_base32(text)?;
        let (ts, salt) = bytes.split_at(8);
        Some(MessageId {
            ts: u64::from_be_bytes(ts.try_into().ok()?),
            salt: u64::from_be_bytes(salt.try_into().ok()?),
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 16];
        bytes[0..8].copy_from_slice(&self.ts.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.salt.to_be_bytes());
        f.write_str(&encode_base32(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Guards the text form: round trip, and text order equals byte order.
    #[test]
    fn base32_round_trips_and_preserves_order() {
        let mut values: Vec<u128> = (0..2000u128)
            .map(|step| step.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect();
        values.sort_unstable();
        let texts: Vec<String> = values
            .iter()
            .map(|value| encode_base32(&value.to_be_bytes()))
            .collect();
        for (value, text) in values.iter().zip(&texts) {
            assert_eq!(text.len(), 26);
            assert_eq!(decode_base32(text), Some(value.to_be_bytes()));
        }
        assert!(texts.windows(2).all(|pair| pair[0] <= pair[1]));
        let low = encode_base32(&1u128.to_be_bytes());
        let high = encode_base32(&(1u128 << 64).to_be_bytes());
        assert!(low < high);
        assert_eq!(encode_base32(&[0; 16]), "00000000000000000000000000");
        assert_eq!(encode_base32(&[0xff; 16]), "zzzzzzzzzzzzzzzzzzzzzzzzzw");
    }

    #[test]
    fn base32_rejects_bad_text() {
        assert_eq!(decode_base32(""), None);
        assert_eq!(decode_base32("0000000000000000000000000"), None);
        assert_eq!(decode_base32("0000000000000000000000000u"), None);
        // Spare low bits of the last character must be zero.
        assert_eq!(decode_base32("00000000000000000000000001"), None);
        assert_eq!(decode_base32("0000000000000000000000000I"), None);
    }

    #[test]
    fn message_id_text_round_trips_and_sorts_by_ts() {
        let first = MessageId {
            ts: 5,
            salt: u64::MAX,
        };
        let second = MessageId { ts: 6, salt: 0 };
        assert_eq!(MessageId::parse(&first.to_string()), Some(first));
        assert!(first.to_string() < second.to_string());
    }

    #[test]
    fn key_validation_rejects_path_tricks() {
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2F", "a\0b"] {
            assert!(!is_valid_key(bad), "{bad:?} must be rejected");
        }
        assert!(is_valid_key("general"));
        assert!(is_valid_key("Thread_1-x"));
        assert!(!is_valid_key(&"a".repeat(ID_BYTES_MAX + 1)));
        assert!(UserId::parse("user@example.com").is_some());
        assert!(UserId::parse("has space").is_none());
    }

    #[test]
    fn generated_thread_ids_differ_by_shard_and_sort_by_time() {
        let a = ThreadId::generate(1000, 0, 7, 1);
        let b = ThreadId::generate(1000, 1, 7, 1);
        let c = ThreadId::generate(1001, 0, 0, 0);
        assert_ne!(a, b);
        assert!(a < c && b < c);
        assert!(is_valid_key(a.as_str()));
    }
}
