//! Backups of a whole data directory and restoring them.
//!
//! A backup is one file of items per shard, the encryption check files,
//! and `manifest.json`, written last:
//!
//! ```text
//! <target>/shard-<k>.items   "PDBITEMS1\n", then per item: key length u32 LE,
//!                            value length u32 LE, key (keyspace byte first),
//!                            value; in key order
//! <target>/kms/*.check       the KMS check values (never master keys, nor
//!                            the key vault: erasing a thread destroys its
//!                            key there, which must reach old backups too)
//! <target>/manifest.json     shard count, per shard: the LSN the file
//!                            covers, item and byte counts, SHA-256
//! ```
//!
//! Each shard's file is read from a [`Snapshot`] taken on the shard's own
//! thread: every write applied (and so every write acknowledged) before the
//! backup started is in it, later ones are not. The files are written on a
//! thread of the backup's own ([`job`]), so a shard never waits for backup
//! I/O. Restore ([`restore`]) checks every checksum and count before it
//! writes anything, and builds the new directory under a temporary name.

pub mod job;
pub mod offline;
pub mod restore;
pub mod s3;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Snapshot;

const MANIFEST: &str = "manifest.json";
const MANIFEST_KIND: &str = "progressdb-backup";
const FORMAT: u32 = 1;
const ITEMS_MAGIC: &[u8] = b"PDBITEMS1\n";
/// The KMS check files a data directory may hold under `kms/`, and the
/// key vault's marker; its master keys (`master.keys`) and the vault
/// itself are never copied.
const CHECK_FILES: &[&str] = &[
    "master.check",
    "external.check",
    crate::crypto::vault::MARKER,
];
/// A manifest larger than this is not one of ours.
const MANIFEST_BYTES_MAX: u64 = 1024 * 1024;
/// Stored keys are at most 64 KiB (their length is a u16 in WAL records).
const KEY_BYTES_MAX: u32 = 64 * 1024 + 1;
/// Larger than any value a request may write.
const VALUE_BYTES_MAX: u32 = 256 * 1024 * 1024;

/// Where a backup goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `file:///absolute/dir`
    Dir(PathBuf),
    /// `s3://bucket/prefix`, reached as [`s3`] says.
    S3 { bucket: String, prefix: String },
}

