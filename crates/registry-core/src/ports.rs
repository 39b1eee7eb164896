//! The storage port. Adapters live in their own crates (`registry-store`).

use std::fmt;

use async_trait::async_trait;

use crate::kind::RegistryKind;
use crate::registry::{RegistryId, StoredRegistry, Timestamp};

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another registry of the organization already has this name.
    #[error("registry name {0:?} is already used in this organization")]
    NameTaken(String),
    /// The database cannot be reached or refused the statement.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored row cannot be read back (a bug or manual edits).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What happened to a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome<T> {
    Done(T),
    NotFound,
    /// The registry's etag is no longer the expected one.
    EtagMismatch,
    /// Containers still use the registry (their ids, at most 100).
    InUse(Vec<String>),
}

/// The result of an insert that may replay an earlier request (AIP-155).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// A registry was already created with this request id: here it is.
    Replayed(Box<StoredRegistry>),
}

/// One audited action: who did what to which registry, and how it ended.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub organization: String,
    pub actor: String,
    /// `registry.create`, `registry.update`, `registry.delete`, `registry.test`, ...
    pub action: String,
    pub registry_id: Option<RegistryId>,
    /// `ok`, `denied`, `invalid`, ...
    pub outcome: String,
    /// Free text without secrets (e.g. `credential_revision=2`).
    pub detail: String,
}

impl fmt::Debug for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} by {}@{} on {:?}: {} {}",
            self.at.0, self.action, self.actor, self.organization, self.registry_id, self.outcome, self.detail
        )
    }
}

/// A page request for [`RegistryStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub organization: String,
    pub kind: Option<RegistryKind>,
    /// Start after this `(name, id)` (registries are ordered by name, then id).
    pub after: Option<(String, String)>,
    pub limit: u64,
}

/// A blob sealed under a given master key, for the start-up key check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySample {
    pub key_id: String,
    pub registry_id: RegistryId,
    pub kind: RegistryKind,
    pub sealed_credentials: Vec<u8>,
}

/// Registries and their audit trail. Every write is one transaction: the
/// change and its audit event land together or not at all.
#[async_trait]
pub trait RegistryStore: Send + Sync + fmt::Debug + 'static {
    /// Inserts a registry. With a request id already used in the organization,
    /// returns the registry that request created instead.
    async fn insert(
        &self,
        registry: &StoredRegistry,
        request_id: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Inserted, StoreError>;

    /// The registry created by an earlier request with this id, if any.
    async fn find_by_request_id(
        &self,
        organization: &str,
        request_id: &str,
    ) -> Result<Option<StoredRegistry>, StoreError>;

    async fn get(&self, organization: &str, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError>;

    async fn list(&self, query: &ListQuery) -> Result<Vec<StoredRegistry>, StoreError>;

    /// Replaces a registry whose etag is still `expected_etag`. A new
    /// credential revision becomes the desired revision of its pull Secrets.
    async fn update(
        &self,
        registry: &StoredRegistry,
        expected_etag: &str,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError>;

    /// Deletes a registry whose etag is still `expected_etag`, unless
    /// containers use it and `force` is false. Its usages end and its pull
    /// Secrets are marked for deletion in the same transaction.
    async fn delete(
        &self,
        organization: &str,
        id: &RegistryId,
        expected_etag: &str,
        force: bool,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError>;

    /// Records an audit event that goes with no write (a test, a refusal).
    async fn record(&self, audit: &AuditEvent) -> Result<(), StoreError>;

    /// One sealed blob per master key id in use, to check the configured keys
    /// at start-up.
    async fn key_samples(&self) -> Result<Vec<KeySample>, StoreError>;

    /// The most recent audit events of an organization, newest first.
    async fn audit_events(&self, organization: &str, limit: u64) -> Result<Vec<AuditEvent>, StoreError>;
}
