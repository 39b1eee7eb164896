//! [`DockerTarget`]: one Docker engine, reached through an [`Endpoint`], with
//! the API version negotiated with the daemon, implementing the
//! [`DockerEngine`] port (engine check, authenticated pull).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::LocalNodeState;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::{API_DEFAULT_VERSION, BollardRequest, ClientVersion, Docker};
use futures::StreamExt;
use http::HeaderValue;
use http::header::HeaderName;
use http::uri::{PathAndQuery, Uri};
use registry_core::login::DockerLogin;
use registry_core::ports::orchestrators::{DockerEngine, EngineRole, SecretVersion, TargetError};
use registry_core::reference::ImageReference;
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::errors;
use crate::tls::EngineTls;

/// How long one Engine API request may take to answer (a pull's answer is
/// its first progress message), unless [`DockerTarget::with_request_timeout`]
/// says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole pull may take, unless [`DockerTarget::with_pull_timeout`]
/// says otherwise.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The port of a `tcp://` or `http://` endpoint that names none.
pub const DEFAULT_TCP_PORT: u16 = 2375;

/// The Engine API header that carries a registry login.
const REGISTRY_AUTH: HeaderName = HeaderName::from_static("x-registry-auth");

/// Where a Docker engine listens: `unix:///path/docker.sock`,
/// `tcp://host:port` (plain, or TLS when the target has [`EngineTls`]),
/// `http://host:port`, or `https://host:port` (TLS). Port 2375 when none is
/// given. SSH endpoints are not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URI as configured (trimmed), for messages.
    uri: String,
    transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    Unix(PathBuf),
    /// `host:port`, from `tcp://` or `http://`.
    Http(String),
    /// `host:port`, from `https://`: TLS only.
    Https(String),
}

impl Endpoint {
    /// Parses an endpoint URI; the error says which forms are accepted.
    pub fn parse(uri: &str) -> Result<Self, TargetError> {
        let uri = uri.trim();
        let invalid = |why: &str| TargetError::Other(format!("Docker endpoint {uri:?} is invalid: {why}"));
        if let Some(path) = uri.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(invalid(
                    "unix:// takes an absolute socket path, e.g. unix:///run/docker.sock",
                ));
            }
            return Ok(Self {
                uri: uri.to_owned(),
                transport: Transport::Unix(PathBuf::from(path)),
            });
        }
        for scheme in ["tcp://", "http://", "https://"] {
            let Some(rest) = uri.strip_prefix(scheme) else {
                continue;
            };
            if rest.contains('@') {
                // Never echo what could be a password.
                return Err(TargetError::Other(format!(
                    "a {scheme} Docker endpoint must not carry user information"
                )));
            }
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            if authority.is_empty() || authority.contains(['/', '?', '#']) {
                return Err(invalid("expected host:port with no path, e.g. tcp://127.0.0.1:2375"));
            }
            let authority = match port_of(authority) {
                Some(Ok(_)) => authority.to_owned(),
                Some(Err(())) => return Err(invalid("the port is not a number from 1 to 65535")),
                None => format!("{authority}:{DEFAULT_TCP_PORT}"),
            };
            let transport = if scheme == "https://" {
                Transport::Https(authority)
            } else {
                Transport::Http(authority)
            };
            return Ok(Self {
                uri: uri.to_owned(),
                transport,
            });
        }
        Err(invalid(
            "use unix:///path/docker.sock, tcp://host:port, http://host:port or https://host:port \
             (SSH endpoints are not supported)",
        ))
    }

    /// Whether the engine is on this machine: a unix socket, or a TCP
    /// endpoint whose host is `localhost` or a loopback address.
    pub fn is_local(&self) -> bool {
        let authority = match &self.transport {
            Transport::Unix(_) => return true,
            Transport::Http(authority) | Transport::Https(authority) => authority,
        };
        let host = match authority.rfind(']') {
            Some(end) => authority[..end].trim_start_matches('['),
            None => authority.rsplit_once(':').map_or(authority.as_str(), |(host, _)| host),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    }

    /// Whether the endpoint's scheme demands TLS (`https://`).
    pub fn requires_tls(&self) -> bool {
        matches!(self.transport, Transport::Https(_))
    }

    /// The socket path of a `unix://` endpoint.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Unix(path) => Some(path),
            Transport::Http(_) | Transport::Https(_) => None,
        }
    }

    /// The URI as configured.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

