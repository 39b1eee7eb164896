//! The live connection test: the registry v2 handshake with a docker
//! login, then optionally a `HEAD` of an image's manifest, since a token
//! alone does not prove pull access (registries grant the intersection of
//! the asked scope and the account's rights).
//!
//! `GET /v2/`; on `401`, the `WWW-Authenticate` challenge says how to log
//! in: `Basic` (send the login) or `Bearer realm=…,service=…` (fetch a token
//! from the realm with the login, asking `repository:<name>:pull` when an
//! image is given). Every answer is classified into a [`LiveOutcome`] the
//! form can show; none is an error. One deadline bounds the whole test,
//! every body read is bounded, redirects are followed only to the
//! registry's own host or the realm's, and plain HTTP is used only for a
//! loopback registry that does not speak TLS.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use registry_core::login::DockerLogin;
use registry_core::ports::login::{ImageProbe, LiveOutcome, LiveReport, RegistryProbe};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use rustls::pki_types::CertificateDer;
use secrecy::ExposeSecret as _;

/// The manifest types a pull accepts: OCI index and manifest, Docker list
/// and v2 (some registries refuse a manifest whose type is not listed).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The most of any response body the test reads (a token, an error).
const MAX_BODY: usize = 64 * 1024;

/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 3;

/// Settings of the live test.
#[derive(Clone)]
pub struct ProbeSettings {
    /// Bounds the whole test, token exchange and manifest included.
    pub deadline: Duration,
    /// Certificate authorities trusted besides the system's (self-hosted
    /// registries).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            extra_roots: Vec::new(),
        }
    }
}

impl fmt::Debug for ProbeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeSettings")
            .field("deadline", &self.deadline)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// Why a probe could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    #[error("no usable certificate authority: {0}")]
    Roots(String),
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
}

/// The live test over reqwest on rustls with the ring provider.
#[derive(Clone)]
pub struct Probe {
    client: reqwest::Client,
    /// The authorities `client` trusts, for a client that trusts a
    /// registry's own CA bundle as well.
    roots: Arc<rustls::RootCertStore>,
    deadline: Duration,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe").field("deadline", &self.deadline).finish()
    }
}

impl Probe {
    /// A probe trusting the system's certificate authorities and
    /// `settings.extra_roots`.
    pub fn new(settings: ProbeSettings) -> Result<Self, ProbeSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for root in settings.extra_roots {
            roots.add(root).map_err(|e| ProbeSetupError::Roots(e.to_string()))?;
        }
        Ok(Self {
            client: client(roots.clone())?,
            roots: Arc::new(roots),
            deadline: settings.deadline,
        })
    }

    /// A client trusting a registry's `ca_bundle` besides [`Self::roots`].
    fn trusting(&self, ca_bundle: &str) -> Result<reqwest::Client, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = (*self.roots).clone();
        for certificate in CertificateDer::pem_slice_iter(ca_bundle.as_bytes()) {
            let certificate = certificate.map_err(|e| format!("the registry's CA bundle is not valid PEM: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("the registry's CA bundle holds an unusable certificate: {e}"))?;
        }
        client(roots).map_err(|e| e.to_string())
    }
}

/// The HTTP client of the test: rustls on ring, trusting `roots`, no proxy,
/// no redirects of its own.
fn client(roots: rustls::RootCertStore) -> Result<reqwest::Client, ProbeSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeSetupError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        // Redirects are followed by hand, to the hosts allowed.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("registry-credential-service/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProbeSetupError::Client(e.to_string()))
}

