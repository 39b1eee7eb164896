//! Google service-account keys exchanged for OAuth access tokens: the JWT
//! bearer grant (RFC 7523) at the key's `token_uri`, scope `cloud-platform`.
//! The docker login is `oauth2accesstoken` / the access token, valid about an
//! hour, so clusters never hold the long-lived key.
//!
//! The assertion is signed with `ring` (RS256), the crate that already
//! validates the key on create; the grant is one form POST over the
//! workspace's reqwest/rustls/ring client, with a deadline and a bounded
//! answer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use registry_core::login::DockerLogin;
use registry_core::ports::login::LoginError;
use registry_core::{Registry, Timestamp};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The docker username of access-token logins.
pub const USERNAME: &str = "oauth2accesstoken";

/// The scope asked for: what `gcloud auth print-access-token` gets.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google's token endpoints, the only ones called unless the server's
/// configuration allows more.
pub const GOOGLE_TOKEN_URIS: [&str; 2] = [
    "https://oauth2.googleapis.com/token",
    "https://accounts.google.com/o/oauth2/token",
];

/// Google documents access tokens as valid for one hour; taken when an
/// answer has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest answer read from a token endpoint.
const MAX_BODY: usize = 64 * 1024;

/// How long one exchange may take, by default.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// OAuth error codes that mean the key itself is wrong, deleted or disabled.
const REFUSED_ERRORS: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "access_denied",
];

/// The fields of a key file the grant needs; wiped when dropped.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    token_uri: Option<String>,
}

/// Exchanges service-account keys at the token endpoints it allows.
#[derive(Clone)]
pub struct GoogleTokens {
    client: Result<reqwest::Client, String>,
    allowed: Arc<[url::Url]>,
    timeout: Duration,
}

impl fmt::Debug for GoogleTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleTokens")
            .field(
                "allowed",
                &self.allowed.iter().map(url::Url::as_str).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl GoogleTokens {
    /// Calls Google's token endpoints and the `extra` ones (a test double, a
    /// private endpoint); a key naming any other `token_uri` is refused. One
    /// exchange takes at most `timeout`.
    pub fn new(extra: &[String], timeout: Duration) -> Self {
        let allowed = GOOGLE_TOKEN_URIS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .filter_map(|uri| url::Url::parse(uri).ok())
            .collect();
        Self {
            client: client(),
            allowed,
            timeout,
        }
    }

    /// The access-token login of `key` (a key file's JSON) for `host`,
    /// fetched at `now`.
    pub async fn exchange(
        &self,
        registry: &Registry,
        key: &SecretString,
        host: &str,
        now: Timestamp,
    ) -> Result<DockerLogin, LoginError> {
        let refused = |detail: String| LoginError::Refused {
            provider: "Google",
            registry: registry.id.to_string(),
            detail,
        };
        let unavailable = |detail: String| LoginError::Unavailable {
            registry: registry.id.to_string(),
            detail,
        };
        let key: ServiceAccountKey = serde_json::from_str(key.expose_secret()).map_err(|_| {
            refused("the service-account key is not a key file with client_email and private_key".into())
        })?;
        let token_uri = key.token_uri.as_deref().unwrap_or(GOOGLE_TOKEN_URIS[0]);
        let endpoint = url::Url::parse(token_uri)
            .ok()
            .filter(|uri| self.allowed.contains(uri))
            .ok_or_else(|| {
                refused(format!(
                    "its token_uri {token_uri:?} is not a token endpoint this server calls \
                     (Google's, or one in the server's google.token_uris)"
                ))
            })?;
        let assertion = assertion(&key, endpoint.as_str(), now).map_err(refused)?;
        let client = self.client.as_ref().map_err(|e| unavailable(e.clone()))?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let call = async {
            let response = client
                .post(endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(reqwest::header::ACCEPT, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| unavailable(format!("the token endpoint cannot be reached: {}", describe(&e))))?;
            let status = response.status();
            let body = bounded(response)
                .await
                .map_err(|e| unavailable(format!("the token endpoint's answer: {e}")))?;
            Ok::<_, LoginError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| unavailable(format!("the token endpoint did not answer within {:?}", self.timeout)))??;
        if !status.is_success() {
            let (error, description) = oauth_error(&body);
            let detail = format!("the token endpoint answered {status}: {error}{description}");
            return Err(
                if REFUSED_ERRORS.contains(&error.as_str()) || status == 401 || status == 403 {
                    refused(detail)
                } else {
                    unavailable(detail)
                },
            );
        }
        #[derive(Deserialize)]
        struct Answer {
            access_token: SecretString,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| unavailable("the token endpoint's answer is not a token (JSON with access_token)".into()))?;
        if answer.access_token.expose_secret().is_empty() {
            return Err(unavailable("the token endpoint answered an empty access_token".into()));
        }
        let lifetime = answer
            .expires_in
            .filter(|&seconds| seconds > 0)
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok(DockerLogin {
            server: host.to_ascii_lowercase(),
            username: USERNAME.to_owned(),
            password: answer.access_token,
            expires_at: Some(now.after(lifetime)),
            refresh_failed: None,
        })
    }
}

/// The signed JWT of the grant: `iss` the service account, `aud` the token
/// endpoint, valid one hour from `now`.
fn assertion(key: &ServiceAccountKey, audience: &str, now: Timestamp) -> Result<String, String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(key.private_key.as_bytes())
        .map_err(|_| "the key's private_key is not a pkcs#8 pem".to_owned())?;
    let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|_| "the key's private_key is not an rsa key ring can sign with".to_owned())?;
    let issued = now.seconds();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": key.private_key_id});
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": audience,
        "iat": issued,
        "exp": issued + 3600,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing the assertion failed".to_owned())?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The OAuth `error` and `: error_description` of a refusal, printable and
/// short (they are Google's words, never the key's).
fn oauth_error(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Refusal {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let clean =
        |text: &str, max: usize| -> String { text.chars().filter(|c| !c.is_control()).take(max).collect::<String>() };
    match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) if !refusal.error.is_empty() => {
            let description = clean(&refusal.error_description, 200);
            let description = if description.is_empty() {
                String::new()
            } else {
                format!(": {description}")
            };
            (clean(&refusal.error, 64), description)
        }
        _ => ("no OAuth error".to_owned(), String::new()),
    }
}

/// Reads at most [`MAX_BODY`] bytes of a body.
async fn bounded(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error's message with its causes (the URL in it is the key's
/// `token_uri`, which is no secret).
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// rustls on ring with the system's authorities; the environment's proxy
/// (`HTTPS_PROXY`, `NO_PROXY`), no redirects.
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
        .map_err(|e| format!("the HTTP client of Google token exchanges cannot be built: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_googles_words_short_and_printable() {
        let body = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature.\n"}"#;
        assert_eq!(
            oauth_error(body),
            ("invalid_grant".to_owned(), ": Invalid JWT Signature.".to_owned())
        );
        assert_eq!(oauth_error(b"<html>"), ("no OAuth error".to_owned(), String::new()));
        let long = format!(r#"{{"error":"x","error_description":"{}"}}"#, "a".repeat(5000));
        assert_eq!(oauth_error(long.as_bytes()).1.len(), 202);
    }
}
