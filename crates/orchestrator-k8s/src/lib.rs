//! The Kubernetes adapter: one `kubernetes.io/dockerconfigjson` Secret per
//! (registry, environment namespace), labelled as ours, annotated with its
//! credential revision and generation, written only under the version it
//! was read at. A same-named Secret that is not ours is never touched.
//!
//! - [`connect`] — kube clients (with request deadlines, and for watches)
//!   from a kubeconfig or the in-cluster environment;
//! - [`secrets`] — [`KubePullSecrets`], the
//!   [`PullSecretApi`](registry_core::ports::orchestrators::PullSecretApi);
//! - [`manifest`] — the Secret's labels, annotations and shape;
//! - `cache` — the watched namespaces and Secrets (kube-runtime watchers);
//! - `service_accounts` — referencing Secrets from ServiceAccounts;
//! - `errors` — kube errors as the domain's `TargetError`.

mod cache;
pub mod connect;
mod errors;
pub mod manifest;
pub mod secrets;
mod service_accounts;

pub use connect::{ClientOptions, Clients, ConnectError, Connection, connect};
pub use manifest::{
    DOCKER_CONFIG_KEY, FIELD_MANAGER, GENERATION_ANNOTATION, MANAGED_BY_LABEL, ORGANIZATION_LABEL, REGISTRY_LABEL,
    REVISION_ANNOTATION,
};
pub use secrets::{KubePullSecrets, ServiceAccounts};
