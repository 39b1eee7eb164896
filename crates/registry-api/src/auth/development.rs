//! The loopback-only development mode: the principal comes from request
//! metadata, or the configured defaults.

use registry_core::{Principal, Roles};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::Peer;

/// Metadata keys of the development mode.
pub const USER_HEADER: &str = "x-user";
pub const ORG_HEADER: &str = "x-org";
pub const ROLES_HEADER: &str = "x-roles";

/// The development mode's principal when metadata names none.
#[derive(Debug, Clone)]
pub struct DevelopmentAuth {
    pub default_subject: String,
    pub default_organization: String,
}

impl DevelopmentAuth {
    /// The principal the metadata names. Only a loopback peer is believed:
    /// the listener is bound to loopback, and this holds even if a proxy
    /// or a port-forward in front of it were not.
    pub(super) fn authenticate(&self, metadata: &MetadataMap, peer: Option<&Peer>) -> Result<Principal, Status> {
        if let Some(address) = peer.and_then(|p| p.address)
            && !address.ip().to_canonical().is_loopback()
        {
            return Err(Status::unauthenticated(format!(
                "development mode answers loopback callers only, not {}",
                address.ip()
            )));
        }
        principal_from_metadata(self, metadata)
    }
}

fn principal_from_metadata(dev: &DevelopmentAuth, metadata: &MetadataMap) -> Result<Principal, Status> {
    let read = |key: &str| -> Result<Option<String>, Status> {
        let Some(value) = metadata.get(key) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| Status::unauthenticated(format!("{key} metadata must be printable ASCII")))?
            .trim();
        if value.len() > 256 {
            return Err(Status::unauthenticated(format!(
                "{key} metadata is longer than 256 characters"
            )));
        }
        Ok((!value.is_empty()).then(|| value.to_owned()))
    };
    let subject = read(USER_HEADER)?.unwrap_or_else(|| dev.default_subject.clone());
    let organization = read(ORG_HEADER)?.unwrap_or_else(|| dev.default_organization.clone());
    let roles = match read(ROLES_HEADER)? {
        None => Roles::DEFAULT,
        Some(list) => {
            Roles::parse_list(&list).map_err(|e| Status::unauthenticated(format!("{ROLES_HEADER} metadata: {e}")))?
        }
    };
    Ok(Principal::new(subject, organization, roles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::Role;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().unwrap());
        }
        map
    }

    struct Dev(DevelopmentAuth);

    impl Dev {
        fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
            let local = Peer {
                address: Some("127.0.0.1:40000".parse().unwrap()),
                certificate: None,
            };
            self.0.authenticate(metadata, Some(&local))
        }
    }

    fn dev() -> Dev {
        Dev(DevelopmentAuth {
            default_subject: "developer".into(),
            default_organization: "default".into(),
        })
    }

    #[test]
    fn development_mode_reads_metadata_or_defaults() {
        let p = dev().authenticate(&MetadataMap::new()).unwrap();
        assert_eq!((p.subject.as_str(), p.organization.as_str()), ("developer", "default"));
        assert_eq!(p.roles, Roles::DEFAULT);
        let p = dev()
            .authenticate(&metadata(&[
                ("x-user", "bob"),
                ("x-org", "acme"),
                ("x-roles", "reader"),
            ]))
            .unwrap();
        assert_eq!((p.subject.as_str(), p.organization.as_str()), ("bob", "acme"));
        assert!(!p.roles.allows(Role::Writer));
        let err = dev().authenticate(&metadata(&[("x-roles", "root")])).unwrap_err();
        assert!(err.message().contains("x-roles"));
    }

    #[test]
    fn development_mode_believes_loopback_peers_only() {
        let dev = dev().0;
        for local in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            let peer = Peer {
                address: Some(local.parse().unwrap()),
                certificate: None,
            };
            assert!(dev.authenticate(&MetadataMap::new(), Some(&peer)).is_ok(), "{local}");
        }
        let remote = Peer {
            address: Some("10.1.2.3:5000".parse().unwrap()),
            certificate: None,
        };
        let err = dev.authenticate(&MetadataMap::new(), Some(&remote)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("10.1.2.3"), "{}", err.message());
    }
}
