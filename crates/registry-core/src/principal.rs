//! Who is calling: subject, organization and roles.

use std::fmt;
use std::str::FromStr;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads registries (masked) and tests them.
    Reader,
    /// Creates and updates registries, and deletes the ones it created.
    Writer,
    /// Receives credentials at deploy time.
    Deployer,
    /// Everything a writer and deployer may do, and reading the audit
    /// trail.
    Admin,
    /// Reads the audit trail (nothing else).
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [Self::Reader, Self::Writer, Self::Deployer, Self::Admin, Self::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected reader, writer, deployer, admin or auditor)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A set of roles.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    /// What a caller gets when nothing says otherwise: reader and writer.
    pub const DEFAULT: Roles = Roles(0b11);

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn with(self, role: Role) -> Self {
        Self(self.0 | role.bit())
    }

    /// Parses a comma-separated list (`reader,writer`); empty items are skipped.
    pub fn parse_list(list: &str) -> Result<Self, UnknownRole> {
        list.split(',')
            .filter(|item| !item.trim().is_empty())
            .try_fold(Roles::default(), |roles, item| Ok(roles.with(item.parse()?)))
    }

    /// Whether these roles allow `role`'s rights (admin allows everything, and
    /// writer, deployer and admin all imply reader).
    pub fn allows(self, role: Role) -> bool {
        self.contains(Role::Admin)
            || self.contains(role)
            || (role == Role::Reader && (self.contains(Role::Writer) || self.contains(Role::Deployer)))
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Role::ALL.into_iter().filter(|r| self.contains(*r)))
            .finish()
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        iter.into_iter().fold(Roles::default(), Roles::with)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub organization: String,
    pub roles: Roles,
    /// Where this request came from, for the audit trail.
    pub origin: Origin,
}

/// The request a principal made and the connection it came on, as the
/// transport saw them. Empty for the service's own actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The caller's `x-request-id`, or one the server made up.
    pub request_id: String,
    /// The peer: its address, and its certificate identity under mutual TLS
    /// (`spiffe://acme/deployer@127.0.0.1:50312`).
    pub peer: String,
}

impl Principal {
    pub fn new(subject: impl Into<String>, organization: impl Into<String>, roles: Roles) -> Self {
        Self {
            subject: subject.into(),
            organization: organization.into(),
            roles,
            origin: Origin::default(),
        }
    }

    /// `Err(PermissionDenied)` unless the roles allow `role`.
    pub fn require(&self, role: Role, action: &str) -> crate::Result<()> {
        if self.roles.allows(role) {
            Ok(())
        } else {
            Err(crate::Error::PermissionDenied(format!(
                "{action} needs the {role} role; {} has {:?}",
                self.subject, self.roles
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lists_parse() {
        let roles = Roles::parse_list("reader, Deployer").unwrap();
        assert!(roles.contains(Role::Reader) && roles.contains(Role::Deployer));
        assert!(!roles.allows(Role::Writer));
        assert!(Roles::parse_list("reader,root").is_err());
        assert_eq!(Roles::parse_list("").unwrap(), Roles::default());
    }

    #[test]
    fn implied_rights() {
        assert!(Roles::DEFAULT.allows(Role::Reader) && Roles::DEFAULT.allows(Role::Writer));
        assert!(!Roles::DEFAULT.allows(Role::Deployer));
        let admin: Roles = [Role::Admin].into_iter().collect();
        assert!(Role::ALL.into_iter().all(|r| admin.allows(r)));
        let reader: Roles = [Role::Reader].into_iter().collect();
        assert!(!reader.allows(Role::Writer));
    }
}
