//! The nine registry kinds of the product guide and the form schema of each.

use std::fmt;
use std::str::FromStr;

/// A registry provider, named after the guide's type keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistryKind {
    Ghcr,
    Docker,
    Ecr,
    Acr,
    Gcr,
    Gar,
    Quay,
    Custom,
    Public,
}

/// One credential field of a kind's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name in snake_case, as in the protobuf `Credentials` messages.
    pub name: &'static str,
    /// The guide's name of the field (camelCase).
    pub json_name: &'static str,
    pub label: &'static str,
    pub secret: bool,
    pub help: &'static str,
    pub multiline: bool,
}

const fn field(
    name: &'static str,
    json_name: &'static str,
    label: &'static str,
    secret: bool,
    help: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        json_name,
        label,
        secret,
        help,
        multiline: false,
    }
}

const SERVICE_ACCOUNT_KEY: FieldSpec = FieldSpec {
    name: "service_account_key",
    json_name: "serviceAccountKey",
    label: "Service account key (JSON)",
    secret: true,
    help: "the key file downloaded from Google Cloud: JSON with type service_account, client_email and private_key",
    multiline: true,
};

impl RegistryKind {
    /// Every kind, in the guide's order.
    pub const ALL: [RegistryKind; 9] = [
        Self::Ghcr,
        Self::Docker,
        Self::Ecr,
        Self::Acr,
        Self::Gcr,
        Self::Gar,
        Self::Quay,
        Self::Custom,
        Self::Public,
    ];

    /// The guide's type key (`GHCR`, `Docker`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Self::Ghcr => "GHCR",
            Self::Docker => "Docker",
            Self::Ecr => "ECR",
            Self::Acr => "ACR",
            Self::Gcr => "GCR",
            Self::Gar => "GAR",
            Self::Quay => "Quay",
            Self::Custom => "Custom",
            Self::Public => "Public",
        }
    }

    /// The provider's display name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ghcr => "GitHub Container Registry",
            Self::Docker => "Docker Hub",
            Self::Ecr => "Amazon ECR",
            Self::Acr => "Azure Container Registry",
            Self::Gcr => "Google Container Registry",
            Self::Gar => "Google Artifact Registry",
            Self::Quay => "Red Hat Quay",
            Self::Custom => "Custom / Self-hosted",
            Self::Public => "Public (no auth)",
        }
    }

    /// The oneof field name of this kind in the protobuf `Credentials`.
    pub fn proto_field(self) -> &'static str {
        match self {
            Self::Ghcr => "ghcr",
            Self::Docker => "docker",
            Self::Ecr => "ecr",
            Self::Acr => "acr",
            Self::Gcr => "gcr",
            Self::Gar => "gar",
            Self::Quay => "quay",
            Self::Custom => "custom",
            Self::Public => "public",
        }
    }

    /// The registry host when the kind fixes it.
    pub fn default_server(self) -> Option<&'static str> {
        match self {
            Self::Ghcr => Some("ghcr.io"),
            Self::Docker => Some("docker.io"),
            Self::Gcr => Some("gcr.io"),
            Self::Quay => Some("quay.io"),
            Self::Ecr | Self::Acr | Self::Gar | Self::Custom | Self::Public => None,
        }
    }

    /// The optional credential fields, after the required ones on the form.
    pub fn optional_fields(self) -> &'static [FieldSpec] {
        const ECR: &[FieldSpec] = &[field(
            "session_token",
            "sessionToken",
            "Session token",
            true,
            "the session token of temporary (ASIA) keys; empty for an IAM user's (AKIA) keys",
        )];
        const CUSTOM: &[FieldSpec] = &[FieldSpec {
            multiline: true,
            ..field(
                "ca_bundle",
                "caBundle",
                "CA certificates",
                false,
                "PEM certificates of the registry's own certificate authority, trusted besides the system's; \
                 empty for a registry with a publicly trusted certificate",
            )
        }];
        match self {
            Self::Ecr => ECR,
            Self::Custom => CUSTOM,
            _ => &[],
        }
    }

    /// The required credential fields, in form order (the guide's table).
    pub fn fields(self) -> &'static [FieldSpec] {
        const GHCR: &[FieldSpec] = &[
            field(
                "username",
                "username",
                "Username",
                false,
                "the GitHub user or organization",
            ),
            field(
                "token",
                "token",
                "Token",
                true,
                "a personal access token (ghp_ + 36 characters) or fine-grained token (github_pat_...) with read:packages",
            ),
        ];
        const DOCKER: &[FieldSpec] = &[
            field(
                "username",
                "username",
                "Username",
                false,
                "your Docker ID: 4 to 30 lowercase letters and digits",
            ),
            field(
                "password",
                "password",
                "Password",
                true,
                "an access token (dckr_pat_...), not your password",
            ),
        ];
        const ECR: &[FieldSpec] = &[
            field(
                "access_key_id",
                "accessKeyId",
                "Access key ID",
                true,
                "AKIA or ASIA followed by 16 upper-case letters and digits",
            ),
            field(
                "secret_access_key",
                "secretAccessKey",
                "Secret access key",
                true,
                "the 40-character secret of the access key",
            ),
            field(
                "region",
                "region",
                "Region",
                false,
                "the AWS region of the registry, e.g. us-east-1",
            ),
        ];
        const ACR: &[FieldSpec] = &[
            field(
                "login_server",
                "loginServer",
                "Login server",
                false,
                "<registry name>.azurecr.io",
            ),
            field(
                "username",
                "username",
                "Username",
                false,
                "a service principal's application id, a token name or the admin user",
            ),
            field(
                "password",
                "password",
                "Password",
                true,
                "the service principal secret or password",
            ),
        ];
        const GCR: &[FieldSpec] = &[SERVICE_ACCOUNT_KEY];
        const GAR: &[FieldSpec] = &[
            SERVICE_ACCOUNT_KEY,
            field(
                "region",
                "region",
                "Region",
                false,
                "the repository location, e.g. us-central1 or europe",
            ),
        ];
        const QUAY: &[FieldSpec] = &[
            field(
                "username",
                "username",
                "Username",
                false,
                "a robot account (org+name) or user name",
            ),
            field("token", "token", "Token", true, "the robot token or encrypted password"),
        ];
        const CUSTOM: &[FieldSpec] = &[
            field(
                "url",
                "url",
                "Registry URL",
                false,
                "https://host[:port]; http only for loopback addresses",
            ),
            field("username", "username", "Username", false, "the registry user"),
            field(
                "password",
                "password",
                "Password",
                true,
                "the registry password or token",
            ),
        ];
        match self {
            Self::Ghcr => GHCR,
            Self::Docker => DOCKER,
            Self::Ecr => ECR,
            Self::Acr => ACR,
            Self::Gcr => GCR,
            Self::Gar => GAR,
            Self::Quay => QUAY,
            Self::Custom => CUSTOM,
            Self::Public => &[],
        }
    }
}

