//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for PostgreSQL password logins, where
//! the password is an API key: the key never crosses the wire, and the
//! server proves it knows the key too.
//!
//! The server does not know in advance which key a client holds (any
//! backend key may act as any user), so [`Verifier`] keeps each configured
//! key's `StoredKey` and `ServerKey`, all derived with one salt, and checks
//! a client's proof against every key in constant time, as HTTP key checks
//! do. The salt is random per server start; PBKDF2 runs once per key at
//! startup, not per login.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::{KeyKind, Keys, constant_time_eq};

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count.
pub const ITERATIONS: u32 = 4096;
const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 18;
/// A client nonce longer than this is not a nonce.
const CLIENT_NONCE_BYTES_MAX: usize = 256;

type HmacSha256 = Hmac<Sha256>;

pub fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block: SCRAM's `Hi()`.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = HmacSha256::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut block: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = block;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&block);
        block = mac.finalize().into_bytes().into();
        result
            .iter_mut()
            .zip(block)
            .for_each(|(out, byte)| *out ^= byte);
    }
    result
}

/// One key's SCRAM secrets.
struct Secret {
    kind: KeyKind,
    /// The key itself: an authenticated connection presents it to the API.
    key: String,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// What the server needs to check SCRAM proofs for every configured key.
pub struct Verifier {
    salt: [u8; SALT_BYTES],
    secrets: Vec<Secret>,
}

impl Verifier {
    /// Derives every backend and admin key's secrets (frontend keys cannot
    /// log in: they need a per-user signature).
    pub fn new(keys: &Keys) -> Verifier {
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt);
        Verifier::with_salt(keys, salt)
    }

    fn with_salt(keys: &Keys, salt: [u8; SALT_BYTES]) -> Verifier {
        let secrets = keys
            .each()
            .filter(|(kind, _)| *kind != KeyKind::Frontend)
            .map(|(kind, key)| {
                let salted = salted_password(key, &salt, ITERATIONS);
                Secret {
                    kind,
                    key: String::from_utf8_lossy(key).into_owned(),
                    stored_key: sha256(&hmac(&salted, b"Client Key")),
                    server_key: hmac(&salted, b"Server Key"),
                }
            })
            .collect();
        Verifier { salt, secrets }
    }

    /// Answers a client-first message: the exchange state and the
    /// server-first message to send. `None` if the message is malformed or
    /// asks for channel binding (there is no TLS to bind to).
    pub fn start(&self, client_first: &str) -> Option<Exchange> {
        let bare = client_first
            .strip_prefix("n,,")
            .or_else(|| client_first.strip_prefix("y,,"))?;
        let gs2_header = &client_first[..3];
        let mut fields = bare.split(',');
        // libpq sends an empty name: the startup packet names the user.
        fields.next()?.strip_prefix("n=")?;
        let client_nonce = fields.next()?.strip_prefix("r=")?;
        let printable = client_nonce
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',');
        if client_nonce.is_empty() || client_nonce.len() > CLIENT_NONCE_BYTES_MAX || !printable {
            return None;
        }
        let mut server_nonce = [0u8; NONCE_BYTES];
        fill_random(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", base64_encode(&server_nonce));
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", base64_encode(&self.salt));
        Some(Exchange {
            gs2_header: gs2_header.to_owned(),
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        })
    }

    /// Checks the client-final message against every key. On success: the
    /// key's kind, the key, and the server-final message proving the
    /// server knows it too.
    pub fn finish(
        &self,
        exchange: &Exchange,
        client_final: &str,
    ) -> Option<(KeyKind, String, String)> {
        let (without_proof, proof) = client_final.rsplit_once(",p=")?;
        let proof = base64_decode(proof)?;
        let mut fields = without_proof.split(',');
        let binding = base64_decode(fields.next()?.strip_prefix("c=")?)?;
        let nonce = fields.next()?.strip_prefix("r=")?;
        if binding != exchange.gs2_header.as_bytes() || nonce != exchange.nonce || proof.len() != 32
        {
            return None;
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            exchange.client_first_bare, exchange.server_first
        );
        let mut found = None;
        for secret in &self.secrets {
            let signature = hmac(&secret.stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = proof.iter().zip(signature).map(|(a, b)| a ^ b).collect();
            // No early exit: every key is checked.
            if constant_time_eq(&sha256(&client_key), &secret.stored_key) && found.is_none() {
                found = Some(secret);
            }
        }
        let secret = found?;
        let server_signature = hmac(&secret.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", base64_encode(&server_signature));
        Some((secret.kind, secret.key.clone(), server_final))
    }
}

/// One login's SCRAM state between the two client messages.
pub struct Exchange {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    pub fn server_first(&self) -> &str {
        &self.server_first
    }
}

fn fill_random(buffer: &mut [u8]) {
    let mut filled = 0;
    while filled < buffer.len() {
        // SAFETY: getrandom writes at most the given length into our buffer.
        let count = unsafe {
            libc::getrandom(
                buffer[filled..].as_mut_ptr().cast(),
                buffer.len() - filled,
                0,
            )
        };
        // Fails only when interrupted before any byte: try again.
        if count > 0 {
            filled += count as usize;
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, &byte)| {
            word | u32::from(byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(BASE64[(word >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Padded standard base64; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let padding = chunk.iter().rev().take_while(|&&byte| byte == b'=').count();
        if padding > 2 {
            return None;
        }
        let mut word = 0u32;
        for (index, &byte) in chunk[..4 - padding].iter().enumerate() {
            let value = BASE64.iter().position(|&symbol| symbol == byte)? as u32;
            word |= value << (18 - 6 * index);
        }
        out.extend_from_slice(&word.to_be_bytes()[1..4 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(bytes)).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"n,,"), "biws");
        for bad in ["Zm9", "Zm9v!A==", "Z===", "===="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    /// The exchange of RFC 7677, section 3 (password "pencil").
    #[test]
    fn rfc_7677_proof_is_accepted_and_signed() {
        let keys = Keys::new(&["pencil".into()], &[], &[], &[]);
        let salt: [u8; 16] = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap()
            .try_into()
            .unwrap();
        let verifier = Verifier::with_salt(&keys, salt);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let exchange = Exchange {
            gs2_header: "n,,".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            nonce: nonce.into(),
        };
        let client_final =
            format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let (kind, key, server_final) = verifier.finish(&exchange, &client_final).unwrap();
        assert_eq!((kind, key.as_str()), (KeyKind::Backend, "pencil"));
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let forged = client_final.replace("p=dHzb", "p=dHzc");
        assert!(verifier.finish(&exchange, &forged).is_none());
        let replayed = client_final.replace("k0,p", "k1,p");
        assert!(verifier.finish(&exchange, &replayed).is_none());
    }

    #[test]
    fn client_first_messages_are_checked() {
        let verifier = Verifier::new(&Keys::new(&["key-0123456789".into()], &[], &[], &[]));
        let exchange = verifier.start("n,,n=,r=abc").unwrap();
        assert!(exchange.server_first().starts_with("r=abc"));
        assert!(exchange.server_first().ends_with(",i=4096"));
        for bad in [
            "",
            "p=tls-server-end-point,,n=,r=abc",
            "n,,n=,r=",
            "n,,r=abc",
            "n,a=x,n=,r=abc",
        ] {
            assert!(verifier.start(bad).is_none(), "{bad}");
        }
    }
}
