//! The simulated Kubernetes API server, driven through the real kube-rs client.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Namespace, ObjectReference, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::watcher;
use registry_testkit::kube_api::{KubeSim, RequestMatch, SEED_MANAGER, Verb};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const NS: &str = "env-production";
const MANAGER: &str = "registry-service";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

async fn sim() -> KubeSim {
    let sim = KubeSim::start().await;
    sim.create_namespace(NS);
    sim
}

fn secrets(sim: &KubeSim, namespace: &str) -> Api<Secret> {
    Api::namespaced(sim.client(), namespace)
}

fn accounts(sim: &KubeSim, namespace: &str) -> Api<ServiceAccount> {
    Api::namespaced(sim.client(), namespace)
}

fn docker_config(user: &str, password: &str) -> Vec<u8> {
    let auth = STANDARD.encode(format!("{user}:{password}"));
    json!({"auths": {"ghcr.io": {"username": user, "password": password, "auth": auth}}})
        .to_string()
        .into_bytes()
}

fn pull_secret(name: &str, config: Vec<u8>, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        data: Some(BTreeMap::from([(".dockerconfigjson".to_owned(), ByteString(config))])),
        ..Default::default()
    }
}

fn apply_config(name: &str, config: &[u8]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {MANAGED_BY: MANAGER, "registry-id": "r1"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": STANDARD.encode(config)},
    })
}

/// Server-side apply of our pull Secret configuration.
async fn apply(api: &Api<Secret>, name: &str, config: &[u8], manager: &str) -> kube::Result<Secret> {
    api.patch(
        name,
        &PatchParams::apply(manager),
        &Patch::Apply(apply_config(name, config)),
    )
    .await
}

fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn version(secret: &Secret) -> String {
    secret.metadata.resource_version.clone().unwrap()
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().unwrap()[key].0.clone()
}

#[tokio::test]
async fn create_get_and_list_with_label_selectors() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let ours = pull_secret(
        "ghcr-creds",
        docker_config("u", "p"),
        &[(MANAGED_BY, MANAGER), ("registry-id", "r1")],
    );
    let created = api.create(&PostParams::default(), &ours).await.unwrap();
    let other = pull_secret(
        "quay-creds",
        docker_config("q", "p"),
        &[(MANAGED_BY, MANAGER), ("registry-id", "r2")],
    );
    api.create(&PostParams::default(), &other).await.unwrap();
    let mut opaque = Secret::default();
    opaque.metadata.name = Some("app-config".to_owned());
    let opaque = api.create(&PostParams::default(), &opaque).await.unwrap();

    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(opaque.type_.as_deref(), Some("Opaque"), "type defaults to Opaque");
    let fetched = api.get("ghcr-creds").await.unwrap();
    assert_eq!(data(&fetched, ".dockerconfigjson"), docker_config("u", "p"));
    assert_eq!(fetched.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(sim.secret(NS, "ghcr-creds").unwrap().metadata.uid, created.metadata.uid);

    let names = |list: kube::core::ObjectList<Secret>| -> Vec<String> {
        list.items.into_iter().map(|s| s.metadata.name.unwrap()).collect()
    };
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(all), ["app-config", "ghcr-creds", "quay-creds"]);
    let managed = api
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
        .await
        .unwrap();
    assert_eq!(names(managed), ["ghcr-creds", "quay-creds"]);
    let one = api
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER},registry-id=r1")))
        .await;
    assert_eq!(names(one.unwrap()), ["ghcr-creds"]);
    let with_key = api.list(&ListParams::default().labels("registry-id")).await.unwrap();
    assert_eq!(names(with_key), ["ghcr-creds", "quay-creds"]);
    let without_key = api.list(&ListParams::default().labels("!registry-id")).await.unwrap();
    assert_eq!(names(without_key), ["app-config"]);
    let typed = api
        .list(&ListParams::default().fields("type=kubernetes.io/dockerconfigjson"))
        .await
        .unwrap();
    assert_eq!(names(typed), ["ghcr-creds", "quay-creds"]);
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let next = ListParams::default()
        .limit(2)
        .continue_token(page.metadata.continue_.as_deref().unwrap());
    assert_eq!(names(api.list(&next).await.unwrap()), ["quay-creds"]);
    let everywhere: Api<Secret> = Api::all(sim.client());
    assert_eq!(everywhere.list(&ListParams::default()).await.unwrap().items.len(), 3);

    let bad_selector = api_error(api.list(&ListParams::default().labels("bad key=x")).await);
    assert_eq!((bad_selector.code, bad_selector.reason.as_str()), (400, "BadRequest"));

    let again = api_error(api.create(&PostParams::default(), &ours).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, r#"secrets "ghcr-creds" already exists"#);
}

