//! The pull Secret sync loop. Rotation and deletion only change the desired
//! state in the store (in the same transaction as the registry); this loop
//! brings every Kubernetes pull Secret to it — bounded concurrency, an
//! optional QPS cap, `Retry-After` honoured — and records the outcome of each
//! Secret, so a crash or restart resumes where it stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::credentials::Credentials;
use crate::deploy::{DeployStore, PullSecret, PullSecretState, SyncStatus, Target, TargetError, Targets};
use crate::login::LoginProvider;
use crate::ports::StoreError;
use crate::registry::{Registry, RegistryId, Timestamp};
use crate::sealer::{SealContext, Sealer};

/// Wakes the sync loop after a write that changed desired state.
#[derive(Debug, Clone, Default)]
pub struct SyncTrigger(Arc<Notify>);

impl SyncTrigger {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// How hard the loop may push the orchestrators.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSettings {
    /// Secrets written at once.
    pub concurrency: usize,
    /// Writes per second over all targets; `None`: no cap.
    pub qps: Option<f64>,
    /// 429 answers retried in place (after their `Retry-After`) before the
    /// Secret is left pending for a later pass.
    pub throttle_retries: u32,
    /// Rows claimed per pass.
    pub batch: u64,
    /// A pass also runs this often without being woken (retries, back-off).
    pub interval: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            qps: None,
            throttle_retries: 5,
            batch: 500,
            interval: Duration::from_secs(10),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub synced: usize,
    pub deleted: usize,
    pub failed: usize,
    pub pending: usize,
}

/// Spaces writes `1 / qps` apart.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn new(qps: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / qps),
            next: Mutex::new(Instant::now()),
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
}

fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 8)).unwrap_or(8);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(300))
}

