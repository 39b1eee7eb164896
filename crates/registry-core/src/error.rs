//! The domain's errors, and the conversions into them. `registry-api` maps
//! each variant to a gRPC status in one place.

use std::fmt;
use std::time::Duration;

use crate::ports::login::LoginError;
use crate::ports::orchestrators::TargetError;
use crate::ports::store::StoreError;

/// A problem with one input field. `field` is a path such as
/// `credentials.ghcr.token`; `description` never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation with `prefix.` put before its field path.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = format!("{prefix}.{}", self.field);
        }
        self
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// The kind of resource an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Registry,
    Usage,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Registry => "registry",
            Self::Usage => "usage of container",
        })
    }
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input fields are missing or malformed.
    #[error("invalid request: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{resource} {id:?} not found")]
    NotFound { resource: Resource, id: String },
    #[error("{resource} named {name:?} already exists")]
    AlreadyExists { resource: Resource, name: String },
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(String),
    /// The etag sent does not match the current one.
    #[error("{resource} {id:?} was changed by someone else (etag mismatch); read it again and retry")]
    EtagMismatch { resource: Resource, id: String },
    /// Containers still use the registry.
    #[error("registry {registry_id:?} is used by {} container(s): {}; release them or delete with force", .containers.len(), .containers.join(", "))]
    InUse {
        registry_id: String,
        containers: Vec<String>,
    },
    /// The namespace holds another organization's deployments.
    #[error(
        "namespace {namespace:?} on target {target:?} belongs to another organization; \
         a namespace (or Swarm service name) holds the pull secrets of one organization only"
    )]
    NamespaceTaken { target: String, namespace: String },
    /// The system is not in the state the request needs.
    #[error("{0}")]
    FailedPrecondition(String),
    /// An orchestrator target refused or failed a request.
    #[error("target {target:?}: {source}")]
    Target {
        target: String,
        #[source]
        source: TargetError,
    },
    /// The credentials gave no docker login.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The request is valid but this server does not offer it.
    #[error("{0}")]
    Unsupported(String),
    /// Stored credentials cannot be opened with the configured master keys.
    #[error("credentials of registry {registry_id:?} cannot be decrypted: {reason}")]
    Undecryptable { registry_id: String, reason: String },
    /// The store cannot be reached or failed.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// The server is at capacity; retry later.
    #[error("{0}")]
    Overloaded(String),
    /// Something that should not happen; its message is safe to show.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn registry_not_found(id: impl Into<String>) -> Self {
        Self::NotFound {
            resource: Resource::Registry,
            id: id.into(),
        }
    }

    /// A target's failure, kept as data.
    pub fn target(target: &str, source: TargetError) -> Self {
        Self::Target {
            target: target.to_owned(),
            source,
        }
    }

    /// How long the caller should wait before retrying, when the failure
    /// says so (a throttling target).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Target {
                source: TargetError::Throttled { retry_after },
                ..
            } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken(name) => Error::AlreadyExists {
                resource: Resource::Registry,
                name,
            },
            other => Error::Store(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