#[tokio::test]
async fn every_write_gets_a_new_resource_version_and_stale_replaces_conflict() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let created = api
        .create(&PostParams::default(), &pull_secret("s", docker_config("u", "p"), &[]))
        .await
        .unwrap();

    let mut update = created.clone();
    update.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_owned(),
        ByteString(docker_config("u", "p2")),
    )]));
    let replaced = api.replace("s", &PostParams::default(), &update).await.unwrap();
    assert!(version(&replaced).parse::<u64>().unwrap() > version(&created).parse::<u64>().unwrap());
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(
        replaced.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
    assert_eq!(version(&replaced), sim.resource_version().to_string());

    // `update` still carries the first resourceVersion.
    let stale = api_error(api.replace("s", &PostParams::default(), &update).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );
    assert_eq!(
        data(&sim.secret(NS, "s").unwrap(), ".dockerconfigjson"),
        docker_config("u", "p2")
    );

    let mut missing = update.clone();
    missing.metadata.name = Some("missing".to_owned());
    let not_found = api_error(api.replace("missing", &PostParams::default(), &missing).await);
    assert_eq!((not_found.code, not_found.reason.as_str()), (404, "NotFound"));

    // Type is immutable.
    let mut retyped = replaced.clone();
    retyped.type_ = Some("Opaque".to_owned());
    let invalid = api_error(api.replace("s", &PostParams::default(), &retyped).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn server_side_apply_creates_then_updates() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let params = PatchParams::apply(MANAGER);

    let first = apply(&api, "ghcr-creds", &docker_config("u", "p"), MANAGER)
        .await
        .unwrap();
    assert_eq!(data(&first, ".dockerconfigjson"), docker_config("u", "p"));
    let managed = first.metadata.managed_fields.as_ref().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some(MANAGER));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    let rotated = apply_config("ghcr-creds", &docker_config("u", "p2"));
    let second = api.patch("ghcr-creds", &params, &Patch::Apply(&rotated)).await.unwrap();
    assert_ne!(version(&second), version(&first));
    assert_eq!(second.metadata.uid, first.metadata.uid);
    assert_eq!(data(&second, ".dockerconfigjson"), docker_config("u", "p2"));
    assert_eq!(second.data.as_ref().unwrap().len(), 1);

    // Re-applying the same configuration writes nothing.
    let third = api.patch("ghcr-creds", &params, &Patch::Apply(&rotated)).await.unwrap();
    assert_eq!(version(&third), version(&second));

    // A label the manager stops applying is removed.
    let mut fewer = rotated.clone();
    fewer["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("registry-id");
    let fourth = api.patch("ghcr-creds", &params, &Patch::Apply(&fewer)).await.unwrap();
    assert_eq!(fourth.metadata.labels.unwrap().keys().collect::<Vec<_>>(), [MANAGED_BY]);

    let no_manager = api_error(
        api.patch("ghcr-creds", &PatchParams::default(), &Patch::Apply(&rotated))
            .await,
    );
    assert_eq!((no_manager.code, no_manager.reason.as_str()), (422, "Invalid"));
    assert_eq!(sim.stats().count(Verb::Patch, "secrets"), 5);
}

#[tokio::test]
async fn apply_by_another_manager_conflicts_unless_forced() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    apply(&api, "s", &docker_config("u", "p"), MANAGER).await.unwrap();

    let theirs = apply_config("s", &docker_config("intruder", "x"));
    let conflict = api_error(
        api.patch("s", &PatchParams::apply("other-tool"), &Patch::Apply(&theirs))
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains(&format!("conflict with {MANAGER:?}")),
        "{}",
        conflict.message
    );
    let causes = &conflict.details.as_ref().unwrap().causes;
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".data..dockerconfigjson");
    assert_eq!(
        data(&sim.secret(NS, "s").unwrap(), ".dockerconfigjson"),
        docker_config("u", "p")
    );

    let forced = api
        .patch("s", &PatchParams::apply("other-tool").force(), &Patch::Apply(&theirs))
        .await
        .unwrap();
    assert_eq!(data(&forced, ".dockerconfigjson"), docker_config("intruder", "x"));
    // Now the original manager is the one in conflict.
    let back = apply_config("s", &docker_config("u", "p"));
    let conflict = api_error(api.patch("s", &PatchParams::apply(MANAGER), &Patch::Apply(&back)).await);
    assert!(
        conflict.message.contains("conflict with \"other-tool\""),
        "{}",
        conflict.message
    );
}

