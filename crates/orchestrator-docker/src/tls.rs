//! Docker engines over TLS, reached as `docker --tlsverify` reaches them:
//! the engine's certificate must chain to the configured CA (and only to
//! it) and name the endpoint's host; the client presents its certificate.
//! rustls on ring, like the rest of the workspace, through bollard's custom
//! transport so no second TLS stack comes in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use registry_core::ports::orchestrators::TargetError;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The PEM files of a TLS engine endpoint (`--tlscacert`, `--tlscert`,
/// `--tlskey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA the engine's certificate must chain to.
    pub ca: PathBuf,
    /// The client certificate and key, for an engine run with
    /// `--tlsverify` (both or neither).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A checked TLS client configuration for one engine.
#[derive(Clone)]
pub struct EngineTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for EngineTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineTls")
            .field("client_certificate", &self.config.client_auth_cert_resolver.has_certs())
            .finish()
    }
}

impl EngineTls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<Self, TargetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for certificate in certificates("tls_ca_file", &files.ca)? {
            roots
                .add(certificate)
                .map_err(|e| error("tls_ca_file", &files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error("tls_ca_file", &files.ca, e.to_string()))?
            .with_root_certificates(roots);
        let config = match &files.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates("tls_cert_file", cert)?;
                let pem = read("tls_key_file", key)?;
                let private_key = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| error("tls_key_file", key, format!("holds no PEM private key ({e})")))?;
                builder.with_client_auth_cert(chain, private_key).map_err(|e| {
                    error(
                        "tls_key_file",
                        key,
                        format!("cannot be used with the certificate in {}: {e}", cert.display()),
                    )
                })?
            }
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// A bollard client for `https://authority`, verifying the engine.
    pub(crate) fn connect(&self, authority: &str, timeout_secs: u64) -> Result<Docker, bollard::errors::Error> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_only()
            .enable_http1()
            .wrap_connector({
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http
            });
        // No idle connections kept, as bollard's own clients: an engine
        // closing one between two requests must not fail the second.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let transport = move |request: BollardRequest| {
            let client = client.clone();
            async move { Ok(client.request(request).await?) }
        };
        Docker::connect_with_custom_transport(
            transport,
            Some(format!("https://{authority}")),
            timeout_secs,
            API_DEFAULT_VERSION,
        )
    }
}

fn certificates(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TargetError> {
    let pem = read(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(setting, path, format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(error(setting, path, "holds no PEM certificate".into()));
    }
    Ok(certificates)
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TargetError> {
    std::fs::read(path).map_err(|e| error(setting, path, format!("cannot be read: {e}")))
}

fn error(setting: &str, path: &Path, reason: String) -> TargetError {
    TargetError::Other(format!("{setting} {}: {reason}", path.display()))
}
