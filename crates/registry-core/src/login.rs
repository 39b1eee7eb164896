//! Docker logins: what credentials become at pull time, and the two wire forms
//! orchestrators take them in (`.dockerconfigjson`, `X-Registry-Auth`).

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::credentials::Credentials;
use crate::ports::login::{LoginError, LoginProvider, LoginUse};
use crate::reference;
use crate::registry::{Registry, Timestamp};

/// A docker login for one registry host.
#[derive(Clone)]
pub struct DockerLogin {
    /// The registry host, with `:port` when there is one (`docker.io` for
    /// Docker Hub).
    pub server: String,
    pub username: String,
    pub password: SecretString,
    /// When the login stops working; `None` for static credentials.
    pub expires_at: Option<Timestamp>,
    /// Why the provider could not refresh it: this is a cached token, still
    /// valid until `expires_at`. Never a secret.
    pub refresh_failed: Option<String>,
}

impl fmt::Debug for DockerLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerLogin")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("refresh_failed", &self.refresh_failed)
            .finish()
    }
}

/// The logins that need no provider: every static kind, and Google keys as
/// `_json_key` where their mode asks for no access token; ECR and Google
/// access tokens answer [`LoginError::NeedsTokenExchange`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StaticLogins;

#[async_trait]
impl LoginProvider for StaticLogins {
    async fn login(
        &self,
        _registry: &Registry,
        credentials: &Credentials,
        host: &str,
        consumer: LoginUse,
    ) -> Result<DockerLogin, LoginError> {
        match credentials {
            Credentials::Gcr { login, .. } | Credentials::Gar { login, .. } if login.uses_access_token(consumer) => {
                Err(LoginError::NeedsTokenExchange("Google"))
            }
            _ => DockerLogin::from_credentials(credentials, host),
        }
    }
}

impl DockerLogin {
    /// The static docker login of `credentials` for `host` (the image's host,
    /// which matters for registries with several hosts, such as GCR).
    pub fn from_credentials(credentials: &Credentials, host: &str) -> Result<Self, LoginError> {
        let login = |username: &str, password: &SecretString| Self {
            server: normalise_host(host),
            username: username.to_owned(),
            password: password.clone(),
            expires_at: None,
            refresh_failed: None,
        };
        match credentials {
            Credentials::Ghcr { username, token } | Credentials::Quay { username, token } => Ok(login(username, token)),
            Credentials::Docker { username, password }
            | Credentials::Acr { username, password, .. }
            | Credentials::Custom { username, password, .. } => Ok(login(username, password)),
            Credentials::Gcr {
                service_account_key, ..
            }
            | Credentials::Gar {
                service_account_key, ..
            } => Ok(login("_json_key", service_account_key)),
            Credentials::Ecr { .. } => Err(LoginError::NeedsTokenExchange("ECR")),
            Credentials::Public => Err(LoginError::Public),
        }
    }

    /// When a pull Secret holding this login is to be re-applied: halfway
    /// through its remaining lifetime (as Amazon's credential helper reuses
    /// tokens); `None` for static logins.
    pub fn refresh_at(&self, now: Timestamp) -> Option<Timestamp> {
        self.expires_at
            .map(|expires| Timestamp(now.0.saturating_add(expires.0.saturating_sub(now.0).max(0) / 2)))
    }

    /// The key of this login in a Docker config (`https://index.docker.io/v1/`
    /// for Docker Hub, the host otherwise).
    pub fn config_key(&self) -> &str {
        reference::docker_config_key(&self.server)
    }

    /// `.dockerconfigjson`: `{"auths": {<key>: {"username", "password", "auth"}}}`
    /// with `auth` = base64(`username:password`).
    pub fn docker_config_json(&self) -> Zeroizing<Vec<u8>> {
        #[derive(Serialize)]
        struct Entry<'a> {
            username: &'a str,
            password: &'a str,
            auth: &'a str,
        }
        #[derive(Serialize)]
        struct Config<'a> {
            auths: std::collections::BTreeMap<&'a str, Entry<'a>>,
        }
        let password = self.password.expose_secret();
        let pair = Zeroizing::new(format!("{}:{password}", self.username));
        let auth = Zeroizing::new(STANDARD.encode(pair.as_bytes()));
        let config = Config {
            auths: [(
                self.config_key(),
                Entry {
                    username: &self.username,
                    password,
                    auth: &auth,
                },
            )]
            .into_iter()
            .collect(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(128 + 2 * password.len()));
        // Serialising borrowed strings into a Vec cannot fail.
        serde_json::to_writer(&mut *out, &config).unwrap_or_default();
        out
    }

    /// The Docker Engine API `X-Registry-Auth` value: URL-safe base64 of
    /// `{"username", "password", "serveraddress"}`.
    pub fn registry_auth(&self) -> Zeroizing<String> {
        #[derive(Serialize)]
        struct Auth<'a> {
            username: &'a str,
            password: &'a str,
            serveraddress: &'a str,
        }
        let auth = Auth {
            username: &self.username,
            password: self.password.expose_secret(),
            serveraddress: self.config_key(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&auth).unwrap_or_default());
        Zeroizing::new(URL_SAFE.encode(&*json))
    }
}

