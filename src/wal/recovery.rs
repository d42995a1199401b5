//! Start-up recovery: read every segment of a shard's WAL in LSN order,
//! verify it, replay what the store has not applied, and cut away a torn
//! tail. Runs before the shard serves requests, so it uses blocking file
//! I/O.
//!
//! Rules:
//! - A torn tail (damage with no complete flush after it, in the last
//!   segment) is truncated away and logged at warn with shard, segment and
//!   offset, saying whether it is a torn write (the record was never
//!   completely written: the flush a crash cut short, never acknowledged
//!   in `sync` mode) or a bad complete record (all its bytes are there but
//!   do not check out: possibly an acknowledged write, lost).
//! - Damage followed by intact data is corruption: the shard refuses to
//!   start, unless the policy is [`RecoveryPolicy::Truncate`], which cuts
//!   the log at the damage and deletes the segments after it (their records
//!   are lost and the log says how many).
//! - Segments left with no intact record are deleted, so their name (the
//!   first LSN) can be used again.

use std::fs;
use std::path::{Path, PathBuf};

use super::record::Lsn;
use super::segment::{self, Damage, Stop};
use super::{SegmentInfo, sync_dir};
use crate::logging;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPolicy {
    /// Refuse to start on corruption in the middle of the log.
    Strict,
    /// Cut the log at the first damage, whatever follows.
    Truncate,
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// Segments that remain, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// LSN of the last intact record (0 for an empty log).
    pub last_lsn: Lsn,
    pub replayed: u64,
    /// Where the log was cut, if it was (also logged at warn).
    pub cut: Option<CutReport>,
}

/// A cut recovery made, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutReport {
    pub segment: PathBuf,
    /// Where the damage is.
    pub offset: usize,
    /// Where the segment was truncated (start of the damaged flush).
    pub truncated_at: usize,
    pub damage: Damage,
    /// Intact data followed (`--wal-recovery=truncate` cut it away).
    pub corrupt: bool,
    /// Later segments deleted.
    pub later_segments: usize,
}

pub fn segment_name(first: Lsn) -> String {
    format!("{:020}.wal", first.0)
}

/// The first LSN of the oldest segment in `dir`, if it holds any (a
/// missing directory holds none).
pub fn oldest_segment(dir: &Path) -> Result<Option<Lsn>, String> {
    if !dir.exists() {
        return Ok(None);
    }
    Ok(list_segments(dir)?.first().map(|(first, _)| *first))
}

fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, String> {
    let mut found = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".wal")) else {
            continue;
        };
        let first: u64 = stem
            .parse()
            .map_err(|_| format!("unexpected file {} in {}", stem, dir.display()))?;
        found.push((Lsn(first), entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Where the log must be cut: in segment `index`, at byte `offset`.
struct Cut {
    index: usize,
    /// Where the damage is, for the log.
    damage: usize,
    /// Start of the damaged flush: where the file is truncated.
    offset: usize,
    /// Corruption (intact data follows) rather than a torn tail.
    corrupt: bool,
    damage_kind: Damage,
}

/// Replays every intact record with an LSN above `applied` through `apply`.
/// Verifies the whole log before replaying or changing anything, so a
/// refused start leaves every file as it was.
pub fn recover(
    dir: &Path,
    shard_label: &str,
    applied: Lsn,
    policy: RecoveryPolicy,
    mut apply: impl FnMut(Lsn, &[u8]) -> Result<(), String>,
) -> Result<Recovered, String> {
    fs::create_dir_all(dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let listed = list_segments(dir)?;
    let read = |path: &PathBuf| {
        fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
    };

    // Pass 1: find the first damage, if any.
    let mut last: Option<Lsn> = None;
    let mut cut = None;
    for (index, (_, path)) in listed.iter().enumerate() {
        let bytes = read(path)?;
        let scan = segment::scan(&bytes, last);
        last = scan.records.last().map(|record| record.lsn).or(last);
        let is_last = index + 1 == listed.len();
        match scan.stop {
            Stop::Clean => {}
            Stop::TornTail { offset } if is_last => {
                cut = Some(Cut {
                    index,
                    damage: offset,
                    offset: scan.valid_end,
                    corrupt: false,
                    damage_kind: scan.damage.unwrap_or(Damage::TornWrite),
                });
            }
            Stop::TornTail { offset } | Stop::Corrupt { offset } => {
                cut = Some(Cut {
                    index,
                    damage: offset,
                    offset: scan.valid_end,
                    corrupt: true,
                    damage_kind: scan.damage.unwrap_or(Damage::BadRecord),
                });
                break;
            }
        }
    }
    if let Some(cut) = &cut
        && cut.corrupt
        && policy == RecoveryPolicy::Strict
    {
        return Err(format!(
            "{shard_label}: WAL segment {} is corrupt at offset {} and intact data follows; refusing to start (start with --wal-recovery=truncate to cut the log there and lose what follows)",
            listed[cut.index].1.display(),
            cut.damage
        ));
    }

    // Pass 2: replay, then cut and delete as decided.
    let mut recovered = Recovered {
        segments: Vec::new(),
        last_lsn: Lsn(0),
        replayed: 0,
        cut: None,
    };
    let mut last: Option<Lsn> = None;
    let keep = cut.as_ref().map_or(listed.len(), |cut| cut.index + 1);
    for (index, (first, path)) in listed.iter().enumerate().take(keep) {
        let bytes = read(path)?;
        let scan = segment::scan(&bytes, last);
        // The scan stops at the first damage, so every record it returns
        // lies before the cut.
        let mut intact = 0;
        for record in &scan.records {
            if record.lsn > applied {
                apply(record.lsn, record.payload)?;
                recovered.replayed += 1;
            }
            last = Some(record.lsn);
            intact += 1;
        }
        if let Some(cut) = cut.as_ref().filter(|cut| cut.index == index) {
            let report = CutReport {
                segment: path.clone(),
                offset: cut.damage,
                truncated_at: cut.offset,
                damage: cut.damage_kind,
                corrupt: cut.corrupt,
                later_segments: listed.len() - index - 1,
            };
            log_cut(shard_label, &report);
            recovered.cut = Some(report);
            truncate(path, cut.offset)?;
        }
        if intact == 0 && (cut.is_some() || index + 1 == listed.len()) {
            // Nothing intact in it: drop it so its name can be used again.
            fs::remove_file(path)
                .map_err(|err| format!("cannot remove {}: {err}", path.display()))?;
        } else {
            recovered.segments.push(SegmentInfo {
                first: *first,
                path: path.clone(),
            });
        }
    }
    for (_, later) in listed.iter().skip(keep) {
        fs::remove_file(later)
            .map_err(|err| format!("cannot remove {}: {err}", later.display()))?;
    }
    sync_dir(dir)?;
    recovered.last_lsn = last.unwrap_or(Lsn(0));
    Ok(recovered)
}

/// One warn line per cut: which shard, segment and offset, and what the
/// damage looked like, so an operator can tell a crash from bad media.
fn log_cut(shard_label: &str, report: &CutReport) {
    let msg = match (report.corrupt, report.damage) {
        (true, _) => {
            "WAL corrupt in the middle: truncating and deleting later segments as --wal-recovery=truncate asks"
        }
        (false, Damage::TornWrite) => {
            "WAL torn tail: the last flush was not completely written when the process stopped; truncating it"
        }
        (false, Damage::BadRecord) => {
            "WAL tail corrupt: a complete record in the last flush fails its checksum, so an acknowledged write may be lost; truncating it"
        }
    };
    logging::warn(
        msg,
        &[
            ("shard", &shard_label),
            ("segment", &report.segment.display()),
            ("offset", &report.offset),
            ("truncated_at", &report.truncated_at),
            ("damage", &report.damage.name()),
            ("later_segments", &report.later_segments),
        ],
    );
}

fn truncate(path: &Path, length: usize) -> Result<(), String> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    file.set_len(length as u64)
        .and_then(|()| file.sync_all())
        .map_err(|err| format!("cannot truncate {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Kind, Record};
    use crate::wal::segment::{flush_len, frame_flush};

    fn write_segment(dir: &Path, first: u64, payloads: &[&[u8]]) -> PathBuf {
        let mut records = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            Record {
                kind: Kind::Operations,
                lsn: Lsn(first + index as u64),
                payload,
            }
            .encode_into(&mut records);
        }
        let mut bytes = vec![0; flush_len(records.len())];
        frame_flush(Lsn(first), payloads.len() as u32, &records, &mut bytes);
        // Preallocated space after the flush, as the writer leaves it.
        bytes.extend(vec![0; 8192]);
        let path = dir.join(segment_name(Lsn(first)));
        fs::write(&path, bytes).unwrap();
        path
    }

    fn replay(
        dir: &Path,
        applied: u64,
        policy: RecoveryPolicy,
    ) -> Result<(Recovered, Vec<u64>), String> {
        let mut seen = Vec::new();
        let recovered = recover(dir, "shard-0", Lsn(applied), policy, |lsn, _| {
            seen.push(lsn.0);
            Ok(())
        })?;
        Ok((recovered, seen))
    }

    #[test]
    fn replays_only_past_the_applied_lsn() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, &[b"a", b"b", b"c"]);
        write_segment(dir.path(), 4, &[b"d"]);
        let (recovered, seen) = replay(dir.path(), 2, RecoveryPolicy::Strict).unwrap();
        assert_eq!(seen, vec![3, 4]);
        assert_eq!(recovered.last_lsn, Lsn(4));
        assert_eq!(recovered.segments.len(), 2);
        assert!(recovered.cut.is_none());
    }

    #[test]
    fn torn_tail_is_truncated_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, &[b"a"]);
        let path = write_segment(dir.path(), 2, &[b"bbbb", b"cccc"]);
        let mut bytes = fs::read(&path).unwrap();
        let second_record = 32 + 28;
        bytes[second_record + 25] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        // The damaged flush is dropped whole; its segment is left with
        // nothing intact and removed, so its name can be used again.
        let (recovered, seen) = replay(dir.path(), 0, RecoveryPolicy::Strict).unwrap();
        assert_eq!(seen, vec![1]);
        assert_eq!(recovered.last_lsn, Lsn(1));
        let cut = recovered.cut.expect("a cut");
        assert_eq!((cut.offset, cut.truncated_at), (60, 0));
        assert!(!cut.corrupt);
        // A flipped byte in a complete record: not a torn write.
        assert_eq!(cut.damage, Damage::BadRecord);
        assert!(!path.exists());
        // Recovering again finds a clean log.
        let (recovered, seen) = replay(dir.path(), 0, RecoveryPolicy::Strict).unwrap();
        assert_eq!(seen, vec![1]);
        assert!(recovered.cut.is_none());
    }

    #[test]
    fn a_tail_never_completely_written_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, &[b"a"]);
        let payload = [7u8; 3000];
        let path = write_segment(dir.path(), 2, &[&payload, &payload]);
        let mut bytes = fs::read(&path).unwrap();
        // The second record's last 1000 bytes never reached the disk.
        let second_end = 32 + 2 * (24 + 3000);
        bytes[second_end - 1000..second_end].fill(0);
        fs::write(&path, &bytes).unwrap();
        let (recovered, seen) = replay(dir.path(), 0, RecoveryPolicy::Strict).unwrap();
        assert_eq!(seen, vec![1]);
        let cut = recovered.cut.expect("a cut");
        assert_eq!(cut.damage, Damage::TornWrite);
        assert!(!cut.corrupt);
    }

    #[test]
    fn corruption_in_the_middle_refuses_unless_told_to_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_segment(dir.path(), 1, &[b"a", b"b"]);
        write_segment(dir.path(), 3, &[b"c"]);
        let mut bytes = fs::read(&first).unwrap();
        bytes[40] ^= 0x01;
        fs::write(&first, &bytes).unwrap();
        let err = replay(dir.path(), 0, RecoveryPolicy::Strict).unwrap_err();
        assert!(
            err.contains("corrupt at offset 32") && err.contains("--wal-recovery=truncate"),
            "{err}"
        );
        assert_eq!(
            fs::read(&first).unwrap(),
            bytes,
            "strict recovery touches nothing"
        );

        let (recovered, seen) = replay(dir.path(), 0, RecoveryPolicy::Truncate).unwrap();
        assert!(seen.is_empty(), "the damaged flush is dropped whole");
        let cut = recovered.cut.expect("a cut");
        assert!(cut.corrupt);
        assert_eq!(cut.later_segments, 1);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 0);
    }
}
