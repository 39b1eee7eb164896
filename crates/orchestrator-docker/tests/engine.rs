//! Against the real dockerd 20.10 (Engine API 1.41), the htpasswd-protected
//! distribution registry and the single-node swarm that scripts/test starts
//! (scripts/lib/docker-services.sh). Without them each test skips loudly, and
//! fails under `CI=true`.
//!
//! nextest runs these in parallel against one engine, next to other crates'
//! tests using the same engine and registry, so every test works on a
//! repository of its own: a copy of the script's test image made inside the
//! registry (blob mounts and a manifest put, never through the engine), so
//! "is it on the engine?" only depends on the test itself. Whatever a test
//! creates (services, containers, image references, htpasswd users,
//! repositories) is removed when its `Leftovers` drop, failed or not.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use bollard::Docker;
use bollard::models::{ContainerSummaryStateEnum, Task, TaskState};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptions, ListTasksOptionsBuilder, RemoveImageOptionsBuilder,
};
use orchestrator_docker::{DockerTarget, write_isolated_docker_config};
use registry_core::login::DockerLogin;
use registry_core::ports::orchestrators::{DockerEngine, EngineRole, TargetError};
use registry_core::reference::ImageReference;
use registry_testkit::distribution::{Distribution as Registry, htpasswd_set};
use registry_testkit::require_service;
use secrecy::SecretString;

/// How long a swarm task may take to reach the state a test waits for.
const TASK_DEADLINE: Duration = Duration::from_secs(60);

/// What scripts/test exported.
struct Env {
    docker_host: String,
    api_version: String,
    /// `127.0.0.1:PORT`
    distribution: String,
    user: String,
    password: String,
    htpasswd: PathBuf,
    /// `127.0.0.1:PORT/test/busybox:1`
    image: ImageReference,
    /// `sha256:…`, the manifest digest of `image`.
    digest: String,
    compose: String,
}

fn env() -> Option<Env> {
    let var = |name: &str| require_service("dockerd and the test registry (scripts/lib/docker-services.sh)", name);
    Some(Env {
        docker_host: require_service("dockerd", "REGISTRY_TEST_DOCKER_HOST")?,
        api_version: var("REGISTRY_TEST_DOCKER_API_VERSION")?,
        distribution: var("REGISTRY_TEST_DISTRIBUTION")?,
        user: var("REGISTRY_TEST_DISTRIBUTION_USER")?,
        password: var("REGISTRY_TEST_DISTRIBUTION_PASSWORD")?,
        htpasswd: var("REGISTRY_TEST_DISTRIBUTION_HTPASSWD")?.into(),
        image: ImageReference::parse(&var("REGISTRY_TEST_IMAGE")?).unwrap(),
        digest: var("REGISTRY_TEST_IMAGE_DIGEST")?,
        compose: require_service("docker-compose", "REGISTRY_TEST_DOCKER_COMPOSE")?,
    })
}

/// The engine is in swarm mode (the script leaves swarm off when port 7946
/// is taken).
fn swarm_env() -> Option<Env> {
    let env = env()?;
    require_service("a swarm-mode dockerd", "REGISTRY_TEST_SWARM")?;
    Some(env)
}

impl Env {
    fn target(&self) -> DockerTarget {
        DockerTarget::new(&self.docker_host).unwrap()
    }

    fn login(&self, username: &str, password: &str) -> DockerLogin {
        DockerLogin {
            server: self.distribution.clone(),
            username: username.to_owned(),
            password: SecretString::from(password.to_owned()),
            expires_at: None,
            refresh_failed: None,
        }
    }

