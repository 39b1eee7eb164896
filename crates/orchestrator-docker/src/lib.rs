//! Docker Engine targets of the deploy path: Swarm and Compose share one engine
//! connection and the authenticated pull, so they live in one crate.
//!
//! - [`engine`] — [`DockerTarget`]: an endpoint URI (`unix://`, `tcp://`,
//!   `http://`, `https://`), a bollard client whose API version is negotiated with the
//!   daemon, and the [`DockerEngine`](registry_core::ports::orchestrators::DockerEngine)
//!   port: [`check`](registry_core::ports::orchestrators::DockerEngine::check) (the engine
//!   answers; for Swarm, it is an active manager) and
//!   [`pull`](registry_core::ports::orchestrators::DockerEngine::pull) (docker login + pull
//!   in one request, returning the repository digest);
//! - [`swarm`] — services created and updated with a registry auth, as
//!   `docker service create/update --with-registry-auth` does;
//! - [`tls`] — engines over TLS as `docker --tlsverify` reaches them (CA,
//!   client certificate and key);
//! - [`compose`] — an isolated docker config for callers that run the compose
//!   CLI ([`write_isolated_docker_config`]);
//! - `errors` (private) — how Engine API failures become
//!   [`TargetError`](registry_core::ports::orchestrators::TargetError)s, never carrying a
//!   secret.
//!
//! # Two things bollard 0.21 does not do for us
//!
//! - Its request paths carry no API version (`GET /_ping`, not
//!   `GET /v1.41/_ping`): [`Docker::negotiate_version`](bollard::Docker::negotiate_version)
//!   only changes a number the client keeps. Every request made here is
//!   prefixed with the negotiated version, so the daemon answers with the
//!   semantics of the version both sides know.
//! - It encodes `X-Registry-Auth` with the standard base64 alphabet; the
//!   engine decodes it with the URL-safe one and silently drops credentials it
//!   cannot decode (a password whose encoding holds `+` or `/` then fails with
//!   "no basic auth credentials"). The header is set here from
//!   [`DockerLogin::registry_auth`](registry_core::login::DockerLogin::registry_auth),
//!   which is URL-safe.

pub mod compose;
pub mod engine;
mod errors;
pub mod swarm;
pub mod tls;

pub use compose::{DOCKER_CONFIG_FILE, write_isolated_docker_config};
pub use engine::{DockerTarget, Endpoint};
pub use tls::{EngineTls, TlsFiles};
