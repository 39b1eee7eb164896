//! Rows <-> domain values. A row that does not read back is
//! [`Failure::Corrupt`], naming the row.

use registry_core::audit::{AuditAction, AuditEvent, AuditOutcome};
use registry_core::ports::orchestrators::SecretVersion;
use registry_core::usage::{Lease, PullSecretState, SyncStatus, Usage};
use registry_core::{CredentialHint, Registry, RegistryId, RegistryKind, StoredRegistry, Timestamp};
use sea_orm::ActiveValue::Set;

use crate::entity::{audit_events, pull_secrets, registries, usages};
use crate::failure::{Failure, Result};

pub(crate) fn registry_row(stored: &StoredRegistry, request_id: Option<&str>) -> registries::ActiveModel {
    let r = &stored.registry;
    registries::ActiveModel {
        id: Set(r.id.to_string()),
        organization: Set(r.organization.clone()),
        name: Set(r.name.clone()),
        kind: Set(r.kind.key().to_owned()),
        server: Set(r.server.clone()),
        // Serialising a Vec of plain structs cannot fail.
        hints: Set(serde_json::to_string(&r.hints).unwrap_or_else(|_| "[]".to_owned())),
        created_by: Set(r.created_by.clone()),
        created_at: Set(r.created_at.0),
        updated_at: Set(r.updated_at.0),
        etag: Set(r.etag.clone()),
        credential_revision: Set(r.credential_revision),
        key_id: Set(stored.key_id.clone()),
        sealed_credentials: Set(stored.sealed_credentials.clone()),
        request_id: Set(request_id.map(str::to_owned)),
    }
}

pub(crate) fn registry_from(row: registries::Model) -> Result<StoredRegistry> {
    let corrupt = |what: &str| Failure::Corrupt(format!("registry {}: {what}", row.id));
    let id = RegistryId::parse(&row.id).ok_or_else(|| corrupt("malformed id"))?;
    let kind: RegistryKind = row.kind.parse().map_err(|_| corrupt("unknown kind"))?;
    let hints: Vec<CredentialHint> = serde_json::from_str(&row.hints).map_err(|_| corrupt("malformed hints"))?;
    Ok(StoredRegistry {
        registry: Registry {
            id,
            organization: row.organization,
            name: row.name,
            kind,
            server: row.server,
            hints,
            created_by: row.created_by,
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
            etag: row.etag,
            credential_revision: row.credential_revision,
        },
        key_id: row.key_id,
        sealed_credentials: row.sealed_credentials,
    })
}

pub(crate) fn audit_row(event: &AuditEvent) -> audit_events::ActiveModel {
    audit_events::ActiveModel {
        at: Set(event.at.0),
        organization: Set(event.organization.clone()),
        actor: Set(event.actor.clone()),
        action: Set(event.action.as_str().to_owned()),
        registry_id: Set(event.registry_id.as_ref().map(ToString::to_string)),
        outcome: Set(event.outcome.as_str().to_owned()),
        detail: Set(event.detail.clone()),
        request_id: Set(event.request_id.clone()),
        peer: Set(event.peer.clone()),
        ..Default::default()
    }
}

pub(crate) fn audit_from(row: audit_events::Model) -> Result<AuditEvent> {
    let corrupt = |what: &str| Failure::Corrupt(format!("audit event {}: {what}", row.id));
    Ok(AuditEvent {
        at: Timestamp(row.at),
        action: AuditAction::parse(&row.action).ok_or_else(|| corrupt("unknown action"))?,
        outcome: AuditOutcome::parse(&row.outcome).ok_or_else(|| corrupt("unknown outcome"))?,
        registry_id: match row.registry_id.as_deref() {
            Some(id) => Some(RegistryId::parse(id).ok_or_else(|| corrupt("malformed registry id"))?),
            None => None,
        },
        organization: row.organization,
        actor: row.actor,
        detail: row.detail,
        request_id: row.request_id,
        peer: row.peer,
    })
}

