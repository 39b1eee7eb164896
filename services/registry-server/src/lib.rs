//! The registry credential service: wiring of store, keys, authentication and
//! the gRPC services, and the server's life cycle.
//!
//! - [`config`] — layered configuration;
//! - [`start`] — opens the store, checks the master keys, serves;
//! - [`listener`] — accepts connections, over TLS when configured;
//! - [`tls`] — the listener's certificate files, re-read on change;
//! - [`telemetry`] — structured logs.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use registry_api::auth::{DevelopmentAuth, JwksKeys, JwtAuth, JwtKey, JwtSettings, MtlsAuth, MtlsClient};
use registry_api::limits::{GlobalConcurrencyLayer, PrincipalRate};
use registry_api::request_id::RequestIdLayer;
use registry_api::{AuthInterceptor, Authenticator, DeployApi, RegistryApi};
use registry_core::deployments::{DeploySettings, Deployments};
use registry_core::ports::login::LoginProvider;
use registry_core::ports::sealer::{SealContext, Sealer};
use registry_core::ports::store::{DeployStore, RegistryStore};
use registry_core::registries::Registries;
use registry_core::rekey::{RekeyActor, RekeyReport, RekeyScope};
use registry_core::sync::{SecretSync, SyncSettings, SyncTrigger};
use registry_core::targets::{NamespaceTemplate, Target, TargetKind, Targets};
use registry_core::usage::Replica;
use registry_crypto::KeyRing;
use registry_login::{LoginSettings, Logins, Probe, ProbeSettings};
use registry_proto::v1::deploy_credential_service_server::DeployCredentialServiceServer;
use registry_proto::v1::registry_service_server::RegistryServiceServer;
use registry_store::SeaStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub mod config;
pub mod listener;
pub mod telemetry;
pub mod tls;

use config::{AuthMode, Config, TargetConfig, redact_url};

/// The fully-qualified name of the registry service, as health checks know it.
pub const REGISTRY_SERVICE: &str = "platform.registry.v1.RegistryService";
/// The fully-qualified name of the deploy service.
pub const DEPLOY_SERVICE: &str = "platform.registry.v1.DeployCredentialService";
/// Every service the health checks report on ("" is the server as a whole).
const HEALTH_SERVICES: [&str; 3] = ["", REGISTRY_SERVICE, DEPLOY_SERVICE];

/// Why the server did not start. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("master keys: {0}")]
    Keys(#[from] registry_crypto::KeyError),
    #[error(transparent)]
    Store(#[from] registry_store::OpenError),
    #[error("cannot read the store: {0}")]
    StoreRead(#[from] registry_core::ports::StoreError),
    #[error(
        "the configured master keys cannot open the stored credentials: {0}. Nothing was changed; \
         start again with the key the data was sealed with (as the primary key or an older key)"
    )]
    KeyMismatch(String),
    #[error(
        "the database holds sealed credentials but no master key is configured and {0} is missing. \
         Nothing was changed; restore that file or configure the master keys"
    )]
    MissingKeyFile(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error(
        "refusing development auth mode: this store was last served in {0} mode, so it may hold production \
         credentials that development mode would open to any local process. Start with the {0} configuration; \
         if this really is not production data, set auth.development_over_production_store = true"
    )]
    ProductionStore(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("target {name:?}: {reason}")]
    Target { name: String, reason: String },
    #[error("live_test: {0}")]
    LiveTest(String),
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    store_watch: JoinHandle<()>,
    sync: JoinHandle<()>,
    stop_sync: Option<oneshot::Sender<()>>,
    /// Certificate reloads, JWKS refreshes.
    background: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and waits.
    /// When it returns, every task is gone and with them the store (and a
    /// SQLite file's lock).
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = (&mut self.task).await.unwrap_or(Ok(()));
        if let Some(stop) = self.stop_sync.take() {
            let _ = stop.send(());
        }
        // The sync loop releases its leases; a stuck store does not hold up
        // the shutdown for long.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.sync)
            .await
            .is_err()
        {
            self.sync.abort();
            let _ = (&mut self.sync).await;
        }
        self.store_watch.abort();
        let _ = (&mut self.store_watch).await;
        for task in std::mem::take(&mut self.background) {
            task.abort();
            let _ = task.await;
        }
        served
    }

    /// Waits until the server ends.
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        let Self {
            shutdown,
            task,
            store_watch,
            sync,
            stop_sync,
            background,
            ..
        } = self;
        let result = task.await.unwrap_or(Ok(()));
        store_watch.abort();
        sync.abort();
        let _ = store_watch.await;
        let _ = sync.await;
        for task in background {
            task.abort();
            let _ = task.await;
        }
        drop((shutdown, stop_sync));
        result
    }
}

