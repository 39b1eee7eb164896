//! Test support shared by the crates' test suites.
//!
//! - [`require_service`] — the one rule for tests that need a service the
//!   machine may lack (skip loudly by hand, fail under `CI=true`);
//! - [`postgres_database`] — a fresh PostgreSQL database per test;
//! - [`kube_api`] — a simulated Kubernetes API server ([`kube_api::KubeSim`])
//!   with real REST semantics, and a kube-rs client pointed at it;
//! - [`distribution`] — the test bed registry's htpasswd file;
//! - [`pki`] — a test CA issuing server and client certificates;
//! - [`token_registry`] — a distribution registry with token auth (and
//!   optionally TLS from a test CA), started by the test.

use sea_orm::{ConnectionTrait, Database};

pub mod distribution;
pub mod google;
pub mod jwks;
pub mod kube_api;
pub mod pki;
pub mod token_registry;

/// The variable the test script sets to the admin URL of the PostgreSQL it
/// started (`postgres://postgres@127.0.0.1:PORT/postgres`).
pub const POSTGRES_URL_VAR: &str = "REGISTRY_TEST_POSTGRES_URL";

/// Whether tests run under CI, where a missing service is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reads the variable that points at a service the test needs. When it is not
/// set, the test is skipped with a loud reason — or fails under `CI=true`.
pub fn require_service(service: &str, variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if in_ci() => panic!("{service} is required under CI but {variable} is not set; run scripts/test"),
        _ => {
            eprintln!(
                "\n!!! SKIPPED: this test needs {service}; {variable} is not set. \
                 Run scripts/test, which starts it. !!!\n"
            );
            None
        }
    }
}

/// A fresh, empty database on the test PostgreSQL, as a connection URL; `None`
/// (after a loud message) when no PostgreSQL is configured outside CI.
pub async fn postgres_database() -> Option<String> {
    let admin_url = require_service("PostgreSQL", POSTGRES_URL_VAR)?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).expect("operating system random source");
    let name = format!(
        "regtest_{}",
        suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let admin = Database::connect(admin_url.as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {admin_url}: {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    admin.close().await.ok();
    let (base, _) = admin_url
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{POSTGRES_URL_VAR} has no database path: {admin_url}"));
    Some(format!("{base}/{name}"))
}
