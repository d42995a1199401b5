//! Client of an external KMS over HTTP/1.1: the master keys never leave
//! the KMS; the server sends a thread's data key to `POST /wrap` and the
//! stored wrapped form to `POST /unwrap`. `POST /rotate` asks the KMS to
//! start wrapping under a new master key.
//!
//! Wire format (JSON, every byte string as lowercase hex):
//! - `/wrap`   `{"plaintext": hex}`                    → `{"key_id": n, "ciphertext": hex}`
//! - `/unwrap` `{"key_id": n, "ciphertext": hex}`      → `{"plaintext": hex}`
//! - `/rotate` `{}`                                    → `{"key_id": n}`
//!
//! A token, when configured, is sent as `Authorization: Bearer <token>`.
//!
//! Calls are blocking with a timeout on every step. They happen only when a
//! thread is created (wrap) and when a thread's key is not in the shard's
//! key cache (unwrap); the engine makes them from glommio's blocking
//! thread pool (`Engine::fetch_thread_key`) so the shard is not held up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};

use super::{CryptoError, Dek, WrappedKey, unhex};

/// Bound on a KMS response; real answers are a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct ExternalKms {
    url: String,
    addr: SocketAddr,
    host: String,
    path_prefix: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for ExternalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of every log line.
        write!(f, "ExternalKms({})", self.url)
    }
}

impl ExternalKms {
    /// `url` is `http://host[:port][/prefix]`. TLS is not spoken: run the
    /// KMS on loopback or a private network.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("must start with http:// (got {url:?})"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("has no valid host (got {url:?})"));
        }
        if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("has an invalid path (got {url:?})"));
        }
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve {authority}: {err}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {authority}"))?;
        Ok(ExternalKms {
            url: url.to_owned(),
            addr,
            host: authority.to_owned(),
            path_prefix: prefix.to_owned(),
            token,
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn wrap(&self, dek: &Dek) -> Result<WrappedKey, CryptoError> {
        let reply = self.call("/wrap", &json!({ "plaintext": dek.expose_hex() }))?;
        let key_id = key_id_of(&reply)?;
        let ciphertext = reply["ciphertext"]
            .as_str()
            .filter(|text| unhex(text).is_some())
            .ok_or_else(|| malformed("ciphertext"))?;
        Ok(WrappedKey {
            key_id,
            wrapped: ciphertext.to_owned(),
        })
    }

    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<Dek, CryptoError> {
        let reply = self.call(
            "/unwrap",
            &json!({ "key_id": wrapped.key_id, "ciphertext": wrapped.wrapped }),
        )?;
        let plaintext = reply["plaintext"]
            .as_str()
            .and_then(unhex)
            .ok_or_else(|| malformed("plaintext"))?;
        Ok(Dek::from_key(
            plaintext.try_into().map_err(|_| malformed("plaintext"))?,
        ))
    }

    /// Asks the KMS to wrap new keys under a new master key; returns its id.
    pub fn rotate(&self) -> Result<u32, CryptoError> {
        key_id_of(&self.call("/rotate", &json!({}))?)
    }

    fn call(&self, path: &str, body: &Value) -> Result<Value, CryptoError> {
        let unreachable = |err: std::io::Error| CryptoError::Kms(format!("{}: {err}", self.url));
        let body = body.to_string();
        let mut stream =
            TcpStream::connect_timeout(&self.addr, self.timeout).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        let authorization = self
            .token
            .as_ref()
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n{authorization}\r\n{body}",
            self.path_prefix,
            self.host,
            body.len(),
        );
        stream.write_all(request.as_bytes()).map_err(unreachable)?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut response)
            .map_err(unreachable)?;
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(CryptoError::Kms(format!(
                "{}{path}: response larger than {MAX_RESPONSE_BYTES} bytes",
                self.url
            )));
        }
        let (status, payload) = parse_response(&response).ok_or_else(|| {
            CryptoError::Kms(format!("{}{path}: malformed HTTP response", self.url))
        })?;
        let reply: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        match status {
            200 => Ok(reply),
            // The KMS could not open the wrapped key: same as a bad key here.
            422 => Err(CryptoError::Open),
            _ => Err(CryptoError::Kms(format!(
                "{}{path} answered {status}{}",
                self.url,
                reply["error"]
                    .as_str()
                    .map(|error| format!(" ({})", error.escape_debug()))
                    .unwrap_or_default()
            ))),
        }
    }
}

fn key_id_of(reply: &Value) -> Result<u32, CryptoError> {
    reply["key_id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| malformed("key_id"))
}

fn malformed(field: &str) -> CryptoError {
    CryptoError::Kms(format!("the KMS answer has no valid {field:?}"))
}

/// Status and body of a `Connection: close` response whose body runs to the
/// end of the stream or to its Content-Length.
fn parse_response(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes).ok()? else {
        return None;
    };
    let body = &bytes[head_len..];
    let length = response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .and_then(|header| std::str::from_utf8(header.value).ok()?.trim().parse().ok());
    let body = match length {
        Some(length) if length <= body.len() => &body[..length],
        Some(_) => return None,
        None => body,
    };
    Some((response.code?, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated() {
        let timeout = Duration::from_secs(1);
        let kms = ExternalKms::new("http://127.0.0.1:9/kms/", None, timeout).unwrap();
        assert_eq!(kms.path_prefix, "/kms");
        assert_eq!(kms.addr, "127.0.0.1:9".parse().unwrap());
        assert!(ExternalKms::new("https://127.0.0.1:9", None, timeout).is_err());
        assert!(ExternalKms::new("http://", None, timeout).is_err());
        assert!(ExternalKms::new("http://a b:1", None, timeout).is_err());
    }

    #[test]
    fn responses_are_framed_by_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(raw), Some((200, &b"{}"[..])));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        assert_eq!(parse_response(short), None);
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn an_unreachable_kms_is_an_error_not_a_hang() {
        // Port 9 (discard) on loopback has no listener here.
        let kms = ExternalKms::new("http://127.0.0.1:9", None, Duration::from_millis(500)).unwrap();
        let dek = Dek::generate().unwrap();
        assert!(matches!(kms.wrap(&dek), Err(CryptoError::Kms(_))));
    }
}
