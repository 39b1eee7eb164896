//! The Kubernetes adapter against registry-testkit's simulated API server:
//! what it writes, what it never touches, and how every write is
//! conditional on the version it read.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams};
use orchestrator_k8s::connect::clients;
use orchestrator_k8s::{
    ClientOptions, DOCKER_CONFIG_KEY, GENERATION_ANNOTATION, KubePullSecrets, MANAGED_BY_LABEL, ORGANIZATION_LABEL,
    REGISTRY_LABEL, REVISION_ANNOTATION, ServiceAccounts,
};
use registry_core::RegistryId;
use registry_core::ports::orchestrators::{
    ClusterChange, Deleted, Observation, PullSecret, PullSecretApi, TargetError,
};
use registry_testkit::kube_api::{KubeSim, RequestMatch, Verb};

const NS: &str = "env-production";
const NAME: &str = "ghcr-creds-abc";

fn registry_id() -> RegistryId {
    RegistryId::parse("reg-abc").unwrap()
}

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_millis(500),
        user_agent: "orchestrator-k8s-test".into(),
    }
}

async fn sim() -> KubeSim {
    let sim = KubeSim::start().await;
    sim.create_namespace(NS);
    sim
}

fn api(sim: &KubeSim, service_accounts: ServiceAccounts) -> KubePullSecrets {
    KubePullSecrets::new(clients(sim.config(), &options()).unwrap(), service_accounts)
}

async fn watching(sim: &KubeSim) -> KubePullSecrets {
    let api = KubePullSecrets::watching(clients(sim.config(), &options()).unwrap(), ServiceAccounts::Leave);
    api.synced().await;
    api
}

fn config(token: &str) -> Vec<u8> {
    format!(r#"{{"auths":{{"ghcr.io":{{"username":"myorg","password":"{token}"}}}}}}"#).into_bytes()
}

fn secret<'a>(id: &'a RegistryId, revision: i64, generation: i64, data: &'a [u8]) -> PullSecret<'a> {
    PullSecret {
        namespace: NS,
        name: NAME,
        registry_id: id,
        organization: "acme",
        revision,
        generation,
        docker_config_json: data,
    }
}

fn stored(sim: &KubeSim) -> Secret {
    sim.secret(NS, NAME).expect("the secret exists")
}

fn annotation(secret: &Secret, key: &str) -> String {
    secret.metadata.annotations.as_ref().unwrap()[key].clone()
}

fn data(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().unwrap()[DOCKER_CONFIG_KEY].0.clone()
}

fn resource_version(secret: &Secret) -> String {
    secret.metadata.resource_version.clone().unwrap()
}

#[tokio::test]
async fn applies_create_then_update_in_place_and_an_unchanged_one_writes_nothing() {
    let sim = sim().await;
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let first = config("one");
    let applied = api.apply(secret(&id, 1, 1, &first)).await.unwrap();
    assert!(applied.wrote);
    let created = stored(&sim);
    assert_eq!(applied.version.resource_version, resource_version(&created));
    assert_eq!(created.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(data(&created), first);
    let labels = created.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], "registry-credential-service");
    assert_eq!(labels[REGISTRY_LABEL], "reg-abc");
    assert_eq!(labels[ORGANIZATION_LABEL], "acme");
    assert_eq!(annotation(&created, REVISION_ANNOTATION), "1");
    assert_eq!(annotation(&created, GENERATION_ANNOTATION), "1");

    // The same again: the first apply takes the fields over from the create
    // (managedFields change); from then on an unchanged apply writes
    // nothing.
    let owned = api.apply(secret(&id, 1, 1, &first)).await.unwrap();
    let again = api.apply(secret(&id, 1, 1, &first)).await.unwrap();
    assert_eq!(again.version, owned.version);
    assert_eq!(resource_version(&stored(&sim)), owned.version.resource_version);

    // A rotation updates the same object.
    let second = config("two");
    let rotated = api.apply(secret(&id, 2, 1, &second)).await.unwrap();
    let updated = stored(&sim);
    assert_eq!(
        (data(&updated), annotation(&updated, REVISION_ANNOTATION)),
        (second, "2".to_owned())
    );
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    assert_ne!(rotated.version.resource_version, applied.version.resource_version);
}

