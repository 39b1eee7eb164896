//! Repair of pull Secrets changed behind the service's back. The store says
//! which Secret each namespace should hold; the watched cluster says what it
//! holds. A Secret deleted or edited out of band (or lost with its
//! namespace) is marked pending again — recorded in the sync state and the
//! audit trail — and the sync loop writes it within seconds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome, SERVICE_ACTOR};
use crate::ports::orchestrators::{ClusterChange, Observation, ObservedSecret, PullSecretApi};
use crate::ports::store::{DeployStore, StoreError};
use crate::registry::Timestamp;
use crate::sync::SyncTrigger;
use crate::usage::PullSecretState;

/// Compares one Kubernetes target's watched Secrets with the store.
#[derive(Debug, Clone)]
pub struct DriftRepair {
    store: Arc<dyn DeployStore>,
    trigger: SyncTrigger,
}

/// What a Secret's row should do about what the cluster holds.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    /// The row knows no version yet and the cluster holds its revision.
    Adopt,
    Drifted(&'static str),
}

fn verdict(row: &PullSecretState, observation: &Observation) -> Verdict {
    match observation {
        Observation::Unknown => Verdict::Fine,
        Observation::Absent if row.applied_revision > 0 || row.written.is_some() => {
            Verdict::Drifted("the secret was deleted out of band; writing it again")
        }
        Observation::Absent => Verdict::Fine,
        Observation::Present(secret) if !secret.ours => {
            Verdict::Drifted("a secret this service does not manage took the name")
        }
        Observation::Present(secret) => match &row.written {
            Some(written) if *written == secret.version => Verdict::Fine,
            Some(_) => Verdict::Drifted("the secret was changed out of band; writing it again"),
            None if secret.revision == row.applied_revision => Verdict::Adopt,
            None => Verdict::Drifted("the secret does not hold the recorded revision; writing it again"),
        },
    }
}

impl DriftRepair {
    pub fn new(store: Arc<dyn DeployStore>, trigger: SyncTrigger) -> Self {
        Self { store, trigger }
    }

    /// Follows the target's watch until it ends (never, for a live watch).
    pub async fn run(self, target: String, api: Arc<dyn PullSecretApi>) {
        loop {
            let change = api.next_change().await;
            if let Err(error) = self.handle(&target, api.as_ref(), &change).await {
                tracing::warn!(target, ?change, %error, "checking pull secrets against the cluster failed");
            }
        }
    }

    /// Acts on one change; returns how many Secrets it marked for repair.
    pub async fn handle(
        &self,
        target: &str,
        api: &dyn PullSecretApi,
        change: &ClusterChange,
    ) -> Result<usize, StoreError> {
        let repaired = match change {
            ClusterChange::Resynced => self.reconcile(target, api).await?,
            ClusterChange::Secret { namespace, name } => {
                let rows = self.store.pull_secrets_on(target, Some(namespace)).await?;
                let mut repaired = 0;
                for row in rows.iter().filter(|r| &r.secret_name == name) {
                    repaired += usize::from(self.check(api, row, api.observe(namespace, name)).await?);
                }
                repaired
            }
            ClusterChange::NamespaceAdded(namespace) => {
                let due = self.store.namespace_returned(target, namespace).await?;
                if due > 0 {
                    self.trigger.wake();
                }
                0
            }
            // Its Secrets' deletions arrive as changes of their own.
            ClusterChange::NamespaceDeleted(_) => 0,
        };
        if repaired > 0 {
            self.trigger.wake();
        }
        Ok(repaired)
    }

    /// Compares every row of the target with a full snapshot.
    async fn reconcile(&self, target: &str, api: &dyn PullSecretApi) -> Result<usize, StoreError> {
        let Some(observed) = api.observed() else {
            return Ok(0);
        };
        let by_name: HashMap<(&str, &str), &ObservedSecret> = observed
            .iter()
            .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
            .collect();
        let rows = self.store.pull_secrets_on(target, None).await?;
        let mut repaired = 0;
        let mut failed_namespaces = BTreeSet::new();
        for row in &rows {
            let observation = match by_name.get(&(row.namespace.as_str(), row.secret_name.as_str())) {
                Some(secret) => Observation::Present((*secret).clone()),
                None => Observation::Absent,
            };
            repaired += usize::from(self.check(api, row, observation).await?);
            if row.status == crate::usage::SyncStatus::Failed {
                failed_namespaces.insert(row.namespace.as_str());
            }
        }
        // Namespaces that came back while the watch was away.
        for namespace in failed_namespaces {
            if api.namespace_exists(namespace).await.unwrap_or(false) {
                self.store.namespace_returned(target, namespace).await?;
            }
        }
        Ok(repaired)
    }

