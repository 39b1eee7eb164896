//! Rotation fan-out over 1000 namespaces against the simulated API server
//! with 5 ms per write: how long until every pull Secret holds the new
//! revision, at several concurrencies, with QPS caps, and with two replicas
//! sharing one PostgreSQL.
//!
//! Targets: at most 1.5 x (1000 x 5 ms / concurrency); with a QPS cap,
//! within 10 % of 1000 / QPS; two replicas at concurrency 16 each no slower
//! than one at 32, every Secret written exactly once. Exits non-zero when
//! one is missed.
//!
//! Run: `cargo bench -p registry-bench --bench rotation_fanout` (the
//! PostgreSQL cases need `REGISTRY_TEST_POSTGRES_URL`, as `scripts/test`
//! sets it); `-- "concurrency 32"` runs the cases whose name holds that.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_k8s::connect::clients;
use orchestrator_k8s::{ClientOptions, KubePullSecrets, ServiceAccounts};
use registry_core::audit::{AuditAction, AuditEvent, AuditOutcome};
use registry_core::login::StaticLogins;
use registry_core::ports::sealer::{SealContext, Sealer};
use registry_core::ports::store::{DeployStore, RegistryStore, SecretIntent, UsageIntent};
use registry_core::registry::new_etag;
use registry_core::sync::{SecretSync, SyncReport, SyncSettings, SyncTrigger};
use registry_core::targets::{NamespaceTemplate, Organizations, Target, TargetKind, Targets};
use registry_core::usage::{Lease, Replica, Usage, secret_name};
use registry_core::{Credentials, Registry, RegistryId, RegistryKind, StoredRegistry, Timestamp};
use registry_crypto::KeyRing;
use registry_store::SeaStore;
use registry_testkit::kube_api::{KubeSim, Verb};

/// The server's allocator, so the benchmark measures what it runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMESPACES: usize = 1000;
const WRITE_LATENCY: Duration = Duration::from_millis(5);

fn audit(registry: &Registry, action: AuditAction) -> AuditEvent {
    AuditEvent::by(
        &registry.organization,
        "bench",
        action,
        Some(&registry.id),
        AuditOutcome::Ok,
        "",
    )
}

/// A store and a cluster where one registry's Secret is in `NAMESPACES`
/// namespaces, synced at revision 1.
struct Bed {
    sim: KubeSim,
    keys: Arc<KeyRing>,
    stored: StoredRegistry,
}

fn credentials() -> Credentials {
    Credentials::Ghcr {
        username: "myorg".into(),
        token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
    }
}

fn target(api: Arc<KubePullSecrets>) -> Targets {
    let organizations = Organizations::from_list(["acme"]).unwrap();
    Targets::new([(
        "k8s".to_owned(),
        Target {
            kind: TargetKind::Kubernetes {
                namespaces: NamespaceTemplate::new("env-{environment}", &organizations).unwrap(),
                api,
            },
            organizations,
        },
    )])
}

/// A replica's sync loop, with its own watched client of the cluster.
async fn replica(bed: &Bed, store: &SeaStore, name: &str, concurrency: usize, qps: Option<f64>) -> SecretSync {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(15),
        user_agent: format!("bench/{name}"),
    };
    let api = Arc::new(KubePullSecrets::watching(
        clients(bed.sim.config(), &options).unwrap(),
        ServiceAccounts::Leave,
    ));
    api.synced().await;
    SecretSync::new(
        Arc::new(store.clone()) as Arc<dyn DeployStore>,
        Arc::clone(&bed.keys) as Arc<dyn Sealer>,
        target(api),
        SyncSettings {
            concurrency,
            qps,
            ..SyncSettings::default()
        },
        SyncTrigger::default(),
        Arc::new(StaticLogins),
    )
    .with_replica(Arc::new(Replica::new(name)))
}

