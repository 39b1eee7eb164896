//! Several server processes (the real binary) on one PostgreSQL and one
//! simulated Kubernetes API server: they start together on an empty
//! database, share the fan-out of a rotation without writing a Secret
//! twice, finish the work of a replica killed with SIGKILL, and never lose
//! an update. And SQLite refuses a second process.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use registry_proto::v1 as pb;
use registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use registry_testkit::kube_api::{KubeSim, Verb};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{NEW_TOKEN, as_acme, free_port, ghcr};

/// Secrets a replica writes at once.
const CONCURRENCY: usize = 4;

/// One `registry-server` process, killed when dropped.
struct Replica {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every replica of a test shares: the database, the master key, the
/// cluster's kubeconfig.
struct Shared {
    dir: tempfile::TempDir,
    database_url: String,
    master_key: String,
}

impl Shared {
    fn new(database_url: String, sim: &KubeSim) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_registry-server"))
            .arg("keygen")
            .output()
            .unwrap();
        assert!(output.status.success());
        let master_key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
        let config = format!(
            "[sync]\nconcurrency = {CONCURRENCY}\ninterval_ms = 100\ncall_timeout_ms = 1000\nlease_ms = 4000\n\n\
             [targets.k8s]\nkind = \"kubernetes\"\norganizations = [\"acme\"]\nkubeconfig = \"{}\"\n",
            kubeconfig.display()
        );
        std::fs::write(dir.path().join("registry.toml"), config).unwrap();
        Self {
            dir,
            database_url,
            master_key,
        }
    }