#[tokio::test]
async fn a_foreign_secret_with_the_same_name_conflicts_with_our_apply() {
    let sim = sim().await;
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("ghcr-creds".to_owned());
    foreign.string_data = Some(BTreeMap::from([("token".to_owned(), "theirs".to_owned())]));
    let seeded = sim.seed_secret(NS, &foreign);
    assert_eq!(data(&seeded, "token"), b"theirs");
    assert!(seeded.string_data.is_none(), "stringData is folded into data");
    assert_eq!(
        seeded.metadata.managed_fields.as_ref().unwrap()[0].manager.as_deref(),
        Some(SEED_MANAGER)
    );

    let api = secrets(&sim, NS);
    let ours = apply_config("ghcr-creds", &docker_config("u", "p"));
    let conflict = api_error(
        api.patch("ghcr-creds", &PatchParams::apply(MANAGER), &Patch::Apply(&ours))
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    // Forcing does not help: a Secret's type cannot change.
    let invalid = api_error(
        api.patch("ghcr-creds", &PatchParams::apply(MANAGER).force(), &Patch::Apply(&ours))
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    let untouched = sim.secret(NS, "ghcr-creds").unwrap();
    assert_eq!(
        (untouched.data, untouched.metadata.resource_version),
        (seeded.data, seeded.metadata.resource_version)
    );
}

#[tokio::test]
async fn merge_and_json_patches() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let created = api
        .create(
            &PostParams::default(),
            &pull_secret("s", docker_config("u", "p"), &[("a", "1")]),
        )
        .await;
    let created = created.unwrap();

    let patch = json!({"metadata": {"labels": {"a": null, "b": "2"}, "annotations": {"registry/revision": "7"}}});
    let patched = api
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.labels.clone().unwrap(),
        BTreeMap::from([("b".to_owned(), "2".to_owned())])
    );
    assert_eq!(patched.metadata.annotations.as_ref().unwrap()["registry/revision"], "7");
    assert_ne!(version(&patched), version(&created));

    // A resourceVersion in the patch is a precondition.
    let stale = json!({"metadata": {"resourceVersion": version(&created), "labels": {"c": "3"}}});
    let conflict = api_error(api.patch("s", &PatchParams::default(), &Patch::Merge(&stale)).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    let missing = api_error(
        api.patch("missing", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(missing.code, 404);

    // A JSON patch (kube-rs needs its `jsonpatch` feature for these; sent raw here).
    let json_patch = |test_version: &str| {
        let operations = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": test_version},
            {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        ]);
        http::Request::patch(format!("/api/v1/namespaces/{NS}/secrets/s"))
            .header("content-type", "application/json-patch+json")
            .body(kube::client::Body::from(operations.to_string().into_bytes()))
            .unwrap()
    };
    let response = sim.client().send(json_patch(&version(&patched))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sim.secret(NS, "s").unwrap().metadata.labels.unwrap()["c"], "3");
    let response = sim.client().send(json_patch(&version(&patched))).await.unwrap();
    assert_eq!(
        response.status(),
        422,
        "the test operation fails on the old resourceVersion"
    );
}

#[tokio::test]
async fn strategic_merge_on_service_accounts() {
    let sim = sim().await;
    let api = accounts(&sim, NS);
    let default = api.get("default").await.unwrap();
    assert!(default.image_pull_secrets.is_none());

    // `secrets` merges by name: no duplicates, other entries kept.
    let add = |name: &str| json!({"secrets": [{"name": name}]});
    api.patch("default", &PatchParams::default(), &Patch::Strategic(add("a")))
        .await
        .unwrap();
    api.patch("default", &PatchParams::default(), &Patch::Strategic(add("b")))
        .await
        .unwrap();
    let merged = api
        .patch("default", &PatchParams::default(), &Patch::Strategic(add("a")))
        .await
        .unwrap();
    let names: Vec<_> = merged
        .secrets
        .unwrap()
        .into_iter()
        .map(|s: ObjectReference| s.name.unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);

    // `imagePullSecrets` is atomic on a real API server: a patch replaces it.
    let pull = |name: &str| json!({"imagePullSecrets": [{"name": name}]});
    api.patch(
        "default",
        &PatchParams::default(),
        &Patch::Strategic(pull("platform-creds")),
    )
    .await
    .unwrap();
    let replaced = api
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Strategic(pull("ghcr-creds")),
        )
        .await
        .unwrap();
    assert_eq!(replaced.image_pull_secrets.as_ref().unwrap().len(), 1);

    // The safe way to add one: read, extend without duplicates, write back
    // with the resourceVersion read; a concurrent change makes it conflict.
    let read = api.get("default").await.unwrap();
    let mut list = read.image_pull_secrets.clone().unwrap_or_default();
    for name in ["platform-creds", "ghcr-creds"] {
        if !list.iter().any(|r| r.name == name) {
            list.push(LocalObjectReference { name: name.to_owned() });
        }
    }
    let write = json!({"metadata": {"resourceVersion": version_of(&read)}, "imagePullSecrets": list});
    let written = api
        .patch("default", &PatchParams::default(), &Patch::Strategic(&write))
        .await
        .unwrap();
    let names: Vec<_> = written
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["ghcr-creds", "platform-creds"]);
    let again = api_error(
        api.patch("default", &PatchParams::default(), &Patch::Strategic(&write))
            .await,
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        sim.service_account(NS, "default")
            .unwrap()
            .image_pull_secrets
            .unwrap()
            .len(),
        2
    );
}

fn version_of(account: &ServiceAccount) -> String {
    account.metadata.resource_version.clone().unwrap()
}

#[tokio::test]
async fn delete_then_not_found() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let created = api
        .create(&PostParams::default(), &pull_secret("s", docker_config("u", "p"), &[]))
        .await
        .unwrap();

    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let refused = api_error(api.delete("s", &wrong_uid).await);
    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));

    let before = sim.resource_version();
    let status = api
        .delete("s", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .unwrap();
    assert_eq!(status.details.unwrap().uid, created.metadata.uid.unwrap());
    assert!(sim.resource_version() > before);
    assert!(sim.secret(NS, "s").is_none());

    let gone = api_error(api.get("s").await);
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    assert_eq!(gone.message, r#"secrets "s" not found"#);
    let again = api_error(api.delete("s", &DeleteParams::default()).await);
    assert_eq!(again.code, 404);
}

#[tokio::test]
async fn namespaces_belong_to_the_platform() {
    let sim = sim().await;
    let namespaces: Api<Namespace> = Api::all(sim.client());
    let production = namespaces.get(NS).await.unwrap();
    assert_eq!(production.status.unwrap().phase.as_deref(), Some("Active"));
    let names: Vec<_> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["default", NS]);
    assert!(
        sim.service_account(NS, "default").is_some(),
        "each namespace has its default ServiceAccount"
    );

    let missing = api_error(namespaces.get("env-staging").await);
    assert_eq!(missing.code, 404);
    let mut new = Namespace::default();
    new.metadata.name = Some("env-staging".to_owned());
    let forbidden = api_error(namespaces.create(&PostParams::default(), &new).await);
    assert_eq!((forbidden.code, forbidden.reason.as_str()), (403, "Forbidden"));

    // Writing into a namespace that does not exist.
    let staging = secrets(&sim, "env-staging");
    let create = api_error(
        staging
            .create(&PostParams::default(), &pull_secret("s", docker_config("u", "p"), &[]))
            .await,
    );
    assert_eq!((create.code, create.reason.as_str()), (404, "NotFound"));
    assert_eq!(create.message, r#"namespaces "env-staging" not found"#);
    assert_eq!(
        api_error(apply(&staging, "s", &docker_config("u", "p"), MANAGER).await).code,
        404
    );

    assert!(sim.create_namespace("env-staging"));
    staging
        .create(&PostParams::default(), &pull_secret("s", docker_config("u", "p"), &[]))
        .await
        .unwrap();
    assert!(sim.delete_namespace("env-staging"));
    assert!(sim.secret("env-staging", "s").is_none());
}

#[tokio::test]
async fn forbidden_namespaces_answer_403() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    sim.forbid_namespace(NS);

    let get = api_error(api.get("s").await);
    assert_eq!((get.code, get.reason.as_str()), (403, "Forbidden"));
    assert!(
        get.message.contains(&format!("in the namespace {NS:?}")),
        "{}",
        get.message
    );
    assert_eq!(
        api_error(apply(&api, "s", &docker_config("u", "p"), MANAGER).await).code,
        403
    );
    assert_eq!(api_error(api.list(&ListParams::default()).await).code, 403);
    let namespaces: Api<Namespace> = Api::all(sim.client());
    assert_eq!(api_error(namespaces.get(NS).await).code, 403);
    assert_eq!(sim.stats().forbidden, 4);
    assert!(sim.secret(NS, "s").is_none());

    sim.allow_namespace(NS);
    assert_eq!(api_error(api.get("s").await).code, 404);
}

