//! The deploy use cases: prepare a deployment on a target, release it,
//! hand out a docker login, list usages and the sync state of pull Secrets.

use std::sync::Arc;

use crate::credentials::Credentials;
use crate::deploy::{
    DeployStore, PullSecret, PullSecretState, SyncStatus, Target, TargetError, Targets, Usage, namespace_for,
    secret_name,
};
use crate::error::{Error, FieldViolation, Result};
use crate::kind::RegistryKind;
use crate::login::{DockerLogin, LoginError, LoginProvider};
use crate::ports::AuditEvent;
use crate::principal::{Principal, Role};
use crate::reference::{self, ImageReference};
use crate::registry::{RegistryId, StoredRegistry, Timestamp};
use crate::service::Registries;
use crate::sync::SyncTrigger;

/// A deployment to prepare (the guide's container with `sourceType: registry`).
#[derive(Debug, Clone, Default)]
pub struct DeploymentRequest {
    pub container_id: String,
    pub environment: String,
    pub target: String,
    /// Empty for a public image.
    pub registry_id: String,
    pub image_name: String,
    pub image_tag: String,
}

/// What the target needs, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetDeployment {
    Kubernetes {
        namespace: String,
        image_pull_secrets: Vec<String>,
    },
    /// The `X-Registry-Auth` value (empty for a public image).
    Swarm { registry_auth: String },
    /// The pulled image's repository digest.
    Compose { image_digest: String },
}

/// The answer of a prepared deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDeployment {
    pub image: String,
    pub registry_id: Option<RegistryId>,
    pub credential_revision: i64,
    pub deployment: TargetDeployment,
}

/// A registry's sync state on every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub registry_id: RegistryId,
    pub credential_revision: i64,
    pub pull_secrets: Vec<PullSecretState>,
    /// Swarm usages deployed with an older revision: they get the current one
    /// at their next deployment.
    pub swarm_usages: Vec<Usage>,
}

/// A page of usages.
#[derive(Debug, Clone)]
pub struct UsagePage {
    pub usages: Vec<Usage>,
    pub next_page_token: String,
}

/// The deploy use cases.
#[derive(Debug, Clone)]
pub struct Deployments {
    registries: Registries,
    store: Arc<dyn DeployStore>,
    targets: Targets,
    sync: SyncTrigger,
    logins: Arc<dyn LoginProvider>,
}

const MAX_ID_LEN: usize = 253;

fn check_container_id(id: &str) -> Option<FieldViolation> {
    let valid = !id.is_empty() && id.len() <= MAX_ID_LEN && id.chars().all(|c| c.is_ascii_graphic());
    (!valid).then(|| FieldViolation::new("container_id", "must be 1 to 253 printable characters without spaces"))
}

/// Environments become namespace names: DNS labels.
fn check_environment(environment: &str) -> Option<FieldViolation> {
    let bytes = environment.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 50
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    (!valid).then(|| {
        FieldViolation::new(
            "environment",
            "must be 1 to 50 lowercase letters, digits or '-', starting and ending with a letter or digit",
        )
    })
}

fn target_error(target: &str, error: TargetError) -> Error {
    match error {
        TargetError::NamespaceMissing(namespace) => Error::FailedPrecondition(format!(
            "namespace {namespace:?} does not exist on target {target:?}; environments' namespaces are created by the platform"
        )),
        TargetError::Forbidden { namespace, detail } => Error::FailedPrecondition(format!(
            "target {target:?} does not allow this service to manage pull secrets in namespace {namespace:?}: {detail}"
        )),
        TargetError::NotOurs { namespace, name } => Error::FailedPrecondition(format!(
            "secret {name:?} in namespace {namespace:?} on target {target:?} exists and is not managed by this service; it is left untouched"
        )),
        TargetError::RegistryRefused(detail) => Error::FailedPrecondition(format!(
            "the registry refused the stored credentials while target {target:?} pulled: {detail}"
        )),
        TargetError::ImageNotFound(detail) => {
            Error::FailedPrecondition(format!("target {target:?} cannot pull the image: {detail}"))
        }
        TargetError::Throttled { retry_after } => Error::Unavailable(format!(
            "target {target:?} is throttling requests; retry after {} s",
            retry_after.as_secs().max(1)
        )),
        TargetError::Unreachable(detail) => Error::Unavailable(format!("target {target:?} is unreachable: {detail}")),
        TargetError::Other(detail) => Error::Unavailable(format!("target {target:?} failed: {detail}")),
    }
}

