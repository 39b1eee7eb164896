//! The deploy use cases: prepare a deployment on a target, release it,
//! hand out a docker login, list usages and the sync state of pull Secrets.
//!
//! A prepare records its intent (the usage, the pull Secret it needs, the
//! audit event of the hand-out) before it touches the target, so whatever
//! happens next the sync loop owns what it wrote. Each target kind's step
//! reads on its own: [`kubernetes`] writes the pull Secret, [`docker`] hands
//! out the Swarm registry auth or pulls the image for Compose.

mod docker;
mod kubernetes;

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::error::{Error, FieldViolation, Resource, Result};
use crate::kind::RegistryKind;
use crate::login::DockerLogin;
use crate::ports::login::{LoginProvider, LoginUse};
use crate::ports::orchestrators::TargetError;
use crate::ports::store::{DeployStore, IntentOutcome, RecordedIntent, UsageIntent};
use crate::principal::{Principal, Role};
use crate::reference::{self, ImageReference};
use crate::registries::Registries;
use crate::registry::{RegistryId, StoredRegistry, Timestamp};
use crate::sync::SyncTrigger;
use crate::targets::{Target, TargetKind, Targets};
use crate::usage::{PullSecretState, Replica, Usage};

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
    /// Swarm targets: the service whose stored login this server refreshes
    /// on rotation; empty for none.
    pub swarm_service: String,
}

/// What the target needs, by kind.
#[derive(Clone, PartialEq, Eq)]
pub enum TargetDeployment {
    Kubernetes {
        namespace: String,
        image_pull_secrets: Vec<String>,
    },
    /// The `X-Registry-Auth` value (empty for a public image): a credential.
    Swarm { registry_auth: zeroize::Zeroizing<String> },
    /// The pulled image's repository digest.
    Compose { image_digest: String },
}

impl std::fmt::Debug for TargetDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubernetes {
                namespace,
                image_pull_secrets,
            } => f
                .debug_struct("Kubernetes")
                .field("namespace", namespace)
                .field("image_pull_secrets", image_pull_secrets)
                .finish(),
            Self::Swarm { .. } => f.debug_struct("Swarm").finish_non_exhaustive(),
            Self::Compose { image_digest } => f.debug_struct("Compose").field("image_digest", image_digest).finish(),
        }
    }
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

/// How long a deployment waits on its target.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySettings {
    /// One request to an orchestrator (a namespace read, a Secret write).
    pub call_timeout: Duration,
    /// The lease a prepare takes on the pull Secret it writes; after it the
    /// sync loop takes over a prepare that never finished.
    pub prepare_lease: Duration,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(15),
            prepare_lease: Duration::from_secs(60),
        }
    }
}

/// The deploy use cases.
#[derive(Debug, Clone)]
pub struct Deployments {
    registries: Registries,
    store: Arc<dyn DeployStore>,
    targets: Targets,
    sync: SyncTrigger,
    logins: Arc<dyn LoginProvider>,
    replica: Arc<Replica>,
    settings: DeploySettings,
}

/// Everything one prepare knows before it records its intent.
struct Prepare<'a> {
    principal: &'a Principal,
    request: &'a DeploymentRequest,
    registry: Option<StoredRegistry>,
    image: ImageReference,
    /// The login of `registry` at the revision it was loaded at.
    login: Option<DockerLogin>,
    /// Who the login is for: the target's kind.
    consumer: LoginUse,
}

impl Prepare<'_> {
    fn usage(&self, namespace: Option<String>) -> Usage {
        let now = Timestamp::now();
        Usage {
            organization: self.principal.organization.clone(),
            container_id: self.request.container_id.clone(),
            registry_id: self.registry.as_ref().map(|r| r.registry.id.clone()),
            environment: self.request.environment.clone(),
            target: self.request.target.clone(),
            namespace,
            image: self.image.to_string(),
            credential_revision: self.registry.as_ref().map_or(0, |r| r.registry.credential_revision),
            created_at: now,
            updated_at: now,
        }
    }

    /// The audit event of the hand-out, recorded with the intent.
    fn audit(&self, usage: &Usage) -> AuditEvent {
        AuditEvent::new(
            self.principal,
            AuditAction::DeploymentPrepare,
            usage.registry_id.as_ref(),
            AuditOutcome::Ok,
            format!(
                "container={} environment={} target={}{}",
                usage.container_id,
                usage.environment,
                usage.target,
                usage
                    .namespace
                    .as_ref()
                    .map(|ns| format!(" namespace={ns}"))
                    .unwrap_or_default()
            ),
        )
    }

    fn prepared(&self, revision: i64, deployment: TargetDeployment) -> PreparedDeployment {
        PreparedDeployment {
            image: self.image.to_string(),
            registry_id: self.registry.as_ref().map(|r| r.registry.id.clone()),
            credential_revision: revision,
            deployment,
        }
    }
}

