//! Field-level encryption: envelope encryption with AES-256-GCM.
//!
//! Each thread gets its own random 256-bit data-encryption key (DEK). The
//! DEK is stored only wrapped (AES-256-GCM, random nonce) under a master
//! key held by the KMS; the embedded KMS keeps its master keys in a file
//! created with mode 0600. Message bodies, past versions and thread titles
//! are sealed with the thread's DEK before they reach the WAL or the store.
//!
//! Nonces are never reused under one key: a field's nonce is derived from
//! what makes it unique within its thread — a message body's from its
//! timestamp (unique per thread) and version number, a title's from the
//! thread's update timestamp with a marker no message version reaches. The
//! thread and message ids are bound as associated data, so a sealed value
//! moved to another message does not open.
//!
//! Rotation adds a master key; new DEKs are wrapped under the newest, and
//! every older key stays in the keyring so old data stays readable.
//!
//! Master keys live in a KMS ([`Kms`]): the embedded one is the keyring
//! here; the external one is reached over HTTP ([`external`]) and keeps its
//! keys to itself. Wrapped thread keys live in the data directory's key
//! [`vault`], outside the data log, so that erasing a thread can destroy
//! its key (threads created before the vault move theirs there lazily).

pub mod external;
pub mod fields;
pub mod vault;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};

pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// Version field of title nonces: above any message version.
const TITLE_NONCE_MARK: u32 = u32::MAX;
/// Sealed with each master key at creation, to recognise a wrong key at
/// start instead of failing on the first read.
const CHECK_PLAINTEXT: &[u8] = b"progressdb master key check";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A ciphertext did not open: wrong key, or damaged or moved data.
    Open,
    /// The keyring does not hold the master key a DEK was wrapped with.
    UnknownMasterKey(u32),
    Setup(String),
    /// The external KMS could not be reached or gave an unusable answer.
    Kms(String),
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CryptoError::Open => {
                write!(f, "a sealed value did not open (wrong key or damaged data)")
            }
            CryptoError::UnknownMasterKey(id) => write!(f, "master key {id} is not in the keyring"),
            CryptoError::Setup(why) => f.write_str(why),
            CryptoError::Kms(why) => write!(f, "external KMS: {why}"),
        }
    }
}

/// A DEK as stored: wrapped under master key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub key_id: u32,
    /// Hex of nonce followed by ciphertext.
    pub wrapped: String,
}

// Hex is on the path of every sealed read and write, so it is a table
// lookup per nibble rather than formatting or parsing per byte.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    /// Each byte's digit value, or `INVALID`.
    const INVALID: u8 = 0xff;
    const VALUES: [u8; 256] = {
        let mut values = [INVALID; 256];
        let mut digit = 0;
        while digit < 10 {
            values[b'0' as usize + digit] = digit as u8;
            digit += 1;
        }
        let mut letter = 0;
        while letter < 6 {
            values[b'a' as usize + letter] = 10 + letter as u8;
            values[b'A' as usize + letter] = 10 + letter as u8;
            letter += 1;
        }
        values
    };
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    let mut invalid = 0;
    for pair in digits.chunks_exact(2) {
        let (high, low) = (VALUES[usize::from(pair[0])], VALUES[usize::from(pair[1])]);
        // Checked once at the end, so the loop has no early exit.
        invalid |= (high | low) & 0xf0;
        bytes.push(high << 4 | (low & 0x0f));
    }
    (invalid == 0).then_some(bytes)
}

/// Random bytes from the kernel's `getrandom` (no file to open: cheap
/// enough for a nonce per sealed field on a shard thread), read from
/// `/dev/urandom` if that call is refused.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    let read = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), N, 0) };
    if usize::try_from(read).ok() == Some(N) {
        return Ok(bytes);
    }
    fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes))
        .map_err(|err| CryptoError::Setup(format!("cannot read /dev/urandom: {err}")))?;
    Ok(bytes)
}

fn field_aad(thread: &str, message: &str, version: u32, pointer: &str) -> Vec<u8> {
    let version = version.to_be_bytes();
    let parts: [&[u8]; 7] = [
        thread.as_bytes(),
        b"\0",
        message.as_bytes(),
        b"\0field",
        &version,
        b"\0",
        pointer.as_bytes(),
    ];
    parts.concat()
}

fn cipher(key: &[u8; KEY_BYTES]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

fn seal_with(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_BYTES],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of in-memory data cannot fail")
}

fn open_with(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_BYTES],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Open)
}

