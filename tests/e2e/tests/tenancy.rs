//! One organization per namespace, end to end: the real server, targets
//! open to several organizations, and registry-testkit's simulated API
//! server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use registry_e2e::{Deployer, TestServer, default_config, write_kubeconfig};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::prepare_deployment_response::Deployment;
use registry_server::config::{Config, EngineTarget, TargetConfig};
use registry_testkit::kube_api::KubeSim;
use tonic::Code;
use tonic_types::StatusExt;

const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";

fn ghcr() -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: "myorg".into(),
            token: TOKEN.into(),
        })),
    }
}

/// The embedded default with one Kubernetes target `k8s` on `sim`.
fn config(dir: &std::path::Path, sim: &KubeSim, organizations: &[&str], template: &str) -> Config {
    let mut config = default_config(&dir.join("data"));
    config.targets.insert(
        "k8s".into(),
        TargetConfig::Kubernetes {
            organizations: organizations.iter().map(|o| (*o).to_owned()).collect(),
            kubeconfig: Some(write_kubeconfig(dir, sim.url())),
            context: None,
            namespace_template: template.into(),
            patch_service_accounts: true,
            watch: true,
        },
    );
    config.sync.interval_ms = 100;
    config
}

async fn registry_of(server: &TestServer, organization: &str) -> String {
    server
        .caller("admin", organization)
        .await
        .create("GHCR", pb::RegistryType::Ghcr, Some(ghcr()))
        .await
        .unwrap()
        .id
}

async fn deployer(server: &TestServer, organization: &str) -> Deployer {
    server.deployer("ci-bot", organization).await
}

fn namespace_of(response: &pb::PrepareDeploymentResponse) -> String {
    match &response.deployment {
        Some(Deployment::Kubernetes(k)) => k.namespace.clone(),
        other => panic!("not a kubernetes deployment: {other:?}"),
    }
}

/// The organizations whose pull Secrets are in a namespace.
fn owners(sim: &KubeSim, namespace: &str) -> BTreeSet<String> {
    sim.secrets(namespace)
        .into_iter()
        .filter_map(|s| s.metadata.labels?.get("registry.platform.io/organization").cloned())
        .collect()
}

