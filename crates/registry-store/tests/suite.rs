//! One store test suite, run against every backend: SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use registry_core::audit::{AuditAction, AuditEvent, AuditOutcome};
use registry_core::ports::orchestrators::SecretVersion;
use registry_core::ports::store::{
    DeployStore, Inserted, IntentOutcome, ListQuery, RecordedIntent, RegistryStore, SecretIntent, SecretOutcome,
    StoreError, UsageIntent, WriteOutcome,
};
use registry_core::registry::new_etag;
use registry_core::usage::{Lease, PullSecretState, SecretKey, SyncStatus, Usage};
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
    an_intent_wants_the_revision_current_at_its_commit,
    outcomes_never_lower_what_a_row_wants,
    intents_for_a_deleted_registry_record_nothing,
    a_usage_cannot_reference_a_missing_registry,
    one_organization_per_namespace,
    claims_lease_each_row_to_one_writer,
    a_secret_wanted_again_is_a_new_generation,
    abandoned_intents_restore_the_earlier_usage,
    drift_marks_a_row_pending_once,
    synced_secrets_with_expiring_logins_are_due_at_refresh_at,
    concurrent_intents_of_one_container_are_an_upsert,
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

fn audit(action: AuditAction, registry: &StoredRegistry) -> AuditEvent {
    AuditEvent::by(
        &registry.registry.organization,
        "alice",
        action,
        Some(&registry.registry.id),
        AuditOutcome::Ok,
        "",
    )
}

async fn insert(store: &SeaStore, registry: &StoredRegistry) {
    let inserted = store
        .insert(registry, None, &audit(AuditAction::RegistryCreate, registry))
        .await;
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
            .update(
                &foreign,
                &r.registry.etag,
                &audit(AuditAction::RegistryUpdate, &foreign)
            )
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
                &audit(AuditAction::RegistryDelete, &r)
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
        store
            .insert(&twin, None, &audit(AuditAction::RegistryCreate, &twin))
            .await,
        Err(StoreError::NameTaken("Docker Hub".into()))
    );
    assert_eq!(store.get("acme", &twin.registry.id).await.unwrap(), None);
    insert(&store, &registry("globex", "Docker Hub")).await;
}

async fn request_ids_replay_the_first_insert(store: SeaStore) {
    let first = registry("acme", "Production ECR");
    let created = store
        .insert(&first, Some("req-1"), &audit(AuditAction::RegistryCreate, &first))
        .await;
    assert_eq!(created, Ok(Inserted::Created));
    let retry = registry("acme", "Production ECR");
    let replayed = store
        .insert(&retry, Some("req-1"), &audit(AuditAction::RegistryCreate, &retry))
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
        .update(&next, "not-the-etag", &audit(AuditAction::RegistryUpdate, &next))
        .await;
    assert_eq!(stale, Ok(WriteOutcome::EtagMismatch));
    assert_eq!(store.get("acme", &r.registry.id).await.unwrap(), Some(r.clone()));

    let done = store
        .update(&next, &r.registry.etag, &audit(AuditAction::RegistryUpdate, &next))
        .await;
    assert_eq!(done, Ok(WriteOutcome::Done(())));
    assert_eq!(store.get("acme", &r.registry.id).await.unwrap(), Some(next.clone()));

    // The old etag no longer matches.
    let again = store
        .update(&next, &r.registry.etag, &audit(AuditAction::RegistryUpdate, &next))
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
        .update(
            &renamed,
            &b.registry.etag,
            &audit(AuditAction::RegistryUpdate, &renamed),
        )
        .await;
    assert_eq!(result, Err(StoreError::NameTaken("A".into())));
    assert_eq!(store.get("acme", &b.registry.id).await.unwrap(), Some(b));
}

