//! The domain of the container-registry credential service.
//!
//! - [`kind`]: the nine registry kinds and their form schema;
//! - [`credentials`]: secret-typed credentials, masking, the server they are for;
//! - [`validate`]: what "structurally valid" means for each kind;
//! - [`reference`]: image references per the distribution grammar;
//! - [`sealer`]: the encryption-at-rest port.

pub mod credentials;
pub mod error;
pub mod kind;
pub mod reference;
pub mod sealer;
pub mod validate;

pub use credentials::{CredentialHint, Credentials};
pub use error::{Error, FieldViolation, Result};
pub use kind::RegistryKind;