#[async_trait]
impl RegistryProbe for Probe {
    async fn probe_trusting(
        &self,
        server: &str,
        login: Option<&DockerLogin>,
        image: Option<&ImageProbe>,
        ca_bundle: Option<&str>,
    ) -> LiveReport {
        let started = Instant::now();
        let client = match ca_bundle.map(|pem| self.trusting(pem)) {
            None => self.client.clone(),
            Some(Ok(client)) => client,
            Some(Err(message)) => {
                return LiveReport {
                    outcome: LiveOutcome::TlsError,
                    message,
                    elapsed: started.elapsed(),
                    digest: None,
                };
            }
        };
        let handshake = Handshake {
            client: &client,
            server,
            login,
        };
        let run = handshake.run(image);
        let (outcome, message, digest) = match tokio::time::timeout(self.deadline, run).await {
            Ok(Ok(found)) => (LiveOutcome::Ok, found.message, found.digest),
            Ok(Err(failure)) => (failure.outcome, failure.message, None),
            Err(_) => (
                LiveOutcome::Unreachable,
                format!("{server} did not answer within {} ms", self.deadline.as_millis()),
                None,
            ),
        };
        LiveReport {
            outcome,
            message,
            elapsed: started.elapsed(),
            digest,
        }
    }
}

/// What a successful test found.
struct Found {
    message: String,
    digest: Option<String>,
}

/// A failed step, as the form shows it. Never carries a secret.
#[derive(Debug)]
struct Failure {
    outcome: LiveOutcome,
    message: String,
}

fn fail(outcome: LiveOutcome, message: impl Into<String>) -> Failure {
    Failure {
        outcome,
        message: message.into(),
    }
}

/// How a request authenticates.
#[derive(Clone)]
enum Auth {
    None,
    Basic,
    Bearer(String),
}

struct Handshake<'a> {
    client: &'a reqwest::Client,
    server: &'a str,
    login: Option<&'a DockerLogin>,
}