async fn deletes_are_conditional_on_the_etag(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let id = &r.registry.id;
    let stale = store
        .delete("acme", id, "old", false, &audit(AuditAction::RegistryDelete, &r))
        .await;
    assert_eq!(stale, Ok(WriteOutcome::EtagMismatch));
    assert!(store.get("acme", id).await.unwrap().is_some());
    let done = store
        .delete(
            "acme",
            id,
            &r.registry.etag,
            false,
            &audit(AuditAction::RegistryDelete, &r),
        )
        .await;
    assert_eq!(done, Ok(WriteOutcome::Done(())));
    assert_eq!(store.get("acme", id).await.unwrap(), None);
    let gone = store
        .delete(
            "acme",
            id,
            &r.registry.etag,
            false,
            &audit(AuditAction::RegistryDelete, &r),
        )
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
        .update(&next, &r.registry.etag, &audit(AuditAction::RegistryUpdate, &next))
        .await
        .unwrap();
    store
        .record(&AuditEvent {
            outcome: AuditOutcome::Denied,
            ..audit(AuditAction::RegistryDelete, &r)
        })
        .await
        .unwrap();
    // A refused write leaves no audit event behind.
    store
        .update(&next, "stale", &audit(AuditAction::RegistryUpdate, &next))
        .await
        .unwrap();
    let events = store.audit_events("acme", 10).await.unwrap();
    let actions: Vec<_> = events
        .iter()
        .map(|e| format!("{}:{}", e.action.as_str(), e.outcome.as_str()))
        .collect();
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

fn secret_intent() -> SecretIntent {
    SecretIntent {
        secret_name: "ghcr-creds-x".into(),
        server: "ghcr.io".into(),
    }
}

fn lease(owner: &str) -> Lease {
    Lease {
        owner: owner.into(),
        until: Timestamp::now().after(Duration::from_secs(60)),
    }
}

fn key(registry: &StoredRegistry, namespace: &str) -> SecretKey {
    SecretKey {
        registry_id: registry.registry.id.clone(),
        target: "k8s".into(),
        namespace: namespace.into(),
    }
}

fn version(namespace: &str, rv: &str) -> SecretVersion {
    SecretVersion {
        uid: format!("uid-{namespace}"),
        resource_version: rv.into(),
    }
}

/// Records a prepare's intent as `owner`.
async fn intend(store: &SeaStore, usage: &Usage, owner: &str) -> IntentOutcome {
    let registry_id = usage.registry_id.clone().unwrap();
    let audit = AuditEvent::by(
        &usage.organization,
        "ci-bot",
        AuditAction::DeploymentPrepare,
        Some(&registry_id),
        AuditOutcome::Ok,
        "",
    );
    let secret = secret_intent();
    let lease = lease(owner);
    store
        .record_intent(&UsageIntent {
            usage,
            secret: Some(&secret),
            lease: &lease,
            audit: &audit,
        })
        .await
        .unwrap()
}

fn recorded(outcome: IntentOutcome) -> RecordedIntent {
    match outcome {
        IntentOutcome::Recorded(recorded) => *recorded,
        other => panic!("the intent was not recorded: {other:?}"),
    }
}

/// A prepare that recorded its intent and wrote the Secret at the revision
/// the intent found.
async fn deploy(store: &SeaStore, registry: &StoredRegistry, container: &str, namespace: &str) -> RecordedIntent {
    let intent = recorded(intend(store, &usage(registry, container, namespace), "prepare").await);
    if intent.leased {
        let applied = SecretOutcome::Applied {
            revision: intent.revision,
            version: version(namespace, "1"),
            refresh_at: None,
            warning: String::new(),
        };
        assert!(
            store
                .record_outcome(&key(registry, namespace), &applied, Some("prepare"))
                .await
                .unwrap()
        );
    }
    intent
}

async fn secret_state(store: &SeaStore, registry: &StoredRegistry, namespace: &str) -> Option<(i64, i64, SyncStatus)> {
    store
        .pull_secret(&key(registry, namespace))
        .await
        .unwrap()
        .map(|s| (s.desired_revision, s.applied_revision, s.status))
}

/// Claims everything due now as `owner`.
async fn claim(store: &SeaStore, owner: &str) -> Vec<PullSecretState> {
    store.claim_due(Timestamp::now(), &lease(owner), 100).await.unwrap()
}

async fn rotate(store: &SeaStore, registry: &StoredRegistry) -> StoredRegistry {
    let mut rotated = registry.clone();
    rotated.registry.credential_revision += 1;
    rotated.registry.etag = new_etag();
    let outcome = store
        .update(
            &rotated,
            &registry.registry.etag,
            &audit(AuditAction::RegistryUpdate, &rotated),
        )
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Done(()));
    rotated
}