#[tokio::test]
async fn a_shared_target_gives_each_organization_its_own_namespace() {
    let sim = KubeSim::start().await;
    for namespace in ["acme-production", "globex-production"] {
        sim.create_namespace(namespace);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(config(
        dir.path(),
        &sim,
        &["acme", "globex"],
        "{organization}-{environment}",
    ))
    .await
    .unwrap();
    for organization in ["acme", "globex"] {
        let registry = registry_of(&server, organization).await;
        let prepared = deployer(&server, organization)
            .await
            .prepare("api", "production", "k8s", &registry, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
        assert_eq!(namespace_of(&prepared), format!("{organization}-production"));
    }
    for organization in ["acme", "globex"] {
        let namespace = format!("{organization}-production");
        assert_eq!(owners(&sim, &namespace), BTreeSet::from([organization.to_owned()]));
        // The ServiceAccounts there reference their organization's Secret only.
        let account = sim.service_account(&namespace, "default").unwrap();
        let referenced: Vec<_> = account
            .image_pull_secrets
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let secrets: Vec<_> = sim
            .secrets(&namespace)
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert_eq!(referenced, secrets);
    }
}

#[tokio::test]
async fn a_shared_target_without_the_organization_in_its_template_is_refused() {
    let sim = KubeSim::start().await;
    let dir = tempfile::tempdir().unwrap();
    for organizations in [&["*"][..], &["acme", "globex"][..]] {
        let refused = TestServer::start_with(config(dir.path(), &sim, organizations, "env-{environment}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("targets.k8s.namespace_template") && refused.contains("{organization}"),
            "{refused}"
        );
    }
    // The guide's env-production stays valid for a single organization.
    let server = TestServer::start_with(config(dir.path(), &sim, &["acme"], "env-{environment}")).await;
    assert!(server.is_ok());
}

#[tokio::test]
async fn the_first_organization_in_a_namespace_owns_it() {
    let sim = KubeSim::start().await;
    // "acme" in environment "x-production" and "acme-x" in "production"
    // both name acme-x-production.
    sim.create_namespace("acme-x-production");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(config(
        dir.path(),
        &sim,
        &["acme", "acme-x"],
        "{organization}-{environment}",
    ))
    .await
    .unwrap();
    let first = registry_of(&server, "acme").await;
    let second = registry_of(&server, "acme-x").await;
    let mut acme = deployer(&server, "acme").await;
    acme.prepare("api", "x-production", "k8s", &first, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap();

    let writes = sim.stats().writes();
    let mut other = deployer(&server, "acme-x").await;
    let refused = other
        .prepare("web", "production", "k8s", &second, "ghcr.io/myorg/web", "v1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("\"acme-x-production\""),
        "{}",
        refused.message()
    );
    assert!(
        !refused.message().contains("\"acme\""),
        "the owner is not named: {}",
        refused.message()
    );
    let details = refused.get_error_details();
    let violation = &details.precondition_failure().unwrap().violations[0];
    assert_eq!(violation.subject, "targets/k8s/namespaces/acme-x-production");
    assert_eq!(sim.stats().writes(), writes, "nothing was written");
    assert!(other.usages("").await.unwrap().is_empty());
    assert_eq!(owners(&sim, "acme-x-production"), BTreeSet::from(["acme".to_owned()]));

    // Once nothing of the owner is left there, the namespace is free.
    acme.release("api").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match other
            .prepare("web", "production", "k8s", &second, "ghcr.io/myorg/web", "v1")
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == Code::FailedPrecondition => {
                assert!(std::time::Instant::now() < deadline, "the namespace stayed taken");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    assert_eq!(owners(&sim, "acme-x-production"), BTreeSet::from(["acme-x".to_owned()]));
}

#[tokio::test]
async fn organizations_deploy_only_to_their_targets_of_every_kind() {
    let sim = KubeSim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &sim, &["acme"], "env-{environment}");
    // No engine listens there: the refusal comes before any request.
    let nowhere = format!("unix://{}/no.sock", dir.path().display());
    for (name, target) in [
        (
            "swarm",
            TargetConfig::Swarm(EngineTarget {
                organizations: vec!["acme".into()],
                endpoint: nowhere.clone(),
                ..EngineTarget::default()
            }),
        ),
        (
            "compose",
            TargetConfig::Compose(EngineTarget {
                organizations: vec!["acme".into()],
                endpoint: nowhere.clone(),
                ..EngineTarget::default()
            }),
        ),
    ] {
        config.targets.insert(name.into(), target);
    }
    let server = TestServer::start_with(config).await.unwrap();
    let registry = registry_of(&server, "globex").await;
    let mut globex = deployer(&server, "globex").await;
    for target in ["k8s", "swarm", "compose"] {
        let refused = globex
            .prepare("api", "production", target, &registry, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{target}: {refused:?}");
        assert!(
            refused.message().contains(&format!("\"{target}\"")),
            "{}",
            refused.message()
        );
    }
    // An unknown target's error lists only the caller's targets.
    let unknown = globex
        .prepare("api", "production", "elsewhere", &registry, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap_err();
    assert!(!unknown.message().contains("k8s"), "{}", unknown.message());
    assert!(globex.usages("").await.unwrap().is_empty());
}

#[tokio::test]
async fn two_targets_on_one_cluster_are_refused() {
    let sim = KubeSim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &sim, &["acme"], "env-{environment}");
    let other = TargetConfig::Kubernetes {
        organizations: vec!["globex".into()],
        kubeconfig: Some(write_kubeconfig(dir.path(), sim.url())),
        context: None,
        namespace_template: "env-{environment}".into(),
        patch_service_accounts: false,
        watch: true,
    };
    config.targets.insert("k8s-globex".into(), other);
    let refused = TestServer::start_with(config).await.unwrap_err().to_string();
    assert!(refused.contains("same API server"), "{refused}");
}