#[tokio::test]
async fn injected_429s_carry_retry_after() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    sim.inject_429(2, 7);

    let throttled = api_error(api.list(&ListParams::default()).await);
    assert_eq!((throttled.code, throttled.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(throttled.details.unwrap().retry_after_seconds, 7);

    // The header itself, on the wire.
    let request = http::Request::get(format!("/api/v1/namespaces/{NS}/secrets"))
        .body(Vec::new())
        .unwrap();
    let response = sim.client().send(request.map(kube::client::Body::from)).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");

    // The injection is spent.
    api.list(&ListParams::default()).await.unwrap();
    assert_eq!(sim.stats().throttled, 2);

    // Every third request from now on.
    sim.inject_429_every(3, 1);
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(match api.list(&ListParams::default()).await {
            Ok(_) => 200,
            Err(error) => api_error::<()>(Err(error)).code,
        });
    }
    assert_eq!(codes, [200, 200, 429, 200, 200, 429]);
    sim.clear_429();
    api.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn write_latency_delays_writes_without_serialising_them() {
    let sim = sim().await;
    let latency = Duration::from_millis(20);
    sim.set_write_latency(latency);
    let api = secrets(&sim, NS);

    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &pull_secret("first", docker_config("u", "p"), &[]),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= latency,
        "a write takes at least the injected latency"
    );

    let mut writes = tokio::task::JoinSet::new();
    for index in 0..50 {
        let api = api.clone();
        writes.spawn(async move {
            let config = apply_config(&format!("s{index}"), &docker_config("u", "p"));
            api.patch(
                &format!("s{index}"),
                &PatchParams::apply(MANAGER),
                &Patch::Apply(config),
            )
            .await
        });
    }
    while let Some(result) = writes.join_next().await {
        result.unwrap().unwrap();
    }
    let stats = sim.stats();
    assert!(stats.peak_in_flight_writes > 1, "writes ran concurrently: {stats:?}");
    assert_eq!(stats.in_flight_writes, 0);
    assert_eq!(stats.count(Verb::Patch, "secrets"), 50);
    assert_eq!(stats.count(Verb::Create, "secrets"), 1);
    assert_eq!(sim.secrets(NS).len(), 51);

    let log = sim.write_log();
    assert_eq!(log.len(), 51);
    assert!(
        log.iter()
            .all(|write| write.code < 300 && write.finished.duration_since(write.arrived) >= latency)
    );
    assert_eq!(log[0].name.as_deref(), None, "a create names no object in its path");
    assert_eq!(log[0].verb, Verb::Create);

    // Reads are not delayed by the write latency.
    sim.reset_stats();
    api.get("first").await.unwrap();
    assert!(sim.write_log().is_empty());
    assert_eq!(sim.stats().total(), 1);
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_422() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let params = PostParams::default();

    let mut no_key = pull_secret("s", docker_config("u", "p"), &[]);
    no_key.data = Some(BTreeMap::from([(
        "config.json".to_owned(),
        ByteString(docker_config("u", "p")),
    )]));
    let missing = api_error(api.create(&params, &no_key).await);
    assert_eq!((missing.code, missing.reason.as_str()), (422, "Invalid"));
    assert_eq!(missing.details.unwrap().causes[0].field, "data[.dockerconfigjson]");

    let not_json = api_error(api.create(&params, &pull_secret("s", b"{not json".to_vec(), &[])).await);
    assert_eq!((not_json.code, not_json.reason.as_str()), (422, "Invalid"));
    assert!(
        !not_json.message.contains("not json"),
        "secret contents are never echoed: {}",
        not_json.message
    );

    let bad_name = api_error(
        api.create(&params, &pull_secret("GHCR_creds", docker_config("u", "p"), &[]))
            .await,
    );
    assert_eq!((bad_name.code, bad_name.reason.as_str()), (422, "Invalid"));
    assert!(bad_name.message.contains("RFC 1123 subdomain"), "{}", bad_name.message);

    let bad_label = api_error(
        api.create(
            &params,
            &pull_secret("s", docker_config("u", "p"), &[("registry", "ghcr.io/x")]),
        )
        .await,
    );
    assert_eq!(bad_label.code, 422);

    // Not base64 at all: the body cannot even be decoded.
    let raw = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "%%%"},
    });
    let undecodable = api_error(api.patch("s", &PatchParams::apply(MANAGER), &Patch::Apply(&raw)).await);
    assert_eq!((undecodable.code, undecodable.reason.as_str()), (400, "BadRequest"));

    let not_json_apply = apply_config("s", b"[1, 2]");
    let invalid = api_error(
        api.patch("s", &PatchParams::apply(MANAGER), &Patch::Apply(&not_json_apply))
            .await,
    );
    assert_eq!(invalid.code, 422);
    assert!(sim.secrets(NS).is_empty());
}

#[tokio::test]
async fn unreachable_server_fails_requests_until_it_is_back() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    api.list(&ListParams::default()).await.unwrap();

    sim.set_unreachable(true);
    let error = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(error, kube::Error::Api(_)),
        "a transport error, not an API answer: {error:?}"
    );
    let fresh = secrets(&sim, NS);
    assert!(fresh.list(&ListParams::default()).await.is_err());

    sim.set_unreachable(false);
    api.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    api.list(&ListParams::default()).await.unwrap();
    sim.shutdown().await;
    assert!(api.list(&ListParams::default()).await.is_err());
}

