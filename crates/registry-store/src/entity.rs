//! The tables, as sea-orm entities.

/// One row per registry. Credentials are only ever stored sealed.
pub mod registries {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "registries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub organization: String,
        pub name: String,
        pub kind: String,
        pub server: String,
        /// JSON array of the masked credential hints.
        pub hints: String,
        pub created_by: String,
        pub created_at: i64,
        pub updated_at: i64,
        pub etag: String,
        pub credential_revision: i64,
        pub key_id: String,
        pub sealed_credentials: Vec<u8>,
        /// The AIP-155 request id the registry was created with.
        pub request_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The audit trail: who did what to which registry, and how it ended.
pub mod audit_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: i64,
        pub organization: String,
        pub actor: String,
        pub action: String,
        pub registry_id: Option<String>,
        pub outcome: String,
        pub detail: String,
        pub request_id: String,
        pub peer: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One row per container using a registry (or a public image).
pub mod usages {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "usages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub organization: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub container_id: String,
        pub registry_id: Option<String>,
        pub environment: String,
        pub target: String,
        pub namespace: Option<String>,
        pub image: String,
        pub credential_revision: i64,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The desired and applied state of every Kubernetes pull Secret.
pub mod pull_secrets {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pull_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub registry_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub target: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub namespace: String,
        pub organization: String,
        pub secret_name: String,
        pub server: String,
        /// 0: the Secret is to be deleted.
        pub desired_revision: i64,
        pub applied_revision: i64,
        pub status: String,
        pub error: String,
        pub attempts: i32,
        pub not_before: i64,
        pub updated_at: i64,
        /// When a synced Secret whose login expires is re-applied; 0: never.
        pub refresh_at: i64,
        /// Raised each time a Secret marked for deletion is wanted again.
        pub generation: i64,
        /// The uid and resourceVersion of the Secret as last written or
        /// seen; empty: unknown.
        pub written_uid: String,
        pub written_version: String,
        /// Who is writing the Secret and until when (microseconds); empty:
        /// no one.
        pub lease_owner: String,
        pub lease_until: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Which organization owns a namespace of a Kubernetes target: the first to
/// deploy there, until nothing of it is left there.
pub mod namespace_owners {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "namespace_owners")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub target: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub namespace: String,
        pub organization: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
