//! The Docker steps of a prepare. Swarm: the registry auth the service is
//! created or updated with. Compose: an authenticated pull on the host.

use super::{Deployments, Prepare, PreparedDeployment, TargetDeployment};
use crate::audit::AuditOutcome;
use crate::error::{Error, Result};
use crate::ports::orchestrators::{DockerEngine, EngineRole};
use crate::ports::store::{SecretIntent, SecretOutcome, UsageIntent};
use crate::registry::Timestamp;

impl Deployments {
    pub(super) async fn prepare_swarm(
        &self,
        prepare: &Prepare<'_>,
        engine: &dyn DockerEngine,
    ) -> Result<PreparedDeployment> {
        let target = prepare.request.target.as_str();
        self.call(engine.check(EngineRole::SwarmManager))
            .await
            .map_err(|e| Error::target(target, e))?;
        // A named service is tracked like a pull Secret (its name in the
        // namespace and secret name columns): one organization per service
        // name, and rotations reach it through the sync loop.
        let service = Some(prepare.request.swarm_service.clone()).filter(|s| !s.is_empty());
        let tracked = service
            .as_ref()
            .zip(prepare.login.as_ref())
            .map(|(name, login)| SecretIntent {
                secret_name: name.clone(),
                server: login.server.clone(),
            });
        let usage = prepare.usage(tracked.as_ref().map(|t| t.secret_name.clone()));
        let lease = self.replica.lease(self.settings.prepare_lease);
        let audit = prepare.audit(&usage);
        let intent = UsageIntent {
            usage: &usage,
            secret: tracked.as_ref(),
            lease: &lease,
            audit: &audit,
        };
        let recorded = self.record(prepare, &intent).await?;
        let login = self.login_at(prepare, recorded.revision).await?;
        if let (Some(row), Some(login), true) = (&recorded.secret, &login, recorded.leased) {
            // The deployer creates or updates the service with this login:
            // the service holds this revision from now on.
            let outcome = SecretOutcome::Applied {
                revision: recorded.revision,
                version: row.written.clone().unwrap_or_default(),
                refresh_at: login.refresh_at(Timestamp::now()),
                warning: String::new(),
            };
            self.store
                .record_outcome(&row.key(), &outcome, Some(lease.owner.as_str()))
                .await?;
        }
        let registry_auth = login.map(|l| l.registry_auth()).unwrap_or_default();
        Ok(prepare.prepared(recorded.revision, TargetDeployment::Swarm { registry_auth }))
    }

    pub(super) async fn prepare_compose(
        &self,
        prepare: &Prepare<'_>,
        engine: &dyn DockerEngine,
    ) -> Result<PreparedDeployment> {
        let target = prepare.request.target.as_str();
        let usage = prepare.usage(None);
        let lease = self.replica.lease(self.settings.prepare_lease);
        let audit = prepare.audit(&usage);
        let intent = UsageIntent {
            usage: &usage,
            secret: None,
            lease: &lease,
            audit: &audit,
        };
        let recorded = self.record(prepare, &intent).await?;
        let login = self.login_at(prepare, recorded.revision).await?;
        // A pull downloads layers: the engine's own pull deadline bounds it.
        match engine.pull(&prepare.image, login.as_ref()).await {
            Ok(image_digest) => Ok(prepare.prepared(recorded.revision, TargetDeployment::Compose { image_digest })),
            Err(error) => {
                // Nothing stays on the host to track: the usage is undone.
                let undone = audit.ended(AuditOutcome::Failed, error.to_string());
                self.store
                    .abandon_intent(&intent, recorded.earlier.as_ref(), &undone)
                    .await?;
                Err(Error::target(target, error))
            }
        }
    }
}
