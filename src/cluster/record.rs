//! The records a partition's log holds, and their byte layout.
//!
//! Little-endian; the checksum is crc32c over the 36 header bytes before it
//! and the body. The log's own framing already delimits messages, so a
//! record is exactly one log message.
//!
//! ```text
//! offset size field
//!      0    4 magic "PDBC"
//!      4    1 version (1)
//!      5    1 kind: 1 barrier, 2 frame
//!      6    2 reserved, zero
//!      8    8 epoch of the writer
//!     16    8 prev: sequence of the record before this one (0: none)
//!     24    8 flush number within the epoch (frames; 0 in barriers)
//!     32    4 body length
//!     36    4 crc32c(header[0..36] ++ body)
//!     40    n body: the node id (barrier) or the flushed WAL frame (frame)
//! ```
//!
//! `prev` repeats what the log's expected-sequence check enforced, so an
//! applier can verify it independently and halt on a gap.

use super::{Epoch, NodeId, Seq};

const MAGIC: &[u8; 4] = b"PDBC";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 40;
const KIND_BARRIER: u8 = 1;
const KIND_FRAME: u8 = 2;

/// Largest record, header included. JetStream refuses messages above the
/// server's `max_payload` (1 MiB unless configured), and a record must fit
/// one message with its headers, so flushes are cut below this.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024 - 4096;

/// Longest node id a barrier may carry.
pub const NODE_ID_BYTES_MAX: usize = 128;

/// One record of a partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `node` owns the partition from this record on, in term `epoch`.
    Barrier {
        epoch: Epoch,
        prev: Seq,
        node: NodeId,
    },
    /// One group-commit flush of the owner in term `epoch`.
    Frame {
        epoch: Epoch,
        prev: Seq,
        flush: u64,
        payload: Vec<u8>,
    },
}

/// Why bytes read from the log are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort,
    BadMagic,
    UnknownVersion(u8),
    UnknownKind(u8),
    LengthMismatch,
    BadChecksum,
    BadNodeId,
}

/// Why a record cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    TooLarge { bytes: usize },
    BadNodeId,
}

impl Record {
    pub fn epoch(&self) -> Epoch {
        match self {
            Record::Barrier { epoch, .. } | Record::Frame { epoch, .. } => *epoch,
        }
    }

    pub fn prev(&self) -> Seq {
        match self {
            Record::Barrier { prev, .. } | Record::Frame { prev, .. } => *prev,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let (kind, flush, body) = match self {
            Record::Barrier { node, .. } => {
                if node.0.is_empty() || node.0.len() > NODE_ID_BYTES_MAX {
                    return Err(EncodeError::BadNodeId);
                }
                (KIND_BARRIER, 0, node.0.as_bytes())
            }
            Record::Frame { flush, payload, .. } => (KIND_FRAME, *flush, payload.as_slice()),
        };
        let bytes = HEADER_BYTES + body.len();
        if bytes > RECORD_BYTES_MAX {
            return Err(EncodeError::TooLarge { bytes });
        }
        let mut out = Vec::with_capacity(bytes);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, kind, 0, 0]);
        out.extend_from_slice(&self.epoch().0.to_le_bytes());
        out.extend_from_slice(&self.prev().0.to_le_bytes());
        out.extend_from_slice(&flush.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out), body);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(body);
        debug_assert_eq!(out.len(), bytes);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < HEADER_BYTES {
            return Err(DecodeError::TooShort);
        }
        if &bytes[0..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[4] != VERSION {
            return Err(DecodeError::UnknownVersion(bytes[4]));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let body = &bytes[HEADER_BYTES..];
        if u32_at(32) as usize != body.len() {
            return Err(DecodeError::LengthMismatch);
        }
        if crc32c::crc32c_append(crc32c::crc32c(&bytes[..36]), body) != u32_at(36) {
            return Err(DecodeError::BadChecksum);
        }
        let (epoch, prev, flush) = (Epoch(u64_at(8)), Seq(u64_at(16)), u64_at(24));
        match bytes[5] {
            KIND_BARRIER => {
                let node = std::str::from_utf8(body).map_err(|_| DecodeError::BadNodeId)?;
                if node.is_empty() || node.len() > NODE_ID_BYTES_MAX {
                    return Err(DecodeError::BadNodeId);
                }
                Ok(Record::Barrier {
                    epoch,
                    prev,
                    node: NodeId(node.to_owned()),
                })
            }
            KIND_FRAME => Ok(Record::Frame {
                epoch,
                prev,
                flush,
                payload: body.to_vec(),
            }),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Record {
        Record::Frame {
            epoch: Epoch(3),
            prev: Seq(41),
            flush: 7,
            payload: b"wal bytes".to_vec(),
        }
    }

    #[test]
    fn records_round_trip() {
        let barrier = Record::Barrier {
            epoch: Epoch(2),
            prev: Seq(9),
            node: NodeId("n1".into()),
        };
        for record in [barrier, frame()] {
            assert_eq!(Record::decode(&record.encode().unwrap()).unwrap(), record);
        }
    }

    // Guards appliers against a log they do not understand: every flipped
    // byte is caught by the checksum or a field check.
    #[test]
    fn any_flipped_byte_is_rejected() {
        let bytes = frame().encode().unwrap();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(Record::decode(&bad).is_err(), "flip at {at} accepted");
        }
        assert_eq!(Record::decode(&bytes[..39]), Err(DecodeError::TooShort));
        assert_eq!(
            Record::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::LengthMismatch)
        );
    }

    #[test]
    fn limits_are_enforced_on_encode() {
        let huge = Record::Frame {
            epoch: Epoch(1),
            prev: Seq(0),
            flush: 1,
            payload: vec![0; RECORD_BYTES_MAX],
        };
        assert!(matches!(huge.encode(), Err(EncodeError::TooLarge { .. })));
        let nameless = Record::Barrier {
            epoch: Epoch(1),
            prev: Seq(0),
            node: NodeId(String::new()),
        };
        assert_eq!(nameless.encode(), Err(EncodeError::BadNodeId));
    }
}
