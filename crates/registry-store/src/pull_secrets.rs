//! The sync loop's side of pull Secret rows: claiming due work under a
//! lease, recording each outcome without ever lowering what a row wants,
//! and marking drift.

use registry_core::audit::AuditEvent;
use registry_core::ports::orchestrators::SecretVersion;
use registry_core::ports::store::{SecretOutcome, SyncResult};
use registry_core::usage::{Lease, PullSecretState, Replica, SecretKey};
use registry_core::{RegistryId, Timestamp};
use sea_orm::sea_query::{Expr, Func, LockBehavior, LockType, Order, Query, SelectStatement, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait, UpdateMany,
};

use crate::entity::pull_secrets::{self, Column};
use crate::failure::Result;
use crate::registries::insert_audit;
use crate::rows::secret_from;
use crate::usages::{release_claim_if_empty, secret_filter};

const SYNCED: &str = "synced";
const PENDING: &str = "pending";
const FAILED: &str = "failed";

/// The two kinds of due rows, each claimed in the order of its index
/// (migration `m20261202_000005_claim_order`).
#[derive(Clone, Copy)]
enum Due {
    /// Not in their desired state and past their back-off, oldest first.
    Unsynced,
    /// Synced with a login due for refresh, soonest first.
    Refresh,
}

impl Due {
    /// The rows of this kind due at `now` that no live writer holds, in
    /// claim order. The conditions repeat the partial indexes' predicates
    /// word for word, with their constants written into the SQL rather than
    /// bound: a prepared statement's generic plan can only use a partial
    /// index whose predicate it can prove without the parameters' values
    /// (with `status <> $4` PostgreSQL falls back to scanning and sorting
    /// the table on every claim).
    fn select(self, now: Timestamp, limit: u64) -> SelectStatement {
        let status = || Expr::col(Column::Status);
        let synced = || Expr::cust(format!("'{SYNCED}'"));
        let mut select = Query::select();
        select
            .columns([Column::RegistryId, Column::Target, Column::Namespace])
            .from(pull_secrets::Entity)
            .and_where(Column::LeaseUntil.lte(now.0));
        match self {
            Self::Unsynced => select
                .and_where(status().ne(synced()))
                .and_where(Column::NotBefore.lte(now.0))
                .order_by(Column::NotBefore, Order::Asc)
                .order_by(Column::UpdatedAt, Order::Asc),
            Self::Refresh => select
                .and_where(status().eq(synced()))
                .and_where(Expr::col(Column::RefreshAt).ne(Expr::cust("0")))
                .and_where(Column::RefreshAt.lte(now.0))
                .order_by(Column::RefreshAt, Order::Asc),
        };
        select
            .limit(limit)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .to_owned()
    }
}

/// Claims up to `limit` due rows under `lease`: unsynced ones first, then
/// logins due for refresh.
pub(crate) async fn claim_due(
    db: &DatabaseConnection,
    now: Timestamp,
    lease: &Lease,
    limit: u64,
) -> Result<Vec<PullSecretState>> {
    let mut claimed = claim(db, Due::Unsynced, now, lease, limit).await?;
    let left = limit.saturating_sub(claimed.len() as u64);
    if left > 0 {
        claimed.extend(claim(db, Due::Refresh, now, lease, left).await?);
    }
    Ok(claimed)
}

/// One statement, the usual queue claim: the due rows nobody holds (on
/// PostgreSQL locked as they are picked, skipping those another replica is
/// picking), leased and returned. SQLite has a single writer and no row
/// locks; its backend leaves the lock clause out.
async fn claim(
    db: &DatabaseConnection,
    due: Due,
    now: Timestamp,
    lease: &Lease,
    limit: u64,
) -> Result<Vec<PullSecretState>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let key = Expr::tuple([
        Expr::col(Column::RegistryId).into(),
        Expr::col(Column::Target).into(),
        Expr::col(Column::Namespace).into(),
    ]);
    let claim = Query::update()
        .table(pull_secrets::Entity)
        .values([
            (Column::LeaseOwner, lease.owner.as_str().into()),
            (Column::LeaseUntil, lease.until.0.into()),
        ])
        .and_where(key.in_subquery(due.select(now, limit)))
        .returning_all()
        .to_owned();
    let mut rows = pull_secrets::Entity::find()
        .from_raw_sql(db.get_database_backend().build(&claim))
        .all(db)
        .await?;
    // RETURNING has no order: restore the one they were picked in.
    match due {
        Due::Unsynced => rows.sort_by_key(|row| (row.not_before, row.updated_at)),
        Due::Refresh => rows.sort_by_key(|row| row.refresh_at),
    }
    rows.into_iter().map(secret_from).collect()
}

