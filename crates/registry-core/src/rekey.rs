//! Master-key rotation: every stored blob sealed under an older master key
//! is opened and sealed again under the primary, while the service runs.
//!
//! The operator makes a new key the primary (first in the key file, the
//! old ones after it), restarts, and rekeys; once nothing is sealed under
//! an old key it can leave the key file (the start-up key check refuses to
//! start while a blob still needs it). Rekeying is resumable by
//! construction: it only ever looks at blobs under other keys, so an
//! interrupted run leaves the rest for the next one. Each re-wrap is a
//! compare-and-swap on the blob (a rotation in between already sealed new
//! credentials under the primary, and wins) and is audited with it. The
//! credentials, etag and credential revision do not change: nothing
//! downstream needs to move.

use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::error::{Error, Result};
use crate::ports::sealer::{SealContext, Sealer};
use crate::ports::store::{KeySample, RegistryStore};
use crate::principal::{Principal, Role};
use crate::registries::Registries;
use crate::registry::RegistryId;

/// How many blobs are read per store query.
const BATCH: u64 = 100;
/// At most this many registries per call when the caller names no limit.
pub const DEFAULT_REKEY_LIMIT: u64 = 1000;
/// Larger limits are lowered to this.
pub const MAX_REKEY_LIMIT: u64 = 10_000;

/// Which registries one run covers.
#[derive(Debug, Clone, Copy)]
pub enum RekeyScope<'a> {
    /// One organization's (the RPC: an admin rekeys its own organization).
    Organization(&'a str),
    /// Every organization's (the `rekey` command).
    All,
}

/// A blob that could not be re-wrapped: it does not open with the
/// configured keys (tampered, moved, or its key is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyFailure {
    pub registry_id: RegistryId,
    /// Why, without any secret: the seal error.
    pub reason: String,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// The key everything is sealed under afterwards.
    pub primary_key_id: String,
    /// Blobs sealed again under the primary in this run.
    pub rewrapped: u64,
    /// Blobs that changed while this run was at them (a rotation sealed
    /// them under the primary already).
    pub raced: u64,
    pub failures: Vec<RekeyFailure>,
    /// Blobs still under other keys after this run (the failures among
    /// them): 0 when the old keys can go.
    pub remaining: u64,
}

/// Who a run acts as, for its audit events.
#[derive(Debug, Clone, Copy)]
pub enum RekeyActor<'a> {
    Principal(&'a Principal),
    /// The `rekey` command, named in the events.
    Command(&'a str),
}

impl RekeyActor<'_> {
    fn event(&self, blob: &KeySample, outcome: AuditOutcome, detail: String) -> AuditEvent {
        match self {
            Self::Principal(principal) => AuditEvent::new(
                principal,
                AuditAction::RegistryRekey,
                Some(&blob.registry_id),
                outcome,
                detail,
            ),
            Self::Command(actor) => AuditEvent::by(
                &blob.organization,
                actor,
                AuditAction::RegistryRekey,
                Some(&blob.registry_id),
                outcome,
                detail,
            ),
        }
    }
}

/// Re-wraps up to `limit` blobs of `scope` under the sealer's primary key.
pub async fn rekey(
    store: &dyn RegistryStore,
    sealer: &dyn Sealer,
    scope: RekeyScope<'_>,
    actor: RekeyActor<'_>,
    limit: u64,
) -> Result<RekeyReport> {
    let primary = sealer.primary_key_id();
    let organization = match scope {
        RekeyScope::Organization(organization) => Some(organization),
        RekeyScope::All => None,
    };
    let mut report = RekeyReport {
        primary_key_id: primary.to_owned(),
        rewrapped: 0,
        raced: 0,
        failures: Vec::new(),
        remaining: 0,
    };
    let mut after: Option<RegistryId> = None;
    let mut seen = 0;
    while seen < limit {
        let batch = store
            .sealed_under_other_keys(primary, organization, after.as_ref(), BATCH.min(limit - seen))
            .await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.registry_id.clone());
        seen += batch.len() as u64;
        for blob in &batch {
            rewrap(store, sealer, actor, blob, &mut report).await?;
        }
    }
    report.remaining = store.count_sealed_under_other_keys(primary, organization).await?;
    tracing::info!(
        primary_key = primary,
        rewrapped = report.rewrapped,
        raced = report.raced,
        failed = report.failures.len(),
        remaining = report.remaining,
        "rekey run ended"
    );
    Ok(report)
}

async fn rewrap(
    store: &dyn RegistryStore,
    sealer: &dyn Sealer,
    actor: RekeyActor<'_>,
    blob: &KeySample,
    report: &mut RekeyReport,
) -> Result<()> {
    let context = SealContext {
        registry_id: blob.registry_id.as_str(),
        kind: blob.kind,
    };
    let primary = sealer.primary_key_id();
    let sealed = sealer
        .open(context, &blob.sealed_credentials)
        .and_then(|plaintext| sealer.seal(context, &plaintext));
    let sealed = match sealed {
        Ok(sealed) => sealed,
        Err(error) => {
            tracing::warn!(registry_id = %blob.registry_id, key_id = blob.key_id, %error, "blob does not rekey");
            report.failures.push(RekeyFailure {
                registry_id: blob.registry_id.clone(),
                reason: error.to_string(),
            });
            return Ok(());
        }
    };
    let audit = actor.event(blob, AuditOutcome::Ok, format!("key_id={} -> {primary}", blob.key_id));
    if store.rewrap(blob, primary, &sealed, &audit).await? {
        report.rewrapped += 1;
    } else {
        report.raced += 1;
    }
    Ok(())
}

impl Registries {
    /// Re-wraps up to `limit` (0: the default) of the caller's
    /// organization's blobs under the primary master key. Admin only.
    pub async fn rekey(&self, principal: &Principal, limit: i64) -> Result<RekeyReport> {
        self.require(
            principal,
            Role::Admin,
            "rekeying registries",
            AuditAction::RegistryRekey,
            None,
        )
        .await?;
        let limit = match limit {
            0 => DEFAULT_REKEY_LIMIT,
            n if n < 0 => return Err(Error::invalid("max_registries", "must not be negative")),
            n => u64::try_from(n).map_or(MAX_REKEY_LIMIT, |n| n.min(MAX_REKEY_LIMIT)),
        };
        rekey(
            self.store().as_ref(),
            self.sealer().as_ref(),
            RekeyScope::Organization(&principal.organization),
            RekeyActor::Principal(principal),
            limit,
        )
        .await
    }
}
