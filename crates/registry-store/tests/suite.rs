//! One store test suite, run against every backend: SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use registry_core::deploy::{DeployStore, PullSecretState, SyncStatus, Usage};
use registry_core::ports::{AuditEvent, Inserted, ListQuery, RegistryStore, StoreError, WriteOutcome};
use registry_core::registry::new_etag;
use registry_core::{CredentialHint, Registry, RegistryId, RegistryKind, StoredRegistry, Timestamp};
use registry_store::SeaStore;

/// Generates one test per backend for every suite function named.
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = registry_store::SeaStore::connect(&registry_store::sqlite_url(dir.path()))
                        .await
                        .unwrap();
                    super::$test(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(url) = registry_testkit::postgres_database().await else { return };
                    let store = registry_store::SeaStore::connect(&url).await.unwrap();
                    super::$test(store).await;
                }
            )*
        }
    };
}

store_suite!(
    insert_then_get_round_trips,
    organizations_are_isolated,
    names_are_unique_per_organization,
    request_ids_replay_the_first_insert,
    updates_are_conditional_on_the_etag,
    renaming_onto_a_taken_name_changes_nothing,
    deletes_are_conditional_on_the_etag,
    lists_page_by_name_then_id,
    key_samples_name_every_key_in_use,
    every_write_is_audited,
    migrations_are_idempotent,
    usages_are_recorded_replaced_and_released,
    rotation_marks_every_pull_secret_pending,
    deleting_a_used_registry_needs_force,
    sync_outcomes_never_undo_a_newer_rotation,
    synced_secrets_with_expiring_logins_are_due_at_refresh_at,
);

fn registry(organization: &str, name: &str) -> StoredRegistry {
    let now = Timestamp::now();
    StoredRegistry {
        registry: Registry {
            id: RegistryId::generate(),
            organization: organization.into(),
            name: name.into(),
            kind: RegistryKind::Ghcr,
            server: "ghcr.io".into(),
            hints: vec![CredentialHint {
                field: "token".into(),
                value: "ghp_…abcd".into(),
                secret: true,
            }],
            created_by: "alice".into(),
            created_at: now,
            updated_at: now,
            etag: new_etag(),
            credential_revision: 1,
        },
        key_id: "mk-0001".into(),
        sealed_credentials: vec![1, 2, 3, 0, 255],
    }
}

fn audit(action: &str, registry: &StoredRegistry) -> AuditEvent {
    AuditEvent {
        at: Timestamp::now(),
        organization: registry.registry.organization.clone(),
        actor: "alice".into(),
        action: action.into(),
        registry_id: Some(registry.registry.id.clone()),
        outcome: "ok".into(),
        detail: String::new(),
    }
}

async fn insert(store: &SeaStore, registry: &StoredRegistry) {
    let inserted = store.insert(registry, None, &audit("registry.create", registry)).await;
    assert_eq!(inserted, Ok(Inserted::Created));
}

async fn insert_then_get_round_trips(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let got = store.get("acme", &r.registry.id).await.unwrap();
    assert_eq!(got, Some(r));
}

async fn organizations_are_isolated(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    assert_eq!(store.get("globex", &r.registry.id).await.unwrap(), None);
    let other = ListQuery {
        organization: "globex".into(),
        kind: None,
        after: None,
        limit: 10,
    };
    assert!(store.list(&other).await.unwrap().is_empty());
    let mut foreign = r.clone();
    foreign.registry.organization = "globex".into();
    assert_eq!(
        store
            .update(&foreign, &r.registry.etag, &audit("registry.update", &foreign))
            .await,
        Ok(WriteOutcome::NotFound)
    );
    assert_eq!(
        store
            .delete(
                "globex",
                &r.registry.id,
                &r.registry.etag,
                false,
                &audit("registry.delete", &r)
            )
            .await,
        Ok(WriteOutcome::NotFound)
    );
    assert_eq!(store.get("acme", &r.registry.id).await.unwrap(), Some(r));
}