    fn registry(&self) -> Registry {
        Registry {
            address: self.distribution.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }

    fn good_login(&self) -> DockerLogin {
        self.login(&self.user, &self.password)
    }

    fn reference(&self, repository: &str, tag: &str) -> ImageReference {
        ImageReference::parse(&format!("{}/{repository}:{tag}", self.distribution)).unwrap()
    }
}

/// A name no other test (nor an earlier run) uses: lowercase, digits, '-'.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// Copies the script's test image to `repository:1` inside the registry
/// and returns its reference. The engine never sees it.
fn copy_test_image(env: &Env, leftovers: &mut Leftovers, repository: &str) -> ImageReference {
    leftovers.repositories.push(repository.to_owned());
    env.registry()
        .copy_image(env.image.repository(), &env.digest, repository)
        .unwrap();
    env.reference(repository, "1")
}

// --- htpasswd (the registry re-reads it when it changes) ----------------------

// --- cleanup ------------------------------------------------------------------

/// What a test made; removed on drop, whether the test passed or not.
#[derive(Default)]
struct Leftovers {
    docker_host: String,
    compose: String,
    htpasswd: PathBuf,
    digest: String,
    registry: Registry,
    services: Vec<String>,
    /// `repo:tag` references on the engine (their `repo@digest` goes too).
    images: Vec<String>,
    /// htpasswd users.
    users: Vec<String>,
    /// Repositories in the registry.
    repositories: Vec<String>,
    /// (project, compose file); the file's directory lives in `dirs`.
    compose_projects: Vec<(String, PathBuf)>,
    dirs: Vec<tempfile::TempDir>,
}

impl Leftovers {
    fn new(env: &Env) -> Self {
        let mut leftovers = Self::default();
        leftovers.docker_host.clone_from(&env.docker_host);
        leftovers.compose.clone_from(&env.compose);
        leftovers.htpasswd.clone_from(&env.htpasswd);
        leftovers.digest.clone_from(&env.digest);
        leftovers.registry = env.registry();
        leftovers
    }

    async fn clean(&mut self) {
        let target = DockerTarget::new(&self.docker_host).unwrap();
        let docker = target.docker().await.unwrap();
        for service in std::mem::take(&mut self.services) {
            let _ = target.remove_service(&service).await;
            // Until its task containers are gone (stop what we started).
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline
                && !containers_labelled(&docker, "com.docker.swarm.service.name", &service)
                    .await
                    .is_empty()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for (project, file) in std::mem::take(&mut self.compose_projects) {
            let _ = compose(&self.compose, &self.docker_host, None, &project, &file, &["down"]);
        }
        for image in std::mem::take(&mut self.images) {
            let repository = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
            for name in [image.clone(), format!("{repository}@{}", self.digest)] {
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(&name, Some(options), None).await;
            }
        }
        for repository in std::mem::take(&mut self.repositories) {
            let path = format!("/v2/{repository}/manifests/{}", self.digest);
            let _ = self.registry.http("DELETE", &path, &[], b"");
        }
        for user in std::mem::take(&mut self.users) {
            htpasswd_set(&self.htpasswd, &user, None);
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if self.docker_host.is_empty() {
            return;
        }
        // Async clean-up from a destructor, panicking or not: on a thread of
        // its own with a runtime of its own.
        let mut this = std::mem::take(self);
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(this.clean());
            this.docker_host.clear();
        })
        .join();
        if cleaned.is_err() {
            eprintln!("clean-up after the test failed; scripts/test's docker_services_stop removes the rest");
        }
    }
}

// --- engine helpers ---------------------------------------------------------

async fn containers_labelled(docker: &Docker, label: &str, value: &str) -> Vec<bollard::models::ContainerSummary> {
    let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await.unwrap()
}

async fn on_engine(docker: &Docker, image: &str) -> bool {
    match docker.inspect_image(image).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => panic!("inspect {image}: {e}"),
    }
}

