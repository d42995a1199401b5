//! `progressdb backup --db DIR --to TARGET` for a stopped server.
//!
//! Each shard is opened as the server opens it (replaying its WAL, and
//! taking the directory's lock, so a running server is refused), its
//! snapshot written, and the shard closed again, one shard at a time on
//! an executor of its own.

use std::path::Path;

use super::{
    Manifest, Progress, Target, finish_backup, prepare_dir, remove_if_failed, write_shard,
};
use crate::server::{self, datadir};
use crate::shard::ShardId;
use crate::store::StoreOptions;
use crate::wal::recovery::RecoveryPolicy;
use crate::wal::{Durability, WalOptions};

/// io_uring memory of the executor each shard is opened on.
const IO_MEMORY_BYTES: usize = 256 * 1024;

pub fn backup(db: &Path, to: &Target) -> Result<Manifest, String> {
    let shards = datadir::stored_shards(db)?
        .ok_or_else(|| format!("{} is not a ProgressDB data directory", db.display()))?;
    let staging = super::staging_dir(db, "offline");
    super::deliver(to, &staging, |dir| {
        prepare_dir(dir)?;
        let written = (0..shards)
            .map(|shard| backup_shard(db, shard, dir))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|files| finish_backup(dir, db, files));
        remove_if_failed(dir, written)
    })
}

fn backup_shard(db: &Path, shard: usize, dir: &Path) -> Result<super::ShardFile, String> {
    let io_memory = server::io_memory_per_shard(IO_MEMORY_BYTES, 1)?;
    let (db, dir) = (db.to_path_buf(), dir.to_path_buf());
    let executor =
        crate::runtime::start_thread("progressdb-backup", io_memory, move || async move {
            let wal = WalOptions {
                durability: Durability::Sync,
                flush_interval: std::time::Duration::from_millis(5),
                segment_bytes: crate::config::WAL_SEGMENT_BYTES_DEFAULT as u64,
                fail_after_flushes: None,
            };
            let engine = server::open_shard(
                &db,
                ShardId(shard),
                StoreOptions::default(),
                wal,
                (RecoveryPolicy::Strict, crate::engine::StoreRecovery::Strict),
                None,
            )?;
            let snapshot = engine.snapshot().map_err(|err| err.to_string())?;
            let written = write_shard(&dir, shard, snapshot, &Progress::default());
            engine.stop();
            written
        })?;
    executor
        .join()
        .map_err(|err| format!("shard {shard}: {err}"))?
}