async fn release(store: &SeaStore, registry: &StoredRegistry, container: &str) -> Option<Usage> {
    store
        .release_usage(
            &registry.registry.organization,
            container,
            &audit(AuditAction::DeploymentRelease, registry),
        )
        .await
        .unwrap()
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
    let moved = deploy(&store, &r, "web", "env-production").await;
    assert_eq!(moved.earlier.unwrap().namespace.as_deref(), Some("env-staging"));
    assert_eq!(
        secret_state(&store, &r, "env-staging").await,
        Some((0, 1, SyncStatus::Pending))
    );
    assert_eq!(
        store.usage("acme", "web").await.unwrap().unwrap().namespace.as_deref(),
        Some("env-production")
    );

    // Production's Secret stays while one container still uses it.
    assert_eq!(release(&store, &r, "api").await.unwrap().container_id, "api");
    assert_eq!(
        secret_state(&store, &r, "env-production").await,
        Some((1, 1, SyncStatus::Synced))
    );
    release(&store, &r, "worker").await;
    release(&store, &r, "web").await;
    assert_eq!(
        secret_state(&store, &r, "env-production").await,
        Some((0, 1, SyncStatus::Pending))
    );
    assert_eq!(release(&store, &r, "web").await, None);

    let due = claim(&store, "sync").await;
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|s| s.desired_revision == 0));
}

async fn rotation_marks_every_pull_secret_pending(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    for ns in ["env-a", "env-b", "env-c"] {
        deploy(&store, &r, ns, ns).await;
    }
    assert!(claim(&store, "sync").await.is_empty());
    rotate(&store, &r).await;
    let due = claim(&store, "sync").await;
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
        .delete(
            "acme",
            id,
            &r.registry.etag,
            false,
            &audit(AuditAction::RegistryDelete, &r),
        )
        .await
        .unwrap();
    assert_eq!(refused, WriteOutcome::InUse(vec!["api".into(), "worker".into()]));
    assert!(store.get("acme", id).await.unwrap().is_some());

    let forced = store
        .delete(
            "acme",
            id,
            &r.registry.etag,
            true,
            &audit(AuditAction::RegistryDelete, &r),
        )
        .await
        .unwrap();
    assert_eq!(forced, WriteOutcome::Done(()));
    assert!(store.usages("acme", Some(id), None, 10).await.unwrap().is_empty());
    let due = claim(&store, "sync").await;
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|s| s.desired_revision == 0));
    assert_eq!(store.registry_by_id(id).await.unwrap(), None);
}

async fn an_intent_wants_the_revision_current_at_its_commit(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-production").await;
    // The prepare loaded revision 1; a rotation committed before its intent.
    rotate(&store, &r).await;
    let intent = recorded(intend(&store, &usage(&r, "worker", "env-production"), "late").await);
    assert_eq!(intent.revision, 2);
    let row = intent.secret.unwrap();
    assert_eq!((row.desired_revision, row.applied_revision), (2, 1));
    assert_eq!(row.status, SyncStatus::Pending);
    // Not synced at that revision and free: the prepare writes it itself.
    assert!(intent.leased);
    assert_eq!(
        store
            .usage("acme", "worker")
            .await
            .unwrap()
            .unwrap()
            .credential_revision,
        2
    );
    // Already synced: no lease is taken and nothing is written.
    let again = recorded(intend(&store, &usage(&r, "api", "env-production"), "again").await);
    assert!(!again.leased);
}

