//! Configuration in layers: defaults, a TOML file, `REGISTRY_` environment
//! variables (`__` separates nested keys: `REGISTRY_AUTH__MODE=jwt`), then
//! command-line flags. Validated before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use registry_core::targets::{NamespaceTemplate, Organizations};
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC listener.
    pub listen: SocketAddr,
    /// Where the embedded default keeps its SQLite database and generated key.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// When a SQLite commit (an audit event among them) is durable.
    pub sqlite_synchronous: SqliteSynchronous,
    /// A file of base64 master keys, one per line, the first one primary.
    pub master_key_file: Option<PathBuf>,
    /// The same keys comma-separated (usually from `REGISTRY_MASTER_KEYS`).
    pub master_keys: Option<String>,
    /// TLS (and mutual TLS) on the gRPC listener.
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    /// The pull Secret sync loop (rotation fan-out, deletion).
    pub sync: SyncConfig,
    /// Amazon ECR token exchanges.
    pub ecr: EcrConfig,
    /// Google OAuth token exchanges.
    pub google: GoogleConfig,
    /// Live connection tests (`TEST_MODE_LIVE`).
    pub live_test: LiveTestConfig,
    /// Orchestrator targets by name, as `PrepareDeployment` names them.
    pub targets: BTreeMap<String, TargetConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("master_key_file", &self.master_key_file)
            .field("master_keys", &self.master_keys.as_ref().map(|_| "[REDACTED]"))
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("log", &self.log)
            .field("limits", &self.limits)
            .field("sync", &self.sync)
            .field("ecr", &self.ecr)
            .field("google", &self.google)
            .field("live_test", &self.live_test)
            .field("targets", &self.targets)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("registry-data"),
            database_url: None,
            sqlite_synchronous: SqliteSynchronous::Normal,
            master_key_file: None,
            master_keys: None,
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            sync: SyncConfig::default(),
            ecr: EcrConfig::default(),
            google: GoogleConfig::default(),
            live_test: LiveTestConfig::default(),
            targets: BTreeMap::new(),
        }
    }
}

/// SQLite's `synchronous` pragma (WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// A commit survives the process being killed; a power loss can lose
    /// the commits since the last checkpoint.
    Normal,
    /// Each commit is fsynced: it survives a power loss too.
    Full,
}

impl From<SqliteSynchronous> for registry_store::SqliteSync {
    fn from(value: SqliteSynchronous) -> Self {
        match value {
            SqliteSynchronous::Normal => Self::Normal,
            SqliteSynchronous::Full => Self::Full,
        }
    }
}

/// TLS on the gRPC listener: on when `cert_file` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server certificate, then its intermediates.
    pub cert_file: Option<PathBuf>,
    /// PEM: the certificate's private key.
    pub key_file: Option<PathBuf>,
    /// PEM: the CAs client certificates must chain to; set, every client
    /// must present a valid certificate (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// The files are checked this often and re-read when they changed
    /// (SIGHUP re-reads them at once).
    pub reload_interval_ms: u64,
    /// Serve plaintext on a non-loopback address: only behind something
    /// that terminates TLS for this server (a service mesh sidecar).
    pub insecure_plaintext: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval_ms: 10_000,
            insecure_plaintext: false,
        }
    }
}

impl TlsConfig {
    /// The files of a TLS listener, when TLS is on.
    pub fn files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.cert_file.clone()?,
            key: self.key_file.clone()?,
            client_ca: self.client_ca_file.clone(),
        })
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
    /// Client certificates (`tls.client_ca_file`) mapped to principals by
    /// `auth.mtls.clients`.
    Mtls,
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
    pub mtls: MtlsConfig,
    /// Development mode refuses a store that JWT or mTLS mode served; this
    /// says the operator knows it is not production data.
    pub development_over_production_store: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Development,
            dev_user: "developer".into(),
            dev_org: "default".into(),
            jwt: JwtConfig::default(),
            mtls: MtlsConfig::default(),
            development_over_production_store: false,
        }
    }
}

impl AuthMode {
    /// The name in the configuration (`auth.mode`) and in the store's mark.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Jwt => "jwt",
            Self::Mtls => "mtls",
        }
    }
}

/// Mutual TLS: who each client certificate is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtlsConfig {
    pub clients: Vec<MtlsClientConfig>,
}