/// The port of `host:port` / `[v6]:port`: `None` when there is none,
/// `Some(Err)` when it is not a valid port.
fn port_of(authority: &str) -> Option<Result<u16, ()>> {
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority,
    };
    let (_, port) = after_host.rsplit_once(':')?;
    Some(port.parse::<u16>().ok().filter(|p| *p != 0).ok_or(()))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// A Docker engine serving a Swarm or Compose target.
///
/// Creating one does not connect: the first call connects, negotiates the
/// API version (the newest both bollard and the daemon speak) and keeps the
/// client; a failed connection is retried by the next call, so a target
/// whose engine is down at start-up reports
/// [`TargetError::Unreachable`] until it is up.
#[derive(Debug)]
pub struct DockerTarget {
    endpoint: Endpoint,
    request_timeout: Duration,
    pull_timeout: Duration,
    tls: Option<EngineTls>,
    client: OnceCell<Client>,
}

/// A connected client and the API version it negotiated.
#[derive(Debug)]
struct Client {
    /// Prefixes every request path with `/v<version>`.
    docker: Docker,
    version: ClientVersion,
}

impl DockerTarget {
    /// A target for the engine at `endpoint` (see [`Endpoint::parse`]).
    pub fn new(endpoint: &str) -> Result<Self, TargetError> {
        Ok(Self {
            endpoint: Endpoint::parse(endpoint)?,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            tls: None,
            client: OnceCell::new(),
        })
    }

    /// A target for a TCP engine over TLS (`tcp://` or `https://`).
    pub fn with_tls(endpoint: &str, tls: EngineTls) -> Result<Self, TargetError> {
        let mut target = Self::new(endpoint)?;
        if target.endpoint.socket_path().is_some() {
            return Err(TargetError::Other(format!(
                "Docker endpoint {} is a unix socket: TLS settings apply to tcp:// and https:// endpoints",
                target.endpoint
            )));
        }
        target.tls = Some(tls);
        Ok(target)
    }

    /// Sets how long one request may take to answer (whole seconds, at least 1).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// Sets how long a whole pull may take.
    #[must_use]
    pub fn with_pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The API version negotiated with the daemon (`1.41` for Docker 20.10),
    /// connecting if needed.
    pub async fn api_version(&self) -> Result<String, TargetError> {
        Ok(self.client().await?.version.to_string())
    }

    /// The connected bollard client, for what this crate does not wrap
    /// (tasks, containers, image removal). Its requests carry the negotiated
    /// API version.
    pub async fn docker(&self) -> Result<Docker, TargetError> {
        Ok(self.client().await?.docker.clone())
    }

    /// The client that sends `registry_auth` (an `X-Registry-Auth` value,
    /// used verbatim) with every request.
    pub(crate) async fn docker_with_registry_auth(&self, registry_auth: &str) -> Result<Docker, TargetError> {
        let client = self.client().await?;
        let mut header = HeaderValue::from_str(registry_auth).map_err(|_| {
            TargetError::Other("the registry auth is not a valid header value (expected URL-safe base64)".to_owned())
        })?;
        header.set_sensitive(true);
        Ok(client
            .docker
            .clone()
            .with_request_modifier(request_modifier(&client.version, Some(header))))
    }

    /// A failure of an engine request, as a [`TargetError`] naming the endpoint.
    pub(crate) fn engine_error(&self, action: &str, error: bollard::errors::Error) -> TargetError {
        errors::engine(&self.endpoint, self.request_timeout, action, error)
    }