async fn outcomes_never_lower_what_a_row_wants(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let first = recorded(intend(&store, &usage(&r, "api", "env-a"), "prepare").await);
    assert_eq!(first.revision, 1);
    // A rotation commits while the first write of the Secret is in flight.
    let r2 = rotate(&store, &r).await;
    let applied = SecretOutcome::Applied {
        revision: 1,
        version: version("env-a", "5"),
        refresh_at: None,
        warning: String::new(),
    };
    store
        .record_outcome(&key(&r, "env-a"), &applied, Some("prepare"))
        .await
        .unwrap();
    // The rotation is not lost: revision 2 is still wanted, due now.
    assert_eq!(
        secret_state(&store, &r, "env-a").await,
        Some((2, 1, SyncStatus::Pending))
    );
    let due = claim(&store, "sync").await;
    assert_eq!(due.len(), 1);

    // Revision 3 lands while the sync writes 2: 2 is recorded, 3 stays wanted.
    rotate(&store, &r2).await;
    let applied = SecretOutcome::Applied {
        revision: 2,
        version: version("env-a", "6"),
        refresh_at: None,
        warning: String::new(),
    };
    assert!(
        store
            .record_outcome(&key(&r, "env-a"), &applied, Some("sync"))
            .await
            .unwrap()
    );
    assert_eq!(
        secret_state(&store, &r, "env-a").await,
        Some((3, 2, SyncStatus::Pending))
    );

    // A late outcome of an older write never lowers the applied revision.
    let stale = SecretOutcome::Applied {
        revision: 1,
        version: version("env-a", "5"),
        refresh_at: None,
        warning: String::new(),
    };
    store.record_outcome(&key(&r, "env-a"), &stale, None).await.unwrap();
    let row = store.pull_secret(&key(&r, "env-a")).await.unwrap().unwrap();
    assert_eq!((row.desired_revision, row.applied_revision), (3, 2));
    assert_eq!(row.written, Some(version("env-a", "6")));
}

async fn intents_for_a_deleted_registry_record_nothing(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    store
        .delete(
            "acme",
            &r.registry.id,
            &r.registry.etag,
            false,
            &audit(AuditAction::RegistryDelete, &r),
        )
        .await
        .unwrap();
    let events = store.audit_events("acme", 10).await.unwrap().len();
    assert_eq!(
        intend(&store, &usage(&r, "api", "env-a"), "prepare").await,
        IntentOutcome::RegistryGone
    );
    assert_eq!(store.usage("acme", "api").await.unwrap(), None);
    assert_eq!(secret_state(&store, &r, "env-a").await, None);
    assert_eq!(store.audit_events("acme", 10).await.unwrap().len(), events);
}

async fn a_usage_cannot_reference_a_missing_registry(store: SeaStore) {
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let row = registry_store::entity::usages::ActiveModel {
        organization: Set("acme".into()),
        container_id: Set("api".into()),
        registry_id: Set(Some("reg-missing".into())),
        environment: Set("production".into()),
        target: Set("k8s".into()),
        namespace: Set(Some("env-production".into())),
        image: Set("ghcr.io/myorg/api:v1".into()),
        credential_revision: Set(1),
        created_at: Set(0),
        updated_at: Set(0),
    };
    let inserted = registry_store::entity::usages::Entity::insert(row)
        .exec_without_returning(store.connection())
        .await;
    assert!(
        inserted.is_err(),
        "a usage of a registry that does not exist was stored"
    );
}