#[tokio::test]
async fn version_endpoint_answers() {
    let sim = sim().await;
    let info = sim.client().apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
}

// ---------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------

/// How long a test waits for something the server must do; only a failing
/// test ever waits this long.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

type WatcherEvents = mpsc::UnboundedReceiver<Result<watcher::Event<Secret>, watcher::Error>>;

/// Runs a kube-runtime watcher on its own task, so it keeps making requests
/// while the test waits on a hold.
fn spawn_watcher(api: Api<Secret>, config: watcher::Config) -> WatcherEvents {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, config));
        while let Some(event) = stream.next().await {
            if sender.send(event).is_err() {
                break;
            }
        }
    });
    receiver
}

fn describe_watcher_event(event: &Result<watcher::Event<Secret>, watcher::Error>) -> String {
    match event {
        Ok(event) => event.to_string(),
        Err(watcher::Error::WatchError(status)) => format!("WatchError({})", status.code),
        Err(error) => format!("Error({error})"),
    }
}

/// The next watcher events, described (`Init`, `InitApply(name)`,
/// `Apply(name)`, `Delete(name)`, `InitDone`, `WatchError(410)`), which must
/// be `expected`; returns the events.
async fn expect_watcher(
    events: &mut WatcherEvents,
    expected: &[&str],
) -> Vec<Result<watcher::Event<Secret>, watcher::Error>> {
    let mut seen = Vec::new();
    for _ in expected {
        seen.push(
            within("a watcher event", events.recv())
                .await
                .expect("the watcher runs"),
        );
    }
    let described: Vec<String> = seen.iter().map(describe_watcher_event).collect();
    assert_eq!(described, expected);
    seen
}

fn describe<K: kube::Resource>(event: &WatchEvent<K>) -> String {
    let object = |kind: &str, object: &K| {
        let version = object.meta().resource_version.clone().unwrap_or_default();
        format!("{kind} {} {version}", object.name_any())
    };
    match event {
        WatchEvent::Added(added) => object("ADDED", added),
        WatchEvent::Modified(modified) => object("MODIFIED", modified),
        WatchEvent::Deleted(deleted) => object("DELETED", deleted),
        WatchEvent::Bookmark(bookmark) => format!("BOOKMARK {}", bookmark.metadata.resource_version),
        WatchEvent::Error(status) => format!("ERROR {} {}", status.code, status.reason),
    }
}

/// The next `n` events of a raw watch stream, described.
async fn next_events<K: kube::Resource>(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
    n: usize,
) -> Vec<String> {
    let mut described = Vec::new();
    for _ in 0..n {
        let event = within("a watch event", stream.next()).await;
        described.push(describe(&event.expect("the stream is open").expect("a watch event")));
    }
    described
}

/// Every remaining event of a raw watch stream, described, until it ends.
async fn rest_of<K: kube::Resource>(stream: impl Stream<Item = kube::Result<WatchEvent<K>>>) -> Vec<String> {
    let events: Vec<_> = within("the end of the watch", stream.collect()).await;
    events
        .into_iter()
        .map(|event| describe(&event.expect("a watch event")))
        .collect()
}

fn labelled(name: &str, labels: &[(&str, &str)]) -> Secret {
    pull_secret(name, docker_config("u", "p"), labels)
}

fn no_bookmarks() -> WatchParams {
    WatchParams::default().disable_bookmarks()
}

