//! `progressdb restore`: checks a backup whole, then rebuilds a data
//! directory from it.
//!
//! Nothing is written until the manifest parses, every file it names has
//! its size, SHA-256 and item count, and every item frame is whole. The
//! directory is then built under a temporary name beside the destination
//! and renamed into place at the end, so an interrupted restore never
//! leaves something that looks like a data directory. Each shard's items
//! are applied to a fresh store in batches whose LSNs end at (at least)
//! the LSN the backup recorded, so the restored WAL continues from there.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{
    CHECK_FILES, ITEMS_MAGIC, KEY_BYTES_MAX, MANIFEST, MANIFEST_BYTES_MAX, MANIFEST_KIND, Manifest,
    ShardFile, Target, VALUE_BYTES_MAX, hex,
};
use crate::server::datadir;
use crate::store::{Ops, Store, StoreError, StoreOptions};
use crate::wal::record::Lsn;

/// Items applied to the new store per batch, and bytes.
const BATCH_ITEMS_MAX: usize = 4096;
const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What a restore did, for the command's report.
#[derive(Debug)]
pub struct Restored {
    pub shards: usize,
    pub items: u64,
}

/// Reads and checks the manifest in `dir` and every file it names.
fn verify(dir: &Path) -> Result<Manifest, String> {
    let manifest = read_manifest(dir)?;
    for file in &manifest.files {
        scan_items(&dir.join(&file.name), file, |_| Ok(()))?;
    }
    for check in &manifest.checks {
        let path = dir.join("kms").join(&check.name);
        let bytes = read_limited(&path, MANIFEST_BYTES_MAX)?;
        if hex(&Sha256::digest(&bytes)) != check.sha256 {
            return Err(corrupt(&path, "its checksum does not match the manifest"));
        }
    }
    Ok(manifest)
}

/// Checks `from` whole, then builds the data directory `db` from it. An
/// S3 backup is downloaded beside `db` first.
pub fn restore(from: &Target, db: &Path) -> Result<Restored, String> {
    let (bucket, prefix) = match from {
        Target::Dir(dir) => return restore_dir(dir, db),
        Target::S3 { bucket, prefix } => (bucket, prefix),
    };
    refuse_existing(db)?;
    let s3 = super::s3::S3::from_env(bucket, prefix)?;
    let staging = sibling(db, "download")?;
    let restored = download(&s3, &staging).and_then(|()| restore_dir(&staging, db));
    let _ = fs::remove_dir_all(&staging);
    restored
}

/// Fetches the manifest and every file it names into `staging`.
fn download(s3: &super::s3::S3, staging: &Path) -> Result<(), String> {
    let kms = staging.join("kms");
    fs::create_dir_all(&kms).map_err(|err| format!("cannot create {}: {err}", kms.display()))?;
    if !s3.get_file(MANIFEST, &staging.join(MANIFEST), MANIFEST_BYTES_MAX)? {
        return Err(format!(
            "the bucket has no {MANIFEST} there: not a backup, or one that did not finish"
        ));
    }
    let manifest = read_manifest(staging)?;
    for file in &manifest.files {
        // One byte over the expected size is enough to see a mismatch.
        if !s3.get_file(&file.name, &staging.join(&file.name), file.bytes + 1)? {
            return Err(corrupt(&staging.join(&file.name), "it is missing"));
        }
    }
    for check in &manifest.checks {
        let name = format!("kms/{}", check.name);
        if !s3.get_file(&name, &staging.join(&name), MANIFEST_BYTES_MAX)? {
            return Err(corrupt(&staging.join(&name), "it is missing"));
        }
    }
    Ok(())
}

fn restore_dir(dir: &Path, db: &Path) -> Result<Restored, String> {
    let manifest = verify(dir)?;
    refuse_existing(db)?;
    let building = sibling(db, "restoring")?;
    let built = build(dir, &manifest, &building);
    if let Err(err) = built {
        let _ = fs::remove_dir_all(&building);
        return Err(err);
    }
    fs::rename(&building, db).map_err(|err| format!("cannot move into {}: {err}", db.display()))?;
    if let Some(parent) = db.parent() {
        crate::wal::sync_dir(parent)?;
    }
    Ok(Restored {
        shards: manifest.shards,
        items: manifest.files.iter().map(|file| file.items).sum(),
    })
}