/// `CASE WHEN condition THEN then ELSE otherwise END`.
fn case(condition: SimpleExpr, then: impl Into<SimpleExpr>, otherwise: impl Into<SimpleExpr>) -> SimpleExpr {
    Expr::case(condition, then.into()).finally(otherwise.into()).into()
}

/// The row is not held by another live writer at `now`.
fn not_leased_by_other(now: Timestamp) -> SimpleExpr {
    Expr::col(Column::LeaseUntil)
        .lte(now.0)
        .or(Expr::col(Column::LeaseOwner).eq(""))
}

/// An update of one row, conditional on `owner`'s lease (which it releases).
fn update_of(key: &SecretKey, owner: Option<&str>, now: Timestamp) -> UpdateMany<pull_secrets::Entity> {
    let mut update =
        secret_filter(pull_secrets::Entity::update_many(), key).col_expr(Column::UpdatedAt, Expr::value(now.0));
    if let Some(owner) = owner {
        update = update
            .filter(Column::LeaseOwner.eq(owner))
            .col_expr(Column::LeaseOwner, Expr::value(""))
            .col_expr(Column::LeaseUntil, Expr::value(0i64));
    }
    update
}

pub(crate) async fn record_outcome(
    db: &DatabaseConnection,
    key: &SecretKey,
    outcome: &SecretOutcome,
    owner: Option<&str>,
) -> Result<bool> {
    let txn = db.begin().await?;
    let updated = write_outcome(&txn, key, outcome, owner).await?;
    txn.commit().await?;
    Ok(updated)
}

/// Records several outcomes in one transaction (one commit for all of
/// them); returns how many rows were updated.
pub(crate) async fn record_outcomes(db: &DatabaseConnection, outcomes: &[SyncResult]) -> Result<usize> {
    let txn = db.begin().await?;
    let mut updated = 0;
    for result in outcomes {
        updated += usize::from(write_outcome(&txn, &result.key, &result.outcome, Some(&result.lease_owner)).await?);
        if let Some(audit) = &result.audit {
            insert_audit(&txn, audit).await?;
        }
    }
    txn.commit().await?;
    Ok(updated)
}

async fn write_outcome(
    db: &DatabaseTransaction,
    key: &SecretKey,
    outcome: &SecretOutcome,
    owner: Option<&str>,
) -> Result<bool> {
    let now = Timestamp::now();
    let update = update_of(key, owner, now);
    let updated = match outcome {
        SecretOutcome::Applied {
            revision,
            version,
            refresh_at,
            warning,
        } => {
            let wants_it = Expr::col(Column::DesiredRevision).eq(*revision);
            // Without a lease, another writer's result is left for it to
            // settle.
            let settles = match owner {
                Some(_) => wants_it.clone(),
                None => wants_it.clone().and(not_leased_by_other(now)),
            };
            let newest = Expr::val(*revision).gte(Expr::col(Column::AppliedRevision));
            update
                .col_expr(
                    Column::AppliedRevision,
                    Func::greatest([Expr::col(Column::AppliedRevision).into(), Expr::val(*revision).into()]).into(),
                )
                .col_expr(
                    Column::WrittenUid,
                    case(newest.clone(), version.uid.as_str(), Expr::col(Column::WrittenUid)),
                )
                .col_expr(
                    Column::WrittenVersion,
                    case(
                        newest,
                        version.resource_version.as_str(),
                        Expr::col(Column::WrittenVersion),
                    ),
                )
                .col_expr(
                    Column::Status,
                    case(
                        settles.clone(),
                        SYNCED,
                        case(wants_it.clone(), Expr::col(Column::Status), PENDING),
                    ),
                )
                .col_expr(Column::Error, case(settles, warning.as_str(), Expr::col(Column::Error)))
                .col_expr(Column::Attempts, Expr::value(0i32))
                // Still wanting a newer revision: due again at once.
                .col_expr(Column::NotBefore, case(wants_it, Expr::col(Column::NotBefore), 0i64))
                .col_expr(Column::RefreshAt, Expr::value(refresh_at.map_or(0, |t| t.0)))
                .exec(db)
                .await?
                .rows_affected
        }
        SecretOutcome::Deleted => return record_deleted(db, key, owner, now).await,
        SecretOutcome::Retry { not_before, error } => {
            retry_at(update, *not_before, error, PENDING, false)
                .exec(db)
                .await?
                .rows_affected
        }
        SecretOutcome::Failed { error, not_before } => {
            retry_at(update, *not_before, error, FAILED, true)
                .exec(db)
                .await?
                .rows_affected
        }
        SecretOutcome::RegistryGone => {
            update
                .col_expr(Column::DesiredRevision, Expr::value(0i64))
                .col_expr(Column::Status, Expr::value(PENDING))
                .col_expr(Column::NotBefore, Expr::value(0i64))
                .exec(db)
                .await?
                .rows_affected
        }
    };
    Ok(updated == 1)
}

