//! The orchestrator ports: pull Secrets on a Kubernetes target, and the
//! Docker engine of a Swarm or Compose target.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::login::DockerLogin;
use crate::reference::ImageReference;
use crate::registry::RegistryId;

/// Why an orchestrator did not do what was asked. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The API server asked to slow down (429); `retry_after` as it said.
    #[error("throttled by the orchestrator; retry after {} s", .retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("namespace {0:?} does not exist")]
    NamespaceMissing(String),
    /// The service lacks permission (403).
    #[error("not allowed to write pull secrets in namespace {namespace:?}: {detail}")]
    Forbidden { namespace: String, detail: String },
    /// A Secret with our name exists but is not managed by this service.
    #[error("secret {name:?} in namespace {namespace:?} exists and is not managed by this service")]
    NotOurs { namespace: String, name: String },
    /// The object changed since it was read (a precondition failed); read
    /// it again and retry.
    #[error("{0} changed concurrently")]
    Conflict(String),
    /// The registry rejected the credentials during a pull.
    #[error("the registry refused the stored credentials: {0}")]
    RegistryRefused(String),
    /// The image does not exist in the registry.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// The orchestrator cannot be reached.
    #[error("orchestrator unreachable: {0}")]
    Unreachable(String),
    /// The orchestrator did not answer within its deadline.
    #[error("the orchestrator did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("orchestrator error: {0}")]
    Other(String),
}

impl TargetError {
    /// Whether retrying the same request can succeed without anything else
    /// changing first.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Conflict(_) | Self::Unreachable(_) | Self::Timeout(_) | Self::Other(_)
        )
    }
}

/// A pull Secret to write.
#[derive(Clone, Copy)]
pub struct PullSecret<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub registry_id: &'a RegistryId,
    pub organization: &'a str,
    /// The credential revision the data holds.
    pub revision: i64,
    /// Which life of the Secret this is: a Secret released and wanted again
    /// gets a higher generation, so a deletion meant for the old one never
    /// removes the new one.
    pub generation: i64,
    /// The `.dockerconfigjson` bytes.
    pub docker_config_json: &'a [u8],
}

impl fmt::Debug for PullSecret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecret")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("registry_id", &self.registry_id)
            .field("organization", &self.organization)
            .field("revision", &self.revision)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// One stored version of a Kubernetes object: its `uid` and `resourceVersion`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SecretVersion {
    pub uid: String,
    pub resource_version: String,
}

/// A Secret of this service's name as the cluster holds it; never its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSecret {
    pub namespace: String,
    pub name: String,
    pub version: SecretVersion,
    /// It carries this service's managed-by label.
    pub ours: bool,
    /// Its registry label.
    pub registry_id: Option<String>,
    /// Its credential-revision annotation (0 when absent).
    pub revision: i64,
    /// Its generation annotation (0 when absent).
    pub generation: i64,
}

/// What is known about one Secret without asking the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Nothing is cached (no watch, or it has not listed yet).
    Unknown,
    Absent,
    Present(ObservedSecret),
}

/// What an apply left in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The revision the Secret holds now: the one written, or a newer one
    /// that was found there and left alone.
    pub revision: i64,
    pub version: SecretVersion,
    /// Whether this call wrote the Secret (false: a newer one was there).
    pub wrote: bool,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The Secret was removed.
    Removed,
    /// There was no such Secret (or no such namespace).
    AlreadyGone,
    /// A Secret of that name exists but is not ours (or not this registry's):
    /// it is left untouched.
    NotOurs,
    /// The Secret is a newer generation than the deletion was meant for: it
    /// is left untouched.
    Revived,
}

/// A change seen on a watched cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// The cache was (re)built from a full list: anything may have changed.
    Resynced,
    /// One of our Secrets was added, changed or deleted: see
    /// [`PullSecretApi::observe`].
    Secret {
        namespace: String,
        name: String,
    },
    NamespaceAdded(String),
    NamespaceDeleted(String),
}

/// Pull Secrets on one Kubernetes target.
#[async_trait]
pub trait PullSecretApi: Send + Sync + fmt::Debug + 'static {
    /// Whether the namespace exists; answered from the watched cache when it
    /// is synced.
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, TargetError>;

    /// Creates or updates the Secret unless the cluster holds a newer
    /// revision of it. Refuses a Secret of that name it does not manage.
    /// Every write is conditional on the version it was read at.
    async fn apply(&self, secret: PullSecret<'_>) -> Result<Applied, TargetError>;

    /// Deletes the Secret if it is ours, this registry's, and not of a newer
    /// generation than `generation`; conditional on the version it was read
    /// at (a concurrent change answers [`TargetError::Conflict`]).
    async fn delete(
        &self,
        namespace: &str,
        name: &str,
        registry_id: &RegistryId,
        generation: i64,
    ) -> Result<Deleted, TargetError>;

    /// The cached state of one Secret.
    fn observe(&self, namespace: &str, name: &str) -> Observation;

    /// The state of one Secret read from the API server now (never
    /// [`Observation::Unknown`]).
    async fn read(&self, namespace: &str, name: &str) -> Result<Observation, TargetError>;

    /// Every Secret carrying this service's labels, once the cache is synced.
    fn observed(&self) -> Option<Vec<ObservedSecret>>;

    /// The next change seen by the watch; never resolves without one.
    async fn next_change(&self) -> ClusterChange;
}

/// What a Docker engine must be for its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineRole {
    /// A Swarm manager.
    SwarmManager,
    /// Any engine (Compose runs on it).
    Standalone,
}

/// A Docker engine serving a Swarm or Compose target.
#[async_trait]
pub trait DockerEngine: Send + Sync + fmt::Debug + 'static {
    /// Whether the engine answers and can play `role`.
    async fn check(&self, role: EngineRole) -> Result<(), TargetError>;

    /// Pulls `image` with `login` (none for a public image) and returns its
    /// repository digest (`repo@sha256:…`).
    async fn pull(&self, image: &ImageReference, login: Option<&DockerLogin>) -> Result<String, TargetError>;

    /// Gives Swarm service `service` `login` as its stored registry login,
    /// its spec unchanged (running tasks keep running; tasks scheduled later
    /// pull with it). Refused when the service's image is not on
    /// `login.server`. Returns the service's id and the version updated.
    async fn refresh_service_login(&self, service: &str, login: &DockerLogin) -> Result<SecretVersion, TargetError>;
}
