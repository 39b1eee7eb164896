//! [`DeployStore`] for [`SeaStore`]: usages ([`crate::usages`]) and pull
//! Secret state ([`crate::pull_secrets`]).

use async_trait::async_trait;
use registry_core::audit::AuditEvent;
use registry_core::ports::orchestrators::SecretVersion;
use registry_core::ports::store::{DeployStore, IntentOutcome, SecretOutcome, StoreError, SyncResult, UsageIntent};
use registry_core::usage::{Lease, PullSecretState, SecretKey, Usage};
use registry_core::{RegistryId, StoredRegistry, Timestamp};

use crate::{SeaStore, pull_secrets, usages};

#[async_trait]
impl DeployStore for SeaStore {
    async fn registry_by_id(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        self.cached_registry(id).await
    }

    async fn usage(&self, organization: &str, container_id: &str) -> Result<Option<Usage>, StoreError> {
        if let Some(usage) = self.deploy_cache.usage(organization, container_id) {
            return Ok(Some(usage));
        }
        let generation = self.deploy_cache.generation();
        let usage = usages::usage(&self.reader, organization, container_id).await?;
        if let Some(usage) = &usage {
            self.deploy_cache.fill_usage(generation, usage);
        }
        Ok(usage)
    }

    async fn record_intent(&self, intent: &UsageIntent<'_>) -> Result<IntentOutcome, StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(usages::record_intent(&self.writer, intent).await?)
    }

    async fn abandon_intent(
        &self,
        intent: &UsageIntent<'_>,
        earlier: Option<&Usage>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(usages::abandon_intent(&self.writer, intent, earlier, audit).await?)
    }

    async fn release_usage(
        &self,
        organization: &str,
        container_id: &str,
        audit: &AuditEvent,
    ) -> Result<Option<Usage>, StoreError> {
        let _writing = self.deploy_cache.writing();
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
        if let Some(row) = self.deploy_cache.secret(key) {
            return Ok(Some(row));
        }
        let generation = self.deploy_cache.generation();
        let row = pull_secrets::pull_secret(&self.reader, key).await?;
        if let Some(row) = &row {
            self.deploy_cache.fill_secret(generation, row);
        }
        Ok(row)
    }

    async fn pull_secrets_of(&self, registry_id: &RegistryId) -> Result<Vec<PullSecretState>, StoreError> {
        Ok(pull_secrets::pull_secrets_of(&self.reader, registry_id).await?)
    }

    async fn pull_secrets_on(&self, target: &str, namespace: Option<&str>) -> Result<Vec<PullSecretState>, StoreError> {
        Ok(pull_secrets::pull_secrets_on(&self.reader, target, namespace).await?)
    }

    // Claims and lease releases change only leases, which no cached reader
    // looks at: they leave the deploy cache as it is.
    async fn claim_due(&self, now: Timestamp, lease: &Lease, limit: u64) -> Result<Vec<PullSecretState>, StoreError> {
        Ok(pull_secrets::claim_due(&self.writer, now, lease, limit).await?)
    }

    async fn record_outcome(
        &self,
        key: &SecretKey,
        outcome: &SecretOutcome,
        lease_owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(pull_secrets::record_outcome(&self.writer, key, outcome, lease_owner).await?)
    }

    async fn record_outcomes(&self, outcomes: &[SyncResult]) -> Result<usize, StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(pull_secrets::record_outcomes(&self.writer, outcomes).await?)
    }

    async fn mark_drifted(
        &self,
        key: &SecretKey,
        written: Option<&SecretVersion>,
        reason: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(pull_secrets::mark_drifted(&self.writer, key, written, reason, audit).await?)
    }

    async fn adopt_version(&self, key: &SecretKey, version: &SecretVersion) -> Result<bool, StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(pull_secrets::adopt_version(&self.writer, key, version).await?)
    }

    async fn release_leases(&self, replica: &str) -> Result<u64, StoreError> {
        Ok(pull_secrets::release_leases(&self.writer, Some(replica)).await?)
    }

    async fn namespace_returned(&self, target: &str, namespace: &str) -> Result<u64, StoreError> {
        let _writing = self.deploy_cache.writing();
        Ok(pull_secrets::namespace_returned(&self.writer, target, namespace).await?)
    }
}