#[tokio::test]
async fn a_newer_revision_is_never_replaced_and_a_generation_never_lowered() {
    let sim = sim().await;
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let newer = config("three");
    api.apply(secret(&id, 3, 2, &newer)).await.unwrap();
    let before = stored(&sim);

    let stale = config("two");
    let applied = api.apply(secret(&id, 2, 2, &stale)).await.unwrap();
    assert!(!applied.wrote);
    assert_eq!(applied.revision, 3);
    assert_eq!(stored(&sim), before);

    // A refresh at the same revision by a writer of an older generation
    // keeps the newer generation.
    let refreshed = config("three-refreshed");
    api.apply(secret(&id, 3, 1, &refreshed)).await.unwrap();
    let after = stored(&sim);
    assert_eq!(data(&after), refreshed);
    assert_eq!(annotation(&after, GENERATION_ANNOTATION), "2");
}

#[tokio::test]
async fn a_secret_this_service_does_not_manage_is_never_touched() {
    let sim = sim().await;
    let foreign = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(NAME.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_KEY.to_owned(),
            ByteString(config("theirs")),
        )])),
        ..Default::default()
    };
    sim.seed_secret(NS, &foreign);
    let before = stored(&sim);
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let ours = config("ours");
    let refused = api.apply(secret(&id, 1, 1, &ours)).await.unwrap_err();
    assert_eq!(
        refused,
        TargetError::NotOurs {
            namespace: NS.into(),
            name: NAME.into()
        }
    );
    assert_eq!(api.delete(NS, NAME, &id, 1).await.unwrap(), Deleted::NotOurs);
    assert_eq!(stored(&sim), before);
    // Another registry's Secret of ours is not this registry's to delete.
    let other = RegistryId::parse("reg-other").unwrap();
    sim.delete_namespace(NS);
    sim.create_namespace(NS);
    api.apply(secret(&id, 1, 1, &ours)).await.unwrap();
    assert_eq!(api.delete(NS, NAME, &other, 1).await.unwrap(), Deleted::NotOurs);
    assert!(sim.secret(NS, NAME).is_some());
}

#[tokio::test]
async fn an_apply_racing_another_write_reads_again_and_wins_only_with_the_latest_version() {
    let sim = sim().await;
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let one = config("one");
    api.apply(secret(&id, 1, 1, &one)).await.unwrap();

    // The rotation's patch is held; meanwhile someone edits the Secret.
    let hold = sim.hold(RequestMatch::any().verb(Verb::Patch).resource("secrets").name(NAME));
    let two = config("two");
    let rotation = api.apply(secret(&id, 2, 1, &two));
    let edit = async {
        hold.arrived(1).await;
        let secrets: Api<Secret> = Api::namespaced(sim.client(), NS);
        let mut edited = secrets.get(NAME).await.unwrap();
        edited
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("team".into(), "platform".into());
        secrets.replace(NAME, &Default::default(), &edited).await.unwrap();
        hold.release();
    };
    let (applied, ()) = tokio::join!(rotation, edit);
    let applied = applied.unwrap();
    let after = stored(&sim);
    assert_eq!(data(&after), two);
    assert_eq!(applied.version.resource_version, resource_version(&after));
    assert_eq!(after.metadata.labels.unwrap()["team"], "platform");
    // The held patch failed its precondition; a second one, on a fresh
    // read, went through.
    let patches = sim
        .write_log()
        .into_iter()
        .filter(|w| w.verb == Verb::Patch && w.name.as_deref() == Some(NAME))
        .map(|w| w.code)
        .collect::<Vec<_>>();
    assert_eq!(patches, [409, 200]);
}

