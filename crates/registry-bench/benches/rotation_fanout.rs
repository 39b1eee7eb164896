//! Rotation fan-out over 1000 namespaces against the simulated API server
//! with 5 ms per write: how long until every pull Secret holds the new
//! revision, for several concurrencies and QPS caps.
//!
//! Targets (issue 3, DESIGN.md §10): at most 1.5 x (1000 x 5 ms / concurrency);
//! with a QPS cap, within 10 % of 1000 / QPS. Exits non-zero when missed.
//!
//! Run: `cargo bench -p orchestrator-k8s --bench rotation_fanout`

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_k8s::KubePullSecrets;
use registry_core::deploy::{DeployStore, PullSecretState, SyncStatus, Target, Targets, Usage};
use registry_core::login::StaticLogins;
use registry_core::ports::{AuditEvent, RegistryStore};
use registry_core::registry::new_etag;
use registry_core::sealer::{SealContext, Sealer};
use registry_core::sync::{SecretSync, SyncSettings, SyncTrigger};
use registry_core::{Credentials, Registry, RegistryId, RegistryKind, StoredRegistry, Timestamp};
use registry_crypto::KeyRing;
use registry_store::SeaStore;
use registry_testkit::kube_api::KubeSim;

const NAMESPACES: usize = 1000;
const WRITE_LATENCY: Duration = Duration::from_millis(5);

fn audit(registry: &Registry, action: &str) -> AuditEvent {
    AuditEvent {
        at: Timestamp::now(),
        organization: registry.organization.clone(),
        actor: "bench".into(),
        action: action.into(),
        registry_id: Some(registry.id.clone()),
        outcome: "ok".into(),
        detail: String::new(),
    }
}

/// A store with one registry used in `NAMESPACES` namespaces, all synced at
/// revision 1, and a simulated cluster holding those namespaces.
async fn setup(keys: &KeyRing) -> (tempfile::TempDir, SeaStore, KubeSim, StoredRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let store = SeaStore::connect(&registry_store::sqlite_url(dir.path()))
        .await
        .unwrap();
    let sim = KubeSim::start().await;
    let id = RegistryId::generate();
    let credentials = Credentials::Ghcr {
        username: "myorg".into(),
        token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
    };
    let sealed = keys
        .seal(
            SealContext {
                registry_id: id.as_str(),
                kind: RegistryKind::Ghcr,
            },
            &credentials.to_plaintext(),
        )
        .unwrap();
    let now = Timestamp::now();
    let stored = StoredRegistry {
        registry: Registry {
            id: id.clone(),
            organization: "acme".into(),
            name: "bench".into(),
            kind: RegistryKind::Ghcr,
            server: "ghcr.io".into(),
            hints: credentials.hints(),
            created_by: "bench".into(),
            created_at: now,
            updated_at: now,
            etag: new_etag(),
            credential_revision: 1,
        },
        key_id: keys.primary_key_id().to_owned(),
        sealed_credentials: sealed,
    };
    store
        .insert(&stored, None, &audit(&stored.registry, "registry.create"))
        .await
        .unwrap();
    for i in 0..NAMESPACES {
        let namespace = format!("env-{i}");
        sim.create_namespace(&namespace);
        let usage = Usage {
            organization: "acme".into(),
            container_id: format!("c{i}"),
            registry_id: Some(id.clone()),
            environment: i.to_string(),
            target: "k8s".into(),
            namespace: Some(namespace.clone()),
            image: "ghcr.io/myorg/api:v1".into(),
            credential_revision: 1,
            created_at: now,
            updated_at: now,
        };
        let secret = PullSecretState {
            registry_id: id.clone(),
            organization: "acme".into(),
            target: "k8s".into(),
            namespace,
            secret_name: "ghcr-creds-bench".into(),
            server: "ghcr.io".into(),
            desired_revision: 1,
            applied_revision: 1,
            status: SyncStatus::Synced,
            error: String::new(),
            attempts: 0,
            not_before: now,
            updated_at: now,
            refresh_at: None,
        };
        store
            .record_usage(&usage, Some(&secret), &audit(&stored.registry, "deployment.prepare"))
            .await
            .unwrap();
    }
    (dir, store, sim, stored)
}

