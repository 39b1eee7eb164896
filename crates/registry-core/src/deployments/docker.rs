//! The Docker steps of a prepare. Swarm: the registry auth the service is
//! created or updated with. Compose: an authenticated pull on the host.

use super::{Deployments, Prepare, PreparedDeployment, TargetDeployment};
use crate::audit::AuditOutcome;
use crate::error::{Error, Result};
use crate::ports::orchestrators::{DockerEngine, EngineRole};
use crate::ports::store::UsageIntent;

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