/// Docker Hub's aliases become `docker.io`; other hosts are kept, lowercased.
fn normalise_host(host: &str) -> String {
    if reference::is_docker_hub_host(host) {
        "docker.io".to_owned()
    } else {
        host.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ghcr() -> Credentials {
        Credentials::Ghcr {
            username: "myorg".into(),
            token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
        }
    }

    #[test]
    fn docker_config_json_has_the_exact_shape() {
        let login = DockerLogin::from_credentials(&ghcr(), "ghcr.io").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&login.docker_config_json()).unwrap();
        let expected_auth = STANDARD.encode("myorg:ghp_16C7e42F292c6912E7710c838347Ae178B4a");
        assert_eq!(
            json,
            serde_json::json!({"auths": {"ghcr.io": {
                "username": "myorg",
                "password": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                "auth": expected_auth,
            }}})
        );
    }

    #[test]
    fn docker_hub_uses_the_index_server_key() {
        let creds = Credentials::Docker {
            username: "myuser".into(),
            password: "dckr_pat_AbCdEfGhIjKlMnOpQrStUvWxYz0".into(),
        };
        let login = DockerLogin::from_credentials(&creds, "registry-1.docker.io").unwrap();
        assert_eq!(login.server, "docker.io");
        let json: serde_json::Value = serde_json::from_slice(&login.docker_config_json()).unwrap();
        assert!(json["auths"]["https://index.docker.io/v1/"].is_object());
    }

    #[test]
    fn registry_auth_is_url_safe_base64_json() {
        let creds = Credentials::Custom {
            url: "http://127.0.0.1:5000".into(),
            username: "deploy".into(),
            password: "p?>>?secret".into(),
            ca_bundle: String::new(),
        };
        let login = DockerLogin::from_credentials(&creds, "127.0.0.1:5000").unwrap();
        let header = login.registry_auth();
        assert!(!header.contains('+') && !header.contains('/'));
        let json: serde_json::Value = serde_json::from_slice(&URL_SAFE.decode(header.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"username": "deploy", "password": "p?>>?secret", "serveraddress": "127.0.0.1:5000"})
        );
    }

    #[test]
    fn google_keys_log_in_as_json_key_and_ecr_needs_an_exchange() {
        let gcr = Credentials::Gcr {
            service_account_key: "{\"type\":\"service_account\"}".into(),
            login: crate::GoogleLogin::JsonKey,
        };
        let login = DockerLogin::from_credentials(&gcr, "eu.gcr.io").unwrap();
        assert_eq!(
            (login.server.as_str(), login.username.as_str()),
            ("eu.gcr.io", "_json_key")
        );
        let ecr = Credentials::Ecr {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            session_token: None,
            server_identity: false,
        };
        assert_eq!(
            DockerLogin::from_credentials(&ecr, "123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap_err(),
            LoginError::NeedsTokenExchange("ECR")
        );
        assert!(!format!("{login:?}").contains("service_account"));
    }

    #[tokio::test]
    async fn without_a_provider_google_access_tokens_need_an_exchange() {
        let registry = Registry {
            id: crate::RegistryId::parse("reg-abc123").unwrap(),
            organization: "acme".into(),
            name: "x".into(),
            kind: crate::RegistryKind::Gcr,
            server: "gcr.io".into(),
            hints: Vec::new(),
            created_by: "alice".into(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            etag: String::new(),
            credential_revision: 1,
        };
        let gcr = Credentials::Gcr {
            service_account_key: "{}".into(),
            login: crate::GoogleLogin::Default,
        };
        assert_eq!(
            StaticLogins
                .login(&registry, &gcr, "gcr.io", LoginUse::PullSecret)
                .await
                .unwrap_err(),
            LoginError::NeedsTokenExchange("Google")
        );
        let engine = StaticLogins
            .login(&registry, &gcr, "gcr.io", LoginUse::Engine)
            .await
            .unwrap();
        assert_eq!(engine.username, "_json_key");
    }

    #[tokio::test]
    async fn static_logins_have_no_expiry_and_refresh_at_is_half_the_remaining_lifetime() {
        let registry = Registry {
            id: crate::RegistryId::parse("reg-abc123").unwrap(),
            organization: "acme".into(),
            name: "x".into(),
            kind: crate::RegistryKind::Ghcr,
            server: "ghcr.io".into(),
            hints: Vec::new(),
            created_by: "alice".into(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            etag: String::new(),
            credential_revision: 1,
        };
        let mut login = StaticLogins
            .login(&registry, &ghcr(), "ghcr.io", LoginUse::PullSecret)
            .await
            .unwrap();
        assert_eq!(login.refresh_at(Timestamp(10)), None);
        login.expires_at = Some(Timestamp(110));
        assert_eq!(login.refresh_at(Timestamp(10)), Some(Timestamp(60)));
        let ecr = Credentials::Ecr {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            session_token: None,
            server_identity: false,
        };
        assert_eq!(
            StaticLogins
                .login(&registry, &ecr, "*.dkr.ecr.us-east-1.amazonaws.com", LoginUse::Deployer)
                .await
                .unwrap_err(),
            LoginError::NeedsTokenExchange("ECR")
        );
    }
}
