//! The domain of the container-registry credential service.
//!
//! - [`kind`] — the nine registry kinds and their form schema;
//! - [`credentials`] — secret-typed credentials, masking, the server they are for;
//! - [`validate`] — what "structurally valid" means for each kind;
//! - [`reference`] — image references per the distribution grammar;
//! - [`sealer`] — the encryption-at-rest port;
//! - [`registry`] — the stored resource, ids, etags, timestamps;
//! - [`principal`] — callers and their roles;
//! - [`ports`] — the storage port;
//! - [`service`] — the registry use cases;
//! - [`login`] — docker logins, `.dockerconfigjson` and `X-Registry-Auth`;
//! - [`deploy`] — usages, pull Secrets, targets and their ports;
//! - [`deployments`] — the deploy use cases;
//! - [`sync`] — the pull Secret sync loop (rotation fan-out, deletion).

pub mod credentials;
pub mod deploy;
pub mod deployments;
pub mod error;
pub mod kind;
pub mod login;
pub mod ports;
pub mod principal;
pub mod reference;
pub mod registry;
pub mod sealer;
pub mod service;
pub mod sync;
pub mod validate;

pub use credentials::{CredentialHint, Credentials};
pub use error::{Error, FieldViolation, Result};
pub use kind::RegistryKind;
pub use principal::{Principal, Role, Roles};
pub use registry::{Registry, RegistryId, StoredRegistry, Timestamp};