async fn one_organization_per_namespace(store: SeaStore) {
    let acme = registry("acme", "My GHCR");
    let globex = registry("globex", "Their GHCR");
    insert(&store, &acme).await;
    insert(&store, &globex).await;
    deploy(&store, &acme, "api", "env-production").await;
    let refused = intend(&store, &usage(&globex, "web", "env-production"), "prepare").await;
    assert_eq!(refused, IntentOutcome::NamespaceTaken);
    assert_eq!(store.usage("globex", "web").await.unwrap(), None);
    assert_eq!(secret_state(&store, &globex, "env-production").await, None);
    // The owner may add more; once nothing of it is left, the namespace is free.
    deploy(&store, &acme, "worker", "env-production").await;
    release(&store, &acme, "api").await;
    release(&store, &acme, "worker").await;
    assert_eq!(
        intend(&store, &usage(&globex, "web", "env-production"), "prepare").await,
        IntentOutcome::NamespaceTaken,
        "acme's secret is still to be deleted there"
    );
    let deleting = claim(&store, "sync").await;
    assert_eq!(deleting.len(), 1);
    assert!(
        store
            .record_outcome(&key(&acme, "env-production"), &SecretOutcome::Deleted, Some("sync"))
            .await
            .unwrap()
    );
    assert_eq!(secret_state(&store, &acme, "env-production").await, None);
    recorded(intend(&store, &usage(&globex, "web", "env-production"), "prepare").await);
}

async fn claims_lease_each_row_to_one_writer(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    for ns in ["env-a", "env-b", "env-c"] {
        deploy(&store, &r, ns, ns).await;
    }
    rotate(&store, &r).await;
    let first = store.claim_due(Timestamp::now(), &lease("one"), 2).await.unwrap();
    let second = store.claim_due(Timestamp::now(), &lease("two"), 10).await.unwrap();
    assert_eq!((first.len(), second.len()), (2, 1));
    assert!(claim(&store, "three").await.is_empty());
    // Only the holder records; a writer whose lease was taken over cannot.
    let done = SecretOutcome::Applied {
        revision: 2,
        version: version(&second[0].namespace, "9"),
        refresh_at: None,
        warning: String::new(),
    };
    let row = key(&r, &second[0].namespace);
    assert!(!store.record_outcome(&row, &done, Some("one")).await.unwrap());
    assert!(store.record_outcome(&row, &done, Some("two")).await.unwrap());
    assert_eq!(
        secret_state(&store, &r, &second[0].namespace).await,
        Some((2, 2, SyncStatus::Synced))
    );
    // A writer that died: its lease runs out and the rows are due again.
    let later = Timestamp::now().after(Duration::from_secs(61));
    let taken_over = store
        .claim_due(
            later,
            &Lease {
                owner: "five".into(),
                until: later.after(Duration::from_secs(60)),
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 2);
    // A throttled attempt waits, and is not due before its time.
    let throttled = SecretOutcome::Retry {
        not_before: later.after(Duration::from_secs(300)),
        error: "throttled".into(),
    };
    let row = key(&r, &taken_over[0].namespace);
    assert!(store.record_outcome(&row, &throttled, Some("five")).await.unwrap());
    let state = store.pull_secret(&row).await.unwrap().unwrap();
    assert_eq!((state.status, state.error.as_str()), (SyncStatus::Pending, "throttled"));
    assert_eq!(state.lease, None);
}

async fn a_secret_wanted_again_is_a_new_generation(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-a").await;
    release(&store, &r, "api").await;
    let deleting = claim(&store, "deleter").await;
    assert_eq!((deleting.len(), deleting[0].generation), (1, 1));
    // A deploy wants it again while the deletion is in flight.
    let revived = recorded(intend(&store, &usage(&r, "web", "env-a"), "prepare").await);
    let row = revived.secret.unwrap();
    assert_eq!(
        (row.desired_revision, row.generation, row.status),
        (1, 2, SyncStatus::Pending)
    );
    assert!(!revived.leased, "the deleter still holds it");
    // The prepare's write does not mark it synced while the deleter holds it.
    let applied = SecretOutcome::Applied {
        revision: 1,
        version: version("env-a", "7"),
        refresh_at: None,
        warning: String::new(),
    };
    store.record_outcome(&key(&r, "env-a"), &applied, None).await.unwrap();
    assert_eq!(
        secret_state(&store, &r, "env-a").await,
        Some((1, 1, SyncStatus::Pending))
    );
    // The deleter removed it after all: the row stays, holding nothing, due.
    assert!(
        store
            .record_outcome(&key(&r, "env-a"), &SecretOutcome::Deleted, Some("deleter"))
            .await
            .unwrap()
    );
    assert_eq!(
        secret_state(&store, &r, "env-a").await,
        Some((1, 0, SyncStatus::Pending))
    );
    assert_eq!(claim(&store, "sync").await.len(), 1);
}

async fn abandoned_intents_restore_the_earlier_usage(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-a").await;
    let moved = usage(&r, "api", "env-b");
    let audit_event = audit(AuditAction::DeploymentPrepare, &r);
    let secret = secret_intent();
    let lease = lease("prepare");
    let intent = UsageIntent {
        usage: &moved,
        secret: Some(&secret),
        lease: &lease,
        audit: &audit_event,
    };
    let recorded = recorded(store.record_intent(&intent).await.unwrap());
    assert_eq!(
        secret_state(&store, &r, "env-a").await,
        Some((0, 1, SyncStatus::Pending))
    );
    let failed = audit_event.ended(AuditOutcome::Failed, "namespace env-b is forbidden");
    store
        .abandon_intent(&intent, recorded.earlier.as_ref(), &failed)
        .await
        .unwrap();
    let restored = store.usage("acme", "api").await.unwrap().unwrap();
    assert_eq!(restored.namespace.as_deref(), Some("env-a"));
    // env-b's Secret goes (it was never written), env-a's is wanted again,
    // as a new generation.
    assert_eq!(secret_state(&store, &r, "env-b").await.map(|s| s.0), Some(0));
    let again = store.pull_secret(&key(&r, "env-a")).await.unwrap().unwrap();
    assert_eq!((again.desired_revision, again.generation), (1, 2));
    let outcomes: Vec<_> = store
        .audit_events("acme", 2)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.action, e.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (AuditAction::DeploymentPrepare, AuditOutcome::Failed),
            (AuditAction::DeploymentPrepare, AuditOutcome::Ok)
        ]
    );
}

