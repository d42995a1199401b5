//! How a message body (current or past version) is sealed for storage and
//! opened for readers when its thread has a key: whole (`sealed_body`, the
//! default), or only at the `--encrypt-field` paths (`sealed_fields`, the
//! rest of the body in the clear). Bodies stored either way open, whatever
//! the server is configured with now.

use std::rc::Rc;

use serde_json::value::RawValue;

use super::{Engine, EngineError, missing_key, raw_json, sealing_error};
use crate::crypto::fields::{self, FieldError, FieldPaths};
use crate::crypto::{CryptoError, Dek};
use crate::model::{Message, Version};

/// A stored body: what replaces the clear body and records how it was sealed.
pub(super) struct StoredBody {
    pub body: Box<RawValue>,
    pub sealed_body: Option<String>,
    pub sealed_fields: Vec<String>,
}

impl Engine {
    /// Seals only the values at `paths` of bodies written from now on;
    /// empty paths seal whole bodies. Without encryption this does nothing.
    pub fn encrypt_fields(&self, paths: FieldPaths) {
        if let Some(sealing) = &self.sealing {
            *sealing.fields.borrow_mut() = Rc::new(paths);
        }
    }

    /// `body` as version `version` of `message` is to be stored; `None`
    /// when the thread has no key or no configured path is in the body.
    pub(super) fn seal_for_storage(
        &self,
        message: &Message,
        version: u32,
        body: &RawValue,
    ) -> Result<Option<StoredBody>, EngineError> {
        let (Some(sealing), Some(dek)) = (&self.sealing, self.dek(&message.thread, None)?) else {
            return Ok(None);
        };
        let paths = sealing.fields.borrow().clone();
        if paths.is_empty() {
            let sealed = dek.seal_body(
                &message.thread,
                &message.id,
                message.ts,
                version,
                body.get().as_bytes(),
            );
            return Ok(Some(StoredBody {
                body: raw_json(b"null".to_vec())?,
                sealed_body: Some(sealed),
                sealed_fields: Vec::new(),
            }));
        }
        seal_fields(&dek, message, version, body, &paths)
    }

    /// Opens `message`'s body in place (its current version).
    pub(super) fn open_message(&self, message: &mut Message) -> Result<(), EngineError> {
        let sealed = message.sealed_body.take();
        let fields = std::mem::take(&mut message.sealed_fields);
        if let Some(body) = self.opened(message, message.version, &message.body, sealed, fields)? {
            message.body = body;
        }
        Ok(())
    }

    /// Opens a past version of `message` in place.
    pub(super) fn open_version(
        &self,
        message: &Message,
        version: &mut Version,
    ) -> Result<(), EngineError> {
        let sealed = version.sealed_body.take();
        let fields = std::mem::take(&mut version.sealed_fields);
        if let Some(body) = self.opened(message, version.version, &version.body, sealed, fields)? {
            version.body = body;
        }
        Ok(())
    }

    /// Version `version` of `message`'s body opened, sealed whole or by
    /// field as stored; `None` when nothing in it is sealed.
    fn opened(
        &self,
        message: &Message,
        version: u32,
        body: &RawValue,
        sealed_body: Option<String>,
        sealed_fields: Vec<String>,
    ) -> Result<Option<Box<RawValue>>, EngineError> {
        if let Some(sealed) = sealed_body {
            return self.open_body(message, version, &sealed).map(Some);
        }
        if sealed_fields.is_empty() {
            return Ok(None);
        }
        self.open_fields(message, version, body, &sealed_fields)
            .map(Some)
    }

    fn open_fields(
        &self,
        message: &Message,
        version: u32,
        body: &RawValue,
        pointers: &[String],
    ) -> Result<Box<RawValue>, EngineError> {
        let dek = self.dek(&message.thread, None)?.ok_or_else(missing_key)?;
        let position = (message.thread.as_str(), message.id.as_str(), version);
        let mut open = |pointer: &str, sealed: &str| -> Result<String, FieldError> {
            let plain = dek
                .open_field(position, pointer, sealed)
                .map_err(|_| FieldError::Open)?;
            String::from_utf8(plain).map_err(|_| FieldError::Open)
        };
        fields::open(body, pointers, &mut open).map_err(field_error)
    }
}

fn seal_fields(
    dek: &Dek,
    message: &Message,
    version: u32,
    body: &RawValue,
    paths: &FieldPaths,
) -> Result<Option<StoredBody>, EngineError> {
    let position = (message.thread.as_str(), message.id.as_str(), version);
    let mut failure: Option<CryptoError> = None;
    let mut seal = |pointer: &str, value: &str| {
        dek.seal_field(position, pointer, value.as_bytes())
            .unwrap_or_else(|err| {
                failure.get_or_insert(err);
                String::new()
            })
    };
    let sealed = fields::seal(body, paths, &mut seal).map_err(field_error)?;
    if let Some(err) = failure {
        return Err(sealing_error(err));
    }
    Ok(sealed.map(|(body, sealed_fields)| StoredBody {
        body,
        sealed_body: None,
        sealed_fields,
    }))
}

fn field_error(err: FieldError) -> EngineError {
    EngineError::Storage(format!("encryption: {err}"))
}