impl fmt::Display for RegistryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The text is not one of the guide's type keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown registry type {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for RegistryKind {
    type Err = UnknownKind;

    /// Parses a type key, ignoring case (`GHCR`, `ghcr`, `Docker`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.key().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_ignore_case() {
        for kind in RegistryKind::ALL {
            assert_eq!(kind.key().parse::<RegistryKind>(), Ok(kind));
            assert_eq!(kind.key().to_lowercase().parse::<RegistryKind>(), Ok(kind));
        }
        assert!("harbor".parse::<RegistryKind>().is_err());
    }

    #[test]
    fn fields_follow_the_guide_table() {
        let names = |kind: RegistryKind| kind.fields().iter().map(|f| f.json_name).collect::<Vec<_>>();
        assert_eq!(names(RegistryKind::Ghcr), ["username", "token"]);
        assert_eq!(names(RegistryKind::Docker), ["username", "password"]);
        assert_eq!(names(RegistryKind::Ecr), ["accessKeyId", "secretAccessKey", "region"]);
        assert_eq!(names(RegistryKind::Acr), ["loginServer", "username", "password"]);
        assert_eq!(names(RegistryKind::Gcr), ["serviceAccountKey"]);
        assert_eq!(names(RegistryKind::Gar), ["serviceAccountKey", "region"]);
        assert_eq!(names(RegistryKind::Quay), ["username", "token"]);
        assert_eq!(names(RegistryKind::Custom), ["url", "username", "password"]);
        assert!(names(RegistryKind::Public).is_empty());
    }
}