/// A thread's data-encryption key, unwrapped.
#[derive(Clone)]
pub struct Dek {
    key: [u8; KEY_BYTES],
    /// The expanded key schedule, kept because a page opens many fields.
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(hidden)")
    }
}

fn field_nonce(ts: u64, version: u32) -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    nonce[..8].copy_from_slice(&ts.to_be_bytes());
    nonce[8..].copy_from_slice(&version.to_be_bytes());
    nonce
}

impl Dek {
    pub fn generate() -> Result<Dek, CryptoError> {
        Ok(Dek::from_key(random_bytes()?))
    }

    pub(crate) fn from_key(key: [u8; KEY_BYTES]) -> Dek {
        Dek {
            cipher: cipher(&key),
            key,
        }
    }

    /// A key received in hex (the external KMS's wire format).
    pub fn from_hex(text: &str) -> Option<Dek> {
        Some(Dek::from_key(unhex(text)?.try_into().ok()?))
    }

    /// The key in hex, for the KMS wire format only; never log it.
    pub fn expose_hex(&self) -> String {
        hex(&self.key)
    }

    /// Seals version `version` of the body of the message at `ts`.
    pub fn seal_body(
        &self,
        thread: &str,
        message: &str,
        ts: u64,
        version: u32,
        body: &[u8],
    ) -> String {
        assert!(
            version < TITLE_NONCE_MARK,
            "message versions stay below the title marker"
        );
        let aad = [thread.as_bytes(), b"\0", message.as_bytes()].concat();
        hex(&seal_with(
            &self.cipher,
            &field_nonce(ts, version),
            &aad,
            body,
        ))
    }

    pub fn open_body(
        &self,
        thread: &str,
        message: &str,
        ts: u64,
        version: u32,
        sealed: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let aad = [thread.as_bytes(), b"\0", message.as_bytes()].concat();
        let ciphertext = unhex(sealed).ok_or(CryptoError::Open)?;
        open_with(&self.cipher, &field_nonce(ts, version), &aad, &ciphertext)
    }

    /// Seals one value of version `version` of a message body, found at
    /// `pointer` (field-path encryption). Several fields share a version,
    /// so each gets a random nonce, stored before the ciphertext; the
    /// position is bound as associated data, so a value moved to another
    /// field, version or message does not open.
    pub fn seal_field(
        &self,
        (thread, message, version): (&str, &str, u32),
        pointer: &str,
        value: &[u8],
    ) -> Result<String, CryptoError> {
        let nonce: [u8; NONCE_BYTES] = random_bytes()?;
        let aad = field_aad(thread, message, version, pointer);
        let mut sealed = nonce.to_vec();
        sealed.extend(seal_with(&self.cipher, &nonce, &aad, value));
        Ok(hex(&sealed))
    }

    pub fn open_field(
        &self,
        (thread, message, version): (&str, &str, u32),
        pointer: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let bytes = unhex(sealed).ok_or(CryptoError::Open)?;
        if bytes.len() < NONCE_BYTES {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: &[u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Open)?;
        let aad = field_aad(thread, message, version, pointer);
        open_with(&self.cipher, nonce, &aad, ciphertext)
    }

    /// Seals a thread title written at `updated_ts`.
    pub fn seal_title(&self, thread: &str, updated_ts: u64, title: &str) -> String {
        let aad = [thread.as_bytes(), b"\0title"].concat();
        hex(&seal_with(
            &self.cipher,
            &field_nonce(updated_ts, TITLE_NONCE_MARK),
            &aad,
            title.as_bytes(),
        ))
    }

    pub fn open_title(
        &self,
        thread: &str,
        updated_ts: u64,
        sealed: &str,
    ) -> Result<String, CryptoError> {
        let aad = [thread.as_bytes(), b"\0title"].concat();
        let ciphertext = unhex(sealed).ok_or(CryptoError::Open)?;
        let plain = open_with(
            &self.cipher,
            &field_nonce(updated_ts, TITLE_NONCE_MARK),
            &aad,
            &ciphertext,
        )?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

/// The embedded KMS's master keys, oldest first; the newest wraps new DEKs.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(u32, [u8; KEY_BYTES])>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring([{} master keys hidden])", self.keys.len())
    }
}

/// Keyring file: one `id:hex` line per master key. Check file: one
/// `id:hex(nonce + sealed CHECK_PLAINTEXT)` line per master key.
const CHECK_FILE: &str = "master.check";

impl Keyring {
    /// Loads the keyring from `path`, creating it (mode 0600, one fresh
    /// key) on first start, and checks it against the data directory's
    /// check file in `dir`. A key that does not match what the data was
    /// written with is refused before anything is read or written.
    pub fn open(path: &Path, dir: &Path) -> Result<Keyring, CryptoError> {
        let keyring = Keyring::load_or_create(path)?;
        keyring.check_against(&dir.join(CHECK_FILE))?;
        Ok(keyring)
    }

