//! The deploy path's domain: usages, pull Secrets and their sync state, the
//! orchestrator targets, and the ports their adapters implement.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::kind::RegistryKind;
use crate::login::DockerLogin;
use crate::ports::{AuditEvent, StoreError};
use crate::reference::ImageReference;
use crate::registry::{RegistryId, StoredRegistry, Timestamp};

/// One container using one registry (or a public image) on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub organization: String,
    pub container_id: String,
    /// `None` for a public image.
    pub registry_id: Option<RegistryId>,
    pub environment: String,
    pub target: String,
    /// The Kubernetes namespace, for Kubernetes targets.
    pub namespace: Option<String>,
    pub image: String,
    /// The credential revision the container was deployed with.
    pub credential_revision: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a pull Secret is with its registry's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Synced,
    Pending,
    Failed,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "synced",
            Self::Pending => "pending",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Synced, Self::Pending, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// The pull Secret of one registry in one namespace of one Kubernetes target,
/// as the service wants it and as it last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecretState {
    pub registry_id: RegistryId,
    pub organization: String,
    pub target: String,
    pub namespace: String,
    pub secret_name: String,
    /// The registry host the Secret's login is for (its `auths` key).
    pub server: String,
    /// The revision the Secret should hold; 0 means it should be deleted.
    pub desired_revision: i64,
    /// The revision it holds (0: none written yet).
    pub applied_revision: i64,
    pub status: SyncStatus,
    /// Why the last attempt failed; never a secret.
    pub error: String,
    pub attempts: i32,
    /// Not retried before this time (back-off, `Retry-After`).
    pub not_before: Timestamp,
    pub updated_at: Timestamp,
    /// When a synced Secret whose login expires (ECR) is to be re-applied
    /// with a fresh token; `None` for static logins.
    pub refresh_at: Option<Timestamp>,
}

impl PullSecretState {
    pub fn is_synced(&self) -> bool {
        self.status == SyncStatus::Synced && self.applied_revision == self.desired_revision
    }

    /// Whether the Secret's login is due to be refreshed at `now`.
    pub fn refresh_due(&self, now: Timestamp) -> bool {
        self.refresh_at.is_some_and(|at| at <= now)
    }
}

/// The stable name of a registry's pull Secret, the same in every namespace:
/// `<kind>-creds-<id>` (the guide's `ghcr-creds` style, unique per registry).
pub fn secret_name(kind: RegistryKind, id: &RegistryId) -> String {
    let suffix = id.as_str().trim_start_matches("reg-");
    format!("{}-creds-{suffix}", kind.proto_field())
}

/// A pull Secret to write.
#[derive(Clone, Copy)]
pub struct PullSecret<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub registry_id: &'a RegistryId,
    pub revision: i64,
    /// The `.dockerconfigjson` bytes.
    pub docker_config_json: &'a [u8],
}

impl fmt::Debug for PullSecret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecret")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("registry_id", &self.registry_id)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// Why an orchestrator did not do what was asked. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The API server asked to slow down (429).
    #[error("throttled by the orchestrator; retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    #[error("namespace {0:?} does not exist")]
    NamespaceMissing(String),
    /// The service lacks permission (403).
    #[error("not allowed to write pull secrets in namespace {namespace:?}: {detail}")]
    Forbidden { namespace: String, detail: String },
    /// A Secret with our name exists but is not managed by this service.
    #[error("secret {name:?} in namespace {namespace:?} exists and is not managed by this service")]
    NotOurs { namespace: String, name: String },
    /// The registry rejected the credentials during a pull.
    #[error("the registry refused the stored credentials: {0}")]
    RegistryRefused(String),
    /// The image does not exist in the registry.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// The orchestrator cannot be reached.
    #[error("orchestrator unreachable: {0}")]
    Unreachable(String),
    #[error("orchestrator error: {0}")]
    Other(String),
}

