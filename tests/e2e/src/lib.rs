//! Support for the end-to-end tests: the real server on 127.0.0.1:0 with a
//! fresh data directory, and clients that speak as a given principal.

pub mod cluster;

use std::path::{Path, PathBuf};

use registry_proto::v1 as pb;
use registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use registry_server::config::Config;
use registry_server::{RunningServer, StartError};
use tonic::transport::Channel;
use tonic::{IntoRequest, Request, Status};

/// The environment variable that makes every in-process server of a test
/// log, at the level `RUST_LOG` says, into the test's captured output: the
/// canary run (`scripts/canary`) reads all of it for secrets.
pub const TEST_LOG_ENV: &str = "REGISTRY_TEST_LOG";

/// Installs the test's log subscriber once, when [`TEST_LOG_ENV`] is set.
pub fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(TEST_LOG_ENV).is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(registry_server::telemetry::filter("info"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A registry-server started for one test, with its data directory.
#[derive(Debug)]
pub struct TestServer {
    pub server: RunningServer,
    pub config: Config,
    _dir: Option<tempfile::TempDir>,
}

/// The embedded default, on an ephemeral loopback port, in `data_dir`.
pub fn default_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    }
}

impl TestServer {
    /// The embedded default in a fresh temporary data directory.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = default_config(dir.path());
        let mut server = Self::start_with(config).await.expect("server starts");
        server._dir = Some(dir);
        server
    }

    /// Any configuration; the caller owns the data directory.
    pub async fn start_with(config: Config) -> Result<Self, StartError> {
        init_test_logging();
        let server = registry_server::start(config.clone()).await?;
        Ok(Self {
            server,
            config,
            _dir: None,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.local_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("valid url")
            .connect()
            .await
            .expect("server accepts connections")
    }

    pub async fn client(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel().await)
    }

    /// A client speaking as `user` of `org` (development auth mode).
    pub async fn caller(&self, user: &str, org: &str) -> Caller {
        Caller {
            client: self.client().await,
            user: user.to_owned(),
            org: org.to_owned(),
            roles: None,
        }
    }

    /// A DeployCredentialService client speaking as `user` of `org` with the
    /// writer and deployer roles.
    pub async fn deployer(&self, user: &str, org: &str) -> Deployer {
        Deployer {
            client: DeployCredentialServiceClient::new(self.channel().await),
            user: user.to_owned(),
            org: org.to_owned(),
            roles: "writer,deployer".to_owned(),
        }
    }

    /// Stops the server and starts it again with the same configuration
    /// and data (SQLite serves one process at a time, so never both at once).
    ///
    /// A sync pass stopped mid-rotation can leave its claim or commit task
    /// finishing on the runtime for a moment, holding the store (and with it
    /// SQLite's process lock); a new process would not see that, so the
    /// restart waits (at most 5 s) for the lock to be released.
    pub async fn restart(self) -> Result<Self, StartError> {
        let config = self.config.clone();
        let dir = self.stop().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut server = loop {
            match Self::start_with(config.clone()).await {
                Err(StartError::Store(registry_store::OpenError::Locked(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                started => break started?,
            }
        };
        server._dir = dir;
        Ok(server)
    }

    /// Stops the server, keeping its data directory (when owned) alive.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.server.shutdown().await.expect("clean shutdown");
        self._dir
    }
}

/// A request made by `user` of `org` in the development auth mode.
pub fn as_user<T>(message: T, user: &str, org: &str) -> Request<T> {
    let mut request = message.into_request();
    let metadata = request.metadata_mut();
    metadata.insert("x-user", user.parse().expect("ascii user"));
    metadata.insert("x-org", org.parse().expect("ascii org"));
    request
}

/// The same with explicit roles (`reader`, `writer,deployer`, ...).
pub fn with_roles<T>(message: T, user: &str, org: &str, roles: &str) -> Request<T> {
    let mut request = as_user(message, user, org);
    request
        .metadata_mut()
        .insert("x-roles", roles.parse().expect("ascii roles"));
    request
}

/// A RegistryService client bound to one principal, with one method per
/// call the tests make.
#[derive(Debug, Clone)]
pub struct Caller {
    client: RegistryServiceClient<Channel>,
    user: String,
    org: String,
    roles: Option<String>,
}

/// A `Registry` message carrying just a name and/or credentials.
pub fn draft(name: &str, kind: pb::RegistryType, credentials: Option<pb::Credentials>) -> pb::Registry {
    pb::Registry {
        name: name.to_owned(),
        r#type: kind.into(),
        credentials,
        ..Default::default()
    }
}

impl Caller {
    /// The same principal with `x-roles` set.
    pub fn with_roles(mut self, roles: &str) -> Self {
        self.roles = Some(roles.to_owned());
        self
    }

    fn request<T>(&self, message: T) -> Request<T> {
        match &self.roles {
            Some(roles) => with_roles(message, &self.user, &self.org, roles),
            None => as_user(message, &self.user, &self.org),
        }
    }

    pub async fn create_with(&mut self, request: pb::CreateRegistryRequest) -> Result<pb::Registry, Status> {
        let request = self.request(request);
        let response = self.client.create_registry(request).await?.into_inner();
        Ok(response.registry.expect("a created registry"))
    }

    pub async fn create(
        &mut self,
        name: &str,
        kind: pb::RegistryType,
        credentials: Option<pb::Credentials>,
    ) -> Result<pb::Registry, Status> {
        self.create_with(pb::CreateRegistryRequest {
            registry: Some(draft(name, kind, credentials)),
            request_id: String::new(),
        })
        .await
    }

    pub async fn get(&mut self, registry_id: &str) -> Result<pb::Registry, Status> {
        let request = self.request(pb::GetRegistryRequest {
            registry_id: registry_id.to_owned(),
        });
        Ok(self
            .client
            .get_registry(request)
            .await?
            .into_inner()
            .registry
            .expect("a registry"))
    }

    pub async fn list_page(
        &mut self,
        request: pb::ListRegistriesRequest,
    ) -> Result<pb::ListRegistriesResponse, Status> {
        let request = self.request(request);
        Ok(self.client.list_registries(request).await?.into_inner())
    }

    /// The first page (up to 50) of the organization's registries.
    pub async fn list(&mut self) -> Result<Vec<pb::Registry>, Status> {
        Ok(self.list_page(pb::ListRegistriesRequest::default()).await?.registries)
    }

    /// UpdateRegistry with the mask `paths` (empty: every field set).
    pub async fn update(
        &mut self,
        registry_id: &str,
        registry: pb::Registry,
        paths: &[&str],
        etag: &str,
    ) -> Result<pb::Registry, Status> {
        let request = self.request(pb::UpdateRegistryRequest {
            registry_id: registry_id.to_owned(),
            registry: Some(registry),
            update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            etag: etag.to_owned(),
        });
        Ok(self
            .client
            .update_registry(request)
            .await?
            .into_inner()
            .registry
            .expect("a registry"))
    }

    pub async fn rename(&mut self, registry_id: &str, name: &str, etag: &str) -> Result<pb::Registry, Status> {
        self.update(
            registry_id,
            draft(name, pb::RegistryType::Unspecified, None),
            &["name"],
            etag,
        )
        .await
    }

    pub async fn rotate(
        &mut self,
        registry_id: &str,
        credentials: pb::Credentials,
        etag: &str,
    ) -> Result<pb::Registry, Status> {
        let registry = draft("", pb::RegistryType::Unspecified, Some(credentials));
        self.update(registry_id, registry, &["credentials"], etag).await
    }

    pub async fn delete(&mut self, registry_id: &str, etag: &str) -> Result<(), Status> {
        let request = self.request(pb::DeleteRegistryRequest {
            registry_id: registry_id.to_owned(),
            etag: etag.to_owned(),
            force: false,
        });
        self.client.delete_registry(request).await?;
        Ok(())
    }

    /// DeleteRegistry with `force`: even while containers use it.
    pub async fn delete_forced(&mut self, registry_id: &str) -> Result<(), Status> {
        let request = self.request(pb::DeleteRegistryRequest {
            registry_id: registry_id.to_owned(),
            etag: String::new(),
            force: true,
        });
        self.client.delete_registry(request).await?;
        Ok(())
    }

    pub async fn test(
        &mut self,
        request: pb::TestRegistryConnectionRequest,
    ) -> Result<pb::TestRegistryConnectionResponse, Status> {
        let request = self.request(request);
        Ok(self.client.test_registry_connection(request).await?.into_inner())
    }

    /// A page of the organization's audit trail (the `auditor` role).
    pub async fn audit_events(
        &mut self,
        request: pb::ListAuditEventsRequest,
    ) -> Result<pb::ListAuditEventsResponse, Status> {
        let request = self.request(request);
        Ok(self.client.list_audit_events(request).await?.into_inner())
    }

    /// Test Connection of a saved registry.
    pub async fn test_saved(&mut self, registry_id: &str) -> Result<pb::TestRegistryConnectionResponse, Status> {
        self.test(pb::TestRegistryConnectionRequest {
            registry_id: registry_id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Test Connection of unsaved credentials (the form's button).
    pub async fn test_inline(
        &mut self,
        kind: pb::RegistryType,
        credentials: Option<pb::Credentials>,
    ) -> Result<pb::TestRegistryConnectionResponse, Status> {
        self.test(pb::TestRegistryConnectionRequest {
            r#type: kind.into(),
            credentials,
            ..Default::default()
        })
        .await
    }
}

/// The embedded default in `dir/data` with one Kubernetes target, `k8s`,
/// open to organization `acme`, whose kubeconfig (written into `dir`)
/// points at the API server at `api_url`; environments map to
/// `env-{environment}`, and the sync loop runs every 100 ms.
pub fn kubernetes_config(dir: &Path, api_url: &str) -> Config {
    let kubeconfig = write_kubeconfig(dir, api_url);
    let mut config = default_config(&dir.join("data"));
    config.targets.insert(
        "k8s".into(),
        registry_server::config::TargetConfig::Kubernetes {
            organizations: vec!["acme".into()],
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace_template: "env-{environment}".into(),
            patch_service_accounts: false,
            watch: true,
        },
    );
    config.sync.interval_ms = 100;
    config
}

/// A kubeconfig file for an API server at `url` (plain http, no auth).
pub fn write_kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let config = registry_testkit::kube_api::kubeconfig(url);
    std::fs::write(&path, config).expect("kubeconfig written");
    path
}

/// A DeployCredentialService client bound to one principal.
#[derive(Debug, Clone)]
pub struct Deployer {
    client: DeployCredentialServiceClient<Channel>,
    user: String,
    org: String,
    roles: String,
}

impl Deployer {
    pub fn with_roles(mut self, roles: &str) -> Self {
        roles.clone_into(&mut self.roles);
        self
    }

    fn request<T>(&self, message: T) -> Request<T> {
        with_roles(message, &self.user, &self.org, &self.roles)
    }

    /// PrepareDeployment of `container` in `environment` on `target`.
    pub async fn prepare(
        &mut self,
        container: &str,
        environment: &str,
        target: &str,
        registry_id: &str,
        image_name: &str,
        image_tag: &str,
    ) -> Result<pb::PrepareDeploymentResponse, Status> {
        self.prepare_request(pb::PrepareDeploymentRequest {
            container_id: container.to_owned(),
            environment: environment.to_owned(),
            target: target.to_owned(),
            registry_config: Some(pb::RegistryConfig {
                registry_id: registry_id.to_owned(),
                image_name: image_name.to_owned(),
                image_tag: image_tag.to_owned(),
            }),
            swarm_service: String::new(),
        })
        .await
    }

    /// PrepareDeployment as given.
    pub async fn prepare_request(
        &mut self,
        request: pb::PrepareDeploymentRequest,
    ) -> Result<pb::PrepareDeploymentResponse, Status> {
        let request = self.request(request);
        Ok(self.client.prepare_deployment(request).await?.into_inner())
    }

    pub async fn release(&mut self, container: &str) -> Result<(), Status> {
        let request = self.request(pb::ReleaseDeploymentRequest {
            container_id: container.to_owned(),
        });
        self.client.release_deployment(request).await?;
        Ok(())
    }

    pub async fn resolve(&mut self, registry_id: &str) -> Result<pb::ResolvePullCredentialsResponse, Status> {
        let request = self.request(pb::ResolvePullCredentialsRequest {
            registry_id: registry_id.to_owned(),
        });
        Ok(self.client.resolve_pull_credentials(request).await?.into_inner())
    }

    pub async fn usages(&mut self, registry_id: &str) -> Result<Vec<pb::RegistryUsage>, Status> {
        let request = self.request(pb::ListRegistryUsagesRequest {
            registry_id: registry_id.to_owned(),
            ..Default::default()
        });
        Ok(self.client.list_registry_usages(request).await?.into_inner().usages)
    }

    pub async fn sync_state(&mut self, registry_id: &str) -> Result<pb::GetRegistrySyncStateResponse, Status> {
        let request = self.request(pb::GetRegistrySyncStateRequest {
            registry_id: registry_id.to_owned(),
        });
        Ok(self.client.get_registry_sync_state(request).await?.into_inner())
    }

    /// Polls the sync state until `done` holds, for at most `timeout`.
    pub async fn wait_for_sync(
        &mut self,
        registry_id: &str,
        timeout: std::time::Duration,
        done: impl Fn(&pb::GetRegistrySyncStateResponse) -> bool,
    ) -> pb::GetRegistrySyncStateResponse {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let state = self.sync_state(registry_id).await.expect("sync state");
            if done(&state) {
                return state;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sync did not converge within {timeout:?}: {state:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
