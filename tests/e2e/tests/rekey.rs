//! Master-key rotation on the running server (`RekeyRegistries`), on SQLite
//! and PostgreSQL: 1000 registries sealed under an old key are re-wrapped
//! under a new primary while deployers keep resolving them; a run cut
//! short (by its limit, or by the caller's deadline mid-way) is resumed by
//! the next; the old key can then leave the configuration; every re-wrap
//! is on the audit trail; a blob that does not open is reported, never
//! re-wrapped or lost. The `rekey` command does the same for every
//! organization beside a server on PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use registry_e2e::{TestServer, default_config, with_roles};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::Code;

const REGISTRIES: usize = 1000;
const ORG: &str = "acme";

fn token(i: usize) -> String {
    format!("ghp_{i:036}")
}

fn ghcr(i: usize) -> Option<pb::Credentials> {
    Some(pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: format!("user{i}"),
            token: token(i),
        })),
    })
}

async fn rekey(
    client: &mut RegistryServiceClient<tonic::transport::Channel>,
    max_registries: i64,
) -> Result<pb::RekeyRegistriesResponse, tonic::Status> {
    let request = with_roles(pb::RekeyRegistriesRequest { max_registries }, "root", ORG, "admin");
    Ok(client.rekey_registries(request).await?.into_inner())
}

/// Creates `REGISTRIES` registries through the API, their ids in order.
async fn create_all(server: &TestServer) -> Vec<String> {
    let mut alice = server.caller("alice", ORG).await;
    let mut ids = Vec::with_capacity(REGISTRIES);
    for i in 0..REGISTRIES {
        let registry = alice
            .create(&format!("Registry {i:04}"), pb::RegistryType::Ghcr, ghcr(i))
            .await
            .unwrap();
        ids.push(registry.id);
    }
    ids
}

