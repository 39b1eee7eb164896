//! Persistence of registries and audit events with sea-orm: a SQLite file by
//! default, PostgreSQL in production. Implements
//! [`registry_core::ports::RegistryStore`].
//!
//! - [`entity`] — the tables;
//! - [`migration`] — the schema, applied by [`SeaStore::connect`];
//! - [`SeaStore`] — the store itself.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use registry_core::ports::{AuditEvent, Inserted, KeySample, ListQuery, RegistryStore, StoreError, WriteOutcome};
use registry_core::{CredentialHint, Registry, RegistryId, RegistryKind, StoredRegistry, Timestamp};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

mod deploy;
pub mod entity;
pub mod migration;

use entity::{audit_events, pull_secrets, registries, usages};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database url scheme {0:?} (expected sqlite: or postgres:)")]
    UnsupportedScheme(String),
    #[error("cannot connect to the {backend} database: {reason}")]
    Connect { backend: &'static str, reason: String },
    #[error("cannot migrate the database schema: {0}")]
    Migrate(String),
}

/// The sea-orm store.
#[derive(Debug, Clone)]
pub struct SeaStore {
    db: DatabaseConnection,
}

/// The SQLite URL of the embedded default database in `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("registry.db").display())
}

impl SeaStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending
    /// migrations. Database URLs may hold a password: it is never logged.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        let backend = match url.split(':').next().unwrap_or_default() {
            "sqlite" => "sqlite",
            "postgres" | "postgresql" => "postgres",
            other => return Err(OpenError::UnsupportedScheme(other.to_owned())),
        };
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10));
        if backend == "sqlite" {
            // One writer at a time is SQLite's model; a few readers in WAL mode.
            options.max_connections(4).min_connections(1);
        } else {
            options.max_connections(16).min_connections(1);
        }
        let db = Database::connect(options).await.map_err(|e| OpenError::Connect {
            backend,
            reason: redact(&e.to_string(), url),
        })?;
        if backend == "sqlite" {
            for pragma in [
                "PRAGMA journal_mode = WAL",
                "PRAGMA busy_timeout = 5000",
                "PRAGMA synchronous = NORMAL",
            ] {
                db.execute_unprepared(pragma).await.map_err(|e| OpenError::Connect {
                    backend,
                    reason: e.to_string(),
                })?;
            }
        }
        migration::Migrator::up(&db, None)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        Ok(Self { db })
    }

    /// The underlying connection (for tests and tools).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }
}

/// Removes a URL's password from a driver message, in case it repeats it.
fn redact(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => message.replace(password, "***"),
        None => message.to_owned(),
    }
}

fn unavailable(error: DbErr) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn to_row(stored: &StoredRegistry, request_id: Option<&str>) -> registries::ActiveModel {
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

fn from_row(row: registries::Model) -> Result<StoredRegistry, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("registry {}: {what}", row.id));
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

fn audit_row(event: &AuditEvent) -> audit_events::ActiveModel {
    audit_events::ActiveModel {
        at: Set(event.at.0),
        organization: Set(event.organization.clone()),
        actor: Set(event.actor.clone()),
        action: Set(event.action.clone()),
        registry_id: Set(event.registry_id.as_ref().map(ToString::to_string)),
        outcome: Set(event.outcome.clone()),
        detail: Set(event.detail.clone()),
        ..Default::default()
    }
}

