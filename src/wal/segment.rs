//! How records sit in a segment file, and how a segment is read back.
//! Pure: the writer and recovery call these on byte buffers.
//!
//! A segment is a sequence of *flushes*. Each flush is what one write +
//! fdatasync put on disk: it starts on a block boundary with a batch header
//! record (its length in bytes and its record count), then that many
//! operation records with consecutive LSNs, then zero padding to the next
//! block boundary. Blocks are never rewritten, so a torn write can only
//! damage the flush that was being written, never an acknowledged one.
//!
//! Reading stops at the first block that is all zeros where a batch header
//! should be (the clean end), or at the first record that fails to decode.
//! What comes after the stop decides what it was: if a valid batch header
//! follows at a later block boundary, data after the damage was once
//! complete, so the damage is corruption in the middle of the log; if none
//! follows, it is the torn tail of the last flush.

use super::record::{self, DecodeError, HEADER_BYTES, Kind, Lsn, Record};

/// Alignment and padding unit of flushes; matches O_DIRECT's block size.
pub const BLOCK_BYTES: usize = 4096;

pub fn align_up(value: usize) -> usize {
    value.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// Bytes a flush of `records_bytes` of encoded records occupies on disk.
pub fn flush_len(records_bytes: usize) -> usize {
    align_up(HEADER_BYTES + 8 + records_bytes)
}

/// Writes one flush into `out` (exactly `flush_len(records.len())` bytes):
/// batch header, the already-encoded operation records, zero padding.
pub fn frame_flush(first_lsn: Lsn, record_count: u32, records: &[u8], out: &mut [u8]) {
    let total = flush_len(records.len());
    assert_eq!(out.len(), total, "flush buffer has the wrong size");
    let mut header = Vec::with_capacity(HEADER_BYTES + 8);
    Record {
        kind: Kind::BatchHeader,
        lsn: first_lsn,
        payload: &record::batch_header_payload(total as u32, record_count),
    }
    .encode_into(&mut header);
    out[..header.len()].copy_from_slice(&header);
    out[header.len()..header.len() + records.len()].copy_from_slice(records);
    out[header.len() + records.len()..].fill(0);
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Read to the end of the bytes, or to zeros with nothing after them.
    Clean,
    /// Damage at `offset` and no complete flush after it: the torn tail of
    /// the last write. Every flush before the damaged one is intact.
    TornTail { offset: usize },
    /// Damage at `offset` followed by a valid flush: corruption in the
    /// middle of the log.
    Corrupt { offset: usize },
}

/// What the damage a scan stopped at looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Bytes of the record were never written: it runs past the end of
    /// the file or of its flush, or into zeros (segments are pre-zeroed,
    /// so unwritten sectors read as zeros). A write cut by a crash.
    TornWrite,
    /// The record is all there but does not check out (checksum, header,
    /// LSN or kind): the bytes changed after they were written, or a
    /// complete write carried garbage.
    BadRecord,
}

impl Damage {
    pub fn name(self) -> &'static str {
        match self {
            Damage::TornWrite => "torn_write",
            Damage::BadRecord => "bad_record",
        }
    }
}

#[derive(Debug)]
pub struct Scan<'a> {
    /// Operation records in order, LSNs strictly increasing.
    pub records: Vec<Record<'a>>,
    /// End of the last intact flush: where to truncate.
    pub valid_end: usize,
    pub stop: Stop,
    /// What the damage at `stop`'s offset looks like (`None` when clean).
    pub damage: Option<Damage>,
}

/// Unit in which a device persists a write all or nothing: a whole sector
/// of zeros inside a record means that part of it never reached the disk.
const SECTOR_BYTES: usize = 512;

/// Tells a torn write from a bad complete record at `offset`, where the
/// record (or flush header) that failed to decode starts; `flush_end` is
/// where its flush ends (or the end of the bytes if unknown).
pub fn classify(bytes: &[u8], offset: usize, flush_end: usize) -> Damage {
    let end = flush_end.min(bytes.len());
    let Some(header) = bytes
        .get(offset..offset + HEADER_BYTES)
        .filter(|_| offset + HEADER_BYTES <= end)
    else {
        return Damage::TornWrite;
    };
    // The length field, if the header is readable, says where the record
    // should end; a bad header is judged by its own 24 bytes.
    let declared = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    let record_end = if header[0..4] == record::MAGIC {
        offset.saturating_add(HEADER_BYTES).saturating_add(declared)
    } else {
        offset + HEADER_BYTES
    };
    if record_end > end {
        return Damage::TornWrite;
    }
    let span = &bytes[offset..record_end];
    // Zeros from some point to the record's end: its tail was never written.
    if span.last() == Some(&0) {
        return Damage::TornWrite;
    }
    let first_sector = offset.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    let hole = (first_sector..record_end.saturating_sub(SECTOR_BYTES - 1))
        .step_by(SECTOR_BYTES)
        .any(|sector| bytes[sector..sector + SECTOR_BYTES].iter().all(|&b| b == 0));
    if hole {
        Damage::TornWrite
    } else {
        Damage::BadRecord
    }
}

