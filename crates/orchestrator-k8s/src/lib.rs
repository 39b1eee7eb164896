//! The Kubernetes adapter: one `kubernetes.io/dockerconfigjson` Secret per
//! (registry, environment namespace), written with server-side apply under
//! one field manager, labelled as ours, annotated with the credential
//! revision. A same-named Secret that is not ours is never touched.
//!
//! - [`KubePullSecrets`] — implements [`registry_core::deploy::PullSecretApi`];
//! - [`connect`] — a `kube::Client` from a kubeconfig (path, context) or the
//!   in-cluster environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{LocalObjectReference, Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use registry_core::RegistryId;
use registry_core::deploy::{PullSecret, PullSecretApi, TargetError};

/// The field manager of every write, and the value of the managed-by label.
pub const FIELD_MANAGER: &str = "registry-credential-service";
/// The label marking a Secret as managed by this service.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label holding the registry id.
pub const REGISTRY_LABEL: &str = "registry.platform.io/registry-id";
/// The annotation holding the credential revision the Secret carries.
pub const REVISION_ANNOTATION: &str = "registry.platform.io/credential-revision";
/// The only data key of a pull Secret.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
/// Read-modify-write attempts per ServiceAccount under concurrent changes.
const SERVICE_ACCOUNT_ATTEMPTS: usize = 5;

/// Where the client comes from.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// A kubeconfig file; `None`: in-cluster (service account) configuration.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None`: its current context.
    pub context: Option<String>,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("kubernetes client: {0}")]
pub struct ConnectError(String);

/// A kube client for `connection`.
pub async fn connect(connection: &Connection) -> Result<Client, ConnectError> {
    let config = match &connection.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ConnectError(format!("cannot read {}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: connection.context.clone(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ConnectError(e.to_string()))?
        }
        None => Config::incluster().map_err(|e| ConnectError(e.to_string()))?,
    };
    Client::try_from(without_retries(config)).map_err(|e| ConnectError(e.to_string()))
}

/// kube retries 429s by itself; the sync loop does that instead, so the wait
/// is bounded, visible in the sync state, and survives a restart.
pub fn without_retries(mut config: Config) -> Config {
    config.default_retry = false;
    config
}

/// Pull Secrets on one cluster.
#[derive(Clone)]
pub struct KubePullSecrets {
    client: Client,
    /// Also list the Secret in the namespace's ServiceAccounts'
    /// `imagePullSecrets`, so pods that do not name it still pull.
    patch_service_accounts: bool,
}

impl std::fmt::Debug for KubePullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePullSecrets")
            .field("patch_service_accounts", &self.patch_service_accounts)
            .finish_non_exhaustive()
    }
}

/// A kube error as the domain sees it. `namespace` names where it happened.
fn target_error(error: kube::Error, namespace: &str) -> TargetError {
    match error {
        kube::Error::Api(status) => match status.code {
            429 => TargetError::Throttled {
                retry_after: Duration::from_secs(
                    status
                        .details
                        .as_ref()
                        .map(|d| u64::from(d.retry_after_seconds))
                        .filter(|s| *s > 0)
                        .unwrap_or(1),
                ),
            },
            403 => TargetError::Forbidden {
                namespace: namespace.to_owned(),
                detail: status.message,
            },
            404 if status.details.as_ref().is_some_and(|d| d.kind == "namespaces") => {
                TargetError::NamespaceMissing(namespace.to_owned())
            }
            code => TargetError::Other(format!(
                "api server answered {code} {}: {}",
                status.reason, status.message
            )),
        },
        kube::Error::HyperError(e) => TargetError::Unreachable(e.to_string()),
        kube::Error::Service(e) => TargetError::Unreachable(e.to_string()),
        other => TargetError::Other(other.to_string()),
    }
}

/// Whether a Secret carries our managed-by label.
fn is_ours(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == FIELD_MANAGER)
}

