//! The pull Secret sync loop. Rotations, releases and deletions only change
//! desired state in the store (in the same transaction as what caused them);
//! this loop brings every Kubernetes pull Secret to it.
//!
//! Work is claimed per Secret with a lease (at most one writer per Secret,
//! across replicas; a dead writer's lease runs out and another replica takes
//! over), every orchestrator request has a deadline, a `Retry-After` becomes
//! the Secret's next attempt time (capped) instead of a sleep, and each
//! outcome is recorded as it completes — so one slow or hanging namespace or
//! target never holds back the others, and a crash resumes where it stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome, SERVICE_ACTOR};
use crate::credentials::Credentials;
use crate::drift::DriftRepair;
use crate::login::DockerLogin;
use crate::ports::login::{LoginProvider, LoginUse};
use crate::ports::orchestrators::{Deleted, DockerEngine, PullSecret, PullSecretApi, TargetError};
use crate::ports::sealer::{SealContext, Sealer};
use crate::ports::store::{DeployStore, SecretOutcome, StoreError, SyncResult};
use crate::registry::{Registry, RegistryId, Timestamp};
use crate::targets::{TargetKind, Targets};
use crate::usage::{PullSecretState, Replica};

/// The longest `Retry-After` honoured: a target asking for more is tried
/// again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Wakes the sync loop after a write that changed desired state.
#[derive(Debug, Clone, Default)]
pub struct SyncTrigger(Arc<Notify>);

impl SyncTrigger {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.0.notified().await;
    }
}

/// How hard the loop may push the orchestrators, and how long it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSettings {
    /// Secrets written at once (per replica).
    pub concurrency: usize,
    /// Writes per second over all targets; `None`: no cap.
    pub qps: Option<f64>,
    /// The loop also looks for due work this often without being woken.
    pub interval: Duration,
    /// The deadline of one orchestrator request.
    pub call_timeout: Duration,
    /// How long a claimed Secret stays this replica's: longer than the
    /// work on one Secret can take.
    pub lease: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            qps: None,
            interval: Duration::from_secs(10),
            call_timeout: Duration::from_secs(15),
            lease: Duration::from_secs(120),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Secrets written (or found holding a newer revision).
    pub applied: usize,
    pub deleted: usize,
    pub failed: usize,
    /// Attempts put off (throttling, conflicts).
    pub retried: usize,
}

impl SyncReport {
    fn count(&mut self, outcome: &SecretOutcome) {
        match outcome {
            SecretOutcome::Applied { .. } => self.applied += 1,
            SecretOutcome::Deleted => self.deleted += 1,
            SecretOutcome::Failed { .. } | SecretOutcome::RegistryGone => self.failed += 1,
            SecretOutcome::Retry { .. } => self.retried += 1,
        }
    }
}

/// Spaces writes `1 / qps` apart.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    fn new(qps: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / qps),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Exponential back-off after `attempts` failures: 1 s, 2 s, ... 5 min.
pub(crate) fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 8)).unwrap_or(8);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(300))
}

/// The outcome of a failed attempt at a Secret that failed `attempts`
/// times before: throttling and conflicts wait (a `Retry-After` capped at
/// [`MAX_RETRY_AFTER`]), the rest backs off.
pub(crate) fn failure_outcome(error: &TargetError, attempts: i32) -> SecretOutcome {
    let now = Timestamp::now();
    match error {
        TargetError::Throttled { retry_after } => {
            let wait = (*retry_after).min(MAX_RETRY_AFTER);
            SecretOutcome::Retry {
                not_before: now.after(wait),
                error: format!(
                    "throttled by the orchestrator (Retry-After {} s, waiting {} s)",
                    retry_after.as_secs(),
                    wait.as_secs()
                ),
            }
        }
        TargetError::Conflict(_) => SecretOutcome::Retry {
            not_before: now,
            error: error.to_string(),
        },
        _ => SecretOutcome::Failed {
            error: error.to_string(),
            not_before: now.after(backoff(attempts.saturating_add(1))),
        },
    }
}

