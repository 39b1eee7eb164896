//! Registries (sealed credentials, unique names per organization, AIP-155
//! request ids) and the audit trail.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Registries {
    Table,
    Id,
    Organization,
    Name,
    Kind,
    Server,
    Hints,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    Etag,
    CredentialRevision,
    KeyId,
    SealedCredentials,
    RequestId,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Organization,
    Actor,
    Action,
    RegistryId,
    Outcome,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Registries::Table)
                    .col(ColumnDef::new(Registries::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Registries::Organization).string().not_null())
                    .col(ColumnDef::new(Registries::Name).string().not_null())
                    .col(ColumnDef::new(Registries::Kind).string().not_null())
                    .col(ColumnDef::new(Registries::Server).string().not_null())
                    .col(ColumnDef::new(Registries::Hints).text().not_null())
                    .col(ColumnDef::new(Registries::CreatedBy).string().not_null())
                    .col(ColumnDef::new(Registries::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Registries::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Registries::Etag).string().not_null())
                    .col(ColumnDef::new(Registries::CredentialRevision).big_integer().not_null())
                    .col(ColumnDef::new(Registries::KeyId).string().not_null())
                    .col(ColumnDef::new(Registries::SealedCredentials).blob().not_null())
                    .col(ColumnDef::new(Registries::RequestId).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registries_organization_name")
                    .table(Registries::Table)
                    .col(Registries::Organization)
                    .col(Registries::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registries_organization_request_id")
                    .table(Registries::Table)
                    .col(Registries::Organization)
                    .col(Registries::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registries_key_id")
                    .table(Registries::Table)
                    .col(Registries::KeyId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditEvents::At).big_integer().not_null())
                    .col(ColumnDef::new(AuditEvents::Organization).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Actor).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Action).string().not_null())
                    .col(ColumnDef::new(AuditEvents::RegistryId).string().null())
                    .col(ColumnDef::new(AuditEvents::Outcome).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Detail).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_organization_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::Organization)
                    .col(AuditEvents::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Registries::Table).to_owned())
            .await
    }
}