#[tokio::test]
async fn a_watcher_follows_a_label_selector() {
    let sim = sim().await;
    let selector = format!("{MANAGED_BY}={MANAGER}");
    sim.seed_secret(NS, &labelled("seeded", &[(MANAGED_BY, MANAGER)]));
    sim.seed_secret(NS, &labelled("theirs", &[("app", "web")]));
    let api = secrets(&sim, NS);
    let mut events = spawn_watcher(api.clone(), watcher::Config::default().labels(&selector));
    expect_watcher(&mut events, &["Init", "InitApply(seeded)", "InitDone"]).await;

    let created = apply(&api, "ghcr-creds", &docker_config("u", "p"), MANAGER)
        .await
        .unwrap();
    let rotated = apply(&api, "ghcr-creds", &docker_config("u", "p2"), MANAGER)
        .await
        .unwrap();
    let seen = expect_watcher(&mut events, &["Apply(ghcr-creds)", "Apply(ghcr-creds)"]).await;
    let versions: Vec<String> = seen
        .iter()
        .map(|event| match event {
            Ok(watcher::Event::Apply(secret)) => version(secret),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(versions, [version(&created), version(&rotated)]);

    // Labels move objects in and out of the selection.
    let join = json!({"metadata": {"labels": {MANAGED_BY: MANAGER}}});
    api.patch("theirs", &PatchParams::default(), &Patch::Merge(&join))
        .await
        .unwrap();
    let leave = json!({"metadata": {"labels": {MANAGED_BY: null}}});
    let left = api
        .patch("seeded", &PatchParams::default(), &Patch::Merge(&leave))
        .await
        .unwrap();
    let seen = expect_watcher(&mut events, &["Apply(theirs)", "Delete(seeded)"]).await;
    let Ok(watcher::Event::Delete(deleted)) = &seen[1] else {
        unreachable!("checked above")
    };
    assert_eq!(version(deleted), version(&left), "under the version that moved it out");
    assert_eq!(
        deleted.labels()[MANAGED_BY],
        MANAGER,
        "the last state the selection saw"
    );

    // Changes outside the selection are not seen; deletions inside are.
    let outside = json!({"metadata": {"annotations": {"note": "unseen"}}});
    api.patch("seeded", &PatchParams::default(), &Patch::Merge(&outside))
        .await
        .unwrap();
    api.delete("ghcr-creds", &DeleteParams::default()).await.unwrap();
    expect_watcher(&mut events, &["Delete(ghcr-creds)"]).await;
    assert_eq!(sim.stats().count(Verb::Watch, "secrets"), 1);
    assert_eq!(sim.stats().count(Verb::List, "secrets"), 1);
}

#[tokio::test]
async fn a_watch_from_a_resource_version_replays_exactly_the_later_events() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let a = api.create(&PostParams::default(), &labelled("a", &[])).await.unwrap();
    let start = version(&a);
    let b = api.create(&PostParams::default(), &labelled("b", &[])).await.unwrap();
    let relabel = json!({"metadata": {"labels": {"x": "1"}}});
    let a2 = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    // A write that changes nothing keeps its version and emits nothing.
    let same = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    assert_eq!(version(&same), version(&a2));
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let deleted = sim.resource_version().to_string();

    let mut replay = api.watch(&no_bookmarks(), &start).await.unwrap().boxed();
    let mut only_b = api
        .watch(&no_bookmarks().fields("metadata.name=b"), &start)
        .await
        .unwrap()
        .boxed();
    let mut current = api.watch(&no_bookmarks(), "0").await.unwrap().boxed();
    assert_eq!(
        next_events(&mut replay, 3).await,
        [
            format!("ADDED b {}", version(&b)),
            format!("MODIFIED a {}", version(&a2)),
            format!("DELETED b {deleted}"),
        ]
    );
    assert_eq!(
        next_events(&mut only_b, 2).await,
        [format!("ADDED b {}", version(&b)), format!("DELETED b {deleted}")]
    );
    // From "0": the current state, as synthetic additions.
    assert_eq!(
        next_events(&mut current, 1).await,
        [format!("ADDED a {}", version(&a2))]
    );

    // Nothing else was pending: the next event of each is a later write.
    let again = api.create(&PostParams::default(), &labelled("b", &[])).await.unwrap();
    let added = format!("ADDED b {}", version(&again));
    for stream in [&mut replay, &mut only_b, &mut current] {
        assert_eq!(next_events(stream, 1).await, [added.as_str()]);
    }

    let future = api.watch(&no_bookmarks(), "1000000").await.map(|_| ());
    let too_new = api_error(future);
    assert_eq!((too_new.code, too_new.reason.as_str()), (504, "Timeout"));
}

#[tokio::test]
async fn list_pages_and_a_watch_from_their_version_see_each_change_once() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    for name in ["a", "c"] {
        api.create(&PostParams::default(), &labelled(name, &[])).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    let listed_at = first.metadata.resource_version.clone().unwrap();
    let token = first.metadata.continue_.clone().unwrap();

    // Changes between the pages: the rest of the list is still the
    // snapshot of the first page, and the watch from it sees the changes.
    let b = api.create(&PostParams::default(), &labelled("b", &[])).await.unwrap();
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let rest = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = rest.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["c"]);
    assert_eq!(rest.metadata.resource_version.as_deref(), Some(listed_at.as_str()));
    let mut stream = api.watch(&no_bookmarks(), &listed_at).await.unwrap().boxed();
    assert_eq!(
        next_events(&mut stream, 2).await,
        [
            format!("ADDED b {}", version(&b)),
            format!("DELETED c {}", sim.resource_version()),
        ]
    );

    // A snapshot older than the history is gone.
    sim.compact();
    let expired = api_error(api.list(&ListParams::default().limit(1).continue_token(&token)).await);
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn after_a_compaction_an_old_watch_is_expired_and_the_watcher_relists() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let selector = format!("{MANAGED_BY}={MANAGER}");
    let first = apply(&api, "first", &docker_config("u", "p"), MANAGER).await.unwrap();
    apply(&api, "second", &docker_config("u", "p"), MANAGER).await.unwrap();

    sim.compact();
    let stream = api.watch(&no_bookmarks(), &version(&first)).await.unwrap();
    assert_eq!(
        rest_of(stream).await,
        ["ERROR 410 Expired"],
        "one ERROR event, then the end"
    );
    let current = sim.resource_version().to_string();
    let mut stream = api.watch(&no_bookmarks(), &current).await.unwrap().boxed();
    apply(&api, "third", &docker_config("u", "p"), MANAGER).await.unwrap();
    assert_eq!(
        next_events(&mut stream, 1).await.len(),
        1,
        "the current version is kept"
    );

    // The watcher lists, then its watch is parked while the history moves
    // on and is compacted: the watch from the listed version expires.
    let hold = sim.hold(RequestMatch::any().verb(Verb::Watch).resource("secrets"));
    let mut events = spawn_watcher(api.clone(), watcher::Config::default().labels(&selector));
    expect_watcher(
        &mut events,
        &[
            "Init",
            "InitApply(first)",
            "InitApply(second)",
            "InitApply(third)",
            "InitDone",
        ],
    )
    .await;
    within("the parked watch", hold.arrived(1)).await;
    apply(&api, "fourth", &docker_config("u", "p"), MANAGER).await.unwrap();
    sim.compact();
    hold.release();
    expect_watcher(
        &mut events,
        &[
            "WatchError(410)",
            "Init",
            "InitApply(first)",
            "InitApply(fourth)",
            "InitApply(second)",
            "InitApply(third)",
            "InitDone",
        ],
    )
    .await;
    apply(&api, "fifth", &docker_config("u", "p"), MANAGER).await.unwrap();
    expect_watcher(&mut events, &["Apply(fifth)"]).await;
    // Our two raw watches, the expired one, the one after the re-list.
    assert_eq!(sim.stats().count(Verb::Watch, "secrets"), 4);
    assert_eq!(sim.stats().count(Verb::List, "secrets"), 2);
}

