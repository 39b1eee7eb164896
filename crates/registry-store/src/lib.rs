//! Persistence with sea-orm: a SQLite file by default (one server process),
//! PostgreSQL in production (any number of replicas). Implements the
//! core's [`RegistryStore`](registry_core::ports::store::RegistryStore) and
//! [`DeployStore`](registry_core::ports::store::DeployStore).
//!
//! - [`connect`] — [`SeaStore`]: pools, SQLite's lock file, migrations
//!   under an advisory lock, the health ping;
//! - [`entity`] — the tables;
//! - [`migration`] — the schema;
//! - `registries` — registries and the audit trail; `cache` — registries
//!   between writes; `audit` — the group commit of hand-out events;
//! - `usages` — usages, deployment intents, namespace ownership;
//! - `pull_secrets` — claims, leases and outcomes of the sync loop;
//! - `deploy` — the deploy port over the two above;
//! - `rows` — rows <-> domain values; `failure` — database errors.

mod audit;
mod cache;
pub mod connect;
mod deploy;
pub mod entity;
mod failure;
mod marks;
pub mod migration;
mod pull_secrets;
mod registries;
mod rows;
mod usages;

pub use connect::{OpenError, SeaStore, SqliteSync, StoreOptions, sqlite_url};
pub use marks::AUTH_MODE;
