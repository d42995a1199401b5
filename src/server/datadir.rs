//! The data directory: its layout marker, the shard count it was created
//! with, and the development API key.
//!
//! ```text
//! <db>/progressdb.json   {"format": 1, "shards": N}, written once
//! <db>/dev-api-key       generated when no key is configured (mode 0600)
//! <db>/shard-<k>/        one shard: its WAL and its LSM-tree store
//! <db>/cluster-node      clustered mode: the shards are a copy of the
//!                        partitions' logs, rebuilt at every start
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const META_FILE: &str = "progressdb.json";
const DEV_KEY_FILE: &str = "dev-api-key";
/// 2: one LSM-tree per shard with the keyspace as a key prefix, its
/// sequence numbers being WAL LSNs (1 was one fjall database per shard).
pub const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    shards: usize,
}

const CLUSTER_MARKER_FILE: &str = "cluster-node";

/// Clustered mode keeps no state of its own: the partitions' logs are the
/// truth, and a node's store may hold writes the log never took (applied
/// before a crash cut their append short). So every start empties the
/// shard directories and replays the logs. A directory that holds data of
/// a single-node server is refused rather than emptied.
pub fn reset_for_cluster(db: &Path, shards: usize) -> Result<(), String> {
    let marked = db.join(CLUSTER_MARKER_FILE).exists();
    for shard in 0..shards {
        let dir = shard_dir(db, shard);
        if !dir.exists() {
            continue;
        }
        if !marked {
            return Err(format!(
                "{} holds a single-node server's data; clustered mode rebuilds its store from the log at every start and would delete it (use a new --db)",
                db.display()
            ));
        }
        fs::remove_dir_all(&dir).map_err(|err| format!("cannot empty {}: {err}", dir.display()))?;
    }
    write_durably(db, CLUSTER_MARKER_FILE, b"", 0o644)
}

pub fn shard_dir(db: &Path, shard: usize) -> PathBuf {
    db.join(format!("shard-{shard}"))
}

/// Creates the directory if needed and settles the shard count: the one
/// stored there wins when none is requested; a different requested count
/// is refused, because `shard_for` would then look for threads on the
/// wrong shard.
pub fn prepare(db: &Path, requested: Option<usize>, default: usize) -> Result<usize, String> {
    fs::create_dir_all(db)
        .map_err(|err| format!("cannot create data directory {}: {err}", db.display()))?;
    match stored_shards(db)? {
        Some(stored) => match requested {
            Some(count) if count != stored => Err(format!(
                "{} was created with {stored} shards; --shards {count} would misplace threads (start with --shards {stored} or a new --db)",
                db.display(),
            )),
            _ => Ok(stored),
        },
        None => {
            let shards = requested.unwrap_or(default);
            let meta = serde_json::to_vec(&Meta {
                format: FORMAT,
                shards,
            })
            .expect("meta serializes");
            write_durably(db, META_FILE, &meta, 0o644)?;
            Ok(shards)
        }
    }
}

/// The shard count `db` was created with, or `None` when it holds no
/// layout marker yet (a new directory). Embedded mode checks it before
/// opening, to refuse a multi-shard directory with a typed error.
pub fn stored_shards(db: &Path) -> Result<Option<usize>, String> {
    let meta_path = db.join(META_FILE);
    match fs::read(&meta_path) {
        Ok(bytes) => {
            let meta: Meta = serde_json::from_slice(&bytes)
                .map_err(|err| format!("{} is damaged: {err}", meta_path.display()))?;
            if meta.format != FORMAT {
                return Err(format!(
                    "{} has format {}, this server reads format {FORMAT}",
                    db.display(),
                    meta.format
                ));
            }
            Ok(Some(meta.shards))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("cannot read {}: {err}", meta_path.display())),
    }
}