#[tokio::test]
async fn streaming_lists_end_the_initial_events_with_a_bookmark() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    sim.seed_secret(NS, &labelled("a", &[]));
    let mut events = spawn_watcher(api.clone(), watcher::Config::default().streaming_lists());
    expect_watcher(&mut events, &["Init", "InitApply(a)", "InitDone"]).await;
    api.create(&PostParams::default(), &labelled("b", &[])).await.unwrap();
    expect_watcher(&mut events, &["Apply(b)"]).await;
    assert_eq!(sim.stats().count(Verb::List, "secrets"), 0, "no list at all");
}

#[tokio::test]
async fn deleting_a_namespace_deletes_each_object_then_the_namespace() {
    let sim = sim().await;
    let staging = "env-staging";
    sim.create_namespace(staging);
    sim.seed_secret(staging, &labelled("a", &[]));
    sim.seed_secret(staging, &labelled("b", &[]));
    sim.seed_secret(NS, &labelled("elsewhere", &[]));
    let start = sim.resource_version();
    let mut secrets_there = secrets(&sim, staging)
        .watch(&no_bookmarks(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    let mut all_accounts = Api::<ServiceAccount>::all(sim.client())
        .watch(&no_bookmarks(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    let mut namespaces = Api::<Namespace>::all(sim.client())
        .watch(&no_bookmarks(), &start.to_string())
        .await
        .unwrap()
        .boxed();

    assert!(sim.delete_namespace(staging));
    assert_eq!(
        next_events(&mut secrets_there, 2).await,
        [format!("DELETED a {}", start + 1), format!("DELETED b {}", start + 2)]
    );
    assert_eq!(
        next_events(&mut all_accounts, 1).await,
        [format!("DELETED default {}", start + 3)]
    );
    assert_eq!(
        next_events(&mut namespaces, 1).await,
        [format!("DELETED {staging} {}", start + 4)]
    );
    assert_eq!(sim.resource_version(), start + 4);
    assert!(sim.secret(NS, "elsewhere").is_some());
}

#[tokio::test]
async fn bookmarks_come_when_asked_and_timeout_seconds_ends_the_stream() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    sim.set_bookmark_interval(Duration::from_millis(10));
    let start = sim.resource_version();
    let mut stream = api
        .watch(&WatchParams::default(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_events(&mut stream, 1).await, [format!("BOOKMARK {start}")]);
    let created = api.create(&PostParams::default(), &labelled("s", &[])).await.unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|event: &String| !event.starts_with("ADDED")) {
        seen.extend(next_events(&mut stream, 1).await);
    }
    assert_eq!(seen.last().unwrap(), &format!("ADDED s {}", version(&created)));
    // Bookmarks move on with the versions.
    assert_eq!(
        next_events(&mut stream, 1).await,
        [format!("BOOKMARK {}", version(&created))]
    );

    // `timeoutSeconds` ends the stream, with a last bookmark when asked.
    sim.set_bookmark_interval(Duration::ZERO);
    let now = sim.resource_version().to_string();
    let started = Instant::now();
    let quiet = api.watch(&no_bookmarks().timeout(1), &now).await.unwrap();
    let marked = api.watch(&WatchParams::default().timeout(1), &now).await.unwrap();
    let (quiet, marked) = tokio::join!(rest_of(quiet), rest_of(marked));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(quiet.is_empty(), "{quiet:?}");
    assert_eq!(marked, [format!("BOOKMARK {now}")]);
}

#[tokio::test]
async fn a_watcher_rewatches_from_its_version_after_a_timeout() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let hold = sim.hold(RequestMatch::any().verb(Verb::Watch));
    let mut events = spawn_watcher(api.clone(), watcher::Config::default().timeout(1));
    expect_watcher(&mut events, &["Init", "InitDone"]).await;
    within("the first watch", hold.arrived(1)).await;
    assert!(hold.release_one());
    // The first watch times out after a second; the watcher watches again.
    within("the second watch", hold.arrived(2)).await;
    api.create(&PostParams::default(), &labelled("s", &[])).await.unwrap();
    hold.release();
    expect_watcher(&mut events, &["Apply(s)"]).await;
    assert_eq!(sim.stats().count(Verb::List, "secrets"), 1, "no re-list");
}

#[tokio::test]
async fn watches_pass_admission_and_break_with_the_server() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    sim.seed_secret(NS, &labelled("s", &[]));

    sim.inject_429(1, 3);
    let throttled = api_error(api.watch(&no_bookmarks(), "0").await.map(|_| ()));
    assert_eq!(throttled.code, 429);
    sim.forbid_namespace(NS);
    let forbidden = api_error(api.watch(&no_bookmarks(), "0").await.map(|_| ()));
    assert_eq!(forbidden.code, 403);
    sim.allow_namespace(NS);

    let mut stream = api.watch(&no_bookmarks(), "0").await.unwrap().boxed();
    assert_eq!(next_events(&mut stream, 1).await.len(), 1);
    let stats = sim.stats();
    assert_eq!((stats.open_watches, stats.count(Verb::Watch, "secrets")), (1, 3));
    assert_eq!((stats.writes(), stats.total()), (0, 3), "watches are not writes");

    sim.set_unreachable(true);
    match within("the broken stream", stream.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(event)) => panic!("the stream went on: {}", describe(&event)),
    }
    assert!(api.watch(&no_bookmarks(), "0").await.is_err());
    sim.set_unreachable(false);

    let mut stream = api.watch(&no_bookmarks(), "0").await.unwrap().boxed();
    assert_eq!(next_events(&mut stream, 1).await.len(), 1);
    within("the shutdown", sim.shutdown()).await;
    match within("the end of the stream", stream.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(event)) => panic!("the stream went on: {}", describe(&event)),
    }
}

