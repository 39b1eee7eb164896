//! Pull Secrets whose login expires (ECR tokens) are re-applied before it
//! does: `refresh_at` is when (microseconds since the epoch; 0: never).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum PullSecrets {
    Table,
    RefreshAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PullSecrets::Table)
                    .add_column(
                        ColumnDef::new(PullSecrets::RefreshAt)
                            .big_integer()
                            .not_null()
                            .default(0i64),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PullSecrets::Table)
                    .drop_column(PullSecrets::RefreshAt)
                    .to_owned(),
            )
            .await
    }
}
