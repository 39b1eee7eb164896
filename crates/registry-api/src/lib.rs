//! The gRPC face of the registry credential service.
//!
//! - [`auth`] — who is calling (bearer JWT or loopback development mode);
//! - [`registry_service`] — `platform.registry.v1.RegistryService`;
//! - [`deploy_service`] — `platform.registry.v1.DeployCredentialService`;
//! - [`limits`] — request rates per principal, requests in flight;
//! - [`request_id`] — every request's id, answered and audited;
//! - [`convert`] — protobuf <-> domain;
//! - [`status`] — the one mapping from domain errors to gRPC statuses.

pub mod auth;
pub mod convert;
pub mod deploy_service;
pub mod limits;
pub mod registry_service;
pub mod request_id;
pub mod status;

pub use auth::{AuthInterceptor, Authenticator};
pub use deploy_service::DeployApi;
pub use registry_service::RegistryApi;