    async fn client(&self) -> Result<&Client, TargetError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Client, TargetError> {
        let secs = self.request_timeout.as_secs().max(1);
        let connected = match &self.endpoint.transport {
            Transport::Unix(path) => Docker::connect_with_unix(&path.to_string_lossy(), secs, API_DEFAULT_VERSION),
            Transport::Http(authority) | Transport::Https(authority) => match &self.tls {
                Some(tls) => tls.connect(authority, secs),
                None if self.endpoint.requires_tls() => {
                    return Err(TargetError::Other(format!(
                        "Docker endpoint {} is https:// but the target has no TLS settings (tls_ca_file)",
                        self.endpoint
                    )));
                }
                None => Docker::connect_with_http(authority, secs, API_DEFAULT_VERSION),
            },
        };
        let docker = connected.map_err(|e| self.engine_error("connecting", e))?;
        // Lowers the client's version to the daemon's when that is older
        // (Docker 20.10: 1.41); never raises it above bollard's own.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| self.engine_error("negotiating the API version", e))?;
        let version = docker.client_version();
        tracing::debug!(endpoint = %self.endpoint, api_version = %version, "connected to the Docker engine");
        let docker = docker.with_request_modifier(request_modifier(&version, None));
        Ok(Client { docker, version })
    }

    async fn pull_with(&self, image: &ImageReference, registry_auth: Option<&str>) -> Result<String, TargetError> {
        let docker = self.docker().await?;
        // The login goes with the pull only.
        let puller = match registry_auth {
            Some(auth) => self.docker_with_registry_auth(auth).await?,
            None => docker.clone(),
        };
        let name = image.name();
        // A digest wins over a tag, as with `docker pull repo:tag@digest`.
        let reference = image.manifest_reference();
        let options = CreateImageOptionsBuilder::default()
            .from_image(&name)
            .tag(reference)
            .build();
        let pull = async {
            let mut progress = puller.create_image(Some(options), None, None);
            // The engine reports the manifest digest the pull resolved to.
            let mut reported = None;
            while let Some(message) = progress.next().await {
                if let Some(digest) = message?.status.as_deref().and_then(|s| s.strip_prefix("Digest: ")) {
                    reported = Some(digest.trim().to_owned());
                }
            }
            Ok::<_, bollard::errors::Error>(reported)
        };
        let reported = match tokio::time::timeout(self.pull_timeout, pull).await {
            Ok(outcome) => outcome
                .map_err(|e| errors::pull(&self.endpoint, self.request_timeout, image, registry_auth.is_some(), e))?,
            Err(_) => {
                return Err(TargetError::Unreachable(format!(
                    "the Docker engine at {} did not finish pulling {image} within {} s",
                    self.endpoint,
                    self.pull_timeout.as_secs()
                )));
            }
        };

        let local = match image.digest() {
            Some(digest) => format!("{name}@{digest}"),
            None => format!("{name}:{reference}"),
        };
        let inspected = docker
            .inspect_image(&local)
            .await
            .map_err(|e| errors::pull(&self.endpoint, self.request_timeout, image, registry_auth.is_some(), e))?;
        let digests = repository_digests(inspected.repo_digests.as_deref().unwrap_or_default(), &name);
        let chosen = [image.digest(), reported.as_deref()]
            .into_iter()
            .flatten()
            .find(|wanted| digests.iter().any(|d| d == wanted))
            .or_else(|| digests.first().map(String::as_str));
        match chosen {
            Some(digest) => {
                tracing::debug!(endpoint = %self.endpoint, %image, digest, "pulled");
                Ok(format!("{name}@{digest}"))
            }
            None => Err(TargetError::Other(format!(
                "{image} was pulled but the Docker engine at {} lists no repository digest for {name}",
                self.endpoint
            ))),
        }
    }
}