/// The sync state's note for a login that is a cached token whose refresh
/// failed; empty otherwise.
fn stale_warning(login: &DockerLogin) -> String {
    login.refresh_failed.as_ref().map_or_else(String::new, |error| {
        let until = login.expires_at.map_or(0, Timestamp::seconds);
        format!("the token refresh failed, the cached token (valid until {until}, unix seconds) was written: {error}")
    })
}

/// What a claim returns: the rows, their lease's owner, and how many were
/// asked for.
type Claimed = Result<(Vec<PullSecretState>, String, usize), StoreError>;

/// A registry at its current revision with its opened credentials.
type Opened = Arc<(Registry, Result<Credentials, String>)>;

/// The sync loop over the store and the configured targets.
#[derive(Debug, Clone)]
pub struct SecretSync {
    store: Arc<dyn DeployStore>,
    sealer: Arc<dyn Sealer>,
    targets: Targets,
    settings: SyncSettings,
    trigger: SyncTrigger,
    limiter: Option<Arc<RateLimiter>>,
    logins: Arc<dyn LoginProvider>,
    replica: Arc<Replica>,
    /// Credentials opened during a pass, by registry.
    opened: Arc<Mutex<HashMap<RegistryId, Opened>>>,
}

impl SecretSync {
    pub fn new(
        store: Arc<dyn DeployStore>,
        sealer: Arc<dyn Sealer>,
        targets: Targets,
        settings: SyncSettings,
        trigger: SyncTrigger,
        logins: Arc<dyn LoginProvider>,
    ) -> Self {
        let limiter = settings
            .qps
            .filter(|qps| *qps > 0.0)
            .map(|qps| Arc::new(RateLimiter::new(qps)));
        Self {
            store,
            sealer,
            targets,
            settings,
            trigger,
            limiter,
            logins,
            replica: Arc::new(Replica::random()),
            opened: Arc::default(),
        }
    }

    /// The same loop as `replica` (which names its leases).
    pub fn with_replica(mut self, replica: Arc<Replica>) -> Self {
        self.replica = replica;
        self
    }

    pub fn trigger(&self) -> SyncTrigger {
        self.trigger.clone()
    }

