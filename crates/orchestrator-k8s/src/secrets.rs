//! [`KubePullSecrets`]: the [`PullSecretApi`] of one cluster.
//!
//! Every write is conditional on the version it was read at: a Secret is
//! created with `POST` (409 when someone created it first), updated with a
//! server-side apply carrying the `resourceVersion` it was read at (409 when
//! it changed), and deleted with `uid` and `resourceVersion` preconditions.
//! A Secret holding a newer revision is never replaced, a generation is
//! never lowered, and a Secret this service does not manage is never
//! touched.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use registry_core::RegistryId;
use registry_core::ports::orchestrators::{
    Applied, ClusterChange, Deleted, Observation, ObservedSecret, PullSecret, PullSecretApi, TargetError,
};
use tokio::task::JoinHandle;

use crate::cache::ClusterCache;
use crate::connect::Clients;
use crate::errors::{is_conflict, is_not_found, target_error};
use crate::manifest::{FIELD_MANAGER, manifest, observed, version_of};
use crate::service_accounts;

/// Read-then-write attempts of one apply or delete when the Secret keeps
/// changing under it.
const ATTEMPTS: usize = 3;

/// Whether pull Secrets are also referenced from ServiceAccounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceAccounts {
    /// Pods name the Secret in their `imagePullSecrets` (the default).
    #[default]
    Leave,
    /// Every ServiceAccount of the namespace lists the Secret too.
    Reference,
}

/// Pull Secrets on one cluster.
pub struct KubePullSecrets {
    clients: Clients,
    service_accounts: ServiceAccounts,
    cache: Arc<ClusterCache>,
    /// The watchers, stopped when this is dropped.
    watchers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for KubePullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePullSecrets")
            .field("service_accounts", &self.service_accounts)
            .field("watching", &!self.watchers.is_empty())
            .finish_non_exhaustive()
    }
}

impl Drop for KubePullSecrets {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

impl KubePullSecrets {
    /// Without a watch: every question is a request.
    pub fn new(clients: Clients, service_accounts: ServiceAccounts) -> Self {
        Self {
            clients,
            service_accounts,
            cache: Arc::default(),
            watchers: Vec::new(),
        }
    }

    /// Watches the cluster's namespaces and this service's Secrets (starts
    /// two tasks on the current runtime), so namespace checks and Secret
    /// reads need no request and changes made out of band are seen.
    pub fn watching(clients: Clients, service_accounts: ServiceAccounts) -> Self {
        let mut this = Self::new(clients, service_accounts);
        let (cache, client) = (Arc::clone(&this.cache), this.clients.watches.clone());
        this.watchers
            .push(tokio::spawn(async move { cache.watch_namespaces(client).await }));
        let (cache, client) = (Arc::clone(&this.cache), this.clients.watches.clone());
        this.watchers
            .push(tokio::spawn(async move { cache.watch_secrets(client).await }));
        this
    }

    /// Resolves once the watch has listed the cluster (at once without a
    /// watch).
    pub async fn synced(&self) {
        if !self.watchers.is_empty() {
            self.cache.ready().await;
        }
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.clients.requests.clone(), namespace)
    }

    /// The Secret now, from the API server.
    async fn fetch(&self, namespace: &str, name: &str) -> Result<Observation, TargetError> {
        match self.secrets(namespace).get_opt(name).await {
            Ok(Some(secret)) => Ok(observed(&secret).map_or(Observation::Absent, Observation::Present)),
            Ok(None) => Ok(Observation::Absent),
            // The namespace is gone, and the Secret with it.
            Err(e) if is_not_found(&e) => Ok(Observation::Absent),
            Err(e) => Err(target_error(e, namespace)),
        }
    }

    /// The cached state, or a read when nothing is cached.
    async fn current(&self, namespace: &str, name: &str) -> Result<Observation, TargetError> {
        match self.cache.observe(namespace, name) {
            Observation::Unknown => self.fetch(namespace, name).await,
            known => Ok(known),
        }
    }