#[tokio::test]
async fn deletes_are_conditional_and_leave_a_newer_generation_alone() {
    let sim = sim().await;
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let one = config("one");
    api.apply(secret(&id, 1, 2, &one)).await.unwrap();
    // A deletion meant for generation 1 finds generation 2: left alone.
    assert_eq!(api.delete(NS, NAME, &id, 1).await.unwrap(), Deleted::Revived);
    assert!(sim.secret(NS, NAME).is_some());

    // A delete held while the Secret changes is refused by its
    // preconditions, reads again, and deletes the version it then saw.
    let hold = sim.hold(RequestMatch::any().verb(Verb::Delete).resource("secrets").name(NAME));
    let deleting = api.delete(NS, NAME, &id, 2);
    let change = async {
        hold.arrived(1).await;
        let two = config("two");
        api.apply(secret(&id, 2, 2, &two)).await.unwrap();
        hold.release();
    };
    let (deleted, ()) = tokio::join!(deleting, change);
    assert_eq!(deleted.unwrap(), Deleted::Removed);
    assert!(sim.secret(NS, NAME).is_none());
    let deletes: Vec<_> = sim
        .write_log()
        .into_iter()
        .filter(|w| w.verb == Verb::Delete)
        .map(|w| w.code)
        .collect();
    assert_eq!(deletes, [409, 200]);
    // Deleting what is gone (or whose namespace is gone) is done.
    assert_eq!(api.delete(NS, NAME, &id, 2).await.unwrap(), Deleted::AlreadyGone);
    assert_eq!(
        api.delete("env-gone", NAME, &id, 2).await.unwrap(),
        Deleted::AlreadyGone
    );
}

#[tokio::test]
async fn a_secret_the_watch_has_not_seen_yet_is_still_deleted() {
    let sim = sim().await;
    // The watch of Secrets lists (nothing) and then never hears of a
    // change: its resumption is held for the whole test.
    let _watch = sim.hold(RequestMatch::any().verb(Verb::Watch).resource("secrets"));
    let watched = watching(&sim).await;
    let id = registry_id();
    let one = config("one");
    api(&sim, ServiceAccounts::Leave)
        .apply(secret(&id, 1, 1, &one))
        .await
        .unwrap();
    assert!(matches!(watched.observe(NS, NAME), Observation::Absent));
    // The view's "absent" is only a hint: the delete reads, and deletes.
    assert_eq!(watched.delete(NS, NAME, &id, 1).await.unwrap(), Deleted::Removed);
    assert!(sim.secret(NS, NAME).is_none());
}

#[tokio::test]
async fn throttling_missing_namespaces_and_forbidden_ones_are_told_apart() {
    let sim = sim().await;
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let one = config("one");
    sim.inject_429(1, 7);
    assert_eq!(
        api.apply(secret(&id, 1, 1, &one)).await.unwrap_err(),
        TargetError::Throttled {
            retry_after: Duration::from_secs(7)
        }
    );
    assert!(!api.namespace_exists("env-missing").await.unwrap());
    let missing = PullSecret {
        namespace: "env-missing",
        ..secret(&id, 1, 1, &one)
    };
    assert_eq!(
        api.apply(missing).await.unwrap_err(),
        TargetError::NamespaceMissing("env-missing".into())
    );
    sim.forbid_namespace(NS);
    assert!(matches!(
        api.apply(secret(&id, 1, 1, &one)).await.unwrap_err(),
        TargetError::Forbidden { .. }
    ));
}

#[tokio::test]
async fn a_hung_api_server_is_a_deadline_not_a_hang() {
    let sim = sim().await;
    let api = api(&sim, ServiceAccounts::Leave);
    let id = registry_id();
    let _hung = sim.hold(RequestMatch::any().verb(Verb::Create).resource("secrets"));
    let started = std::time::Instant::now();
    let one = config("one");
    let error = api.apply(secret(&id, 1, 1, &one)).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Other namespaces' reads still answer.
    assert!(api.namespace_exists(NS).await.unwrap());
}

