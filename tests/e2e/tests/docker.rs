//! The deploy path on Docker Swarm and Docker Compose, end to end: the real
//! server with a swarm target and a compose target on the test bed's dockerd,
//! a Custom registry pointing at the test bed's distribution registry.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bollard::query_parameters::{ListTasksOptionsBuilder, RemoveImageOptionsBuilder};
use orchestrator_docker::DockerTarget;
use registry_core::reference::ImageReference;
use registry_e2e::{Caller, Deployer, TestServer, default_config};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::prepare_deployment_response::Deployment;
use registry_server::config::{EngineTarget, TargetConfig};
use registry_testkit::distribution::{Distribution, htpasswd_set};
use registry_testkit::require_service;
use tonic::Code;

/// The test bed, or `None` (after a loud message) when it is not running.
struct Bed {
    docker_host: String,
    /// The same engine on loopback TCP with `--tlsverify`, and the
    /// directory of its CA and client certificate.
    tls_host: String,
    tls_dir: PathBuf,
    htpasswd: PathBuf,
    compose: String,
    registry: Distribution,
    image_repository: String,
    digest: String,
}

fn bed() -> Option<Bed> {
    let docker_host = require_service("dockerd", "REGISTRY_TEST_DOCKER_HOST")?;
    require_service("a swarm-mode dockerd", "REGISTRY_TEST_SWARM")?;
    let image = ImageReference::parse(&require_service("the test image", "REGISTRY_TEST_IMAGE")?).unwrap();
    Some(Bed {
        docker_host,
        tls_host: require_service("dockerd with --tlsverify", "REGISTRY_TEST_DOCKER_TLS_HOST")?,
        tls_dir: require_service("the docker TLS files", "REGISTRY_TEST_DOCKER_TLS_DIR")?.into(),
        htpasswd: require_service("htpasswd", "REGISTRY_TEST_DISTRIBUTION_HTPASSWD")?.into(),
        compose: require_service("docker-compose", "REGISTRY_TEST_DOCKER_COMPOSE")?,
        registry: Distribution::from_env()?,
        image_repository: image.repository().to_owned(),
        digest: require_service("the test image digest", "REGISTRY_TEST_IMAGE_DIGEST")?,
    })
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// A server with targets "swarm" (the unix socket) and "compose" (the same
/// engine over TLS with a client certificate, as `docker --tlsverify`), a
/// registry user and image repository of the test's own, and a Custom
/// registry saved for them.
struct Setup {
    server: TestServer,
    bed: Bed,
    engine: DockerTarget,
    user: String,
    repository: String,
    registry: pb::Registry,
    services: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(bed: Bed) -> Self {
        let user = unique("e2e");
        htpasswd_set(&bed.htpasswd, &user, Some("first-Passw0rd"));
        let repository = unique("e2e/app");
        bed.registry
            .copy_image(&bed.image_repository, &bed.digest, &repository)
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut config = default_config(&dir.path().join("data"));
        for (name, target) in [
            (
                "swarm",
                TargetConfig::Swarm(EngineTarget {
                    organizations: vec!["acme".into()],
                    endpoint: bed.docker_host.clone(),
                    ..EngineTarget::default()
                }),
            ),
            (
                "compose",
                TargetConfig::Compose(EngineTarget {
                    organizations: vec!["acme".into()],
                    endpoint: bed.tls_host.clone(),
                    tls_ca_file: Some(bed.tls_dir.join("ca.pem")),
                    tls_cert_file: Some(bed.tls_dir.join("cert.pem")),
                    tls_key_file: Some(bed.tls_dir.join("key.pem")),
                    insecure_plaintext: false,
                }),
            ),
        ] {
            config.targets.insert(name.into(), target);
        }
        let server = TestServer::start_with(config).await.unwrap();
        let registry = server
            .caller("alice", "acme")
            .await
            .create(
                &unique("Internal Registry"),
                pb::RegistryType::Custom,
                Some(custom(&bed, &user, "first-Passw0rd")),
            )
            .await
            .unwrap();
        Self {
            engine: DockerTarget::new(&bed.docker_host).unwrap(),
            server,
            bed,
            user,
            repository,
            registry,
            services: Vec::new(),
            _dir: dir,
        }
    }

    fn image_name(&self) -> String {
        format!("{}/{}", self.bed.registry.address, self.repository)
    }

    async fn deployer(&self) -> Deployer {
        self.server.deployer("ci-bot", "acme").await
    }

    async fn caller(&self) -> Caller {
        self.server.caller("alice", "acme").await
    }

    /// Removes what the test made on the engine and in the registry.
    async fn clean(mut self) {
        for service in std::mem::take(&mut self.services) {
            let _ = self.engine.remove_service(&service).await;
        }
        let docker = self.engine.docker().await.unwrap();
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        let _ = docker
            .remove_image(&format!("{}:1", self.image_name()), Some(options), None)
            .await;
        htpasswd_set(&self.bed.htpasswd, &self.user, None);
    }
}

fn custom(bed: &Bed, user: &str, password: &str) -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Custom(pb::CustomCredentials {
            url: format!("http://{}", bed.registry.address),
            username: user.into(),
            password: password.into(),
            ca_bundle: String::new(),
        })),
    }
}

