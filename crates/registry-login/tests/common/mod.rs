//! The ECR registry and keys the exchange tests share.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part

use registry_core::{Credentials, Registry, RegistryId, RegistryKind, Timestamp};

/// The account host of moto's (and the tests' own) ECR endpoint.
pub(crate) const ACCOUNT_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// An ECR registry in us-east-1 at credential revision `revision`.
pub(crate) fn ecr_registry(id: &str, revision: i64) -> Registry {
    Registry {
        id: RegistryId::parse(id).unwrap(),
        organization: "acme".into(),
        name: "Production ECR".into(),
        kind: RegistryKind::Ecr,
        server: "*.dkr.ecr.us-east-1.amazonaws.com".into(),
        hints: Vec::new(),
        created_by: "alice".into(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        etag: "e".into(),
        credential_revision: revision,
    }
}

/// AWS's documentation keys with `access_key_id` (and a session token for
/// temporary keys).
pub(crate) fn ecr_keys(access_key_id: &str, session_token: Option<&str>) -> Credentials {
    Credentials::Ecr {
        access_key_id: access_key_id.into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        region: "us-east-1".into(),
        session_token: session_token.map(Into::into),
        server_identity: false,
    }
}