/// One client identity and the principal it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsClientConfig {
    /// A URI SAN (`spiffe://…`), DNS SAN or subject common name of the
    /// certificate, matched exactly; URI SANs are tried first, then DNS
    /// SANs, then the common name.
    pub identity: String,
    pub organization: String,
    /// Role names (`reader`, `writer`, `deployer`, `admin`).
    pub roles: Vec<String>,
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
    /// A JSON Web Key Set URL publishing the issuer's signing keys
    /// (https; http only to loopback): fetched at start, refreshed every
    /// `jwks_refresh_secs` and when a token names an unknown key id.
    pub jwks_url: Option<String>,
    pub jwks_refresh_secs: u64,
    /// Tokens issued (`iat`) longer ago are refused; `iat` is then
    /// required. None: any age until `exp`.
    pub max_token_age_secs: Option<u64>,
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
            jwks_url: None,
            jwks_refresh_secs: 300,
            max_token_age_secs: None,
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
    /// Requests in flight in the whole server (health checks aside); 0: no
    /// limit.
    pub max_concurrent_requests: usize,
    /// Requests per second of one principal (organization and subject),
    /// sustained; 0: no limit.
    pub principal_requests_per_second: u32,
    /// Requests one principal may send at once above its rate.
    pub principal_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 30_000,
            max_message_bytes: 256 * 1024,
            concurrency_per_connection: 256,
            max_concurrent_requests: 4096,
            principal_requests_per_second: 1000,
            principal_burst: 2000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Pull Secrets written at once (per replica).
    pub concurrency: usize,
    /// Writes per second to orchestrators over all targets; 0: no cap.
    pub qps: f64,
    /// A pass also runs this often (retries, back-off), in milliseconds.
    pub interval_ms: u64,
    /// The deadline of one orchestrator request (a Secret write, a
    /// namespace read), in milliseconds.
    pub call_timeout_ms: u64,
    /// How long a replica holds a pull Secret it is writing; a replica that
    /// dies loses it after this and another one finishes the work.
    pub lease_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            qps: 0.0,
            interval_ms: 10_000,
            call_timeout_ms: 15_000,
            lease_ms: 120_000,
        }
    }
}

/// Amazon ECR: registries' own keys and region are exchanged for docker
/// logins with `GetAuthorizationToken` at Amazon's regional endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcrConfig {
    /// Sends ECR API calls here instead (`[ecr] endpoint_url =
    /// "http://127.0.0.1:PORT"`, env `REGISTRY_ECR__ENDPOINT_URL`): only for
    /// tests against a local AWS API implementation (moto) or an air-gapped
    /// mirror of the ECR API. Absent in production.
    pub endpoint_url: Option<String>,
    /// The organizations whose ECR registries may log in with this
    /// server's own AWS identity (the SDK's default chain: environment, web
    /// identity, ECS, instance role) instead of stored keys: `["acme"]`, or
    /// `["*"]` for every one. Empty (the default): none. A writer of a listed
    /// organization can make the server's identity pull whatever it may pull.
    pub ambient_identity_organizations: Vec<String>,
}

impl EcrConfig {
    /// The organizations allowed the server's identity; `None` for none.
    pub fn ambient_identity(&self) -> Result<Option<Organizations>, String> {
        if self.ambient_identity_organizations.is_empty() {
            return Ok(None);
        }
        Organizations::from_list(self.ambient_identity_organizations.iter().cloned())
            .map(Some)
            .map_err(|reason| format!("ecr.ambient_identity_organizations {reason}"))
    }
}

/// Google: service-account keys of GCR/GAR registries exchanged for OAuth
/// access tokens at their key's `token_uri`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleConfig {
    /// Token endpoints this server calls besides Google's own
    /// (`https://oauth2.googleapis.com/token`,
    /// `https://accounts.google.com/o/oauth2/token`): a key naming any other
    /// `token_uri` is refused, so a stored key cannot point the server at an
    /// arbitrary address. https, or http to a loopback address.
    pub token_uris: Vec<String>,
}

/// Live connection tests: the registry v2 handshake from this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveTestConfig {
    /// Bounds one whole test (the handshake, the token, the manifest).
    pub timeout_ms: u64,
    /// A PEM file of certificate authorities trusted besides the system's,
    /// for self-hosted registries.
    pub ca_file: Option<PathBuf>,
}