// ---------------------------------------------------------------------------
// Holds
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_hold_parks_a_patch_until_released() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let original = apply(&api, "s", &docker_config("u", "p"), MANAGER).await.unwrap();
    let hold = sim.hold(
        RequestMatch::any()
            .verb(Verb::Patch)
            .resource("secrets")
            .namespace(NS)
            .name("s"),
    );

    let patch = tokio::spawn({
        let api = api.clone();
        async move { apply(&api, "s", &docker_config("u", "p2"), MANAGER).await }
    });
    within("the parked patch", hold.arrived(1)).await;
    assert_eq!(hold.parked(), 1);
    let stats = sim.stats();
    assert_eq!(
        (stats.in_flight, stats.in_flight_writes),
        (1, 1),
        "parked counts as in flight"
    );
    let stored = sim.secret(NS, "s").unwrap();
    assert_eq!(
        (version(&stored), data(&stored, ".dockerconfigjson")),
        (version(&original), docker_config("u", "p"))
    );
    // Requests the hold does not select pass meanwhile.
    assert_eq!(version(&api.get("s").await.unwrap()), version(&original));
    apply(&api, "other", &docker_config("u", "p"), MANAGER).await.unwrap();

    hold.release();
    let patched = within("the released patch", patch).await.unwrap().unwrap();
    assert_eq!(data(&patched, ".dockerconfigjson"), docker_config("u", "p2"));
    assert_eq!(
        data(&sim.secret(NS, "s").unwrap(), ".dockerconfigjson"),
        docker_config("u", "p2")
    );
    // Released means uninstalled: later patches pass.
    apply(&api, "s", &docker_config("u", "p3"), MANAGER).await.unwrap();
    assert_eq!(hold.arrivals(), 1);
}

#[tokio::test]
async fn release_one_lets_parked_requests_go_in_arrival_order() {
    let sim = sim().await;
    let api = secrets(&sim, NS);
    let hold = sim.hold(RequestMatch::any().verb(Verb::Create).name("s"));
    let create = |user: &'static str| {
        let api = api.clone();
        tokio::spawn(async move {
            api.create(&PostParams::default(), &pull_secret("s", docker_config(user, "p"), &[]))
                .await
        })
    };
    let first = create("first");
    within("the first create", hold.arrived(1)).await;
    let second = create("second");
    within("the second create", hold.arrived(2)).await;

    assert!(hold.release_one());
    within("the first create", first).await.unwrap().unwrap();
    assert_eq!(hold.parked(), 1);
    assert_eq!(
        data(&sim.secret(NS, "s").unwrap(), ".dockerconfigjson"),
        docker_config("first", "p")
    );
    assert!(hold.release_one());
    let conflict = api_error(within("the second create", second).await.unwrap());
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "AlreadyExists"));
    assert!(!hold.release_one());
}

#[tokio::test]
async fn a_hold_never_released_times_the_client_out_while_other_namespaces_answer() {
    let sim = sim().await;
    let staging = "env-staging";
    sim.create_namespace(staging);
    let mut config = sim.config();
    config.read_timeout = Some(Duration::from_millis(200));
    let client = kube::Client::try_from(config).unwrap();
    let hung = sim.hold(RequestMatch::any().namespace(NS));

    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let error = within("the client's timeout", api.get("s")).await.unwrap_err();
    assert!(!matches!(error, kube::Error::Api(_)), "no answer, a timeout: {error:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(hung.arrivals(), 1);

    let elsewhere: Api<Secret> = Api::namespaced(client, staging);
    elsewhere
        .create(&PostParams::default(), &labelled("s", &[]))
        .await
        .unwrap();
    assert_eq!(elsewhere.list(&ListParams::default()).await.unwrap().items.len(), 1);
}

// ---------------------------------------------------------------------------
// The write log
// ---------------------------------------------------------------------------

fn client_as(sim: &KubeSim, agent: &'static str) -> kube::Client {
    let mut config = sim.config();
    config
        .headers
        .push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn the_write_log_names_the_client_and_the_stored_object() {
    let sim = sim().await;
    sim.seed_secret(NS, &labelled("s", &[]));
    let ours: Api<Secret> = Api::namespaced(client_as(&sim, "registry-service/1.0"), NS);
    let theirs: Api<Secret> = Api::namespaced(client_as(&sim, "kubectl/v1.34.0"), NS);
    let annotate = |revision: &str| json!({"metadata": {"annotations": {"registry/revision": revision}}});

    ours.patch("s", &PatchParams::default(), &Patch::Merge(annotate("1")))
        .await
        .unwrap();
    let second = theirs
        .patch("s", &PatchParams::default(), &Patch::Merge(annotate("2")))
        .await
        .unwrap();
    let stale = json!({"metadata": {"resourceVersion": "1", "annotations": {"registry/revision": "3"}}});
    api_error(ours.patch("s", &PatchParams::default(), &Patch::Merge(stale)).await);
    theirs.delete("s", &DeleteParams::default()).await.unwrap();

    let log = sim.write_log();
    let entries: Vec<(Option<&str>, u16, Option<&str>)> = log
        .iter()
        .map(|write| {
            let revision = write
                .object
                .as_ref()
                .and_then(|object| object.pointer("/metadata/annotations/registry~1revision")?.as_str());
            (write.user_agent.as_deref(), write.code, revision)
        })
        .collect();
    assert_eq!(
        entries,
        [
            (Some("registry-service/1.0"), 200, Some("1")),
            (Some("kubectl/v1.34.0"), 200, Some("2")),
            (Some("registry-service/1.0"), 409, None),
            (Some("kubectl/v1.34.0"), 200, None),
        ]
    );
    let stored = log[1].object.as_ref().unwrap();
    assert_eq!(stored["kind"], "Secret");
    assert_eq!(stored["metadata"]["resourceVersion"], version(&second).as_str());
}