const MAX_ID_LEN: usize = 253;

fn check_container_id(id: &str) -> Option<FieldViolation> {
    let valid = !id.is_empty() && id.len() <= MAX_ID_LEN && id.chars().all(|c| c.is_ascii_graphic());
    (!valid).then(|| FieldViolation::new("container_id", "must be 1 to 253 printable characters without spaces"))
}

/// Swarm service names: what `docker service create --name` accepts.
fn check_service_name(name: &str) -> Option<FieldViolation> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (!valid).then(|| {
        FieldViolation::new(
            "swarm_service",
            "must be a service name: 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    })
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
            replica: Arc::new(Replica::random()),
            settings: DeploySettings::default(),
        }
    }

    /// The same use cases as `replica`, with `settings`.
    pub fn with_settings(mut self, replica: Arc<Replica>, settings: DeploySettings) -> Self {
        self.replica = replica;
        self.settings = settings;
        self
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Makes a registry's credentials usable by a target for one container
    /// and records the usage.
    pub async fn prepare(&self, principal: &Principal, request: DeploymentRequest) -> Result<PreparedDeployment> {
        self.registries
            .require(
                principal,
                Role::Deployer,
                "preparing a deployment",
                AuditAction::DeploymentPrepare,
                Some(&request.registry_id),
            )
            .await?;
        let target = self.check_request(principal, &request)?;
        let registry = match request.registry_id.as_str() {
            "" => None,
            id => Some(self.registries.load(principal, id).await?),
        };
        let registry = registry.filter(|r| r.registry.kind != RegistryKind::Public);
        let image = resolve_image(&request, registry.as_ref())?;
        let login = match &registry {
            Some(stored) => Some(self.login(stored, image.host(), target.kind.login_use()).await?),
            None => None,
        };
        let prepare = Prepare {
            principal,
            request: &request,
            registry,
            image,
            login,
            consumer: target.kind.login_use(),
        };
        match &target.kind {
            TargetKind::Kubernetes { namespaces, api } => self.prepare_kubernetes(&prepare, namespaces, api).await,
            TargetKind::Swarm(engine) => self.prepare_swarm(&prepare, engine.as_ref()).await,
            TargetKind::Compose(engine) => self.prepare_compose(&prepare, engine.as_ref()).await,
        }
    }

    /// The target of a valid request that the caller's organization may use.
    fn check_request(&self, principal: &Principal, request: &DeploymentRequest) -> Result<&Target> {
        let mut violations: Vec<FieldViolation> = [
            check_container_id(&request.container_id),
            check_environment(&request.environment),
        ]
        .into_iter()
        .flatten()
        .collect();
        let organization = principal.organization.as_str();
        let target = self.targets.get(&request.target);
        if target.is_none() {
            let known: Vec<_> = self.targets.names_for(organization).collect();
            let configured = if known.is_empty() {
                format!("no targets are configured for organization {organization:?}")
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
        if !request.swarm_service.is_empty() {
            if target.is_some_and(|t| !matches!(t.kind, TargetKind::Swarm(_))) {
                violations.push(FieldViolation::new(
                    "swarm_service",
                    format!("is for swarm targets only; {:?} is not one", request.target),
                ));
            }
            violations.extend(check_service_name(&request.swarm_service));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let Some(target) = target else {
            return Err(Error::invalid("target", "is not configured"));
        };
        if !target.organizations.allows(organization) {
            return Err(Error::PermissionDenied(format!(
                "organization {organization:?} may not deploy to target {:?}",
                request.target
            )));
        }
        Ok(target)
    }

    /// Records a prepare's intent; a registry deleted meanwhile is
    /// NOT_FOUND, another organization's namespace FAILED_PRECONDITION.
    async fn record(&self, prepare: &Prepare<'_>, intent: &UsageIntent<'_>) -> Result<RecordedIntent> {
        match self.store.record_intent(intent).await? {
            IntentOutcome::Recorded(recorded) => Ok(*recorded),
            IntentOutcome::RegistryGone => Err(Error::registry_not_found(prepare.request.registry_id.clone())),
            IntentOutcome::NamespaceTaken => Err(Error::NamespaceTaken {
                target: prepare.request.target.clone(),
                namespace: intent.usage.namespace.clone().unwrap_or_default(),
            }),
        }
    }

    /// The login to hand out at `revision`: the one computed at the start,
    /// or, when a rotation committed meanwhile, the current one.
    async fn login_at(&self, prepare: &Prepare<'_>, revision: i64) -> Result<Option<DockerLogin>> {
        let Some(stored) = &prepare.registry else {
            return Ok(None);
        };
        if stored.registry.credential_revision == revision {
            return Ok(prepare.login.clone());
        }
        let current = self
            .store
            .registry_by_id(&stored.registry.id)
            .await?
            .ok_or_else(|| Error::registry_not_found(stored.registry.id.to_string()))?;
        Ok(Some(
            self.login(&current, prepare.image.host(), prepare.consumer).await?,
        ))
    }

    /// Runs one orchestrator request under the call deadline.
    async fn call<T>(&self, request: impl Future<Output = Result<T, TargetError>>) -> Result<T, TargetError> {
        tokio::time::timeout(self.settings.call_timeout, request)
            .await
            .unwrap_or(Err(TargetError::Timeout(self.settings.call_timeout)))
    }

    async fn login(&self, stored: &StoredRegistry, host: &str, consumer: LoginUse) -> Result<DockerLogin> {
        let credentials = self.registries.open(stored)?;
        Ok(self
            .logins
            .login(&stored.registry, &credentials, host, consumer)
            .await?)
    }

    /// Ends a container's usage; its pull Secret goes when nothing else in
    /// that namespace needs it.
    pub async fn release(&self, principal: &Principal, container_id: &str) -> Result<()> {
        self.registries
            .require(
                principal,
                Role::Deployer,
                "releasing a deployment",
                AuditAction::DeploymentRelease,
                None,
            )
            .await?;
        if let Some(violation) = check_container_id(container_id) {
            return Err(Error::InvalidArgument(vec![violation]));
        }
        let audit = AuditEvent::new(
            principal,
            AuditAction::DeploymentRelease,
            None,
            AuditOutcome::Ok,
            format!("container={container_id}"),
        );
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
                resource: Resource::Usage,
                id: container_id.to_owned(),
            }),
        }
    }

    /// The docker login of a registry. Deployer only, and audited before it
    /// is handed out: no audit row, no credential.
    pub async fn resolve(&self, principal: &Principal, registry_id: &str) -> Result<(StoredRegistry, DockerLogin)> {
        let denied = principal.require(Role::Deployer, "resolving pull credentials");
        let stored = self.registries.load(principal, registry_id).await?;
        let audit = |outcome| {
            AuditEvent::new(
                principal,
                AuditAction::CredentialsResolve,
                Some(&stored.registry.id),
                outcome,
                format!("revision={}", stored.registry.credential_revision),
            )
        };
        if let Err(denied) = denied {
            self.registries.store().record(&audit(AuditOutcome::Denied)).await?;
            return Err(denied);
        }
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
        let login = self.login(&stored, &host, LoginUse::Deployer).await?;
        self.registries.store().record(&audit(AuditOutcome::Ok)).await?;
        Ok((stored, login))
    }

    pub async fn usages(
        &self,
        principal: &Principal,
        registry_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<UsagePage> {
        self.registries
            .require(
                principal,
                Role::Reader,
                "listing registry usages",
                AuditAction::RegistryRead,
                Some(registry_id),
            )
            .await?;
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
        self.registries
            .require(
                principal,
                Role::Reader,
                "reading the sync state",
                AuditAction::RegistryRead,
                Some(registry_id),
            )
            .await?;
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
            // Usages naming their service are among `pull_secrets`.
            swarm_usages.extend(page.into_iter().filter(|u| {
                u.namespace.is_none()
                    && self
                        .targets
                        .get(&u.target)
                        .is_some_and(|t| matches!(t.kind, TargetKind::Swarm(_)))
            }));
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