async fn bed(store: &SeaStore) -> Bed {
    let keys = Arc::new(KeyRing::ephemeral().unwrap());
    let sim = KubeSim::start().await;
    let id = RegistryId::generate();
    let sealed = keys
        .seal(
            SealContext {
                registry_id: id.as_str(),
                kind: RegistryKind::Ghcr,
            },
            &credentials().to_plaintext(),
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
            hints: credentials().hints(),
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
        .insert(&stored, None, &audit(&stored.registry, AuditAction::RegistryCreate))
        .await
        .unwrap();
    let secret = SecretIntent {
        secret_name: secret_name(RegistryKind::Ghcr, &id),
        server: "ghcr.io".into(),
    };
    // Leases that have run out already: the sync loop writes the Secrets.
    let lease = Lease {
        owner: "setup".into(),
        until: Timestamp(0),
    };
    for i in 0..NAMESPACES {
        let namespace = format!("env-{i}");
        sim.create_namespace(&namespace);
        let usage = Usage {
            organization: "acme".into(),
            container_id: format!("c{i}"),
            registry_id: Some(id.clone()),
            environment: i.to_string(),
            target: "k8s".into(),
            namespace: Some(namespace),
            image: "ghcr.io/myorg/api:v1".into(),
            credential_revision: 1,
            created_at: now,
            updated_at: now,
        };
        store
            .record_intent(&UsageIntent {
                usage: &usage,
                secret: Some(&secret),
                lease: &lease,
                audit: &audit(&stored.registry, AuditAction::DeploymentPrepare),
            })
            .await
            .unwrap();
    }
    let bed = Bed { sim, keys, stored };
    // The first deploy of every Secret, not timed.
    let first = replica(&bed, store, "setup", 64, None).await;
    first.run_once().await.unwrap();
    bed
}

/// What a timed rotation shows.
struct Run {
    elapsed: Duration,
    writes_per_second: f64,
    server_per_write: Duration,
    /// How many Secrets were written how many times at the new revision.
    written: BTreeMap<usize, usize>,
    /// CPU time of this process (sync loops, client and simulated server;
    /// not the database's).
    cpu: Duration,
}

/// CPU time this process has used (user and system), from
/// `/proc/self/stat`; zero where there is none.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Runs one pass of every replica at once.
async fn passes(replicas: &[SecretSync]) -> Vec<SyncReport> {
    let handles: Vec<_> = replicas
        .iter()
        .map(|replica| {
            let replica = replica.clone();
            tokio::spawn(async move { replica.run_once().await.unwrap() })
        })
        .collect();
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await.unwrap());
    }
    reports
}

/// Rotates the registry and times `replicas` until every Secret holds the
/// new revision.
async fn rotate(bed: &mut Bed, store: &SeaStore, replicas: &[SecretSync]) -> Run {
    rotate_at(bed, store, replicas, WRITE_LATENCY).await
}

async fn rotate_at(bed: &mut Bed, store: &SeaStore, replicas: &[SecretSync], latency: Duration) -> Run {
    bed.sim.set_write_latency(latency);
    bed.sim.reset_stats();
    let previous = bed.stored.registry.etag.clone();
    bed.stored.registry.credential_revision += 1;
    bed.stored.registry.etag = new_etag();
    let revision = bed.stored.registry.credential_revision;
    let started = Instant::now();
    let cpu = process_cpu();
    store
        .update(
            &bed.stored,
            &previous,
            &audit(&bed.stored.registry, AuditAction::RegistryUpdate),
        )
        .await
        .unwrap();
    let reports = passes(replicas).await;
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu);
    let applied: usize = reports.iter().map(|r| r.applied).sum();
    assert!(applied >= NAMESPACES, "{applied} applied");
    let rows = store.pull_secrets_of(&bed.stored.registry.id).await.unwrap();
    let unsynced: Vec<_> = rows
        .iter()
        .filter(|r| !(r.is_synced() && r.applied_revision == revision))
        .collect();
    assert!(
        unsynced.is_empty(),
        "{} secrets not synced, e.g. {:?}",
        unsynced.len(),
        unsynced.first()
    );

    let mut log: Vec<_> = bed
        .sim
        .write_log()
        .into_iter()
        .filter(|w| w.verb == Verb::Patch)
        .collect();
    log.sort_by_key(|w| w.arrived);
    let span = log.last().unwrap().arrived - log.first().unwrap().arrived;
    let writes_per_second = (log.len() - 1) as f64 / span.as_secs_f64();
    let served: Duration = log.iter().map(|w| w.finished - w.arrived).sum();
    let revision = revision.to_string();
    let mut per_secret: BTreeMap<String, usize> = BTreeMap::new();
    for write in &log {
        let at = write
            .object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/annotations/registry.platform.io~1credential-revision"))
            .and_then(|v| v.as_str());
        if write.code == 200 && at == Some(revision.as_str()) {
            *per_secret
                .entry(write.namespace.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    let mut written = BTreeMap::new();
    for count in per_secret.values() {
        *written.entry(*count).or_default() += 1;
    }
    Run {
        elapsed,
        writes_per_second,
        server_per_write: served / u32::try_from(log.len()).unwrap(),
        written,
        cpu,
    }
}

fn row(setting: &str, run: &Run, budget: Duration) {
    println!(
        "{:<36} {:>8.0}ms {:>8.0}ms {:>10.0} {:>10.2}ms {:>8.0}ms  {:?}",
        setting,
        run.elapsed.as_secs_f64() * 1e3,
        budget.as_secs_f64() * 1e3,
        run.writes_per_second,
        run.server_per_write.as_secs_f64() * 1e3,
        run.cpu.as_secs_f64() * 1e3,
        run.written
    );
}

fn budget(concurrency: usize) -> Duration {
    WRITE_LATENCY * u32::try_from(NAMESPACES / concurrency).unwrap() * 3 / 2
}

async fn sqlite() -> (tempfile::TempDir, SeaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SeaStore::connect(&registry_store::sqlite_url(dir.path()))
        .await
        .unwrap();
    (dir, store)
}

/// Whether a case runs: every one, or those whose name contains an argument
/// given (`cargo bench ... -- "concurrency 32"`).
fn selected(case: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    filters.is_empty() || filters.iter().any(|f| case.contains(f.as_str()))
}

#[tokio::main]
async fn main() {
    let mut missed = Vec::new();
    println!("rotation fan-out: {NAMESPACES} namespaces, {WRITE_LATENCY:?} per write (simulated API server)");
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>12} {:>10}  secrets by times written",
        "setting", "elapsed", "budget", "writes/s", "server/write", "cpu"
    );
    for concurrency in [8, 16, 32, 64] {
        let case = format!("sqlite, concurrency {concurrency}");
        if !selected(&case) {
            continue;
        }
        let (_dir, store) = sqlite().await;
        let mut bed = bed(&store).await;
        let sync = replica(&bed, &store, "one", concurrency, None).await;
        let run = rotate(&mut bed, &store, &[sync]).await;
        row(&case, &run, budget(concurrency));
        if run.elapsed > budget(concurrency) {
            missed.push(format!("{case}: {:?} > {:?}", run.elapsed, budget(concurrency)));
        }
    }
    // No latency at all: what 1000 writes cost the two cores (client,
    // store and simulated server together).
    let case = "sqlite, concurrency 64, writes without latency";
    if selected(case) {
        let (_dir, store) = sqlite().await;
        let mut bed = bed(&store).await;
        let sync = replica(&bed, &store, "one", 64, None).await;
        let run = rotate_at(&mut bed, &store, &[sync], Duration::ZERO).await;
        row(case, &run, Duration::ZERO);
    }
    for qps in [200.0, 500.0] {
        let case = format!("sqlite, qps cap {qps}");
        if !selected(&case) {
            continue;
        }
        let (_dir, store) = sqlite().await;
        let mut bed = bed(&store).await;
        let sync = replica(&bed, &store, "one", 64, Some(qps)).await;
        let run = rotate(&mut bed, &store, &[sync]).await;
        let expected = Duration::from_secs_f64(NAMESPACES as f64 / qps);
        row(&case, &run, expected);
        if (run.elapsed.as_secs_f64() / expected.as_secs_f64() - 1.0).abs() > 0.10 {
            missed.push(format!("{case}: {:?} not within 10 % of {expected:?}", run.elapsed));
        }
    }
    if selected("postgres, replicas") {
        postgres(&mut missed).await;
    }
    if !missed.is_empty() {
        eprintln!("missed targets: {missed:?}");
        std::process::exit(1);
    }
}

