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

/// Turns stored credentials into a docker login for an image host: static
/// kinds directly, token kinds (ECR) through their provider.
#[async_trait]
pub trait LoginProvider: Send + Sync + fmt::Debug + 'static {
    /// The login of `registry`'s `credentials` (its current revision) for
    /// `host`, the image's host (or the registry's server).
    async fn login(
        &self,
        registry: &Registry,
        credentials: &Credentials,
        host: &str,
    ) -> Result<DockerLogin, LoginError>;
}