/// Runs until `signal` resolves, then shuts down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), anyhow::Error> {
    let server = start(config).await?;
    signal.await;
    tracing::info!("shutting down: finishing requests in flight");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Re-wraps up to `limit` stored blobs of every organization under the
/// primary master key: the `rekey` command. On PostgreSQL it runs beside
/// the servers; the embedded SQLite store serves one process at a time, so
/// there it needs the server stopped (or the RekeyRegistries RPC).
pub async fn rekey(config: &Config, limit: u64) -> Result<RekeyReport, anyhow::Error> {
    config.validate()?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| registry_store::sqlite_url(&config.data_dir));
    let options = registry_store::StoreOptions {
        sqlite_sync: config.sqlite_synchronous.into(),
    };
    let store = SeaStore::connect_with(&database_url, options).await?;
    let samples = store.key_samples().await?;
    let keys = load_keys(config, !samples.is_empty())?;
    Ok(registry_core::rekey::rekey(&store, &keys, RekeyScope::All, RekeyActor::Command(REKEY_ACTOR), limit).await?)
}

/// The actor of the `rekey` command's audit events.
pub const REKEY_ACTOR: &str = "registry-server rekey";

/// Opens the store, checks the master keys against it, and serves.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    config.validate()?;
    // Certificates first: a bad file is refused before anything is opened.
    let tls_files = config.tls.files();
    let tls = match &tls_files {
        Some(files) => Some(tls::SharedConfig::new(tls::load(files)?)),
        None => None,
    };
    create_data_dir(&config.data_dir)?;

    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| registry_store::sqlite_url(&config.data_dir));
    let options = registry_store::StoreOptions {
        sqlite_sync: config.sqlite_synchronous.into(),
    };
    let store = SeaStore::connect_with(&database_url, options).await?;
    let samples = store.key_samples().await?;
    let keys = load_keys(&config, !samples.is_empty())?;
    for sample in &samples {
        let context = SealContext {
            registry_id: sample.registry_id.as_str(),
            kind: sample.kind,
        };
        if let Err(error) = keys.open(context, &sample.sealed_credentials) {
            return Err(StartError::KeyMismatch(format!(
                "registry {} is sealed under master key {} ({error}); configured keys: {}",
                sample.registry_id,
                sample.key_id,
                keys.key_ids().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    tracing::info!(
        database = %redact_url(&database_url),
        primary_key = keys.primary_key_id(),
        keys_checked = samples.len(),
        "store open and master keys verified"
    );
    if samples.iter().any(|sample| sample.key_id != keys.primary_key_id()) {
        let older = store.count_sealed_under_other_keys(keys.primary_key_id(), None).await?;
        tracing::warn!(
            registries = older,
            "registries are sealed under older master keys: rekey them (RekeyRegistries, or \
             `registry-server rekey` against PostgreSQL) before removing those keys"
        );
    }

    let jwks = match (&config.auth.mode, &config.auth.jwt.jwks_url) {
        (AuthMode::Jwt, Some(url)) => Some(
            JwksKeys::fetch(url, Duration::from_secs(config.auth.jwt.jwks_refresh_secs))
                .await
                .map_err(|e| StartError::Auth(e.to_string()))?,
        ),
        _ => None,
    };
    let authenticator = Arc::new(authenticator(&config, jwks.clone())?);
    check_auth_mark(&config, &store).await?;
    let replica = Arc::new(Replica::random());
    let (targets, clusters) = targets(&config, &replica).await?;
    // The deploy path answers from the watched clusters: wait (a bounded
    // time) until they are listed, so the first deploys need no request.
    let listed = futures::future::join_all(clusters.iter().map(|c| c.synced()));
    if tokio::time::timeout(Duration::from_millis(config.sync.call_timeout_ms), listed)
        .await
        .is_err()
    {
        tracing::warn!("kubernetes targets not listed yet: serving, and asking their API servers until they are");
    }
    let trigger = SyncTrigger::default();
    let keys: Arc<dyn Sealer> = Arc::new(keys);
    // Checked when the configuration was loaded.
    let ambient_aws = config.ecr.ambient_identity().unwrap_or_default();
    let logins: Arc<dyn LoginProvider> = Arc::new(Logins::new(LoginSettings {
        ecr_endpoint_url: config.ecr.endpoint_url.clone(),
        google_token_uris: config.google.token_uris.clone(),
        ecr_ambient_identity: ambient_aws.clone(),
        ..LoginSettings::default()
    }));
    let registries = Registries::new(Arc::new(store.clone()) as Arc<dyn RegistryStore>, Arc::clone(&keys))
        .with_sync(trigger.clone())
        .with_ambient_aws(ambient_aws)
        .with_live_tests(Arc::clone(&logins), Arc::new(probe(&config.live_test)?));
    let deploy_store: Arc<dyn DeployStore> = Arc::new(store.clone());
    let deployments = Deployments::new(
        registries.clone(),
        Arc::clone(&deploy_store),
        targets.clone(),
        trigger.clone(),
        Arc::clone(&logins),
    )
    .with_settings(Arc::clone(&replica), deploy_settings(&config));
    let secret_sync = SecretSync::new(deploy_store, keys, targets, sync_settings(&config), trigger, logins)
        .with_replica(Arc::clone(&replica));
    let api = RegistryServiceServer::new(RegistryApi::new(registries))
        .max_decoding_message_size(config.limits.max_message_bytes);
    let rate = Arc::new(PrincipalRate::new(
        config.limits.principal_requests_per_second,
        config.limits.principal_burst,
    ));
    let api = InterceptedService::new(api, AuthInterceptor::new(Arc::clone(&authenticator), Arc::clone(&rate)));
    let deploy_api = DeployCredentialServiceServer::new(DeployApi::new(deployments))
        .max_decoding_message_size(config.limits.max_message_bytes);
    let deploy_api = InterceptedService::new(deploy_api, AuthInterceptor::new(authenticator, rate));

    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;

    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(registry_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so reflection clients decode them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;

    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let shutdown_reporter = reporter.clone();
    let shutdown = async move {
        let _ = shutdown_rx.await;
        set_health(&shutdown_reporter, ServingStatus::NotServing).await;
    };
    let router = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(config.limits.request_timeout_ms))
        .concurrency_limit_per_connection(config.limits.concurrency_per_connection)
        // Beyond that limit a request is refused with RESOURCE_EXHAUSTED at
        // once instead of queueing without bound.
        .load_shed(true)
        .layer(RequestIdLayer::new())
        .layer(GlobalConcurrencyLayer::new(config.limits.max_concurrent_requests))
        .trace_fn(
            |request| tracing::info_span!("grpc", method = %request.uri().path(), request_id = tracing::field::Empty),
        )
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .add_service(deploy_api);
    let tls_reload = match (tls_files, &tls) {
        (Some(files), Some(shared)) => Some(tokio::spawn(tls::reload(
            files,
            shared.clone(),
            Duration::from_millis(config.tls.reload_interval_ms),
        ))),
        _ => None,
    };
    let incoming = listener::incoming(listener, tls);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown));

    set_health(&reporter, ServingStatus::Serving).await;
    // Resumes whatever a crash left pending, then follows rotations.
    let (stop_sync, sync_stopped) = oneshot::channel::<()>();
    let sync = tokio::spawn(secret_sync.run(async {
        let _ = sync_stopped.await;
    }));
    let store_watch = tokio::spawn(watch_store(store, reporter));
    let jwks_refresh = jwks.map(|keys| tokio::spawn(keys.run()));

    if config.auth.mode == AuthMode::Development {
        tracing::warn!(
            "DEVELOPMENT AUTH MODE: callers are whoever their x-user/x-org/x-roles metadata says \
             (default {}@{}); loopback only, never for production",
            config.auth.dev_user,
            config.auth.dev_org
        );
    }
    if config.tls.insecure_plaintext {
        tracing::warn!(
            %local_addr,
            "INSECURE PLAINTEXT: tls.insecure_plaintext = true, credentials and tokens cross the network \
             in clear unless a service mesh encrypts them for this server"
        );
    }
    let transport = match (&config.tls.cert_file, &config.tls.client_ca_file) {
        (None, _) => "plaintext",
        (Some(_), None) => "TLS",
        (Some(_), Some(_)) => "mutual TLS",
    };
    tracing::info!(%local_addr, transport, replica = replica.id(), "serving gRPC (RegistryService, DeployCredentialService, health, reflection v1 and v1alpha)");
    Ok(RunningServer {
        local_addr,
        shutdown: Some(shutdown_tx),
        task,
        store_watch,
        sync,
        stop_sync: Some(stop_sync),
        background: tls_reload.into_iter().chain(jwks_refresh).collect(),
    })
}

fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    let error = |source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(error)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(error)
}

/// The master keys: from `master_keys`, a key file, or the development key
/// generated in the data directory.
fn load_keys(config: &Config, data_exists: bool) -> Result<KeyRing, StartError> {
    if let Some(value) = &config.master_keys {
        return Ok(KeyRing::from_env_value(value)?);
    }
    if let Some(file) = &config.master_key_file {
        return Ok(KeyRing::from_key_file(file)?);
    }
    let generated = config.data_dir.join(registry_crypto::MASTER_KEY_FILE);
    if data_exists && !generated.exists() {
        return Err(StartError::MissingKeyFile(generated.display().to_string()));
    }
    // registry-crypto warns loudly when it generates the key.
    let (keys, _status) = KeyRing::load_or_generate(&config.data_dir)?;
    Ok(keys)
}

/// Development mode never serves a store that JWT or mTLS mode served; a
/// production mode marks the store as it starts.
async fn check_auth_mark(config: &Config, store: &SeaStore) -> Result<(), StartError> {
    let mode = config.auth.mode;
    if mode != AuthMode::Development {
        return Ok(store.set_mark(registry_store::AUTH_MODE, mode.as_str()).await?);
    }
    match store.mark(registry_store::AUTH_MODE).await? {
        Some(served) if !config.auth.development_over_production_store => Err(StartError::ProductionStore(served)),
        Some(served) => {
            tracing::warn!(
                served,
                "development auth mode over a store a production mode served (auth.development_over_production_store)"
            );
            Ok(())
        }
        None => Ok(()),
    }
}

fn authenticator(config: &Config, jwks: Option<Arc<JwksKeys>>) -> Result<Authenticator, StartError> {
    let auth = &config.auth;
    match auth.mode {
        AuthMode::Development => Ok(Authenticator::Development(DevelopmentAuth {
            default_subject: auth.dev_user.clone(),
            default_organization: auth.dev_org.clone(),
        })),
        AuthMode::Jwt => {
            let read = |path: &Path| {
                std::fs::read(path).map_err(|e| StartError::Auth(format!("cannot read {}: {e}", path.display())))
            };
            let mut keys = Vec::new();
            if let Some(file) = &auth.jwt.hmac_secret_file {
                let secret = read(file)?;
                let secret = secret.trim_ascii().to_vec();
                if secret.len() < 32 {
                    return Err(StartError::Auth(format!(
                        "{}: an HMAC secret must be at least 32 bytes",
                        file.display()
                    )));
                }
                keys.push(JwtKey::Hmac(secret));
            }
            for file in &auth.jwt.public_key_files {
                let pem = String::from_utf8(read(file)?)
                    .map_err(|_| StartError::Auth(format!("{} is not a PEM file", file.display())))?;
                keys.push(JwtKey::PublicPem(pem));
            }
            let jwt = JwtAuth::new(JwtSettings {
                keys,
                issuer: auth.jwt.issuer.clone(),
                audience: auth.jwt.audience.clone(),
                organization_claim: auth.jwt.organization_claim.clone(),
                roles_claim: auth.jwt.roles_claim.clone(),
                jwks,
                max_token_age: auth.jwt.max_token_age_secs.map(Duration::from_secs),
            })
            .map_err(|e| StartError::Auth(e.to_string()))?;
            Ok(Authenticator::Jwt(jwt))
        }
        AuthMode::Mtls => {
            let clients = auth
                .mtls
                .clients
                .iter()
                .map(|client| {
                    Ok(MtlsClient {
                        identity: client.identity.clone(),
                        organization: client.organization.clone(),
                        roles: config::mtls_roles(client).map_err(StartError::Auth)?,
                    })
                })
                .collect::<Result<Vec<_>, StartError>>()?;
            Ok(Authenticator::Mtls(
                MtlsAuth::new(clients).map_err(|e| StartError::Auth(format!("auth.mtls.clients: {e}")))?,
            ))
        }
    }
}

/// Keeps the health status in step with the store's reachability.
async fn watch_store(store: SeaStore, reporter: HealthReporter) {
    let mut serving = true;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let reachable = store.ping().await;
        if reachable != serving {
            serving = reachable;
            let status = if reachable {
                tracing::info!("store reachable again");
                ServingStatus::Serving
            } else {
                tracing::error!("store unreachable: reporting NOT_SERVING");
                ServingStatus::NotServing
            };
            set_health(&reporter, status).await;
        }
    }
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

fn sync_settings(config: &Config) -> SyncSettings {
    SyncSettings {
        concurrency: config.sync.concurrency,
        qps: (config.sync.qps > 0.0).then_some(config.sync.qps),
        interval: Duration::from_millis(config.sync.interval_ms),
        call_timeout: Duration::from_millis(config.sync.call_timeout_ms),
        lease: Duration::from_millis(config.sync.lease_ms),
    }
}

fn deploy_settings(config: &Config) -> DeploySettings {
    DeploySettings {
        call_timeout: Duration::from_millis(config.sync.call_timeout_ms),
        prepare_lease: Duration::from_millis(config.sync.lease_ms),
    }
}

/// The orchestrator targets of the configuration, connected (Kubernetes
/// targets start watching their cluster).
async fn targets(
    config: &Config,
    replica: &Replica,
) -> Result<(Targets, Vec<Arc<orchestrator_k8s::KubePullSecrets>>), StartError> {
    let mut targets = Vec::new();
    let mut clusters = Vec::new();
    // One target per cluster: namespaces are claimed per target, so two
    // targets on one cluster could hand one namespace to two organizations.
    let mut servers: BTreeMap<String, &str> = BTreeMap::new();
    for (name, target) in &config.targets {
        let error = |reason: String| StartError::Target {
            name: name.clone(),
            reason,
        };
        let organizations = target.organizations().map_err(error)?;
        let kind = match target {
            TargetConfig::Kubernetes {
                kubeconfig,
                context,
                namespace_template,
                patch_service_accounts,
                watch,
                ..
            } => {
                let connection = orchestrator_k8s::Connection {
                    kubeconfig: kubeconfig.clone(),
                    context: context.clone(),
                };
                let options = orchestrator_k8s::ClientOptions {
                    request_timeout: Duration::from_millis(config.sync.call_timeout_ms),
                    user_agent: format!("{}/{}", orchestrator_k8s::FIELD_MANAGER, replica.id()),
                };
                let kube_config = orchestrator_k8s::connect::config(&connection)
                    .await
                    .map_err(|e| error(e.to_string()))?;
                let server = kube_config.cluster_url.to_string();
                if let Some(other) = servers.insert(server.clone(), name) {
                    return Err(error(format!(
                        "reaches the same API server as target {other:?} ({server}); configure one target per cluster"
                    )));
                }
                let clients =
                    orchestrator_k8s::connect::clients(kube_config, &options).map_err(|e| error(e.to_string()))?;
                let service_accounts = if *patch_service_accounts {
                    orchestrator_k8s::ServiceAccounts::Reference
                } else {
                    orchestrator_k8s::ServiceAccounts::Leave
                };
                let cluster = Arc::new(if *watch {
                    orchestrator_k8s::KubePullSecrets::watching(clients, service_accounts)
                } else {
                    orchestrator_k8s::KubePullSecrets::new(clients, service_accounts)
                });
                clusters.push(Arc::clone(&cluster));
                TargetKind::Kubernetes {
                    namespaces: NamespaceTemplate::new(namespace_template, &organizations).map_err(error)?,
                    api: cluster,
                }
            }
            TargetConfig::Swarm(engine) => TargetKind::Swarm(Arc::new(docker_target(engine).map_err(error)?)),
            TargetConfig::Compose(engine) => TargetKind::Compose(Arc::new(docker_target(engine).map_err(error)?)),
        };
        let target = Target { organizations, kind };
        tracing::info!(
            target = name,
            kind = target.kind_name(),
            organizations = %target.organizations,
            "orchestrator target configured"
        );
        targets.push((name.clone(), target));
    }
    Ok((Targets::new(targets), clusters))
}

/// A Docker engine target, over TLS when configured (the files are read
/// and checked now).
fn docker_target(engine: &config::EngineTarget) -> Result<orchestrator_docker::DockerTarget, String> {
    let target = match engine.tls_files() {
        Some(files) => {
            let tls = orchestrator_docker::EngineTls::load(&files).map_err(|e| e.to_string())?;
            orchestrator_docker::DockerTarget::with_tls(&engine.endpoint, tls)
        }
        None => orchestrator_docker::DockerTarget::new(&engine.endpoint),
    };
    let target = target.map_err(|e| e.to_string())?;
    if engine.insecure_plaintext && !target.endpoint().is_local() {
        tracing::warn!(
            endpoint = %target.endpoint(),
            "INSECURE PLAINTEXT Docker engine: registry logins cross the network in clear (insecure_plaintext = true)"
        );
    }
    Ok(target)
}

/// The live connection test's client: the system's certificate
/// authorities and the configured extra ones.
fn probe(config: &config::LiveTestConfig) -> Result<Probe, StartError> {
    let mut extra_roots = Vec::new();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| StartError::LiveTest(format!("ca_file {}: {e}", path.display())))?;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            extra_roots
                .push(certificate.map_err(|e| StartError::LiveTest(format!("ca_file {}: {e}", path.display())))?);
        }
        if extra_roots.is_empty() {
            return Err(StartError::LiveTest(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    Probe::new(ProbeSettings {
        deadline: Duration::from_millis(config.timeout_ms.max(1)),
        extra_roots,
    })
    .map_err(|e| StartError::LiveTest(e.to_string()))
}