impl Handshake<'_> {
    async fn run(&self, image: Option<&ImageProbe>) -> Result<Found, Failure> {
        let base = self.base().await?;
        let ping = self
            .send(reqwest::Method::GET, &format!("{base}/v2/"), &Auth::None)
            .await?;
        let auth = match ping.status() {
            status if status.is_success() => Auth::None,
            StatusCode::UNAUTHORIZED => self.authenticate(&base, ping.headers(), image).await?,
            status => {
                return Err(fail(
                    LiveOutcome::ProtocolError,
                    format!("GET /v2/ answered {status}: not a registry v2 endpoint"),
                ));
            }
        };
        let Some(image) = image else {
            let message = match (&auth, self.login) {
                (Auth::None, Some(_)) => "the registry needs no login; the credentials were not checked",
                (Auth::None, None) => "the registry answers anonymously",
                _ => "logged in",
            };
            return Ok(Found {
                message: message.into(),
                digest: None,
            });
        };
        self.manifest(&base, &auth, image).await
    }

    /// `https://server`, or `http://server` for a loopback registry that
    /// does not speak TLS (as docker treats 127.0.0.0/8).
    async fn base(&self) -> Result<String, Failure> {
        let https = format!("https://{}", self.server);
        if !is_loopback(self.server) {
            return Ok(https);
        }
        match self.client.get(format!("{https}/v2/")).send().await {
            // Refused, or not TLS: plain HTTP (a closed port stays
            // unreachable there too); a bad certificate is an answer.
            Err(error) if classify(&error).outcome != LiveOutcome::TlsError => Ok(format!("http://{}", self.server)),
            _ => Ok(https),
        }
    }

    /// Answers the `401`'s challenge: checks a Basic login, or fetches a
    /// Bearer token from the realm.
    async fn authenticate(&self, base: &str, headers: &HeaderMap, image: Option<&ImageProbe>) -> Result<Auth, Failure> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let challenge = parse_challenge(&challenge)?;
        let Some(login) = self.login else {
            return Err(fail(
                LiveOutcome::Unauthorized,
                "the registry requires a login and the registry has no credentials",
            ));
        };
        match challenge {
            Challenge::Basic => {
                let checked = self
                    .send(reqwest::Method::GET, &format!("{base}/v2/"), &Auth::Basic)
                    .await?;
                match checked.status() {
                    status if status.is_success() => Ok(Auth::Basic),
                    StatusCode::UNAUTHORIZED => Err(fail(
                        LiveOutcome::Unauthorized,
                        format!("{} refused the login of {:?}", self.server, login.username),
                    )),
                    status => Err(fail(
                        LiveOutcome::ProtocolError,
                        format!("GET /v2/ with the login answered {status}"),
                    )),
                }
            }
            Challenge::Bearer { realm, service } => {
                let realm = url::Url::parse(&realm)
                    .map_err(|_| fail(LiveOutcome::ProtocolError, "the Bearer challenge's realm is not a URL"))?;
                if realm.scheme() != "https" && !realm.host_str().is_some_and(is_loopback_host) {
                    return Err(fail(
                        LiveOutcome::ProtocolError,
                        "the Bearer challenge's realm is not https; the credentials were not sent",
                    ));
                }
                self.token(realm, service.as_deref(), image).await.map(Auth::Bearer)
            }
        }
    }

    async fn token(
        &self,
        mut realm: url::Url,
        service: Option<&str>,
        image: Option<&ImageProbe>,
    ) -> Result<String, Failure> {
        {
            let mut query = realm.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            if let Some(image) = image {
                query.append_pair("scope", &format!("repository:{}:pull", image.repository));
            }
        }
        let answer = self.send(reqwest::Method::GET, realm.as_str(), &Auth::Basic).await?;
        let status = answer.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(fail(
                LiveOutcome::Unauthorized,
                format!("the token service refused the login ({status})"),
            ));
        }
        if !status.is_success() {
            return Err(fail(
                LiveOutcome::ProtocolError,
                format!("the token service answered {status}"),
            ));
        }
        let body = bounded_body(answer).await?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| fail(LiveOutcome::ProtocolError, "the token service's answer is not JSON"))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| fail(LiveOutcome::ProtocolError, "the token service's answer has no token"))
    }

    async fn manifest(&self, base: &str, auth: &Auth, image: &ImageProbe) -> Result<Found, Failure> {
        let url = format!("{base}/v2/{}/manifests/{}", image.repository, image.reference);
        let answer = self.send(reqwest::Method::HEAD, &url, auth).await?;
        let status = answer.status();
        let name = format!("{}:{}", image.repository, image.reference);
        match status {
            status if status.is_success() => {
                let digest = answer
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(Found {
                    message: format!("logged in; {name} can be pulled"),
                    digest,
                })
            }
            StatusCode::NOT_FOUND => Err(fail(LiveOutcome::NotFound, format!("{name} does not exist"))),
            StatusCode::FORBIDDEN => Err(fail(
                LiveOutcome::NoAccess,
                format!("logged in, but not allowed to pull {}", image.repository),
            )),
            // Distribution answers a repository the token does not cover
            // with 401 (insufficient_scope) rather than 403; with a login
            // that worked that is "no access" (or no such repository: the
            // registry does not say which).
            StatusCode::UNAUTHORIZED if !matches!(auth, Auth::None) => Err(fail(
                LiveOutcome::NoAccess,
                format!(
                    "logged in, but the registry refused {} (no pull access, or no such repository)",
                    image.repository
                ),
            )),
            StatusCode::UNAUTHORIZED => Err(fail(
                LiveOutcome::Unauthorized,
                format!("{} needs a login to pull {}", self.server, image.repository),
            )),
            status => Err(fail(
                LiveOutcome::ProtocolError,
                format!("HEAD of the manifest answered {status}"),
            )),
        }
    }

    /// One request, following redirects only to the registry's host or the
    /// same host as the request, with the login sent only to those.
    async fn send(&self, method: reqwest::Method, url: &str, auth: &Auth) -> Result<Response, Failure> {
        let mut url = url::Url::parse(url).map_err(|_| fail(LiveOutcome::ProtocolError, "not a valid URL"))?;
        let allowed = url.host_str().map(str::to_owned);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.client.request(method.clone(), url.clone());
            if method == reqwest::Method::HEAD {
                request = request.header(ACCEPT, MANIFEST_TYPES);
            }
            request = match (auth, self.login) {
                (Auth::Basic, Some(login)) => request.basic_auth(&login.username, Some(login.password.expose_secret())),
                (Auth::Bearer(token), _) => request.header(AUTHORIZATION, format!("Bearer {token}")),
                _ => request,
            };
            let response = request.send().await.map_err(|error| classify(&error))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or_else(|| fail(LiveOutcome::ProtocolError, "a redirect without a usable Location"))?;
            if next.host_str().map(str::to_owned) != allowed && next.host_str() != self.server.split(':').next() {
                return Err(fail(
                    LiveOutcome::ProtocolError,
                    format!(
                        "redirected to another host ({}); not followed",
                        next.host_str().unwrap_or("?")
                    ),
                ));
            }
            url = next;
        }
        Err(fail(LiveOutcome::ProtocolError, "too many redirects"))
    }
}

