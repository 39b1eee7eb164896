//! kube errors as the domain sees them: one mapping for every request.

use std::time::Duration;

use registry_core::ports::orchestrators::TargetError;

/// A kube error of a request in `namespace`.
pub(crate) fn target_error(error: kube::Error, namespace: &str) -> TargetError {
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
            404 if is_namespace_missing(&status) => TargetError::NamespaceMissing(namespace.to_owned()),
            409 => TargetError::Conflict(format!("in namespace {namespace:?}: {}", status.message)),
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

/// A 404 about the namespace itself, not the object in it.
pub(crate) fn is_namespace_missing(status: &kube::core::Status) -> bool {
    status.details.as_ref().is_some_and(|d| d.kind == "namespaces")
}

/// Whether a kube error is the API's 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Whether a kube error is the API's 409 (exists already, or changed).
pub(crate) fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