fn build(dir: &Path, manifest: &Manifest, building: &Path) -> Result<(), String> {
    datadir::prepare(building, Some(manifest.shards), manifest.shards)?;
    for file in &manifest.files {
        restore_shard(dir, file, building)?;
    }
    if !manifest.checks.is_empty() {
        let kms = building.join("kms");
        fs::create_dir_all(&kms)
            .map_err(|err| format!("cannot create {}: {err}", kms.display()))?;
        for check in &manifest.checks {
            let bytes = read_limited(&dir.join("kms").join(&check.name), MANIFEST_BYTES_MAX)?;
            super::write_synced(&kms.join(&check.name), &bytes)?;
        }
    }
    crate::wal::sync_dir(building)
}

/// Applies one shard's items to a new store in `building`.
fn restore_shard(dir: &Path, file: &ShardFile, building: &Path) -> Result<(), String> {
    let path = dir.join(&file.name);
    // The first pass counts the batches, so their LSNs can end at the
    // backup's: the restored WAL then goes on from the same LSN.
    let batches = scan_items(&path, file, |_| Ok(()))?;
    let first_lsn = (file.lsn + 1).saturating_sub(batches).max(1);
    let store_dir = datadir::shard_dir(building, file.shard).join("store");
    let label = format!("restore-{}", file.shard);
    let store = Store::open(&store_dir, StoreOptions::default(), &label)
        .map_err(|err| format!("cannot create {}: {err}", store_dir.display()))?;
    // Every item comes from a verified backup of durable data and there is
    // no log here to wait for: all of it may be written to tables.
    store
        .log_durable_watermark()
        .store(u64::MAX, std::sync::atomic::Ordering::Release);
    let mut lsn = first_lsn;
    scan_items(&path, file, |ops| {
        while let Err(StoreError::Busy(_)) = store.admit_write() {
            store.persist().map_err(|err| err.to_string())?;
        }
        store
            .apply(Lsn(lsn), ops)
            .map_err(|err| format!("shard {}: {err}", file.shard))?;
        lsn += 1;
        Ok(())
    })?;
    store
        .persist()
        .map_err(|err| format!("cannot write {}: {err}", store_dir.display()))
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Err(format!(
            "{} has no {MANIFEST}: not a backup, or one that did not finish",
            dir.display()
        ));
    }
    let bytes = read_limited(&path, MANIFEST_BYTES_MAX)?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|err| corrupt(&path, &err.to_string()))?;
    if manifest.kind != MANIFEST_KIND || manifest.format != super::FORMAT {
        return Err(corrupt(
            &path,
            "not a ProgressDB backup manifest of format 1",
        ));
    }
    if manifest.data_format != datadir::FORMAT {
        return Err(format!(
            "{} holds data format {}; this server reads format {}",
            dir.display(),
            manifest.data_format,
            datadir::FORMAT
        ));
    }
    let shards_listed: Vec<usize> = manifest.files.iter().map(|file| file.shard).collect();
    let shards_expected: Vec<usize> = (0..manifest.shards).collect();
    if manifest.shards == 0 || shards_listed != shards_expected {
        return Err(corrupt(
            &path,
            "its shard files do not match its shard count",
        ));
    }
    let names_ok = manifest
        .files
        .iter()
        .all(|file| file.name == super::items_name(file.shard))
        && manifest
            .checks
            .iter()
            .all(|check| CHECK_FILES.contains(&check.name.as_str()));
    if !names_ok {
        return Err(corrupt(&path, "it names files a backup does not hold"));
    }
    Ok(manifest)
}