    /// Loads the keyring from `path`, creating it (mode 0600, one fresh
    /// key) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Keyring, CryptoError> {
        let setup = |what: &str, err: std::io::Error| {
            CryptoError::Setup(format!("{what} {}: {err}", path.display()))
        };
        let keyring = match fs::read_to_string(path) {
            Ok(text) => Keyring::parse(&text).ok_or_else(|| {
                CryptoError::Setup(format!(
                    "{} is not a keyring (lines of id:64 hex digits)",
                    path.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let keyring = Keyring {
                    keys: vec![(1, random_bytes()?)],
                };
                write_private(path, keyring.to_text().as_bytes())
                    .map_err(|err| setup("cannot create", err))?;
                keyring
            }
            Err(err) => return Err(setup("cannot read", err)),
        };
        Ok(keyring)
    }

    /// A keyring holding one given master key (from an environment variable).
    pub fn single(key_hex: &str) -> Option<Keyring> {
        let key: [u8; KEY_BYTES] = unhex(key_hex.trim())?.try_into().ok()?;
        Some(Keyring::with_key(key))
    }

    /// A keyring holding one master key the caller keeps (embedded mode).
    pub fn with_key(key: [u8; KEY_BYTES]) -> Keyring {
        Keyring {
            keys: vec![(1, key)],
        }
    }

    fn parse(text: &str) -> Option<Keyring> {
        let mut keys = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let (id, key) = line.trim().split_once(':')?;
            keys.push((id.parse().ok()?, unhex(key)?.try_into().ok()?));
        }
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    fn to_text(&self) -> String {
        self.keys
            .iter()
            .map(|(id, key)| format!("{id}:{}\n", hex(key)))
            .collect()
    }

    /// Every key the check file knows must be here and must open its line;
    /// keys the check file lacks are added to it.
    pub fn check_against(&self, check_path: &Path) -> Result<(), CryptoError> {
        let existing = fs::read_to_string(check_path).unwrap_or_default();
        let mut checked = std::collections::BTreeSet::new();
        for line in existing.lines().filter(|line| !line.trim().is_empty()) {
            let (id, sealed) = line.split_once(':').ok_or_else(|| {
                CryptoError::Setup(format!("{} is damaged", check_path.display()))
            })?;
            let id: u32 = id
                .parse()
                .map_err(|_| CryptoError::Setup(format!("{} is damaged", check_path.display())))?;
            let key = self.key(id)?;
            let bytes = unhex(sealed)
                .filter(|b| b.len() > NONCE_BYTES)
                .ok_or(CryptoError::Open)?;
            let nonce: [u8; NONCE_BYTES] = bytes[..NONCE_BYTES]
                .try_into()
                .map_err(|_| CryptoError::Open)?;
            let plain = open_with(&cipher(key), &nonce, b"check", &bytes[NONCE_BYTES..]).map_err(|_| {
                CryptoError::Setup(format!(
                    "master key {id} does not match the one this data directory was encrypted with; refusing to start"
                ))
            })?;
            if plain != CHECK_PLAINTEXT {
                return Err(CryptoError::Open);
            }
            checked.insert(id);
        }
        let mut text = existing;
        for (id, key) in &self.keys {
            if !checked.contains(id) {
                let nonce: [u8; NONCE_BYTES] = random_bytes()?;
                let sealed = [
                    nonce.as_slice(),
                    &seal_with(&cipher(key), &nonce, b"check", CHECK_PLAINTEXT),
                ]
                .concat();
                text.push_str(&format!("{id}:{}\n", hex(&sealed)));
            }
        }
        write_private(check_path, text.as_bytes()).map_err(|err| {
            CryptoError::Setup(format!("cannot write {}: {err}", check_path.display()))
        })
    }

    fn key(&self, id: u32) -> Result<&[u8; KEY_BYTES], CryptoError> {
        self.keys
            .iter()
            .find(|(key_id, _)| *key_id == id)
            .map(|(_, key)| key)
            .ok_or(CryptoError::UnknownMasterKey(id))
    }

    pub fn newest_id(&self) -> u32 {
        self.keys.last().map_or(0, |(id, _)| *id)
    }

    /// Adds a master key (rotation); returns the new keyring text to persist.
    pub fn add(&mut self, id: u32, key: [u8; KEY_BYTES]) {
        if self.keys.iter().all(|(existing, _)| *existing != id) {
            self.keys.push((id, key));
        }
    }

    /// Creates the next master key and saves the keyring to `path`.
    pub fn rotate(&mut self, path: &Path) -> Result<(u32, [u8; KEY_BYTES]), CryptoError> {
        let id = self.newest_id() + 1;
        let key = random_bytes()?;
        self.add(id, key);
        write_private(path, self.to_text().as_bytes())
            .map_err(|err| CryptoError::Setup(format!("cannot write {}: {err}", path.display())))?;
        Ok((id, key))
    }

    /// Like [`Keyring::rotate`], then records the new key in the data
    /// directory's check file in `check_dir`.
    pub fn rotate_checked(
        &mut self,
        path: &Path,
        check_dir: &Path,
    ) -> Result<(u32, [u8; KEY_BYTES]), CryptoError> {
        let rotated = self.rotate(path)?;
        self.check_against(&check_dir.join(CHECK_FILE))?;
        Ok(rotated)
    }

    pub fn wrap(&self, dek: &Dek) -> Result<WrappedKey, CryptoError> {
        let key_id = self.newest_id();
        let nonce: [u8; NONCE_BYTES] = random_bytes()?;
        let sealed = seal_with(
            &cipher(self.key(key_id)?),
            &nonce,
            &key_id.to_be_bytes(),
            &dek.key,
        );
        Ok(WrappedKey {
            key_id,
            wrapped: hex(&[nonce.as_slice(), &sealed].concat()),
        })
    }

    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<Dek, CryptoError> {
        let bytes = unhex(&wrapped.wrapped)
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or(CryptoError::Open)?;
        let nonce: [u8; NONCE_BYTES] = bytes[..NONCE_BYTES]
            .try_into()
            .map_err(|_| CryptoError::Open)?;
        let key = self.key(wrapped.key_id)?;
        let plain = open_with(
            &cipher(key),
            &nonce,
            &wrapped.key_id.to_be_bytes(),
            &bytes[NONCE_BYTES..],
        )?;
        Ok(Dek::from_key(
            plain.try_into().map_err(|_| CryptoError::Open)?,
        ))
    }
}

/// Where the master keys live.
#[derive(Debug, Clone)]
pub enum Kms {
    Embedded(Keyring),
    External(ExternalKms),
}

pub use external::ExternalKms;

impl Kms {
    pub fn wrap(&self, dek: &Dek) -> Result<WrappedKey, CryptoError> {
        match self {
            Kms::Embedded(keyring) => keyring.wrap(dek),
            Kms::External(kms) => kms.wrap(dek),
        }
    }

    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<Dek, CryptoError> {
        match self {
            Kms::Embedded(keyring) => keyring.unwrap(wrapped),
            Kms::External(kms) => kms.unwrap(wrapped),
        }
    }
}

/// External KMS check file: `key_id:wrapped:digest` of a random check key,
/// written on the first start with the KMS.
const EXTERNAL_CHECK_FILE: &str = "external.check";

/// Proves at start that the external KMS still holds the master key this
/// data directory was written with: it must unwrap the check key wrapped
/// on the first start to the same bytes. Refuses (and touches nothing)
/// otherwise, or when the KMS cannot be reached.
pub fn check_external(kms: &ExternalKms, dir: &Path) -> Result<(), CryptoError> {
    use hmac::{Hmac, Mac};
    let digest = |dek: &Dek| {
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&dek.key).expect("any key length");
        mac.update(CHECK_PLAINTEXT);
        hex(&mac.finalize().into_bytes())
    };
    let path = dir.join(EXTERNAL_CHECK_FILE);
    let refuse = |why: String| {
        CryptoError::Setup(format!(
            "{why}; refusing to start (the external KMS at {} must hold the master key this data directory was encrypted with)",
            kms.url()
        ))
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut fields = text.trim().splitn(3, ':');
            let (Some(id), Some(wrapped), Some(expected)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(CryptoError::Setup(format!("{} is damaged", path.display())));
            };
            let key_id = id
                .parse()
                .map_err(|_| CryptoError::Setup(format!("{} is damaged", path.display())))?;
            let wrapped = WrappedKey {
                key_id,
                wrapped: wrapped.to_owned(),
            };
            match kms.unwrap(&wrapped) {
                Ok(dek) if digest(&dek) == expected => Ok(()),
                Ok(_) | Err(CryptoError::Open) => Err(refuse(
                    "the KMS does not open this data directory's check key".into(),
                )),
                Err(err) => Err(refuse(err.to_string())),
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let check = Dek::generate()?;
            let wrapped = kms.wrap(&check).map_err(|err| refuse(err.to_string()))?;
            let line = format!(
                "{}:{}:{}\n",
                wrapped.key_id,
                wrapped.wrapped,
                digest(&check)
            );
            write_private(&path, line.as_bytes()).map_err(|err| {
                CryptoError::Setup(format!("cannot write {}: {err}", path.display()))
            })
        }
        Err(err) => Err(CryptoError::Setup(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// Writes a file only its owner can read, durably (temp file, fsync,
/// rename, directory fsync).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_fields_open_only_where_they_were_sealed() {
        let dek = Dek::generate().unwrap();
        let at = ("t1", "m1", 2);
        let sealed = dek.seal_field(at, "/text", b"\"hi\"").unwrap();
        assert_eq!(dek.open_field(at, "/text", &sealed).unwrap(), b"\"hi\"");
        // A fresh nonce per field: sealing the same value twice differs.
        assert_ne!(dek.seal_field(at, "/text", b"\"hi\"").unwrap(), sealed);
        for (other, pointer) in [
            (("t1", "m1", 2), "/other"),
            (("t1", "m1", 3), "/text"),
            (("t1", "m2", 2), "/text"),
            (("t2", "m1", 2), "/text"),
        ] {
            assert_eq!(
                dek.open_field(other, pointer, &sealed),
                Err(CryptoError::Open)
            );
        }
        assert_eq!(dek.open_field(at, "/text", "00"), Err(CryptoError::Open));
        let other_key = Dek::generate().unwrap();
        assert_eq!(
            other_key.open_field(at, "/text", &sealed),
            Err(CryptoError::Open)
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_anything_but_digits() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
        assert_eq!(unhex("0A"), Some(vec![10]));
        for bad in ["0", "0g", "+f", " 1", "é0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bodies_and_titles_round_trip_and_are_bound_to_their_place() {
        let dek = Dek::generate().unwrap();
        let sealed = dek.seal_body("t", "m", 5, 1, b"{\"text\":\"secret\"}");
        assert!(!sealed.contains("secret"));
        assert_eq!(
            dek.open_body("t", "m", 5, 1, &sealed).unwrap(),
            b"{\"text\":\"secret\"}"
        );
        assert_eq!(
            dek.open_body("t", "other", 5, 1, &sealed),
            Err(CryptoError::Open)
        );
        assert_eq!(
            dek.open_body("t", "m", 5, 2, &sealed),
            Err(CryptoError::Open)
        );
        let title = dek.seal_title("t", 9, "plans");
        assert_eq!(dek.open_title("t", 9, &title).unwrap(), "plans");
        assert_eq!(dek.open_title("u", 9, &title), Err(CryptoError::Open));
        let other = Dek::generate().unwrap();
        assert_eq!(
            other.open_body("t", "m", 5, 1, &sealed),
            Err(CryptoError::Open)
        );
    }

    #[test]
    fn keyring_is_private_checked_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms").join("master.keys");
        let mut keyring = Keyring::open(&path, dir.path()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dek = Dek::generate().unwrap();
        let old = keyring.wrap(&dek).unwrap();
        assert_eq!(old.key_id, 1);
        let (id, _) = keyring.rotate_checked(&path, dir.path()).unwrap();
        assert_eq!(id, 2);
        let new = keyring.wrap(&dek).unwrap();
        assert_eq!(new.key_id, 2);
        let reopened = Keyring::open(&path, dir.path()).unwrap();
        for wrapped in [&old, &new] {
            let dek_again = reopened.unwrap(wrapped).unwrap();
            assert_eq!(dek_again.key, dek.key);
        }
        // A different key for the same data directory is refused.
        let wrong = Keyring::single(&"ab".repeat(32)).unwrap();
        let err = wrong
            .check_against(&dir.path().join(CHECK_FILE))
            .unwrap_err();
        assert!(
            matches!(err, CryptoError::Setup(ref why) if why.contains("does not match")),
            "{err}"
        );
        assert!(!format!("{keyring:?}{dek:?}").contains(&hex(&dek.key)));
    }
}
