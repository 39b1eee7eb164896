//! The deploy path's races, each forced deterministically — a request held
//! on the simulated API server, or a hook in the store — and each checked by
//! its final cluster content and sync state. The use cases run over the real
//! store (SQLite and PostgreSQL), the real Kubernetes adapter and
//! registry-testkit's simulated API server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orchestrator_k8s::connect::clients;
use orchestrator_k8s::{ClientOptions, KubePullSecrets, ServiceAccounts};
use registry_core::audit::{AuditAction, AuditEvent};
use registry_core::deployments::{DeploySettings, DeploymentRequest, Deployments, TargetDeployment};
use registry_core::error::Error;
use registry_core::login::StaticLogins;
use registry_core::ports::orchestrators::{PullSecretApi, SecretVersion};
use registry_core::ports::store::{
    AuditQuery, DeployStore, Inserted, IntentOutcome, KeySample, ListQuery, RecordedAuditEvent, RegistryStore,
    SecretOutcome, StoreError, SyncResult, UsageIntent, WriteOutcome,
};
use registry_core::registries::{NewRegistry, Registries, RegistryPatch};
use registry_core::sync::{SecretSync, SyncSettings, SyncTrigger};
use registry_core::targets::{NamespaceTemplate, Organizations, Target, TargetKind, Targets};
use registry_core::usage::{Lease, PullSecretState, Replica, SecretKey, SyncStatus, Usage};
use registry_core::{Credentials, Principal, Registry, RegistryId, RegistryKind, Roles, StoredRegistry, Timestamp};
use registry_crypto::KeyRing;
use registry_store::SeaStore;
use registry_testkit::kube_api::{KubeSim, RequestMatch, Verb};
use secrecy::ExposeSecret as _;
use tokio::sync::oneshot;

const NS: &str = "env-production";
const OLD: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const NEW: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";

/// One test per backend for every function named.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = registry_store::SeaStore::connect(&registry_store::sqlite_url(dir.path())).await.unwrap();
                    super::$test(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(url) = registry_testkit::postgres_database().await else { return };
                    let store = registry_store::SeaStore::connect(&url).await.unwrap();
                    super::$test(store).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_rotation_during_the_first_deploy_into_a_namespace_is_not_lost,
    a_rotation_during_the_deploy_of_a_second_container_is_not_lost,
    a_rotation_during_a_repeat_deploy_is_not_lost,
    a_delete_landing_before_the_intent_makes_the_prepare_not_found,
    a_delete_landing_after_the_intent_is_refused_as_in_use,
    a_forced_delete_during_a_prepare_is_not_undone,
    a_release_during_the_sync_loops_delete_never_leaves_a_synced_row_without_its_secret,
    a_database_failure_after_the_apply_leaves_the_secret_owned_and_audited,
    a_cancelled_prepare_leaves_work_the_sync_loop_finishes,
    a_rotation_during_a_rekey_wins,
);

/// The store, with a fault the test can switch on: the next
/// `record_outcome` fails as if the database went away; and a hold: the
/// next `record` (the audit event of a hand-out that writes nothing else)
/// parks until the test releases it.
#[derive(Debug)]
struct Hooked {
    inner: SeaStore,
    fail_next_outcome: AtomicBool,
    hold_next_record: std::sync::Mutex<Option<RecordHold>>,
    hold_next_rewrap: std::sync::Mutex<Option<RecordHold>>,
}

#[derive(Debug)]
struct RecordHold {
    arrived: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

impl Hooked {
    /// Parks the next `record`: the first channel says it arrived, the
    /// second releases it.
    fn hold_next_record(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        Self::hold(&self.hold_next_record)
    }

    /// Parks the next `rewrap` (a rekey's compare-and-swap) the same way.
    fn hold_next_rewrap(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        Self::hold(&self.hold_next_rewrap)
    }

