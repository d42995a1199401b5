//! A small external KMS for ProgressDB: holds master keys in a keyring file
//! (mode 0600) and answers the server's `POST /wrap`, `/unwrap` and
//! `/rotate` (wire format in `progressdb::crypto::external`). The master
//! keys never leave this process. It is what the end-to-end tests run as
//! the external KMS, and a reference for writing an adapter to a real one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use progressdb::auth::constant_time_eq;
use progressdb::crypto::{CryptoError, Dek, Keyring, WrappedKey};
use serde_json::{Value, json};

/// Bounds on what a client may send; real requests are a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    version,
    about = "A minimal external KMS for ProgressDB (POST /wrap, /unwrap, /rotate)"
)]
struct Flags {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,

    /// Keyring file holding the master keys; created (mode 0600) with one
    /// fresh key if missing. A bearer token, if clients must present one,
    /// comes from PROGRESSDB_KMS_TOKEN.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,

    /// Answer every request only after this many milliseconds, to see how
    /// a server copes with a slow KMS.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay_ms: u64,
}

struct Kms {
    /// The keyring and its file; rotation rewrites both together.
    keyring: Mutex<Keyring>,
    key_file: PathBuf,
    token: Option<String>,
    delay: Duration,
}

fn main() {
    let flags = Flags::parse();
    let keyring = match Keyring::load_or_create(&flags.key_file) {
        Ok(keyring) => keyring,
        Err(err) => {
            eprintln!("progressdb-kms: {err}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(&flags.addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("progressdb-kms: cannot listen on {}: {err}", flags.addr);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("bound address");
    let kms = Arc::new(Kms {
        keyring: Mutex::new(keyring),
        key_file: flags.key_file,
        token: std::env::var("PROGRESSDB_KMS_TOKEN").ok(),
        delay: Duration::from_millis(flags.delay_ms),
    });
    // Tests wait for this line to learn the port.
    println!("progressdb-kms listening on http://{addr}");
    for stream in listener.incoming().flatten() {
        let kms = kms.clone();
        std::thread::spawn(move || {
            if let Err(err) = serve(&kms, stream) {
                eprintln!("progressdb-kms: connection: {err}");
            }
        });
    }
}

fn serve(kms: &Kms, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    std::thread::sleep(kms.delay);
    let (status, body) = match read_request(&mut stream)? {
        Some(request) => answer(kms, &request),
        None => (400, json!({ "error": "bad_request" })),
    };
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

struct Request {
    method: String,
    path: String,
    authorization: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// One request, or `None` when it is malformed or too large.
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                let length = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                if head_len + length > MAX_REQUEST_BYTES {
                    return Ok(None);
                }
                let request = Request {
                    method: parsed.method.unwrap_or_default().to_owned(),
                    path: parsed.path.unwrap_or_default().to_owned(),
                    authorization: parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                        .map(|h| h.value.to_vec()),
                    body: Vec::new(),
                };
                let mut body = buffer[head_len..].to_vec();
                while body.len() < length {
                    let read = stream.read(&mut chunk)?;
                    if read == 0 {
                        return Ok(None);
                    }
                    body.extend_from_slice(&chunk[..read]);
                }
                body.truncate(length);
                return Ok(Some(Request { body, ..request }));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_REQUEST_BYTES => {
                let read = stream.read(&mut chunk)?;
                if read == 0 {
                    return Ok(None);
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            _ => return Ok(None),
        }
    }
}

fn answer(kms: &Kms, request: &Request) -> (u16, Value) {
    if let Some(token) = &kms.token {
        let expected = format!("Bearer {token}");
        let presented = request.authorization.as_deref().unwrap_or_default();
        if !constant_time_eq(expected.as_bytes(), presented) {
            return (401, json!({ "error": "unauthorized" }));
        }
    }
    if request.method != "POST" {
        return (404, json!({ "error": "not_found" }));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return (400, json!({ "error": "invalid_json" }));
    };
    let keyring = &mut *kms
        .keyring
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    match request.path.as_str() {
        "/wrap" => {
            let Some(dek) = body["plaintext"].as_str().and_then(Dek::from_hex) else {
                return (400, json!({ "error": "plaintext must be 64 hex digits" }));
            };
            match keyring.wrap(&dek) {
                Ok(wrapped) => (
                    200,
                    json!({ "key_id": wrapped.key_id, "ciphertext": wrapped.wrapped }),
                ),
                Err(_) => (500, json!({ "error": "wrap_failed" })),
            }
        }
        "/unwrap" => {
            let (Some(key_id), Some(ciphertext)) = (
                body["key_id"]
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok()),
                body["ciphertext"].as_str(),
            ) else {
                return (
                    400,
                    json!({ "error": "key_id and ciphertext are required" }),
                );
            };
            let wrapped = WrappedKey {
                key_id,
                wrapped: ciphertext.to_owned(),
            };
            match keyring.unwrap(&wrapped) {
                Ok(dek) => (200, json!({ "plaintext": dek.expose_hex() })),
                Err(CryptoError::Open | CryptoError::UnknownMasterKey(_)) => {
                    (422, json!({ "error": "unwrap_failed" }))
                }
                Err(_) => (500, json!({ "error": "unwrap_failed" })),
            }
        }
        "/rotate" => match keyring.rotate(&kms.key_file) {
            Ok((id, _)) => (200, json!({ "key_id": id })),
            Err(err) => {
                eprintln!("progressdb-kms: rotation failed: {err}");
                (500, json!({ "error": "rotate_failed" }))
            }
        },
        _ => (404, json!({ "error": "not_found" })),
    }
}