/// Reads at most [`MAX_BODY`] bytes of a body.
async fn bounded_body(mut response: Response) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| classify(&error))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(fail(
                LiveOutcome::ProtocolError,
                format!("an answer larger than {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport failure as an outcome: certificate problems are TLS errors,
/// a peer that does not speak TLS a protocol error, the rest unreachable.
fn classify(error: &reqwest::Error) -> Failure {
    let mut source = error.source();
    while let Some(cause) = source {
        // An `io::Error`'s `source()` skips the error it wraps: look inside.
        let mut inner: &(dyn std::error::Error + 'static) = cause;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            inner = wrapped;
        }
        let tls = inner.downcast_ref::<rustls::Error>();
        if let Some(tls) = tls {
            return tls_failure(tls);
        }
        source = cause.source();
    }
    if error.is_timeout() {
        fail(LiveOutcome::Unreachable, "the registry did not answer in time")
    } else if error.is_connect() {
        fail(
            LiveOutcome::Unreachable,
            "the registry cannot be reached (connection failed)",
        )
    } else {
        fail(LiveOutcome::ProtocolError, "the registry's answer is not valid HTTP")
    }
}

fn tls_failure(error: &rustls::Error) -> Failure {
    match error {
        rustls::Error::InvalidCertificate(reason) => fail(
            LiveOutcome::TlsError,
            format!("the registry's certificate is not trusted: {reason:?}"),
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            fail(LiveOutcome::ProtocolError, "the registry does not speak TLS")
        }
        other => fail(LiveOutcome::TlsError, format!("TLS failed: {other}")),
    }
}

/// The challenge of a `401`.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// Whether a `WWW-Authenticate` value holds a usable challenge (Bearer with
/// a realm, or Basic): the challenge parser's entry for the fuzz target in
/// `fuzz/`. Never panics, whatever the value.
#[doc(hidden)]
pub fn is_usable_challenge(value: &str) -> bool {
    parse_challenge(value).is_ok()
}

/// The first usable challenge of a `WWW-Authenticate` value (RFC 7235,
/// parsed by `http-auth`): Bearer with a realm, or Basic.
fn parse_challenge(value: &str) -> Result<Challenge, Failure> {
    let malformed = || {
        fail(
            LiveOutcome::ProtocolError,
            "the registry's WWW-Authenticate challenge is malformed",
        )
    };
    if value.trim().is_empty() {
        return Err(fail(
            LiveOutcome::ProtocolError,
            "the registry answered 401 without a WWW-Authenticate challenge",
        ));
    }
    let mut basic = false;
    for challenge in http_auth::parser::ChallengeParser::new(value) {
        let challenge = challenge.map_err(|_| malformed())?;
        if challenge.scheme.eq_ignore_ascii_case("bearer") {
            let param = |name: &str| {
                challenge
                    .params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.to_unescaped())
            };
            let realm = param("realm").filter(|realm| !realm.is_empty()).ok_or_else(malformed)?;
            return Ok(Challenge::Bearer {
                realm,
                service: param("service"),
            });
        }
        basic |= challenge.scheme.eq_ignore_ascii_case("basic");
    }
    if basic {
        Ok(Challenge::Basic)
    } else {
        Err(fail(
            LiveOutcome::ProtocolError,
            "the registry's challenge is neither Basic nor Bearer",
        ))
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `server` (`host[:port]`) is a loopback address.
fn is_loopback(server: &str) -> bool {
    let host = match server.rsplit_once(':') {
        // `[::1]:5000`, `127.0.0.1:5000`, `localhost:5000`
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => server,
    };
    is_loopback_host(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(parse_challenge(r#"Basic realm="registry""#).unwrap(), Challenge::Basic);
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#)
                .unwrap(),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            }
        );
        // Bearer is preferred whatever the order.
        assert!(matches!(
            parse_challenge(r#"Basic realm="r", Bearer realm="https://a/t""#).unwrap(),
            Challenge::Bearer { .. }
        ));
    }

    #[test]
    fn bad_challenges_are_protocol_errors() {
        for value in [
            "",
            "   ",
            "Bearer",
            r#"Bearer service="x""#,
            r#"Negotiate abc"#,
            "Bearer realm=\"unterminated",
        ] {
            let failure = parse_challenge(value).unwrap_err();
            assert_eq!(failure.outcome, LiveOutcome::ProtocolError, "{value:?}: {failure:?}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A quoted-string or token value, with the characters registries
        /// and attackers put in them.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{0,40}",
                "\"[^\"\\\\]{0,40}\"",
                any::<String>(),
            ]
        }

        fn challenge() -> impl Strategy<Value = String> {
            let scheme = prop_oneof![
                Just("Bearer".to_owned()),
                Just("bearer".to_owned()),
                Just("Basic".to_owned()),
                "[A-Za-z]{1,10}"
            ];
            let param = ("[A-Za-z]{1,8}", value()).prop_map(|(k, v)| format!("{k}={v}"));
            (scheme, proptest::collection::vec(param, 0..5))
                .prop_map(|(scheme, params)| format!("{scheme} {}", params.join(",")))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any header value is an answer: a challenge or a protocol
            /// error, never a panic; a Bearer answer always has a realm.
            #[test]
            fn any_value_is_a_challenge_or_a_protocol_error(value in any::<String>()) {
                match parse_challenge(&value) {
                    Ok(Challenge::Bearer { realm, .. }) => prop_assert!(!realm.is_empty()),
                    Ok(Challenge::Basic) => {}
                    Err(failure) => prop_assert_eq!(failure.outcome, LiveOutcome::ProtocolError),
                }
            }

            #[test]
            fn challenge_lists_are_answered_without_panics(list in proptest::collection::vec(challenge(), 1..4)) {
                let value = list.join(", ");
                match parse_challenge(&value) {
                    Ok(Challenge::Bearer { realm, .. }) => {
                        prop_assert!(!realm.is_empty());
                        prop_assert!(value.to_ascii_lowercase().contains("bearer"));
                    }
                    Ok(Challenge::Basic) => prop_assert!(value.to_ascii_lowercase().contains("basic")),
                    Err(failure) => prop_assert_eq!(failure.outcome, LiveOutcome::ProtocolError),
                }
            }

            /// A well-formed Bearer challenge gives back its realm and
            /// service, unescaped, whatever the parameters' order and case.
            #[test]
            fn bearer_realm_and_service_round_trip(
                realm in "[A-Za-z0-9:/._-]{1,60}",
                service in "[A-Za-z0-9._-]{1,30}",
                scope in "[a-z0-9/:,_-]{0,30}",
                upper in any::<bool>(),
                service_first in any::<bool>(),
            ) {
                let realm_param = format!("{}=\"{realm}\"", if upper { "Realm" } else { "realm" });
                let service_param = format!("service=\"{service}\"");
                let params = if service_first {
                    [service_param, realm_param]
                } else {
                    [realm_param, service_param]
                };
                let value = format!("Bearer {},scope=\"{scope}\"", params.join(","));
                prop_assert_eq!(
                    parse_challenge(&value).map_err(|f| f.message),
                    Ok(Challenge::Bearer { realm, service: Some(service) })
                );
            }
        }
    }

    #[test]
    fn loopback_servers() {
        for server in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.0.0.2",
            "localhost",
        ] {
            assert!(is_loopback(server), "{server}");
        }
        for server in ["ghcr.io", "10.0.0.1:5000", "registry.local:443", "[2001:db8::1]:5000"] {
            assert!(!is_loopback(server), "{server}");
        }
    }
}