async fn rekey_while_resolving(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(dir.path());
    if postgres {
        let Some(url) = registry_testkit::postgres_database().await else {
            return;
        };
        config.database_url = Some(url);
    }
    let (old, new) = (
        registry_crypto::generate_key().unwrap(),
        registry_crypto::generate_key().unwrap(),
    );
    config.master_keys = Some(old.to_string());
    let server = TestServer::start_with(config.clone()).await.unwrap();
    let ids = create_all(&server).await;
    server.stop().await;

    // The new key becomes the primary; the old one stays to open what it
    // sealed.
    config.master_keys = Some(format!("{},{}", new.as_str(), old.as_str()));
    let server = TestServer::start_with(config.clone()).await.unwrap();

    // Deployers resolve throughout; every answer is the right login.
    let stop = Arc::new(AtomicBool::new(false));
    let resolved = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for reader in 0..2 {
        let (stop, resolved, ids) = (stop.clone(), resolved.clone(), ids.clone());
        let mut deployer = server.deployer("deploy", ORG).await;
        readers.push(tokio::spawn(async move {
            let mut i = reader;
            while !stop.load(Ordering::Relaxed) {
                let index = i % REGISTRIES;
                let login = deployer.resolve(&ids[index]).await.unwrap();
                assert_eq!(login.password, token(index));
                resolved.fetch_add(1, Ordering::Relaxed);
                i += 7;
            }
        }));
    }

    let mut client = server.client().await;
    // Only admins rekey, and a refusal is on record.
    let status = client
        .rekey_registries(with_roles(pb::RekeyRegistriesRequest::default(), "bob", ORG, "writer"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = rekey(&mut client, -1).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("max_registries"), "{status:?}");

    // A run limited to 400 leaves 600 for the next.
    let first = rekey(&mut client, 400).await.unwrap();
    assert_eq!(
        (first.rewrapped, first.raced, first.remaining),
        (400, 0, 600),
        "{first:?}"
    );
    assert!(first.failures.is_empty(), "{first:?}");

    // A run the caller abandons midway (its deadline passes while the
    // server works) keeps what it finished and loses nothing.
    let mut hurried = with_roles(pb::RekeyRegistriesRequest { max_registries: 0 }, "root", ORG, "admin");
    hurried.set_timeout(Duration::from_millis(20));
    let _ = client.rekey_registries(hurried).await;

    let last = rekey(&mut client, 0).await.unwrap();
    assert_eq!(last.remaining, 0, "{last:?}");
    assert!(last.rewrapped <= 600 && last.failures.is_empty(), "{last:?}");
    assert_eq!(last.primary_key_id, first.primary_key_id);
    // Nothing is left to do.
    let again = rekey(&mut client, 0).await.unwrap();
    assert_eq!((again.rewrapped, again.remaining), (0, 0), "{again:?}");

    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(resolved.load(Ordering::Relaxed) > 0);

    // Every registry was re-wrapped exactly once, on the trail.
    let mut rekeyed = 0;
    let mut token_page = String::new();
    loop {
        let request = with_roles(
            pb::ListAuditEventsRequest {
                action: pb::AuditAction::RegistryRekey.into(),
                page_size: 1000,
                page_token: token_page,
                ..Default::default()
            },
            "root",
            ORG,
            "admin",
        );
        let page = client.list_audit_events(request).await.unwrap().into_inner();
        for event in &page.events {
            if event.outcome == i32::from(pb::AuditOutcome::Ok) {
                rekeyed += 1;
                assert!(event.detail.ends_with(&first.primary_key_id), "{event:?}");
                assert!(event.peer.starts_with("127.0.0.1:"), "{event:?}");
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token_page = page.next_page_token;
    }
    assert_eq!(rekeyed, REGISTRIES);
    server.stop().await;

    // The old key can go: the server starts with the new one alone and
    // every registry still opens.
    config.master_keys = Some(new.to_string());
    let server = TestServer::start_with(config).await.unwrap();
    let mut deployer = server.deployer("deploy", ORG).await;
    for index in [0, 399, 400, REGISTRIES - 1] {
        assert_eq!(deployer.resolve(&ids[index]).await.unwrap().password, token(index));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_while_resolving_on_sqlite() {
    rekey_while_resolving(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_while_resolving_on_postgres() {
    rekey_while_resolving(true).await;
}

/// A blob that does not open under the configured keys (here: moved to
/// another registry's row) is reported by id and stays as it was; the rest
/// are re-wrapped.
#[tokio::test]
async fn a_blob_that_does_not_open_is_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(dir.path());
    let (old, new) = (
        registry_crypto::generate_key().unwrap(),
        registry_crypto::generate_key().unwrap(),
    );
    config.master_keys = Some(old.to_string());
    let server = TestServer::start_with(config.clone()).await.unwrap();
    let mut alice = server.caller("alice", ORG).await;
    let mut created = [
        alice.create("A", pb::RegistryType::Ghcr, ghcr(1)).await.unwrap(),
        alice.create("B", pb::RegistryType::Ghcr, ghcr(2)).await.unwrap(),
    ];
    server.stop().await;

    // The start-up check opens the blob of the smallest id per key: the
    // larger id's row gets the smaller one's blob, sealed for another
    // registry, so the server starts and the rekey meets the tamper.
    created.sort_by(|x, y| x.id.cmp(&y.id));
    let [intact, moved] = created;
    move_blob(&config, &intact.id, &moved.id).await;

    config.master_keys = Some(format!("{},{}", new.as_str(), old.as_str()));
    let server = TestServer::start_with(config).await.unwrap();
    let mut client = server.client().await;
    let report = rekey(&mut client, 0).await.unwrap();
    assert_eq!((report.rewrapped, report.remaining), (1, 1), "{report:?}");
    let [failure] = report.failures.as_slice() else {
        panic!("one failure: {report:?}")
    };
    assert_eq!(failure.registry_id, moved.id);
    assert!(failure.reason.contains("does not authenticate"), "{failure:?}");
    // The intact one resolves; the moved one is refused, never answered
    // with the other registry's login.
    let intact_token = token(if intact.name == "A" { 1 } else { 2 });
    let mut deployer = server.deployer("deploy", ORG).await;
    assert_eq!(deployer.resolve(&intact.id).await.unwrap().password, intact_token);
    let status = deployer.resolve(&moved.id).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(!status.message().contains(&intact_token), "{status:?}");
    // Still reported, still there, on the next run.
    let again = rekey(&mut client, 0).await.unwrap();
    assert_eq!(
        (again.rewrapped, again.remaining, again.failures.len()),
        (0, 1, 1),
        "{again:?}"
    );
    server.stop().await;
}

/// Puts registry `from`'s sealed blob on registry `to`'s row, through the
/// store's own compare-and-swap, with the server stopped.
async fn move_blob(config: &registry_server::config::Config, from: &str, to: &str) {
    use registry_core::audit::{AuditAction, AuditEvent, AuditOutcome};
    use registry_core::ports::store::RegistryStore as _;
    let store = registry_store::SeaStore::connect(&registry_store::sqlite_url(&config.data_dir))
        .await
        .unwrap();
    let blobs = store.sealed_under_other_keys("none", None, None, 10).await.unwrap();
    let blob = |id: &str| blobs.iter().find(|b| b.registry_id.as_str() == id).unwrap().clone();
    let (source, target) = (blob(from), blob(to));
    let audit = AuditEvent::by(
        ORG,
        "test",
        AuditAction::RegistryUpdate,
        None,
        AuditOutcome::Ok,
        "tamper",
    );
    let moved = store
        .rewrap(&target, &source.key_id, &source.sealed_credentials, &audit)
        .await
        .unwrap();
    assert!(moved);
}
