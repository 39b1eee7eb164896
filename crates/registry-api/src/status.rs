//! The one mapping from domain errors to gRPC statuses. Exhaustive on
//! purpose: a new error variant does not compile until it is mapped here.

use registry_core::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

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
        Error::FailedPrecondition(_) => Status::failed_precondition(message),
        Error::Unavailable(_) => Status::unavailable(message),
        Error::Unsupported(_) => Status::new(Code::Unimplemented, message),
        Error::Undecryptable { .. } => Status::data_loss(message),
        Error::Store(_) => Status::unavailable(message),
        Error::Internal(_) => Status::internal(message),
    }
}

#[cfg(test)]
mod tests {
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
}
