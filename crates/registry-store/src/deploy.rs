//! [`DeployStore`] for [`SeaStore`]: usages and the sync state of pull
//! Secrets.

use std::collections::BTreeMap;

use async_trait::async_trait;
use registry_core::deploy::{DeployStore, PullSecretState, SyncStatus, Usage};
use registry_core::ports::{AuditEvent, StoreError};
use registry_core::{RegistryId, StoredRegistry, Timestamp};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait, UpdateMany,
};

use crate::entity::{audit_events, pull_secrets, registries, usages};
use crate::{SeaStore, audit_row, from_row, unavailable};

fn usage_row(usage: &Usage) -> usages::ActiveModel {
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

fn usage_from(row: usages::Model) -> Result<Usage, StoreError> {
    let registry_id = match row.registry_id {
        Some(id) => Some(
            RegistryId::parse(&id)
                .ok_or_else(|| StoreError::Corrupt(format!("usage {}: malformed registry id", row.container_id)))?,
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

fn secret_row(state: &PullSecretState) -> pull_secrets::ActiveModel {
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
    }
}

fn secret_from(row: pull_secrets::Model) -> Result<PullSecretState, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "pull secret of {} in {}: {what}",
            row.registry_id, row.namespace
        ))
    };
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
        error: row.error,
        attempts: row.attempts,
        not_before: Timestamp(row.not_before),
        updated_at: Timestamp(row.updated_at),
        refresh_at: (row.refresh_at != 0).then_some(Timestamp(row.refresh_at)),
    })
}

/// What a sync outcome writes, apart from which Secret it is about.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct OutcomeKey<'a> {
    registry_id: &'a str,
    target: &'a str,
    desired_revision: i64,
    applied_revision: i64,
    status: &'static str,
    error: &'a str,
    attempts: i32,
    not_before: i64,
    refresh_at: i64,
}

impl<'a> OutcomeKey<'a> {
    fn of(outcome: &'a PullSecretState) -> Self {
        Self {
            registry_id: outcome.registry_id.as_str(),
            target: &outcome.target,
            desired_revision: outcome.desired_revision,
            applied_revision: outcome.applied_revision,
            status: outcome.status.as_str(),
            error: &outcome.error,
            attempts: outcome.attempts,
            // Synced rows wait for nothing.
            not_before: if outcome.status == SyncStatus::Synced {
                0
            } else {
                outcome.not_before.0
            },
            refresh_at: outcome.refresh_at.map_or(0, |t| t.0),
        }
    }
}

/// The key of a usage's pull Secret, for Kubernetes usages of a registry.
fn secret_key(usage: &Usage) -> Option<(&RegistryId, &str, &str)> {
    Some((
        usage.registry_id.as_ref()?,
        usage.target.as_str(),
        usage.namespace.as_deref()?,
    ))
}

/// An update that makes pull Secrets want `revision` (0: deletion) now:
/// pending, due at once, attempts reset. The caller adds the filters.
pub(crate) fn wanting(revision: i64) -> UpdateMany<pull_secrets::Entity> {
    use pull_secrets::Column;
    pull_secrets::Entity::update_many()
        .col_expr(Column::DesiredRevision, Expr::value(revision))
        .col_expr(Column::Status, Expr::value(SyncStatus::Pending.as_str()))
        .col_expr(Column::NotBefore, Expr::value(0i64))
        .col_expr(Column::Attempts, Expr::value(0i32))
}

