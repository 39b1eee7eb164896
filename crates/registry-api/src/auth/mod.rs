//! Who is calling. Every request gets a [`Principal`] before it reaches a
//! service:
//!
//! - [`jwt`] — a bearer JWT verified locally;
//! - [`mtls`] — the client certificate the listener verified, mapped to a
//!   principal by configuration;
//! - [`development`] — request metadata, in the loopback-only development
//!   mode (the embedded default).

use std::net::SocketAddr;
use std::sync::Arc;

use registry_core::Principal;
use registry_core::principal::Origin;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::limits::PrincipalRate;
use crate::request_id::RequestId;

pub mod development;
pub mod jwks;
pub mod jwt;
pub mod mtls;

pub use development::{DevelopmentAuth, ORG_HEADER, ROLES_HEADER, USER_HEADER};
pub use jwks::{JwksError, JwksKeys};
pub use jwt::{JwtAuth, JwtKey, JwtKeyError, JwtSettings};
pub use mtls::{ClientCertificate, MtlsAuth, MtlsClient};

/// The connection a request came on, as the listener saw it: the server
/// puts one in every request's extensions (tonic's connect info).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The remote address of the TCP connection.
    pub address: Option<SocketAddr>,
    /// The client certificate verified in the TLS handshake (mutual TLS).
    pub certificate: Option<Arc<ClientCertificate>>,
}

impl Peer {
    /// How the audit trail names the peer: the certificate's most specific
    /// identity and the address (`spiffe://acme/deployer@127.0.0.1:50312`),
    /// or the address alone.
    pub fn identity(&self) -> String {
        let address = self.address.map(|a| a.to_string()).unwrap_or_default();
        match self.certificate.as_deref().and_then(|c| c.identities.first()) {
            Some(name) => format!("{name}@{address}"),
            None => address,
        }
    }
}

/// How callers are identified.
#[derive(Debug)]
pub enum Authenticator {
    /// Loopback-only development mode: the principal comes from `x-user`,
    /// `x-org` and `x-roles` metadata, or the defaults.
    Development(DevelopmentAuth),
    /// Bearer JWTs verified against configured keys.
    Jwt(JwtAuth),
    /// Client certificates verified by the listener, mapped to principals.
    Mtls(MtlsAuth),
}

impl Authenticator {
    pub fn authenticate(&self, metadata: &MetadataMap, peer: Option<&Peer>) -> Result<Principal, Status> {
        match self {
            Self::Development(dev) => dev.authenticate(metadata, peer),
            Self::Jwt(jwt) => jwt.authenticate(metadata),
            Self::Mtls(mtls) => mtls.authenticate(peer),
        }
    }
}

/// The tonic interceptor that authenticates every request, counts it
/// against its principal's rate, and leaves the [`Principal`] in its
/// extensions.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    authenticator: Arc<Authenticator>,
    rate: Arc<PrincipalRate>,
}

impl AuthInterceptor {
    pub fn new(authenticator: Arc<Authenticator>, rate: Arc<PrincipalRate>) -> Self {
        Self { authenticator, rate }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request.extensions().get::<Peer>();
        let principal = self
            .authenticator
            .authenticate(request.metadata(), peer)
            .inspect_err(|refused| {
                // No principal, so no organization's audit trail to file it in.
                tracing::info!(
                    peer = ?peer.and_then(|p| p.address),
                    code = ?refused.code(),
                    reason = refused.message(),
                    "call refused before authentication"
                );
            })?;
        self.rate.check(&principal)?;
        let principal = Principal {
            origin: Origin {
                request_id: request
                    .extensions()
                    .get::<RequestId>()
                    .map(|id| id.0.clone())
                    .unwrap_or_default(),
                peer: peer.map(Peer::identity).unwrap_or_default(),
            },
            ..principal
        };
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// The principal [`AuthInterceptor`] attached to a request.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, registry_core::Error> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| registry_core::Error::Unauthenticated("request was not authenticated".into()))
}