    /// Runs until `shutdown` resolves: passes at start (resuming whatever a
    /// crash left), when woken and every `interval`; and, per Kubernetes
    /// target, the repair of Secrets changed out of band.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let repairs = self.targets.kubernetes().map(|(name, api)| {
            DriftRepair::new(Arc::clone(&self.store), self.trigger.clone()).run(name.to_owned(), Arc::clone(api))
        });
        let repairs = futures::future::join_all(repairs);
        // Without Kubernetes targets there is nothing to repair, and an
        // empty join would end the loop at once (Swarm services still sync).
        let repairs = async {
            repairs.await;
            std::future::pending::<()>().await;
        };
        let passes = async {
            loop {
                match self.pass().await {
                    Ok(report) if report != SyncReport::default() => {
                        tracing::info!(?report, "pull secret sync pass");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "pull secret sync pass failed"),
                }
                tokio::select! {
                    () = self.trigger.woken() => {}
                    () = tokio::time::sleep(self.settings.interval) => {}
                }
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = repairs => {}
            () = passes => {}
        }
        // What this replica was writing is another's (or its successor's)
        // to finish, now rather than when the leases run out.
        match self.store.release_leases(self.replica.id()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released the leases of pull secrets in flight"),
            Err(error) => tracing::warn!(%error, "releasing leases at shutdown failed; they run out instead"),
        }
    }

    /// Brings every due pull Secret to its desired state and returns when
    /// none is due (for tests and benchmarks; [`SecretSync::run`] loops).
    pub async fn run_once(&self) -> Result<SyncReport, StoreError> {
        self.pass().await
    }

    /// Claims due Secrets ahead of the workers, converges each, records
    /// outcomes as they complete — those that complete while a commit is on
    /// its way share the next one — and returns when nothing is due,
    /// running or unrecorded. Claims and commits run on tasks of their own,
    /// so a worker never waits for the database to start its next Secret.
    async fn pass(&self) -> Result<SyncReport, StoreError> {
        let concurrency = self.settings.concurrency.max(1);
        // Claimed rows waiting for a worker: enough that workers never wait
        // for a claim, few enough that replicas share the work.
        let buffer = concurrency * 2;
        let mut report = SyncReport::default();
        let mut claimed: VecDeque<(PullSecretState, String)> = VecDeque::new();
        let mut running = FuturesUnordered::new();
        let mut unrecorded: Vec<SyncResult> = Vec::new();
        let mut claiming: Option<JoinHandle<Claimed>> = None;
        let mut committing: Option<JoinHandle<Result<usize, StoreError>>> = None;
        let mut exhausted = false;
        let mut failure = None;
        loop {
            while running.len() < concurrency
                && let Some((row, owner)) = claimed.pop_front()
            {
                running.push(self.converge_claimed(row, owner));
            }
            if claiming.is_none() && !exhausted && failure.is_none() && claimed.len() + running.len() <= concurrency {
                let limit = buffer - claimed.len() - running.len();
                claiming = Some(self.claim(limit));
            }
            if committing.is_none() && !unrecorded.is_empty() {
                let batch = std::mem::take(&mut unrecorded);
                let store = Arc::clone(&self.store);
                committing = Some(tokio::spawn(async move { store.record_outcomes(&batch).await }));
            }
            if running.is_empty() && claimed.is_empty() && claiming.is_none() && committing.is_none() {
                if exhausted || failure.is_some() {
                    break;
                }
                continue;
            }
            tokio::select! {
                Some(done) = running.next() => {
                    report.count(&done.outcome);
                    unrecorded.push(done);
                }
                result = async { claiming.as_mut()?.await.ok() }, if claiming.is_some() => {
                    claiming = None;
                    match result {
                        Some(Ok((rows, owner, limit))) => {
                            exhausted = rows.len() < limit;
                            claimed.extend(rows.into_iter().map(|row| (row, owner.clone())));
                        }
                        Some(Err(error)) => {
                            // What is claimed still runs and is recorded.
                            tracing::error!(%error, "claiming pull secrets failed");
                            failure = Some(error);
                        }
                        None => exhausted = true,
                    }
                }
                recorded = async { committing.as_mut()?.await.ok() }, if committing.is_some() => {
                    committing = None;
                    if let Some(Err(error)) = recorded {
                        // The leases run out and the Secrets are tried again.
                        tracing::error!(%error, "recording sync outcomes failed");
                    }
                    // Recorded outcomes can make rows due again.
                    exhausted = false;
                }
                () = self.trigger.woken() => exhausted = false,
                () = tokio::time::sleep(self.settings.interval) => exhausted = false,
            }
        }
        self.opened.lock().unwrap_or_else(PoisonError::into_inner).clear();
        match failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Claims up to `limit` due Secrets under a new lease, on a task.
    fn claim(&self, limit: usize) -> JoinHandle<Claimed> {
        let store = Arc::clone(&self.store);
        let lease = self.replica.lease(self.settings.lease);
        tokio::spawn(async move {
            let rows = store
                .claim_due(Timestamp::now(), &lease, u64::try_from(limit).unwrap_or(u64::MAX))
                .await?;
            Ok((rows, lease.owner, limit))
        })
    }

    async fn converge_claimed(&self, row: PullSecretState, owner: String) -> SyncResult {
        let outcome = self.converge(&row).await;
        if let SecretOutcome::Failed { error, .. } = &outcome {
            tracing::warn!(
                registry_id = %row.registry_id, target = row.target, namespace = row.namespace, error,
                "pull secret sync failed"
            );
        }
        let written = match &outcome {
            SecretOutcome::Applied { revision, .. } => {
                Some((AuditAction::PullSecretWrite, format!("revision={revision}")))
            }
            SecretOutcome::Deleted => Some((AuditAction::PullSecretDelete, String::new())),
            _ => None,
        };
        let audit = written.map(|(action, what)| {
            AuditEvent::by(
                &row.organization,
                SERVICE_ACTOR,
                action,
                Some(&row.registry_id),
                AuditOutcome::Ok,
                format!(
                    "target={} namespace={} secret={} {what}",
                    row.target, row.namespace, row.secret_name
                )
                .trim_end()
                .to_owned(),
            )
        });
        SyncResult {
            key: row.key(),
            outcome,
            lease_owner: owner,
            audit,
        }
    }

    /// Writes (or deletes) one Secret; on a Swarm target, refreshes one
    /// service's login.
    async fn converge(&self, row: &PullSecretState) -> SecretOutcome {
        if let Some(TargetKind::Swarm(engine)) = self.targets.get(&row.target).map(|t| &t.kind) {
            return self.converge_service(engine.as_ref(), row).await;
        }
        let Some(api) = self.targets.get(&row.target).and_then(|t| t.pull_secrets()) else {
            return SecretOutcome::Failed {
                error: format!("{:?} is not a configured kubernetes target", row.target),
                not_before: Timestamp::now().after(backoff(row.attempts.saturating_add(1))),
            };
        };
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        if row.desired_revision == 0 {
            return match self
                .call(api.delete(&row.namespace, &row.secret_name, &row.registry_id, row.generation))
                .await
            {
                Ok(Deleted::Removed | Deleted::AlreadyGone | Deleted::NotOurs) => SecretOutcome::Deleted,
                // Wanted again, and written again, while this deletion was
                // on its way: the row says which revision it wants now.
                Ok(Deleted::Revived) => SecretOutcome::Retry {
                    not_before: Timestamp::now(),
                    error: String::new(),
                },
                Err(error) => failure_outcome(&error, row.attempts),
            };
        }
        let opened = match self.opened(&row.registry_id, row.desired_revision).await {
            Ok(Some(opened)) => opened,
            Ok(None) => return SecretOutcome::RegistryGone,
            Err(error) => {
                return SecretOutcome::Failed {
                    error: format!("reading registry {}: {error}", row.registry_id),
                    not_before: Timestamp::now().after(backoff(row.attempts.saturating_add(1))),
                };
            }
        };
        self.apply(api.as_ref(), row, &opened).await
    }

    /// A Swarm service named at deploy time gets the registry's current
    /// login, its spec unchanged. A released one is left as it is: the
    /// service is the deployer's to remove.
    async fn converge_service(&self, engine: &dyn DockerEngine, row: &PullSecretState) -> SecretOutcome {
        if row.desired_revision == 0 {
            return SecretOutcome::Deleted;
        }
        let failed = |error: String| SecretOutcome::Failed {
            error,
            not_before: Timestamp::now().after(backoff(row.attempts.saturating_add(1))),
        };
        let opened = match self.opened(&row.registry_id, row.desired_revision).await {
            Ok(Some(opened)) => opened,
            Ok(None) => return SecretOutcome::RegistryGone,
            Err(error) => return failed(format!("reading registry {}: {error}", row.registry_id)),
        };
        let (registry, credentials) = &*opened;
        let credentials = match credentials {
            Ok(credentials) => credentials,
            Err(error) => return failed(error.clone()),
        };
        let login = match self
            .logins
            .login(registry, credentials, &row.server, LoginUse::Engine)
            .await
        {
            Ok(login) => login,
            Err(error) => return failed(error.to_string()),
        };
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        match self.call(engine.refresh_service_login(&row.secret_name, &login)).await {
            Ok(version) => SecretOutcome::Applied {
                revision: registry.credential_revision,
                version,
                refresh_at: login.refresh_at(Timestamp::now()),
                warning: stale_warning(&login),
            },
            Err(error) => failure_outcome(&error, row.attempts),
        }
    }

    async fn apply(&self, api: &dyn PullSecretApi, row: &PullSecretState, opened: &Opened) -> SecretOutcome {
        let (registry, credentials) = &**opened;
        let failed = |error: String| SecretOutcome::Failed {
            error,
            not_before: Timestamp::now().after(backoff(row.attempts.saturating_add(1))),
        };
        let credentials = match credentials {
            Ok(credentials) => credentials,
            Err(error) => return failed(error.clone()),
        };
        let login = match self
            .logins
            .login(registry, credentials, &row.server, LoginUse::PullSecret)
            .await
        {
            Ok(login) => login,
            Err(error) => return failed(error.to_string()),
        };
        let config = login.docker_config_json();
        let applied = self
            .call(api.apply(PullSecret {
                namespace: &row.namespace,
                name: &row.secret_name,
                registry_id: &row.registry_id,
                organization: &row.organization,
                revision: registry.credential_revision,
                generation: row.generation,
                docker_config_json: &config,
            }))
            .await;
        match applied {
            Ok(applied) => SecretOutcome::Applied {
                revision: applied.revision,
                version: applied.version,
                refresh_at: login.refresh_at(Timestamp::now()),
                warning: stale_warning(&login),
            },
            Err(error) => failure_outcome(&error, row.attempts),
        }
    }

    /// The registry (at a revision no older than `revision`) and its opened
    /// credentials, read once per pass; `None` when it no longer exists.
    async fn opened(&self, id: &RegistryId, revision: i64) -> Result<Option<Opened>, StoreError> {
        let cached = self
            .opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .filter(|o| o.0.credential_revision >= revision)
            .cloned();
        if let Some(opened) = cached {
            return Ok(Some(opened));
        }
        let Some(stored) = self.store.registry_by_id(id).await? else {
            return Ok(None);
        };
        let registry = &stored.registry;
        let context = SealContext {
            registry_id: registry.id.as_str(),
            kind: registry.kind,
        };
        let credentials = self
            .sealer
            .open(context, &stored.sealed_credentials)
            .map_err(|e| format!("credentials of registry {} cannot be opened: {e}", registry.id))
            .and_then(|plaintext| {
                Credentials::from_plaintext(&plaintext)
                    .map_err(|_| format!("credentials of registry {} are corrupt", registry.id))
            });
        let opened: Opened = Arc::new((stored.registry, credentials));
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Arc::clone(&opened));
        Ok(Some(opened))
    }

    async fn call<T>(&self, request: impl Future<Output = Result<T, TargetError>>) -> Result<T, TargetError> {
        tokio::time::timeout(self.settings.call_timeout, request)
            .await
            .unwrap_or(Err(TargetError::Timeout(self.settings.call_timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(256));
    }

    #[test]
    fn a_day_of_retry_after_waits_five_minutes() {
        let day = TargetError::Throttled {
            retry_after: Duration::from_secs(86_400),
        };
        let before = Timestamp::now();
        let SecretOutcome::Retry { not_before, error } = failure_outcome(&day, 0) else {
            panic!("a throttled attempt is retried");
        };
        let waited = Duration::from_micros(u64::try_from(not_before.0 - before.0).unwrap_or(0));
        assert!(waited >= MAX_RETRY_AFTER && waited < MAX_RETRY_AFTER + Duration::from_secs(5));
        assert!(error.contains("86400") && error.contains("300"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_acquisitions() {
        let limiter = RateLimiter::new(100.0);
        let start = Instant::now();
        for _ in 0..50 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(490) && elapsed <= Duration::from_millis(510),
            "{elapsed:?}"
        );
    }
}