/// Marks a pull Secret for deletion when no usage needs it any more.
async fn collect_if_unused(txn: &DatabaseTransaction, key: (&RegistryId, &str, &str)) -> Result<(), StoreError> {
    let (registry_id, target, namespace) = key;
    let users = usages::Entity::find()
        .filter(usages::Column::RegistryId.eq(registry_id.as_str()))
        .filter(usages::Column::Target.eq(target))
        .filter(usages::Column::Namespace.eq(namespace))
        .count(txn)
        .await
        .map_err(unavailable)?;
    if users == 0 {
        wanting(0)
            .filter(pull_secrets::Column::RegistryId.eq(registry_id.as_str()))
            .filter(pull_secrets::Column::Target.eq(target))
            .filter(pull_secrets::Column::Namespace.eq(namespace))
            .exec(txn)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

async fn upsert_secret(txn: &DatabaseTransaction, state: &PullSecretState) -> Result<(), StoreError> {
    use pull_secrets::Column;
    pull_secrets::Entity::delete_many()
        .filter(Column::RegistryId.eq(state.registry_id.as_str()))
        .filter(Column::Target.eq(&state.target))
        .filter(Column::Namespace.eq(&state.namespace))
        .exec(txn)
        .await
        .map_err(unavailable)?;
    pull_secrets::Entity::insert(secret_row(state))
        .exec_without_returning(txn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl DeployStore for SeaStore {
    async fn registry_by_id(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        registries::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .map_err(unavailable)?
            .map(from_row)
            .transpose()
    }

    async fn usage(&self, organization: &str, container_id: &str) -> Result<Option<Usage>, StoreError> {
        usages::Entity::find_by_id((organization.to_owned(), container_id.to_owned()))
            .one(&self.db)
            .await
            .map_err(unavailable)?
            .map(usage_from)
            .transpose()
    }

    async fn record_usage(
        &self,
        usage: &Usage,
        secret: Option<&PullSecretState>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin().await.map_err(unavailable)?;
        let earlier = usages::Entity::find_by_id((usage.organization.clone(), usage.container_id.clone()))
            .one(&txn)
            .await
            .map_err(unavailable)?
            .map(usage_from)
            .transpose()?;
        if earlier.is_some() {
            usages::Entity::delete_by_id((usage.organization.clone(), usage.container_id.clone()))
                .exec(&txn)
                .await
                .map_err(unavailable)?;
        }
        usages::Entity::insert(usage_row(usage))
            .exec_without_returning(&txn)
            .await
            .map_err(unavailable)?;
        if let Some(secret) = secret {
            upsert_secret(&txn, secret).await?;
        }
        if let Some(earlier) = &earlier
            && let Some(old_key) = secret_key(earlier)
            && secret_key(usage) != Some(old_key)
        {
            collect_if_unused(&txn, old_key).await?;
        }
        audit_events::Entity::insert(audit_row(audit))
            .exec_without_returning(&txn)
            .await
            .map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)
    }

    async fn release_usage(
        &self,
        organization: &str,
        container_id: &str,
        audit: &AuditEvent,
    ) -> Result<Option<Usage>, StoreError> {
        let txn = self.db.begin().await.map_err(unavailable)?;
        let key = (organization.to_owned(), container_id.to_owned());
        let Some(usage) = usages::Entity::find_by_id(key.clone())
            .one(&txn)
            .await
            .map_err(unavailable)?
            .map(usage_from)
            .transpose()?
        else {
            txn.rollback().await.map_err(unavailable)?;
            return Ok(None);
        };
        usages::Entity::delete_by_id(key)
            .exec(&txn)
            .await
            .map_err(unavailable)?;
        if let Some(secret) = secret_key(&usage) {
            collect_if_unused(&txn, secret).await?;
        }
        let audit = AuditEvent {
            registry_id: usage.registry_id.clone(),
            ..audit.clone()
        };
        audit_events::Entity::insert(audit_row(&audit))
            .exec_without_returning(&txn)
            .await
            .map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)?;
        Ok(Some(usage))
    }

    async fn usages(
        &self,
        organization: &str,
        registry_id: Option<&RegistryId>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Usage>, StoreError> {
        use usages::Column;
        let mut select = usages::Entity::find().filter(Column::Organization.eq(organization));
        if let Some(id) = registry_id {
            select = select.filter(Column::RegistryId.eq(id.as_str()));
        }
        if let Some(after) = after {
            select = select.filter(Column::ContainerId.gt(after));
        }
        select
            .order_by_asc(Column::ContainerId)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(usage_from)
            .collect()
    }

    async fn pull_secret(
        &self,
        registry_id: &RegistryId,
        target: &str,
        namespace: &str,
    ) -> Result<Option<PullSecretState>, StoreError> {
        pull_secrets::Entity::find_by_id((registry_id.to_string(), target.to_owned(), namespace.to_owned()))
            .one(&self.db)
            .await
            .map_err(unavailable)?
            .map(secret_from)
            .transpose()
    }

    async fn pull_secrets_of(&self, registry_id: &RegistryId) -> Result<Vec<PullSecretState>, StoreError> {
        use pull_secrets::Column;
        pull_secrets::Entity::find()
            .filter(Column::RegistryId.eq(registry_id.as_str()))
            .order_by_asc(Column::Target)
            .order_by_asc(Column::Namespace)
            .all(&self.db)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(secret_from)
            .collect()
    }

    async fn due_pull_secrets(&self, now: Timestamp, limit: u64) -> Result<Vec<PullSecretState>, StoreError> {
        use pull_secrets::Column;
        pull_secrets::Entity::find()
            .filter(
                Column::Status
                    .ne(SyncStatus::Synced.as_str())
                    .and(Column::NotBefore.lte(now.0))
                    // Synced Secrets whose login expires are re-applied.
                    .or(Column::Status
                        .eq(SyncStatus::Synced.as_str())
                        .and(Column::RefreshAt.ne(0i64))
                        .and(Column::RefreshAt.lte(now.0))),
            )
            .order_by_asc(Column::NotBefore)
            .order_by_asc(Column::UpdatedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(secret_from)
            .collect()
    }

    async fn record_sync(&self, outcomes: &[PullSecretState]) -> Result<(), StoreError> {
        use pull_secrets::Column;
        // Outcomes that write the same values (a rotation: thousands of
        // Secrets now synced at one revision) go in one statement per chunk.
        let mut groups: BTreeMap<OutcomeKey<'_>, Vec<&str>> = BTreeMap::new();
        let mut deletions = Vec::new();
        for outcome in outcomes {
            if outcome.desired_revision == 0 && outcome.status == SyncStatus::Synced {
                deletions.push(outcome);
            } else {
                groups
                    .entry(OutcomeKey::of(outcome))
                    .or_default()
                    .push(&outcome.namespace);
            }
        }
        let txn = self.db.begin().await.map_err(unavailable)?;
        for outcome in deletions {
            // Deleted: the row goes, unless a new usage wants it again.
            let registry_gone = Column::RegistryId.not_in_subquery(
                Query::select()
                    .column(registries::Column::Id)
                    .from(registries::Entity)
                    .to_owned(),
            );
            pull_secrets::Entity::delete_many()
                .filter(Column::RegistryId.eq(outcome.registry_id.as_str()))
                .filter(Column::Target.eq(&outcome.target))
                .filter(Column::Namespace.eq(&outcome.namespace))
                .filter(Column::DesiredRevision.eq(0i64).or(registry_gone))
                .exec(&txn)
                .await
                .map_err(unavailable)?;
        }
        let now = Timestamp::now().0;
        for (key, namespaces) in groups {
            for chunk in namespaces.chunks(500) {
                // A newer rotation or a deletion since these outcomes were
                // computed wins.
                pull_secrets::Entity::update_many()
                    .col_expr(Column::DesiredRevision, Expr::value(key.desired_revision))
                    .col_expr(Column::AppliedRevision, Expr::value(key.applied_revision))
                    .col_expr(Column::Status, Expr::value(key.status))
                    .col_expr(Column::Error, Expr::value(key.error))
                    .col_expr(Column::Attempts, Expr::value(key.attempts))
                    .col_expr(Column::NotBefore, Expr::value(key.not_before))
                    .col_expr(Column::RefreshAt, Expr::value(key.refresh_at))
                    .col_expr(Column::UpdatedAt, Expr::value(now))
                    .filter(Column::RegistryId.eq(key.registry_id))
                    .filter(Column::Target.eq(key.target))
                    .filter(Column::Namespace.is_in(chunk.iter().copied()))
                    .filter(Column::DesiredRevision.ne(0i64))
                    .filter(Column::DesiredRevision.lte(key.desired_revision))
                    .exec(&txn)
                    .await
                    .map_err(unavailable)?;
            }
        }
        txn.commit().await.map_err(unavailable)
    }
}
