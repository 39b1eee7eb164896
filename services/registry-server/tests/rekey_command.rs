//! The `rekey` command of the real binary: beside a running server on
//! PostgreSQL it re-wraps every organization's registries under the new
//! primary while the server keeps answering; a second run finds nothing
//! to do; the old key can then go. On the embedded SQLite store, which
//! serves one process at a time, it refuses while the server runs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Command, Output};

use registry_proto::v1 as pb;
use registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient;
use registry_server::config::Config;
use tonic::transport::Channel;

use crate::common::{TOKEN, as_acme, create_registry};

fn config(dir: &std::path::Path, database_url: Option<String>, keys: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database_url,
        master_keys: Some(keys.to_owned()),
        ..Config::default()
    }
}

/// `registry-server rekey` with the configuration in its environment.
fn rekey_command(config: &Config) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_registry-server"));
    command
        .env_clear()
        .arg("--data-dir")
        .arg(&config.data_dir)
        .env("REGISTRY_MASTER_KEYS", config.master_keys.as_deref().unwrap());
    if let Some(url) = &config.database_url {
        command.arg("--database-url").arg(url);
    }
    common::canary_log_level(&mut command);
    let output = command.arg("rekey").output().unwrap();
    common::keep(&output);
    output
}

async fn channel(server: &registry_server::RunningServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.local_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn resolve(channel: Channel, registry_id: &str) -> String {
    DeployCredentialServiceClient::new(channel)
        .resolve_pull_credentials(as_acme(pb::ResolvePullCredentialsRequest {
            registry_id: registry_id.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .password
}

#[tokio::test]
async fn rekey_runs_beside_a_server_on_postgres() {
    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        registry_crypto::generate_key().unwrap(),
        registry_crypto::generate_key().unwrap(),
    );
    let server = registry_server::start(config(dir.path(), Some(url.clone()), &old))
        .await
        .unwrap();
    let registry = create_registry(channel(&server).await).await;
    server.shutdown().await.unwrap();

    let rotated = config(
        dir.path(),
        Some(url.clone()),
        &format!("{},{}", new.as_str(), old.as_str()),
    );
    let server = registry_server::start(rotated.clone()).await.unwrap();
    let output = rekey_command(&rotated);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 re-wrapped, 0 changed meanwhile, 0 failed, 0 remaining"),
        "{stdout}"
    );
    // The running server still answers (its cached row holds the old
    // blob, which the old key still opens; the next read has the new).
    assert_eq!(resolve(channel(&server).await, &registry.id).await, TOKEN);
    let again = rekey_command(&rotated);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 re-wrapped, 0 changed meanwhile, 0 failed, 0 remaining"),
        "{again:?}"
    );
    server.shutdown().await.unwrap();

    let server = registry_server::start(config(dir.path(), Some(url), &new))
        .await
        .unwrap();
    assert_eq!(resolve(channel(&server).await, &registry.id).await, TOKEN);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rekey_refuses_a_sqlite_store_the_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let keys = registry_crypto::generate_key().unwrap();
    let config = config(dir.path(), None, &keys);
    let server = registry_server::start(config.clone()).await.unwrap();
    let output = rekey_command(&config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("registry-server rekey:"), "{stderr}");
    assert!(stderr.contains(&config.data_dir.display().to_string()), "{stderr}");
    server.shutdown().await.unwrap();
}
