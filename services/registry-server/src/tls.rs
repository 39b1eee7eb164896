//! TLS for the gRPC listener: the certificate, key and client CA files read
//! into a rustls configuration (ring, like the rest of the workspace), and
//! re-read when they change or on SIGHUP, without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The files a TLS listener is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the authorities client certificates must chain to; with it
    /// every client must present one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {}: {reason}", file.display())]
pub struct TlsError {
    setting: &'static str,
    file: PathBuf,
    reason: String,
}

/// The configuration new connections are accepted with; a reload swaps it,
/// connections already open keep theirs.
#[derive(Debug, Clone)]
pub struct SharedConfig(Arc<RwLock<Arc<ServerConfig>>>);

impl SharedConfig {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }
}

/// Reads and checks the files: certificates that parse and are valid now,
/// a key that matches the certificate, client CAs that are valid now.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("tls.cert_file", &files.cert)?;
    let key = private_key(&files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| error("tls.key_file", &files.key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) = certified.keys_match() {
        return Err(error(
            "tls.key_file",
            &files.key,
            format!("is not the key of the certificate in {}", files.cert.display()),
        ));
    }
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| error("tls.cert_file", &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("tls.client_ca_file", path)? {
        roots
            .add(certificate)
            .map_err(|e| error("tls.client_ca_file", path, format!("not a usable CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| error("tls.client_ca_file", path, e.to_string()))
}

/// The PEM certificates of a file, each valid now.
fn certificates(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(setting, path, format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(error(setting, path, "holds no PEM certificate".into()));
    }
    for certificate in &certificates {
        let (_, parsed) = X509Certificate::from_der(certificate)
            .map_err(|e| error(setting, path, format!("a certificate does not parse: {e}")))?;
        let validity = parsed.validity();
        if !validity.is_valid() {
            return Err(error(
                setting,
                path,
                format!(
                    "certificate {:?} is valid from {} to {}, not now",
                    parsed.subject().to_string(),
                    validity.not_before,
                    validity.not_after
                ),
            ));
        }
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls.key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| error("tls.key_file", path, format!("holds no PEM private key ({e})")))
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| error(setting, path, format!("cannot be read: {e}")))
}

fn error(setting: &'static str, file: &Path, reason: String) -> TlsError {
    TlsError {
        setting,
        file: file.to_path_buf(),
        reason,
    }
}

/// What the files hold now, to notice a change without trusting mtimes
/// (a Kubernetes Secret volume swaps a symlink).
fn fingerprint(files: &TlsFiles) -> Option<ring::digest::Digest> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for path in [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
    {
        let contents = std::fs::read(path).ok()?;
        context.update(&(contents.len() as u64).to_be_bytes());
        context.update(&contents);
    }
    Some(context.finish())
}

/// Re-reads the files every `interval` when they changed, and at once on
/// SIGHUP. A set of files that does not load is logged and the previous
/// configuration kept. SIGHUP is caught from the moment this is called.
pub fn reload(files: TlsFiles, shared: SharedConfig, interval: Duration) -> impl Future<Output = ()> + Send {
    let mut hangup = hangup();
    let mut last = fingerprint(&files).map(|d| d.as_ref().to_vec());
    async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            let forced = tokio::select! {
                _ = ticks.tick() => false,
                Some(()) = next_hangup(&mut hangup) => true,
            };
            let now = fingerprint(&files).map(|d| d.as_ref().to_vec());
            if !forced && now == last {
                continue;
            }
            // Not retried after a failure until the files change again
            // (or SIGHUP).
            last = now;
            match load(&files) {
                Ok(config) => {
                    shared.replace(config);
                    tracing::info!(
                        cert_file = %files.cert.display(),
                        trigger = if forced { "SIGHUP" } else { "change" },
                        "TLS files re-read: new connections use them"
                    );
                }
                Err(e) => tracing::error!("TLS files not re-read, the previous ones stay in use: {e}"),
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("SIGHUP cannot be caught ({e}); TLS files are re-read when they change");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {
    None
}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}