/// How many times each PostgreSQL setting runs; their medians are compared.
const ROUNDS: usize = 3;

/// One replica at concurrency 32 and two at 16 each on one PostgreSQL,
/// alternating `ROUNDS` times, each run on a fresh database and cluster so
/// that neither inherits the other's dead rows; the medians are compared.
async fn postgres(missed: &mut Vec<String>) {
    if std::env::var(registry_testkit::POSTGRES_URL_VAR).is_err() {
        println!(
            "postgres: skipped ({} is not set; scripts/test sets it)",
            registry_testkit::POSTGRES_URL_VAR
        );
        return;
    }
    let (mut single, mut pair) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        single.push(postgres_run(1, 32).await);
        pair.push(postgres_run(2, 16).await);
    }
    for (setting, runs) in [
        ("postgres, 1 replica, concurrency 32", &mut single),
        ("postgres, 2 replicas, 16 each", &mut pair),
    ] {
        runs.sort_by_key(|run| run.elapsed);
        for run in runs.iter() {
            row(setting, run, budget(32));
        }
    }
    let median = |runs: &[Run]| runs[runs.len() / 2].elapsed;
    println!(
        "median of {ROUNDS}: 1 replica {:?}, 2 replicas {:?}",
        median(&single),
        median(&pair)
    );
    if let Some(run) = pair
        .iter()
        .find(|run| run.written.len() != 1 || run.written.get(&1) != Some(&NAMESPACES))
    {
        missed.push(format!("two replicas wrote secrets more than once: {:?}", run.written));
    }
    // "No slower", with 5 % for the noise between runs.
    if median(&pair).as_secs_f64() > median(&single).as_secs_f64() * 1.05 {
        missed.push(format!(
            "two replicas ({:?}) slower than one at concurrency 32 ({:?})",
            median(&pair),
            median(&single)
        ));
    }
}

/// A rotation converged by `replicas` sync loops at `concurrency` each on a
/// fresh PostgreSQL database, each replica with its own connections and its
/// own watched client, like separate processes. The second of two
/// rotations is timed: a running server's pools are open and its
/// statements prepared.
async fn postgres_run(replicas: usize, concurrency: usize) -> Run {
    let url = registry_testkit::postgres_database().await.unwrap();
    let store = SeaStore::connect(&url).await.unwrap();
    let mut bed = bed(&store).await;
    let mut syncs = Vec::new();
    for i in 0..replicas {
        let own = SeaStore::connect(&url).await.unwrap();
        syncs.push(replica(&bed, &own, &format!("r{i}"), concurrency, None).await);
    }
    rotate(&mut bed, &store, &syncs).await;
    rotate(&mut bed, &store, &syncs).await
}
