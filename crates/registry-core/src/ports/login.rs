//! The login port: stored credentials become a docker login at pull time.

use std::fmt;

use async_trait::async_trait;

use crate::credentials::Credentials;
use crate::login::DockerLogin;
use crate::registry::Registry;

/// Why credentials give no login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The kind needs a token exchange with its provider (ECR) and no
    /// provider that performs it is configured.
    #[error("{0} credentials need a token exchange with the provider, which this server does not perform")]
    NeedsTokenExchange(&'static str),
    /// Public registries have no login.
    #[error("public registries have no login")]
    Public,
    /// The provider refused the stored credentials (wrong or revoked keys,
    /// missing permission). Never carries a secret.
    #[error("{provider} refused the credentials of registry {registry}: {detail}")]
    Refused {
        provider: &'static str,
        registry: String,
        detail: String,
    },
    /// The image's host is not one the credentials can log in to.
    #[error("registry {registry} cannot log in to {host:?}: {detail}")]
    WrongHost {
        registry: String,
        host: String,
        detail: String,
    },
    /// The provider could not be reached or failed; worth retrying.
    #[error("the token exchange of registry {registry} failed: {detail}")]
    Unavailable { registry: String, detail: String },
}

/// Who a login is handed to. Google keys log in differently for each
/// ([`crate::GoogleLogin::uses_access_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginUse {
    /// A Kubernetes pull Secret, which the sync loop refreshes before the
    /// login expires.
    PullSecret,
    /// A Docker engine (Swarm service, Compose pull).
    Engine,
    /// A deployer calling `ResolvePullCredentials`.
    Deployer,
    /// A live connection test.
    LiveTest,
}

/// Turns stored credentials into a docker login for an image host: static
/// kinds directly, token kinds (ECR, Google access tokens) through their
/// provider.
#[async_trait]
pub trait LoginProvider: Send + Sync + fmt::Debug + 'static {
    /// The login of `registry`'s `credentials` (its current revision) for
    /// `host`, the image's host (or the registry's server), to hand to
    /// `consumer`.
    async fn login(
        &self,
        registry: &Registry,
        credentials: &Credentials,
        host: &str,
        consumer: LoginUse,
    ) -> Result<DockerLogin, LoginError>;
}

/// The image a live test checks pull access to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProbe {
    /// The repository on the registry, e.g. `myorg/api`.
    pub repository: String,
    /// A tag, or a `sha256:` digest.
    pub reference: String,
}

/// What a live connection test found. These are answers, not errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveOutcome {
    Ok,
    /// The registry refused the login.
    Unauthorized,
    /// Logged in, but not allowed to pull the image's repository.
    NoAccess,
    /// No such repository or tag.
    NotFound,
    /// DNS, connect or the deadline.
    Unreachable,
    /// The registry's certificate is not trusted, or TLS failed.
    TlsError,
    /// The registry's answers do not follow the registry v2 protocol.
    ProtocolError,
}

impl LiveOutcome {
    /// The name in audit details and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unauthorized => "unauthorized",
            Self::NoAccess => "no_access",
            Self::NotFound => "not_found",
            Self::Unreachable => "unreachable",
            Self::TlsError => "tls_error",
            Self::ProtocolError => "protocol_error",
        }
    }
}

/// The answer of a live test: its outcome, a short message without any
/// secret, how long it took, and the manifest's digest when one was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveReport {
    pub outcome: LiveOutcome,
    pub message: String,
    pub elapsed: std::time::Duration,
    pub digest: Option<String>,
}

/// Logs in to a registry over the registry v2 protocol and, given an
/// image, checks that its manifest can be pulled.
#[async_trait]
pub trait RegistryProbe: Send + Sync + fmt::Debug + 'static {
    /// Tests `login` (`None`: anonymous) against `server` (`host[:port]`).
    async fn probe(&self, server: &str, login: Option<&DockerLogin>, image: Option<&ImageProbe>) -> LiveReport {
        self.probe_trusting(server, login, image, None).await
    }

    /// [`Self::probe`], trusting the PEM certificates of `ca_bundle` for this
    /// registry besides the authorities the probe trusts anyway.
    async fn probe_trusting(
        &self,
        server: &str,
        login: Option<&DockerLogin>,
        image: Option<&ImageProbe>,
        ca_bundle: Option<&str>,
    ) -> LiveReport;
}
