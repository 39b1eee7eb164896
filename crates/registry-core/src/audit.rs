//! The audit trail's vocabulary: who did what to which registry, and how it
//! ended. Every create, update, delete, test and credential hand-out is one
//! event, written in the same transaction as what it records.

use std::fmt;

use crate::principal::Principal;
use crate::registry::{RegistryId, Timestamp};

/// The actor of events the service causes itself (drift repair).
pub const SERVICE_ACTOR: &str = "registry-credential-service";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    RegistryCreate,
    RegistryUpdate,
    RegistryDelete,
    RegistryTest,
    /// Credentials handed to an orchestrator target for a container.
    DeploymentPrepare,
    DeploymentRelease,
    /// Credentials handed to the caller itself.
    CredentialsResolve,
    /// A pull Secret changed or deleted out of band is written again.
    PullSecretRepair,
    /// The sync loop wrote a pull Secret (rotation fan-out, refresh, a
    /// first write it completed).
    PullSecretWrite,
    /// The sync loop deleted a pull Secret no usage needs.
    PullSecretDelete,
    /// Reading registries, their usages or sync state (audited when
    /// refused).
    RegistryRead,
    /// Reading the audit trail (audited when refused).
    AuditRead,
    /// A registry's credentials sealed again under the primary master key.
    RegistryRekey,
}

impl AuditAction {
    pub const ALL: [Self; 13] = [
        Self::RegistryCreate,
        Self::RegistryUpdate,
        Self::RegistryDelete,
        Self::RegistryTest,
        Self::DeploymentPrepare,
        Self::DeploymentRelease,
        Self::CredentialsResolve,
        Self::PullSecretRepair,
        Self::PullSecretWrite,
        Self::PullSecretDelete,
        Self::RegistryRead,
        Self::AuditRead,
        Self::RegistryRekey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistryCreate => "registry.create",
            Self::RegistryUpdate => "registry.update",
            Self::RegistryDelete => "registry.delete",
            Self::RegistryTest => "registry.test",
            Self::DeploymentPrepare => "deployment.prepare",
            Self::DeploymentRelease => "deployment.release",
            Self::CredentialsResolve => "credentials.resolve",
            Self::PullSecretRepair => "pull_secret.repair",
            Self::PullSecretWrite => "pull_secret.write",
            Self::PullSecretDelete => "pull_secret.delete",
            Self::RegistryRead => "registry.read",
            Self::AuditRead => "audit.read",
            Self::RegistryRekey => "registry.rekey",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    Ok,
    /// The caller may not do this.
    Denied,
    /// Test Connection found violations.
    Invalid,
    /// A delete that ended usages.
    Forced,
    /// A hand-out whose recorded intent was undone because the target
    /// refused it.
    Failed,
    /// A create retried with a request id already used: the earlier
    /// registry was answered, nothing was written.
    Replayed,
}

impl AuditOutcome {
    pub const ALL: [Self; 6] = [
        Self::Ok,
        Self::Denied,
        Self::Invalid,
        Self::Forced,
        Self::Failed,
        Self::Replayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
            Self::Forced => "forced",
            Self::Failed => "failed",
            Self::Replayed => "replayed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// One audited action.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub organization: String,
    pub actor: String,
    pub action: AuditAction,
    pub registry_id: Option<RegistryId>,
    pub outcome: AuditOutcome,
    /// Free text without secrets (`credential_revision=2`).
    pub detail: String,
    /// The request it happened in; empty for the service's own actions.
    pub request_id: String,
    /// The caller's peer identity; empty for the service's own actions.
    pub peer: String,
}

impl AuditEvent {
    /// An event of `principal`, now.
    pub fn new(
        principal: &Principal,
        action: AuditAction,
        registry_id: Option<&RegistryId>,
        outcome: AuditOutcome,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            request_id: principal.origin.request_id.clone(),
            peer: principal.origin.peer.clone(),
            ..Self::by(
                &principal.organization,
                &principal.subject,
                action,
                registry_id,
                outcome,
                detail,
            )
        }
    }

    /// An event of `actor` in `organization`, now.
    pub fn by(
        organization: &str,
        actor: &str,
        action: AuditAction,
        registry_id: Option<&RegistryId>,
        outcome: AuditOutcome,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            at: Timestamp::now(),
            organization: organization.to_owned(),
            actor: actor.to_owned(),
            action,
            registry_id: registry_id.cloned(),
            outcome,
            detail: detail.into(),
            request_id: String::new(),
            peer: String::new(),
        }
    }

    /// The same event with another outcome and detail (the undoing of a
    /// recorded intent).
    pub fn ended(&self, outcome: AuditOutcome, detail: impl Into<String>) -> Self {
        Self {
            at: Timestamp::now(),
            outcome,
            detail: detail.into(),
            ..self.clone()
        }
    }
}

impl fmt::Debug for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} by {}@{} on {:?}: {} {} (request {:?} from {:?})",
            self.at.0,
            self.action.as_str(),
            self.actor,
            self.organization,
            self.registry_id,
            self.outcome.as_str(),
            self.detail,
            self.request_id,
            self.peer,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
        for outcome in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(AuditAction::parse("registry.explode"), None);
    }
}
