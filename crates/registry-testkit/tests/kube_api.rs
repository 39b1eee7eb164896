//! The simulated Kubernetes API server, driven through the real kube-rs client.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Namespace, ObjectReference, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Status;
use registry_testkit::kube_api::{KubeSim, SEED_MANAGER, Verb};
use serde_json::{Value, json};

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
