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
                    // globex: a second tenant on the same swarm.
                    organizations: vec!["acme".into(), "globex".into()],
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

/// The tasks of a service: (id, state).
async fn tasks(engine: &DockerTarget, service: &str) -> Vec<(String, String)> {
    let docker = engine.docker().await.unwrap();
    let filters = std::collections::HashMap::from([("service", vec![service.to_owned()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let mut tasks: Vec<_> = docker
        .list_tasks(Some(options))
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            let state = t
                .status
                .and_then(|s| s.state)
                .map(|s| s.to_string())
                .unwrap_or_default();
            (t.id.unwrap_or_default(), state)
        })
        .collect();
    tasks.sort();
    tasks
}

/// `docker service update --force`: the tasks are rescheduled, pulling
/// with the login the service stores.
async fn force_update(engine: &DockerTarget, service: &str) {
    use bollard::query_parameters::UpdateServiceOptionsBuilder;
    let docker = engine.docker().await.unwrap();
    let inspected = docker.inspect_service(service, None).await.unwrap();
    let version = i32::try_from(inspected.version.unwrap().index.unwrap()).unwrap();
    let mut spec = inspected.spec.unwrap();
    let task = spec.task_template.as_mut().unwrap();
    task.force_update = Some(task.force_update.unwrap_or(0) + 1);
    let options = UpdateServiceOptionsBuilder::default()
        .version(version)
        .registry_auth_from("spec")
        .build();
    docker.update_service(service, spec, options, None).await.unwrap();
}

/// The states of the tasks of a service created after `before`, once one
/// runs or fails, within a minute.
async fn new_task_states(engine: &DockerTarget, service: &str, before: &[(String, String)]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states: Vec<String> = tasks(engine, service)
            .await
            .into_iter()
            .filter(|(id, _)| !before.iter().any(|(old, _)| old == id))
            .map(|(_, state)| state)
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
async fn rotation_reaches_a_named_swarm_service_without_restarting_its_tasks() {
    let Some(bed) = bed() else { return };
    let mut setup = Setup::start(bed).await;
    let mut deployer = setup.deployer().await;
    let id = setup.registry.id.clone();
    let tracked = unique("e2e-tracked");
    let untracked = unique("e2e-untracked");
    let mut auths = Vec::new();
    for (container, service) in [("tracked", tracked.as_str()), ("untracked", "")] {
        let prepared = deployer
            .prepare_request(pb::PrepareDeploymentRequest {
                container_id: container.into(),
                environment: "production".into(),
                target: "swarm".into(),
                registry_config: Some(pb::RegistryConfig {
                    registry_id: id.clone(),
                    image_name: setup.image_name(),
                    image_tag: "1".into(),
                }),
                swarm_service: service.into(),
            })
            .await
            .unwrap();
        let Some(Deployment::Swarm(swarm)) = prepared.deployment else {
            panic!("not a swarm deployment");
        };
        auths.push((ImageReference::parse(&prepared.image).unwrap(), swarm.registry_auth));
    }
    for (service, (image, auth)) in [&tracked, &untracked].into_iter().zip(&auths) {
        setup.services.push(service.clone());
        setup.engine.create_service(service, image, Some(auth)).await.unwrap();
        let states = task_states(&setup.engine, service).await;
        assert!(states.iter().any(|s| s == "running"), "{service}: {states:?}");
    }
    let row = |state: &pb::GetRegistrySyncStateResponse| {
        state
            .targets
            .iter()
            .find(|t| t.target == "swarm" && t.namespace == tracked)
            .map(|t| (t.desired_revision, t.applied_revision, t.status))
    };
    let state = deployer.sync_state(&id).await.unwrap();
    assert_eq!(row(&state), Some((1, 1, pb::SyncStatus::Synced as i32)));
    let running = tasks(&setup.engine, &tracked).await;

    // The password changes and the registry is rotated through the API: the
    // sync loop gives the named service the new login.
    htpasswd_set(&setup.bed.htpasswd, &setup.user, Some("second-Passw0rd"));
    let new_credentials = custom(&setup.bed, &setup.user, "second-Passw0rd");
    setup.caller().await.rotate(&id, new_credentials, "").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = deployer.sync_state(&id).await.unwrap();
        if row(&state) == Some((2, 2, pb::SyncStatus::Synced as i32)) {
            break;
        }
        let errors: Vec<_> = state.targets.iter().map(|t| t.error.as_str()).collect();
        assert!(Instant::now() < deadline, "not synced: {:?} {errors:?}", row(&state));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its running task was not restarted.
    assert_eq!(tasks(&setup.engine, &tracked).await, running);
    // The service without a name on its usage waits for its next deployment.
    let state = deployer.sync_state(&id).await.unwrap();
    let waiting = state
        .targets
        .iter()
        .find(|t| t.target == "swarm" && t.namespace.is_empty())
        .unwrap();
    assert_eq!(waiting.status, pb::SyncStatus::NextDeployment as i32);

    // A reschedule pulls again (the node no longer has the image by name):
    // with the new password it works, with the old one it fails.
    let docker = setup.engine.docker().await.unwrap();
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    docker
        .remove_image(&format!("{}:1", setup.image_name()), Some(options), None)
        .await
        .unwrap();
    // The one with the old login first: once the image is back on the node
    // a failed pull no longer stops a task.
    let before_untracked = tasks(&setup.engine, &untracked).await;
    force_update(&setup.engine, &untracked).await;
    let states = new_task_states(&setup.engine, &untracked, &before_untracked).await;
    assert!(!states.iter().any(|s| s == "running"), "untracked: {states:?}");
    force_update(&setup.engine, &tracked).await;
    let states = new_task_states(&setup.engine, &tracked, &running).await;
    assert!(states.iter().any(|s| s == "running"), "tracked: {states:?}");

    let usages = deployer.usages(&id).await.unwrap();
    let tracked_usage = usages.iter().find(|u| u.container_id == "tracked").unwrap();
    assert_eq!(tracked_usage.namespace, tracked);
    setup.clean().await;
}

#[tokio::test]
async fn a_swarm_service_name_belongs_to_one_organization_and_only_to_swarm_targets() {
    let Some(bed) = bed() else { return };
    let setup = Setup::start(bed).await;
    let request = |target: &str, service: &str| pb::PrepareDeploymentRequest {
        container_id: "api".into(),
        environment: "production".into(),
        target: target.into(),
        registry_config: Some(pb::RegistryConfig {
            registry_id: setup.registry.id.clone(),
            image_name: setup.image_name(),
            image_tag: "1".into(),
        }),
        swarm_service: service.into(),
    };
    let mut deployer = setup.deployer().await;
    let status = deployer.prepare_request(request("compose", "api")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("swarm_service"), "{}", status.message());
    let status = deployer
        .prepare_request(request("swarm", "-bad name"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("swarm_service"), "{}", status.message());

    // acme names service "shared-api" first; globex cannot have its
    // registry's logins pushed into it.
    deployer.prepare_request(request("swarm", "shared-api")).await.unwrap();
    let globex_registry = setup
        .server
        .caller("gina", "globex")
        .await
        .create(
            "Globex registry",
            pb::RegistryType::Custom,
            Some(custom(&setup.bed, &setup.user, "first-Passw0rd")),
        )
        .await
        .unwrap();
    let mut globex = setup.server.deployer("globex-ci", "globex").await;
    let mut theirs = request("swarm", "shared-api");
    theirs.registry_config.as_mut().unwrap().registry_id = globex_registry.id;
    let status = globex.prepare_request(theirs).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("belongs to another organization"),
        "{}",
        status.message()
    );
    setup.clean().await;
}
