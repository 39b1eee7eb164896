//! Reading the audit trail through the API (`ListAuditEvents`), on SQLite
//! and PostgreSQL: only auditors (and admins) read it, each organization
//! its own; the filters select what they say; pages walk the whole trail
//! newest first; refused calls, replayed creates and the sync loop's
//! writes and deletions are in it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use registry_e2e::{TestServer, default_config};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use tonic::Code;

fn ghcr(token: &str) -> Option<pb::Credentials> {
    Some(pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: "myorg".into(),
            token: token.into(),
        })),
    })
}

const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";

async fn server(postgres: bool) -> Option<(TestServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(dir.path());
    if postgres {
        config.database_url = Some(registry_testkit::postgres_database().await?);
    }
    Some((TestServer::start_with(config).await.unwrap(), dir))
}

/// Every event the filter selects, walking pages of `page_size`.
async fn walk(auditor: &mut registry_e2e::Caller, filter: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = auditor
            .audit_events(pb::ListAuditEventsRequest {
                page_token: token,
                ..filter.clone()
            })
            .await
            .unwrap();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

async fn the_trail_reads_back_filtered_and_paged(postgres: bool) {
    let Some((server, _dir)) = server(postgres).await else {
        return;
    };
    let mut alice = server.caller("alice", "acme").await;
    let first = alice
        .create("First", pb::RegistryType::Ghcr, ghcr(TOKEN))
        .await
        .unwrap();
    let second = alice
        .create("Second", pb::RegistryType::Ghcr, ghcr(TOKEN))
        .await
        .unwrap();
    // A retried create (same request id) answers the first registry and is
    // on record as a replay.
    let retried = pb::CreateRegistryRequest {
        registry: Some(registry_e2e::draft("Third", pb::RegistryType::Ghcr, ghcr(TOKEN))),
        request_id: "retry-1".into(),
    };
    let third = alice.create_with(retried.clone()).await.unwrap();
    assert_eq!(alice.create_with(retried).await.unwrap().id, third.id);
    let mut deployer = server.deployer("ci-bot", "acme").await;
    deployer.resolve(&first.id).await.unwrap();
    deployer.resolve(&first.id).await.unwrap();
    // A reader may not have the credentials: refused, and on record.
    let mut reader = server.deployer("mallory", "acme").await.with_roles("reader");
    assert_eq!(
        reader.resolve(&first.id).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    server
        .caller("gina", "globex")
        .await
        .create("Theirs", pb::RegistryType::Ghcr, ghcr(TOKEN))
        .await
        .unwrap();

    // Only auditors and admins read the trail.
    let err = alice
        .audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut auditor = server.caller("audrey", "acme").await.with_roles("auditor");
    let mut admin = server.caller("root", "acme").await.with_roles("admin");
    assert!(admin.audit_events(pb::ListAuditEventsRequest::default()).await.is_ok());
    // An auditor reads the trail and nothing else.
    assert_eq!(auditor.list().await.unwrap_err().code(), Code::PermissionDenied);

    let all = walk(
        &mut auditor,
        pb::ListAuditEventsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    let summary: Vec<(String, i32, i32)> = all.iter().map(|e| (e.actor.clone(), e.action, e.outcome)).collect();
    use pb::{AuditAction as A, AuditOutcome as O};
    assert_eq!(
        summary,
        vec![
            ("audrey".into(), A::RegistryRead.into(), O::Denied.into()),
            ("alice".into(), A::AuditRead.into(), O::Denied.into()),
            ("mallory".into(), A::CredentialsResolve.into(), O::Denied.into()),
            ("ci-bot".into(), A::CredentialsResolve.into(), O::Ok.into()),
            ("ci-bot".into(), A::CredentialsResolve.into(), O::Ok.into()),
            ("alice".into(), A::RegistryCreate.into(), O::Replayed.into()),
            ("alice".into(), A::RegistryCreate.into(), O::Ok.into()),
            ("alice".into(), A::RegistryCreate.into(), O::Ok.into()),
            ("alice".into(), A::RegistryCreate.into(), O::Ok.into()),
        ],
        "acme's trail, newest first, refusals and the replay included, without globex's event"
    );
    assert_eq!(
        all[5].registry_id, third.id,
        "the replay names the registry it answered"
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert!(all.iter().all(|e| !e.detail.contains(TOKEN)));

    let of_second = walk(
        &mut auditor,
        pb::ListAuditEventsRequest {
            registry_id: second.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(of_second.len(), 1);
    assert_eq!(of_second[0].registry_id, second.id);
    let resolves = walk(
        &mut auditor,
        pb::ListAuditEventsRequest {
            action: A::CredentialsResolve.into(),
            actor: "ci-bot".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(resolves.len(), 2);
    // A time window: from the second create (inclusive) to the first
    // resolve (exclusive): the second and third creates and the replay.
    let time = |e: &pb::AuditEvent| e.time.unwrap();
    let window = walk(
        &mut auditor,
        pb::ListAuditEventsRequest {
            start_time: Some(time(&all[7])),
            end_time: Some(time(&all[4])),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<i64> = window.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        vec![all[5].id, all[6].id, all[7].id],
        "start inclusive, end exclusive"
    );

    // A page token belongs to its filters; garbage is no token.
    let page = auditor
        .audit_events(pb::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = auditor
        .audit_events(pb::ListAuditEventsRequest {
            page_token: page.next_page_token,
            actor: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{err:?}");
    for bad in [
        pb::ListAuditEventsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        },
        pb::ListAuditEventsRequest {
            registry_id: "no such id".into(),
            ..Default::default()
        },
        pb::ListAuditEventsRequest {
            action: 99,
            ..Default::default()
        },
        pb::ListAuditEventsRequest {
            start_time: Some(time(&all[0])),
            end_time: Some(time(&all[8])),
            ..Default::default()
        },
    ] {
        let err = auditor.audit_events(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_trail_reads_back_filtered_and_paged_on_sqlite() {
    the_trail_reads_back_filtered_and_paged(false).await;
}

#[tokio::test]
async fn the_trail_reads_back_filtered_and_paged_on_postgres() {
    the_trail_reads_back_filtered_and_paged(true).await;
}

/// The sync loop's writes are on record: a rotation's fan-out writes each
/// pull Secret as the service, and a release's garbage collection deletes
/// it, each event naming the target, namespace and Secret.
#[tokio::test]
async fn the_sync_loops_writes_and_deletions_are_on_the_trail() {
    use registry_e2e::cluster::{Cluster, NEW_TOKEN, ghcr as cluster_ghcr};
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    for (container, environment) in [("api", "production"), ("web", "staging")] {
        deployer
            .prepare(container, environment, "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
    }
    cluster
        .caller()
        .await
        .rotate(&registry.id, cluster_ghcr(NEW_TOKEN), "")
        .await
        .unwrap();
    deployer
        .wait_for_sync(&registry.id, std::time::Duration::from_secs(10), |s| {
            s.targets.len() == 2 && s.targets.iter().all(|t| t.applied_revision == 2)
        })
        .await;
    let mut auditor = cluster.server.caller("audrey", "acme").await.with_roles("auditor");
    let writes = walk(
        &mut auditor,
        pb::ListAuditEventsRequest {
            action: pb::AuditAction::PullSecretWrite.into(),
            ..Default::default()
        },
    )
    .await;
    let mut namespaces: Vec<&str> = writes
        .iter()
        .map(|e| {
            assert_eq!(e.actor, "registry-credential-service");
            assert_eq!(e.registry_id, registry.id);
            assert!(e.detail.contains("revision=2"), "{}", e.detail);
            e.detail
                .split_whitespace()
                .find_map(|w| w.strip_prefix("namespace="))
                .unwrap()
        })
        .collect();
    namespaces.sort_unstable();
    assert_eq!(namespaces, ["env-production", "env-staging"], "one write per Secret");

    deployer.release("web").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let deletions = loop {
        let deletions = walk(
            &mut auditor,
            pb::ListAuditEventsRequest {
                action: pb::AuditAction::PullSecretDelete.into(),
                ..Default::default()
            },
        )
        .await;
        if !deletions.is_empty() || std::time::Instant::now() > deadline {
            break deletions;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(deletions.len(), 1, "the released namespace's Secret is deleted once");
    assert!(
        deletions[0].detail.contains("namespace=env-staging"),
        "{}",
        deletions[0].detail
    );
}

/// Every event names the request it happened in and the peer it came from:
/// the caller's `x-request-id` when usable, else one the server made up;
/// either way the response answers it in `x-request-id`.
#[tokio::test]
async fn events_carry_the_request_id_and_the_peer() {
    let Some((server, _dir)) = server(false).await else {
        return;
    };
    let mut client = server.client().await;
    let create = |request_id: Option<&str>, name: &str| {
        let mut request = registry_e2e::as_user(
            pb::CreateRegistryRequest {
                registry: Some(registry_e2e::draft(name, pb::RegistryType::Ghcr, ghcr(TOKEN))),
                ..Default::default()
            },
            "alice",
            "acme",
        );
        if let Some(id) = request_id {
            request.metadata_mut().insert("x-request-id", id.parse().unwrap());
        }
        request
    };
    let answered =
        |response: &tonic::metadata::MetadataMap| response.get("x-request-id").unwrap().to_str().unwrap().to_owned();

    let chosen = client
        .create_registry(create(Some("deploy-42/step:1"), "Chosen"))
        .await
        .unwrap();
    assert_eq!(answered(chosen.metadata()), "deploy-42/step:1");
    let made_up = client.create_registry(create(None, "Made up")).await.unwrap();
    let made_up_id = answered(made_up.metadata());
    // An id that would not read safely in a log line is replaced.
    let replaced = client.create_registry(create(Some("a\tb"), "Replaced")).await.unwrap();
    let replaced_id = answered(replaced.metadata());
    assert!(!made_up_id.is_empty() && made_up_id != replaced_id && replaced_id != "a\tb");
    // A refused call answers its id too.
    let refused = client.create_registry(create(Some("refused-1"), "")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(answered(refused.metadata()), "refused-1");

    let mut auditor = server.caller("eve", "acme").await.with_roles("auditor");
    let events = walk(
        &mut auditor,
        pb::ListAuditEventsRequest {
            action: pb::AuditAction::RegistryCreate.into(),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<&str> = events.iter().rev().map(|e| e.request_id.as_str()).collect();
    assert_eq!(ids, ["deploy-42/step:1", made_up_id.as_str(), replaced_id.as_str()]);
    for event in &events {
        assert!(event.peer.starts_with("127.0.0.1:"), "{event:?}");
    }
    server.server.shutdown().await.unwrap();
}
