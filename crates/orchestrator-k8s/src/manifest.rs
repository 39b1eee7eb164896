//! What a pull Secret looks like: the applied object, and what is read back
//! from one (never its data).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use registry_core::ports::orchestrators::{ObservedSecret, PullSecret, SecretVersion};

/// The field manager of every write, and the value of the managed-by label.
pub const FIELD_MANAGER: &str = "registry-credential-service";
/// The label marking a Secret as managed by this service.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label holding the registry id.
pub const REGISTRY_LABEL: &str = "registry.platform.io/registry-id";
/// The label holding the owning organization.
pub const ORGANIZATION_LABEL: &str = "registry.platform.io/organization";
/// The annotation holding the credential revision the Secret carries.
pub const REVISION_ANNOTATION: &str = "registry.platform.io/credential-revision";
/// The annotation holding the Secret's generation (see
/// [`PullSecret::generation`]).
pub const GENERATION_ANNOTATION: &str = "registry.platform.io/generation";
/// The only data key of a pull Secret.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
/// The label selector of every Secret this service manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=registry-credential-service";

/// The object applied for `secret`, conditional on `resource_version` when
/// given (the version it was read at).
pub(crate) fn manifest(secret: &PullSecret<'_>, generation: i64, resource_version: Option<&str>) -> serde_json::Value {
    let labels: BTreeMap<&str, &str> = [
        (MANAGED_BY_LABEL, FIELD_MANAGER),
        (REGISTRY_LABEL, secret.registry_id.as_str()),
        (ORGANIZATION_LABEL, secret.organization),
    ]
    .into_iter()
    .collect();
    let mut metadata = serde_json::json!({
        "name": secret.name,
        "namespace": secret.namespace,
        "labels": labels,
        "annotations": {
            REVISION_ANNOTATION: secret.revision.to_string(),
            GENERATION_ANNOTATION: generation.to_string(),
        },
    });
    if let Some(version) = resource_version {
        metadata["resourceVersion"] = serde_json::Value::from(version);
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/dockerconfigjson",
        "data": { DOCKER_CONFIG_KEY: STANDARD.encode(secret.docker_config_json) },
    })
}

/// What this service reads of a Secret: identity, labels, annotations.
pub(crate) fn observed(secret: &Secret) -> Option<ObservedSecret> {
    let metadata = &secret.metadata;
    let label = |key: &str| metadata.labels.as_ref().and_then(|l| l.get(key));
    let number = |key: &str| {
        metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Some(ObservedSecret {
        namespace: metadata.namespace.clone()?,
        name: metadata.name.clone()?,
        version: SecretVersion {
            uid: metadata.uid.clone().unwrap_or_default(),
            resource_version: metadata.resource_version.clone().unwrap_or_default(),
        },
        ours: label(MANAGED_BY_LABEL).is_some_and(|v| v == FIELD_MANAGER),
        registry_id: label(REGISTRY_LABEL).cloned(),
        revision: number(REVISION_ANNOTATION),
        generation: number(GENERATION_ANNOTATION),
    })
}

/// The identity of a written object.
pub(crate) fn version_of(secret: &Secret) -> SecretVersion {
    SecretVersion {
        uid: secret.metadata.uid.clone().unwrap_or_default(),
        resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
    }
}