/// An attempt that did not complete: tried again at `not_before`. A synced
/// Secret whose refresh failed stays synced (its login is still valid) and
/// its refresh moves to `not_before`.
fn retry_at(
    update: UpdateMany<pull_secrets::Entity>,
    not_before: Timestamp,
    error: &str,
    status: &'static str,
    count: bool,
) -> UpdateMany<pull_secrets::Entity> {
    let holds_it = Expr::col(Column::Status)
        .eq(SYNCED)
        .and(Expr::col(Column::AppliedRevision).eq(Expr::col(Column::DesiredRevision)))
        .and(Expr::col(Column::DesiredRevision).gt(0i64));
    let update = update
        .col_expr(Column::Status, case(holds_it, SYNCED, status))
        .col_expr(Column::Error, Expr::value(error))
        .col_expr(Column::NotBefore, Expr::value(not_before.0))
        .col_expr(
            Column::RefreshAt,
            case(
                Expr::col(Column::RefreshAt).ne(0i64),
                Expr::val(not_before.0),
                Expr::col(Column::RefreshAt),
            ),
        );
    if count {
        update.col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
    } else {
        update
    }
}

/// The Secret is gone: the row goes if it still wants that; a row wanted
/// again meanwhile stays, holding nothing, due at once.
async fn record_deleted(
    txn: &DatabaseTransaction,
    key: &SecretKey,
    owner: Option<&str>,
    now: Timestamp,
) -> Result<bool> {
    let mut delete = secret_filter(pull_secrets::Entity::delete_many(), key).filter(Column::DesiredRevision.eq(0i64));
    if let Some(owner) = owner {
        delete = delete.filter(Column::LeaseOwner.eq(owner));
    }
    let removed = delete.exec(txn).await?.rows_affected;
    let done = if removed == 1 {
        release_claim_if_empty(txn, &key.target, &key.namespace).await?;
        true
    } else {
        update_of(key, owner, now)
            .col_expr(Column::AppliedRevision, Expr::value(0i64))
            .col_expr(Column::WrittenUid, Expr::value(""))
            .col_expr(Column::WrittenVersion, Expr::value(""))
            .col_expr(Column::Status, Expr::value(PENDING))
            .col_expr(Column::NotBefore, Expr::value(0i64))
            .exec(txn)
            .await?
            .rows_affected
            == 1
    };
    Ok(done)
}

