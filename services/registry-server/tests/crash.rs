//! The real binary killed with SIGKILL under load loses no acknowledged
//! audit event: every hand-out a caller received is in the audit trail of
//! its SQLite file (the embedded default, `synchronous = normal`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use registry_proto::v1 as pb;
use registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient;
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::transport::Channel;

use crate::common::{as_acme, free_port};

/// Callers resolving at once.
const CALLERS: u64 = 32;
/// Hand-outs acknowledged before the kill.
const BEFORE_KILL: u64 = 3000;

async fn connect(url: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = Channel::from_shared(url.to_owned()).unwrap().connect().await {
            return channel;
        }
        assert!(Instant::now() < deadline, "the server never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_acknowledged_audit_event() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--auth-mode", "development"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(common::unread_output())
        .stderr(common::unread_output())
        .spawn()
        .unwrap();
    let channel = connect(&format!("http://127.0.0.1:{port}")).await;
    let registry = common::create_registry(channel.clone()).await;

    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let mut client = DeployCredentialServiceClient::new(channel.clone());
        let id = registry.id.clone();
        let acknowledged = Arc::clone(&acknowledged);
        callers.spawn(async move {
            // Until the server is gone.
            while client
                .resolve_pull_credentials(as_acme(pb::ResolvePullCredentialsRequest {
                    registry_id: id.clone(),
                }))
                .await
                .is_ok()
            {
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while acknowledged.load(Ordering::SeqCst) < BEFORE_KILL {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    callers.join_all().await;
    let acknowledged = acknowledged.load(Ordering::SeqCst);

    let path = dir.path().join("data").join("registry.db");
    let db = Database::connect(format!("sqlite://{}", path.display())).await.unwrap();
    let row = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM audit_events WHERE action = 'credentials.resolve'",
        ))
        .await
        .unwrap()
        .unwrap();
    let recorded: i64 = row.try_get("", "n").unwrap();
    let recorded = u64::try_from(recorded).unwrap();
    assert!(
        recorded >= acknowledged,
        "{acknowledged} hand-outs acknowledged, {recorded} audited"
    );
    // Beyond those, at most the calls in flight at the kill were recorded.
    assert!(
        recorded <= acknowledged + CALLERS,
        "{recorded} audited for {acknowledged}"
    );
}
