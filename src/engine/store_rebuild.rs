//! What start-up does when a shard's store (the LSM tree's tables, version
//! files and `current` pointer) cannot be opened: refuse, naming the way
//! out, or move the damaged store aside and rebuild it from the shard's
//! write-ahead log.
//!
//! A rebuild is lossless only while the log still holds the shard's whole
//! history, i.e. its oldest segment starts at LSN 1: checkpoints delete
//! segments once the store's tables hold them, and those writes then live
//! only in the store. `rebuild` refuses otherwise, naming the LSNs that
//! would be lost; `rebuild-lossy` rebuilds from what the log holds anyway.

use std::path::{Path, PathBuf};

use crate::store::{Store, StoreError, StoreOptions};
use crate::wal::record::Lsn;
use crate::wal::recovery;

/// `--store-recovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRecovery {
    /// Refuse to start the shard, saying which option would work.
    Strict,
    /// Rebuild from the log when it holds everything; else refuse.
    Rebuild,
    /// Rebuild from whatever the log holds, losing the writes before it.
    RebuildLossy,
}

impl StoreRecovery {
    pub fn parse(text: &str) -> Option<StoreRecovery> {
        match text {
            "strict" => Some(StoreRecovery::Strict),
            "rebuild" => Some(StoreRecovery::Rebuild),
            "rebuild-lossy" => Some(StoreRecovery::RebuildLossy),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoreRecovery::Strict => "strict",
            StoreRecovery::Rebuild => "rebuild",
            StoreRecovery::RebuildLossy => "rebuild-lossy",
        }
    }
}

/// Opens the store of the shard in `shard_dir`, or applies `recovery` when
/// it is damaged. A store locked by another process is never rebuilt.
pub fn open_store(
    shard_dir: &Path,
    options: StoreOptions,
    label: &str,
    recovery: StoreRecovery,
) -> Result<Store, String> {
    let store_dir = shard_dir.join("store");
    let damage = match Store::open(&store_dir, options, label) {
        Ok(store) => return Ok(store),
        Err(StoreError::Busy(why)) => return Err(format!("{label}: cannot open the store: {why}")),
        Err(err) => err.to_string(),
    };
    let lost = lost_by_a_rebuild(&shard_dir.join("wal"))?;
    let refusal = |advice: String| {
        format!(
            "{label}: cannot open the store at {}: {damage}. {advice}",
            store_dir.display()
        )
    };
    match (recovery, &lost) {
        (StoreRecovery::Strict, None) => Err(refusal(
            "The write-ahead log holds the shard's whole history: start once with \
             --store-recovery=rebuild to move the store aside and rebuild it from the log"
                .into(),
        )),
        (StoreRecovery::Strict | StoreRecovery::Rebuild, Some(lost)) => Err(refusal(format!(
            "A rebuild from the write-ahead log would lose {lost}: restore the data \
             directory from a backup, or start with --store-recovery=rebuild-lossy to \
             rebuild from the log anyway"
        ))),
        (StoreRecovery::Rebuild, None) | (StoreRecovery::RebuildLossy, _) => {
            let moved = move_aside(&store_dir)?;
            crate::logging::warn(
                "store damaged; moved aside and rebuilt from the write-ahead log",
                &[
                    ("shard", &label),
                    ("error", &damage),
                    ("moved_to", &moved.display()),
                    ("lost", &lost.as_deref().unwrap_or("nothing")),
                ],
            );
            Store::open(&store_dir, options, label)
                .map_err(|err| format!("{label}: cannot create a new store: {err}"))
        }
    }
}

/// What rebuilding the store from the log in `wal_dir` would lose, or
/// `None` when the log starts at LSN 1.
fn lost_by_a_rebuild(wal_dir: &Path) -> Result<Option<String>, String> {
    Ok(match recovery::oldest_segment(wal_dir)? {
        Some(Lsn(1)) => None,
        Some(first) => Some(format!(
            "LSNs 1 to {} (written before the last checkpoint)",
            first.0 - 1
        )),
        None => Some("everything it held (the log is empty)".into()),
    })
}

/// Renames the damaged store to `store.damaged-<unix seconds>` beside it.
fn move_aside(store_dir: &Path) -> Result<PathBuf, String> {
    let seconds = super::now_ns() / 1_000_000_000;
    let moved = store_dir.with_file_name(format!("store.damaged-{seconds}"));
    std::fs::rename(store_dir, &moved)
        .map_err(|err| format!("cannot move {} aside: {err}", store_dir.display()))?;
    if let Some(parent) = store_dir.parent() {
        crate::wal::sync_dir(parent)?;
    }
    Ok(moved)
}