/// Rotates the registry and times the sync until every Secret is at the new
/// revision. Returns the elapsed time, the writes' observed rate and the
/// mean time the simulated API server took per write.
async fn rotate(concurrency: usize, qps: Option<f64>) -> (Duration, f64, Duration) {
    let keys = KeyRing::ephemeral().unwrap();
    let (_dir, store, sim, mut stored) = setup(&keys).await;
    sim.set_write_latency(WRITE_LATENCY);
    let targets = Targets::new([(
        "k8s".to_owned(),
        Target::Kubernetes {
            namespace_template: "env-{environment}".into(),
            api: Arc::new(KubePullSecrets::new(sim.client(), false)),
        },
    )]);
    let settings = SyncSettings {
        concurrency,
        qps,
        batch: 1000,
        ..SyncSettings::default()
    };
    let store = Arc::new(store);
    let sync = SecretSync::new(
        Arc::clone(&store) as Arc<dyn DeployStore>,
        Arc::new(keys),
        targets,
        settings,
        SyncTrigger::default(),
        Arc::new(StaticLogins),
    );
    sim.reset_stats();

    let previous = stored.registry.etag.clone();
    stored.registry.credential_revision = 2;
    stored.registry.etag = new_etag();
    let started = Instant::now();
    store
        .update(&stored, &previous, &audit(&stored.registry, "registry.update"))
        .await
        .unwrap();
    let report = sync.run_once().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.synced, NAMESPACES, "{report:?}");
    let pending = store.due_pull_secrets(Timestamp::now(), 10).await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");

    let mut log = sim.write_log();
    log.sort_by_key(|w| w.arrived);
    let span = log.last().unwrap().arrived - log.first().unwrap().arrived;
    let rate = (log.len() - 1) as f64 / span.as_secs_f64();
    let served: Duration = log.iter().map(|w| w.finished - w.arrived).sum();
    (elapsed, rate, served / log.len() as u32)
}

#[tokio::main]
async fn main() {
    let mut missed = Vec::new();
    println!("rotation fan-out: {NAMESPACES} namespaces, {WRITE_LATENCY:?} per write (simulated API server)");
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>12}",
        "setting", "elapsed", "budget", "writes/s", "server/write"
    );
    for concurrency in [8, 16, 32, 64] {
        let (elapsed, rate, served) = rotate(concurrency, None).await;
        let ideal = WRITE_LATENCY * NAMESPACES as u32 / concurrency as u32;
        let budget = ideal * 3 / 2;
        println!(
            "{:<24} {:>8.0}ms {:>8.0}ms {:>10.0} {:>10.2}ms",
            format!("concurrency {concurrency}"),
            elapsed.as_secs_f64() * 1e3,
            budget.as_secs_f64() * 1e3,
            rate,
            served.as_secs_f64() * 1e3
        );
        if elapsed > budget {
            missed.push(format!("concurrency {concurrency}: {elapsed:?} > {budget:?}"));
        }
    }
    for qps in [200.0, 500.0] {
        let (elapsed, rate, _) = rotate(64, Some(qps)).await;
        let expected = Duration::from_secs_f64(NAMESPACES as f64 / qps);
        let deviation = (elapsed.as_secs_f64() - expected.as_secs_f64()).abs() / expected.as_secs_f64();
        println!(
            "{:<24} {:>8.0}ms {:>8.0}ms {:>10.0}  ({:+.1} % of 1000/QPS)",
            format!("qps cap {qps}"),
            elapsed.as_secs_f64() * 1e3,
            expected.as_secs_f64() * 1e3,
            rate,
            (elapsed.as_secs_f64() / expected.as_secs_f64() - 1.0) * 100.0
        );
        if deviation > 0.10 {
            missed.push(format!("qps {qps}: {elapsed:?} not within 10 % of {expected:?}"));
        }
    }
    if !missed.is_empty() {
        eprintln!("missed targets: {missed:?}");
        std::process::exit(1);
    }
}
