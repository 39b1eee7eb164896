//! Mutual TLS: the listener verified the client's certificate against the
//! configured client CA; here its identity is mapped to a principal.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use registry_core::{Principal, Roles};
use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Peer;

/// What a verified client certificate says about its holder, read once
/// per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The names it is issued to, most specific first: URI SANs (a SPIFFE
    /// id), then DNS SANs, then the subject's common names.
    pub identities: Vec<String>,
    /// Its `notAfter`, in seconds since the Unix epoch: a connection opened
    /// before it expired is not trusted after.
    pub not_after: i64,
}

impl ClientCertificate {
    /// Reads an end-entity certificate (DER).
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|e| format!("client certificate does not parse: {e}"))?;
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Some(names) = certificate
            .subject_alternative_name()
            .map_err(|e| format!("client certificate subjectAltName: {e}"))?
        {
            for name in &names.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        let common_names = certificate
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned));
        Ok(Self {
            identities: uris.into_iter().chain(dns_names).chain(common_names).collect(),
            not_after: certificate.validity().not_after.timestamp(),
        })
    }
}

/// The principal a certificate identity stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsClient {
    /// A URI SAN, DNS SAN or common name, matched exactly.
    pub identity: String,
    pub organization: String,
    pub roles: Roles,
}

/// Maps verified client certificates to principals.
#[derive(Debug)]
pub struct MtlsAuth {
    clients: HashMap<String, MtlsClient>,
}

impl MtlsAuth {
    /// `Err` names an identity configured twice.
    pub fn new(clients: Vec<MtlsClient>) -> Result<Self, String> {
        let mut by_identity = HashMap::with_capacity(clients.len());
        for client in clients {
            if let Some(other) = by_identity.insert(client.identity.clone(), client) {
                return Err(format!("client identity {:?} is configured twice", other.identity));
            }
        }
        Ok(Self { clients: by_identity })
    }

    pub(super) fn authenticate(&self, peer: Option<&Peer>) -> Result<Principal, Status> {
        let certificate = peer
            .and_then(|p| p.certificate.as_deref())
            .ok_or_else(|| Status::unauthenticated("mutual TLS: the connection carries no client certificate"))?;
        if unix_now() > certificate.not_after {
            return Err(Status::unauthenticated(
                "mutual TLS: the client certificate expired after the connection was opened; reconnect with a valid one",
            ));
        }
        let client = certificate
            .identities
            .iter()
            .find_map(|identity| self.clients.get(identity))
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "mutual TLS: no principal is configured for client certificate {:?} (auth.mtls.clients)",
                    certificate.identities
                ))
            })?;
        Ok(Principal::new(&client.identity, &client.organization, client.roles))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::Role;

    fn peer(identities: &[&str], not_after: i64) -> Peer {
        Peer {
            address: Some("10.0.0.7:5000".parse().unwrap()),
            certificate: Some(std::sync::Arc::new(ClientCertificate {
                identities: identities.iter().map(|s| (*s).to_owned()).collect(),
                not_after,
            })),
        }
    }

    fn auth() -> MtlsAuth {
        MtlsAuth::new(vec![
            MtlsClient {
                identity: "spiffe://platform.example/deployer".into(),
                organization: "acme".into(),
                roles: [Role::Deployer].into_iter().collect(),
            },
            MtlsClient {
                identity: "ops.platform.example".into(),
                organization: "acme".into(),
                roles: [Role::Admin].into_iter().collect(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn the_most_specific_mapped_identity_wins() {
        let far = unix_now() + 3600;
        let p = auth()
            .authenticate(Some(&peer(
                &["spiffe://platform.example/deployer", "ops.platform.example"],
                far,
            )))
            .unwrap();
        assert_eq!(p.subject, "spiffe://platform.example/deployer");
        assert!(p.roles.contains(Role::Deployer) && !p.roles.allows(Role::Admin));
        let p = auth()
            .authenticate(Some(&peer(&["spiffe://unknown", "ops.platform.example"], far)))
            .unwrap();
        assert!(p.roles.allows(Role::Admin));
    }

    #[test]
    fn unmapped_expired_and_missing_certificates_are_refused() {
        let err = auth()
            .authenticate(Some(&peer(&["intruder.example"], unix_now() + 3600)))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("intruder.example"), "{}", err.message());
        let err = auth()
            .authenticate(Some(&peer(&["ops.platform.example"], unix_now() - 1)))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = auth().authenticate(None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn an_identity_configured_twice_is_refused() {
        let client = MtlsClient {
            identity: "a".into(),
            organization: "acme".into(),
            roles: Roles::DEFAULT,
        };
        let err = MtlsAuth::new(vec![client.clone(), client]).unwrap_err();
        assert!(err.contains("\"a\""), "{err}");
    }
}
