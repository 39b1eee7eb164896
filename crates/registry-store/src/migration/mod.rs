//! Schema migrations, applied at start-up.

use sea_orm_migration::prelude::*;

mod m20261127_000001_registries;
mod m20261127_000002_deploy;
mod m20261127_000003_pull_secret_refresh;
mod m20261201_000004_guarantees;
mod m20261202_000005_claim_order;
mod m20261203_000006_service_marks;
mod m20261204_000007_audit_origin;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_registries::Migration),
            Box::new(m20261127_000002_deploy::Migration),
            Box::new(m20261127_000003_pull_secret_refresh::Migration),
            Box::new(m20261201_000004_guarantees::Migration),
            Box::new(m20261202_000005_claim_order::Migration),
            Box::new(m20261203_000006_service_marks::Migration),
            Box::new(m20261204_000007_audit_origin::Migration),
        ]
    }
}