    /// Checks one row against an observation; a suspected drift is confirmed
    /// with a fresh read, so a cache that lags behind another replica's write
    /// repairs nothing.
    async fn check(
        &self,
        api: &dyn PullSecretApi,
        row: &PullSecretState,
        observation: Observation,
    ) -> Result<bool, StoreError> {
        if row.desired_revision == 0 || row.lease.as_ref().is_some_and(|l| l.until > Timestamp::now()) {
            // Being deleted, or someone is writing it and will record it.
            return Ok(false);
        }
        let observation = match verdict(row, &observation) {
            Verdict::Fine => return Ok(false),
            Verdict::Adopt | Verdict::Drifted(_) => match api.read(&row.namespace, &row.secret_name).await {
                Ok(fresh) => fresh,
                Err(error) => {
                    tracing::debug!(%error, namespace = row.namespace, "confirming a drift failed");
                    return Ok(false);
                }
            },
        };
        match verdict(row, &observation) {
            Verdict::Fine => Ok(false),
            Verdict::Adopt => {
                if let Observation::Present(secret) = &observation {
                    self.store.adopt_version(&row.key(), &secret.version).await?;
                }
                Ok(false)
            }
            Verdict::Drifted(reason) => {
                let audit = AuditEvent::by(
                    &row.organization,
                    SERVICE_ACTOR,
                    AuditAction::PullSecretRepair,
                    Some(&row.registry_id),
                    AuditOutcome::Ok,
                    format!(
                        "target={} namespace={} secret={}: {reason}",
                        row.target, row.namespace, row.secret_name
                    ),
                );
                let marked = self
                    .store
                    .mark_drifted(&row.key(), row.written.as_ref(), reason, &audit)
                    .await?;
                if marked {
                    tracing::info!(
                        registry_id = %row.registry_id, target = row.target, namespace = row.namespace,
                        reason, "pull secret drifted: repairing"
                    );
                }
                Ok(marked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::orchestrators::SecretVersion;
    use crate::registry::RegistryId;
    use crate::usage::SyncStatus;

    fn version(rv: &str) -> SecretVersion {
        SecretVersion {
            uid: "u1".into(),
            resource_version: rv.into(),
        }
    }

    fn row(written: Option<SecretVersion>) -> PullSecretState {
        PullSecretState {
            registry_id: RegistryId::parse("reg-abc").unwrap(),
            organization: "acme".into(),
            target: "k8s".into(),
            namespace: "env-production".into(),
            secret_name: "ghcr-creds-abc".into(),
            server: "ghcr.io".into(),
            desired_revision: 2,
            applied_revision: 2,
            generation: 1,
            status: SyncStatus::Synced,
            error: String::new(),
            attempts: 0,
            not_before: Timestamp(0),
            updated_at: Timestamp(0),
            refresh_at: None,
            written,
            lease: None,
        }
    }

    fn present(rv: &str, ours: bool, revision: i64) -> Observation {
        Observation::Present(ObservedSecret {
            namespace: "env-production".into(),
            name: "ghcr-creds-abc".into(),
            version: version(rv),
            ours,
            registry_id: Some("reg-abc".into()),
            revision,
            generation: 1,
        })
    }

    #[test]
    fn verdicts() {
        let written = row(Some(version("10")));
        assert_eq!(verdict(&written, &Observation::Unknown), Verdict::Fine);
        assert_eq!(verdict(&written, &present("10", true, 2)), Verdict::Fine);
        assert!(matches!(
            verdict(&written, &present("11", true, 2)),
            Verdict::Drifted(_)
        ));
        assert!(matches!(verdict(&written, &Observation::Absent), Verdict::Drifted(_)));
        assert!(matches!(
            verdict(&written, &present("10", false, 2)),
            Verdict::Drifted(_)
        ));
        let legacy = row(None);
        assert_eq!(verdict(&legacy, &present("7", true, 2)), Verdict::Adopt);
        assert!(matches!(verdict(&legacy, &present("7", true, 1)), Verdict::Drifted(_)));
        let mut never_written = row(None);
        never_written.applied_revision = 0;
        assert_eq!(verdict(&never_written, &Observation::Absent), Verdict::Fine);
    }
}