    fn hold(slot: &std::sync::Mutex<Option<RecordHold>>) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (arrived, arrival) = oneshot::channel();
        let (release, released) = oneshot::channel();
        *slot.lock().unwrap() = Some(RecordHold {
            arrived,
            release: released,
        });
        (arrival, release)
    }
}

#[async_trait]
impl RegistryStore for Hooked {
    async fn insert(&self, r: &StoredRegistry, id: Option<&str>, a: &AuditEvent) -> Result<Inserted, StoreError> {
        self.inner.insert(r, id, a).await
    }
    async fn find_by_request_id(&self, org: &str, id: &str) -> Result<Option<StoredRegistry>, StoreError> {
        self.inner.find_by_request_id(org, id).await
    }
    async fn get(&self, org: &str, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        self.inner.get(org, id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<StoredRegistry>, StoreError> {
        self.inner.list(query).await
    }
    async fn update(&self, r: &StoredRegistry, etag: &str, a: &AuditEvent) -> Result<WriteOutcome<()>, StoreError> {
        self.inner.update(r, etag, a).await
    }
    async fn delete(
        &self,
        org: &str,
        id: &RegistryId,
        etag: &str,
        force: bool,
        a: &AuditEvent,
    ) -> Result<WriteOutcome<()>, StoreError> {
        RegistryStore::delete(&self.inner, org, id, etag, force, a).await
    }
    async fn record(&self, a: &AuditEvent) -> Result<(), StoreError> {
        let hold = self.hold_next_record.lock().unwrap().take();
        if let Some(hold) = hold {
            hold.arrived.send(()).unwrap();
            hold.release.await.unwrap();
        }
        self.inner.record(a).await
    }
    async fn key_samples(&self) -> Result<Vec<KeySample>, StoreError> {
        self.inner.key_samples().await
    }
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        org: Option<&str>,
        after: Option<&RegistryId>,
        limit: u64,
    ) -> Result<Vec<KeySample>, StoreError> {
        self.inner.sealed_under_other_keys(key_id, org, after, limit).await
    }
    async fn count_sealed_under_other_keys(&self, key_id: &str, org: Option<&str>) -> Result<u64, StoreError> {
        self.inner.count_sealed_under_other_keys(key_id, org).await
    }
    async fn rewrap(&self, old: &KeySample, key_id: &str, sealed: &[u8], a: &AuditEvent) -> Result<bool, StoreError> {
        let hold = self.hold_next_rewrap.lock().unwrap().take();
        if let Some(hold) = hold {
            hold.arrived.send(()).unwrap();
            hold.release.await.unwrap();
        }
        self.inner.rewrap(old, key_id, sealed, a).await
    }
    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<RecordedAuditEvent>, StoreError> {
        self.inner.audit_page(query).await
    }
}

#[async_trait]
impl DeployStore for Hooked {
    async fn registry_by_id(&self, id: &RegistryId) -> Result<Option<StoredRegistry>, StoreError> {
        self.inner.registry_by_id(id).await
    }
    async fn usage(&self, org: &str, container: &str) -> Result<Option<Usage>, StoreError> {
        self.inner.usage(org, container).await
    }
    async fn record_intent(&self, intent: &UsageIntent<'_>) -> Result<IntentOutcome, StoreError> {
        self.inner.record_intent(intent).await
    }
    async fn abandon_intent(&self, i: &UsageIntent<'_>, e: Option<&Usage>, a: &AuditEvent) -> Result<(), StoreError> {
        self.inner.abandon_intent(i, e, a).await
    }
    async fn release_usage(&self, org: &str, container: &str, a: &AuditEvent) -> Result<Option<Usage>, StoreError> {
        self.inner.release_usage(org, container, a).await
    }
    async fn usages(
        &self,
        org: &str,
        id: Option<&RegistryId>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Usage>, StoreError> {
        self.inner.usages(org, id, after, limit).await
    }
    async fn pull_secret(&self, key: &SecretKey) -> Result<Option<PullSecretState>, StoreError> {
        self.inner.pull_secret(key).await
    }
    async fn pull_secrets_of(&self, id: &RegistryId) -> Result<Vec<PullSecretState>, StoreError> {
        self.inner.pull_secrets_of(id).await
    }
    async fn pull_secrets_on(&self, target: &str, ns: Option<&str>) -> Result<Vec<PullSecretState>, StoreError> {
        self.inner.pull_secrets_on(target, ns).await
    }
    async fn claim_due(&self, now: Timestamp, lease: &Lease, limit: u64) -> Result<Vec<PullSecretState>, StoreError> {
        self.inner.claim_due(now, lease, limit).await
    }
    async fn record_outcome(&self, k: &SecretKey, o: &SecretOutcome, owner: Option<&str>) -> Result<bool, StoreError> {
        if self.fail_next_outcome.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection reset by the test".into()));
        }
        self.inner.record_outcome(k, o, owner).await
    }
    async fn record_outcomes(&self, outcomes: &[SyncResult]) -> Result<usize, StoreError> {
        if self.fail_next_outcome.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection reset by the test".into()));
        }
        self.inner.record_outcomes(outcomes).await
    }
    async fn mark_drifted(
        &self,
        k: &SecretKey,
        w: Option<&SecretVersion>,
        reason: &str,
        a: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.inner.mark_drifted(k, w, reason, a).await
    }
    async fn adopt_version(&self, k: &SecretKey, v: &SecretVersion) -> Result<bool, StoreError> {
        self.inner.adopt_version(k, v).await
    }
    async fn release_leases(&self, replica: &str) -> Result<u64, StoreError> {
        self.inner.release_leases(replica).await
    }
    async fn namespace_returned(&self, target: &str, ns: &str) -> Result<u64, StoreError> {
        self.inner.namespace_returned(target, ns).await
    }
}

