//! The storage port: registries, usages, pull Secret state and the audit
//! trail. Adapters live in their own crates (`registry-store`).
//!
//! Every write is one transaction, and the audit event of what it records is
//! part of it: the change and its event land together or not at all.

use std::fmt;

use async_trait::async_trait;

use crate::audit::{AuditAction, AuditEvent};
use crate::kind::RegistryKind;
use crate::ports::orchestrators::SecretVersion;
use crate::registry::{RegistryId, StoredRegistry, Timestamp};
use crate::usage::{Lease, PullSecretState, SecretKey, Usage};

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
    /// More writes are waiting than the store accepts: try again shortly.
    #[error("database overloaded: {0}")]
    Overloaded(String),
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

/// A page request for [`RegistryStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub organization: String,
    pub kind: Option<RegistryKind>,
    /// Start after this `(name, id)` (registries are ordered by name, then id).
    pub after: Option<(String, String)>,
    pub limit: u64,
}

/// A registry's sealed blob and the master key it names: for the start-up
/// key check and for rekeying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySample {
    pub key_id: String,
    pub organization: String,
    pub registry_id: RegistryId,
    pub kind: RegistryKind,
    pub sealed_credentials: Vec<u8>,
}

/// Registries and their audit trail.
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
    /// Secrets are marked for deletion in the same transaction; a usage
    /// being recorded concurrently either lands first (and the delete sees
    /// it) or finds the registry gone.
    async fn delete(
        &self,
        organization: &str,
        id: &RegistryId,
        expected_etag: &str,
        force: bool,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError>;

    /// Records an audit event that goes with no write (a test, a refusal, a
    /// credential hand-out to the caller).
    async fn record(&self, audit: &AuditEvent) -> Result<(), StoreError>;

    /// One sealed blob per master key id in use, to check the configured keys
    /// at start-up.
    async fn key_samples(&self) -> Result<Vec<KeySample>, StoreError>;

    /// Up to `limit` blobs sealed under another master key than `key_id`,
    /// of one organization or all, ordered by registry id after `after`.
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        organization: Option<&str>,
        after: Option<&RegistryId>,
        limit: u64,
    ) -> Result<Vec<KeySample>, StoreError>;

    /// How many blobs are sealed under another master key than `key_id`.
    async fn count_sealed_under_other_keys(&self, key_id: &str, organization: Option<&str>) -> Result<u64, StoreError>;

    /// Replaces `old`'s blob by `sealed` (under `key_id`) if the registry
    /// still holds exactly `old`'s blob, with `audit`, in one transaction.
    /// `false` when it changed meanwhile (or the registry is gone). The
    /// etag and credential revision stay: the credentials are the same.
    async fn rewrap(
        &self,
        old: &KeySample,
        key_id: &str,
        sealed: &[u8],
        audit: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// A page of an organization's audit trail, newest first.
    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<RecordedAuditEvent>, StoreError>;

    /// The most recent audit events of an organization, newest first.
    async fn audit_events(&self, organization: &str, limit: u64) -> Result<Vec<AuditEvent>, StoreError> {
        let page = self.audit_page(&AuditQuery::recent(organization, limit)).await?;
        Ok(page.into_iter().map(|recorded| recorded.event).collect())
    }
}

/// One attempt of the sync loop, as it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub key: SecretKey,
    pub outcome: SecretOutcome,
    /// The lease the attempt was made under.
    pub lease_owner: String,
    /// The event of the write or deletion it made in the cluster, if any:
    /// on record whether or not the row still wanted it.
    pub audit: Option<AuditEvent>,
}

/// Which audit events to read: every filter that is set must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub organization: String,
    pub registry_id: Option<RegistryId>,
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
    /// Only events older than this one (the previous page's last).
    pub before_id: Option<i64>,
    pub limit: u64,
}

impl AuditQuery {
    /// The newest `limit` events of `organization`.
    pub fn recent(organization: &str, limit: u64) -> Self {
        Self {
            organization: organization.to_owned(),
            registry_id: None,
            actor: None,
            action: None,
            since: None,
            until: None,
            before_id: None,
            limit,
        }
    }
}

/// A stored audit event and its place in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAuditEvent {
    /// Grows with every event.
    pub id: i64,
    pub event: AuditEvent,
}

/// The pull Secret a Kubernetes usage needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretIntent {
    pub secret_name: String,
    /// The registry host of its login.
    pub server: String,
}

/// What a deployment is about to do, recorded before it does it: the usage,
/// the pull Secret it needs, and the audit event of the hand-out. Whatever
/// happens after (a failed write, a cancelled request, a crash), the sync
/// loop owns the Secret from then on.
#[derive(Debug, Clone, Copy)]
pub struct UsageIntent<'a> {
    /// The usage; its `credential_revision` is replaced by the registry's
    /// revision as of the commit.
    pub usage: &'a Usage,
    pub secret: Option<&'a SecretIntent>,
    /// Taken on the Secret's row when it is not synced and no one else
    /// holds it: the deployment writes it itself.
    pub lease: &'a Lease,
    pub audit: &'a AuditEvent,
}

