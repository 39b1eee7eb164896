//! What the deploy path's guarantees rest on:
//!
//! - pull Secrets get a generation (a Secret wanted again after a release is
//!   a new one), the version of the Secret last written (for conditional
//!   deletes and drift detection) and a lease (one writer at a time, across
//!   replicas);
//! - namespaces get an owning organization (one organization per namespace);
//! - a usage references its registry with a foreign key (`RESTRICT`), so a
//!   usage of a deleted registry cannot exist. Usages left by earlier
//!   versions for registries that no longer exist are removed, and their
//!   pull Secrets marked for deletion.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum PullSecrets {
    Table,
    Target,
    Namespace,
    Generation,
    WrittenUid,
    WrittenVersion,
    LeaseOwner,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum NamespaceOwners {
    Table,
    Target,
    Namespace,
    Organization,
    CreatedAt,
}

/// The usages table, rebuilt with its foreign key (SQLite cannot add one to
/// an existing table).
const SQLITE_USAGES_WITH_FOREIGN_KEY: &[&str] = &[
    "CREATE TABLE usages_new (
        organization TEXT NOT NULL,
        container_id TEXT NOT NULL,
        registry_id TEXT NULL REFERENCES registries (id) ON DELETE RESTRICT,
        environment TEXT NOT NULL,
        target TEXT NOT NULL,
        namespace TEXT NULL,
        image TEXT NOT NULL,
        credential_revision BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (organization, container_id)
    )",
    "INSERT INTO usages_new SELECT organization, container_id, registry_id, environment, target, namespace, image,
        credential_revision, created_at, updated_at FROM usages",
    "DROP TABLE usages",
    "ALTER TABLE usages_new RENAME TO usages",
    "CREATE INDEX usages_registry_target_namespace ON usages (registry_id, target, namespace)",
];

const POSTGRES_USAGES_FOREIGN_KEY: &str = "ALTER TABLE usages ADD CONSTRAINT usages_registry_id_fkey \
     FOREIGN KEY (registry_id) REFERENCES registries (id) ON DELETE RESTRICT";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = |column: PullSecrets| ColumnDef::new(column).string().not_null().default("").to_owned();
        for column in [
            ColumnDef::new(PullSecrets::Generation)
                .big_integer()
                .not_null()
                .default(1i64)
                .to_owned(),
            text(PullSecrets::WrittenUid),
            text(PullSecrets::WrittenVersion),
            text(PullSecrets::LeaseOwner),
            ColumnDef::new(PullSecrets::LeaseUntil)
                .big_integer()
                .not_null()
                .default(0i64)
                .to_owned(),
        ] {
            // SQLite adds one column per statement.
            manager
                .alter_table(Table::alter().table(PullSecrets::Table).add_column(column).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("pull_secrets_target_namespace")
                    .table(PullSecrets::Table)
                    .col(PullSecrets::Target)
                    .col(PullSecrets::Namespace)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NamespaceOwners::Table)
                    .col(ColumnDef::new(NamespaceOwners::Target).string().not_null())
                    .col(ColumnDef::new(NamespaceOwners::Namespace).string().not_null())
                    .col(ColumnDef::new(NamespaceOwners::Organization).string().not_null())
                    .col(ColumnDef::new(NamespaceOwners::CreatedAt).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(NamespaceOwners::Target)
                            .col(NamespaceOwners::Namespace),
                    )
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        // Usages of registries that are gone go; their Secrets with them.
        db.execute_unprepared(
            "DELETE FROM usages WHERE registry_id IS NOT NULL AND registry_id NOT IN (SELECT id FROM registries)",
        )
        .await?;
        db.execute_unprepared(
            "UPDATE pull_secrets SET desired_revision = 0, status = 'pending', not_before = 0, attempts = 0 \
             WHERE registry_id NOT IN (SELECT id FROM registries)",
        )
        .await?;
        // Namespaces already in use belong to the (first, by name)
        // organization found there.
        db.execute_unprepared(
            "INSERT INTO namespace_owners (target, namespace, organization, created_at) \
             SELECT target, namespace, MIN(organization), 0 FROM ( \
                 SELECT target, namespace, organization FROM usages WHERE namespace IS NOT NULL \
                 UNION ALL SELECT target, namespace, organization FROM pull_secrets \
             ) AS present GROUP BY target, namespace",
        )
        .await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                for statement in SQLITE_USAGES_WITH_FOREIGN_KEY {
                    db.execute_unprepared(statement).await?;
                }
            }
            _ => {
                db.execute_unprepared(POSTGRES_USAGES_FOREIGN_KEY).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NamespaceOwners::Table).to_owned())
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("ALTER TABLE usages DROP CONSTRAINT usages_registry_id_fkey")
                .await?;
        }
        for column in [
            PullSecrets::Generation,
            PullSecrets::WrittenUid,
            PullSecrets::WrittenVersion,
            PullSecrets::LeaseOwner,
            PullSecrets::LeaseUntil,
        ] {
            manager
                .alter_table(Table::alter().table(PullSecrets::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
