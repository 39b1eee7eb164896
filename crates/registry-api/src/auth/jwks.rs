//! JWT signing keys published as a JSON Web Key Set (RFC 7517) at a URL, the
//! way identity platforms publish theirs: fetched at start, refreshed
//! periodically and when a token names a key id the set lacks (at most once
//! per [`MIN_REFRESH`]), with bounded answers and a deadline.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Notify;

use super::jwt::Verifier;

/// The largest key set read.
const MAX_BODY: usize = 256 * 1024;
/// The most keys kept from one set.
const MAX_KEYS: usize = 100;
/// One fetch's deadline.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetches on unknown key ids are at least this far apart.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Why a key set could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS URL {0:?} must be https (http only to a loopback address)")]
    Url(String),
    #[error("fetching the JWKS at {url}: {reason}")]
    Fetch { url: String, reason: String },
}

/// The keys of a JWKS URL, by key id.
#[derive(Debug)]
pub struct JwksKeys {
    url: url::Url,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, Arc<Verifier>>>,
    wanted: Notify,
    last_fetch: Mutex<Option<Instant>>,
    interval: Duration,
}

impl JwksKeys {
    /// Fetches the set at `url` once (a start with an unreachable set is
    /// refused); [`Self::run`] keeps it fresh every `interval`.
    pub async fn fetch(url: &str, interval: Duration) -> Result<Arc<Self>, JwksError> {
        let parsed = url::Url::parse(url).map_err(|_| JwksError::Url(url.to_owned()))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if !(parsed.scheme() == "https" || parsed.scheme() == "http" && loopback) {
            return Err(JwksError::Url(url.to_owned()));
        }
        let fetch_error = |reason: String| JwksError::Fetch {
            url: url.to_owned(),
            reason,
        };
        let client = client().map_err(fetch_error)?;
        let keys = Arc::new(Self {
            url: parsed,
            client,
            keys: RwLock::default(),
            wanted: Notify::new(),
            last_fetch: Mutex::new(None),
            interval,
        });
        keys.refresh().await.map_err(fetch_error)?;
        Ok(keys)
    }

    /// The verifier of key `kid`, if the set has it.
    pub(super) fn get(&self, kid: &str) -> Option<Arc<Verifier>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// Asks [`Self::run`] to fetch the set again (a token named a key id it
    /// lacks); ignored within [`MIN_REFRESH`] of the last fetch.
    pub(super) fn want_refresh(&self) {
        self.wanted.notify_one();
    }

    /// Refreshes every `interval`, and on [`Self::want_refresh`] at most
    /// once per [`MIN_REFRESH`]. A failed refresh keeps the keys it had.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.wanted.notified() => {
                    let since = self.last_fetch.lock().unwrap_or_else(PoisonError::into_inner).map(|at| at.elapsed());
                    if let Some(wait) = since.and_then(|since| MIN_REFRESH.checked_sub(since)) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if let Err(reason) = self.refresh().await {
                tracing::warn!(url = %self.url, reason, "JWKS refresh failed; keeping the keys known");
            }
        }
    }

    async fn refresh(&self) -> Result<(), String> {
        *self.last_fetch.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.body())
            .await
            .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in set.keys.iter().take(MAX_KEYS) {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let algorithms: Vec<Algorithm> = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(alg), _) => Algorithm::from_str(&alg.to_string()).into_iter().collect(),
                (None, AlgorithmParameters::RSA(_)) => {
                    use Algorithm::*;
                    vec![RS256, RS384, RS512, PS256, PS384, PS512]
                }
                (None, AlgorithmParameters::EllipticCurve(_)) => vec![Algorithm::ES256, Algorithm::ES384],
                (None, AlgorithmParameters::OctetKeyPair(_)) => vec![Algorithm::EdDSA],
                // A published symmetric key would let anyone sign.
                (None, AlgorithmParameters::OctetKey(_)) => Vec::new(),
            };
            let symmetric = algorithms
                .iter()
                .any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
            if algorithms.is_empty() || symmetric {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, Arc::new(Verifier::new(key, algorithms)));
                }
                Err(error) => tracing::warn!(kid, %error, "JWKS key skipped"),
            }
        }
        tracing::info!(url = %self.url, keys = keys.len(), "JWKS loaded");
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(())
    }

    async fn body(&self) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// rustls on ring with the system's authorities; no redirects.
fn client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("registry-credential-service/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}