    /// Starts a replica (`name` names its log file); does not wait.
    fn spawn(&self, name: &str) -> Replica {
        let address = format!("127.0.0.1:{}", free_port());
        let log = common::output_path(&self.dir.path().join(format!("{name}.log")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_registry-server"));
        command
            .arg("--config")
            .arg(self.dir.path().join("registry.toml"))
            .args(["--listen", &address, "--auth-mode", "development"])
            .arg("--data-dir")
            .arg(self.dir.path().join(name))
            .env("REGISTRY_DATABASE_URL", &self.database_url)
            .env("REGISTRY_MASTER_KEYS", &self.master_key)
            .env("RUST_LOG", "info")
            .stdout(common::append_to(&log))
            .stderr(common::append_to(&log));
        let child = common::canary_log_level(&mut command).spawn().unwrap();
        Replica { child, address, log }
    }
}

impl Replica {
    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process answers SERVING.
    async fn serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("replica exited with {status}:\n{}", self.log());
            }
            if let Ok(channel) = Channel::from_shared(self.url()).unwrap().connect().await
                && let Ok(answer) = HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                && answer.get_ref().status() == ServingStatus::Serving
            {
                return;
            }
            assert!(Instant::now() < deadline, "replica not SERVING:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    async fn registries(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel().await)
    }

    async fn deploys(&self) -> DeployCredentialServiceClient<Channel> {
        DeployCredentialServiceClient::new(self.channel().await)
    }

    /// Kills the process without warning (SIGKILL).
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn create_registry(replica: &Replica) -> pb::Registry {
    common::create_registry(replica.channel().await).await
}

fn rotation(registry: &pb::Registry, etag: &str) -> pb::UpdateRegistryRequest {
    pb::UpdateRegistryRequest {
        registry_id: registry.id.clone(),
        registry: Some(pb::Registry {
            credentials: Some(ghcr(NEW_TOKEN)),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["credentials".into()],
        }),
        etag: etag.into(),
    }
}

async fn sync_state(replica: &Replica, registry: &str) -> pb::GetRegistrySyncStateResponse {
    replica
        .deploys()
        .await
        .get_registry_sync_state(as_acme(pb::GetRegistrySyncStateRequest {
            registry_id: registry.into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

/// Per Secret, which replicas (by User-Agent) wrote it at `revision`.
fn writers_at(sim: &KubeSim, revision: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut writers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for write in sim.write_log() {
        let Some(object) = &write.object else { continue };
        let written = object
            .pointer("/metadata/annotations/registry.platform.io~1credential-revision")
            .and_then(|v| v.as_str());
        if write.resource == "secrets" && (200..300).contains(&write.code) && written == Some(revision) {
            writers
                .entry((
                    write.namespace.clone().unwrap_or_default(),
                    write.name.clone().unwrap_or_default(),
                ))
                .or_default()
                .insert(write.user_agent.clone().unwrap_or_default());
        }
    }
    writers
}

#[tokio::test]
async fn replicas_started_together_on_an_empty_database_both_serve() {
    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    let sim = KubeSim::start().await;
    let shared = Shared::new(url, &sim);
    let mut first = shared.spawn("first");
    let mut second = shared.spawn("second");
    first.serving().await;
    second.serving().await;
    // Both serve the same data.
    let registry = create_registry(&first).await;
    let seen = second
        .registries()
        .await
        .get_registry(as_acme(pb::GetRegistryRequest {
            registry_id: registry.id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(seen.into_inner().registry.unwrap().id, registry.id);
}

#[tokio::test]
async fn a_killed_replicas_fan_out_is_finished_by_the_other_without_double_writes() {
    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    let sim = KubeSim::start().await;
    let namespaces: Vec<String> = (0..200).map(|i| format!("env-e{i}")).collect();
    for namespace in &namespaces {
        sim.create_namespace(namespace);
    }
    let shared = Shared::new(url, &sim);
    let mut doomed = shared.spawn("doomed");
    let mut survivor = shared.spawn("survivor");
    doomed.serving().await;
    survivor.serving().await;

    let registry = create_registry(&doomed).await;
    let mut deploys = doomed.deploys().await;
    for namespace in &namespaces {
        let environment = namespace.trim_start_matches("env-");
        deploys
            .prepare_deployment(as_acme(pb::PrepareDeploymentRequest {
                container_id: environment.into(),
                environment: environment.into(),
                target: "k8s".into(),
                registry_config: Some(pb::RegistryConfig {
                    registry_id: registry.id.clone(),
                    image_name: "ghcr.io/myorg/api".into(),
                    image_tag: "v1".into(),
                }),
                swarm_service: String::new(),
            }))
            .await
            .unwrap();
    }

    // Slow writes, so the fan-out is in full swing when a replica dies.
    sim.set_write_latency(Duration::from_millis(25));
    doomed
        .registries()
        .await
        .update_registry(as_acme(rotation(&registry, "")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while writers_at(&sim, "2").len() < 40 {
        assert!(Instant::now() < deadline, "the fan-out did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.kill();

    // The survivor converges every Secret: its own share at once, the dead
    // replica's when its leases run out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = sync_state(&survivor, &registry.id).await;
        let synced = state
            .targets
            .iter()
            .filter(|t| t.status() == pb::SyncStatus::Synced && t.applied_revision == 2)
            .count();
        if synced == namespaces.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{synced} of {} synced:\n{}",
            namespaces.len(),
            survivor.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for namespace in &namespaces {
        let secret = sim.secrets(namespace).pop().unwrap();
        let data = &secret.data.unwrap()[".dockerconfigjson"].0;
        let config: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(config["auths"]["ghcr.io"]["password"], NEW_TOKEN, "{namespace}");
    }
    // Both replicas took part, and no Secret was written by both at this
    // revision beyond what the killed one had in flight.
    let writers = writers_at(&sim, "2");
    assert_eq!(writers.len(), namespaces.len());
    let agents: BTreeSet<&String> = writers.values().flatten().collect();
    assert_eq!(agents.len(), 2, "{agents:?}");
    let twice = writers.values().filter(|w| w.len() > 1).count();
    for agent in &agents {
        let wrote = writers.values().filter(|w| w.contains(*agent)).count();
        eprintln!("{agent} wrote {wrote} secrets at revision 2");
    }
    eprintln!("{twice} secrets written by both");
    assert!(twice <= CONCURRENCY, "{twice} secrets written by both replicas");
    assert!(sim.stats().count(Verb::Patch, "secrets") >= u64::try_from(namespaces.len()).unwrap());
}

#[tokio::test]
async fn concurrent_updates_on_two_replicas_lose_nothing() {
    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    let sim = KubeSim::start().await;
    let shared = Shared::new(url, &sim);
    let mut one = shared.spawn("one");
    let mut two = shared.spawn("two");
    one.serving().await;
    two.serving().await;
    let registry = create_registry(&one).await;
    let (mut a, mut b) = (one.registries().await, two.registries().await);
    let rename = |name: &str| pb::UpdateRegistryRequest {
        registry_id: registry.id.clone(),
        registry: Some(pb::Registry {
            name: name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        etag: registry.etag.clone(),
    };
    let (first, second) = tokio::join!(
        a.update_registry(as_acme(rename("renamed by one"))),
        b.update_registry(as_acme(rename("renamed by two")))
    );
    let (winner, loser) = match (first, second) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won.into_inner().registry.unwrap(), lost),
        other => panic!("exactly one update wins: {other:?}"),
    };
    assert_eq!(loser.code(), Code::Aborted, "{loser:?}");
    let now = a
        .get_registry(as_acme(pb::GetRegistryRequest {
            registry_id: registry.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert_eq!((now.name, now.etag), (winner.name, winner.etag));
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let log = common::output_path(&dir.path().join(format!("{name}.log")));
        let child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(common::append_to(&log))
            .stderr(common::append_to(&log))
            .spawn()
            .unwrap();
        (child, log)
    };
    let (first, first_log) = start("first");
    let mut first = Replica {
        child: first,
        address: String::new(),
        log: first_log,
    };
    // The first holds the file once it listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.log().contains("serving gRPC") {
        assert!(Instant::now() < deadline, "first not serving:\n{}", first.log());
        assert!(first.child.try_wait().unwrap().is_none(), "{}", first.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut second, second_log) = start("second");
    let status = second.wait().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(second_log).unwrap();
    assert!(
        log.contains("another process already serves the SQLite database"),
        "{log}"
    );
    assert!(log.contains("PostgreSQL"), "{log}");
    first.kill();
}