/// Pull Secrets on one Kubernetes target.
#[async_trait]
pub trait PullSecretApi: Send + Sync + fmt::Debug + 'static {
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, TargetError>;

    /// Creates or updates the Secret (server-side apply); refuses a Secret of
    /// that name it does not manage.
    async fn apply(&self, secret: PullSecret<'_>) -> Result<(), TargetError>;

    /// Deletes the Secret if it exists and is ours.
    async fn delete(&self, namespace: &str, name: &str, registry_id: &RegistryId) -> Result<(), TargetError>;
}

/// A Docker engine serving a Swarm or Compose target.
#[async_trait]
pub trait DockerEngine: Send + Sync + fmt::Debug + 'static {
    /// Whether the engine answers (and, for Swarm, is a swarm manager).
    async fn check(&self, swarm: bool) -> Result<(), TargetError>;

    /// Pulls `image` with `login` (none for a public image) and returns its
    /// repository digest (`repo@sha256:…`).
    async fn pull(&self, image: &ImageReference, login: Option<&DockerLogin>) -> Result<String, TargetError>;
}

/// An orchestrator target of the server's configuration.
#[derive(Debug, Clone)]
pub enum Target {
    Kubernetes {
        /// Namespace of an environment: `{environment}` is replaced.
        namespace_template: String,
        api: Arc<dyn PullSecretApi>,
    },
    Swarm(Arc<dyn DockerEngine>),
    Compose(Arc<dyn DockerEngine>),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kubernetes { .. } => "kubernetes",
            Self::Swarm(_) => "swarm",
            Self::Compose(_) => "compose",
        }
    }
}

/// The configured targets by name.
#[derive(Debug, Clone, Default)]
pub struct Targets(BTreeMap<String, Target>);

impl Targets {
    pub fn new(targets: impl IntoIterator<Item = (String, Target)>) -> Self {
        Self(targets.into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<&Target> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The namespace of `environment` under `template` (`env-{environment}`).
pub fn namespace_for(template: &str, environment: &str) -> String {
    template.replace("{environment}", environment)
}

/// Usages, pull Secret state, and what the sync loop needs.
#[async_trait]
pub trait DeployStore: Send + Sync + fmt::Debug + 'static {
    /// A registry by id in any organization (for the background sync).
    async fn registry_by_id(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError>;

    async fn usage(&self, organization: &str, container_id: &str) -> Result<Option<Usage>, StoreError>;

    /// Records (or replaces) a usage and, for Kubernetes, the pull Secret it
    /// relies on, in one transaction. A replaced usage whose pull Secret no
    /// other usage needs has that Secret marked for deletion.
    async fn record_usage(
        &self,
        usage: &Usage,
        secret: Option<&PullSecretState>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Ends a usage; its pull Secret is marked for deletion when no other
    /// usage needs it. Returns the usage that ended.
    async fn release_usage(
        &self,
        organization: &str,
        container_id: &str,
        audit: &AuditEvent,
    ) -> Result<Option<Usage>, StoreError>;

    /// Usages of an organization (of one registry, when given), ordered by
    /// container id, after `after`.
    async fn usages(
        &self,
        organization: &str,
        registry_id: Option<&RegistryId>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Usage>, StoreError>;

    async fn pull_secret(
        &self,
        registry_id: &RegistryId,
        target: &str,
        namespace: &str,
    ) -> Result<Option<PullSecretState>, StoreError>;

    async fn pull_secrets_of(&self, registry_id: &RegistryId) -> Result<Vec<PullSecretState>, StoreError>;

    /// Pull Secrets that are not in their desired state and due, oldest
    /// first, and synced ones whose `refresh_at` has passed.
    async fn due_pull_secrets(&self, now: Timestamp, limit: u64) -> Result<Vec<PullSecretState>, StoreError>;

    /// Stores sync outcomes in one transaction. An outcome is kept only if
    /// its row still wants the revision it was computed for (a newer rotation
    /// wins); a deletion that succeeded removes the row.
    async fn record_sync(&self, outcomes: &[PullSecretState]) -> Result<(), StoreError>;
}