/// The states of a service's tasks once one of them runs or fails, within a
/// minute.
async fn task_states(engine: &DockerTarget, service: &str) -> Vec<String> {
    let docker = engine.docker().await.unwrap();
    let filters = std::collections::HashMap::from([("service", vec![service.to_owned()])]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = docker.list_tasks(Some(options)).await.unwrap();
        let states: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.status.as_ref()?.state.as_ref().map(|s| s.to_string()))
            .collect();
        let settled = states
            .iter()
            .any(|s| ["running", "rejected", "failed"].contains(&s.as_str()));
        if settled || Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn swarm_services_run_with_the_registry_auth_prepared_for_them() {
    let Some(bed) = bed() else { return };
    let mut setup = Setup::start(bed).await;
    let mut deployer = setup.deployer().await;
    let prepared = deployer
        .prepare(
            "api",
            "production",
            "swarm",
            &setup.registry.id,
            &setup.image_name(),
            "1",
        )
        .await
        .unwrap();
    let auth = match &prepared.deployment {
        Some(Deployment::Swarm(swarm)) => swarm.registry_auth.clone(),
        other => panic!("not a swarm deployment: {other:?}"),
    };
    assert!(!auth.is_empty());
    let image = ImageReference::parse(&prepared.image).unwrap();

    let with_auth = unique("e2e-with-auth");
    setup.services.push(with_auth.clone());
    setup
        .engine
        .create_service(&with_auth, &image, Some(&auth))
        .await
        .unwrap();
    let states = task_states(&setup.engine, &with_auth).await;
    assert!(states.iter().any(|s| s == "running"), "{states:?}");

    let without = unique("e2e-without-auth");
    setup.services.push(without.clone());
    // The image is on the node now: a fresh repository shows the pull itself fails.
    let other_repository = unique("e2e/other");
    setup
        .bed
        .registry
        .copy_image(&setup.bed.image_repository, &setup.bed.digest, &other_repository)
        .unwrap();
    let other = ImageReference::parse(&format!("{}/{other_repository}:1", setup.bed.registry.address)).unwrap();
    setup.engine.create_service(&without, &other, None).await.unwrap();
    let states = task_states(&setup.engine, &without).await;
    assert!(!states.iter().any(|s| s == "running"), "{states:?}");

    let usages = deployer.usages(&setup.registry.id).await.unwrap();
    assert_eq!(usages.len(), 1);
    assert_eq!(usages[0].target, "swarm");
    setup.clean().await;
}

#[tokio::test]
async fn compose_targets_get_the_image_pulled_and_compose_starts_it_without_a_login() {
    let Some(bed) = bed() else { return };
    let setup = Setup::start(bed).await;
    let mut deployer = setup.deployer().await;
    let prepared = deployer
        .prepare(
            "web",
            "production",
            "compose",
            &setup.registry.id,
            &setup.image_name(),
            "1",
        )
        .await
        .unwrap();
    let digest = match &prepared.deployment {
        Some(Deployment::Compose(compose)) => compose.image_digest.clone(),
        other => panic!("not a compose deployment: {other:?}"),
    };
    assert_eq!(digest, format!("{}@{}", setup.image_name(), setup.bed.digest));

    // docker-compose, with no login of its own, starts the pulled image.
    let dir = tempfile::tempdir().unwrap();
    let project = unique("e2e");
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        format!(
            "version: \"3\"\nservices:\n  web:\n    image: {}\n    network_mode: host\n",
            prepared.image
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        std::process::Command::new(&setup.bed.compose)
            .env("DOCKER_HOST", &setup.bed.docker_host)
            .env("DOCKER_CONFIG", dir.path())
            .arg("-p")
            .arg(&project)
            .arg("-f")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    let up = compose(&["up", "-d"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let down = compose(&["down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    setup.clean().await;
}

#[tokio::test]
async fn rotation_reaches_the_next_pull_and_the_old_password_stops_working() {
    let Some(bed) = bed() else { return };
    let setup = Setup::start(bed).await;
    let mut deployer = setup.deployer().await;
    let image = setup.image_name();
    let id = setup.registry.id.clone();
    for (container, target) in [("web", "compose"), ("api", "swarm")] {
        deployer
            .prepare(container, "production", target, &id, &image, "1")
            .await
            .unwrap();
    }

    // The registry's password changes; the stored one is refused now.
    htpasswd_set(&setup.bed.htpasswd, &setup.user, Some("second-Passw0rd"));
    let refused = deployer
        .prepare("web", "production", "compose", &id, &image, "1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("refused"), "{}", refused.message());
    assert!(!refused.message().contains("first-Passw0rd"));

    // Rotated through the API, the next prepare pulls with the new password.
    let new_credentials = custom(&setup.bed, &setup.user, "second-Passw0rd");
    let rotated = setup.caller().await.rotate(&id, new_credentials, "").await.unwrap();
    assert_eq!(rotated.credential_revision, 2);
    let prepared = deployer
        .prepare("web", "production", "compose", &id, &image, "1")
        .await
        .unwrap();
    assert_eq!(prepared.credential_revision, 2);

    // A Swarm service keeps the login it was created with until its next
    // deployment, and the sync state says so.
    let swarm = |state: &pb::GetRegistrySyncStateResponse| {
        let target = state.targets.iter().find(|t| t.target == "swarm").unwrap();
        (target.desired_revision, target.applied_revision, target.status)
    };
    let state = deployer.sync_state(&id).await.unwrap();
    assert_eq!(swarm(&state), (2, 1, pb::SyncStatus::NextDeployment as i32));
    deployer
        .prepare("api", "production", "swarm", &id, &image, "1")
        .await
        .unwrap();
    let state = deployer.sync_state(&id).await.unwrap();
    assert_eq!(swarm(&state), (2, 2, pb::SyncStatus::Synced as i32));
    setup.clean().await;
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable_and_records_nothing() {
    let Some(bed) = bed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(&dir.path().join("data"));
    let missing = format!("unix://{}/no-such.sock", dir.path().display());
    config.targets.insert(
        "compose".into(),
        TargetConfig::Compose(EngineTarget {
            organizations: vec!["acme".into()],
            endpoint: missing,
            ..EngineTarget::default()
        }),
    );
    let server = TestServer::start_with(config).await.unwrap();
    let registry = server
        .caller("alice", "acme")
        .await
        .create(
            "Internal Registry",
            pb::RegistryType::Custom,
            Some(custom(&bed, "deploy", "any-Passw0rd")),
        )
        .await
        .unwrap();
    let mut deployer = server.deployer("ci-bot", "acme").await;
    let image = format!("{}/e2e/app", bed.registry.address);
    let status = deployer
        .prepare("web", "production", "compose", &registry.id, &image, "1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no-such.sock"), "{}", status.message());
    assert!(deployer.usages("").await.unwrap().is_empty());
}
