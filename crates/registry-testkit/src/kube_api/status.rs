//! Errors answered as `Status` objects, shaped like the real API server's so
//! kube-rs turns them into `kube::Error::Api(Status { code, reason, .. })`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The user every request is attributed to: the simulator does no
/// authentication, like an API server answering an anonymous caller.
pub(crate) const USER: &str = "system:anonymous";

/// A failed request: HTTP code, machine-readable reason, message and details.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
    retry_after_secs: Option<u32>,
}

/// One entry of `details.causes` of an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    reason: &'static str,
    field: String,
    message: String,
}

impl Cause {
    /// `field: Invalid value: "value": detail`.
    pub(crate) fn invalid(field: impl Into<String>, value: &str, detail: impl AsRef<str>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {}", detail.as_ref()),
        }
    }

    /// `field: Required value`, with an optional explanation.
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    /// `field: Forbidden: detail`.
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// `field: Too long: must have at most N bytes`.
    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: must have at most {max} bytes"),
        }
    }

    fn display(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `404 NotFound`: `secrets "x" not found`.
    pub(crate) fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} {name:?} not found"))
            .with_details(json!({ "name": name, "kind": resource }))
    }

    /// `404 NotFound` for a path the server does not serve.
    pub(crate) fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({
            "causes": [{ "reason": "UnexpectedServerResponse", "message": "404 page not found" }]
        }))
    }

    /// `409 AlreadyExists`: `secrets "x" already exists`.
    pub(crate) fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{resource} {name:?} already exists"))
            .with_details(json!({ "name": name, "kind": resource }))
    }

    /// `409 Conflict`: `Operation cannot be fulfilled on secrets "x": why`.
    pub(crate) fn conflict(resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} {name:?}: {why}"),
        )
        .with_details(json!({ "name": name, "kind": resource }))
    }

    /// `409 Conflict` for a write based on an outdated `resourceVersion`.
    pub(crate) fn stale(resource: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `409 Conflict` for a failed precondition (`uid` or `resourceVersion`).
    pub(crate) fn precondition(resource: &str, name: &str, what: &str, expected: &str, actual: &str) -> Self {
        Self::conflict(
            resource,
            name,
            &format!("Precondition failed: {what} in precondition: {expected}, {what} in object meta: {actual}"),
        )
    }

    /// `409 Conflict` of server-side apply: fields owned by other managers.
    /// `conflicts` holds (manager, field path) pairs.
    pub(crate) fn apply_conflicts(resource: &str, name: &str, conflicts: &[(String, String)]) -> Self {
        let message = match conflicts {
            [(manager, field)] => format!("Apply failed with 1 conflict: conflict with {manager:?} using v1: {field}"),
            _ => {
                let mut message = format!("Apply failed with {} conflicts:", conflicts.len());
                for (manager, field) in conflicts {
                    message.push_str(&format!(" conflict with {manager:?} using v1: {field};"));
                }
                message.pop();
                message
            }
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager:?} using v1"),
                    "field": field,
                })
            })
            .collect();
        Self::new(409, "Conflict", message).with_details(json!({ "name": name, "kind": resource, "causes": causes }))
    }

    /// `422 Invalid`: `Secret "x" is invalid: field: message`.
    pub(crate) fn invalid(kind: &str, name: &str, causes: &[Cause]) -> Self {
        let summary = match causes {
            [cause] => cause.display(),
            _ => format!("[{}]", causes.iter().map(Cause::display).collect::<Vec<_>>().join(", ")),
        };
        let details: Vec<Value> = causes
            .iter()
            .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
            .collect();
        Self::new(422, "Invalid", format!("{kind} {name:?} is invalid: {summary}"))
            .with_details(json!({ "name": name, "kind": kind, "causes": details }))
    }

    /// `403 Forbidden`, worded like an RBAC denial.
    pub(crate) fn forbidden(verb: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> Self {
        let subject = match name {
            Some(name) => format!("{resource} {name:?}"),
            None => resource.to_owned(),
        };
        let scope = match namespace {
            Some(namespace) => format!("in the namespace {namespace:?}"),
            None => "at the cluster scope".to_owned(),
        };
        let mut details = json!({ "kind": resource });
        if let Some(name) = name {
            details["name"] = json!(name);
        }
        Self::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User {USER:?} cannot {verb} resource {resource:?} in API group \"\" {scope}"
            ),
        )
        .with_details(details)
    }

    /// `429 TooManyRequests` with a `Retry-After` header, as API Priority and
    /// Fairness answers.
    pub(crate) fn too_many_requests(retry_after_secs: u32) -> Self {
        let mut error = Self::new(429, "TooManyRequests", "Too many requests, please try again later.")
            .with_details(json!({ "retryAfterSeconds": retry_after_secs }));
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// `400 BadRequest`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `405 MethodNotAllowed`.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// `413 RequestEntityTooLarge`.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// `415 UnsupportedMediaType`.
    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/strategic-merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// `410 Expired`: what a watch from a compacted `resourceVersion` gets
    /// (as its one `ERROR` event) and what a list continued from a compacted
    /// snapshot gets.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// `504 Timeout` for a `resourceVersion` newer than any the server handed
    /// out, with the `ResourceVersionTooLarge` cause clients look for.
    pub(crate) fn resource_version_too_large(requested: u64, current: u64) -> Self {
        let mut error = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }],
            "retryAfterSeconds": 1,
        }));
        error.retry_after_secs = Some(1);
        error
    }

    /// `503 ServiceUnavailable`, for requests still parked when the server stops.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// `500 InternalError`.
    pub(crate) fn internal(message: &str) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    /// The `Status` object of the response body.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.to_status())).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