/// Reads `path`'s item frames, checking them against `expected` (size,
/// SHA-256, count), and hands them to `batch` in batches; returns how many
/// batches there were. A mismatch is reported after the whole file is
/// read, so nothing should be kept from a failed scan.
fn scan_items(
    path: &Path,
    expected: &ShardFile,
    mut batch: impl FnMut(Ops) -> Result<(), String>,
) -> Result<u64, String> {
    let file = fs::File::open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => corrupt(path, "it is missing"),
        _ => format!("cannot read {}: {err}", path.display()),
    })?;
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut magic = [0u8; ITEMS_MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|_| corrupt(path, "it is too short"))?;
    if magic != ITEMS_MAGIC {
        return Err(corrupt(path, "it is not a backup items file"));
    }
    let (mut items, mut batches) = (0u64, 0u64);
    let mut ops = Ops::default();
    let mut ops_bytes = 0;
    while let Some((key, value)) = read_item(&mut reader, path)? {
        ops_bytes += key.len() + value.len();
        if !ops.put_stored(&key, value) {
            return Err(corrupt(path, "an item names an unknown keyspace"));
        }
        items += 1;
        if ops.len() >= BATCH_ITEMS_MAX || ops_bytes >= BATCH_BYTES_MAX {
            batch(std::mem::take(&mut ops))?;
            batches += 1;
            ops_bytes = 0;
        }
    }
    if !ops.is_empty() {
        batch(ops)?;
        batches += 1;
    }
    let sha256 = hex(&reader.hasher.finalize());
    if reader.bytes != expected.bytes || sha256 != expected.sha256 || items != expected.items {
        return Err(corrupt(
            path,
            &format!(
                "{} bytes and {items} items with SHA-256 {sha256}, the manifest says {} bytes and {} items with {}",
                reader.bytes, expected.bytes, expected.items, expected.sha256
            ),
        ));
    }
    Ok(batches)
}

/// A stored key (keyspace byte first) and its value.
type Item = (Vec<u8>, Vec<u8>);

/// One item frame, or `None` at a clean end of file.
fn read_item(reader: &mut impl Read, path: &Path) -> Result<Option<Item>, String> {
    let mut lengths = [0u8; 8];
    let mut got = 0;
    while got < lengths.len() {
        match reader.read(&mut lengths[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(corrupt(path, "it ends inside an item")),
            Ok(count) => got += count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        }
    }
    let key_len = u32::from_le_bytes(lengths[..4].try_into().expect("4 bytes"));
    let value_len = u32::from_le_bytes(lengths[4..].try_into().expect("4 bytes"));
    if key_len == 0 || key_len > KEY_BYTES_MAX || value_len > VALUE_BYTES_MAX {
        return Err(corrupt(path, "an item has an impossible length"));
    }
    let mut key = vec![0; key_len as usize];
    let mut value = vec![0; value_len as usize];
    reader
        .read_exact(&mut key)
        .and_then(|()| reader.read_exact(&mut value))
        .map_err(|_| corrupt(path, "it ends inside an item"))?;
    Ok(Some((key, value)))
}

fn refuse_existing(db: &Path) -> Result<(), String> {
    match fs::read_dir(db) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} already exists and is not empty; restore into a new directory",
                    db.display()
                ));
            }
            fs::remove_dir(db).map_err(|err| format!("cannot replace {}: {err}", db.display()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!("cannot read {}: {err}", db.display())),
    }
}

/// `<parent>/.<name>.<what>`, emptied of what an interrupted restore left.
fn sibling(db: &Path, what: &str) -> Result<PathBuf, String> {
    let name = db
        .file_name()
        .ok_or_else(|| format!("{} names no directory", db.display()))?;
    let parent = db.parent().filter(|parent| !parent.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    let building = parent.join(format!(".{}.{what}", name.to_string_lossy()));
    if building.exists() {
        fs::remove_dir_all(&building)
            .map_err(|err| format!("cannot clear {}: {err}", building.display()))?;
    }
    Ok(building)
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let size = fs::metadata(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?
        .len();
    if size > limit {
        return Err(corrupt(path, "it is far larger than it can be"));
    }
    fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

fn corrupt(path: &Path, why: &str) -> String {
    format!(
        "the backup is corrupt or incomplete: {}: {why}",
        path.display()
    )
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}