/// What recording an intent found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentOutcome {
    Recorded(Box<RecordedIntent>),
    /// The registry was deleted: nothing was recorded.
    RegistryGone,
    /// Another organization's usages or pull Secrets are in the namespace:
    /// nothing was recorded.
    NamespaceTaken,
}

/// A recorded intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedIntent {
    /// The registry's credential revision as of the commit (0: public).
    pub revision: i64,
    /// The usage this one replaced.
    pub earlier: Option<Usage>,
    /// The Secret's row after the commit.
    pub secret: Option<PullSecretState>,
    /// Whether the intent's lease was taken on it.
    pub leased: bool,
}

/// How one attempt at a pull Secret ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    /// The cluster holds `revision` at `version` (written now, or a newer
    /// revision found there). The row is synced if that is its desired
    /// revision, and stays due otherwise; its applied revision never drops.
    Applied {
        revision: i64,
        version: SecretVersion,
        refresh_at: Option<Timestamp>,
        /// Shown as the row's error while it is synced: the login written
        /// is a cached token whose refresh failed. Empty for none.
        warning: String,
    },
    /// The Secret is gone (or was never ours). The row goes if it still
    /// wants deletion; a row wanted again meanwhile stays, due at once.
    Deleted,
    /// Nothing was done; try again at `not_before` (throttling, a conflict).
    Retry { not_before: Timestamp, error: String },
    /// The attempt failed; retried at `not_before`.
    Failed { error: String, not_before: Timestamp },
    /// The registry no longer exists: its Secret is to go.
    RegistryGone,
}

/// Usages, pull Secret state, and what the sync loop needs.
#[async_trait]
pub trait DeployStore: Send + Sync + fmt::Debug + 'static {
    /// A registry by id in any organization (for the background sync).
    async fn registry_by_id(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError>;

    async fn usage(&self, organization: &str, container_id: &str) -> Result<Option<Usage>, StoreError>;

    /// Records a deployment's intent in one transaction: re-checks (and
    /// locks) the registry, claims the namespace for the organization,
    /// upserts the usage, makes the pull Secret want the registry's current
    /// revision (never a lower one), and writes the audit event. A replaced
    /// usage whose pull Secret no other usage needs has that Secret marked
    /// for deletion.
    async fn record_intent(&self, intent: &UsageIntent<'_>) -> Result<IntentOutcome, StoreError>;

    /// Undoes a recorded intent the target refused: the usage it replaced is
    /// restored (or the new one removed), a pull Secret no usage needs is
    /// marked for deletion, its lease is released, and `audit` records it.
    async fn abandon_intent(
        &self,
        intent: &UsageIntent<'_>,
        earlier: Option<&Usage>,
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

    async fn pull_secret(&self, key: &SecretKey) -> Result<Option<PullSecretState>, StoreError>;

    async fn pull_secrets_of(&self, registry_id: &RegistryId) -> Result<Vec<PullSecretState>, StoreError>;

    /// The pull Secrets on one target (in one namespace, when given).
    async fn pull_secrets_on(&self, target: &str, namespace: Option<&str>) -> Result<Vec<PullSecretState>, StoreError>;

    /// Claims up to `limit` pull Secrets that are due at `now` and not
    /// leased by giving them `lease`: oldest first, and never a row another
    /// writer holds (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
    async fn claim_due(&self, now: Timestamp, lease: &Lease, limit: u64) -> Result<Vec<PullSecretState>, StoreError>;

    /// Stores the outcome of one attempt. With `lease_owner`, only if that
    /// owner still holds the row's lease (which it releases); without, the
    /// row is not marked synced while another writer holds it. Returns
    /// whether the row was updated.
    async fn record_outcome(
        &self,
        key: &SecretKey,
        outcome: &SecretOutcome,
        lease_owner: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Stores the outcomes of several attempts, each conditional on its
    /// owner's lease as in [`DeployStore::record_outcome`], and the audit
    /// events of the writes they made, in one transaction. Returns how many
    /// rows were updated.
    async fn record_outcomes(&self, outcomes: &[SyncResult]) -> Result<usize, StoreError>;

    /// A Secret was changed or deleted out of band: unless someone holds
    /// the row or it no longer records `written`, it becomes pending (applied
    /// revision 0), due at once, with `reason` as its error; `audit` records
    /// the repair. Returns whether it did.
    async fn mark_drifted(
        &self,
        key: &SecretKey,
        written: Option<&SecretVersion>,
        reason: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Records `version` as what the row's Secret is, when the row knows
    /// none yet (rows written before versions were recorded).
    async fn adopt_version(&self, key: &SecretKey, version: &SecretVersion) -> Result<bool, StoreError>;

    /// Gives up every lease `replica` holds (a replica stopping gracefully):
    /// another replica may take the work at once.
    async fn release_leases(&self, replica: &str) -> Result<u64, StoreError>;

    /// A namespace appeared (again): its failed pull Secrets are due now
    /// (pending ones keep their `Retry-After`).
    async fn namespace_returned(&self, target: &str, namespace: &str) -> Result<u64, StoreError>;
}
