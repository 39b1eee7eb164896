//! Usages (container -> registry -> environment -> target) and the sync
//! state of Kubernetes pull Secrets.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Usages {
    Table,
    Organization,
    ContainerId,
    RegistryId,
    Environment,
    Target,
    Namespace,
    Image,
    CredentialRevision,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PullSecrets {
    Table,
    RegistryId,
    Target,
    Namespace,
    Organization,
    SecretName,
    Server,
    DesiredRevision,
    AppliedRevision,
    Status,
    Error,
    Attempts,
    NotBefore,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Usages::Table)
                    .col(ColumnDef::new(Usages::Organization).string().not_null())
                    .col(ColumnDef::new(Usages::ContainerId).string().not_null())
                    .col(ColumnDef::new(Usages::RegistryId).string().null())
                    .col(ColumnDef::new(Usages::Environment).string().not_null())
                    .col(ColumnDef::new(Usages::Target).string().not_null())
                    .col(ColumnDef::new(Usages::Namespace).string().null())
                    .col(ColumnDef::new(Usages::Image).text().not_null())
                    .col(ColumnDef::new(Usages::CredentialRevision).big_integer().not_null())
                    .col(ColumnDef::new(Usages::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Usages::UpdatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(Usages::Organization).col(Usages::ContainerId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("usages_registry_target_namespace")
                    .table(Usages::Table)
                    .col(Usages::RegistryId)
                    .col(Usages::Target)
                    .col(Usages::Namespace)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PullSecrets::Table)
                    .col(ColumnDef::new(PullSecrets::RegistryId).string().not_null())
                    .col(ColumnDef::new(PullSecrets::Target).string().not_null())
                    .col(ColumnDef::new(PullSecrets::Namespace).string().not_null())
                    .col(ColumnDef::new(PullSecrets::Organization).string().not_null())
                    .col(ColumnDef::new(PullSecrets::SecretName).string().not_null())
                    .col(ColumnDef::new(PullSecrets::Server).string().not_null())
                    .col(ColumnDef::new(PullSecrets::DesiredRevision).big_integer().not_null())
                    .col(ColumnDef::new(PullSecrets::AppliedRevision).big_integer().not_null())
                    .col(ColumnDef::new(PullSecrets::Status).string().not_null())
                    .col(ColumnDef::new(PullSecrets::Error).text().not_null())
                    .col(ColumnDef::new(PullSecrets::Attempts).integer().not_null())
                    .col(ColumnDef::new(PullSecrets::NotBefore).big_integer().not_null())
                    .col(ColumnDef::new(PullSecrets::UpdatedAt).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(PullSecrets::RegistryId)
                            .col(PullSecrets::Target)
                            .col(PullSecrets::Namespace),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("pull_secrets_status_not_before")
                    .table(PullSecrets::Table)
                    .col(PullSecrets::Status)
                    .col(PullSecrets::NotBefore)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PullSecrets::Table).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(Usages::Table).to_owned()).await
    }
}