pub(crate) fn usage_row(usage: &Usage) -> usages::ActiveModel {
    usages::ActiveModel {
        organization: Set(usage.organization.clone()),
        container_id: Set(usage.container_id.clone()),
        registry_id: Set(usage.registry_id.as_ref().map(ToString::to_string)),
        environment: Set(usage.environment.clone()),
        target: Set(usage.target.clone()),
        namespace: Set(usage.namespace.clone()),
        image: Set(usage.image.clone()),
        credential_revision: Set(usage.credential_revision),
        created_at: Set(usage.created_at.0),
        updated_at: Set(usage.updated_at.0),
    }
}

pub(crate) fn usage_from(row: usages::Model) -> Result<Usage> {
    let registry_id = match row.registry_id {
        Some(id) => Some(
            RegistryId::parse(&id)
                .ok_or_else(|| Failure::Corrupt(format!("usage {}: malformed registry id", row.container_id)))?,
        ),
        None => None,
    };
    Ok(Usage {
        organization: row.organization,
        container_id: row.container_id,
        registry_id,
        environment: row.environment,
        target: row.target,
        namespace: row.namespace,
        image: row.image,
        credential_revision: row.credential_revision,
        created_at: Timestamp(row.created_at),
        updated_at: Timestamp(row.updated_at),
    })
}

pub(crate) fn secret_row(state: &PullSecretState) -> pull_secrets::ActiveModel {
    let written = state.written.clone().unwrap_or_default();
    let lease = state.lease.clone().unwrap_or(Lease {
        owner: String::new(),
        until: Timestamp(0),
    });
    pull_secrets::ActiveModel {
        registry_id: Set(state.registry_id.to_string()),
        target: Set(state.target.clone()),
        namespace: Set(state.namespace.clone()),
        organization: Set(state.organization.clone()),
        secret_name: Set(state.secret_name.clone()),
        server: Set(state.server.clone()),
        desired_revision: Set(state.desired_revision),
        applied_revision: Set(state.applied_revision),
        status: Set(state.status.as_str().to_owned()),
        error: Set(state.error.clone()),
        attempts: Set(state.attempts),
        not_before: Set(state.not_before.0),
        updated_at: Set(state.updated_at.0),
        refresh_at: Set(state.refresh_at.map_or(0, |t| t.0)),
        generation: Set(state.generation),
        written_uid: Set(written.uid),
        written_version: Set(written.resource_version),
        lease_owner: Set(lease.owner),
        lease_until: Set(lease.until.0),
    }
}

pub(crate) fn secret_from(row: pull_secrets::Model) -> Result<PullSecretState> {
    let corrupt = |what: &str| {
        Failure::Corrupt(format!(
            "pull secret of {} in {} on {}: {what}",
            row.registry_id, row.namespace, row.target
        ))
    };
    let written = (!row.written_uid.is_empty() || !row.written_version.is_empty()).then(|| SecretVersion {
        uid: row.written_uid.clone(),
        resource_version: row.written_version.clone(),
    });
    let lease = (!row.lease_owner.is_empty()).then(|| Lease {
        owner: row.lease_owner.clone(),
        until: Timestamp(row.lease_until),
    });
    Ok(PullSecretState {
        registry_id: RegistryId::parse(&row.registry_id).ok_or_else(|| corrupt("malformed registry id"))?,
        status: SyncStatus::parse(&row.status).ok_or_else(|| corrupt("unknown status"))?,
        organization: row.organization,
        target: row.target,
        namespace: row.namespace,
        secret_name: row.secret_name,
        server: row.server,
        desired_revision: row.desired_revision,
        applied_revision: row.applied_revision,
        generation: row.generation,
        error: row.error,
        attempts: row.attempts,
        not_before: Timestamp(row.not_before),
        updated_at: Timestamp(row.updated_at),
        refresh_at: (row.refresh_at != 0).then_some(Timestamp(row.refresh_at)),
        written,
        lease,
    })
}