impl Target {
    /// Parses `file:///abs/dir` (a bare absolute path is taken too) or
    /// `s3://bucket/prefix`.
    pub fn parse(text: &str) -> Result<Target, String> {
        if text.len() > 4096 {
            return Err("the target is longer than 4096 bytes".into());
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            return parse_s3(rest);
        }
        let path = text.strip_prefix("file://").unwrap_or(text);
        if text.contains("://") && !text.starts_with("file://") {
            return Err(format!(
                "unsupported target {text:?}: use file:///absolute/dir or s3://bucket/prefix"
            ));
        }
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(format!(
                "the target must be an absolute path (file:///dir), got {text:?}"
            ));
        }
        if path.components().any(|part| part.as_os_str() == "..") {
            return Err("the target path may not contain `..`".into());
        }
        Ok(Target::Dir(path.to_path_buf()))
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Dir(dir) => format!("file://{}", dir.display()),
            Target::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// `bucket/prefix` after `s3://`: a bucket name as S3 allows it, and a
/// key prefix of printable characters without `..` segments.
fn parse_s3(rest: &str) -> Result<Target, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-".contains(&byte)
        });
    if !bucket_ok {
        return Err(format!(
            "{bucket:?} is not an S3 bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix_ok = prefix.len() <= 1024
        && !prefix.chars().any(char::is_control)
        && !prefix.split('/').any(|part| part == ".." || part == ".");
    if !prefix_ok {
        return Err(
            "the S3 prefix must be printable, at most 1024 bytes, without `.` or `..` parts".into(),
        );
    }
    Ok(Target::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// Writes a backup to `target` with `write`, which fills the directory
/// it is given: the target itself, or for S3 `staging`, whose files are
/// then uploaded (the manifest last) and which is removed afterwards.
pub fn deliver(
    target: &Target,
    staging: &Path,
    write: impl FnOnce(&Path) -> Result<Manifest, String>,
) -> Result<Manifest, String> {
    let (bucket, prefix) = match target {
        Target::Dir(dir) => return write(dir),
        Target::S3 { bucket, prefix } => (bucket, prefix),
    };
    let s3 = s3::S3::from_env(bucket, prefix)?;
    if s3.exists(MANIFEST)? {
        return Err(format!(
            "{} already holds a backup; choose a new prefix",
            target.describe()
        ));
    }
    // Left over by an interrupted backup of the same name.
    let _ = fs::remove_dir_all(staging);
    let uploaded = write(staging).and_then(|manifest| {
        for file in &manifest.files {
            s3.put_file(&file.name, &staging.join(&file.name))?;
        }
        for check in &manifest.checks {
            let name = format!("kms/{}", check.name);
            s3.put_file(&name, &staging.join(&name))?;
        }
        s3.put_file(MANIFEST, &staging.join(MANIFEST))?;
        Ok(manifest)
    });
    let _ = fs::remove_dir_all(staging);
    uploaded
}

/// Where a backup of `db` to S3 is staged before it is uploaded.
pub fn staging_dir(db: &Path, name: &str) -> PathBuf {
    db.join(".backup-staging").join(name)
}

/// What a finished backup holds; `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub kind: String,
    pub format: u32,
    /// The data directory format the items are in.
    pub data_format: u32,
    pub version: String,
    pub created_ms: u64,
    pub shards: usize,
    pub files: Vec<ShardFile>,
    /// The KMS check files copied from `<db>/kms/`.
    pub checks: Vec<CheckFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardFile {
    pub shard: usize,
    pub name: String,
    /// Every write of this shard up to this WAL LSN is in the file.
    pub lsn: u64,
    pub items: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckFile {
    pub name: String,
    pub sha256: String,
}

/// Counters a running backup publishes for `GET /admin/v1/backups/{id}`.
#[derive(Debug, Default)]
pub struct Progress {
    pub items: AtomicU64,
    pub bytes: AtomicU64,
    pub shards_done: AtomicU64,
}

fn items_name(shard: usize) -> String {
    format!("shard-{shard}.items")
}

/// Creates the target directory, refusing one that already holds files
/// (a backup is never written over another).
fn prepare_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let mut entries =
        fs::read_dir(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "{} is not empty; a backup needs a new or empty directory",
            dir.display()
        ));
    }
    fs::create_dir(dir.join("kms"))
        .map_err(|err| format!("cannot create {}/kms: {err}", dir.display()))
}

/// Writes one shard's items to `dir`, counting them into `progress`.
fn write_shard(
    dir: &Path,
    shard: usize,
    snapshot: Snapshot,
    progress: &Progress,
) -> Result<ShardFile, String> {
    let name = items_name(shard);
    let path = dir.join(&name);
    let failed = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
    let file = fs::File::create(&path).map_err(failed)?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let lsn = snapshot.lsn.0;
    let mut items = 0;
    out.write_all(ITEMS_MAGIC).map_err(failed)?;
    for item in snapshot {
        let (key, value) = item.map_err(|err| format!("shard {shard}: {err}"))?;
        out.write_all(&(key.len() as u32).to_le_bytes())
            .and_then(|()| out.write_all(&(value.len() as u32).to_le_bytes()))
            .and_then(|()| out.write_all(&key))
            .and_then(|()| out.write_all(&value))
            .map_err(failed)?;
        items += 1;
        progress.items.fetch_add(1, Ordering::Relaxed);
        progress
            .bytes
            .fetch_add(8 + (key.len() + value.len()) as u64, Ordering::Relaxed);
    }
    let (bytes, sha256, writer) = out.finish();
    let file = writer
        .into_inner()
        .map_err(|err| failed(err.into_error()))?;
    file.sync_all().map_err(failed)?;
    progress.shards_done.fetch_add(1, Ordering::Relaxed);
    Ok(ShardFile {
        shard,
        name,
        lsn,
        items,
        bytes,
        sha256,
    })
}

/// Copies the KMS check files of the data directory `db`, if any.
fn copy_checks(db: &Path, dir: &Path) -> Result<Vec<CheckFile>, String> {
    let mut copied = Vec::new();
    for name in CHECK_FILES {
        let source = db.join("kms").join(name);
        let bytes = match fs::read(&source) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(format!("cannot read {}: {err}", source.display())),
        };
        write_synced(&dir.join("kms").join(name), &bytes)?;
        copied.push(CheckFile {
            name: (*name).to_owned(),
            sha256: hex(&Sha256::digest(&bytes)),
        });
    }
    Ok(copied)
}

/// Writes the whole backup of `snapshots` (one per shard) into `dir`;
/// the manifest goes last, so a backup without one is incomplete.
pub fn write_backup(
    dir: &Path,
    db: &Path,
    mut snapshots: Vec<(usize, Snapshot)>,
    progress: &Progress,
) -> Result<Manifest, String> {
    prepare_dir(dir)?;
    snapshots.sort_by_key(|(shard, _)| *shard);
    let written = snapshots
        .into_iter()
        .map(|(shard, snapshot)| write_shard(dir, shard, snapshot, progress))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|files| finish_backup(dir, db, files));
    remove_if_failed(dir, written)
}

/// Removes what a failed backup wrote into `dir`, which
/// [`prepare_dir`] found empty, so a retry can use it again.
fn remove_if_failed(dir: &Path, written: Result<Manifest, String>) -> Result<Manifest, String> {
    if written.is_err() {
        let _ = fs::remove_dir_all(dir);
    }
    written
}

/// Copies the check files and writes the manifest over `files`.
fn finish_backup(dir: &Path, db: &Path, files: Vec<ShardFile>) -> Result<Manifest, String> {
    let checks = copy_checks(db, dir)?;
    let manifest = Manifest {
        kind: MANIFEST_KIND.into(),
        format: FORMAT,
        data_format: crate::server::datadir::FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        created_ms: crate::engine::now_ns() / 1_000_000,
        shards: files.len(),
        files,
        checks,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let temporary = dir.join(".manifest.json.tmp");
    write_synced(&temporary, &text)?;
    fs::rename(&temporary, dir.join(MANIFEST))
        .map_err(|err| format!("cannot write {}/{MANIFEST}: {err}", dir.display()))?;
    crate::wal::sync_dir(dir)?;
    Ok(manifest)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let result = fs::File::create(path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    result.map_err(|err| format!("cannot write {}: {err}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written, their SHA-256 in hex, and the inner writer.
    fn finish(self) -> (u64, String, W) {
        (self.bytes, hex(&self.hasher.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_file_urls() {
        assert_eq!(
            Target::parse("file:///var/backups/one"),
            Ok(Target::Dir("/var/backups/one".into()))
        );
        assert_eq!(
            Target::parse("/var/backups/one"),
            Ok(Target::Dir("/var/backups/one".into()))
        );
        assert_eq!(
            Target::parse("s3://my-bucket/backups/2026/"),
            Ok(Target::S3 {
                bucket: "my-bucket".into(),
                prefix: "backups/2026".into()
            })
        );
        for bad in [
            "s3://No_Such/x",
            "s3://ab",
            "s3://bucket/a/../b",
            "file://relative/dir",
            "relative",
            "http://example/x",
            "file:///a/../b",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Target::parse(&format!("/{}", "a".repeat(5000))).is_err());
    }
}