async fn drift_marks_a_row_pending_once(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    deploy(&store, &r, "api", "env-a").await;
    let row = key(&r, "env-a");
    let written = version("env-a", "1");
    let repair = AuditEvent::by(
        "acme",
        registry_core::audit::SERVICE_ACTOR,
        AuditAction::PullSecretRepair,
        Some(&r.registry.id),
        AuditOutcome::Ok,
        "deleted out of band",
    );
    assert!(
        store
            .mark_drifted(&row, Some(&written), "deleted out of band", &repair)
            .await
            .unwrap()
    );
    // A second replica seeing the same change finds it marked already.
    assert!(
        !store
            .mark_drifted(&row, Some(&written), "deleted out of band", &repair)
            .await
            .unwrap()
    );
    let state = store.pull_secret(&row).await.unwrap().unwrap();
    assert_eq!((state.applied_revision, state.status), (0, SyncStatus::Pending));
    assert_eq!(state.error, "deleted out of band");
    let repairs = store
        .audit_events("acme", 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::PullSecretRepair)
        .count();
    assert_eq!(repairs, 1);
    // Rows written before versions were recorded adopt the one seen.
    let mut legacy = registry("acme", "Legacy");
    legacy.registry.credential_revision = 1;
    insert(&store, &legacy).await;
    let intent = recorded(intend(&store, &usage(&legacy, "job", "env-c"), "prepare").await);
    assert!(intent.leased);
    assert!(
        store
            .adopt_version(&key(&legacy, "env-c"), &version("env-c", "3"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .adopt_version(&key(&legacy, "env-c"), &version("env-c", "4"))
            .await
            .unwrap()
    );
}

async fn synced_secrets_with_expiring_logins_are_due_at_refresh_at(store: SeaStore) {
    let r = registry("acme", "Production ECR");
    insert(&store, &r).await;
    let now = Timestamp::now();
    let hour = Duration::from_secs(3600);
    // env-a: a static login; env-b: a token refreshed in 6 hours; env-c: a
    // token whose refresh time has passed.
    for (container, namespace, refresh_at) in [
        ("api", "env-a", None),
        ("web", "env-b", Some(now.after(6 * hour))),
        ("job", "env-c", Some(Timestamp(now.0 - 1))),
    ] {
        let intent = recorded(intend(&store, &usage(&r, container, namespace), "prepare").await);
        assert!(intent.leased);
        let applied = SecretOutcome::Applied {
            revision: 1,
            version: version(namespace, "1"),
            refresh_at,
            warning: String::new(),
        };
        store
            .record_outcome(&key(&r, namespace), &applied, Some("prepare"))
            .await
            .unwrap();
    }
    let stored = store.pull_secret(&key(&r, "env-b")).await.unwrap().unwrap();
    assert_eq!(stored.refresh_at, Some(now.after(6 * hour)));
    assert_eq!(
        store.pull_secret(&key(&r, "env-a")).await.unwrap().unwrap().refresh_at,
        None
    );

    let due = claim(&store, "sync").await;
    assert_eq!(due.iter().map(|s| s.namespace.as_str()).collect::<Vec<_>>(), ["env-c"]);
    assert!(due[0].is_synced());

    // A refresh that fails keeps the Secret synced and retries later.
    let failed = SecretOutcome::Failed {
        error: "the token exchange failed".into(),
        not_before: now.after(hour),
    };
    store
        .record_outcome(&key(&r, "env-c"), &failed, Some("sync"))
        .await
        .unwrap();
    let state = store.pull_secret(&key(&r, "env-c")).await.unwrap().unwrap();
    assert!(state.is_synced());
    assert_eq!(state.refresh_at, Some(now.after(hour)));
    assert!(claim(&store, "sync").await.is_empty());
    let later = store.claim_due(now.after(7 * hour), &lease("later"), 10).await.unwrap();
    let mut namespaces: Vec<_> = later.iter().map(|s| s.namespace.as_str()).collect();
    namespaces.sort_unstable();
    assert_eq!(namespaces, ["env-b", "env-c"]);
}

async fn concurrent_intents_of_one_container_are_an_upsert(store: SeaStore) {
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    let api = usage(&r, "api", "env-a");
    let (a, b) = tokio::join!(intend(&store, &api, "replica-a"), intend(&store, &api, "replica-b"));
    let (a, b) = (recorded(a), recorded(b));
    assert_eq!(usize::from(a.earlier.is_some()) + usize::from(b.earlier.is_some()), 1);
    assert_eq!(usize::from(a.leased) + usize::from(b.leased), 1, "one writer at a time");
    assert_eq!(store.usages("acme", None, None, 10).await.unwrap().len(), 1);
}

/// PostgreSQL: a claim passes over rows another transaction holds (`FOR
/// UPDATE SKIP LOCKED` inside the one claiming statement) instead of
/// waiting for it or taking them; once released, they are claimed.
#[tokio::test]
async fn postgres_claims_skip_rows_another_transaction_holds() {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};

    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    let store = SeaStore::connect(&url).await.unwrap();
    let r = registry("acme", "My GHCR");
    insert(&store, &r).await;
    for ns in ["env-a", "env-b", "env-c"] {
        deploy(&store, &r, ns, ns).await;
    }
    rotate(&store, &r).await;

    // Another replica's claim, held mid-transaction on env-a's row.
    let held = store.connection().begin().await.unwrap();
    held.execute_unprepared("SELECT 1 FROM pull_secrets WHERE namespace = 'env-a' FOR UPDATE")
        .await
        .unwrap();
    let claimed = tokio::time::timeout(
        Duration::from_secs(10),
        store.claim_due(Timestamp::now(), &lease("one"), 10),
    )
    .await
    .expect("a claim never waits for a held row")
    .unwrap();
    let mut namespaces: Vec<_> = claimed.iter().map(|row| row.namespace.as_str()).collect();
    namespaces.sort_unstable();
    assert_eq!(namespaces, ["env-b", "env-c"]);

    held.rollback().await.unwrap();
    let rest = store.claim_due(Timestamp::now(), &lease("two"), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|row| row.namespace.as_str()).collect::<Vec<_>>(),
        ["env-a"]
    );
    assert!(
        store
            .claim_due(Timestamp::now(), &lease("three"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
