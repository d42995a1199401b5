//! TLS for the API and metrics listeners (`--tls-cert`, `--tls-key`).
//!
//! One rustls server configuration (TLS 1.2 and 1.3, ring's primitives,
//! HTTP/1.1 by ALPN) is built at start and shared by every shard. Its
//! certificate comes from [`ReloadableCert`]: SIGHUP re-reads the PEM files
//! on the signal thread and swaps the pair in, so new handshakes get the
//! new certificate while connections already open keep theirs. A pair that
//! fails to load (missing file, bad PEM, key not matching the certificate)
//! is logged and the old one stays in service.
//!
//! The handshake is bounded like every other input: it must finish within
//! `--tls-handshake-timeout-ms`, and rustls itself caps the size of each
//! handshake message and of the plaintext it buffers per connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// PEM files larger than this are refused: a chain of a few certificates
/// is a few KiB.
const PEM_BYTES_MAX: u64 = 1024 * 1024;

/// The certificate and key served, replaceable while the server runs.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Read once per handshake and written once per SIGHUP; the lock is
    /// held only to clone or replace an `Arc`.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Loads the pair once; start-up fails if it does not load.
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<Arc<ReloadableCert>, String> {
        let loaded = load_pair(cert_path, key_path)?;
        Ok(Arc::new(ReloadableCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(loaded),
        }))
    }

    /// Re-reads both files and serves them from the next handshake on.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load_pair(&self.cert_path, &self.key_path)?;
        // A poisoned lock only means a panic elsewhere mid-swap of an
        // `Arc`; the value inside is still a whole pair.
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(current.clone())
    }
}

/// The server configuration every shard's acceptor is made from.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| format!("cannot configure TLS: {err}"))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A shard's TLS acceptor and the handshake deadline.
pub struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> Tls {
        Tls {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// Runs the server side of the handshake; `None` when the client sent
    /// something that is not TLS, failed the handshake or was too slow.
    pub async fn handshake(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let accepting = self.acceptor.accept(stream);
        let done = glommio::timer::timeout(self.handshake_timeout, async move {
            accepting.await.map_err(glommio::GlommioError::from)
        })
        .await;
        done.ok()
    }
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, String> {
    let cert_pem = read_pem(cert_path)?;
    let key_pem = read_pem(key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{}: not a PEM certificate: {err}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|err| format!("{}: not a PEM private key: {err}", key_path.display()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|err| format!("{}: unsupported private key: {err}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|err| {
        format!(
            "{} does not match {}: {err}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?
        .len();
    if size > PEM_BYTES_MAX {
        return Err(format!(
            "{} is {size} bytes; a PEM file may be at most {PEM_BYTES_MAX}",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}