async fn names_are_unique_per_organization(store: SeaStore) {
    insert(&store, &registry("acme", "Docker Hub")).await;
    let twin = registry("acme", "Docker Hub");
    assert_eq!(
        store.insert(&twin, None, &audit("registry.create", &twin)).await,
        Err(StoreError::NameTaken("Docker Hub".into()))
    );
    assert_eq!(store.get("acme", &twin.registry.id).await.unwrap(), None);
    insert(&store, &registry("globex", "Docker Hub")).await;
}

async fn request_ids_replay_the_first_insert(store: SeaStore) {
    let first = registry("acme", "Production ECR");
    let created = store
        .insert(&first, Some("req-1"), &audit("registry.create", &first))
        .await;
    assert_eq!(created, Ok(Inserted::Created));
    let retry = registry("acme", "Production ECR");
    let replayed = store
        .insert(&retry, Some("req-1"), &audit("registry.create", &retry))
        .await;
    assert_eq!(replayed, Ok(Inserted::Replayed(Box::new(first.clone()))));
    assert_eq!(store.find_by_request_id("acme", "req-1").await.unwrap(), Some(first));
    assert_eq!(store.find_by_request_id("globex", "req-1").await.unwrap(), None);
    let all = ListQuery {
        organization: "acme".into(),
        kind: None,
        after: None,
        limit: 10,
    };
    assert_eq!(store.list(&all).await.unwrap().len(), 1);
}

async fn updates_are_conditional_on_the_etag(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let mut next = r.clone();
    next.registry.name = "GHCR".into();
    next.registry.credential_revision = 2;
    next.registry.etag = new_etag();
    next.sealed_credentials = vec![9, 9, 9];

    let stale = store
        .update(&next, "not-the-etag", &audit("registry.update", &next))
        .await;
    assert_eq!(stale, Ok(WriteOutcome::EtagMismatch));
    assert_eq!(store.get("acme", &r.registry.id).await.unwrap(), Some(r.clone()));

    let done = store
        .update(&next, &r.registry.etag, &audit("registry.update", &next))
        .await;
    assert_eq!(done, Ok(WriteOutcome::Done(())));
    assert_eq!(store.get("acme", &r.registry.id).await.unwrap(), Some(next.clone()));

    // The old etag no longer matches.
    let again = store
        .update(&next, &r.registry.etag, &audit("registry.update", &next))
        .await;
    assert_eq!(again, Ok(WriteOutcome::EtagMismatch));
}

async fn renaming_onto_a_taken_name_changes_nothing(store: SeaStore) {
    let a = registry("acme", "A");
    let b = registry("acme", "B");
    insert(&store, &a).await;
    insert(&store, &b).await;
    let mut renamed = b.clone();
    renamed.registry.name = "A".into();
    renamed.registry.etag = new_etag();
    let result = store
        .update(&renamed, &b.registry.etag, &audit("registry.update", &renamed))
        .await;
    assert_eq!(result, Err(StoreError::NameTaken("A".into())));
    assert_eq!(store.get("acme", &b.registry.id).await.unwrap(), Some(b));
}

async fn deletes_are_conditional_on_the_etag(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let id = &r.registry.id;
    let stale = store
        .delete("acme", id, "old", false, &audit("registry.delete", &r))
        .await;
    assert_eq!(stale, Ok(WriteOutcome::EtagMismatch));
    assert!(store.get("acme", id).await.unwrap().is_some());
    let done = store
        .delete("acme", id, &r.registry.etag, false, &audit("registry.delete", &r))
        .await;
    assert_eq!(done, Ok(WriteOutcome::Done(())));
    assert_eq!(store.get("acme", id).await.unwrap(), None);
    let gone = store
        .delete("acme", id, &r.registry.etag, false, &audit("registry.delete", &r))
        .await;
    assert_eq!(gone, Ok(WriteOutcome::NotFound));
}