/// The development key: read from `<db>/dev-api-key`, or generated there.
/// Returns the key and whether it was generated just now.
pub fn dev_key(db: &Path) -> Result<(String, bool), String> {
    let path = db.join(DEV_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim().to_owned();
            if key.is_empty() {
                return Err(format!(
                    "{} is empty; delete it to generate a new key",
                    path.display()
                ));
            }
            Ok((key, false))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = format!("sk_dev_{}", random_hex(16)?);
            write_durably(db, DEV_KEY_FILE, key.as_bytes(), 0o600)?;
            Ok((key, true))
        }
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

/// Free bytes on the volume holding `path` (for unprivileged users), or
/// `None` when the file system cannot say.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is written by the call
    // before it is read, only when the call succeeds.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Share of the free space the shards' preallocated log segments may take
/// at start: each shard preallocates two (the open one and the next), so
/// with 8 they take at most a quarter of it, leaving the rest for the
/// records kept until their memtable is flushed and for the tables.
const FREE_SPACE_PER_SEGMENT_DIVISOR: u64 = 8;

/// The WAL segment size for `shards` shards on a volume with `free` bytes
/// free: `configured`, or less (in whole 4 KiB blocks, at least `min`)
/// when preallocating it would make a small volume unusable.
pub fn segment_bytes_that_fit(configured: u64, min: u64, free: u64, shards: usize) -> u64 {
    let share = free / (shards.max(1) as u64 * FREE_SPACE_PER_SEGMENT_DIVISOR);
    configured.min(share / 4096 * 4096).max(min)
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut buffer))
        .map_err(|err| format!("cannot read /dev/urandom: {err}"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a new file via a temporary name, fsyncs it, renames it into
/// place and fsyncs the directory, so a crash leaves the old state or the
/// new one, never a torn file.
fn write_durably(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
    let temporary = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &target)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|err| format!("cannot write {}: {err}", target.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_shrink_to_fit_a_small_volume_but_not_below_the_minimum() {
        use super::segment_bytes_that_fit as fit;
        const MIB: u64 = 1024 * 1024;
        assert_eq!(fit(64 * MIB, 64 * 1024, 100_000 * MIB, 4), 64 * MIB);
        // 100 MiB free, 2 shards: 100/16 MiB each, rounded to whole blocks.
        assert_eq!(fit(64 * MIB, 64 * 1024, 100 * MIB, 2), 6400 * 1024);
        assert_eq!(fit(64 * MIB, 64 * 1024, MIB, 8), 64 * 1024);
    }

    use super::*;

    #[test]
    fn shard_count_is_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(prepare(dir.path(), None, 3), Ok(3));
        assert_eq!(prepare(dir.path(), None, 8), Ok(3));
        assert_eq!(prepare(dir.path(), Some(3), 8), Ok(3));
        let err = prepare(dir.path(), Some(2), 8).unwrap_err();
        assert!(err.contains("created with 3 shards"), "{err}");
        assert_eq!(stored_shards(dir.path()), Ok(Some(3)));
        assert_eq!(stored_shards(&dir.path().join("new")), Ok(None));
    }

    #[test]
    fn dev_key_is_generated_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (first, generated) = dev_key(dir.path()).unwrap();
        assert!(generated && first.starts_with("sk_dev_") && first.len() == 39);
        let (second, generated) = dev_key(dir.path()).unwrap();
        assert!(!generated);
        assert_eq!(first, second);
        let mode = fs::metadata(dir.path().join(DEV_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_cluster_node_empties_only_its_own_shards() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(shard_dir(dir.path(), 0)).unwrap();
        let refused = reset_for_cluster(dir.path(), 1).unwrap_err();
        assert!(refused.contains("single-node"), "{refused}");
        assert!(shard_dir(dir.path(), 0).exists());
        let fresh = tempfile::tempdir().unwrap();
        reset_for_cluster(fresh.path(), 2).unwrap();
        fs::create_dir_all(shard_dir(fresh.path(), 1).join("wal")).unwrap();
        reset_for_cluster(fresh.path(), 2).unwrap();
        assert!(!shard_dir(fresh.path(), 1).exists());
    }
}