pub(crate) async fn mark_drifted(
    db: &DatabaseConnection,
    key: &SecretKey,
    written: Option<&SecretVersion>,
    reason: &str,
    audit: &AuditEvent,
) -> Result<bool> {
    let now = Timestamp::now();
    let written = written.cloned().unwrap_or_default();
    let txn = db.begin().await?;
    let marked = secret_filter(pull_secrets::Entity::update_many(), key)
        .filter(Column::DesiredRevision.gt(0i64))
        .filter(Column::LeaseUntil.lte(now.0))
        .filter(Column::WrittenUid.eq(written.uid.as_str()))
        .filter(Column::WrittenVersion.eq(written.resource_version.as_str()))
        .col_expr(Column::AppliedRevision, Expr::value(0i64))
        .col_expr(Column::WrittenUid, Expr::value(""))
        .col_expr(Column::WrittenVersion, Expr::value(""))
        .col_expr(Column::Status, Expr::value(PENDING))
        .col_expr(Column::Error, Expr::value(reason))
        .col_expr(Column::NotBefore, Expr::value(0i64))
        .col_expr(Column::Attempts, Expr::value(0i32))
        .col_expr(Column::UpdatedAt, Expr::value(now.0))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if marked {
        insert_audit(&txn, audit).await?;
    }
    txn.commit().await?;
    Ok(marked)
}

pub(crate) async fn adopt_version(db: &DatabaseConnection, key: &SecretKey, version: &SecretVersion) -> Result<bool> {
    Ok(secret_filter(pull_secrets::Entity::update_many(), key)
        .filter(Column::WrittenUid.eq(""))
        .filter(Column::WrittenVersion.eq(""))
        .col_expr(Column::WrittenUid, Expr::value(version.uid.as_str()))
        .col_expr(Column::WrittenVersion, Expr::value(version.resource_version.as_str()))
        .exec(db)
        .await?
        .rows_affected
        == 1)
}

/// Releases the leases of `replica`, or every lease (`None`).
pub(crate) async fn release_leases(db: &DatabaseConnection, replica: Option<&str>) -> Result<u64> {
    let mut update = pull_secrets::Entity::update_many()
        .filter(Column::LeaseOwner.ne(""))
        .col_expr(Column::LeaseOwner, Expr::value(""))
        .col_expr(Column::LeaseUntil, Expr::value(0i64));
    if let Some(replica) = replica {
        update = update.filter(Column::LeaseOwner.starts_with(Replica::lease_prefix(replica)));
    }
    Ok(update.exec(db).await?.rows_affected)
}

pub(crate) async fn namespace_returned(db: &DatabaseConnection, target: &str, namespace: &str) -> Result<u64> {
    Ok(pull_secrets::Entity::update_many()
        .filter(Column::Target.eq(target))
        .filter(Column::Namespace.eq(namespace))
        .filter(Column::DesiredRevision.gt(0i64))
        // Failed ones (a missing namespace is a failure): a pending row
        // waits for its Retry-After, which a namespace appearing does not
        // cut short.
        .filter(Column::Status.eq(FAILED))
        .col_expr(Column::NotBefore, Expr::value(0i64))
        .col_expr(Column::Attempts, Expr::value(0i32))
        .exec(db)
        .await?
        .rows_affected)
}

pub(crate) async fn pull_secret(db: &DatabaseConnection, key: &SecretKey) -> Result<Option<PullSecretState>> {
    pull_secrets::Entity::find_by_id((key.registry_id.to_string(), key.target.clone(), key.namespace.clone()))
        .one(db)
        .await?
        .map(secret_from)
        .transpose()
}

pub(crate) async fn pull_secrets_of(db: &DatabaseConnection, registry_id: &RegistryId) -> Result<Vec<PullSecretState>> {
    pull_secrets::Entity::find()
        .filter(Column::RegistryId.eq(registry_id.as_str()))
        .order_by_asc(Column::Target)
        .order_by_asc(Column::Namespace)
        .all(db)
        .await?
        .into_iter()
        .map(secret_from)
        .collect()
}

pub(crate) async fn pull_secrets_on(
    db: &DatabaseConnection,
    target: &str,
    namespace: Option<&str>,
) -> Result<Vec<PullSecretState>> {
    let mut select = pull_secrets::Entity::find().filter(Column::Target.eq(target));
    if let Some(namespace) = namespace {
        select = select.filter(Column::Namespace.eq(namespace));
    }
    select
        .order_by_asc(Column::Namespace)
        .order_by_asc(Column::RegistryId)
        .all(db)
        .await?
        .into_iter()
        .map(secret_from)
        .collect()
}
