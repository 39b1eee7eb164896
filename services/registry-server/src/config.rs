//! Configuration in layers: defaults, a TOML file, `REGISTRY_` environment
//! variables (`__` separates nested keys: `REGISTRY_AUTH__MODE=jwt`), then
//! command-line flags. Validated before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC listener.
    pub listen: SocketAddr,
    /// Where the embedded default keeps its SQLite database and generated key.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// A file of base64 master keys, one per line, the first one primary.
    pub master_key_file: Option<PathBuf>,
    /// The same keys comma-separated (usually from `REGISTRY_MASTER_KEYS`).
    pub master_keys: Option<String>,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("master_key_file", &self.master_key_file)
            .field("master_keys", &self.master_keys.as_ref().map(|_| "[REDACTED]"))
            .field("auth", &self.auth)
            .field("log", &self.log)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("registry-data"),
            database_url: None,
            master_key_file: None,
            master_keys: None,
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Loopback only; the principal comes from `x-user`/`x-org`/`x-roles`.
    Development,
    /// Bearer JWTs verified against the configured keys.
    Jwt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Development mode: the subject when `x-user` is absent.
    pub dev_user: String,
    /// Development mode: the organization when `x-org` is absent.
    pub dev_org: String,
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Development,
            dev_user: "developer".into(),
            dev_org: "default".into(),
            jwt: JwtConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Required `aud` claim.
    pub audience: Option<String>,
    /// A file holding a shared HMAC secret (HS256/384/512).
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC or Ed25519).
    pub public_key_files: Vec<PathBuf>,
    /// The claim naming the caller's organization.
    pub organization_claim: String,
    /// The claim listing the caller's roles.
    pub roles_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            hmac_secret_file: None,
            public_key_files: Vec::new(),
            organization_claim: "org".into(),
            roles_claim: "roles".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Deadline of one request, server side.
    pub request_timeout_ms: u64,
    /// Largest request message.
    pub max_message_bytes: usize,
    /// Requests in flight per connection.
    pub concurrency_per_connection: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 30_000,
            max_message_bytes: 256 * 1024,
            concurrency_per_connection: 256,
        }
    }
}

/// Command-line overrides, the last layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub auth_mode: Option<AuthMode>,
    pub log_format: Option<LogFormat>,
}

impl Overrides {
    fn apply(&self, mut figment: Figment) -> Figment {
        fn set<T: Serialize>(figment: Figment, key: &str, value: Option<&T>) -> Figment {
            match value {
                Some(value) => figment.merge(Serialized::default(key, value)),
                None => figment,
            }
        }
        figment = set(figment, "listen", self.listen.as_ref());
        figment = set(figment, "data_dir", self.data_dir.as_ref());
        figment = set(figment, "database_url", self.database_url.as_ref());
        figment = set(figment, "master_key_file", self.master_key_file.as_ref());
        figment = set(figment, "auth.mode", self.auth_mode.as_ref());
        set(figment, "log.format", self.log_format.as_ref())
    }
}

/// Top-level keys the environment may set (`REGISTRY_<KEY>`); other
/// `REGISTRY_*` variables belong to other tools and are ignored.
const ENV_KEYS: [&str; 8] = [
    "listen",
    "data_dir",
    "database_url",
    "master_key_file",
    "master_keys",
    "auth",
    "log",
    "limits",
];

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults <- `file` <- `REGISTRY_*` environment <- `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let env = Env::prefixed("REGISTRY_")
            .split("__")
            .filter(|key| ENV_KEYS.iter().any(|k| key.as_str().split('.').next() == Some(*k)));
        let config: Config = overrides.apply(figment.merge(env)).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: combinations and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.auth.mode == AuthMode::Development && !self.listen.ip().is_loopback() {
            return invalid(format!(
                "auth.mode = \"development\" trusts x-user/x-org metadata and may only listen on loopback, not {}; \
                 configure auth.mode = \"jwt\" to listen elsewhere",
                self.listen
            ));
        }
        if self.auth.mode == AuthMode::Jwt
            && self.auth.jwt.hmac_secret_file.is_none()
            && self.auth.jwt.public_key_files.is_empty()
        {
            return invalid("auth.mode = \"jwt\" needs auth.jwt.hmac_secret_file or auth.jwt.public_key_files".into());
        }
        if let Some(url) = &self.database_url
            && !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|s| url.starts_with(s))
        {
            return invalid(format!(
                "database_url must start with sqlite: or postgres:, not {}",
                redact_url(url)
            ));
        }
        if self.master_keys.is_some() && self.master_key_file.is_some() {
            return invalid("set master_keys (REGISTRY_MASTER_KEYS) or master_key_file, not both".into());
        }
        let limits = &self.limits;
        if limits.request_timeout_ms == 0 || limits.max_message_bytes < 1024 || limits.concurrency_per_connection == 0 {
            return invalid(
                "limits: request_timeout_ms and concurrency_per_connection must be positive, \
                 max_message_bytes at least 1024"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_default() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.auth.mode, AuthMode::Development);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:6000\"\ndata_dir = \"/var/lib/registry\"\n[limits]\nrequest_timeout_ms = 5000\n",
        )
        .unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let config = Config::load(Some(&file), &overrides).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/registry"));
        assert_eq!(config.limits.request_timeout_ms, 5000);
        assert_eq!(config.limits.max_message_bytes, 256 * 1024);
    }

    #[test]
    fn typos_and_bad_combinations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:6000\"\n").unwrap();
        let err = Config::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");

        let public = Config {
            listen: "0.0.0.0:50051".parse().unwrap(),
            ..Config::default()
        };
        assert!(public.validate().unwrap_err().to_string().contains("loopback"));

        let mut jwt = Config::default();
        jwt.auth.mode = AuthMode::Jwt;
        assert!(jwt.validate().unwrap_err().to_string().contains("hmac_secret_file"));

        let mysql = Config {
            database_url: Some("mysql://root:pw@db/x".into()),
            ..Config::default()
        };
        let err = mysql.validate().unwrap_err().to_string();
        assert!(err.contains("database_url") && !err.contains("pw@"), "{err}");
    }

    #[test]
    fn debug_hides_secrets() {
        let config = Config {
            database_url: Some("postgres://svc:s3cr3t@db/registry".into()),
            master_keys: Some("c2VjcmV0".into()),
            ..Config::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t") && !debug.contains("c2VjcmV0"), "{debug}");
    }
}
