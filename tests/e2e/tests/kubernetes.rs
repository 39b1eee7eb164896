//! The deploy path on Kubernetes, end to end: the real server, configured
//! with a Kubernetes target whose kubeconfig points at registry-testkit's
//! simulated API server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use registry_e2e::cluster::{Cluster, NEW_TOKEN, TOKEN, expected_config, ghcr, kubernetes};
use registry_proto::v1 as pb;
use registry_server::config::TargetConfig;
use tonic::Code;
use tonic_types::StatusExt;

const CONVERGE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn first_deploy_creates_the_secret_and_later_ones_reuse_it() {
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;

    let first = deployer
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v2.1.0")
        .await
        .unwrap();
    assert_eq!(first.image, "ghcr.io/myorg/api:v2.1.0");
    assert_eq!(first.credential_revision, 1);
    let k8s = kubernetes(&first);
    assert_eq!(k8s.namespace, "env-production");
    let name = &k8s.image_pull_secrets[0];
    assert_eq!(k8s.image_pull_secrets.len(), 1);
    assert!(name.starts_with("ghcr-creds-"), "{name}");

    let secret = cluster.sim.secret("env-production", name).unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    let data = secret.data.clone().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), [".dockerconfigjson"]);
    // The exact bytes: {"auths":{"ghcr.io":{"username","password","auth"}}}.
    let auth = STANDARD.encode(format!("myorg:{TOKEN}"));
    let expected = format!(r#"{{"auths":{{"ghcr.io":{{"username":"myorg","password":"{TOKEN}","auth":"{auth}"}}}}}}"#);
    assert_eq!(data[".dockerconfigjson"], ByteString(expected.into_bytes()));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "registry-credential-service");
    assert_eq!(labels["registry.platform.io/registry-id"], registry.id);
    assert_eq!(
        secret.metadata.annotations.clone().unwrap()["registry.platform.io/credential-revision"],
        "1"
    );

    // A second container in the same namespace reuses it without a write.
    let writes = cluster.sim.stats().writes();
    let second = deployer
        .prepare("worker", "production", "k8s", &registry.id, "myorg/worker", "")
        .await
        .unwrap();
    assert_eq!(second.image, "ghcr.io/myorg/worker:latest");
    assert_eq!(&kubernetes(&second).image_pull_secrets[0], name);
    assert_eq!(cluster.sim.stats().writes(), writes);

    // Another environment gets its own copy, nothing goes elsewhere.
    let staging = deployer
        .prepare(
            "api-staging",
            "staging",
            "k8s",
            &registry.id,
            "ghcr.io/myorg/api",
            "v2.2.0",
        )
        .await
        .unwrap();
    assert_eq!(kubernetes(&staging).namespace, "env-staging");
    assert_eq!(cluster.docker_config("env-staging", name), expected_config(TOKEN));
    assert!(cluster.sim.secrets("default").is_empty());

    let usages = deployer.usages(&registry.id).await.unwrap();
    let containers: Vec<_> = usages.iter().map(|u| u.container_id.as_str()).collect();
    assert_eq!(containers, ["api", "api-staging", "worker"]);
}