impl Default for LiveTestConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// One orchestrator target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetConfig {
    Kubernetes {
        /// The organizations that may deploy here (`["acme"]`), or `["*"]`
        /// for every one; a target open to several needs `{organization}`
        /// in its namespace template.
        organizations: Vec<String>,
        /// A kubeconfig file; absent: the in-cluster service account.
        #[serde(default)]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context; absent: its current context.
        #[serde(default)]
        context: Option<String>,
        /// The namespace of an environment.
        #[serde(default = "default_namespace_template")]
        namespace_template: String,
        /// Also reference pull Secrets from the namespace's ServiceAccounts.
        #[serde(default)]
        patch_service_accounts: bool,
        /// Watch namespaces and this service's Secrets (cluster-wide list
        /// and watch of Secrets): drift repair, and deploys that need no
        /// request. Off: every check asks the API server.
        #[serde(default = "watch_by_default")]
        watch: bool,
    },
    /// A swarm manager's engine: services get the login with
    /// `--with-registry-auth`.
    Swarm(EngineTarget),
    /// The engine of the host compose runs on. Its image cache is shared by
    /// every organization deploying there.
    Compose(EngineTarget),
}

/// A Docker engine target (Swarm or Compose).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineTarget {
    /// The organizations that may deploy here, or `["*"]`.
    pub organizations: Vec<String>,
    /// `unix:///var/run/docker.sock`, `tcp://host:port`, `http://host:port`
    /// or `https://host:port`.
    pub endpoint: String,
    /// TLS, as `docker --tlsverify --tlscacert`: the CA the engine's
    /// certificate must chain to.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The client certificate (`--tlscert`), with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The client key (`--tlskey`).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Allow a plain `tcp://`/`http://` engine on another host (the Engine
    /// API is root-equivalent and the login travels in its headers).
    #[serde(default)]
    pub insecure_plaintext: bool,
}

impl EngineTarget {
    /// The TLS files, when the target uses TLS.
    pub fn tls_files(&self) -> Option<orchestrator_docker::TlsFiles> {
        Some(orchestrator_docker::TlsFiles {
            ca: self.tls_ca_file.clone()?,
            client: self.tls_cert_file.clone().zip(self.tls_key_file.clone()),
        })
    }

    /// What serde cannot check: the endpoint parses, TLS settings are
    /// whole, and a remote engine is not reached in clear by accident.
    fn validate(&self) -> Result<(), String> {
        let endpoint = orchestrator_docker::Endpoint::parse(&self.endpoint).map_err(|e| e.to_string())?;
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("tls_cert_file and tls_key_file go together".into());
        }
        let tls = self.tls_ca_file.is_some();
        if self.tls_cert_file.is_some() && !tls {
            return Err("tls_cert_file needs tls_ca_file (the CA the engine's certificate chains to)".into());
        }
        if tls && endpoint.socket_path().is_some() {
            return Err("TLS settings apply to tcp:// and https:// endpoints, not a unix socket".into());
        }
        if endpoint.requires_tls() && !tls {
            return Err(format!("{} is https:// and needs tls_ca_file", self.endpoint));
        }
        if tls && self.insecure_plaintext {
            return Err("insecure_plaintext = true and tls_ca_file contradict each other: choose one".into());
        }
        if !tls && !endpoint.is_local() && !self.insecure_plaintext {
            return Err(format!(
                "{} is another host's engine in plaintext: the Engine API is root-equivalent and the registry \
                 login travels in its headers. Set tls_ca_file, tls_cert_file and tls_key_file (as \
                 docker --tlsverify), or insecure_plaintext = true on a network you trust",
                self.endpoint
            ));
        }
        Ok(())
    }
}

impl TargetConfig {
    /// The organizations the target is open to.
    pub fn organizations(&self) -> Result<Organizations, String> {
        let (Self::Kubernetes { organizations, .. }
        | Self::Swarm(EngineTarget { organizations, .. })
        | Self::Compose(EngineTarget { organizations, .. })) = self;
        Organizations::from_list(organizations.iter().cloned())
    }
}

fn watch_by_default() -> bool {
    true
}

