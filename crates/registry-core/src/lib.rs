//! The domain of the container-registry credential service.
//!
//! Domain:
//! - [`kind`] — the nine registry kinds and their form schema;
//! - [`credentials`] — secret-typed credentials, masking, the server they are for;
//! - [`validate`] — what "structurally valid" means for each kind;
//! - [`reference`] — image references per the distribution grammar;
//! - [`registry`] — the stored resource, ids, etags, timestamps;
//! - [`principal`] — callers and their roles;
//! - [`login`] — docker logins, `.dockerconfigjson` and `X-Registry-Auth`;
//! - [`usage`] — usages, pull Secrets and their sync state, leases;
//! - [`targets`] — orchestrator targets, their organizations and namespaces;
//! - [`audit`] — the audit trail's actions and outcomes;
//! - [`error`] — the errors of the use cases.
//!
//! Ports (traits the adapters implement): [`ports`].
//!
//! Use cases:
//! - [`registries`] — create, read, list, update (rename, rotate), delete, test;
//! - [`audit_trail`] — reading the audit trail (the `auditor` role);
//! - [`deployments`] — prepare and release deployments, hand out logins;
//! - [`sync`] — the pull Secret sync loop (rotation fan-out, deletion);
//! - [`drift`] — repair of pull Secrets changed behind the service's back.

pub mod audit;
pub mod audit_trail;
pub mod credentials;
pub mod deployments;
pub mod drift;
pub mod error;
pub mod kind;
pub mod login;
pub mod ports;
pub mod principal;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod rekey;
pub mod sync;
pub mod targets;
pub mod usage;
pub mod validate;

pub use credentials::{CredentialHint, Credentials, GoogleLogin};
pub use error::{Error, FieldViolation, Result};
pub use kind::RegistryKind;
pub use principal::{Principal, Role, Roles};
pub use registry::{Registry, RegistryId, StoredRegistry, Timestamp};
