//! Usages (which container uses which registry where) and the state of the
//! Kubernetes pull Secrets they need.

use crate::kind::RegistryKind;
use crate::ports::orchestrators::SecretVersion;
use crate::registry::{RegistryId, Timestamp};

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

impl Usage {
    /// The pull Secret this usage relies on, for Kubernetes usages of a
    /// registry.
    pub fn secret_key(&self) -> Option<SecretKey> {
        Some(SecretKey {
            registry_id: self.registry_id.clone()?,
            target: self.target.clone(),
            namespace: self.namespace.clone()?,
        })
    }

    /// Whether `other` records the same deployment (only timestamps and the
    /// revision may differ).
    pub fn same_deployment(&self, other: &Usage) -> bool {
        (
            &self.organization,
            &self.container_id,
            &self.registry_id,
            &self.environment,
            &self.target,
            &self.namespace,
            &self.image,
        ) == (
            &other.organization,
            &other.container_id,
            &other.registry_id,
            &other.environment,
            &other.target,
            &other.namespace,
            &other.image,
        )
    }
}

/// Which pull Secret: one per (registry, target, namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    pub registry_id: RegistryId,
    pub target: String,
    pub namespace: String,
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

/// Who is writing a pull Secret right now, and until when: at most one
/// writer per Secret, and a writer that died loses it at `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: Timestamp,
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
    /// Never lowered, but to 0.
    pub desired_revision: i64,
    /// The revision the cluster holds (0: none).
    pub applied_revision: i64,
    /// Raised each time a Secret marked for deletion is wanted again.
    pub generation: i64,
    pub status: SyncStatus,
    /// Why the last attempt failed; never a secret.
    pub error: String,
    pub attempts: i32,
    /// Not attempted before this time (back-off, `Retry-After`).
    pub not_before: Timestamp,
    pub updated_at: Timestamp,
    /// When a synced Secret whose login expires (ECR) is to be re-applied
    /// with a fresh token; `None` for static logins.
    pub refresh_at: Option<Timestamp>,
    /// The Secret as this service last wrote or saw it.
    pub written: Option<SecretVersion>,
    pub lease: Option<Lease>,
}

impl PullSecretState {
    pub fn key(&self) -> SecretKey {
        SecretKey {
            registry_id: self.registry_id.clone(),
            target: self.target.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Holds its desired revision (and is not to be deleted).
    pub fn is_synced(&self) -> bool {
        self.status == SyncStatus::Synced && self.desired_revision > 0 && self.applied_revision == self.desired_revision
    }

    /// Whether the Secret's login is due to be refreshed at `now`.
    pub fn refresh_due(&self, now: Timestamp) -> bool {
        self.refresh_at.is_some_and(|at| at <= now)
    }

    /// Whether someone other than `owner` holds a live lease on it at `now`.
    pub fn leased_by_other(&self, owner: &str, now: Timestamp) -> bool {
        self.lease.as_ref().is_some_and(|l| l.owner != owner && l.until > now)
    }
}

/// The stable name of a registry's pull Secret, the same in every namespace:
/// `<kind>-creds-<id>` (the guide's `ghcr-creds` style, unique per registry).
pub fn secret_name(kind: RegistryKind, id: &RegistryId) -> String {
    let suffix = id.as_str().trim_start_matches("reg-");
    format!("{}-creds-{suffix}", kind.proto_field())
}

/// This process among the replicas that share a database: it names the
/// leases the process takes, so each lease has an owner no one else has.
#[derive(Debug)]
pub struct Replica {
    id: String,
    next: std::sync::atomic::AtomicU64,
}

impl Replica {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// A replica with a random id (`r-` and 12 base32 characters).
    pub fn random() -> Self {
        Self::new(format!("r-{}", crate::registry::random_base32(12)))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The prefix of every lease owner this replica names
    /// (`<id>#<n>`).
    pub fn lease_prefix(id: &str) -> String {
        format!("{id}#")
    }

    /// A lease of `duration` from now, with an owner of its own.
    pub fn lease(&self, duration: std::time::Duration) -> Lease {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Lease {
            owner: format!("{}{n}", Self::lease_prefix(&self.id)),
            until: Timestamp::now().after(duration),
        }
    }
}