async fn lists_page_by_name_then_id(store: SeaStore) {
    for name in ["delta", "alpha", "charlie", "bravo", "echo"] {
        insert(&store, &registry("acme", name)).await;
    }
    let mut docker = registry("acme", "foxtrot");
    docker.registry.kind = RegistryKind::Docker;
    insert(&store, &docker).await;

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                organization: "acme".into(),
                kind: None,
                after: after.clone(),
                limit: 2,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.registry.name.clone(), last.registry.id.to_string()));
        seen.extend(page.into_iter().map(|r| r.registry.name));
    }
    assert_eq!(seen, ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]);

    let dockers = store
        .list(&ListQuery {
            organization: "acme".into(),
            kind: Some(RegistryKind::Docker),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(dockers, vec![docker]);
}

async fn key_samples_name_every_key_in_use(store: SeaStore) {
    assert!(store.key_samples().await.unwrap().is_empty());
    let a = registry("acme", "A");
    let mut b = registry("acme", "B");
    b.key_id = "mk-0002".into();
    let c = registry("globex", "C");
    for r in [&a, &b, &c] {
        insert(&store, r).await;
    }
    let mut keys: Vec<_> = store
        .key_samples()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.key_id, s.sealed_credentials))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("mk-0001".to_owned(), vec![1, 2, 3, 0, 255]),
            ("mk-0002".to_owned(), vec![1, 2, 3, 0, 255]),
        ]
    );
}

async fn every_write_is_audited(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let mut next = r.clone();
    next.registry.etag = new_etag();
    store
        .update(&next, &r.registry.etag, &audit("registry.update", &next))
        .await
        .unwrap();
    store
        .record(&AuditEvent {
            outcome: "denied".into(),
            ..audit("registry.delete", &r)
        })
        .await
        .unwrap();
    // A refused write leaves no audit event behind.
    store
        .update(&next, "stale", &audit("registry.update", &next))
        .await
        .unwrap();
    let events = store.audit_events("acme", 10).await.unwrap();
    let actions: Vec<_> = events.iter().map(|e| format!("{}:{}", e.action, e.outcome)).collect();
    assert_eq!(
        actions,
        ["registry.delete:denied", "registry.update:ok", "registry.create:ok"]
    );
    assert!(events.iter().all(|e| e.registry_id.as_ref() == Some(&r.registry.id)));
    assert!(store.audit_events("globex", 10).await.unwrap().is_empty());
}

async fn migrations_are_idempotent(store: SeaStore) {
    use sea_orm_migration::MigratorTrait;
    let r = registry("acme", "kept");
    insert(&store, &r).await;
    registry_store::migration::Migrator::up(store.connection(), None)
        .await
        .unwrap();
    assert_eq!(store.get("acme", &r.registry.id).await.unwrap(), Some(r));
}

fn usage(registry: &StoredRegistry, container: &str, namespace: &str) -> Usage {
    Usage {
        organization: registry.registry.organization.clone(),
        container_id: container.into(),
        registry_id: Some(registry.registry.id.clone()),
        environment: namespace.trim_start_matches("env-").into(),
        target: "k8s".into(),
        namespace: Some(namespace.into()),
        image: "ghcr.io/myorg/api:v2.1.0".into(),
        credential_revision: registry.registry.credential_revision,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    }
}

fn synced_secret(registry: &StoredRegistry, namespace: &str) -> PullSecretState {
    let revision = registry.registry.credential_revision;
    PullSecretState {
        registry_id: registry.registry.id.clone(),
        organization: registry.registry.organization.clone(),
        target: "k8s".into(),
        namespace: namespace.into(),
        secret_name: "ghcr-creds-x".into(),
        server: "ghcr.io".into(),
        desired_revision: revision,
        applied_revision: revision,
        status: SyncStatus::Synced,
        error: String::new(),
        attempts: 0,
        not_before: Timestamp(0),
        updated_at: Timestamp::now(),
        refresh_at: None,
    }
}

async fn deploy(store: &SeaStore, registry: &StoredRegistry, container: &str, namespace: &str) {
    store
        .record_usage(
            &usage(registry, container, namespace),
            Some(&synced_secret(registry, namespace)),
            &audit("deployment.prepare", registry),
        )
        .await
        .unwrap();
}

