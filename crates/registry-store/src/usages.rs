//! Usages, the intents of deployments, and namespace ownership.
//!
//! Lock order in every transaction: the registry row, the namespace claim,
//! the usage, the pull Secret row — so concurrent deployments, rotations and
//! deletions on PostgreSQL wait for each other instead of deadlocking.

use registry_core::audit::AuditEvent;
use registry_core::ports::store::{IntentOutcome, RecordedIntent, SecretIntent, UsageIntent};
use registry_core::usage::{Lease, PullSecretState, SecretKey, SyncStatus, Usage};
use registry_core::{RegistryId, Timestamp};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, LockType, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, UpdateMany,
};

use crate::entity::{namespace_owners, pull_secrets, registries, usages};
use crate::failure::Result;
use crate::registries::insert_audit;
use crate::rows::{secret_from, secret_row, usage_from, usage_row};

/// An update that makes pull Secrets want `revision` (0: deletion) now:
/// pending, due at once, attempts reset. The caller adds the filters.
pub(crate) fn wanting(revision: i64) -> UpdateMany<pull_secrets::Entity> {
    use pull_secrets::Column;
    pull_secrets::Entity::update_many()
        .col_expr(Column::DesiredRevision, Expr::value(revision))
        .col_expr(Column::Status, Expr::value(SyncStatus::Pending.as_str()))
        .col_expr(Column::NotBefore, Expr::value(0i64))
        .col_expr(Column::Attempts, Expr::value(0i32))
        .col_expr(Column::Error, Expr::value(""))
}

/// The filter of one pull Secret row.
pub(crate) fn secret_filter<Q: QueryFilter>(query: Q, key: &SecretKey) -> Q {
    use pull_secrets::Column;
    query
        .filter(Column::RegistryId.eq(key.registry_id.as_str()))
        .filter(Column::Target.eq(&key.target))
        .filter(Column::Namespace.eq(&key.namespace))
}

/// Marks a pull Secret for deletion when no usage needs it any more.
async fn collect_if_unused(txn: &DatabaseTransaction, key: &SecretKey) -> Result<()> {
    let users = usages::Entity::find()
        .filter(usages::Column::RegistryId.eq(key.registry_id.as_str()))
        .filter(usages::Column::Target.eq(&key.target))
        .filter(usages::Column::Namespace.eq(&key.namespace))
        .count(txn)
        .await?;
    if users == 0 {
        secret_filter(wanting(0), key).exec(txn).await?;
    }
    Ok(())
}