async fn tasks(docker: &Docker, service: &str) -> Vec<Task> {
    let filters = HashMap::from([("service", vec![service.to_owned()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await.unwrap()
}

fn task_summary(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            format!(
                "{:?} {} {}",
                status.state,
                status.message.unwrap_or_default(),
                status.err.unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls the service's tasks until `done` says so, or the deadline passes.
async fn wait_for_tasks(docker: &Docker, service: &str, what: &str, done: impl Fn(&[Task]) -> bool) -> Vec<Task> {
    let started = Instant::now();
    loop {
        let current = tasks(docker, service).await;
        if done(&current) {
            eprintln!("{service}: {what} after {:.1} s", started.elapsed().as_secs_f64());
            return current;
        }
        assert!(
            started.elapsed() < TASK_DEADLINE,
            "{service}: no task {what} within {} s; tasks: {}",
            TASK_DEADLINE.as_secs(),
            task_summary(&current)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn state_is(task: &Task, state: TaskState) -> bool {
    task.status.as_ref().and_then(|s| s.state) == Some(state)
}

fn compose(
    compose: &str,
    docker_host: &str,
    docker_config: Option<&Path>,
    project: &str,
    file: &Path,
    args: &[&str],
) -> Output {
    // Never ~/.docker: an empty config unless one is given.
    let empty = tempfile::tempdir().unwrap();
    Command::new(compose)
        .args(["--ansi", "never", "-p", project, "-f"])
        .arg(file)
        .args(args)
        .env("DOCKER_HOST", docker_host)
        .env("DOCKER_CONFIG", docker_config.unwrap_or(empty.path()))
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .unwrap()
}

fn compose_file(dir: &Path, image: &ImageReference) -> PathBuf {
    let path = dir.join("docker-compose.yml");
    std::fs::write(
        &path,
        format!("version: \"2.4\"\nservices:\n  app:\n    image: {image}\n    network_mode: host\n"),
    )
    .unwrap();
    path
}

fn assert_no_secret(error: &TargetError, login: &DockerLogin) {
    let text = format!("{error} {error:?}");
    let password = secrecy::ExposeSecret::expose_secret(&login.password);
    assert!(!text.contains(password), "the password leaked: {text}");
    assert!(
        !text.contains(login.registry_auth().as_str()),
        "the registry auth leaked: {text}"
    );
}

// --- a fake engine: what goes on the wire -----------------------------------

/// What the fake engine was asked: request line and `X-Registry-Auth`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An engine on 127.0.0.1 answering like dockerd 20.10 (API 1.41) and
/// recording every request; returns its `tcp://` endpoint.
fn fake_engine(repo_digest: &str) -> (String, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let (record, repo_digest) = (seen.clone(), repo_digest.to_owned());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&raw).into_owned();
            let mut lines = head.split("\r\n");
            let line = lines
                .next()
                .unwrap_or_default()
                .trim_end_matches(" HTTP/1.1")
                .to_owned();
            let auth = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("x-registry-auth"))
                .map(|(_, v)| v.trim().to_owned());
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            record.lock().unwrap().push((line, auth));
            let digest = repo_digest.rsplit_once('@').unwrap().1;
            let (status, body) = if path == "/version" {
                (
                    "200 OK",
                    r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#.to_owned(),
                )
            } else if path.ends_with("/_ping") {
                ("200 OK", "OK".to_owned())
            } else if path.contains("/images/create") {
                let progress = [
                    r#"{"status":"Pulling from test/busybox","id":"1"}"#.to_owned(),
                    format!(r#"{{"status":"Digest: {digest}"}}"#),
                    r#"{"status":"Status: Downloaded newer image"}"#.to_owned(),
                ];
                ("200 OK", progress.join("\r\n") + "\r\n")
            } else if path.contains("/images/") && path.ends_with("/json") {
                (
                    "200 OK",
                    format!(
                        r#"{{"Id":"sha256:{}","RepoDigests":["{repo_digest}"]}}"#,
                        "0".repeat(64)
                    ),
                )
            } else {
                ("404 Not Found", r#"{"message":"page not found"}"#.to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (endpoint, seen)
}

// --- the tests ------------------------------------------------------------

/// No services needed: what bollard would not send by itself.
#[tokio::test]
async fn requests_carry_the_negotiated_version_and_a_url_safe_registry_auth() {
    let repo_digest = format!("127.0.0.1:5000/test/busybox@sha256:{}", "ab".repeat(32));
    let (endpoint, seen) = fake_engine(&repo_digest);
    let target = DockerTarget::new(&endpoint).unwrap();
    target.check(EngineRole::Standalone).await.unwrap();
    assert_eq!(target.api_version().await.unwrap(), "1.41");
    let login = DockerLogin {
        server: "127.0.0.1:5000".to_owned(),
        username: "deploy".to_owned(),
        // Its X-Registry-Auth differs between the two base64 alphabets.
        password: SecretString::from("p?>>?secret".to_owned()),
        expires_at: None,
        refresh_failed: None,
    };
    let auth = login.registry_auth();
    assert_ne!(
        auth.as_str(),
        STANDARD.encode(URL_SAFE.decode(auth.as_bytes()).unwrap())
    );
    let image = ImageReference::parse("127.0.0.1:5000/test/busybox:1").unwrap();
    assert_eq!(target.pull(&image, Some(&login)).await.unwrap(), repo_digest);

    let seen = seen.lock().unwrap().clone();
    // Only the version probe goes without a version.
    assert_eq!(seen[0].0, "GET /version");
    for (line, _) in &seen[1..] {
        assert!(line.split(' ').nth(1).unwrap().starts_with("/v1.41/"), "{line}");
    }
    let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        lines[1..],
        [
            "GET /v1.41/_ping",
            // bollard always sends `platform`, empty when not set; dockerd ignores it empty.
            "POST /v1.41/images/create?fromImage=127.0.0.1%3A5000%2Ftest%2Fbusybox&tag=1&platform=",
            "GET /v1.41/images/127.0.0.1:5000/test/busybox:1/json",
        ]
    );
    assert_eq!(
        seen[2].1.as_deref(),
        Some(auth.as_str()),
        "the login's own URL-safe value"
    );
    assert_eq!(seen[3].1, None, "the login only goes with the pull");
}

#[tokio::test]
async fn negotiates_the_daemon_api_version() {
    let Some(env) = env() else { return };
    let target = env.target();
    let version = target.api_version().await.unwrap();
    assert_eq!(version, env.api_version, "the version the daemon speaks");
    assert!(
        version != bollard::API_DEFAULT_VERSION.to_string(),
        "expected an older daemon than bollard's default {}",
        bollard::API_DEFAULT_VERSION
    );
    // Every request after the probe carries it (what goes on the wire is
    // checked against a fake engine above); the real one answers them.
    target.check(EngineRole::Standalone).await.unwrap();
}

#[tokio::test]
async fn pull_without_login_is_refused_and_leaves_no_image() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-nologin"));
    leftovers.images.push(image.to_string());
    let target = env.target();

    let error = target.pull(&image, None).await.unwrap_err();
    assert!(
        matches!(&error, TargetError::RegistryRefused(m) if m.contains("no basic auth credentials")),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&image.to_string()),
        "names the image: {error}"
    );
    assert!(!on_engine(&target.docker().await.unwrap(), &image.to_string()).await);
}

#[tokio::test]
async fn pull_with_login_returns_the_repository_digest() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-login"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    let docker = target.docker().await.unwrap();
    assert!(!on_engine(&docker, &image.to_string()).await);

    let started = Instant::now();
    let digest = target.pull(&image, Some(&env.good_login())).await.unwrap();
    eprintln!("pull by tag: {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(digest, format!("{}@{}", image.name(), env.digest));
    assert!(on_engine(&docker, &image.to_string()).await);

    // By digest: the same answer.
    let pinned = ImageReference::parse(&digest).unwrap();
    assert_eq!(target.pull(&pinned, Some(&env.good_login())).await.unwrap(), digest);
    // A tag and a digest: the digest is what is pulled.
    let both = ImageReference::parse(&format!("{image}@{}", env.digest)).unwrap();
    assert_eq!(target.pull(&both, Some(&env.good_login())).await.unwrap(), digest);
}

#[tokio::test]
async fn wrong_password_is_refused_without_echoing_it() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-wrongpw"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    let login = env.login(&env.user, &format!("not-{}", env.password));

    let error = target.pull(&image, Some(&login)).await.unwrap_err();
    assert!(matches!(error, TargetError::RegistryRefused(_)), "{error:?}");
    assert_no_secret(&error, &login);
    assert!(!on_engine(&target.docker().await.unwrap(), &image.to_string()).await);
}

#[tokio::test]
async fn unknown_tag_or_repository_is_image_not_found() {
    let Some(env) = env() else { return };
    let target = env.target();
    let login = env.good_login();
    let tag = unique("no-such-tag");
    for image in [
        env.reference(env.image.repository(), &tag),
        env.reference(&unique("test/no-such-repo"), "1"),
    ] {
        let error = target.pull(&image, Some(&login)).await.unwrap_err();
        assert!(matches!(&error, TargetError::ImageNotFound(_)), "{image}: {error:?}");
        assert!(
            error.to_string().contains(&image.to_string()),
            "names the image: {error}"
        );
        assert_no_secret(&error, &login);
    }
}

/// No services needed.
#[tokio::test]
async fn unreachable_endpoints_are_unreachable_and_named() {
    let image = ImageReference::parse("127.0.0.1:5000/test/busybox:1").unwrap();
    let login = DockerLogin {
        server: "127.0.0.1:5000".to_owned(),
        username: "deploy".to_owned(),
        password: SecretString::from("not-sent-anywhere".to_owned()),
        expires_at: None,
        refresh_failed: None,
    };
    let missing = format!("unix:///tmp/{}/docker.sock", unique("no-such-dir"));
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://{}", listener.local_addr().unwrap())
    };
    for endpoint in [missing, closed] {
        let target = DockerTarget::new(&endpoint).unwrap();
        let started = Instant::now();
        for error in [
            target.check(EngineRole::Standalone).await.unwrap_err(),
            target.check(EngineRole::SwarmManager).await.unwrap_err(),
            target.pull(&image, Some(&login)).await.unwrap_err(),
        ] {
            assert!(
                matches!(&error, TargetError::Unreachable(m) if m.contains(&endpoint)),
                "{endpoint}: {error:?}"
            );
            assert_no_secret(&error, &login);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    }
}

#[tokio::test]
async fn check_accepts_the_swarm_manager() {
    let Some(env) = swarm_env() else { return };
    let target = env.target();
    target.check(EngineRole::Standalone).await.unwrap();
    target.check(EngineRole::SwarmManager).await.unwrap();
}

#[tokio::test]
async fn swarm_service_with_registry_auth_runs() {
    let Some(env) = swarm_env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-svc-auth"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    let docker = target.docker().await.unwrap();
    let name = unique("od-svc-auth");
    leftovers.services.push(name.clone());

    let auth = env.good_login().registry_auth();
    let id = target.create_service(&name, &image, Some(&auth)).await.unwrap();
    assert!(!id.is_empty());
    wait_for_tasks(&docker, &name, "running", |tasks| {
        tasks.iter().any(|t| state_is(t, TaskState::RUNNING))
    })
    .await;
    let spec = docker.inspect_service(&name, None).await.unwrap().spec.unwrap();
    let networks = spec.task_template.unwrap().networks.unwrap_or_default();
    assert_eq!(networks.len(), 1, "one network: host");
    assert!(
        spec.endpoint_spec.and_then(|e| e.ports).unwrap_or_default().is_empty(),
        "no published ports"
    );
}

#[tokio::test]
async fn swarm_service_without_auth_is_rejected_until_updated_with_auth() {
    let Some(env) = swarm_env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-svc-noauth"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    let docker = target.docker().await.unwrap();
    let name = unique("od-svc-noauth");
    leftovers.services.push(name.clone());

    target.create_service(&name, &image, None).await.unwrap();
    let tasks = wait_for_tasks(&docker, &name, "rejected", |tasks| {
        tasks.iter().any(|t| state_is(t, TaskState::REJECTED))
    })
    .await;
    assert!(
        !tasks.iter().any(|t| state_is(t, TaskState::RUNNING)),
        "{}",
        task_summary(&tasks)
    );
    let rejected = tasks.iter().find(|t| state_is(t, TaskState::REJECTED)).unwrap();
    let err = rejected.status.as_ref().and_then(|s| s.err.clone()).unwrap_or_default();
    assert!(err.contains("No such image"), "rejected for: {err}");

    // The same service, updated with the login (as a deploy after
    // PrepareDeployment does), pulls and runs.
    let auth = env.good_login().registry_auth();
    target.update_service_image(&name, &image, Some(&auth)).await.unwrap();
    wait_for_tasks(&docker, &name, "running after the update", |tasks| {
        tasks.iter().any(|t| state_is(t, TaskState::RUNNING))
    })
    .await;
}

#[tokio::test]
async fn rotated_password_old_refused_new_pulls() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-rotate"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    // A user of its own: the script's user keeps its password for the
    // tests running alongside.
    let user = unique("od-rotate");
    leftovers.users.push(user.clone());
    let (old, new) = (unique("old-pw"), unique("new-pw"));

    htpasswd_set(&env.htpasswd, &user, Some(&old));
    let digest = target.pull(&image, Some(&env.login(&user, &old))).await.unwrap();
    assert_eq!(digest, format!("{}@{}", image.name(), env.digest));

    htpasswd_set(&env.htpasswd, &user, Some(&new));
    let old_login = env.login(&user, &old);
    let error = target.pull(&image, Some(&old_login)).await.unwrap_err();
    assert!(matches!(error, TargetError::RegistryRefused(_)), "{error:?}");
    assert_no_secret(&error, &old_login);
    assert_eq!(
        target.pull(&image, Some(&env.login(&user, &new))).await.unwrap(),
        digest
    );
}

#[tokio::test]
async fn password_whose_auth_needs_the_url_safe_alphabet_pulls() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-b64"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    let user = unique("od-b64");
    leftovers.users.push(user.clone());
    // A password whose X-Registry-Auth has '-' or '_', i.e. whose standard
    // base64 has '+' or '/', which the engine would not decode.
    let password = (0..64)
        .map(|i| format!("p?>>?{i}~~"))
        .find(|p| {
            let auth = env.login(&user, p).registry_auth();
            auth.contains(['-', '_']) && URL_SAFE.decode(auth.as_bytes()).is_ok()
        })
        .unwrap();
    htpasswd_set(&env.htpasswd, &user, Some(&password));

    let digest = target.pull(&image, Some(&env.login(&user, &password))).await.unwrap();
    assert_eq!(digest, format!("{}@{}", image.name(), env.digest));
}

#[tokio::test]
async fn compose_up_after_pull_needs_no_login() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-compose-up"));
    leftovers.images.push(image.to_string());
    let target = env.target();
    let docker = target.docker().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = compose_file(dir.path(), &image);
    let project = unique("odcomposeup").replace('-', "");
    leftovers.compose_projects.push((project.clone(), file.clone()));
    leftovers.dirs.push(dir);

    target.pull(&image, Some(&env.good_login())).await.unwrap();
    let started = Instant::now();
    let up = compose(&env.compose, &env.docker_host, None, &project, &file, &["up", "-d"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    eprintln!("compose up: {:.2} s", started.elapsed().as_secs_f64());
    let containers = containers_labelled(&docker, "com.docker.compose.project", &project).await;
    assert_eq!(containers.len(), 1, "one container");
    assert_eq!(containers[0].state, Some(ContainerSummaryStateEnum::RUNNING));
    let networks = docker.list_networks(None::<ListNetworksOptions>).await.unwrap();
    assert!(
        !networks
            .iter()
            .any(|n| n.name.as_deref() == Some(&format!("{project}_default"))),
        "compose made a network"
    );

    let down = compose(&env.compose, &env.docker_host, None, &project, &file, &["down"]);
    assert!(
        down.status.success(),
        "compose down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        containers_labelled(&docker, "com.docker.compose.project", &project)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn compose_pull_uses_the_isolated_docker_config() {
    let Some(env) = env() else { return };
    let mut leftovers = Leftovers::new(&env);
    let image = copy_test_image(&env, &mut leftovers, &unique("test/od-compose-pull"));
    leftovers.images.push(image.to_string());
    let docker = env.target().docker().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = compose_file(dir.path(), &image);
    let project = unique("odcomposepull").replace('-', "");

    // Without a login compose cannot pull it.
    let refused = compose(&env.compose, &env.docker_host, None, &project, &file, &["pull"]);
    assert!(!refused.status.success(), "compose pulled without a login");
    assert!(!on_engine(&docker, &image.to_string()).await);

    let config_dir = dir.path().join("docker-config");
    let config = write_isolated_docker_config(&config_dir, &env.good_login()).unwrap();
    assert_eq!(config, config_dir.join("config.json"));
    let pulled = compose(
        &env.compose,
        &env.docker_host,
        Some(&config_dir),
        &project,
        &file,
        &["pull"],
    );
    assert!(
        pulled.status.success(),
        "compose pull with the isolated config: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert!(on_engine(&docker, &image.to_string()).await);
    leftovers.dirs.push(dir);
}
