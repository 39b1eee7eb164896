//! One store test suite, run against every backend: SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

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
    let stale = store.delete("acme", id, "old", &audit("registry.delete", &r)).await;
    assert_eq!(stale, Ok(WriteOutcome::EtagMismatch));
    assert!(store.get("acme", id).await.unwrap().is_some());
    let done = store
        .delete("acme", id, &r.registry.etag, &audit("registry.delete", &r))
        .await;
    assert_eq!(done, Ok(WriteOutcome::Done(())));
    assert_eq!(store.get("acme", id).await.unwrap(), None);
    let gone = store
        .delete("acme", id, &r.registry.etag, &audit("registry.delete", &r))
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