/// The use cases wired over one store and one simulated cluster. The
/// adapter does not watch, so every namespace check is a request a test can
/// hold.
struct Rig {
    sim: KubeSim,
    store: Arc<Hooked>,
    registries: Registries,
    deployments: Deployments,
    sync: SecretSync,
    registry: Registry,
}

fn principal() -> Principal {
    Principal::new("ci-bot", "acme", Roles::parse_list("writer,deployer").unwrap())
}

fn ghcr(token: &str) -> Credentials {
    Credentials::Ghcr {
        username: "myorg".into(),
        token: token.into(),
    }
}

fn request(container: &str) -> DeploymentRequest {
    DeploymentRequest {
        container_id: container.into(),
        environment: "production".into(),
        target: "k8s".into(),
        registry_id: String::new(),
        image_name: "ghcr.io/myorg/api".into(),
        image_tag: "v1".into(),
        swarm_service: String::new(),
    }
}

/// How long a prepare's lease lasts in these tests: a prepare that never
/// finishes is the sync loop's after this.
const PREPARE_LEASE: Duration = Duration::from_millis(300);

impl Rig {
    async fn start(store: SeaStore) -> Self {
        let sim = KubeSim::start().await;
        sim.create_namespace(NS);
        let store = Arc::new(Hooked {
            inner: store,
            fail_next_outcome: AtomicBool::new(false),
            hold_next_record: std::sync::Mutex::new(None),
            hold_next_rewrap: std::sync::Mutex::new(None),
        });
        let keys: Arc<KeyRing> = Arc::new(KeyRing::ephemeral().unwrap());
        let options = ClientOptions {
            request_timeout: Duration::from_secs(5),
            user_agent: "interleavings".into(),
        };
        let api: Arc<dyn PullSecretApi> = Arc::new(KubePullSecrets::new(
            clients(sim.config(), &options).unwrap(),
            ServiceAccounts::Leave,
        ));
        let organizations = Organizations::from_list(["acme"]).unwrap();
        let target = Target {
            kind: TargetKind::Kubernetes {
                namespaces: NamespaceTemplate::new("env-{environment}", &organizations).unwrap(),
                api,
            },
            organizations,
        };
        let targets = Targets::new([("k8s".to_owned(), target)]);
        let trigger = SyncTrigger::default();
        let registries = Registries::new(Arc::clone(&store) as Arc<dyn RegistryStore>, keys.clone());
        let replica = Arc::new(Replica::new("test"));
        let settings = DeploySettings {
            call_timeout: Duration::from_secs(5),
            prepare_lease: PREPARE_LEASE,
        };
        let deployments = Deployments::new(
            registries.clone(),
            Arc::clone(&store) as Arc<dyn DeployStore>,
            targets.clone(),
            trigger.clone(),
            Arc::new(StaticLogins),
        )
        .with_settings(Arc::clone(&replica), settings);
        let sync = SecretSync::new(
            Arc::clone(&store) as Arc<dyn DeployStore>,
            keys,
            targets,
            SyncSettings {
                call_timeout: Duration::from_secs(5),
                ..SyncSettings::default()
            },
            trigger,
            Arc::new(StaticLogins),
        )
        .with_replica(replica);
        let registry = registries
            .create(
                &principal(),
                NewRegistry {
                    name: "My GHCR".into(),
                    kind: Some(RegistryKind::Ghcr),
                    credentials: Some(ghcr(OLD)),
                    request_id: None,
                },
            )
            .await
            .unwrap();
        Self {
            sim,
            store,
            registries,
            deployments,
            sync,
            registry,
        }
    }

