//! WAL record format. Pure: bytes in, records out.
//!
//! ```text
//! offset  size  field
//!      0     4  magic          b"PDBW"
//!      4     1  version        1
//!      5     1  kind           1 = batch header, 2 = operations
//!      6     2  reserved       0
//!      8     4  payload length u32, little-endian
//!     12     8  lsn            u64, little-endian
//!     20     4  crc32c         over bytes 0..20 followed by the payload
//!     24     n  payload
//! ```
//!
//! All integers are little-endian. The checksum covers the header and the
//! payload, so a flipped bit anywhere in a record is detected.

/// Log sequence number: position of a record in a shard's history, strictly
/// increasing by one per operations record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

pub const MAGIC: [u8; 4] = *b"PDBW";
pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 24;
/// Largest payload accepted on decode; larger lengths are corruption.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest payload the log accepts for a new record: [`PAYLOAD_BYTES_MAX`],
/// or a debug build's lower test override (read once), so tests can reach
/// the limit with small bodies.
pub fn append_bytes_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        crate::config::debug_wal_record_bytes_max()
            .unwrap_or(PAYLOAD_BYTES_MAX)
            .min(PAYLOAD_BYTES_MAX)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opens every flush: payload is the flush length in bytes (u32) and
    /// the number of operation records in it (u32); `lsn` is the first LSN.
    BatchHeader = 1,
    /// One atomic group of storage operations.
    Operations = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    pub lsn: Lsn,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the declared payload.
    Truncated,
    /// Bytes that are not a record header.
    BadHeader,
    /// Header and payload do not match their checksum.
    BadChecksum,
}

impl Record<'_> {
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.payload.len()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.payload.len() <= PAYLOAD_BYTES_MAX,
            "WAL payload too large"
        );
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.lsn.0.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 20]), self.payload);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(self.payload);
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let header = bytes.get(..HEADER_BYTES).ok_or(DecodeError::Truncated)?;
    if header[0..4] != MAGIC || header[4] != VERSION || header[6..8] != [0, 0] {
        return Err(DecodeError::BadHeader);
    }
    let kind = match header[5] {
        1 => Kind::BatchHeader,
        2 => Kind::Operations,
        _ => return Err(DecodeError::BadHeader),
    };
    let length = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if length > PAYLOAD_BYTES_MAX {
        return Err(DecodeError::BadHeader);
    }
    let lsn = Lsn(u64::from_le_bytes(
        header[12..20].try_into().expect("8 bytes"),
    ));
    let stored_crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    let payload = bytes
        .get(HEADER_BYTES..HEADER_BYTES + length)
        .ok_or(DecodeError::Truncated)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..20]), payload);
    if crc != stored_crc {
        return Err(DecodeError::BadChecksum);
    }
    let record = Record { kind, lsn, payload };
    debug_assert_eq!(record.encoded_len(), HEADER_BYTES + length);
    Ok(record)
}

/// Batch header payload: `(flush_bytes, record_count)`.
pub fn batch_header_payload(flush_bytes: u32, record_count: u32) -> [u8; 8] {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&flush_bytes.to_le_bytes());
    payload[4..].copy_from_slice(&record_count.to_le_bytes());
    payload
}

pub fn parse_batch_header(payload: &[u8]) -> Option<(u32, u32)> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    Some((
        u32::from_le_bytes(bytes[..4].try_into().ok()?),
        u32::from_le_bytes(bytes[4..].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        Record {
            kind: Kind::Operations,
            lsn: Lsn(0x0102_0304_0506_0708),
            payload: b"hello wal",
        }
        .encode_into(&mut out);
        out
    }

    // Pins the byte layout drawn in the module docs.
    #[test]
    fn layout_is_pinned() {
        let bytes = sample();
        assert_eq!(&bytes[0..8], b"PDBW\x01\x02\x00\x00");
        assert_eq!(&bytes[8..12], &9u32.to_le_bytes());
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[24..], b"hello wal");
        assert_eq!(bytes.len(), HEADER_BYTES + 9);
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let record = decode(&bytes).unwrap();
        assert_eq!(record.kind, Kind::Operations);
        assert_eq!(record.lsn, Lsn(0x0102_0304_0506_0708));
        assert_eq!(record.payload, b"hello wal");
        let (flush, count) = parse_batch_header(&batch_header_payload(8192, 7)).unwrap();
        assert_eq!((flush, count), (8192, 7));
    }

    // Every single-bit flip anywhere in the record is detected.
    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = sample();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped).is_err(), "bit {bit} flip went unnoticed");
        }
    }

    // Every truncation point is detected.
    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0u8; 64]), Err(DecodeError::BadHeader));
    }
}
