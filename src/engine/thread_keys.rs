//! Where a shard gets its threads' data keys: the per-shard cache, the
//! thread record (threads encrypted before the key vault), or the key
//! vault (`crypto::vault`); and how a new thread's key is made, wrapped
//! and stored durably before the command creating the thread runs.
//!
//! Vault files and the external KMS are reached on blocking threads, so
//! the shard goes on serving while they answer. Commands over many
//! threads (listings) read an uncached key inline instead.

use std::rc::Rc;

use super::command::{Command, EngineError};
use super::{Engine, Sealing, sealing_error};
use crate::crypto::external::ExternalKms;
use crate::crypto::vault::Vault;
use crate::crypto::{Dek, Kms, WrappedKey};
use crate::runtime;

/// Whether `command` creates its thread when it does not exist.
fn may_create_thread(command: &Command) -> bool {
    match command {
        Command::CreateThread { .. } => true,
        Command::PostMessage {
            create_thread_titled,
            ..
        } => create_thread_titled.is_some(),
        _ => false,
    }
}

/// Where a thread's wrapped key is kept.
enum KeySource {
    Record(Option<WrappedKey>),
    Vault(Vault),
}

/// The external KMS, to call from a blocking thread; `None` when the
/// KMS is the embedded one, which is called inline.
fn external_kms(sealing: &Sealing) -> Option<ExternalKms> {
    match &*sealing.kms.borrow() {
        Kms::External(kms) => Some(kms.clone()),
        Kms::Embedded(_) => None,
    }
}

impl Engine {
    /// Runs before `command`: a thread it creates gets its key (returned,
    /// for `new_thread`); an existing thread's uncached key is fetched into
    /// the cache. Nothing happens here with neither a vault nor an
    /// external KMS: the embedded KMS wraps and unwraps inline.
    pub(super) async fn fetch_thread_key(
        &self,
        command: &Command,
    ) -> Result<Option<(Dek, WrappedKey)>, EngineError> {
        let Some(sealing) = &self.sealing else {
            return Ok(None);
        };
        let embedded = matches!(&*sealing.kms.borrow(), Kms::Embedded(_));
        let Some(thread) = command.single_thread().map(|id| id.as_str()) else {
            return Ok(None);
        };
        if embedded && sealing.vault.is_none() {
            return Ok(None);
        }
        // A cached key is an existing thread's: the hot path stops here.
        if sealing.deks.borrow().contains_key(thread) {
            return Ok(None);
        }
        if may_create_thread(command) && self.known_record(thread)?.is_none() {
            return self.new_thread_key(sealing, thread).await.map(Some);
        }
        let Some(wrapped) = self.fetch_stored_key(sealing, thread).await? else {
            return Ok(None);
        };
        let dek = self.unwrap_off_thread(sealing, wrapped.clone()).await?;
        self.remember_dek(thread, Rc::new(dek));
        self.move_key_to_vault(sealing, thread, wrapped).await?;
        Ok(None)
    }

    /// Lazy migration of a thread keyed in its record (written before the
    /// vault): its wrapped key is stored in the vault, durably, and the
    /// cached record says so, so the thread's next write stores the record
    /// without it. Copies written before (older WAL segments, tables,
    /// backups) keep the key: such a thread is shredded for good only once
    /// they are gone. A vault already holding another key for the id (not
    /// a state this server writes) leaves the thread as it is.
    async fn move_key_to_vault(
        &self,
        sealing: &Sealing,
        thread: &str,
        wrapped: WrappedKey,
    ) -> Result<(), EngineError> {
        let keyed_in_record = self
            .known_record(thread)?
            .is_some_and(|record| record.dek.is_some());
        let Some(vault) = sealing.vault.clone().filter(|_| keyed_in_record) else {
            return Ok(());
        };
        let (id, stored) = (thread.to_owned(), wrapped.clone());
        let existing = runtime::blocking(move || vault.store(&id, &stored))
            .await
            .map_err(EngineError::Storage)?;
        if existing.is_some_and(|existing| existing != wrapped) {
            return Ok(());
        }
        // The record as commands read it (title opened, the key cached).
        if let Some(mut record) = self.get_thread(thread)?
            && record.dek.is_some()
        {
            record.dek = None;
            record.vault_key = true;
            self.thread_records.put(record);
        }
        Ok(())
    }

