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
//! - [`service`] — the use cases.

pub mod credentials;
pub mod error;
pub mod kind;
pub mod ports;
pub mod principal;
pub mod reference;
pub mod registry;
pub mod sealer;
pub mod service;
pub mod validate;

pub use credentials::{CredentialHint, Credentials};
pub use error::{Error, FieldViolation, Result};
pub use kind::RegistryKind;
pub use principal::{Principal, Role, Roles};
pub use registry::{Registry, RegistryId, StoredRegistry, Timestamp};