async fn secret_state(store: &SeaStore, registry: &StoredRegistry, namespace: &str) -> Option<(i64, i64, SyncStatus)> {
    store
        .pull_secret(&registry.registry.id, "k8s", namespace)
        .await
        .unwrap()
        .map(|s| (s.desired_revision, s.applied_revision, s.status))
}

async fn usages_are_recorded_replaced_and_released(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-production").await;
    deploy(&store, &r, "worker", "env-production").await;
    deploy(&store, &r, "web", "env-staging").await;
    let all = store.usages("acme", Some(&r.registry.id), None, 10).await.unwrap();
    let containers: Vec<_> = all.iter().map(|u| u.container_id.as_str()).collect();
    assert_eq!(containers, ["api", "web", "worker"]);
    assert!(store.usages("globex", None, None, 10).await.unwrap().is_empty());
    assert_eq!(store.usages("acme", None, Some("web"), 10).await.unwrap().len(), 1);

    // Moving web from staging to production leaves staging's Secret unused.
    deploy(&store, &r, "web", "env-production").await;
    assert_eq!(
        secret_state(&store, &r, "env-staging").await,
        Some((0, 1, SyncStatus::Pending))
    );
    assert_eq!(
        store.usage("acme", "web").await.unwrap().unwrap().namespace.as_deref(),
        Some("env-production")
    );

    // Production's Secret stays while one container still uses it.
    let released = store
        .release_usage("acme", "api", &audit("deployment.release", &r))
        .await
        .unwrap();
    assert_eq!(released.unwrap().container_id, "api");
    assert_eq!(
        secret_state(&store, &r, "env-production").await,
        Some((1, 1, SyncStatus::Synced))
    );
    store
        .release_usage("acme", "worker", &audit("deployment.release", &r))
        .await
        .unwrap();
    store
        .release_usage("acme", "web", &audit("deployment.release", &r))
        .await
        .unwrap();
    assert_eq!(
        secret_state(&store, &r, "env-production").await,
        Some((0, 1, SyncStatus::Pending))
    );
    assert_eq!(
        store
            .release_usage("acme", "web", &audit("deployment.release", &r))
            .await
            .unwrap(),
        None
    );

    let due = store.due_pull_secrets(Timestamp::now(), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|s| s.desired_revision == 0));
}

async fn rotation_marks_every_pull_secret_pending(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    for ns in ["env-a", "env-b", "env-c"] {
        deploy(&store, &r, ns, ns).await;
    }
    assert!(store.due_pull_secrets(Timestamp::now(), 10).await.unwrap().is_empty());
    let mut rotated = r.clone();
    rotated.registry.credential_revision = 2;
    rotated.registry.etag = new_etag();
    let outcome = store
        .update(&rotated, &r.registry.etag, &audit("registry.update", &rotated))
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Done(()));
    let due = store.due_pull_secrets(Timestamp::now(), 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|s| s.desired_revision == 2 && s.applied_revision == 1));
    assert!(due.iter().all(|s| s.status == SyncStatus::Pending));
}

async fn deleting_a_used_registry_needs_force(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-production").await;
    deploy(&store, &r, "worker", "env-staging").await;
    let id = &r.registry.id;
    let refused = store
        .delete("acme", id, &r.registry.etag, false, &audit("registry.delete", &r))
        .await
        .unwrap();
    assert_eq!(refused, WriteOutcome::InUse(vec!["api".into(), "worker".into()]));
    assert!(store.get("acme", id).await.unwrap().is_some());

    let forced = store
        .delete("acme", id, &r.registry.etag, true, &audit("registry.delete", &r))
        .await
        .unwrap();
    assert_eq!(forced, WriteOutcome::Done(()));
    assert!(store.usages("acme", Some(id), None, 10).await.unwrap().is_empty());
    let due = store.due_pull_secrets(Timestamp::now(), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|s| s.desired_revision == 0));
    assert_eq!(store.registry_by_id(id).await.unwrap(), None);
}

