//! `platform.registry.v1.DeployCredentialService` over the deploy use cases.

use registry_core::deployments::{DeploymentRequest, Deployments, TargetDeployment};
use registry_core::usage::{PullSecretState, SyncStatus, Usage};
use registry_core::{Error, Timestamp};
use registry_proto::v1 as pb;
use registry_proto::v1::deploy_credential_service_server::DeployCredentialService;
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use crate::auth::principal;
use crate::convert::timestamp;
use crate::status::reply;

/// The gRPC face of [`Deployments`].
#[derive(Debug, Clone)]
pub struct DeployApi {
    deployments: Deployments,
}

impl DeployApi {
    pub fn new(deployments: Deployments) -> Self {
        Self { deployments }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn usage_to_proto(usage: Usage) -> pb::RegistryUsage {
    pb::RegistryUsage {
        container_id: usage.container_id,
        registry_id: usage.registry_id.map(|id| id.to_string()).unwrap_or_default(),
        environment: usage.environment,
        target: usage.target,
        namespace: usage.namespace.unwrap_or_default(),
        image: usage.image,
        credential_revision: usage.credential_revision,
        create_time: Some(timestamp(usage.created_at)),
        update_time: Some(timestamp(usage.updated_at)),
    }
}

fn secret_to_proto(state: PullSecretState) -> pb::TargetSyncState {
    let synced = state.is_synced();
    let status = match state.status {
        _ if synced => pb::SyncStatus::Synced,
        SyncStatus::Failed => pb::SyncStatus::Failed,
        SyncStatus::Synced | SyncStatus::Pending => pb::SyncStatus::Pending,
    };
    let next_attempt_time = (!synced && state.not_before > Timestamp::now()).then(|| timestamp(state.not_before));
    pb::TargetSyncState {
        target: state.target,
        namespace: state.namespace,
        secret_name: state.secret_name,
        desired_revision: state.desired_revision,
        applied_revision: state.applied_revision,
        status: status.into(),
        error: state.error,
        update_time: Some(timestamp(state.updated_at)),
        next_attempt_time,
    }
}

fn swarm_to_proto(usage: Usage, revision: i64) -> pb::TargetSyncState {
    let status = if usage.credential_revision >= revision {
        pb::SyncStatus::Synced
    } else {
        pb::SyncStatus::NextDeployment
    };
    pb::TargetSyncState {
        target: usage.target,
        namespace: String::new(),
        secret_name: String::new(),
        desired_revision: revision,
        applied_revision: usage.credential_revision,
        status: status.into(),
        error: String::new(),
        update_time: Some(timestamp(usage.updated_at)),
        next_attempt_time: None,
    }
}

#[tonic::async_trait]
impl DeployCredentialService for DeployApi {
    async fn prepare_deployment(
        &self,
        request: Request<pb::PrepareDeploymentRequest>,
    ) -> Reply<pb::PrepareDeploymentResponse> {
        reply(self.prepare(request).await)
    }

    async fn release_deployment(
        &self,
        request: Request<pb::ReleaseDeploymentRequest>,
    ) -> Reply<pb::ReleaseDeploymentResponse> {
        reply(self.release(request).await)
    }

    async fn resolve_pull_credentials(
        &self,
        request: Request<pb::ResolvePullCredentialsRequest>,
    ) -> Reply<pb::ResolvePullCredentialsResponse> {
        reply(self.resolve(request).await)
    }

    async fn list_registry_usages(
        &self,
        request: Request<pb::ListRegistryUsagesRequest>,
    ) -> Reply<pb::ListRegistryUsagesResponse> {
        reply(self.usages(request).await)
    }

    async fn get_registry_sync_state(
        &self,
        request: Request<pb::GetRegistrySyncStateRequest>,
    ) -> Reply<pb::GetRegistrySyncStateResponse> {
        reply(self.sync_state(request).await)
    }
}

/// The RPCs in domain terms: each maps its error to a status once, in
/// [`reply`].
impl DeployApi {
    async fn prepare(
        &self,
        request: Request<pb::PrepareDeploymentRequest>,
    ) -> Result<pb::PrepareDeploymentResponse, Error> {
        use pb::prepare_deployment_response::Deployment;
        let principal = principal(&request)?;
        let request = request.into_inner();
        let config = request
            .registry_config
            .ok_or_else(|| Error::invalid("registry_config", "is required"))?;
        let prepared = self
            .deployments
            .prepare(
                &principal,
                DeploymentRequest {
                    container_id: request.container_id,
                    environment: request.environment,
                    target: request.target,
                    registry_id: config.registry_id,
                    image_name: config.image_name,
                    image_tag: config.image_tag,
                    swarm_service: request.swarm_service,
                },
            )
            .await?;
        let deployment = match prepared.deployment {
            TargetDeployment::Kubernetes {
                namespace,
                image_pull_secrets,
            } => Deployment::Kubernetes(pb::KubernetesDeployment {
                namespace,
                image_pull_secrets,
            }),
            TargetDeployment::Swarm { registry_auth } => Deployment::Swarm(pb::SwarmDeployment {
                registry_auth: registry_auth.to_string(),
            }),
            TargetDeployment::Compose { image_digest } => Deployment::Compose(pb::ComposeDeployment { image_digest }),
        };
        Ok(pb::PrepareDeploymentResponse {
            image: prepared.image,
            registry_id: prepared.registry_id.map(|id| id.to_string()).unwrap_or_default(),
            credential_revision: prepared.credential_revision,
            deployment: Some(deployment),
        })
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseDeploymentRequest>,
    ) -> Result<pb::ReleaseDeploymentResponse, Error> {
        let principal = principal(&request)?;
        self.deployments
            .release(&principal, &request.get_ref().container_id)
            .await?;
        Ok(pb::ReleaseDeploymentResponse {})
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolvePullCredentialsRequest>,
    ) -> Result<pb::ResolvePullCredentialsResponse, Error> {
        let principal = principal(&request)?;
        let (stored, login) = self
            .deployments
            .resolve(&principal, &request.get_ref().registry_id)
            .await?;
        Ok(pb::ResolvePullCredentialsResponse {
            docker_config_key: login.config_key().to_owned(),
            server: login.server.clone(),
            username: login.username.clone(),
            password: login.password.expose_secret().to_owned(),
            identity_token: String::new(),
            expire_time: login.expires_at.map(timestamp),
            credential_revision: stored.registry.credential_revision,
            docker_config_json: String::from_utf8_lossy(&login.docker_config_json()).into_owned(),
        })
    }

    async fn usages(
        &self,
        request: Request<pb::ListRegistryUsagesRequest>,
    ) -> Result<pb::ListRegistryUsagesResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let page = self
            .deployments
            .usages(&principal, &request.registry_id, request.page_size, &request.page_token)
            .await?;
        Ok(pb::ListRegistryUsagesResponse {
            usages: page.usages.into_iter().map(usage_to_proto).collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn sync_state(
        &self,
        request: Request<pb::GetRegistrySyncStateRequest>,
    ) -> Result<pb::GetRegistrySyncStateResponse, Error> {
        let principal = principal(&request)?;
        let state = self
            .deployments
            .sync_state(&principal, &request.get_ref().registry_id)
            .await?;
        let revision = state.credential_revision;
        let targets = state
            .pull_secrets
            .into_iter()
            .map(secret_to_proto)
            .chain(state.swarm_usages.into_iter().map(|u| swarm_to_proto(u, revision)))
            .collect();
        Ok(pb::GetRegistrySyncStateResponse {
            registry_id: state.registry_id.to_string(),
            credential_revision: revision,
            targets,
        })
    }
}