/// The Secret object applied for `secret`.
fn manifest(secret: &PullSecret<'_>) -> serde_json::Value {
    let labels: BTreeMap<&str, &str> = [
        (MANAGED_BY_LABEL, FIELD_MANAGER),
        (REGISTRY_LABEL, secret.registry_id.as_str()),
    ]
    .into_iter()
    .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret.name,
            "namespace": secret.namespace,
            "labels": labels,
            "annotations": { REVISION_ANNOTATION: secret.revision.to_string() },
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": { DOCKER_CONFIG_KEY: STANDARD.encode(secret.docker_config_json) },
    })
}

impl KubePullSecrets {
    pub fn new(client: Client, patch_service_accounts: bool) -> Self {
        Self {
            client,
            patch_service_accounts,
        }
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Refuses when a Secret of that name exists and is not ours.
    async fn check_ownership(&self, namespace: &str, name: &str) -> Result<bool, TargetError> {
        match self.secrets(namespace).get_opt(name).await {
            Ok(Some(existing)) if !is_ours(&existing) => Err(TargetError::NotOurs {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(target_error(e, namespace)),
        }
    }

    /// Adds the Secret to every ServiceAccount of the namespace that lacks it.
    ///
    /// A ServiceAccount's `imagePullSecrets` is an atomic list: any patch
    /// replaces it whole. So each account is read, the name appended, and the
    /// whole object replaced under the `resourceVersion` read; a concurrent
    /// change (409) is retried on a fresh read.
    async fn reference_from_service_accounts(&self, namespace: &str, name: &str) -> Result<(), TargetError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let list = accounts
            .list(&ListParams::default())
            .await
            .map_err(|e| target_error(e, namespace))?;
        for account in list {
            let Some(account_name) = account.metadata.name.clone() else {
                continue;
            };
            let mut current = account;
            for _ in 0..SERVICE_ACCOUNT_ATTEMPTS {
                let references = current.image_pull_secrets.get_or_insert_with(Vec::new);
                if references.iter().any(|r| r.name == name) {
                    break;
                }
                references.push(LocalObjectReference { name: name.to_owned() });
                match accounts.replace(&account_name, &PostParams::default(), &current).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        current = accounts
                            .get(&account_name)
                            .await
                            .map_err(|e| target_error(e, namespace))?;
                    }
                    Err(e) => return Err(target_error(e, namespace)),
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PullSecretApi for KubePullSecrets {
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, TargetError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .get_opt(namespace)
            .await
            .map(|found| found.is_some())
            .map_err(|e| target_error(e, namespace))
    }

    /// One server-side apply in the common case. Without `force`, a Secret
    /// whose fields another manager owns answers 409: then it is read, and
    /// only a Secret labelled as ours is taken over (forced apply).
    async fn apply(&self, secret: PullSecret<'_>) -> Result<(), TargetError> {
        let api = self.secrets(secret.namespace);
        let manifest = Patch::Apply(manifest(&secret));
        match api
            .patch(secret.name, &PatchParams::apply(FIELD_MANAGER), &manifest)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => {
                self.check_ownership(secret.namespace, secret.name).await?;
                api.patch(secret.name, &PatchParams::apply(FIELD_MANAGER).force(), &manifest)
                    .await
                    .map_err(|e| target_error(e, secret.namespace))?;
            }
            Err(e) => return Err(target_error(e, secret.namespace)),
        }
        if self.patch_service_accounts {
            self.reference_from_service_accounts(secret.namespace, secret.name)
                .await?;
        }
        tracing::debug!(
            namespace = secret.namespace,
            name = secret.name,
            revision = secret.revision,
            "pull secret applied"
        );
        Ok(())
    }

    async fn delete(&self, namespace: &str, name: &str, registry_id: &RegistryId) -> Result<(), TargetError> {
        let existing = match self.secrets(namespace).get_opt(name).await {
            Ok(found) => found,
            // The namespace is gone, and the Secret with it.
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(e) => return Err(target_error(e, namespace)),
        };
        let Some(existing) = existing else { return Ok(()) };
        let registry_label = existing.metadata.labels.as_ref().and_then(|l| l.get(REGISTRY_LABEL));
        if !is_ours(&existing) || registry_label.map(String::as_str) != Some(registry_id.as_str()) {
            tracing::warn!(namespace, name, "not deleting a secret this service does not manage");
            return Ok(());
        }
        match self.secrets(namespace).delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(target_error(e, namespace)),
        }
    }
}
