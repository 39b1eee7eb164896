//! Docker logins that need a token exchange with the provider.
//!
//! [`Logins`] implements the core's [`LoginProvider`]: static kinds are
//! delegated to [`StaticLogins`]; Amazon ECR credentials (access key id,
//! secret, region) are exchanged with `GetAuthorizationToken` for a docker
//! login `AWS` / password valid about 12 hours; Google service-account keys,
//! where their mode asks for it, for an OAuth access token
//! ([`google`]). Tokens are cached per (registry, credential revision) and
//! reused until half their lifetime, as Amazon's credential helper does; when
//! a refresh fails and the cached token is still valid, the cached token is
//! used (with a warning).

pub mod google;
pub mod probe;

pub use probe::{Probe, ProbeSettings};

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_ecr::config::{
    BehaviorVersion, Region, SharedCredentialsProvider, SharedHttpClient, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_ecr::error::SdkError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use registry_core::login::{DockerLogin, StaticLogins};
use registry_core::ports::login::{LoginError, LoginProvider, LoginUse};
use registry_core::registry::UNSAVED_REVISION;
use registry_core::targets::Organizations;
use registry_core::{Credentials, Registry, RegistryId, Timestamp, reference};
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

/// Amazon documents ECR authorization tokens as valid for 12 hours.
pub const ECR_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How long one `GetAuthorizationToken` call may take, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// AWS error codes that mean the keys themselves are wrong, revoked or not
/// allowed to call `GetAuthorizationToken`.
const REFUSED_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
];

/// The time the token cache and the exchanges go by.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Settings of the token exchanges.
#[derive(Clone)]
pub struct LoginSettings {
    /// Where ECR's API is reached instead of Amazon's regional endpoint
    /// (tests against a local AWS API implementation, air-gapped mirrors).
    pub ecr_endpoint_url: Option<String>,
    /// Token endpoints called for Google keys besides Google's own.
    pub google_token_uris: Vec<String>,
    /// Bounds one Google token exchange.
    pub google_timeout: Duration,
    /// The organizations whose ECR registries may log in with the server's
    /// own AWS identity; `None` for none.
    pub ecr_ambient_identity: Option<Organizations>,
    /// The system clock unless a test sets its own.
    pub clock: Clock,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            ecr_endpoint_url: None,
            google_token_uris: Vec::new(),
            google_timeout: google::EXCHANGE_TIMEOUT,
            ecr_ambient_identity: None,
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl fmt::Debug for LoginSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginSettings")
            .field("ecr_endpoint_url", &self.ecr_endpoint_url)
            .field("google_token_uris", &self.google_token_uris)
            .field("google_timeout", &self.google_timeout)
            .field("ecr_ambient_identity", &self.ecr_ambient_identity)
            .finish_non_exhaustive()
    }
}

/// Who calls `GetAuthorizationToken` for a registry.
#[derive(Clone, Copy)]
enum EcrKeys<'a> {
    /// The registry's keys: an IAM user's, or temporary ones with their
    /// session token.
    Stored {
        access_key_id: &'a SecretString,
        secret_access_key: &'a SecretString,
        session_token: Option<&'a SecretString>,
    },
    /// The server's own identity: the SDK's default credential chain.
    Server,
}

/// A cached ECR login and when it was fetched.
#[derive(Clone)]
struct Cached {
    login: DockerLogin,
    fetched_at: Timestamp,
}

impl Cached {
    /// Reused until half its lifetime has passed.
    fn fresh(&self, now: Timestamp) -> bool {
        self.login
            .expires_at
            .is_some_and(|expires| now.0 < self.fetched_at.0 + (expires.0 - self.fetched_at.0) / 2)
    }

