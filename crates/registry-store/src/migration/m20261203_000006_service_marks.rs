//! Facts about the service itself kept with its data: which authentication
//! mode last served this store, so development mode never opens data that
//! production served.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("service_marks"))
                    .col(ColumnDef::new(Alias::new("name")).text().not_null().primary_key())
                    .col(ColumnDef::new(Alias::new("value")).text().not_null())
                    .col(ColumnDef::new(Alias::new("updated_at")).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("service_marks")).to_owned())
            .await
    }
}