/// Reads every intact flush of a segment. `after` is the LSN the previous
/// segment ended with, so LSNs must keep increasing across segments.
pub fn scan(bytes: &[u8], after: Option<Lsn>) -> Scan<'_> {
    let mut records = Vec::new();
    let mut last_lsn = after;
    let mut pos = 0;
    let damage = loop {
        if pos >= bytes.len() {
            break None;
        }
        let window = &bytes[pos..(pos + HEADER_BYTES).min(bytes.len())];
        if window.iter().all(|&b| b == 0) {
            // Zeros where a flush would start: the log ended here, unless
            // valid flushes follow (checked below).
            break Some((pos, pos, true, bytes.len()));
        }
        let header = match record::decode(&bytes[pos..]) {
            Ok(header) if header.kind == Kind::BatchHeader => header,
            _ => break Some((pos, pos, false, bytes.len())),
        };
        let Some((flush_bytes, count)) = record::parse_batch_header(header.payload) else {
            break Some((pos, pos, false, bytes.len()));
        };
        let flush_bytes = flush_bytes as usize;
        let increasing = last_lsn.is_none_or(|last| header.lsn > last);
        if !flush_bytes.is_multiple_of(BLOCK_BYTES)
            || flush_bytes < header.encoded_len()
            || !increasing
        {
            break Some((pos, pos, false, bytes.len()));
        }
        let flush_end = (pos + flush_bytes).min(bytes.len());
        let mut cursor = pos + header.encoded_len();
        let mut flush_records = Vec::with_capacity(count as usize);
        for index in 0..u64::from(count) {
            let expected = Lsn(header.lsn.0 + index);
            match record::decode(&bytes[cursor..flush_end]) {
                Ok(op) if op.kind == Kind::Operations && op.lsn == expected => {
                    cursor += op.encoded_len();
                    flush_records.push(op);
                }
                Ok(_)
                | Err(DecodeError::BadHeader | DecodeError::BadChecksum | DecodeError::Truncated) =>
                {
                    break;
                }
            }
        }
        if flush_records.len() != count as usize {
            // A flush counts whole or not at all: its records were made
            // durable (and acknowledged in sync mode) together.
            break Some((cursor, pos, false, flush_end));
        }
        last_lsn = flush_records.last().map(|op| op.lsn).or(last_lsn);
        records.extend(flush_records);
        if pos + flush_bytes > bytes.len() {
            // The records are all there but the padding was cut off: the
            // file was truncated right after them.
            pos = cursor;
            break None;
        }
        pos += flush_bytes;
    };
    match damage {
        None => Scan {
            records,
            valid_end: pos.min(bytes.len()),
            stop: Stop::Clean,
            damage: None,
        },
        Some((offset, flush_start, zeros, flush_end)) => {
            let stop = if valid_flush_after(bytes, offset, last_lsn) {
                Stop::Corrupt { offset }
            } else if zeros {
                Stop::Clean
            } else {
                Stop::TornTail { offset }
            };
            Scan {
                records,
                valid_end: flush_start,
                damage: (stop != Stop::Clean).then(|| classify(bytes, offset, flush_end)),
                stop,
            }
        }
    }
}

