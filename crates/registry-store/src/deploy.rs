//! [`DeployStore`] for [`SeaStore`]: usages ([`crate::usages`]) and pull
//! Secret state ([`crate::pull_secrets`]).

use async_trait::async_trait;
use registry_core::audit::AuditEvent;
use registry_core::ports::orchestrators::SecretVersion;
use registry_core::ports::store::{DeployStore, IntentOutcome, SecretOutcome, StoreError, UsageIntent};
use registry_core::usage::{Lease, PullSecretState, SecretKey, Usage};
use registry_core::{RegistryId, StoredRegistry, Timestamp};
use sea_orm::EntityTrait;

use crate::entity::registries;
use crate::failure::Failure;
use crate::rows::registry_from;
use crate::{SeaStore, pull_secrets, usages};

#[async_trait]
impl DeployStore for SeaStore {
    async fn registry_by_id(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        let row = registries::Entity::find_by_id(id.to_string())
            .one(&self.reader)
            .await
            .map_err(Failure::from)?;
        Ok(row.map(registry_from).transpose()?)
    }

    async fn usage(&self, organization: &str, container_id: &str) -> Result<Option<Usage>, StoreError> {
        Ok(usages::usage(&self.reader, organization, container_id).await?)
    }

    async fn record_intent(&self, intent: &UsageIntent<'_>) -> Result<IntentOutcome, StoreError> {
        Ok(usages::record_intent(&self.writer, intent).await?)
    }

    async fn abandon_intent(
        &self,
        intent: &UsageIntent<'_>,
        earlier: Option<&Usage>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        Ok(usages::abandon_intent(&self.writer, intent, earlier, audit).await?)
    }

    async fn release_usage(
        &self,
        organization: &str,
        container_id: &str,
        audit: &AuditEvent,
    ) -> Result<Option<Usage>, StoreError> {
        Ok(usages::release_usage(&self.writer, organization, container_id, audit).await?)
    }

    async fn usages(
        &self,
        organization: &str,
        registry_id: Option<&RegistryId>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Usage>, StoreError> {
        Ok(usages::usages(&self.reader, organization, registry_id, after, limit).await?)
    }

    async fn pull_secret(&self, key: &SecretKey) -> Result<Option<PullSecretState>, StoreError> {
        Ok(pull_secrets::pull_secret(&self.reader, key).await?)
    }

    async fn pull_secrets_of(&self, registry_id: &RegistryId) -> Result<Vec<PullSecretState>, StoreError> {
        Ok(pull_secrets::pull_secrets_of(&self.reader, registry_id).await?)
    }

    async fn pull_secrets_on(&self, target: &str, namespace: Option<&str>) -> Result<Vec<PullSecretState>, StoreError> {
        Ok(pull_secrets::pull_secrets_on(&self.reader, target, namespace).await?)
    }

    async fn claim_due(&self, now: Timestamp, lease: &Lease, limit: u64) -> Result<Vec<PullSecretState>, StoreError> {
        Ok(pull_secrets::claim_due(&self.writer, now, lease, limit).await?)
    }

    async fn record_outcome(
        &self,
        key: &SecretKey,
        outcome: &SecretOutcome,
        lease_owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(pull_secrets::record_outcome(&self.writer, key, outcome, lease_owner).await?)
    }

    async fn record_outcomes(&self, outcomes: &[(SecretKey, SecretOutcome, String)]) -> Result<usize, StoreError> {
        Ok(pull_secrets::record_outcomes(&self.writer, outcomes).await?)
    }

    async fn mark_drifted(
        &self,
        key: &SecretKey,
        written: Option<&SecretVersion>,
        reason: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Ok(pull_secrets::mark_drifted(&self.writer, key, written, reason, audit).await?)
    }

    async fn adopt_version(&self, key: &SecretKey, version: &SecretVersion) -> Result<bool, StoreError> {
        Ok(pull_secrets::adopt_version(&self.writer, key, version).await?)
    }

    async fn release_leases(&self, replica: &str) -> Result<u64, StoreError> {
        Ok(pull_secrets::release_leases(&self.writer, Some(replica)).await?)
    }

    async fn namespace_returned(&self, target: &str, namespace: &str) -> Result<u64, StoreError> {
        Ok(pull_secrets::namespace_returned(&self.writer, target, namespace).await?)
    }
}