#[tokio::test]
async fn rotation_updates_every_copy_without_a_redeploy() {
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    let mut name = String::new();
    for (container, environment) in [("api", "production"), ("web", "staging")] {
        let prepared = deployer
            .prepare(container, environment, "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
        name.clone_from(&kubernetes(&prepared).image_pull_secrets[0]);
    }

    let rotated = cluster
        .caller()
        .await
        .rotate(&registry.id, ghcr(NEW_TOKEN), "")
        .await
        .unwrap();
    assert_eq!(rotated.credential_revision, 2);
    let state = deployer
        .wait_for_sync(&registry.id, CONVERGE, |s| {
            s.targets.len() == 2 && s.targets.iter().all(|t| t.applied_revision == 2)
        })
        .await;
    assert!(state.targets.iter().all(|t| t.status == pb::SyncStatus::Synced as i32));
    for namespace in ["env-production", "env-staging"] {
        assert_eq!(
            cluster.docker_config(namespace, &name),
            expected_config(NEW_TOKEN),
            "{namespace}"
        );
        let secret = cluster.sim.secret(namespace, &name).unwrap();
        assert_eq!(
            secret.metadata.annotations.unwrap()["registry.platform.io/credential-revision"],
            "2"
        );
    }
    // Nothing was redeployed: the usages still say what they were deployed with.
    let usages = deployer.usages(&registry.id).await.unwrap();
    assert!(usages.iter().all(|u| u.credential_revision == 1));
}

#[tokio::test]
async fn release_and_delete_clean_up() {
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    let mut name = String::new();
    for (container, environment) in [("api", "production"), ("worker", "production"), ("web", "staging")] {
        let prepared = deployer
            .prepare(container, environment, "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
        name.clone_from(&kubernetes(&prepared).image_pull_secrets[0]);
    }

    // Production keeps its Secret while worker still uses it.
    deployer.release("api").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster.sim.secret("env-production", &name).is_some());
    deployer.release("worker").await.unwrap();
    deployer
        .wait_for_sync(&registry.id, CONVERGE, |s| s.targets.len() == 1)
        .await;
    assert!(cluster.sim.secret("env-production", &name).is_none());
    assert!(cluster.sim.secret("env-staging", &name).is_some());
    let missing = deployer.release("worker").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The delete guard names the containers still using the registry.
    let mut alice = cluster.caller().await;
    let refused = alice.delete(&registry.id, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let details = refused.get_error_details();
    let subjects: Vec<_> = details
        .precondition_failure()
        .unwrap()
        .violations
        .iter()
        .map(|v| v.subject.clone())
        .collect();
    assert_eq!(subjects, ["containers/web"]);
    assert!(cluster.sim.secret("env-staging", &name).is_some());

    // Forced, the registry goes with every pull Secret it had.
    alice.delete_forced(&registry.id).await.unwrap();
    let deadline = std::time::Instant::now() + CONVERGE;
    while cluster.sim.secret("env-staging", &name).is_some() {
        assert!(std::time::Instant::now() < deadline, "secret not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alice.get(&registry.id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_foreign_secret_with_the_same_name_is_never_touched() {
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let name = format!("ghcr-creds-{}", registry.id.trim_start_matches("reg-"));
    let mut foreign = Secret::default();
    foreign.metadata.name = Some(name.clone());
    foreign.type_ = Some("Opaque".into());
    foreign.data = Some(BTreeMap::from([(
        "password".to_owned(),
        ByteString(b"theirs".to_vec()),
    )]));
    let seeded = cluster.sim.seed_secret("env-production", &foreign);

    let mut deployer = cluster.deployer().await;
    let refused = deployer
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains(&name) && refused.message().contains("env-production"));
    assert_eq!(cluster.sim.secret("env-production", &name), Some(seeded));
    assert!(deployer.usages(&registry.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_deployments_are_refused_before_anything_is_written() {
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    cluster.sim.create_namespace("env-locked");
    cluster.sim.forbid_namespace("env-locked");

    let cases: [(&str, &str, &str, &str, Code, &str); 6] = [
        (
            "production",
            "k8s",
            "docker.io/myorg/api",
            &registry.id,
            Code::InvalidArgument,
            "does not match",
        ),
        (
            "production",
            "nowhere",
            "ghcr.io/myorg/api",
            &registry.id,
            Code::InvalidArgument,
            "nowhere",
        ),
        (
            "qa",
            "k8s",
            "ghcr.io/myorg/api",
            &registry.id,
            Code::FailedPrecondition,
            "env-qa",
        ),
        (
            "locked",
            "k8s",
            "ghcr.io/myorg/api",
            &registry.id,
            Code::FailedPrecondition,
            "env-locked",
        ),
        (
            "production",
            "k8s",
            "ghcr.io/myorg/api",
            "reg-doesnotexist",
            Code::NotFound,
            "reg-doesnotexist",
        ),
        (
            "Prod!",
            "k8s",
            "ghcr.io/myorg/api",
            &registry.id,
            Code::InvalidArgument,
            "environment",
        ),
    ];
    for (environment, target, image, registry_id, code, needle) in cases {
        let status = deployer
            .prepare("api", environment, target, registry_id, image, "v1")
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{environment} {target} {image}: {status:?}");
        assert!(status.message().contains(needle), "{}", status.message());
        assert!(!status.message().contains(TOKEN));
    }
    // `env-locked` refuses the Secret's create with 403 once the server's
    // namespace watch has seen it, or earlier as a missing namespace:
    // either way no write may have succeeded.
    let written: Vec<_> = cluster.sim.write_log().into_iter().filter(|w| w.code < 400).collect();
    assert!(written.is_empty(), "{written:#?}");
    let left = deployer.usages("").await.unwrap();
    assert!(left.is_empty(), "{left:?}");

    // The target is acme's: another organization may not deploy to it.
    let mut outsider = cluster.server.deployer("eve", "globex").await;
    let status = outsider
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("\"k8s\""), "{}", status.message());

    // Plain writers are not deployers.
    let mut writer = cluster.deployer().await.with_roles("writer");
    let status = writer
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        writer.resolve(&registry.id).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // An API server that goes away mid-deploy is UNAVAILABLE. The intent is
    // recorded before the write (the write may or may not have happened),
    // so the usage stands, its Secret is pending, and the sync loop writes
    // it once the server is back.
    cluster.sim.set_unreachable(true);
    let status = deployer
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let usages = deployer.usages("").await.unwrap();
    assert_eq!(
        usages.iter().map(|u| u.container_id.as_str()).collect::<Vec<_>>(),
        ["api"]
    );
    let state = deployer.sync_state(&registry.id).await.unwrap();
    assert_eq!(state.targets[0].status(), pb::SyncStatus::Failed);
    assert_eq!(state.targets[0].applied_revision, 0);
    cluster.sim.set_unreachable(false);
    deployer
        .wait_for_sync(&registry.id, CONVERGE, |s| {
            s.targets.iter().all(|t| t.status() == pb::SyncStatus::Synced)
        })
        .await;
    let name = &state.targets[0].secret_name;
    assert_eq!(cluster.docker_config("env-production", name), expected_config(TOKEN));
}

#[tokio::test]
async fn public_images_need_no_secret() {
    let cluster = Cluster::start().await;
    let mut deployer = cluster.deployer().await;
    let prepared = deployer
        .prepare("db", "production", "k8s", "", "postgres", "17-alpine")
        .await
        .unwrap();
    assert_eq!(prepared.image, "docker.io/library/postgres:17-alpine");
    assert!(kubernetes(&prepared).image_pull_secrets.is_empty());
    assert_eq!(cluster.sim.stats().writes(), 0);
}

#[tokio::test]
async fn deployers_resolve_the_docker_login() {
    let cluster = Cluster::start().await;
    let registry = cluster.ghcr_registry().await;
    let login = cluster.deployer().await.resolve(&registry.id).await.unwrap();
    assert_eq!(
        (login.server.as_str(), login.docker_config_key.as_str()),
        ("ghcr.io", "ghcr.io")
    );
    assert_eq!((login.username.as_str(), login.password.as_str()), ("myorg", TOKEN));
    assert_eq!(login.credential_revision, 1);
    let config: serde_json::Value = serde_json::from_str(&login.docker_config_json).unwrap();
    assert_eq!(config, expected_config(TOKEN));
}

#[tokio::test]
async fn service_accounts_reference_the_secret_when_configured() {
    let cluster = Cluster::start_with(|config| {
        if let Some(TargetConfig::Kubernetes {
            patch_service_accounts, ..
        }) = config.targets.get_mut("k8s")
        {
            *patch_service_accounts = true;
        }
    })
    .await;
    // The platform's own pull secret is already referenced: it must stay.
    let mut account = cluster.sim.service_account("env-production", "default").unwrap();
    account.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
        name: "platform-pull".into(),
    }]);
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(cluster.sim.client(), "env-production");
    accounts
        .replace("default", &kube::api::PostParams::default(), &account)
        .await
        .unwrap();

    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    for container in ["api", "worker"] {
        deployer
            .prepare(container, "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
    }
    let name = format!("ghcr-creds-{}", registry.id.trim_start_matches("reg-"));
    let account = cluster.sim.service_account("env-production", "default").unwrap();
    let names: Vec<_> = account
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["platform-pull".to_owned(), name]);
    assert!(
        cluster
            .sim
            .service_account("env-staging", "default")
            .unwrap()
            .image_pull_secrets
            .is_none()
    );
}

#[tokio::test]
async fn a_storm_of_429s_and_a_restart_mid_rotation_still_converge() {
    let cluster = Cluster::start_with(|config| config.sync.concurrency = 4).await;
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    let environments: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
    for environment in &environments {
        cluster.sim.create_namespace(&format!("env-{environment}"));
        deployer
            .prepare(environment, environment, "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
    }

    // Slow writes, every third request throttled, then a restart mid-way.
    cluster.sim.set_write_latency(Duration::from_millis(20));
    cluster.sim.inject_429_every(3, 1);
    cluster
        .caller()
        .await
        .rotate(&registry.id, ghcr(NEW_TOKEN), "")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let cluster = cluster.restart().await;
    let mut deployer = cluster.deployer().await;
    let state = deployer
        .wait_for_sync(&registry.id, Duration::from_secs(60), |s| {
            s.targets.iter().all(|t| t.applied_revision == 2)
        })
        .await;
    assert_eq!(state.targets.len(), 40);
    assert!(cluster.sim.stats().throttled > 0, "the storm happened");
    for environment in &environments {
        let name = &state.targets[0].secret_name;
        assert_eq!(
            cluster.docker_config(&format!("env-{environment}"), name),
            expected_config(NEW_TOKEN)
        );
    }
}
