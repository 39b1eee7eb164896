//! [`RegistryStore`] for [`SeaStore`]: registries and the audit trail.

use async_trait::async_trait;
use registry_core::audit::AuditEvent;
use registry_core::ports::store::{
    AuditQuery, Inserted, KeySample, ListQuery, RecordedAuditEvent, RegistryStore, StoreError, WriteOutcome,
};
use registry_core::{RegistryId, StoredRegistry};
use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use crate::SeaStore;
use crate::cache::Cached;
use crate::entity::{audit_events, pull_secrets, registries, usages};
use crate::failure::{Result, is_unique_violation};
use crate::rows::{audit_from, audit_row, registry_from, registry_row};
use crate::usages::wanting;

/// Whether a registry with this id exists in the organization.
async fn exists(db: &impl ConnectionTrait, organization: &str, id: &str) -> Result<bool> {
    let found = registries::Entity::find_by_id(id.to_owned())
        .filter(registries::Column::Organization.eq(organization))
        .select_only()
        .column(registries::Column::Id)
        .into_tuple::<String>()
        .one(db)
        .await?;
    Ok(found.is_some())
}

pub(crate) async fn insert_audit(db: &impl ConnectionTrait, audit: &AuditEvent) -> Result<()> {
    audit_events::Entity::insert(audit_row(audit))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

async fn find_by_request_id(
    db: &impl ConnectionTrait,
    organization: &str,
    request_id: &str,
) -> Result<Option<StoredRegistry>> {
    registries::Entity::find()
        .filter(registries::Column::Organization.eq(organization))
        .filter(registries::Column::RequestId.eq(request_id))
        .one(db)
        .await?
        .map(registry_from)
        .transpose()
}

impl SeaStore {
    async fn insert_registry(
        &self,
        registry: &StoredRegistry,
        request_id: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<Result<Inserted, StoreError>> {
        let txn = self.writer.begin().await?;
        let inserted = registries::Entity::insert(registry_row(registry, request_id))
            .exec_without_returning(&txn)
            .await;
        match inserted {
            Ok(_) => {
                insert_audit(&txn, audit).await?;
                txn.commit().await?;
                Ok(Ok(Inserted::Created))
            }
            Err(error) if is_unique_violation(&error) => {
                txn.rollback().await?;
                let organization = &registry.registry.organization;
                if let Some(request_id) = request_id
                    && let Some(earlier) = find_by_request_id(&self.reader, organization, request_id).await?
                {
                    return Ok(Ok(Inserted::Replayed(Box::new(earlier))));
                }
                Ok(Err(StoreError::NameTaken(registry.registry.name.clone())))
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn update_registry(
        &self,
        registry: &StoredRegistry,
        expected_etag: &str,
        audit: &AuditEvent,
    ) -> Result<Result<WriteOutcome<()>, StoreError>> {
        use registries::Column;
        let r = &registry.registry;
        let txn = self.writer.begin().await?;
        let mut row = registry_row(registry, None);
        // Neither the id nor the request id it was created with changes.
        row.id = NotSet;
        row.request_id = NotSet;
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
                wanting(r.credential_revision)
                    .filter(pull_secrets::Column::RegistryId.eq(r.id.as_str()))
                    .filter(pull_secrets::Column::DesiredRevision.ne(0i64))
                    .filter(pull_secrets::Column::DesiredRevision.lt(r.credential_revision))
                    .exec(&txn)
                    .await?;
                insert_audit(&txn, audit).await?;
                txn.commit().await?;
                Ok(Ok(WriteOutcome::Done(())))
            }
            Ok(_) => {
                let found = exists(&txn, &r.organization, r.id.as_str()).await?;
                txn.rollback().await?;
                Ok(Ok(if found {
                    WriteOutcome::EtagMismatch
                } else {
                    WriteOutcome::NotFound
                }))
            }
            Err(error) if is_unique_violation(&error) => {
                txn.rollback().await?;
                Ok(Err(StoreError::NameTaken(r.name.clone())))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The registry row is locked first (`FOR UPDATE`), so a usage being
    /// recorded concurrently (which holds it `FOR SHARE`) is either seen by
    /// the in-use check or finds the registry gone.
    async fn delete_registry(
        &self,
        organization: &str,
        id: &RegistryId,
        expected_etag: &str,
        force: bool,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>> {
        use registries::Column;
        let txn = self.writer.begin().await?;
        let etag: Option<String> = registries::Entity::find_by_id(id.to_string())
            .filter(Column::Organization.eq(organization))
            .select_only()
            .column(Column::Etag)
            .lock(LockType::Update)
            .into_tuple()
            .one(&txn)
            .await?;
        match etag {
            None => return Ok(WriteOutcome::NotFound),
            Some(etag) if etag != expected_etag => return Ok(WriteOutcome::EtagMismatch),
            Some(_) => {}
        }
        let users: Vec<String> = usages::Entity::find()
            .select_only()
            .column(usages::Column::ContainerId)
            .filter(usages::Column::RegistryId.eq(id.as_str()))
            .order_by_asc(usages::Column::ContainerId)
            .limit(100)
            .into_tuple()
            .all(&txn)
            .await?;
        if !users.is_empty() && !force {
            return Ok(WriteOutcome::InUse(users));
        }
        usages::Entity::delete_many()
            .filter(usages::Column::RegistryId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        wanting(0)
            .filter(pull_secrets::Column::RegistryId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        registries::Entity::delete_by_id(id.to_string()).exec(&txn).await?;
        insert_audit(&txn, audit).await?;
        txn.commit().await?;
        Ok(WriteOutcome::Done(()))
    }

    /// A registry by id, from the cache when it is current (see
    /// [`crate::cache`]).
    pub(crate) async fn cached_registry(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        let generation = self.cache.generation();
        match self.cache.lookup(id) {
            Cached::Current(stored) => return Ok(Some(stored)),
            Cached::Unconfirmed(stored) if self.stored_etag(id).await? == Some(stored.registry.etag.clone()) => {
                return Ok(Some(stored));
            }
            Cached::Unconfirmed(_) | Cached::Missing => {}
        }
        let row = registries::Entity::find_by_id(id.to_string())
            .one(&self.reader)
            .await
            .map_err(crate::failure::Failure::from)?;
        let stored = row.map(registry_from).transpose()?;
        if let Some(stored) = &stored {
            self.cache.fill(generation, stored);
        }
        Ok(stored)
    }

    async fn stored_etag(&self, id: &RegistryId) -> Result<Option<String>> {
        Ok(registries::Entity::find_by_id(id.to_string())
            .select_only()
            .column(registries::Column::Etag)
            .into_tuple()
            .one(&self.reader)
            .await?)
    }

    async fn read_sealed_under_other_keys(
        &self,
        key_id: &str,
        organization: Option<&str>,
        after: Option<&RegistryId>,
        limit: u64,
    ) -> Result<Vec<KeySample>> {
        use registries::Column;
        let mut query = registries::Entity::find().filter(Column::KeyId.ne(key_id));
        if let Some(organization) = organization {
            query = query.filter(Column::Organization.eq(organization));
        }
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after.as_str()));
        }
        let rows = query.order_by_asc(Column::Id).limit(limit).all(&self.reader).await?;
        rows.into_iter()
            .map(|row| {
                let stored = registry_from(row)?;
                Ok(KeySample {
                    key_id: stored.key_id,
                    organization: stored.registry.organization,
                    registry_id: stored.registry.id,
                    kind: stored.registry.kind,
                    sealed_credentials: stored.sealed_credentials,
                })
            })
            .collect()
    }

    async fn read_count_sealed_under_other_keys(&self, key_id: &str, organization: Option<&str>) -> Result<u64> {
        use registries::Column;
        let mut query = registries::Entity::find().filter(Column::KeyId.ne(key_id));
        if let Some(organization) = organization {
            query = query.filter(Column::Organization.eq(organization));
        }
        Ok(query.count(&self.reader).await?)
    }

    async fn rewrap_blob(&self, old: &KeySample, key_id: &str, sealed: &[u8], audit: &AuditEvent) -> Result<bool> {
        use registries::Column;
        let txn = self.writer.begin().await?;
        let updated = registries::Entity::update_many()
            .col_expr(Column::KeyId, Expr::value(key_id))
            .col_expr(Column::SealedCredentials, Expr::value(sealed.to_vec()))
            .filter(Column::Id.eq(old.registry_id.as_str()))
            .filter(Column::SealedCredentials.eq(old.sealed_credentials.clone()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        insert_audit(&txn, audit).await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn read_key_samples(&self) -> Result<Vec<KeySample>> {
        use registries::Column;
        let firsts: Vec<(String, String)> = registries::Entity::find()
            .select_only()
            .column(Column::KeyId)
            .column_as(Expr::col(Column::Id).min(), "id")
            .group_by(Column::KeyId)
            .into_tuple()
            .all(&self.reader)
            .await?;
        let mut samples = Vec::with_capacity(firsts.len());
        for (key_id, id) in firsts {
            let Some(row) = registries::Entity::find_by_id(id).one(&self.reader).await? else {
                continue;
            };
            let stored = registry_from(row)?;
            samples.push(KeySample {
                key_id,
                organization: stored.registry.organization,
                registry_id: stored.registry.id,
                kind: stored.registry.kind,
                sealed_credentials: stored.sealed_credentials,
            });
        }
        Ok(samples)
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
        let _writing = self.cache.writing(&registry.registry.id);
        self.insert_registry(registry, request_id, audit).await?
    }

    async fn find_by_request_id(
        &self,
        organization: &str,
        request_id: &str,
    ) -> Result<Option<StoredRegistry>, StoreError> {
        Ok(find_by_request_id(&self.reader, organization, request_id).await?)
    }

    async fn get(&self, organization: &str, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        let stored = self.cached_registry(id).await?;
        Ok(stored.filter(|stored| stored.registry.organization == organization))
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
        let rows = select
            .order_by_asc(Column::Name)
            .order_by_asc(Column::Id)
            .limit(query.limit)
            .all(&self.reader)
            .await
            .map_err(crate::failure::Failure::from)?;
        Ok(rows.into_iter().map(registry_from).collect::<Result<_>>()?)
    }

    async fn update(
        &self,
        registry: &StoredRegistry,
        expected_etag: &str,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError> {
        let _writing = self.cache.writing(&registry.registry.id);
        let _rotating = self.deploy_cache.writing();
        self.update_registry(registry, expected_etag, audit).await?
    }

    async fn delete(
        &self,
        organization: &str,
        id: &RegistryId,
        expected_etag: &str,
        force: bool,
        audit: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError> {
        let _writing = self.cache.writing(id);
        let _deleting = self.deploy_cache.writing();
        Ok(self
            .delete_registry(organization, id, expected_etag, force, audit)
            .await?)
    }

    async fn record(&self, audit: &AuditEvent) -> Result<(), StoreError> {
        self.audit.record(audit).await
    }

    async fn key_samples(&self) -> Result<Vec<KeySample>, StoreError> {
        Ok(self.read_key_samples().await?)
    }

    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        organization: Option<&str>,
        after: Option<&RegistryId>,
        limit: u64,
    ) -> Result<Vec<KeySample>, StoreError> {
        Ok(self
            .read_sealed_under_other_keys(key_id, organization, after, limit)
            .await?)
    }

    async fn count_sealed_under_other_keys(&self, key_id: &str, organization: Option<&str>) -> Result<u64, StoreError> {
        Ok(self.read_count_sealed_under_other_keys(key_id, organization).await?)
    }

    async fn rewrap(
        &self,
        old: &KeySample,
        key_id: &str,
        sealed: &[u8],
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        // The cached row holds the old blob: it goes with the write.
        let _writing = self.cache.writing(&old.registry_id);
        Ok(self.rewrap_blob(old, key_id, sealed, audit).await?)
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<RecordedAuditEvent>, StoreError> {
        use audit_events::Column;
        let mut select = audit_events::Entity::find().filter(Column::Organization.eq(&query.organization));
        if let Some(id) = &query.registry_id {
            select = select.filter(Column::RegistryId.eq(id.to_string()));
        }
        if let Some(actor) = &query.actor {
            select = select.filter(Column::Actor.eq(actor));
        }
        if let Some(action) = query.action {
            select = select.filter(Column::Action.eq(action.as_str()));
        }
        if let Some(since) = query.since {
            select = select.filter(Column::At.gte(since.0));
        }
        if let Some(until) = query.until {
            select = select.filter(Column::At.lt(until.0));
        }
        if let Some(before) = query.before_id {
            select = select.filter(Column::Id.lt(before));
        }
        let rows = select
            .order_by_desc(Column::Id)
            .limit(query.limit)
            .all(&self.reader)
            .await
            .map_err(crate::failure::Failure::from)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id = row.id;
                audit_from(row).map(|event| RecordedAuditEvent { id, event })
            })
            .collect::<Result<_>>()?)
    }
}