    /// A new key for `thread`, wrapped and, with a vault, stored durably.
    pub(super) async fn new_thread_key(
        &self,
        sealing: &Sealing,
        thread: &str,
    ) -> Result<(Dek, WrappedKey), EngineError> {
        let dek = Dek::generate().map_err(sealing_error)?;
        let wrapped = self.wrap_off_thread(sealing, &dek).await?;
        let Some(vault) = sealing.vault.clone() else {
            return Ok((dek, wrapped));
        };
        let (id, stored) = (thread.to_owned(), wrapped.clone());
        let existing = runtime::blocking(move || vault.store(&id, &stored))
            .await
            .map_err(EngineError::Storage)?;
        match existing {
            None => Ok((dek, wrapped)),
            // A key is there already (a create of the same id under way,
            // or one cut short by a crash): that one is the thread's.
            Some(existing) => {
                let dek = self.unwrap_off_thread(sealing, existing.clone()).await?;
                Ok((dek, existing))
            }
        }
    }

    async fn wrap_off_thread(
        &self,
        sealing: &Sealing,
        dek: &Dek,
    ) -> Result<WrappedKey, EngineError> {
        let Some(kms) = external_kms(sealing) else {
            return sealing.kms.borrow().wrap(dek).map_err(sealing_error);
        };
        let dek = dek.clone();
        runtime::blocking(move || kms.wrap(&dek))
            .await
            .map_err(sealing_error)
    }

    async fn unwrap_off_thread(
        &self,
        sealing: &Sealing,
        wrapped: WrappedKey,
    ) -> Result<Dek, EngineError> {
        let Some(kms) = external_kms(sealing) else {
            return sealing.kms.borrow().unwrap(&wrapped).map_err(sealing_error);
        };
        runtime::blocking(move || kms.unwrap(&wrapped))
            .await
            .map_err(sealing_error)
    }

    /// `thread`'s record, from the record cache when it is there: a thread
    /// without a key (created before encryption) is asked about on every
    /// command, and a store read may wait on the tree's version lock.
    fn known_record(
        &self,
        thread: &str,
    ) -> Result<Option<crate::model::ThreadRecord>, EngineError> {
        match self.thread_records.get(thread) {
            Some(record) => Ok(Some(record)),
            None => Ok(self.store.get_thread(thread)?),
        }
    }

    /// Where `thread`'s wrapped key is: in its record (`None` for a thread
    /// not encrypted, or without a record), or in the vault.
    fn key_source(&self, sealing: &Sealing, thread: &str) -> Result<KeySource, EngineError> {
        let Some(record) = self.known_record(thread)? else {
            return Ok(KeySource::Record(None));
        };
        if record.dek.is_some() || !record.vault_key {
            return Ok(KeySource::Record(record.dek));
        }
        let vault = sealing.vault.clone().ok_or_else(|| {
            EngineError::Storage(
                "encryption: the thread's key is in a vault this shard lacks".into(),
            )
        })?;
        Ok(KeySource::Vault(vault))
    }

    /// An existing thread's wrapped key, its vault file read on a blocking
    /// thread; `None` when it has none (not encrypted, or erased).
    async fn fetch_stored_key(
        &self,
        sealing: &Sealing,
        thread: &str,
    ) -> Result<Option<WrappedKey>, EngineError> {
        let vault = match self.key_source(sealing, thread)? {
            KeySource::Record(wrapped) => return Ok(wrapped),
            KeySource::Vault(vault) => vault,
        };
        let id = thread.to_owned();
        runtime::blocking(move || vault.load(&id))
            .await
            .map_err(EngineError::Storage)
    }