    fn valid(&self, now: Timestamp) -> bool {
        self.login.expires_at.is_some_and(|expires| now < expires)
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// The login provider of the server: static kinds, ECR and Google token
/// exchanges.
#[derive(Clone)]
pub struct Logins {
    settings: LoginSettings,
    http: SharedHttpClient,
    google: google::GoogleTokens,
    /// One slot per (registry, credential revision); a slot's async lock
    /// makes concurrent logins of one registry share one exchange.
    cache: Arc<Mutex<HashMap<(RegistryId, i64), Slot>>>,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for Logins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logins")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Logins {
    pub fn new(settings: LoginSettings) -> Self {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        Self {
            google: google::GoogleTokens::new(&settings.google_token_uris, settings.google_timeout),
            settings,
            http,
            cache: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn now(&self) -> Timestamp {
        (self.settings.clock)()
    }

    /// How many token exchanges (`GetAuthorizationToken`, Google grants)
    /// were made (for tests and metrics).
    pub fn token_exchanges(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cache slot of one registry revision; slots of its older revisions
    /// are dropped.
    fn slot(&self, registry: &Registry) -> Slot {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(id, revision), _| id != &registry.id || *revision >= registry.credential_revision);
        Arc::clone(
            cache
                .entry((registry.id.clone(), registry.credential_revision))
                .or_default(),
        )
    }

    async fn ecr_login(
        &self,
        registry: &Registry,
        keys: EcrKeys<'_>,
        region: &str,
        host: &str,
    ) -> Result<DockerLogin, LoginError> {
        let wildcard = ecr_server(region);
        if host != wildcard && !reference::host_matches(&wildcard, host) {
            return Err(LoginError::WrongHost {
                registry: registry.id.to_string(),
                host: host.to_owned(),
                detail: format!("its ECR credentials are for region {region} ({wildcard})"),
            });
        }
        let login = self
            .cached(registry, "ECR", || self.get_authorization_token(registry, keys, region))
            .await?;
        Ok(for_host(login, host))
    }

    /// A login from the cache slot of `registry`'s revision while it is
    /// fresh, else from `exchange`; the cached one, while still valid, when
    /// the exchange fails. A draft's credentials (unsaved) are exchanged
    /// every time and never cached.
    async fn cached<F, Fut>(&self, registry: &Registry, provider: &str, exchange: F) -> Result<DockerLogin, LoginError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<DockerLogin, LoginError>>,
    {
        if registry.credential_revision == UNSAVED_REVISION {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return exchange().await;
        }
        let slot = self.slot(registry);
        let mut cached = slot.lock().await;
        let now = self.now();
        if let Some(entry) = cached.as_ref().filter(|entry| entry.fresh(now)) {
            return Ok(entry.login.clone());
        }
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match exchange().await {
            Ok(login) => {
                *cached = Some(Cached {
                    login: login.clone(),
                    fetched_at: now,
                });
                Ok(login)
            }
            Err(error) => match cached.as_ref() {
                Some(entry) if entry.valid(now) => {
                    tracing::warn!(
                        registry_id = %registry.id, %error,
                        "{provider} token refresh failed; using the cached token until it expires"
                    );
                    let mut login = entry.login.clone();
                    login.refresh_failed = Some(error.to_string());
                    Ok(login)
                }
                _ => Err(error),
            },
        }
    }

    async fn google_login(
        &self,
        registry: &Registry,
        key: &SecretString,
        host: &str,
    ) -> Result<DockerLogin, LoginError> {
        let mut login = self
            .cached(registry, "Google", || {
                self.google.exchange(registry, key, host, self.now())
            })
            .await?;
        login.server = host.to_ascii_lowercase();
        Ok(login)
    }

    async fn get_authorization_token(
        &self,
        registry: &Registry,
        keys: EcrKeys<'_>,
        region: &str,
    ) -> Result<DockerLogin, LoginError> {
        let credentials = match keys {
            EcrKeys::Stored {
                access_key_id,
                secret_access_key,
                session_token,
            } => SharedCredentialsProvider::new(aws_sdk_ecr::config::Credentials::new(
                access_key_id.expose_secret(),
                secret_access_key.expose_secret(),
                session_token.map(|token| token.expose_secret().to_owned()),
                None,
                "registry-login",
            )),
            EcrKeys::Server
                if !self
                    .settings
                    .ecr_ambient_identity
                    .as_ref()
                    .is_some_and(|allowed| allowed.allows(&registry.organization)) =>
            {
                return Err(LoginError::Refused {
                    provider: "AWS",
                    registry: registry.id.to_string(),
                    detail: format!(
                        "it uses the server's own AWS identity, which this server's configuration does not allow \
                         organization {:?} (ecr.ambient_identity_organizations)",
                        registry.organization
                    ),
                });
            }
            EcrKeys::Server => {
                let region = Region::new(region.to_owned());
                let provider = ProviderConfig::without_region()
                    .with_http_client(self.http.clone())
                    .with_region(Some(region.clone()));
                SharedCredentialsProvider::new(
                    DefaultCredentialsChain::builder()
                        .configure(provider)
                        .region(region)
                        .build()
                        .await,
                )
            }
        };
        let mut config = aws_sdk_ecr::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials)
            .http_client(self.http.clone())
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        if let Some(url) = &self.settings.ecr_endpoint_url {
            config = config.endpoint_url(url);
        }
        let client = aws_sdk_ecr::Client::from_conf(config.build());
        let output = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| classify(registry, e))?;
        let unavailable = |detail: &str| LoginError::Unavailable {
            registry: registry.id.to_string(),
            detail: detail.to_owned(),
        };
        let data = output
            .authorization_data()
            .first()
            .ok_or_else(|| unavailable("GetAuthorizationToken answered no authorization data"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| unavailable("GetAuthorizationToken answered no token"))?;
        let proxy = data
            .proxy_endpoint()
            .ok_or_else(|| unavailable("GetAuthorizationToken answered no proxy endpoint"))?;
        let expires_at = data
            .expires_at()
            .map(|t| Timestamp(t.secs().saturating_mul(1_000_000) + i64::from(t.subsec_nanos() / 1_000)));
        decode_token(token, proxy, expires_at, self.now()).map_err(|e| unavailable(&e))
    }
}

impl Default for Logins {
    fn default() -> Self {
        Self::new(LoginSettings::default())
    }
}

#[async_trait]
impl LoginProvider for Logins {
    async fn login(
        &self,
        registry: &Registry,
        credentials: &Credentials,
        host: &str,
        consumer: LoginUse,
    ) -> Result<DockerLogin, LoginError> {
        match credentials {
            Credentials::Ecr {
                access_key_id,
                secret_access_key,
                region,
                session_token,
                server_identity,
            } => {
                let keys = if *server_identity {
                    EcrKeys::Server
                } else {
                    EcrKeys::Stored {
                        access_key_id,
                        secret_access_key,
                        session_token: session_token.as_ref(),
                    }
                };
                self.ecr_login(registry, keys, region, host).await
            }
            Credentials::Gcr {
                service_account_key,
                login,
            }
            | Credentials::Gar {
                service_account_key,
                login,
                ..
            } if login.uses_access_token(consumer) => self.google_login(registry, service_account_key, host).await,
            _ => StaticLogins.login(registry, credentials, host, consumer).await,
        }
    }
}

/// The wildcard server of ECR registries in `region`.
fn ecr_server(region: &str) -> String {
    let suffix = if region.starts_with("cn-") { ".cn" } else { "" };
    format!("*.dkr.ecr.{region}.amazonaws.com{suffix}")
}

/// The token works for every registry of the region the principal can reach:
/// a concrete image host (another account's registry) keeps its own key in
/// the Docker config; the wildcard gets the proxy endpoint's host.
fn for_host(mut login: DockerLogin, host: &str) -> DockerLogin {
    if !host.starts_with('*') {
        login.server = host.to_ascii_lowercase();
    }
    login
}

/// The docker login of a `GetAuthorizationToken` answer: `token` is base64 of
/// `AWS:<password>`, the server the host of `proxy_endpoint`. An expiry that
/// is missing or not in the future (a skewed clock, an API mock) is taken as
/// the documented 12 hours from `now`.
pub fn decode_token(
    token: &str,
    proxy_endpoint: &str,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<DockerLogin, String> {
    let decoded = Zeroizing::new(
        STANDARD
            .decode(token.trim())
            .map_err(|_| "the authorization token is not base64".to_owned())?,
    );
    let decoded = std::str::from_utf8(&decoded).map_err(|_| "the authorization token is not text".to_owned())?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| "the authorization token is not user:password".to_owned())?;
    let server = url::Url::parse(proxy_endpoint)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_ascii_lowercase();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .ok_or_else(|| format!("the proxy endpoint {proxy_endpoint:?} has no host"))?;
    let lifetime = i64::try_from(ECR_TOKEN_LIFETIME.as_micros()).unwrap_or(i64::MAX);
    let expires_at = match expires_at {
        Some(at) if at > now => at,
        other => {
            tracing::warn!(
                expires_at = ?other.map(Timestamp::seconds), server,
                "ECR token expiry missing or not in the future; assuming the documented 12 hours"
            );
            Timestamp(now.0.saturating_add(lifetime))
        }
    };
    Ok(DockerLogin {
        server,
        username: username.to_owned(),
        password: SecretString::from(password.to_owned()),
        expires_at: Some(expires_at),
        refresh_failed: None,
    })
}

/// The credential provider's error inside a failed call, if that is what
/// failed (the server's identity chain found nothing, or its provider
/// failed).
fn credentials_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(missing) = cause.downcast_ref::<aws_credential_types::provider::error::CredentialsError>() {
            return Some(aws_sdk_ecr::error::DisplayErrorContext(missing).to_string());
        }
        source = cause.source();
    }
    None
}

/// Refused keys become [`LoginError::Refused`]; anything else (network,
/// throttling, AWS failures) [`LoginError::Unavailable`]. Messages carry AWS's
/// error code and message, never the keys.
fn classify<E, R>(registry: &Registry, error: SdkError<E, R>) -> LoginError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    let registry_id = registry.id.to_string();
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown");
            let message = service.err().message().unwrap_or("");
            let detail = format!("{code}: {message}");
            if REFUSED_CODES.contains(&code) {
                LoginError::Refused {
                    provider: "AWS",
                    registry: registry_id,
                    detail,
                }
            } else {
                LoginError::Unavailable {
                    registry: registry_id,
                    detail: format!("ECR answered {detail}"),
                }
            }
        }
        SdkError::TimeoutError(_) => LoginError::Unavailable {
            registry: registry_id,
            detail: "ECR did not answer in time".into(),
        },
        SdkError::DispatchFailure(failure)
            if let Some(missing) = failure.as_connector_error().and_then(|e| credentials_error(e)) =>
        {
            LoginError::Refused {
                provider: "AWS",
                registry: registry_id,
                detail: format!("the server's AWS identity gave no credentials: {missing}"),
            }
        }
        SdkError::DispatchFailure(failure) => LoginError::Unavailable {
            registry: registry_id,
            detail: format!(
                "ECR cannot be reached: {}",
                failure
                    .as_connector_error()
                    .map_or_else(|| "dispatch failure".to_owned(), ToString::to_string)
            ),
        },
        _ => LoginError::Unavailable {
            registry: registry_id,
            detail: format!("ECR call failed: {}", aws_sdk_ecr::error::DisplayErrorContext(&error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_to_aws_and_the_password() {
        let now = Timestamp(1_700_000_000_000_000);
        let expires = Timestamp(now.0 + 12 * 3600 * 1_000_000);
        let token = STANDARD.encode("AWS:eyJwYXlsb2FkIjoi");
        let login = decode_token(
            &token,
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
            Some(expires),
            now,
        )
        .unwrap();
        assert_eq!(login.server, "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(login.username, "AWS");
        assert_eq!(login.password.expose_secret(), "eyJwYXlsb2FkIjoi");
        assert_eq!(login.expires_at, Some(expires));
        assert_eq!(login.refresh_at(now), Some(Timestamp(now.0 + 6 * 3600 * 1_000_000)));
    }

    #[test]
    fn a_stale_expiry_is_taken_as_twelve_hours() {
        let now = Timestamp(1_700_000_000_000_000);
        let token = STANDARD.encode("AWS:secret");
        let login = decode_token(&token, "https://1.example", Some(Timestamp(1_420_070_400_000_000)), now).unwrap();
        assert_eq!(login.expires_at, Some(Timestamp(now.0 + 12 * 3600 * 1_000_000)));
        assert!(decode_token("not base64!", "https://1.example", None, now).is_err());
        assert!(decode_token(&STANDARD.encode("nocolon"), "https://1.example", None, now).is_err());
    }

    #[test]
    fn refused_keys_are_told_apart_from_failures() {
        use aws_sdk_ecr::error::ErrorMetadata;
        use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError;
        let registry = Registry {
            id: RegistryId::parse("reg-abc123").unwrap(),
            organization: "acme".into(),
            name: "ecr".into(),
            kind: registry_core::RegistryKind::Ecr,
            server: ecr_server("us-east-1"),
            hints: Vec::new(),
            created_by: "alice".into(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            etag: String::new(),
            credential_revision: 1,
        };
        let service = |code: &str| {
            let error = GetAuthorizationTokenError::generic(
                ErrorMetadata::builder()
                    .code(code)
                    .message("The security token included in the request is invalid.")
                    .build(),
            );
            classify(&registry, SdkError::service_error(error, ()))
        };
        for code in [
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "AccessDeniedException",
        ] {
            let error = service(code);
            assert!(matches!(error, LoginError::Refused { .. }), "{error:?}");
            assert!(
                error
                    .to_string()
                    .starts_with("AWS refused the credentials of registry reg-abc123"),
                "{error}"
            );
        }
        assert!(matches!(service("ServerException"), LoginError::Unavailable { .. }));
    }

    #[test]
    fn cached_tokens_are_fresh_for_half_their_lifetime() {
        let fetched_at = Timestamp(0);
        let cached = Cached {
            login: DockerLogin {
                server: "x".into(),
                username: "AWS".into(),
                password: SecretString::from("p".to_owned()),
                expires_at: Some(Timestamp(100)),
                refresh_failed: None,
            },
            fetched_at,
        };
        assert!(cached.fresh(Timestamp(49)));
        assert!(!cached.fresh(Timestamp(50)));
        assert!(cached.valid(Timestamp(99)));
        assert!(!cached.valid(Timestamp(100)));
    }
}
