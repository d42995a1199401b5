//! The key vault: each encrypted thread's data key, wrapped by the KMS,
//! kept outside the data log so that erasing the thread can destroy it.
//!
//! A key stored inside the thread record would be copied into the WAL,
//! into every table compaction rewrites, and into every backup, and none
//! of those copies can be taken back. Here each thread's wrapped key is
//! one small file, `<db>/kms/vault/<thread id>.key` (thread ids are
//! `[A-Za-z0-9_-]`, so they are file names as they are). Neither the WAL
//! nor the store nor a backup ever holds it. Erasing the thread unlinks
//! the file: every sealed copy of its title, bodies and versions (in WAL
//! segments not yet checkpointed, in old table files, in backups taken
//! before) stops opening at once, since the key exists nowhere else.
//!
//! One file per key, rather than one vault file per shard, makes the two
//! operations that matter cheap and crash-safe without rewriting anything:
//! storing is write a temporary file, fsync, link it to its name (which
//! fails if a key is there already, so a concurrent or retried create
//! adopts the key in place instead of replacing it), fsync the directory;
//! destroying is unlink and fsync the directory. A create is acknowledged
//! only after its key is durable. Every call does blocking file I/O, so
//! the shard runs it on a blocking thread; nothing here takes a lock.
//!
//! What the vault holds is still wrapped by the master key: a copy of the
//! vault alone opens nothing, and the vault with a backup and the master
//! key opens exactly the threads not erased since (see README, Retention
//! and erasure, for what an operator keeps and for how long).

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::WrappedKey;

/// A wrapped key file is a few hundred bytes; anything larger is not ours.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Beside the vault, in `<db>/kms/`: says this data directory keeps its
/// keys in a vault. Backups copy it (the vault they do not), so a restored
/// directory started without its vault is refused instead of finding
/// every encrypted thread's key gone.
pub const MARKER: &str = "vault.marker";

/// Where a data directory keeps its thread keys (cheap to clone).
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> String {
    format!("key vault: cannot {what} {}: {err}", path.display())
}

impl Vault {
    /// The vault under `kms_dir` (`<db>/kms`), created (mode 0700) if
    /// missing, unless the directory's marker says it should be there;
    /// temporary files a crash left behind are removed.
    pub fn open(kms_dir: &Path) -> Result<Vault, String> {
        let dir = kms_dir.join("vault");
        let marker = kms_dir.join(MARKER);
        if marker.exists() && !dir.exists() {
            return Err(format!(
                "the key vault {} is missing: the keys of this data directory's encrypted \
                 threads are there. After a restore, copy the vault kept with the master keys \
                 into it (see README, Field-level encryption); without it every encrypted \
                 thread would be unreadable",
                dir.display()
            ));
        }
        fs::create_dir_all(&dir).map_err(|err| io_error("create", &dir, err))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|err| io_error("protect", &dir, err))?;
        let entries = fs::read_dir(&dir).map_err(|err| io_error("list", &dir, err))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        if !marker.exists() {
            let text = b"This data directory keeps its thread keys in kms/vault/.\n";
            fs::write(&marker, text)
                .and_then(|()| fs::File::open(&marker)?.sync_all())
                .and_then(|()| fs::File::open(kms_dir)?.sync_all())
                .map_err(|err| io_error("write", &marker, err))?;
        }
        Ok(Vault { dir })
    }

    fn path(&self, thread: &str) -> PathBuf {
        self.dir.join(format!("{thread}.key"))
    }

    /// Stores `wrapped` as `thread`'s key, durably, unless the vault holds
    /// one already: then that one is returned and kept.
    pub fn store(&self, thread: &str, wrapped: &WrappedKey) -> Result<Option<WrappedKey>, String> {
        let path = self.path(thread);
        let salt: [u8; 8] = super::random_bytes().map_err(|err| err.to_string())?;
        let temporary = self.dir.join(format!("{thread}.{}.tmp", super::hex(&salt)));
        let json = serde_json::to_vec(wrapped).expect("a wrapped key serializes");
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(&json)?;
                file.sync_all()
            });
        written.map_err(|err| io_error("write", &temporary, err))?;
        let linked = fs::hard_link(&temporary, &path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AlreadyExists => return self.load(thread),
            Err(err) => return Err(io_error("link", &path, err)),
        }
        self.sync()?;
        Ok(None)
    }

    /// `thread`'s key; `None` when it has none (never had, or destroyed).
    pub fn load(&self, thread: &str) -> Result<Option<WrappedKey>, String> {
        let path = self.path(thread);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error("open", &path, err)),
        };
        let mut json = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, KEY_FILE_BYTES_MAX),
            &mut json,
        )
        .map_err(|err| io_error("read", &path, err))?;
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|_| format!("key vault: {} is damaged", path.display()))
    }

    /// Whether `thread` has a key here (a `stat`, cheap enough inline).
    pub fn holds(&self, thread: &str) -> bool {
        self.path(thread).exists()
    }

    /// Destroys `thread`'s key, durably; a key already gone is fine.
    pub fn destroy(&self, thread: &str) -> Result<(), String> {
        let path = self.path(thread);
        match fs::remove_file(&path) {
            Ok(()) => self.sync(),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("remove", &path, err)),
        }
    }

    fn sync(&self) -> Result<(), String> {
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| io_error("sync", &self.dir, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> WrappedKey {
        WrappedKey {
            key_id: n,
            wrapped: format!("{n:02x}ab"),
        }
    }

    #[test]
    fn keys_are_stored_durably_adopted_when_present_and_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        assert_eq!(vault.load("t1").unwrap(), None);
        assert_eq!(vault.store("t1", &key(1)).unwrap(), None);
        assert!(vault.holds("t1"));
        // A second create of the same id keeps the first key.
        assert_eq!(vault.store("t1", &key(2)).unwrap(), Some(key(1)));
        assert_eq!(vault.load("t1").unwrap(), Some(key(1)));
        let mode = fs::metadata(vault.path("t1")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        vault.destroy("t1").unwrap();
        vault.destroy("t1").unwrap();
        assert!(!vault.holds("t1"));
        assert_eq!(vault.load("t1").unwrap(), None);
        // Reopening keeps keys and drops what a crash left half-written.
        vault.store("t2", &key(3)).unwrap();
        fs::write(vault.dir.join("t3.00.tmp"), b"half").unwrap();
        let reopened = Vault::open(dir.path()).unwrap();
        assert_eq!(reopened.load("t2").unwrap(), Some(key(3)));
        let names: Vec<_> = fs::read_dir(&reopened.dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["t2.key".to_string()]);
        fs::write(reopened.path("t4"), b"{not json").unwrap();
        assert!(reopened.load("t4").unwrap_err().contains("damaged"));
        // A directory that had a vault does not open without it.
        fs::remove_dir_all(&reopened.dir).unwrap();
        assert!(Vault::open(dir.path()).unwrap_err().contains("is missing"));
    }
}
