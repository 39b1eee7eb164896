//! The one mapping from domain errors to gRPC statuses. Exhaustive on
//! purpose: a new error variant (of the domain, a target, a login or the
//! store) does not compile until it is mapped here.

use registry_core::Error;
use registry_core::ports::login::LoginError;
use registry_core::ports::orchestrators::TargetError;
use registry_core::ports::store::StoreError;
use registry_core::sync::MAX_RETRY_AFTER;
use tonic::{Code, Response, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

/// An RPC's answer: its message, or its error as a status.
pub fn reply<T>(result: Result<T, Error>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

/// The status a domain error answers with. Messages name the field or
/// resource and never contain a secret (domain errors carry none).
pub fn to_status(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::InvalidArgument(violations) => {
            let violations: Vec<FieldViolation> = violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect();
            Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            )
        }
        Error::NotFound { resource, id } => Status::with_error_details(
            Code::NotFound,
            message,
            ErrorDetails::with_resource_info(resource.to_string(), id, "", "not found in the caller's organization"),
        ),
        Error::AlreadyExists { resource, name } => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_resource_info(resource.to_string(), name, "", "the name is already used"),
        ),
        Error::PermissionDenied(_) => Status::permission_denied(message),
        Error::Unauthenticated(_) => Status::unauthenticated(message),
        Error::EtagMismatch { .. } => Status::aborted(message),
        Error::InUse {
            registry_id,
            containers,
        } => {
            let violations: Vec<PreconditionViolation> = containers
                .into_iter()
                .map(|container| {
                    PreconditionViolation::new(
                        "IN_USE",
                        format!("containers/{container}"),
                        format!("container {container} uses registry {registry_id}"),
                    )
                })
                .collect();
            Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure(violations),
            )
        }
        Error::NamespaceTaken { target, namespace } => Status::with_error_details(
            Code::FailedPrecondition,
            message,
            ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                "NAMESPACE_OWNED",
                format!("targets/{target}/namespaces/{namespace}"),
                "the namespace holds another organization's deployments",
            )]),
        ),
        Error::FailedPrecondition(_) => Status::failed_precondition(message),
        Error::Target { source, .. } => target_status(source, message),
        Error::Login(source) => login_status(&source, message),
        Error::Unsupported(_) => Status::new(Code::Unimplemented, message),
        Error::Undecryptable { .. } => Status::data_loss(message),
        Error::Store(source) => store_status(&source, message),
        Error::Overloaded(_) => Status::resource_exhausted(message),
        Error::Internal(_) => Status::internal(message),
    }
}

fn target_status(error: TargetError, message: String) -> Status {
    match error {
        TargetError::Throttled { retry_after } => Status::with_error_details(
            Code::Unavailable,
            message,
            ErrorDetails::with_retry_info(Some(retry_after.min(MAX_RETRY_AFTER))),
        ),
        TargetError::NamespaceMissing(_)
        | TargetError::Forbidden { .. }
        | TargetError::NotOurs { .. }
        | TargetError::RegistryRefused(_)
        | TargetError::ImageNotFound(_) => Status::failed_precondition(message),
        TargetError::Conflict(_) => Status::aborted(message),
        TargetError::Unreachable(_) | TargetError::Timeout(_) | TargetError::Other(_) => Status::unavailable(message),
    }
}

fn login_status(error: &LoginError, message: String) -> Status {
    match error {
        LoginError::NeedsTokenExchange(_) => Status::new(Code::Unimplemented, message),
        LoginError::Public => Status::failed_precondition(message),
        LoginError::Refused { .. } | LoginError::WrongHost { .. } => Status::failed_precondition(message),
        LoginError::Unavailable { .. } => Status::unavailable(message),
    }
}

fn store_status(error: &StoreError, message: String) -> Status {
    match error {
        StoreError::Unavailable(_) => Status::unavailable(message),
        StoreError::NameTaken(_) => Status::already_exists(message),
        StoreError::Corrupt(_) => Status::internal(message),
        StoreError::Overloaded(_) => Status::resource_exhausted(message),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn invalid_arguments_carry_bad_request_details() {
        let status = to_status(Error::InvalidArgument(vec![registry_core::FieldViolation::new(
            "registry.credentials.ghcr.token",
            "must start with ghp_",
        )]));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("registry.credentials.ghcr.token"));
        let details = status.get_error_details();
        let bad_request = details.bad_request().unwrap();
        assert_eq!(bad_request.field_violations[0].field, "registry.credentials.ghcr.token");
    }

    #[test]
    fn a_registry_in_use_lists_its_containers() {
        let status = to_status(Error::InUse {
            registry_id: "reg-abc".into(),
            containers: vec!["api".into(), "worker".into()],
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let subjects: Vec<_> = details
            .precondition_failure()
            .unwrap()
            .violations
            .iter()
            .map(|v| v.subject.clone())
            .collect();
        assert_eq!(subjects, ["containers/api", "containers/worker"]);
    }

    #[test]
    fn etag_mismatch_is_aborted_and_not_found_names_the_registry() {
        let aborted = to_status(Error::EtagMismatch {
            resource: registry_core::error::Resource::Registry,
            id: "reg-abc".into(),
        });
        assert_eq!(aborted.code(), Code::Aborted);
        let missing = to_status(Error::registry_not_found("reg-abc"));
        assert_eq!(missing.code(), Code::NotFound);
        assert!(missing.message().contains("reg-abc"));
    }

    #[test]
    fn a_throttling_target_is_unavailable_with_retry_info() {
        let status = to_status(Error::target(
            "k8s",
            TargetError::Throttled {
                retry_after: Duration::from_secs(7),
            },
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("\"k8s\""), "{}", status.message());
        let retry = status.get_error_details().retry_info().cloned().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
        let day = to_status(Error::target(
            "k8s",
            TargetError::Throttled {
                retry_after: Duration::from_secs(86_400),
            },
        ));
        let retry = day.get_error_details().retry_info().cloned().unwrap();
        assert_eq!(retry.retry_delay, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn another_organizations_namespace_is_a_failed_precondition_naming_it() {
        let status = to_status(Error::NamespaceTaken {
            target: "k8s".into(),
            namespace: "env-production".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("env-production"));
        let details = status.get_error_details();
        let violation = &details.precondition_failure().unwrap().violations[0];
        assert_eq!(violation.subject, "targets/k8s/namespaces/env-production");
    }
}