fn default_namespace_template() -> String {
    "env-{environment}".to_owned()
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
const ENV_KEYS: [&str; 14] = [
    "listen",
    "tls",
    "data_dir",
    "database_url",
    "sqlite_synchronous",
    "master_key_file",
    "master_keys",
    "auth",
    "log",
    "limits",
    "sync",
    "ecr",
    "google",
    "targets",
];

/// The `REGISTRY_*` variables of `env` as nested keys: `REGISTRY_AUTH__MODE`
/// becomes `auth.mode`. Values are read as figment reads environment values
/// (numbers, booleans, arrays `[a, b]`, else strings).
fn env_dict(env: impl IntoIterator<Item = (String, String)>) -> Dict {
    let mut root = Dict::new();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("REGISTRY_") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if !ENV_KEYS.contains(&path[0].as_str()) {
            continue;
        }
        let value = value.parse::<Value>().unwrap_or_else(|_| Value::from(value));
        insert(&mut root, &path, value);
    }
    root
}

/// Puts `value` at `path` in `dict`, creating the dictionaries on the way.
fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, child) = entry {
                insert(child, rest, value);
            }
        }
    }
}

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
        Self::load_from(file, std::env::vars(), overrides)
    }

    /// [`Config::load`] with the environment given as variables, so tests
    /// need not touch the process environment.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
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
        let config: Config = overrides
            .apply(figment.merge(Serialized::defaults(env_dict(env))))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults under one TOML document, validated: what a configuration
    /// file alone makes of the server (no environment, no flags).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// TLS files come as a pair, mutual TLS needs TLS, and only loopback
    /// listens in plaintext unless the operator says a mesh encrypts.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return invalid("tls.cert_file and tls.key_file go together: set both or neither".into());
        }
        if tls.client_ca_file.is_some() && tls.cert_file.is_none() {
            return invalid("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
        }
        if tls.reload_interval_ms == 0 {
            return invalid("tls.reload_interval_ms must be positive".into());
        }
        let encrypted = tls.cert_file.is_some();
        if encrypted && tls.insecure_plaintext {
            return invalid("tls.insecure_plaintext = true and tls.cert_file contradict each other: choose one".into());
        }
        if !encrypted && !tls.insecure_plaintext && !self.listen.ip().is_loopback() {
            return invalid(format!(
                "listening on {} without TLS would send credentials in clear: set tls.cert_file and \
                 tls.key_file, or tls.insecure_plaintext = true when a service mesh encrypts for this server",
                self.listen
            ));
        }
        if self.auth.mode == AuthMode::Mtls {
            if tls.client_ca_file.is_none() {
                return invalid(
                    "auth.mode = \"mtls\" needs tls.client_ca_file (and the server's own certificate)".into(),
                );
            }
            if self.auth.mtls.clients.is_empty() {
                return invalid("auth.mode = \"mtls\" needs auth.mtls.clients: identities mapped to principals".into());
            }
        }
        for (index, client) in self.auth.mtls.clients.iter().enumerate() {
            if client.identity.trim().is_empty() || client.organization.trim().is_empty() {
                return invalid(format!(
                    "auth.mtls.clients[{index}]: identity and organization must not be empty"
                ));
            }
            if let Err(e) = mtls_roles(client) {
                return invalid(format!("auth.mtls.clients[{index}] ({}): {e}", client.identity));
            }
        }
        Ok(())
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
        self.validate_tls()?;
        if self.auth.mode == AuthMode::Jwt
            && self.auth.jwt.hmac_secret_file.is_none()
            && self.auth.jwt.jwks_url.is_none()
            && self.auth.jwt.public_key_files.is_empty()
        {
            return invalid(
                "auth.mode = \"jwt\" needs auth.jwt.hmac_secret_file, auth.jwt.public_key_files or auth.jwt.jwks_url"
                    .into(),
            );
        }
        if self.auth.jwt.jwks_refresh_secs < 10 {
            return invalid("auth.jwt.jwks_refresh_secs must be at least 10".into());
        }
        if self.auth.mode == AuthMode::Jwt {
            // A token minted by the same issuer for another service, or by
            // another issuer trusted with the same key, must not pass here.
            for (key, value) in [
                ("auth.jwt.issuer", &self.auth.jwt.issuer),
                ("auth.jwt.audience", &self.auth.jwt.audience),
            ] {
                if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return invalid(format!(
                        "auth.mode = \"jwt\" needs {key}: tokens are accepted only from one issuer, for this service"
                    ));
                }
            }
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
        for (name, target) in &self.targets {
            let organizations = match target.organizations() {
                Ok(organizations) => organizations,
                Err(reason) => return invalid(format!("targets.{name}.organizations {reason}")),
            };
            match target {
                TargetConfig::Kubernetes { namespace_template, .. } => {
                    if let Err(reason) = NamespaceTemplate::new(namespace_template, &organizations) {
                        return invalid(format!("targets.{name}.namespace_template {reason}"));
                    }
                }
                TargetConfig::Swarm(engine) | TargetConfig::Compose(engine) => {
                    if let Err(reason) = engine.validate() {
                        return invalid(format!("targets.{name}: {reason}"));
                    }
                }
            }
        }
        if let Some(url) = &self.ecr.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid(format!(
                "ecr.endpoint_url must be an http:// or https:// URL, not {url:?}"
            ));
        }
        if let Err(reason) = self.ecr.ambient_identity() {
            return invalid(reason);
        }
        for uri in &self.google.token_uris {
            let loopback_http = url::Url::parse(uri).is_ok_and(|u| {
                u.scheme() == "http"
                    && match u.host() {
                        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                        Some(url::Host::Domain(name)) => name == "localhost",
                        None => false,
                    }
            });
            let https = url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
            if !(https || loopback_http) {
                return invalid(format!(
                    "google.token_uris: {uri:?} must be an https:// URL (http:// only to a loopback address)"
                ));
            }
        }
        let sync = &self.sync;
        if sync.concurrency == 0 || sync.qps < 0.0 || sync.interval_ms == 0 || sync.call_timeout_ms == 0 {
            return invalid(
                "sync: concurrency, interval_ms and call_timeout_ms must be positive, qps 0 (no cap) or positive"
                    .into(),
            );
        }
        if sync.lease_ms <= sync.call_timeout_ms.saturating_mul(3) {
            return invalid(format!(
                "sync.lease_ms ({}) must exceed three call timeouts ({} ms): a lease outlives the work on one secret",
                sync.lease_ms, sync.call_timeout_ms
            ));
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

/// A client's roles, parsed.
pub fn mtls_roles(client: &MtlsClientConfig) -> Result<registry_core::Roles, String> {
    if client.roles.is_empty() {
        return Err("roles must name at least one role".into());
    }
    registry_core::Roles::parse_list(&client.roles.join(",")).map_err(|e| e.to_string())
}

/// A database URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The user information ends at the authority's last '@': a password
    // may hold an unescaped '@' itself.
    let mut redacted = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => format!("{scheme}://{before_query}"),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_logged_without_their_passwords() {
        for (url, redacted) in [
            (
                "postgres://svc:hunter2@db:5432/registry",
                "postgres://svc:***@db:5432/registry",
            ),
            ("postgres://svc:p@ss@word@db/registry", "postgres://svc:***@db/registry"),
            (
                "postgres://svc@db/registry?sslmode=require&Password=s3cr3t",
                "postgres://svc:***@db/registry?sslmode=require&Password=***",
            ),
            (
                "postgres://db/registry?password=s3cr3t",
                "postgres://db/registry?password=***",
            ),
            (
                "sqlite://data/registry.db?mode=rwc",
                "sqlite://data/registry.db?mode=rwc",
            ),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

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
    fn a_toml_document_alone_is_a_configuration() {
        let config = Config::from_toml("listen = \"127.0.0.1:6000\"\n[limits]\nmax_concurrent_requests = 7\n").unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.limits.max_concurrent_requests, 7);
        for bad in ["listen = 5", "listen = \"0.0.0.0:1\"", "[limits", "unknown_key = 1"] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_variables_are_a_layer() {
        let env = [
            ("REGISTRY_LISTEN", "127.0.0.1:6100"),
            ("REGISTRY_AUTH__MODE", "jwt"),
            ("REGISTRY_AUTH__JWT__HMAC_SECRET_FILE", "/etc/registry/jwt.secret"),
            ("REGISTRY_AUTH__JWT__ISSUER", "https://id.example"),
            ("REGISTRY_AUTH__JWT__AUDIENCE", "registry"),
            ("REGISTRY_LIMITS__REQUEST_TIMEOUT_MS", "1500"),
            ("REGISTRY_MASTER_KEYS", "a2V5,b2xk"),
            ("REGISTRY_TEST_POSTGRES_URL", "ignored: not a config key"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = Config::load_from(None, env, &Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:6100");
        assert_eq!(config.auth.mode, AuthMode::Jwt);
        assert_eq!(
            config.auth.jwt.hmac_secret_file.as_deref(),
            Some(Path::new("/etc/registry/jwt.secret"))
        );
        assert_eq!(config.limits.request_timeout_ms, 1500);
        assert_eq!(config.master_keys.as_deref(), Some("a2V5,b2xk"));

        // Flags win over the environment.
        let overrides = Overrides {
            listen: Some("127.0.0.1:6200".parse().unwrap()),
            ..Default::default()
        };
        let env = [("REGISTRY_LISTEN".to_owned(), "127.0.0.1:6100".to_owned())];
        let config = Config::load_from(None, env, &overrides).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:6200");
    }

    #[test]
    fn the_ecr_endpoint_comes_from_the_environment_and_must_be_http() {
        assert_eq!(Config::default().ecr.endpoint_url, None);
        let env = [("REGISTRY_ECR__ENDPOINT_URL", "http://127.0.0.1:5000")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = Config::load_from(None, env, &Overrides::default()).unwrap();
        assert_eq!(config.ecr.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        let mut bad = Config::default();
        bad.ecr.endpoint_url = Some("127.0.0.1:5000".into());
        assert!(bad.validate().unwrap_err().to_string().contains("ecr.endpoint_url"));
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
        jwt.auth.jwt.hmac_secret_file = Some("/etc/registry/jwt.secret".into());
        assert!(jwt.validate().unwrap_err().to_string().contains("auth.jwt.issuer"));
        jwt.auth.jwt.issuer = Some("https://id.example".into());
        assert!(jwt.validate().unwrap_err().to_string().contains("auth.jwt.audience"));
        jwt.auth.jwt.audience = Some(" ".into());
        assert!(jwt.validate().unwrap_err().to_string().contains("auth.jwt.audience"));
        jwt.auth.jwt.audience = Some("registry".into());
        jwt.validate().unwrap();

        let mysql = Config {
            database_url: Some("mysql://root:pw@db/x".into()),
            ..Config::default()
        };
        let err = mysql.validate().unwrap_err().to_string();
        assert!(err.contains("database_url") && !err.contains("pw@"), "{err}");
    }

    #[test]
    fn a_public_listener_needs_tls_and_mutual_tls_needs_a_client_ca() {
        let mut jwt = Config {
            listen: "0.0.0.0:50051".parse().unwrap(),
            ..Config::default()
        };
        jwt.auth.mode = AuthMode::Jwt;
        jwt.auth.jwt.hmac_secret_file = Some("/etc/registry/jwt.secret".into());
        jwt.auth.jwt.issuer = Some("https://id.example".into());
        jwt.auth.jwt.audience = Some("registry".into());
        let err = jwt.validate().unwrap_err().to_string();
        assert!(
            err.contains("without TLS") && err.contains("insecure_plaintext"),
            "{err}"
        );
        let mut meshed = jwt.clone();
        meshed.tls.insecure_plaintext = true;
        meshed.validate().unwrap();
        let mut half = jwt.clone();
        half.tls.cert_file = Some("/etc/registry/tls.crt".into());
        assert!(half.validate().unwrap_err().to_string().contains("go together"));
        half.tls.key_file = Some("/etc/registry/tls.key".into());
        half.validate().unwrap();
        half.tls.insecure_plaintext = true;
        assert!(half.validate().unwrap_err().to_string().contains("contradict"));

        let mut mtls = jwt.clone();
        mtls.auth.mode = AuthMode::Mtls;
        mtls.tls.cert_file = Some("/etc/registry/tls.crt".into());
        mtls.tls.key_file = Some("/etc/registry/tls.key".into());
        assert!(mtls.validate().unwrap_err().to_string().contains("tls.client_ca_file"));
        mtls.tls.client_ca_file = Some("/etc/registry/clients.pem".into());
        assert!(mtls.validate().unwrap_err().to_string().contains("auth.mtls.clients"));
        mtls.auth.mtls.clients.push(MtlsClientConfig {
            identity: "spiffe://platform.example/deployer".into(),
            organization: "acme".into(),
            roles: vec!["root".into()],
        });
        let err = mtls.validate().unwrap_err().to_string();
        assert!(err.contains("clients[0]") && err.contains("root"), "{err}");
        mtls.auth.mtls.clients[0].roles = vec!["deployer".into()];
        mtls.validate().unwrap();

        let mut ca_alone = Config::default();
        ca_alone.tls.client_ca_file = Some("/etc/registry/clients.pem".into());
        assert!(
            ca_alone
                .validate()
                .unwrap_err()
                .to_string()
                .contains("needs tls.cert_file")
        );
    }

    #[test]
    fn docker_engines_on_other_hosts_need_tls_or_an_explicit_insecure_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        let load = |engine: &str| {
            std::fs::write(
                &file,
                format!("[targets.swarm]\nkind = \"swarm\"\norganizations = [\"acme\"]\n{engine}"),
            )
            .unwrap();
            Config::load_from(Some(&file), std::iter::empty(), &Overrides::default()).map_err(|e| e.to_string())
        };
        for local in [
            "endpoint = \"unix:///var/run/docker.sock\"",
            "endpoint = \"tcp://127.0.0.1:2375\"",
            "endpoint = \"http://localhost:2375\"",
            "endpoint = \"tcp://[::1]:2375\"",
        ] {
            load(local).unwrap();
        }
        let err = load("endpoint = \"tcp://10.0.0.9:2375\"").unwrap_err();
        assert!(err.contains("targets.swarm") && err.contains("tls_ca_file"), "{err}");
        load("endpoint = \"tcp://10.0.0.9:2375\"\ninsecure_plaintext = true").unwrap();
        let tls = "tls_ca_file = \"/etc/docker/ca.pem\"\ntls_cert_file = \"/etc/docker/cert.pem\"\n\
                   tls_key_file = \"/etc/docker/key.pem\"";
        let config = load(&format!("endpoint = \"tcp://10.0.0.9:2376\"\n{tls}")).unwrap();
        let TargetConfig::Swarm(engine) = &config.targets["swarm"] else {
            panic!("a swarm target")
        };
        let files = engine.tls_files().unwrap();
        assert_eq!(files.ca, PathBuf::from("/etc/docker/ca.pem"));
        assert!(files.client.is_some());
        load(&format!("endpoint = \"https://docker.internal:2376\"\n{tls}")).unwrap();
        let err = load("endpoint = \"https://docker.internal:2376\"").unwrap_err();
        assert!(err.contains("https://") && err.contains("tls_ca_file"), "{err}");
        let err = load("endpoint = \"tcp://10.0.0.9:2376\"\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"")
            .unwrap_err();
        assert!(err.contains("needs tls_ca_file"), "{err}");
        let err = load("endpoint = \"tcp://10.0.0.9:2376\"\ntls_ca_file = \"/ca.pem\"\ntls_key_file = \"/k.pem\"")
            .unwrap_err();
        assert!(err.contains("go together"), "{err}");
        let err = load(&format!("endpoint = \"unix:///var/run/docker.sock\"\n{tls}")).unwrap_err();
        assert!(err.contains("unix socket"), "{err}");
        let err = load(&format!(
            "endpoint = \"tcp://10.0.0.9:2376\"\n{tls}\ninsecure_plaintext = true"
        ))
        .unwrap_err();
        assert!(err.contains("contradict"), "{err}");
        let err = load("endpoint = \"tcp://10.0.0.9:2376\"\ntls_verify = true").unwrap_err();
        assert!(err.contains("tls_verify"), "{err}");
    }

    #[test]
    fn targets_name_their_organizations_and_shared_ones_their_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        let load = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            Config::load_from(Some(&file), Vec::new(), &Overrides::default())
        };
        let missing = load("[targets.k8s]\nkind = \"kubernetes\"\n").unwrap_err().to_string();
        assert!(missing.contains("organizations"), "{missing}");
        let shared = load("[targets.k8s]\nkind = \"kubernetes\"\norganizations = [\"*\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            shared.contains("targets.k8s.namespace_template") && shared.contains("{organization}"),
            "{shared}"
        );
        let mixed =
            load("[targets.s]\nkind = \"swarm\"\norganizations = [\"*\", \"acme\"]\nendpoint = \"unix:///d.sock\"\n")
                .unwrap_err()
                .to_string();
        assert!(mixed.contains("targets.s.organizations"), "{mixed}");
        let config = load(
            "[targets.k8s]\nkind = \"kubernetes\"\norganizations = [\"*\"]\n\
             namespace_template = \"{organization}-{environment}\"\n",
        )
        .unwrap();
        match &config.targets["k8s"] {
            TargetConfig::Kubernetes { watch, .. } => assert!(*watch, "watching is the default"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lease_outlives_the_work_on_one_secret() {
        let mut config = Config::default();
        config.sync.call_timeout_ms = 60_000;
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("sync.lease_ms"), "{refused}");
        config.sync.lease_ms = 181_000;
        assert!(config.validate().is_ok());
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