impl SeaStore {
    /// Whether a registry with this id exists in the organization.
    async fn exists(&self, organization: &str, id: &str) -> Result<bool, StoreError> {
        let found = registries::Entity::find_by_id(id.to_owned())
            .filter(registries::Column::Organization.eq(organization))
            .select_only()
            .column(registries::Column::Id)
            .into_tuple::<String>()
            .one(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl RegistryStore for SeaStore {
    async fn insert(
        &self,
        registry: &StoredRegistry,
        request_id: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Inserted, StoreError> {
        let txn = self.db.begin().await.map_err(unavailable)?;
        let inserted = registries::Entity::insert(to_row(registry, request_id))
            .exec_without_returning(&txn)
            .await;
        match inserted {
            Ok(_) => {
                audit_events::Entity::insert(audit_row(audit))
                    .exec_without_returning(&txn)
                    .await
                    .map_err(unavailable)?;
                txn.commit().await.map_err(unavailable)?;
                Ok(Inserted::Created)
            }
            Err(error) if is_unique_violation(&error) => {
                txn.rollback().await.map_err(unavailable)?;
                let organization = &registry.registry.organization;
                if let Some(request_id) = request_id
                    && let Some(earlier) = self.find_by_request_id(organization, request_id).await?
                {
                    return Ok(Inserted::Replayed(Box::new(earlier)));
                }
                Err(StoreError::NameTaken(registry.registry.name.clone()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn find_by_request_id(
        &self,
        organization: &str,
        request_id: &str,
    ) -> Result<Option<StoredRegistry>, StoreError> {
        registries::Entity::find()
            .filter(registries::Column::Organization.eq(organization))
            .filter(registries::Column::RequestId.eq(request_id))
            .one(&self.db)
            .await
            .map_err(unavailable)?
            .map(from_row)
            .transpose()
    }

    async fn get(&self, organization: &str, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        registries::Entity::find_by_id(id.to_string())
            .filter(registries::Column::Organization.eq(organization))
            .one(&self.db)
            .await
            .map_err(unavailable)?
            .map(from_row)
            .transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<StoredRegistry>, StoreError> {
        use registries::Column;
        let mut select = registries::Entity::find().filter(Column::Organization.eq(&query.organization));
        if let Some(kind) = query.kind {
            select = select.filter(Column::Kind.eq(kind.key()));
        }
        if let Some((name, id)) = &query.after {
            select = select.filter(
                Column::Name
                    .gt(name.as_str())
                    .or(Column::Name.eq(name.as_str()).and(Column::Id.gt(id.as_str()))),
            );
        }
        select
            .order_by_asc(Column::Name)
            .order_by_asc(Column::Id)
            .limit(query.limit)
            .all(&self.db)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(from_row)
            .collect()
    }

    async fn update(
        &self,
        registry: &StoredRegistry,
        expected_etag: &str,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError> {
        use registries::Column;
        let r = &registry.registry;
        let txn = self.db.begin().await.map_err(unavailable)?;
        let mut row = to_row(registry, None);
        // Neither the id nor the request id it was created with changes.
        row.id = sea_orm::ActiveValue::NotSet;
        row.request_id = sea_orm::ActiveValue::NotSet;
        let updated = registries::Entity::update_many()
            .set(row)
            .filter(Column::Id.eq(r.id.as_str()))
            .filter(Column::Organization.eq(&r.organization))
            .filter(Column::Etag.eq(expected_etag))
            .exec(&txn)
            .await;
        match updated {
            Ok(result) if result.rows_affected == 1 => {
                // A rotation: every pull Secret of the registry wants it now.
                deploy::wanting(r.credential_revision)
                    .filter(pull_secrets::Column::RegistryId.eq(r.id.as_str()))
                    .filter(pull_secrets::Column::DesiredRevision.ne(0i64))
                    .filter(pull_secrets::Column::DesiredRevision.lt(r.credential_revision))
                    .exec(&txn)
                    .await
                    .map_err(unavailable)?;
                audit_events::Entity::insert(audit_row(audit))
                    .exec_without_returning(&txn)
                    .await
                    .map_err(unavailable)?;
                txn.commit().await.map_err(unavailable)?;
                Ok(WriteOutcome::Done(()))
            }
            Ok(_) => {
                txn.rollback().await.map_err(unavailable)?;
                if self.exists(&r.organization, r.id.as_str()).await? {
                    Ok(WriteOutcome::EtagMismatch)
                } else {
                    Ok(WriteOutcome::NotFound)
                }
            }
            Err(error) if is_unique_violation(&error) => {
                txn.rollback().await.map_err(unavailable)?;
                Err(StoreError::NameTaken(r.name.clone()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn delete(
        &self,
        organization: &str,
        id: &RegistryId,
        expected_etag: &str,
        force: bool,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError> {
        use registries::Column;
        let txn = self.db.begin().await.map_err(unavailable)?;
        let users: Vec<String> = usages::Entity::find()
            .select_only()
            .column(usages::Column::ContainerId)
            .filter(usages::Column::Organization.eq(organization))
            .filter(usages::Column::RegistryId.eq(id.as_str()))
            .order_by_asc(usages::Column::ContainerId)
            .limit(100)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(unavailable)?;
        if !users.is_empty() && !force {
            txn.rollback().await.map_err(unavailable)?;
            return Ok(WriteOutcome::InUse(users));
        }
        let deleted = registries::Entity::delete_many()
            .filter(Column::Id.eq(id.as_str()))
            .filter(Column::Organization.eq(organization))
            .filter(Column::Etag.eq(expected_etag))
            .exec(&txn)
            .await
            .map_err(unavailable)?;
        if deleted.rows_affected == 1 {
            usages::Entity::delete_many()
                .filter(usages::Column::RegistryId.eq(id.as_str()))
                .exec(&txn)
                .await
                .map_err(unavailable)?;
            deploy::wanting(0)
                .filter(pull_secrets::Column::RegistryId.eq(id.as_str()))
                .exec(&txn)
                .await
                .map_err(unavailable)?;
            audit_events::Entity::insert(audit_row(audit))
                .exec_without_returning(&txn)
                .await
                .map_err(unavailable)?;
            txn.commit().await.map_err(unavailable)?;
            return Ok(WriteOutcome::Done(()));
        }
        txn.rollback().await.map_err(unavailable)?;
        if self.exists(organization, id.as_str()).await? {
            Ok(WriteOutcome::EtagMismatch)
        } else {
            Ok(WriteOutcome::NotFound)
        }
    }

    async fn record(&self, audit: &AuditEvent) -> Result<(), StoreError> {
        audit_events::Entity::insert(audit_row(audit))
            .exec_without_returning(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn key_samples(&self) -> Result<Vec<KeySample>, StoreError> {
        use registries::Column;
        let firsts: Vec<(String, String)> = registries::Entity::find()
            .select_only()
            .column(Column::KeyId)
            .column_as(Expr::col(Column::Id).min(), "id")
            .group_by(Column::KeyId)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(unavailable)?;
        let mut samples = Vec::with_capacity(firsts.len());
        for (key_id, id) in firsts {
            let Some(row) = registries::Entity::find_by_id(id)
                .one(&self.db)
                .await
                .map_err(unavailable)?
            else {
                continue;
            };
            let stored = from_row(row)?;
            samples.push(KeySample {
                key_id,
                registry_id: stored.registry.id,
                kind: stored.registry.kind,
                sealed_credentials: stored.sealed_credentials,
            });
        }
        Ok(samples)
    }

    async fn audit_events(&self, organization: &str, limit: u64) -> Result<Vec<AuditEvent>, StoreError> {
        use audit_events::Column;
        let rows = audit_events::Entity::find()
            .filter(Column::Organization.eq(organization))
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|row| AuditEvent {
                at: Timestamp(row.at),
                organization: row.organization,
                actor: row.actor,
                action: row.action,
                registry_id: row.registry_id.as_deref().and_then(RegistryId::parse),
                outcome: row.outcome,
                detail: row.detail,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_driver_messages() {
        let url = "postgres://svc:hunter2secret@db:5432/registry";
        assert_eq!(
            redact("auth failed for svc:hunter2secret", url),
            "auth failed for svc:***"
        );
        assert_eq!(redact("boom", "sqlite://x.db"), "boom");
    }
}