    /// As `fetch_stored_key`, inline, for `Engine::dek`. A thread whose
    /// vault key was destroyed is not found: it was erased (its record
    /// may still be in a backup restored since).
    pub(super) fn stored_thread_key(
        &self,
        sealing: &Sealing,
        thread: &str,
    ) -> Result<Option<WrappedKey>, EngineError> {
        match self.key_source(sealing, thread)? {
            KeySource::Record(wrapped) => Ok(wrapped),
            KeySource::Vault(vault) => match vault.load(thread).map_err(EngineError::Storage)? {
                Some(wrapped) => Ok(Some(wrapped)),
                None => Err(EngineError::ThreadNotFound),
            },
        }
    }

    /// Whether the vault holds `thread`'s key (false without a vault).
    pub(super) fn vault_holds(&self, thread: &str) -> bool {
        self.sealing
            .as_ref()
            .and_then(|sealing| sealing.vault.as_ref())
            .is_some_and(|vault| vault.holds(thread))
    }

    /// Whether new threads' keys go to a vault.
    pub(super) fn has_vault(&self) -> bool {
        self.sealing
            .as_ref()
            .is_some_and(|sealing| sealing.vault.is_some())
    }

    /// Destroys the vault keys of erased threads (crypto-shredding), on a
    /// blocking thread; each is gone from disk when this returns.
    pub(super) async fn shred_keys(&self, threads: Vec<String>) -> Result<(), EngineError> {
        let vault = match self.sealing.as_ref().and_then(|s| s.vault.clone()) {
            Some(vault) if !threads.is_empty() => vault,
            _ => return Ok(()),
        };
        for thread in &threads {
            self.forget_dek(thread);
        }
        runtime::blocking(move || threads.iter().try_for_each(|id| vault.destroy(id)))
            .await
            .map_err(EngineError::Storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;
    use crate::crypto::vault::Vault;
    use crate::engine::testing::{ADMIN, message_body as body, post, with_engine_on};
    use crate::model::ThreadId;

    fn kms() -> Kms {
        Kms::Embedded(Keyring::with_key([7; crate::crypto::KEY_BYTES]))
    }

    #[test]
    fn keys_kept_in_records_still_open_move_to_the_vault_and_new_keys_go_there() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            ThreadId::parse("old").unwrap(),
            ThreadId::parse("new").unwrap(),
        );
        // A directory written before the vault: the key is in the record.
        let written = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
        let kept = written.clone();
        with_engine_on(dir.path(), Some((kms(), None)), async move |engine| {
            *kept.borrow_mut() = post(&engine, &old, "from before").await;
            let record = engine.store.get_thread("old").unwrap().unwrap();
            assert!(record.dek.is_some() && !record.vault_key);
        });
        let vault = Vault::open(&dir.path().join("kms")).unwrap();
        let sealing = Some((kms(), Some(vault.clone())));
        let id = written.borrow().clone();
        with_engine_on(dir.path(), sealing, async move |engine| {
            let old = ThreadId::parse("old").unwrap();
            assert_eq!(body(&engine, &old, &id).await, "\"from before\"");
            // Read once, its key moved to the vault; its next write drops
            // the key from the record.
            assert!(vault.holds("old"));
            post(&engine, &old, "after the move").await;
            let record = engine.store.get_thread("old").unwrap().unwrap();
            assert!(record.dek.is_none() && record.vault_key);
            engine.forget_dek("old");
            assert_eq!(body(&engine, &old, &id).await, "\"from before\"");
            let id = post(&engine, &new, "in the vault").await;
            let record = engine.store.get_thread("new").unwrap().unwrap();
            assert!(record.dek.is_none() && record.vault_key);
            assert!(vault.holds("new"));
            // Uncached, the key comes back from the vault.
            engine.forget_dek("new");
            assert_eq!(body(&engine, &new, &id).await, "\"in the vault\"");
            // Destroyed, the thread is gone for every read.
            engine.shred_keys(vec!["new".into()]).await.unwrap();
            assert!(!vault.holds("new"));
            let command = Command::GetMessage {
                thread: new.clone(),
                caller: ADMIN,
                id,
                include_deleted: false,
            };
            let read = engine.run(command).await.0;
            assert_eq!(read.unwrap_err(), EngineError::ThreadNotFound);
        });
    }
}