async fn sync_outcomes_never_undo_a_newer_rotation(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-a").await;
    deploy(&store, &r, "web", "env-b").await;
    let mut rev2 = r.clone();
    rev2.registry.credential_revision = 2;
    rev2.registry.etag = new_etag();
    store
        .update(&rev2, &r.registry.etag, &audit("registry.update", &rev2))
        .await
        .unwrap();
    let due = store.due_pull_secrets(Timestamp::now(), 10).await.unwrap();
    let synced: Vec<_> = due
        .into_iter()
        .map(|mut s| {
            s.applied_revision = s.desired_revision;
            s.status = SyncStatus::Synced;
            s
        })
        .collect();

    // Revision 3 lands while revision 2 is being written.
    let mut rev3 = rev2.clone();
    rev3.registry.credential_revision = 3;
    rev3.registry.etag = new_etag();
    store
        .update(&rev3, &rev2.registry.etag, &audit("registry.update", &rev3))
        .await
        .unwrap();
    store.record_sync(&synced).await.unwrap();
    for ns in ["env-a", "env-b"] {
        assert_eq!(
            secret_state(&store, &r, ns).await,
            Some((3, 1, SyncStatus::Pending)),
            "{ns}"
        );
    }

    // A deletion outcome removes the row.
    store
        .release_usage("acme", "api", &audit("deployment.release", &r))
        .await
        .unwrap();
    let mut deleted = store
        .pull_secret(&r.registry.id, "k8s", "env-a")
        .await
        .unwrap()
        .unwrap();
    deleted.status = SyncStatus::Synced;
    store.record_sync(&[deleted]).await.unwrap();
    assert_eq!(secret_state(&store, &r, "env-a").await, None);
}

async fn synced_secrets_with_expiring_logins_are_due_at_refresh_at(store: SeaStore) {
    let r = registry("acme", "Production ECR");
    insert(&store, &r).await;
    let now = Timestamp::now();
    let hour = 3_600_000_000;
    // env-a: a static login; env-b: a token refreshed in 6 hours; env-c: a
    // token whose refresh time has passed.
    for (container, namespace, refresh_at) in [
        ("api", "env-a", None),
        ("web", "env-b", Some(Timestamp(now.0 + 6 * hour))),
        ("job", "env-c", Some(Timestamp(now.0 - 1))),
    ] {
        let secret = PullSecretState {
            refresh_at,
            ..synced_secret(&r, namespace)
        };
        store
            .record_usage(
                &usage(&r, container, namespace),
                Some(&secret),
                &audit("deployment.prepare", &r),
            )
            .await
            .unwrap();
    }
    let stored = store
        .pull_secret(&r.registry.id, "k8s", "env-b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.refresh_at, Some(Timestamp(now.0 + 6 * hour)));
    assert_eq!(
        store
            .pull_secret(&r.registry.id, "k8s", "env-a")
            .await
            .unwrap()
            .unwrap()
            .refresh_at,
        None
    );

    let due = store.due_pull_secrets(now, 10).await.unwrap();
    assert_eq!(due.iter().map(|s| s.namespace.as_str()).collect::<Vec<_>>(), ["env-c"]);
    assert!(due[0].is_synced());

    // The sync re-applies it with a fresh token: due again only later.
    let refreshed = PullSecretState {
        refresh_at: Some(Timestamp(now.0 + 6 * hour)),
        ..due[0].clone()
    };
    store.record_sync(&[refreshed]).await.unwrap();
    assert!(store.due_pull_secrets(now, 10).await.unwrap().is_empty());
    let later = store.due_pull_secrets(Timestamp(now.0 + 7 * hour), 10).await.unwrap();
    let mut namespaces: Vec<_> = later.iter().map(|s| s.namespace.as_str()).collect();
    namespaces.sort_unstable();
    assert_eq!(namespaces, ["env-b", "env-c"]);
}
