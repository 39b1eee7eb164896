//! The ports: what the use cases need from the world, as traits. Each is
//! implemented by an adapter crate; nothing here knows sea-orm, kube, bollard
//! or tonic.
//!
//! - [`store`] — registries, usages, pull Secret state, the audit trail
//!   (`registry-store`);
//! - [`sealer`] — encryption at rest (`registry-crypto`);
//! - [`login`] — credentials become docker logins (`registry-login`);
//! - [`orchestrators`] — Kubernetes pull Secrets and Docker engines
//!   (`orchestrator-k8s`, `orchestrator-docker`).

pub mod login;
pub mod orchestrators;
pub mod sealer;
pub mod store;

pub use login::{LoginError, LoginProvider};
pub use orchestrators::{
    Applied, ClusterChange, Deleted, DockerEngine, EngineRole, Observation, ObservedSecret, PullSecret, PullSecretApi,
    SecretVersion, TargetError,
};
pub use sealer::{SealContext, SealError, Sealer};
pub use store::{
    DeployStore, Inserted, IntentOutcome, KeySample, ListQuery, RecordedIntent, RegistryStore, SecretIntent,
    SecretOutcome, StoreError, UsageIntent, WriteOutcome,
};
