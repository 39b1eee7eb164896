//! The Kubernetes step of a prepare: the environment's namespace, the
//! intent, then the pull Secret — unless the cluster already holds it.

use std::sync::Arc;

use super::{Deployments, Prepare, PreparedDeployment, TargetDeployment};
use crate::audit::AuditOutcome;
use crate::error::{Error, Result};
use crate::login::DockerLogin;
use crate::ports::orchestrators::{Observation, PullSecret, PullSecretApi, TargetError};
use crate::ports::store::{RecordedIntent, SecretIntent, SecretOutcome, UsageIntent};
use crate::registry::Timestamp;
use crate::sync::failure_outcome;
use crate::targets::NamespaceTemplate;
use crate::usage::{PullSecretState, secret_name};

impl Deployments {
    pub(super) async fn prepare_kubernetes(
        &self,
        prepare: &Prepare<'_>,
        namespaces: &NamespaceTemplate,
        api: &Arc<dyn PullSecretApi>,
    ) -> Result<PreparedDeployment> {
        let target = prepare.request.target.as_str();
        let namespace = namespaces
            .render(&prepare.request.environment, &prepare.principal.organization)
            .map_err(|reason| Error::invalid("environment", reason))?;
        let exists = self
            .call(api.namespace_exists(&namespace))
            .await
            .map_err(|e| Error::target(target, e))?;
        if !exists {
            return Err(Error::target(target, TargetError::NamespaceMissing(namespace)));
        }

        let usage = prepare.usage(Some(namespace.clone()));
        let secret = prepare
            .registry
            .as_ref()
            .zip(prepare.login.as_ref())
            .map(|(stored, login)| SecretIntent {
                secret_name: secret_name(stored.registry.kind, &stored.registry.id),
                server: login.server.clone(),
            });
        let lease = self.replica.lease(self.settings.prepare_lease);
        let audit = prepare.audit(&usage);
        let intent = UsageIntent {
            usage: &usage,
            secret: secret.as_ref(),
            lease: &lease,
            audit: &audit,
        };
        let recorded = match self.repeat(prepare, &intent).await? {
            Some(recorded) => recorded,
            None => self.record(prepare, &intent).await?,
        };
        // From here on the sync loop owns the Secret, whatever happens below.
        let Some(row) = recorded.secret.as_ref() else {
            return Ok(prepare.prepared(
                0,
                TargetDeployment::Kubernetes {
                    namespace,
                    image_pull_secrets: Vec::new(),
                },
            ));
        };
        let deployment = TargetDeployment::Kubernetes {
            namespace: namespace.clone(),
            image_pull_secrets: vec![row.secret_name.clone()],
        };
        if self.in_place(row, recorded.revision, api.as_ref()).await {
            return Ok(prepare.prepared(recorded.revision, deployment));
        }

        let owner = recorded.leased.then_some(lease.owner.as_str());
        let login = self
            .login_at(prepare, recorded.revision)
            .await?
            .ok_or_else(|| Error::Internal("a pull secret without a login".into()))?;
        let written = self.write(api.as_ref(), row, recorded.revision, &login).await;
        match written {
            Ok(applied) => {
                let outcome = SecretOutcome::Applied {
                    revision: applied.revision,
                    version: applied.version,
                    refresh_at: login.refresh_at(Timestamp::now()),
                    warning: String::new(),
                };
                self.store.record_outcome(&row.key(), &outcome, owner).await?;
                if applied.revision > recorded.revision {
                    // A newer rotation reached the namespace first.
                    self.sync.wake();
                }
                Ok(prepare.prepared(recorded.revision, deployment))
            }
            Err(error) if !error.is_transient() => {
                // The target refused: nothing of ours was written, undo.
                let undone = audit.ended(AuditOutcome::Failed, error.to_string());
                self.store
                    .abandon_intent(&intent, recorded.earlier.as_ref(), &undone)
                    .await?;
                self.sync.wake();
                Err(Error::target(target, error))
            }
            Err(error) => {
                // Perhaps written, perhaps not: the intent stays and the sync
                // loop finishes it.
                if owner.is_some() {
                    let outcome = failure_outcome(&error, row.attempts);
                    self.store.record_outcome(&row.key(), &outcome, owner).await?;
                }
                self.sync.wake();
                Err(Error::target(target, error))
            }
        }
    }

    /// A repeat deploy — the same usage again, its pull Secret synced at the
    /// registry's current revision — changes nothing the store holds: only
    /// its audit event is recorded (with the others of its group commit),
    /// no write transaction. `None`: anything differs, record the intent.
    ///
    /// The reads are not one snapshot with the answer; a rotation or a
    /// release committing meanwhile simply orders after this deploy, whose
    /// Secret the sync loop then rotates or removes as for any other.
    async fn repeat(&self, prepare: &Prepare<'_>, intent: &UsageIntent<'_>) -> Result<Option<RecordedIntent>> {
        let usage = intent.usage;
        let (Some(stored), Some(key)) = (&prepare.registry, usage.secret_key()) else {
            return Ok(None);
        };
        let revision = stored.registry.credential_revision;
        let Some(earlier) = self.store.usage(&usage.organization, &usage.container_id).await? else {
            return Ok(None);
        };
        let same = earlier.registry_id == usage.registry_id
            && earlier.environment == usage.environment
            && earlier.target == usage.target
            && earlier.namespace == usage.namespace
            && earlier.image == usage.image
            && earlier.credential_revision == revision;
        if !same {
            return Ok(None);
        }
        let Some(row) = self.store.pull_secret(&key).await? else {
            return Ok(None);
        };
        if !row.is_synced() || row.applied_revision != revision || row.refresh_due(Timestamp::now()) {
            return Ok(None);
        }
        self.registries.store().record(intent.audit).await?;
        Ok(Some(RecordedIntent {
            revision,
            earlier: Some(earlier),
            secret: Some(row),
            leased: false,
        }))
    }

    async fn write(
        &self,
        api: &dyn PullSecretApi,
        row: &PullSecretState,
        revision: i64,
        login: &DockerLogin,
    ) -> Result<crate::ports::orchestrators::Applied, TargetError> {
        let config = login.docker_config_json();
        self.call(api.apply(PullSecret {
            namespace: &row.namespace,
            name: &row.secret_name,
            registry_id: &row.registry_id,
            organization: &row.organization,
            revision,
            generation: row.generation,
            docker_config_json: &config,
        }))
        .await
    }
}

/// Whether an observation shows the row's Secret at `revision`.
fn holds(row: &PullSecretState, revision: i64, observation: &Observation) -> bool {
    match observation {
        Observation::Present(secret) => {
            secret.ours
                && secret.revision == revision
                && row.written.as_ref().is_none_or(|written| *written == secret.version)
        }
        Observation::Absent | Observation::Unknown => false,
    }
}

impl Deployments {
    /// Whether the namespace already holds the Secret at `revision`: the
    /// store says so and the watched cluster agrees (without a watch, the
    /// store alone). A cache that disagrees may only lag behind a write that
    /// just happened: one read settles it.
    async fn in_place(&self, row: &PullSecretState, revision: i64, api: &dyn PullSecretApi) -> bool {
        if !row.is_synced() || row.applied_revision != revision || row.refresh_due(Timestamp::now()) {
            return false;
        }
        match api.observe(&row.namespace, &row.secret_name) {
            Observation::Unknown => true,
            observation if holds(row, revision, &observation) => true,
            _ => match self.call(api.read(&row.namespace, &row.secret_name)).await {
                Ok(fresh) => holds(row, revision, &fresh),
                Err(_) => false,
            },
        }
    }
}