impl Deployments {
    pub fn new(
        registries: Registries,
        store: Arc<dyn DeployStore>,
        targets: Targets,
        sync: SyncTrigger,
        logins: Arc<dyn LoginProvider>,
    ) -> Self {
        Self {
            registries,
            store,
            targets,
            sync,
            logins,
        }
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Makes a registry's credentials usable by a target for one container
    /// and records the usage. Nothing is recorded when anything fails.
    pub async fn prepare(&self, principal: &Principal, request: DeploymentRequest) -> Result<PreparedDeployment> {
        principal.require(Role::Deployer, "preparing a deployment")?;
        let mut violations: Vec<FieldViolation> = [
            check_container_id(&request.container_id),
            check_environment(&request.environment),
        ]
        .into_iter()
        .flatten()
        .collect();
        let target = self.targets.get(&request.target);
        if target.is_none() {
            let known: Vec<_> = self.targets.names().collect();
            let configured = if known.is_empty() {
                "no targets are configured".to_owned()
            } else {
                format!("configured: {}", known.join(", "))
            };
            violations.push(FieldViolation::new(
                "target",
                format!("{:?} is not a configured target ({configured})", request.target),
            ));
        }
        if request.image_name.is_empty() {
            violations.push(FieldViolation::new("registry_config.image_name", "is required"));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let Some(target) = target else {
            return Err(Error::invalid("target", "is not configured"));
        };

        let registry = match request.registry_id.as_str() {
            "" => None,
            id => Some(self.registries.load(principal, id).await?),
        };
        let registry = registry.filter(|r| r.registry.kind != RegistryKind::Public);
        let image = resolve_image(&request, registry.as_ref())?;
        let login = match &registry {
            Some(stored) => Some(self.login(stored, image.host()).await?),
            None => None,
        };
        let revision = registry.as_ref().map_or(0, |r| r.registry.credential_revision);
        let now = Timestamp::now();
        let mut usage = Usage {
            organization: principal.organization.clone(),
            container_id: request.container_id.clone(),
            registry_id: registry.as_ref().map(|r| r.registry.id.clone()),
            environment: request.environment.clone(),
            target: request.target.clone(),
            namespace: None,
            image: image.to_string(),
            credential_revision: revision,
            created_at: now,
            updated_at: now,
        };
        if let Some(earlier) = self.store.usage(&principal.organization, &request.container_id).await? {
            usage.created_at = earlier.created_at;
        }

        let (deployment, secret) = match target {
            Target::Kubernetes {
                namespace_template,
                api,
            } => {
                let namespace = namespace_for(namespace_template, &request.environment);
                let exists = api
                    .namespace_exists(&namespace)
                    .await
                    .map_err(|e| target_error(&request.target, e))?;
                if !exists {
                    return Err(target_error(&request.target, TargetError::NamespaceMissing(namespace)));
                }
                usage.namespace = Some(namespace.clone());
                let secret = match (&registry, &login) {
                    (Some(stored), Some(login)) => Some(
                        self.ensure_secret(&request.target, api.as_ref(), &namespace, stored, login)
                            .await?,
                    ),
                    _ => None,
                };
                let deployment = TargetDeployment::Kubernetes {
                    namespace,
                    image_pull_secrets: secret.iter().map(|s| s.secret_name.clone()).collect(),
                };
                (deployment, secret)
            }
            Target::Swarm(engine) => {
                engine.check(true).await.map_err(|e| target_error(&request.target, e))?;
                let registry_auth = login
                    .as_ref()
                    .map(|l| l.registry_auth().to_string())
                    .unwrap_or_default();
                (TargetDeployment::Swarm { registry_auth }, None)
            }
            Target::Compose(engine) => {
                let image_digest = engine
                    .pull(&image, login.as_ref())
                    .await
                    .map_err(|e| target_error(&request.target, e))?;
                (TargetDeployment::Compose { image_digest }, None)
            }
        };

        let audit = AuditEvent {
            at: now,
            organization: principal.organization.clone(),
            actor: principal.subject.clone(),
            action: "deployment.prepare".into(),
            registry_id: usage.registry_id.clone(),
            outcome: "ok".into(),
            detail: format!(
                "container={} environment={} target={} revision={revision}",
                usage.container_id, usage.environment, usage.target
            ),
        };
        self.store.record_usage(&usage, secret.as_ref(), &audit).await?;
        self.sync.wake();
        Ok(PreparedDeployment {
            image: usage.image,
            registry_id: usage.registry_id,
            credential_revision: revision,
            deployment,
        })
    }

    /// Writes the registry's pull Secret into the namespace unless it already
    /// holds the current revision.
    async fn ensure_secret(
        &self,
        target: &str,
        api: &dyn crate::deploy::PullSecretApi,
        namespace: &str,
        stored: &StoredRegistry,
        login: &DockerLogin,
    ) -> Result<PullSecretState> {
        let registry = &stored.registry;
        let existing = self.store.pull_secret(&registry.id, target, namespace).await?;
        if let Some(existing) = existing
            && existing.is_synced()
            && existing.applied_revision == registry.credential_revision
            && !existing.refresh_due(Timestamp::now())
        {
            return Ok(existing);
        }
        let name = secret_name(registry.kind, &registry.id);
        let config = login.docker_config_json();
        api.apply(PullSecret {
            namespace,
            name: &name,
            registry_id: &registry.id,
            revision: registry.credential_revision,
            docker_config_json: &config,
        })
        .await
        .map_err(|e| target_error(target, e))?;
        let now = Timestamp::now();
        Ok(PullSecretState {
            registry_id: registry.id.clone(),
            organization: registry.organization.clone(),
            target: target.to_owned(),
            namespace: namespace.to_owned(),
            secret_name: name,
            server: login.server.clone(),
            desired_revision: registry.credential_revision,
            applied_revision: registry.credential_revision,
            status: SyncStatus::Synced,
            error: String::new(),
            attempts: 0,
            not_before: now,
            updated_at: now,
            refresh_at: login.refresh_at(now),
        })
    }

    async fn login(&self, stored: &StoredRegistry, host: &str) -> Result<DockerLogin> {
        let credentials: Credentials = self.registries.open(stored)?;
        self.logins
            .login(&stored.registry, &credentials, host)
            .await
            .map_err(|e| match e {
                LoginError::NeedsTokenExchange(_) => {
                    Error::Unsupported(format!("registry {}: {e}", stored.registry.id))
                }
                LoginError::Public => Error::Internal("public registry has no login".into()),
                LoginError::Refused { .. } | LoginError::WrongHost { .. } => Error::FailedPrecondition(e.to_string()),
                LoginError::Unavailable { .. } => Error::Unavailable(e.to_string()),
            })
    }

    /// Ends a container's usage; its pull Secret goes when nothing else in
    /// that namespace needs it.
    pub async fn release(&self, principal: &Principal, container_id: &str) -> Result<()> {
        principal.require(Role::Deployer, "releasing a deployment")?;
        if let Some(violation) = check_container_id(container_id) {
            return Err(Error::InvalidArgument(vec![violation]));
        }
        let audit = AuditEvent {
            at: Timestamp::now(),
            organization: principal.organization.clone(),
            actor: principal.subject.clone(),
            action: "deployment.release".into(),
            registry_id: None,
            outcome: "ok".into(),
            detail: format!("container={container_id}"),
        };
        match self
            .store
            .release_usage(&principal.organization, container_id, &audit)
            .await?
        {
            Some(_) => {
                self.sync.wake();
                Ok(())
            }
            None => Err(Error::NotFound {
                resource: crate::error::Resource::Usage,
                id: container_id.to_owned(),
            }),
        }
    }

    /// The docker login of a registry. Audited, deployer only.
    pub async fn resolve(&self, principal: &Principal, registry_id: &str) -> Result<(StoredRegistry, DockerLogin)> {
        let denied = principal.require(Role::Deployer, "resolving pull credentials");
        let stored = self.registries.load(principal, registry_id).await?;
        let outcome = if denied.is_err() { "denied" } else { "ok" };
        self.registries
            .store()
            .record(&AuditEvent {
                at: Timestamp::now(),
                organization: principal.organization.clone(),
                actor: principal.subject.clone(),
                action: "credentials.resolve".into(),
                registry_id: Some(stored.registry.id.clone()),
                outcome: outcome.into(),
                detail: format!("revision={}", stored.registry.credential_revision),
            })
            .await?;
        denied?;
        if stored.registry.kind == RegistryKind::Public {
            return Err(Error::FailedPrecondition(format!(
                "registry {} is public and has no credentials",
                stored.registry.id
            )));
        }
        let host = match stored.registry.server.as_str() {
            "" => "docker.io".to_owned(),
            server => server.to_owned(),
        };
        let login = self.login(&stored, &host).await?;
        Ok((stored, login))
    }

    pub async fn usages(
        &self,
        principal: &Principal,
        registry_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<UsagePage> {
        principal.require(Role::Reader, "listing registry usages")?;
        let registry = match registry_id {
            "" => None,
            id => Some(self.registries.load(principal, id).await?.registry.id),
        };
        let limit = match u64::try_from(page_size) {
            Err(_) => return Err(Error::invalid("page_size", "must not be negative")),
            Ok(0) => 100,
            Ok(size) => size.min(1000),
        };
        let after = (!page_token.is_empty()).then_some(page_token);
        let mut usages = self
            .store
            .usages(&principal.organization, registry.as_ref(), after, limit + 1)
            .await?;
        let next_page_token = if usages.len() as u64 > limit {
            usages.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            usages.last().map(|u| u.container_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(UsagePage {
            usages,
            next_page_token,
        })
    }

    pub async fn sync_state(&self, principal: &Principal, registry_id: &str) -> Result<SyncState> {
        principal.require(Role::Reader, "reading the sync state")?;
        let stored = self.registries.load(principal, registry_id).await?;
        let registry = stored.registry;
        let pull_secrets = self.store.pull_secrets_of(&registry.id).await?;
        let mut swarm_usages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .usages(&principal.organization, Some(&registry.id), after.as_deref(), 500)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.container_id.clone());
            swarm_usages.extend(
                page.into_iter()
                    .filter(|u| matches!(self.targets.get(&u.target), Some(Target::Swarm(_)))),
            );
        }
        Ok(SyncState {
            registry_id: registry.id,
            credential_revision: registry.credential_revision,
            pull_secrets,
            swarm_usages,
        })
    }
}

/// The full image reference of a deployment, checked against the registry.
fn resolve_image(request: &DeploymentRequest, registry: Option<&StoredRegistry>) -> Result<ImageReference> {
    let server = registry.map(|r| r.registry.server.as_str()).unwrap_or_default();
    let default_host = (!server.is_empty() && !server.starts_with('*')).then_some(server);
    let image = ImageReference::from_parts(&request.image_name, &request.image_tag, default_host)
        .map_err(|e| Error::invalid("registry_config.image_name", e.to_string()))?;
    if let Some(stored) = registry
        && !reference::host_matches(server, image.host())
    {
        return Err(Error::invalid(
            "registry_config.image_name",
            format!(
                "image host {:?} does not match registry {} whose server is {server:?}",
                image.host(),
                stored.registry.id
            ),
        ));
    }
    Ok(image)
}