fn later(delay: Duration) -> Timestamp {
    let micros = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
    Timestamp(Timestamp::now().0.saturating_add(micros))
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
        }
    }

    pub fn trigger(&self) -> SyncTrigger {
        self.trigger.clone()
    }

    /// Runs passes until `shutdown` resolves: at start (resuming whatever a
    /// crash left), when woken, and every `interval`.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.run_once().await {
                Ok(report) if report != SyncReport::default() => {
                    tracing::info!(?report, "pull secret sync pass");
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "pull secret sync pass failed"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.trigger.woken() => {}
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// Brings every due pull Secret to its desired state, batch by batch.
    pub async fn run_once(&self) -> Result<SyncReport, StoreError> {
        let mut report = SyncReport::default();
        loop {
            let due = self
                .store
                .due_pull_secrets(Timestamp::now(), self.settings.batch)
                .await?;
            if due.is_empty() {
                return Ok(report);
            }
            let claimed = due.len();
            let credentials = self.load_credentials(&due).await?;
            let outcomes: Vec<PullSecretState> = futures::stream::iter(due)
                .map(|row| self.sync_one(row, &credentials))
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            let mut progressed = false;
            for outcome in &outcomes {
                match outcome.status {
                    SyncStatus::Synced if outcome.desired_revision == 0 => report.deleted += 1,
                    SyncStatus::Synced => report.synced += 1,
                    SyncStatus::Failed => report.failed += 1,
                    SyncStatus::Pending => report.pending += 1,
                }
                progressed |= outcome.status == SyncStatus::Synced;
            }
            self.store.record_sync(&outcomes).await?;
            // Rows that failed or wait are not due again before their
            // not_before: stop once a batch made no progress.
            if !progressed || claimed < usize::try_from(self.settings.batch).unwrap_or(usize::MAX) {
                return Ok(report);
            }
        }
    }

    /// The current credentials of every registry the rows belong to, opened
    /// once per pass (`None`: the registry no longer exists).
    async fn load_credentials(&self, rows: &[PullSecretState]) -> Result<CredentialCache, StoreError> {
        let mut cache = CredentialCache::new();
        for row in rows {
            if row.desired_revision == 0 || cache.contains_key(&row.registry_id) {
                continue;
            }
            let loaded = match self.store.registry_by_id(&row.registry_id).await? {
                None => None,
                Some(stored) => {
                    let registry = &stored.registry;
                    let context = SealContext {
                        registry_id: registry.id.as_str(),
                        kind: registry.kind,
                    };
                    let opened = self
                        .sealer
                        .open(context, &stored.sealed_credentials)
                        .map_err(|e| format!("credentials of registry {} cannot be opened: {e}", registry.id))
                        .and_then(|plaintext| {
                            Credentials::from_plaintext(&plaintext)
                                .map_err(|_| format!("credentials of registry {} are corrupt", registry.id))
                        });
                    Some((stored.registry, opened))
                }
            };
            cache.insert(row.registry_id.clone(), loaded);
        }
        Ok(cache)
    }

    async fn sync_one(&self, mut row: PullSecretState, credentials: &CredentialCache) -> PullSecretState {
        let result = self.converge(&mut row, credentials).await;
        row.updated_at = Timestamp::now();
        match result {
            Ok(refresh_at) => {
                row.refresh_at = refresh_at;
                row.applied_revision = row.desired_revision;
                row.status = SyncStatus::Synced;
                row.error.clear();
                row.attempts = 0;
            }
            Err(TargetError::Throttled { retry_after }) => {
                row.status = SyncStatus::Pending;
                row.error = "throttled by the orchestrator".into();
                row.not_before = later(retry_after);
            }
            Err(error) => {
                tracing::warn!(
                    registry_id = %row.registry_id, target = row.target, namespace = row.namespace, %error,
                    "pull secret sync failed"
                );
                row.status = SyncStatus::Failed;
                row.error = error.to_string();
                row.attempts = row.attempts.saturating_add(1);
                row.not_before = later(backoff(row.attempts));
            }
        }
        row
    }

    /// Writes (or deletes) one Secret, retrying 429s after their Retry-After.
    /// Returns when the written Secret is to be refreshed (expiring logins).
    async fn converge(
        &self,
        row: &mut PullSecretState,
        credentials: &CredentialCache,
    ) -> Result<Option<Timestamp>, TargetError> {
        let api = match self.targets.get(&row.target) {
            Some(Target::Kubernetes { api, .. }) => Arc::clone(api),
            Some(_) | None => {
                return Err(TargetError::Other(format!(
                    "{:?} is not a configured kubernetes target",
                    row.target
                )));
            }
        };
        let mut refresh_at = None;
        let config = if row.desired_revision == 0 {
            None
        } else {
            match self.docker_config(row, credentials).await? {
                Some((config, refresh)) => {
                    refresh_at = refresh;
                    Some(config)
                }
                // The registry is gone: its Secret goes too.
                None => {
                    row.desired_revision = 0;
                    None
                }
            }
        };
        let mut throttled = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.acquire().await;
            }
            let result = match &config {
                Some(config) => {
                    api.apply(PullSecret {
                        namespace: &row.namespace,
                        name: &row.secret_name,
                        registry_id: &row.registry_id,
                        revision: row.desired_revision,
                        docker_config_json: config,
                    })
                    .await
                }
                None => api.delete(&row.namespace, &row.secret_name, &row.registry_id).await,
            };
            match result {
                Err(TargetError::Throttled { retry_after }) if throttled < self.settings.throttle_retries => {
                    throttled += 1;
                    tokio::time::sleep(retry_after).await;
                }
                other => return other.map(|()| refresh_at),
            }
        }
    }

    /// The `.dockerconfigjson` of the row's registry at its current revision
    /// and when it is to be refreshed, or `None` when the registry no longer
    /// exists.
    async fn docker_config(
        &self,
        row: &mut PullSecretState,
        credentials: &CredentialCache,
    ) -> Result<Option<(zeroize::Zeroizing<Vec<u8>>, Option<Timestamp>)>, TargetError> {
        let Some(Some((registry, opened))) = credentials.get(&row.registry_id) else {
            return Ok(None);
        };
        // A rotation that happened since the row was read wins.
        row.desired_revision = row.desired_revision.max(registry.credential_revision);
        let credentials = opened.as_ref().map_err(|e| TargetError::Other(e.clone()))?;
        let login = self
            .logins
            .login(registry, credentials, &row.server)
            .await
            .map_err(|e| TargetError::Other(e.to_string()))?;
        Ok(Some((login.docker_config_json(), login.refresh_at(Timestamp::now()))))
    }
}

/// Each registry (at its current revision) and its opened credentials, or
/// `None` when it no longer exists.
type CredentialCache = HashMap<RegistryId, Option<(Registry, Result<Credentials, String>)>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(256));
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