/// The digests of `repo_digests` (`repo@sha256:…`, Docker Hub names in their
/// short form) that belong to repository `name` (normalised, `host/path`).
fn repository_digests(repo_digests: &[String], name: &str) -> Vec<String> {
    repo_digests
        .iter()
        .filter_map(|entry| {
            let (repository, digest) = entry.rsplit_once('@')?;
            let parsed = ImageReference::parse(repository).ok()?;
            (parsed.name() == name).then(|| digest.to_owned())
        })
        .collect()
}

/// What every request of a client goes through: its path gets the
/// negotiated version (bollard sends none), and, for a client bound to a
/// login, the `X-Registry-Auth` header.
fn request_modifier(
    version: &ClientVersion,
    registry_auth: Option<HeaderValue>,
) -> impl Fn(BollardRequest) -> BollardRequest + Send + Sync + 'static {
    let prefix = format!("/v{version}");
    move |mut request| {
        if let Some(uri) = versioned(request.uri(), &prefix) {
            *request.uri_mut() = uri;
        }
        if let Some(auth) = &registry_auth {
            request.headers_mut().insert(REGISTRY_AUTH, auth.clone());
        }
        request
    }
}

/// `uri` with `prefix` (`/v1.41`) before its path, unless it has a version.
fn versioned(uri: &Uri, prefix: &str) -> Option<Uri> {
    let path_and_query = uri.path_and_query()?;
    if has_version(path_and_query.path()) {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(format!("{prefix}{path_and_query}")).ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether a request path starts with `/v<major>.<minor>/`.
fn has_version(path: &str) -> bool {
    let Some(segment) = path.strip_prefix("/v").and_then(|rest| rest.split('/').next()) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    segment
        .split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

#[async_trait]
impl DockerEngine for DockerTarget {
    async fn check(&self, role: EngineRole) -> Result<(), TargetError> {
        let docker = self.docker().await?;
        docker.ping().await.map_err(|e| self.engine_error("ping", e))?;
        if role == EngineRole::Standalone {
            return Ok(());
        }
        let info = docker.info().await.map_err(|e| self.engine_error("info", e))?;
        let swarm = info.swarm.unwrap_or_default();
        match (swarm.local_node_state, swarm.control_available) {
            (Some(LocalNodeState::ACTIVE), Some(true)) => Ok(()),
            (Some(LocalNodeState::ACTIVE), _) => Err(TargetError::Other(format!(
                "the Docker engine at {} is not a swarm manager: it is a swarm worker, and services are created \
                 on a manager",
                self.endpoint
            ))),
            (state, _) => {
                let state = state
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "inactive".to_owned());
                let error = swarm
                    .error
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                Err(TargetError::Other(format!(
                    "the Docker engine at {} is not a swarm manager: its swarm state is {state}{error}",
                    self.endpoint
                )))
            }
        }
    }

    async fn pull(&self, image: &ImageReference, login: Option<&DockerLogin>) -> Result<String, TargetError> {
        let Some(login) = login else {
            return self.pull_with(image, None).await;
        };
        let auth = login.registry_auth();
        self.pull_with(image, Some(&auth))
            .await
            .map_err(|e| errors::redact(e, &[login.password.expose_secret(), &auth]))
    }

    async fn refresh_service_login(&self, service: &str, login: &DockerLogin) -> Result<SecretVersion, TargetError> {
        let auth = login.registry_auth();
        self.update_service_login(service, &login.server, &auth)
            .await
            .map_err(|e| errors::redact(e, &[login.password.expose_secret(), &auth]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let unix = Endpoint::parse(" unix:///run/docker.sock ").unwrap();
        assert_eq!(unix.socket_path(), Some(Path::new("/run/docker.sock")));
        assert_eq!(unix.to_string(), "unix:///run/docker.sock");
        let cases = [
            ("tcp://127.0.0.1:2375", "127.0.0.1:2375"),
            ("http://127.0.0.1:2376/", "127.0.0.1:2376"),
            ("tcp://docker.internal", "docker.internal:2375"),
            ("tcp://[::1]", "[::1]:2375"),
            ("tcp://[::1]:4243", "[::1]:4243"),
        ];
        for (uri, authority) in cases {
            let endpoint = Endpoint::parse(uri).unwrap();
            assert_eq!(endpoint.transport, Transport::Http(authority.to_owned()), "{uri}");
            assert_eq!(endpoint.as_str(), uri);
            assert!(!endpoint.requires_tls());
        }
        let https = Endpoint::parse("https://docker.internal:2376").unwrap();
        assert_eq!(https.transport, Transport::Https("docker.internal:2376".to_owned()));
        assert!(https.requires_tls() && !https.is_local());
        for (uri, local) in [
            ("unix:///run/docker.sock", true),
            ("tcp://127.0.0.1:2375", true),
            ("tcp://127.8.0.1", true),
            ("tcp://LOCALHOST:2375", true),
            ("tcp://[::1]:2375", true),
            ("tcp://[::ffff:127.0.0.1]:2375", true),
            ("tcp://10.0.0.9:2375", false),
            ("tcp://docker.internal", false),
            ("tcp://[2001:db8::1]:2375", false),
        ] {
            assert_eq!(Endpoint::parse(uri).unwrap().is_local(), local, "{uri}");
        }
        for bad in [
            "unix://relative.sock",
            "unix://",
            "https://",
            "ssh://host",
            "npipe:////./pipe/docker_engine",
            "/run/docker.sock",
            "tcp://",
            "tcp://host:2375/path",
            "tcp://host:port",
            "tcp://host:0",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(TargetError::Other(_))),
                "{bad} should be refused"
            );
        }
        let err = Endpoint::parse("tcp://user:s3cret@host:2375").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn request_paths_get_the_negotiated_version() {
        let version = ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        let modify = request_modifier(&version, None);
        for (before, after) in [
            ("unix://2f72756e/_ping", "unix://2f72756e/v1.41/_ping"),
            (
                "http://127.0.0.1:2375/images/create?fromImage=a&tag=1",
                "http://127.0.0.1:2375/v1.41/images/create?fromImage=a&tag=1",
            ),
            ("http://127.0.0.1:2375/v1.40/info", "http://127.0.0.1:2375/v1.40/info"),
            ("http://127.0.0.1:2375/volumes", "http://127.0.0.1:2375/v1.41/volumes"),
        ] {
            let request = http::Request::builder()
                .uri(before)
                .body(bollard::body_full(Default::default()))
                .unwrap();
            let request = modify(request);
            assert_eq!(request.uri().to_string(), after);
            assert!(request.headers().get(REGISTRY_AUTH).is_none());
        }
        let modify = request_modifier(&version, Some(HeaderValue::from_static("eyJ1c2VybmFtZSI6InUifQ==")));
        let request = modify(
            http::Request::builder()
                .uri("http://127.0.0.1:2375/images/create")
                .body(bollard::body_full(Default::default()))
                .unwrap(),
        );
        assert_eq!(
            request.headers().get(REGISTRY_AUTH).unwrap(),
            "eyJ1c2VybmFtZSI6InUifQ=="
        );
    }

    #[test]
    fn repository_digests_match_the_normalised_name() {
        let digests = [
            "postgres@sha256:aaaa".to_owned(),
            "127.0.0.1:5000/test/busybox@sha256:bbbb".to_owned(),
            "127.0.0.1:5000/test/other@sha256:cccc".to_owned(),
            "garbage".to_owned(),
        ];
        assert_eq!(
            repository_digests(&digests, "docker.io/library/postgres"),
            ["sha256:aaaa"]
        );
        assert_eq!(
            repository_digests(&digests, "127.0.0.1:5000/test/busybox"),
            ["sha256:bbbb"]
        );
        assert!(repository_digests(&digests, "ghcr.io/o/app").is_empty());
    }
}