/// Claims a namespace for `organization`; `false` when another
/// organization owns it.
async fn claim_namespace(txn: &DatabaseTransaction, target: &str, namespace: &str, organization: &str) -> Result<bool> {
    namespace_owners::Entity::insert(namespace_owners::ActiveModel {
        target: Set(target.to_owned()),
        namespace: Set(namespace.to_owned()),
        organization: Set(organization.to_owned()),
        created_at: Set(Timestamp::now().0),
    })
    .on_conflict(
        OnConflict::columns([namespace_owners::Column::Target, namespace_owners::Column::Namespace])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    let owner: Option<String> = namespace_owners::Entity::find_by_id((target.to_owned(), namespace.to_owned()))
        .select_only()
        .column(namespace_owners::Column::Organization)
        .into_tuple()
        .one(txn)
        .await?;
    Ok(owner.as_deref() == Some(organization))
}

/// Gives up a namespace's claim when no usage and no pull Secret row is
/// left in it.
pub(crate) async fn release_claim_if_empty(txn: &DatabaseTransaction, target: &str, namespace: &str) -> Result<()> {
    let users = usages::Entity::find()
        .filter(usages::Column::Target.eq(target))
        .filter(usages::Column::Namespace.eq(namespace))
        .count(txn)
        .await?;
    let secrets = pull_secrets::Entity::find()
        .filter(pull_secrets::Column::Target.eq(target))
        .filter(pull_secrets::Column::Namespace.eq(namespace))
        .count(txn)
        .await?;
    if users == 0 && secrets == 0 {
        namespace_owners::Entity::delete_by_id((target.to_owned(), namespace.to_owned()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Inserts or replaces a usage; returns the one it replaced. Two replicas
/// recording one container at once: one inserts, the other replaces.
async fn upsert_usage(txn: &DatabaseTransaction, usage: &Usage) -> Result<Option<Usage>> {
    use usages::Column;
    let inserted = usages::Entity::insert(usage_row(usage))
        .on_conflict(
            OnConflict::columns([Column::Organization, Column::ContainerId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    if inserted == 1 {
        return Ok(None);
    }
    let key = (usage.organization.clone(), usage.container_id.clone());
    let earlier = usages::Entity::find_by_id(key.clone())
        .lock(LockType::Update)
        .one(txn)
        .await?
        .map(usage_from)
        .transpose()?;
    let mut row = usage_row(usage);
    row.organization = NotSet;
    row.container_id = NotSet;
    if let Some(earlier) = &earlier {
        row.created_at = Set(earlier.created_at.0);
    }
    usages::Entity::update_many()
        .set(row)
        .filter(Column::Organization.eq(&usage.organization))
        .filter(Column::ContainerId.eq(&usage.container_id))
        .exec(txn)
        .await?;
    Ok(earlier)
}

/// Makes the usage's pull Secret want `revision` (never lowering what it
/// wants), reviving one marked for deletion as a new generation. Takes
/// `lease` when the Secret is not synced at that revision and no one else
/// holds it. Returns the row and whether the lease was taken.
async fn want_secret(
    txn: &DatabaseTransaction,
    key: &SecretKey,
    intent: &SecretIntent,
    organization: &str,
    revision: i64,
    lease: &Lease,
) -> Result<(PullSecretState, bool)> {
    let now = Timestamp::now();
    let fresh = PullSecretState {
        registry_id: key.registry_id.clone(),
        organization: organization.to_owned(),
        target: key.target.clone(),
        namespace: key.namespace.clone(),
        secret_name: intent.secret_name.clone(),
        server: intent.server.clone(),
        desired_revision: revision,
        applied_revision: 0,
        generation: 1,
        status: SyncStatus::Pending,
        error: String::new(),
        attempts: 0,
        not_before: now,
        updated_at: now,
        refresh_at: None,
        written: None,
        lease: Some(lease.clone()),
    };
    let inserted = pull_secrets::Entity::insert(secret_row(&fresh))
        .on_conflict(
            OnConflict::columns([
                pull_secrets::Column::RegistryId,
                pull_secrets::Column::Target,
                pull_secrets::Column::Namespace,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    if inserted == 1 {
        return Ok((fresh, true));
    }
    let row = secret_filter(pull_secrets::Entity::find(), key)
        .lock(LockType::Update)
        .one(txn)
        .await?
        .ok_or_else(|| crate::failure::Failure::Corrupt(format!("pull secret row of {} vanished", key.namespace)))?;
    let mut state = secret_from(row)?;
    let before = state.clone();
    let lease_free = state.lease.as_ref().is_none_or(|l| l.until <= now);
    let mut take_lease = false;
    if state.desired_revision == 0 {
        // Wanted again: a new generation, so a deletion still in flight for
        // the old one leaves it alone.
        state.desired_revision = revision;
        state.generation += 1;
        state.status = SyncStatus::Pending;
        state.error.clear();
        state.attempts = 0;
        state.not_before = now;
        take_lease = lease_free;
    } else {
        state.desired_revision = state.desired_revision.max(revision);
        if !state.is_synced() || state.refresh_due(now) {
            if state.status == SyncStatus::Synced {
                state.status = SyncStatus::Pending;
            }
            take_lease = lease_free;
        }
    }
    if take_lease {
        state.lease = Some(lease.clone());
    }
    state.server.clone_from(&intent.server);
    state.secret_name.clone_from(&intent.secret_name);
    if state == before {
        return Ok((state, false));
    }
    state.updated_at = now;
    let mut row = secret_row(&state);
    for column in [&mut row.registry_id, &mut row.target, &mut row.namespace] {
        *column = NotSet;
    }
    secret_filter(pull_secrets::Entity::update_many().set(row), key)
        .exec(txn)
        .await?;
    Ok((state, take_lease))
}

pub(crate) async fn record_intent(db: &DatabaseConnection, intent: &UsageIntent<'_>) -> Result<IntentOutcome> {
    let txn = db.begin().await?;
    let usage = intent.usage;
    // The registry, locked against a concurrent delete or rotation until
    // this commits.
    let revision = match &usage.registry_id {
        Some(id) => {
            let revision: Option<i64> = registries::Entity::find_by_id(id.to_string())
                .filter(registries::Column::Organization.eq(&usage.organization))
                .select_only()
                .column(registries::Column::CredentialRevision)
                .lock(LockType::Share)
                .into_tuple()
                .one(&txn)
                .await?;
            match revision {
                Some(revision) => revision,
                None => return Ok(IntentOutcome::RegistryGone),
            }
        }
        None => 0,
    };
    if let Some(namespace) = &usage.namespace
        && !claim_namespace(&txn, &usage.target, namespace, &usage.organization).await?
    {
        return Ok(IntentOutcome::NamespaceTaken);
    }
    let recorded_usage = Usage {
        credential_revision: revision,
        ..usage.clone()
    };
    let earlier = upsert_usage(&txn, &recorded_usage).await?;
    let (secret, leased) = match (intent.secret, usage.secret_key()) {
        (Some(secret), Some(key)) => {
            let (row, leased) = want_secret(&txn, &key, secret, &usage.organization, revision, intent.lease).await?;
            (Some(row), leased)
        }
        _ => (None, false),
    };
    if let Some(earlier) = &earlier {
        leave_old_place(&txn, earlier, usage).await?;
    }
    insert_audit(&txn, intent.audit).await?;
    txn.commit().await?;
    Ok(IntentOutcome::Recorded(Box::new(RecordedIntent {
        revision,
        earlier,
        secret,
        leased,
    })))
}

/// A usage moved (another namespace, registry or target): the Secret of its
/// old place goes if nothing else needs it, and so does the old namespace's
/// claim.
async fn leave_old_place(txn: &DatabaseTransaction, earlier: &Usage, now: &Usage) -> Result<()> {
    if let Some(old) = earlier.secret_key()
        && now.secret_key().as_ref() != Some(&old)
    {
        collect_if_unused(txn, &old).await?;
    }
    if let Some(namespace) = &earlier.namespace
        && (earlier.target != now.target || earlier.namespace != now.namespace)
    {
        release_claim_if_empty(txn, &earlier.target, namespace).await?;
    }
    Ok(())
}

/// A Secret marked for deletion that a restored usage needs again: it wants
/// its registry's current revision, as a new generation.
async fn want_again(txn: &DatabaseTransaction, key: &SecretKey) -> Result<()> {
    let revision: Option<i64> = registries::Entity::find_by_id(key.registry_id.to_string())
        .select_only()
        .column(registries::Column::CredentialRevision)
        .into_tuple()
        .one(txn)
        .await?;
    let Some(revision) = revision else { return Ok(()) };
    secret_filter(wanting(revision), key)
        .filter(pull_secrets::Column::DesiredRevision.eq(0i64))
        .col_expr(
            pull_secrets::Column::Generation,
            Expr::col(pull_secrets::Column::Generation).add(1),
        )
        .exec(txn)
        .await?;
    Ok(())
}

pub(crate) async fn abandon_intent(
    db: &DatabaseConnection,
    intent: &UsageIntent<'_>,
    earlier: Option<&Usage>,
    audit: &AuditEvent,
) -> Result<()> {
    let txn = db.begin().await?;
    let usage = intent.usage;
    match earlier {
        Some(earlier) => {
            upsert_usage(&txn, earlier).await?;
            if let Some(old) = earlier.secret_key() {
                want_again(&txn, &old).await?;
            }
        }
        None => {
            usages::Entity::delete_by_id((usage.organization.clone(), usage.container_id.clone()))
                .exec(&txn)
                .await?;
        }
    }
    if let Some(key) = usage.secret_key() {
        collect_if_unused(&txn, &key).await?;
        secret_filter(
            pull_secrets::Entity::update_many()
                .col_expr(pull_secrets::Column::LeaseOwner, Expr::value(""))
                .col_expr(pull_secrets::Column::LeaseUntil, Expr::value(0i64))
                .filter(pull_secrets::Column::LeaseOwner.eq(&intent.lease.owner)),
            &key,
        )
        .exec(&txn)
        .await?;
    }
    if let Some(namespace) = &usage.namespace {
        release_claim_if_empty(&txn, &usage.target, namespace).await?;
    }
    insert_audit(&txn, audit).await?;
    txn.commit().await?;
    Ok(())
}

pub(crate) async fn release_usage(
    db: &DatabaseConnection,
    organization: &str,
    container_id: &str,
    audit: &AuditEvent,
) -> Result<Option<Usage>> {
    let txn = db.begin().await?;
    let key = (organization.to_owned(), container_id.to_owned());
    let Some(usage) = usages::Entity::find_by_id(key.clone())
        .lock(LockType::Update)
        .one(&txn)
        .await?
        .map(usage_from)
        .transpose()?
    else {
        return Ok(None);
    };
    usages::Entity::delete_by_id(key).exec(&txn).await?;
    if let Some(secret) = usage.secret_key() {
        collect_if_unused(&txn, &secret).await?;
    }
    if let Some(namespace) = &usage.namespace {
        release_claim_if_empty(&txn, &usage.target, namespace).await?;
    }
    let audit = AuditEvent {
        registry_id: usage.registry_id.clone(),
        ..audit.clone()
    };
    insert_audit(&txn, &audit).await?;
    txn.commit().await?;
    Ok(Some(usage))
}

pub(crate) async fn usage(db: &DatabaseConnection, organization: &str, container_id: &str) -> Result<Option<Usage>> {
    usages::Entity::find_by_id((organization.to_owned(), container_id.to_owned()))
        .one(db)
        .await?
        .map(usage_from)
        .transpose()
}

pub(crate) async fn usages(
    db: &DatabaseConnection,
    organization: &str,
    registry_id: Option<&RegistryId>,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Usage>> {
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
        .all(db)
        .await?
        .into_iter()
        .map(usage_from)
        .collect()
}