#[tokio::test]
async fn service_accounts_get_the_reference_and_keep_theirs() {
    let sim = sim().await;
    let mut account = sim.service_account(NS, "default").unwrap();
    account.image_pull_secrets = Some(vec![LocalObjectReference {
        name: "platform-pull".into(),
    }]);
    let accounts: Api<ServiceAccount> = Api::namespaced(sim.client(), NS);
    accounts
        .replace("default", &Default::default(), &account)
        .await
        .unwrap();
    let api = api(&sim, ServiceAccounts::Reference);
    let id = registry_id();
    let one = config("one");
    api.apply(secret(&id, 1, 1, &one)).await.unwrap();
    api.apply(secret(&id, 1, 1, &one)).await.unwrap();
    let names: Vec<_> = sim
        .service_account(NS, "default")
        .unwrap()
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["platform-pull", NAME]);
}

#[tokio::test]
async fn the_watched_cluster_answers_without_requests_and_reports_changes() {
    let sim = sim().await;
    let api = watching(&sim).await;
    assert!(matches!(api.next_change().await, ClusterChange::Resynced));
    let id = registry_id();
    let one = config("one");
    let applied = api.apply(secret(&id, 1, 1, &one)).await.unwrap();
    loop {
        if let ClusterChange::Secret { namespace, name } = api.next_change().await {
            assert_eq!((namespace.as_str(), name.as_str()), (NS, NAME));
            break;
        }
    }
    let Observation::Present(seen) = api.observe(NS, NAME) else {
        panic!("the cache holds the secret");
    };
    assert_eq!((seen.version, seen.revision, seen.generation), (applied.version, 1, 1));

    // Namespace checks and observations need no request.
    sim.reset_stats();
    assert!(api.namespace_exists(NS).await.unwrap());
    assert!(matches!(api.observe(NS, "other"), Observation::Absent));
    assert_eq!(sim.stats().total(), 0, "{:?}", sim.stats());

    // Deleted out of band: seen as a change, then absent.
    let secrets: Api<Secret> = Api::namespaced(sim.client(), NS);
    secrets.delete(NAME, &DeleteParams::default()).await.unwrap();
    loop {
        if let ClusterChange::Secret { .. } = api.next_change().await {
            break;
        }
    }
    assert_eq!(api.observe(NS, NAME), Observation::Absent);

    // A namespace appearing and disappearing.
    sim.create_namespace("env-new");
    assert_eq!(api.next_change().await, ClusterChange::NamespaceAdded("env-new".into()));
    sim.delete_namespace("env-new");
    loop {
        if let ClusterChange::NamespaceDeleted(name) = api.next_change().await {
            assert_eq!(name, "env-new");
            break;
        }
    }
}

#[tokio::test]
async fn the_watch_recovers_from_a_compacted_history_by_listing_again() {
    let sim = sim().await;
    sim.set_bookmark_interval(Duration::ZERO);
    let api = watching(&sim).await;
    assert!(matches!(api.next_change().await, ClusterChange::Resynced));
    // The watch stream is cut and the history compacted meanwhile: the
    // watcher's resumed watch gets 410 Gone, and it lists again.
    sim.set_unreachable(true);
    let id = registry_id();
    let seeded = sim.seed_secret(
        NS,
        &Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(NAME.into()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_owned(), "registry-credential-service".to_owned()),
                    (REGISTRY_LABEL.to_owned(), id.to_string()),
                ])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                DOCKER_CONFIG_KEY.to_owned(),
                ByteString(config("x")),
            )])),
            ..Default::default()
        },
    );
    sim.compact();
    sim.set_unreachable(false);
    loop {
        if api.next_change().await == ClusterChange::Resynced
            && let Observation::Present(seen) = api.observe(NS, NAME)
        {
            assert_eq!(Some(seen.version.resource_version), seeded.metadata.resource_version);
            break;
        }
    }
    assert!(
        sim.stats().count(Verb::List, "secrets") >= 2,
        "listed again after 410: {:?}",
        sim.stats()
    );
}