    fn request(&self, container: &str) -> DeploymentRequest {
        DeploymentRequest {
            registry_id: self.registry.id.to_string(),
            ..request(container)
        }
    }

    async fn prepare(&self, container: &str) -> Result<TargetDeployment, Error> {
        let prepared = self.deployments.prepare(&principal(), self.request(container)).await?;
        Ok(prepared.deployment)
    }

    async fn rotate(&self) {
        self.registries
            .update(
                &principal(),
                self.registry.id.as_str(),
                RegistryPatch {
                    name: None,
                    credentials: Some(ghcr(NEW)),
                },
                "",
            )
            .await
            .unwrap();
    }

    fn secret_name(&self) -> String {
        registry_core::usage::secret_name(RegistryKind::Ghcr, &self.registry.id)
    }

    /// The token in the namespace's pull Secret, if there is one.
    fn token_in_cluster(&self) -> Option<String> {
        let secret = self.sim.secret(NS, &self.secret_name())?;
        let bytes = &secret.data.unwrap()[".dockerconfigjson"].0;
        let config: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        Some(config["auths"]["ghcr.io"]["password"].as_str().unwrap().to_owned())
    }

    async fn row(&self) -> Option<PullSecretState> {
        let key = SecretKey {
            registry_id: self.registry.id.clone(),
            target: "k8s".into(),
            namespace: NS.into(),
        };
        self.store.pull_secret(&key).await.unwrap()
    }