    /// One write, conditional on `seen`; `None` when it lost a race (read
    /// again and retry).
    async fn write(&self, secret: &PullSecret<'_>, seen: &Observation) -> Result<Option<Applied>, TargetError> {
        let api = self.secrets(secret.namespace);
        let written = match seen {
            Observation::Present(existing) if !existing.ours => {
                return Err(TargetError::NotOurs {
                    namespace: secret.namespace.to_owned(),
                    name: secret.name.to_owned(),
                });
            }
            Observation::Present(existing) if existing.revision > secret.revision => {
                return Ok(Some(Applied {
                    revision: existing.revision,
                    version: existing.version.clone(),
                    wrote: false,
                }));
            }
            Observation::Present(existing) => {
                let generation = secret.generation.max(existing.generation);
                let body = manifest(secret, generation, Some(&existing.version.resource_version));
                // Forced: the Secret is ours (checked above), so fields some
                // other manager took over are taken back.
                api.patch(
                    secret.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await
            }
            Observation::Absent | Observation::Unknown => {
                let body: Secret = serde_json::from_value(manifest(secret, secret.generation, None))
                    .map_err(|e| TargetError::Other(format!("pull secret manifest: {e}")))?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PostParams::default()
                };
                api.create(&params, &body).await
            }
        };
        match written {
            Ok(object) => Ok(Some(Applied {
                revision: secret.revision,
                version: version_of(&object),
                wrote: true,
            })),
            Err(e) if is_conflict(&e) => Ok(None),
            // An apply conditional on a version of a Secret deleted since.
            Err(e) if is_not_found(&e) && matches!(seen, Observation::Present(_)) => {
                match self.fetch(secret.namespace, secret.name).await? {
                    Observation::Absent => Ok(None),
                    _ => Err(target_error(e, secret.namespace)),
                }
            }
            Err(e) => Err(target_error(e, secret.namespace)),
        }
    }
}

#[async_trait]
impl PullSecretApi for KubePullSecrets {
    /// A namespace the cache knows exists does; one it does not know may
    /// have been created a moment ago, so that is asked.
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, TargetError> {
        if self.cache.namespace_exists(namespace) == Some(true) {
            return Ok(true);
        }
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.clients.requests.clone());
        namespaces
            .get_opt(namespace)
            .await
            .map(|found| found.is_some())
            .map_err(|e| target_error(e, namespace))
    }

    async fn apply(&self, secret: PullSecret<'_>) -> Result<Applied, TargetError> {
        let mut seen = self.current(secret.namespace, secret.name).await?;
        for _ in 0..ATTEMPTS {
            if let Some(applied) = self.write(&secret, &seen).await? {
                if applied.wrote && self.service_accounts == ServiceAccounts::Reference {
                    service_accounts::reference(&self.clients.requests, secret.namespace, secret.name).await?;
                }
                tracing::debug!(
                    namespace = secret.namespace,
                    name = secret.name,
                    revision = applied.revision,
                    wrote = applied.wrote,
                    "pull secret applied"
                );
                return Ok(applied);
            }
            seen = self.fetch(secret.namespace, secret.name).await?;
        }
        Err(TargetError::Conflict(format!(
            "secret {:?} in namespace {:?}",
            secret.name, secret.namespace
        )))
    }

    async fn delete(
        &self,
        namespace: &str,
        name: &str,
        registry_id: &RegistryId,
        generation: i64,
    ) -> Result<Deleted, TargetError> {
        // The watched view may not have seen a Secret written a moment ago:
        // its absence there is confirmed by a read before the Secret is
        // taken for gone (and its row and the namespace's claim let go).
        let mut seen = match self.cache.observe(namespace, name) {
            present @ Observation::Present(_) => present,
            Observation::Absent | Observation::Unknown => self.fetch(namespace, name).await?,
        };
        for _ in 0..ATTEMPTS {
            let existing = match &seen {
                Observation::Absent | Observation::Unknown => return Ok(Deleted::AlreadyGone),
                Observation::Present(existing) => existing,
            };
            if !existing.ours || existing.registry_id.as_deref() != Some(registry_id.as_str()) {
                tracing::warn!(namespace, name, "not deleting a secret this service does not manage");
                return Ok(Deleted::NotOurs);
            }
            if existing.generation > generation {
                return Ok(Deleted::Revived);
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(existing.version.uid.clone()),
                    resource_version: Some(existing.version.resource_version.clone()),
                }),
                ..DeleteParams::default()
            };
            match self.secrets(namespace).delete(name, &params).await {
                Ok(_) => return Ok(Deleted::Removed),
                Err(e) if is_not_found(&e) => return Ok(Deleted::AlreadyGone),
                Err(e) if is_conflict(&e) => seen = self.fetch(namespace, name).await?,
                Err(e) => return Err(target_error(e, namespace)),
            }
        }
        Err(TargetError::Conflict(format!(
            "secret {name:?} in namespace {namespace:?}"
        )))
    }

    fn observe(&self, namespace: &str, name: &str) -> Observation {
        self.cache.observe(namespace, name)
    }

    async fn read(&self, namespace: &str, name: &str) -> Result<Observation, TargetError> {
        self.fetch(namespace, name).await
    }

    fn observed(&self) -> Option<Vec<ObservedSecret>> {
        self.cache.snapshot()
    }

    async fn next_change(&self) -> ClusterChange {
        if self.watchers.is_empty() {
            return std::future::pending().await;
        }
        self.cache.next_change().await
    }
}