/// Is there a decodable batch header at a block boundary after `offset`?
fn valid_flush_after(bytes: &[u8], offset: usize, last_lsn: Option<Lsn>) -> bool {
    let mut block = (offset / BLOCK_BYTES + 1) * BLOCK_BYTES;
    while block + HEADER_BYTES <= bytes.len() {
        if let Ok(record) = record::decode(&bytes[block..])
            && record.kind == Kind::BatchHeader
            && last_lsn.is_none_or(|last| record.lsn > last)
        {
            return true;
        }
        block += BLOCK_BYTES;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rng::XorShift as Rng;

    fn encode_ops(first: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            Record {
                kind: Kind::Operations,
                lsn: Lsn(first + index as u64),
                payload,
            }
            .encode_into(&mut out);
        }
        out
    }

    fn flush(first: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
        let records = encode_ops(first, payloads);
        let mut out = vec![0xAA; flush_len(records.len())];
        frame_flush(Lsn(first), payloads.len() as u32, &records, &mut out);
        out
    }

    /// A file that keeps what was synced apart from what was only written,
    /// and on a crash keeps an arbitrary part of the unsynced writes.
    struct CrashFile {
        durable: Vec<u8>,
        volatile: Vec<u8>,
        unsynced: Vec<(usize, Vec<u8>)>,
    }

    impl CrashFile {
        fn new(size: usize) -> CrashFile {
            CrashFile {
                durable: vec![0; size],
                volatile: vec![0; size],
                unsynced: Vec::new(),
            }
        }
        fn write(&mut self, offset: usize, bytes: &[u8]) {
            self.volatile[offset..offset + bytes.len()].copy_from_slice(bytes);
            self.unsynced.push((offset, bytes.to_vec()));
        }
        fn sync(&mut self) {
            self.durable = self.volatile.clone();
            self.unsynced.clear();
        }
        /// Power loss: each unsynced block independently reaches the disk
        /// whole, not at all, or torn at a random byte; or a bit flips.
        fn crash(&self, rng: &mut Rng) -> Vec<u8> {
            let mut disk = self.durable.clone();
            for (offset, bytes) in &self.unsynced {
                for (index, block) in bytes.chunks(BLOCK_BYTES).enumerate() {
                    let at = offset + index * BLOCK_BYTES;
                    match rng.below(4) {
                        0 => {}
                        1 => disk[at..at + block.len()].copy_from_slice(block),
                        2 => {
                            let cut = rng.below(block.len());
                            disk[at..at + cut].copy_from_slice(&block[..cut]);
                        }
                        _ => {
                            disk[at..at + block.len()].copy_from_slice(block);
                            let bit = rng.below(block.len() * 8);
                            disk[at + bit / 8] ^= 1 << (bit % 8);
                        }
                    }
                }
            }
            disk
        }
    }

    #[test]
    fn clean_segment_reads_back_everything() {
        let mut bytes = flush(1, &[b"a".to_vec(), b"bb".to_vec()]);
        bytes.extend(flush(3, &[vec![7; 5000]]));
        bytes.extend(vec![0; BLOCK_BYTES * 3]);
        let scan = scan(&bytes, None);
        assert_eq!(scan.stop, Stop::Clean);
        let lsns: Vec<u64> = scan.records.iter().map(|r| r.lsn.0).collect();
        assert_eq!(lsns, vec![1, 2, 3]);
        assert_eq!(scan.records[2].payload, &[7; 5000][..]);
        assert_eq!(scan.valid_end, 4096 + 8192);
    }

    #[test]
    fn damage_in_the_middle_is_corruption_and_at_the_end_a_torn_tail() {
        let first = flush(1, &[b"one".to_vec()]);
        let second = flush(2, &[b"two".to_vec()]);
        let mut bytes = [first.clone(), second.clone()].concat();
        // Byte 40 lies in the first operation record (the batch header is 32).
        bytes[40] ^= 0x01;
        assert_eq!(scan(&bytes, None).stop, Stop::Corrupt { offset: 32 });

        let mut bytes = [first.clone(), second].concat();
        bytes[4096 + 40] ^= 0x01;
        let result = scan(&bytes, None);
        assert_eq!(result.stop, Stop::TornTail { offset: 4096 + 32 });
        assert_eq!(result.records.len(), 1);
        assert_eq!(result.valid_end, 4096, "cut before the damaged flush");

        // A whole block of zeros followed by a valid flush is corruption too.
        let bytes = [vec![0; BLOCK_BYTES], first].concat();
        assert_eq!(scan(&bytes, None).stop, Stop::Corrupt { offset: 0 });
    }

    #[test]
    fn lsns_must_increase_across_segments() {
        let bytes = flush(5, &[b"x".to_vec()]);
        assert_eq!(scan(&bytes, Some(Lsn(4))).records.len(), 1);
        assert!(matches!(
            scan(&bytes, Some(Lsn(5))).stop,
            Stop::TornTail { .. }
        ));
    }

    // Seeded crash simulation: flushes are written and synced one by one;
    // the last may be cut by a crash at any point. Recovery must return every
    // synced record exactly, may return the unsynced flush only whole, must
    // never invent records, and must never call a torn tail corruption.
    #[test]
    fn recovery_after_random_crashes() {
        let seed: u64 = 0x00c0_ffee;
        let mut rng = Rng::new(seed);
        for round in 0..500 {
            let mut file = CrashFile::new(BLOCK_BYTES * 64);
            let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut synced = 0;
            let mut offset = 0;
            let mut next_lsn = 1;
            let flushes = 1 + rng.below(8);
            for index in 0..flushes {
                let payloads: Vec<Vec<u8>> = (0..1 + rng.below(6))
                    .map(|_| (0..rng.below(3000)).map(|_| rng.next_u64() as u8).collect())
                    .collect();
                let bytes = flush(next_lsn, &payloads);
                if offset + bytes.len() > file.volatile.len() {
                    break;
                }
                file.write(offset, &bytes);
                for payload in payloads {
                    written.push((next_lsn, payload));
                    next_lsn += 1;
                }
                offset += bytes.len();
                let crash_now = index + 1 == flushes && rng.below(3) > 0;
                if !crash_now {
                    file.sync();
                    synced = written.len();
                }
            }
            let disk = file.crash(&mut rng);
            let result = scan(&disk, None);
            let context = format!("seed {seed:#x} round {round}");
            assert!(
                !matches!(result.stop, Stop::Corrupt { .. }),
                "{context}: {:?}",
                result.stop
            );
            assert!(
                result.records.len() >= synced,
                "{context}: lost synced records"
            );
            assert!(
                result.records.len() <= written.len(),
                "{context}: invented records"
            );
            for (record, (lsn, payload)) in result.records.iter().zip(&written) {
                assert_eq!(record.lsn.0, *lsn, "{context}");
                assert_eq!(record.payload, payload.as_slice(), "{context}");
            }
        }
    }
}
