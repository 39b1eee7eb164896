//! The sync loop's claims read due rows in the order they are claimed:
//! unsynced rows by (`not_before`, `updated_at`), synced rows whose login is
//! due for refresh by `refresh_at`. Partial indexes over exactly those rows,
//! so a claim reads the few rows it takes instead of sorting the table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX pull_secrets_unsynced_due ON pull_secrets (not_before, updated_at) \
             WHERE status <> 'synced'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX pull_secrets_refresh_due ON pull_secrets (refresh_at) \
             WHERE status = 'synced' AND refresh_at <> 0",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX pull_secrets_refresh_due").await?;
        db.execute_unprepared("DROP INDEX pull_secrets_unsynced_due").await?;
        Ok(())
    }
}