    /// Runs the sync loop until nothing is due, and again until `done` holds
    /// (work leased by an unfinished prepare becomes due when the lease runs
    /// out), for at most 10 s.
    async fn converge(&self, done: impl Fn(Option<&PullSecretState>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.sync.run_once().await.unwrap();
            let row = self.row().await;
            if done(row.as_ref()) {
                return;
            }
            assert!(Instant::now() < deadline, "no convergence: {row:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn usages(&self) -> Vec<String> {
        self.store
            .usages("acme", None, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.container_id)
            .collect()
    }
}

fn synced_at(revision: i64) -> impl Fn(Option<&PullSecretState>) -> bool {
    move |row| row.is_some_and(|r| r.is_synced() && r.applied_revision == revision)
}

fn secret_writes() -> RequestMatch {
    RequestMatch::any().resource("secrets")
}

async fn a_rotation_during_the_first_deploy_into_a_namespace_is_not_lost(store: SeaStore) {
    let rig = Rig::start(store).await;
    // The first write of the Secret is held while a rotation commits.
    let hold = rig.sim.hold(secret_writes().verb(Verb::Create));
    let (prepared, ()) = tokio::join!(rig.prepare("api"), async {
        hold.arrived(1).await;
        rig.rotate().await;
        hold.release();
    });
    prepared.unwrap();
    // The prepare wrote revision 1; the row still wants 2 and is not synced.
    assert_eq!(rig.token_in_cluster().as_deref(), Some(OLD));
    let row = rig.row().await.unwrap();
    assert_eq!((row.desired_revision, row.applied_revision), (2, 1));
    assert_ne!(row.status, SyncStatus::Synced);
    rig.converge(synced_at(2)).await;
    assert_eq!(rig.token_in_cluster().as_deref(), Some(NEW));
}

async fn a_rotation_during_the_deploy_of_a_second_container_is_not_lost(store: SeaStore) {
    let rig = Rig::start(store).await;
    rig.prepare("api").await.unwrap();
    assert_eq!(rig.token_in_cluster().as_deref(), Some(OLD));
    // The second prepare loaded revision 1; its namespace check is held
    // while the rotation commits, before its intent is recorded.
    let hold = rig
        .sim
        .hold(RequestMatch::any().verb(Verb::Get).resource("namespaces").name(NS));
    let (prepared, ()) = tokio::join!(rig.prepare("worker"), async {
        hold.arrived(1).await;
        rig.rotate().await;
        hold.release();
    });
    prepared.unwrap();
    // Its intent saw revision 2 and it wrote 2 itself.
    let worker = rig.store.usage("acme", "worker").await.unwrap().unwrap();
    assert_eq!(worker.credential_revision, 2);
    rig.converge(synced_at(2)).await;
    assert_eq!(rig.token_in_cluster().as_deref(), Some(NEW));
}

/// A repeat deploy (its Secret synced at revision 1) reads the store and
/// then records only its audit event; a rotation committing in between
/// orders after the deploy, which answers revision 1, and still reaches the
/// namespace: the deploy lowered nothing.
async fn a_rotation_during_a_repeat_deploy_is_not_lost(store: SeaStore) {
    let rig = Rig::start(store).await;
    rig.prepare("api").await.unwrap();
    let version = rig.row().await.unwrap().written;
    let (arrived, release) = rig.store.hold_next_record();
    let caller = principal();
    let (prepared, ()) = tokio::join!(rig.deployments.prepare(&caller, rig.request("api")), async {
        arrived.await.unwrap();
        rig.rotate().await;
        release.send(()).unwrap();
    });
    assert_eq!(prepared.unwrap().credential_revision, 1);
    let row = rig.row().await.unwrap();
    assert_eq!(row.written, version, "the repeat deploy wrote nothing");
    assert_eq!(row.desired_revision, 2, "the rotation's desired revision stands");
    rig.converge(synced_at(2)).await;
    assert_eq!(rig.token_in_cluster().as_deref(), Some(NEW));
}

/// A delete racing a prepare ends one of two clean ways; this is the first.
async fn a_delete_landing_before_the_intent_makes_the_prepare_not_found(store: SeaStore) {
    let rig = Rig::start(store).await;
    // The delete lands before the intent: the prepare is NOT_FOUND and
    // writes nothing.
    let hold = rig
        .sim
        .hold(RequestMatch::any().verb(Verb::Get).resource("namespaces").name(NS));
    let (prepared, ()) = tokio::join!(rig.prepare("api"), async {
        hold.arrived(1).await;
        rig.registries
            .delete(&principal(), rig.registry.id.as_str(), "", false)
            .await
            .unwrap();
        hold.release();
    });
    assert!(matches!(prepared, Err(Error::NotFound { .. })), "{prepared:?}");
    assert!(rig.usages().await.is_empty());
    assert_eq!(rig.row().await, None);
    assert_eq!(rig.sim.stats().writes(), 0);
}

/// A delete racing a prepare ends one of two clean ways; this is the second.
async fn a_delete_landing_after_the_intent_is_refused_as_in_use(store: SeaStore) {
    let rig = Rig::start(store).await;
    // The delete lands after the intent: it is refused as in use, and the
    // prepare completes.
    let hold = rig.sim.hold(secret_writes().verb(Verb::Create));
    let (prepared, refused) = tokio::join!(rig.prepare("api"), async {
        hold.arrived(1).await;
        let refused = rig
            .registries
            .delete(&principal(), rig.registry.id.as_str(), "", false)
            .await;
        hold.release();
        refused
    });
    prepared.unwrap();
    assert!(
        matches!(&refused, Err(Error::InUse { containers, .. }) if containers == &["api".to_owned()]),
        "{refused:?}"
    );
    rig.converge(synced_at(1)).await;
    assert_eq!(rig.token_in_cluster().as_deref(), Some(OLD));
}

async fn a_forced_delete_during_a_prepare_is_not_undone(store: SeaStore) {
    let rig = Rig::start(store).await;
    let hold = rig.sim.hold(secret_writes().verb(Verb::Create));
    let (prepared, ()) = tokio::join!(rig.prepare("api"), async {
        hold.arrived(1).await;
        rig.registries
            .delete(&principal(), rig.registry.id.as_str(), "", true)
            .await
            .unwrap();
        hold.release();
    });
    // The write in flight landed; nothing the prepare recorded revives the
    // registry's usage, and the sync loop removes the Secret.
    prepared.unwrap();
    assert!(rig.usages().await.is_empty());
    rig.converge(|row| row.is_none()).await;
    assert_eq!(rig.token_in_cluster(), None);
    assert_eq!(rig.store.registry_by_id(&rig.registry.id).await.unwrap(), None);
}

async fn a_release_during_the_sync_loops_delete_never_leaves_a_synced_row_without_its_secret(store: SeaStore) {
    let rig = Rig::start(store).await;
    rig.prepare("api").await.unwrap();
    rig.deployments.release(&principal(), "api").await.unwrap();
    // The sync loop's delete is held; meanwhile another container deploys
    // into the namespace and wants the Secret again.
    let hold = rig.sim.hold(secret_writes().verb(Verb::Delete));
    let (report, prepared) = tokio::join!(rig.sync.run_once(), async {
        hold.arrived(1).await;
        let prepared = rig.prepare("worker").await;
        hold.release();
        prepared
    });
    report.unwrap();
    prepared.unwrap();
    // The held delete carried the version it read, which the deploy's write
    // replaced: refused, and not sent again (the Secret is a newer
    // generation now).
    let deletes: Vec<u16> = rig
        .sim
        .write_log()
        .iter()
        .filter(|w| w.verb == Verb::Delete)
        .map(|w| w.code)
        .collect();
    assert_eq!(deletes, [409]);
    rig.converge(synced_at(1)).await;
    // The database says synced, and the Secret is there, as the new
    // generation.
    let row = rig.row().await.unwrap();
    assert_eq!(row.generation, 2);
    assert_eq!(rig.token_in_cluster().as_deref(), Some(OLD));
    let secret = rig.sim.secret(NS, &rig.secret_name()).unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["registry.platform.io/generation"],
        "2"
    );
}

async fn a_database_failure_after_the_apply_leaves_the_secret_owned_and_audited(store: SeaStore) {
    let rig = Rig::start(store).await;
    rig.store.fail_next_outcome.store(true, Ordering::SeqCst);
    let failed = rig.prepare("api").await;
    assert!(matches!(failed, Err(Error::Store(_))), "{failed:?}");
    // Written, and on record: the usage, the Secret's row and the audit event.
    assert_eq!(rig.token_in_cluster().as_deref(), Some(OLD));
    assert_eq!(rig.usages().await, ["api"]);
    let audited = rig.store.audit_events("acme", 10).await.unwrap();
    assert!(
        audited.iter().any(|e| e.action == AuditAction::DeploymentPrepare),
        "{audited:?}"
    );
    // The sync loop completes it once the prepare's lease runs out...
    rig.converge(synced_at(1)).await;
    let row = rig.row().await.unwrap();
    let secret = rig.sim.secret(NS, &rig.secret_name()).unwrap();
    assert_eq!(
        row.written.unwrap().resource_version,
        secret.metadata.resource_version.unwrap()
    );
    // ...and removes it when the container goes.
    rig.deployments.release(&principal(), "api").await.unwrap();
    rig.converge(|row| row.is_none()).await;
    assert_eq!(rig.token_in_cluster(), None);
}

async fn a_cancelled_prepare_leaves_work_the_sync_loop_finishes(store: SeaStore) {
    let rig = Rig::start(store).await;
    // The client gives up (its deadline, a disconnect) while the write is
    // on its way: the request's future is dropped.
    let hold = rig.sim.hold(secret_writes().verb(Verb::Create));
    {
        let prepare = rig.prepare("api");
        tokio::pin!(prepare);
        tokio::select! {
            _ = &mut prepare => unreachable!("the write is held"),
            () = hold.arrived(1) => {}
        }
    }
    hold.release();
    assert_eq!(rig.usages().await, ["api"]);
    rig.converge(synced_at(1)).await;
    assert_eq!(rig.token_in_cluster().as_deref(), Some(OLD));
}

/// A rotation that commits between a rekey's read of a blob and its
/// compare-and-swap wins: the rekey reports the race and writes nothing,
/// and the registry holds the rotated credentials under the new primary.
async fn a_rotation_during_a_rekey_wins(store: SeaStore) {
    let (old_key, new_key) = (
        registry_crypto::generate_key().unwrap(),
        registry_crypto::generate_key().unwrap(),
    );
    let ring = |keys: &[&str]| Arc::new(KeyRing::from_env_value(&keys.join(",")).unwrap());
    let store = Arc::new(Hooked {
        inner: store,
        fail_next_outcome: AtomicBool::new(false),
        hold_next_record: std::sync::Mutex::new(None),
        hold_next_rewrap: std::sync::Mutex::new(None),
    });
    let before = Registries::new(Arc::clone(&store) as Arc<dyn RegistryStore>, ring(&[&old_key]));
    let admin = Principal::new("root", "acme", Roles::parse_list("admin").unwrap());
    let registry = before
        .create(
            &admin,
            NewRegistry {
                name: "Rekeyed".into(),
                kind: Some(RegistryKind::Ghcr),
                credentials: Some(ghcr(OLD)),
                request_id: None,
            },
        )
        .await
        .unwrap();
    let after = Registries::new(
        Arc::clone(&store) as Arc<dyn RegistryStore>,
        ring(&[&new_key, &old_key]),
    );

    let (arrived, release) = store.hold_next_rewrap();
    let rekeying = {
        let (after, admin) = (after.clone(), admin.clone());
        tokio::spawn(async move { after.rekey(&admin, 0).await })
    };
    arrived.await.unwrap();
    let patch = RegistryPatch {
        name: None,
        credentials: Some(ghcr(NEW)),
    };
    after.update(&admin, registry.id.as_str(), patch, "").await.unwrap();
    release.send(()).unwrap();
    let report = rekeying.await.unwrap().unwrap();
    assert_eq!(
        (report.rewrapped, report.raced, report.remaining),
        (0, 1, 0),
        "{report:?}"
    );

    let only_new = Registries::new(Arc::clone(&store) as Arc<dyn RegistryStore>, ring(&[&new_key]));
    let stored = store.inner.get("acme", &registry.id).await.unwrap().unwrap();
    assert_eq!(stored.registry.credential_revision, 2);
    let opened = only_new.open(&stored).unwrap();
    assert!(matches!(&*opened, Credentials::Ghcr { token, .. } if token.expose_secret() == NEW));
}
