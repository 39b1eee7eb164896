//! Protobuf messages <-> domain types.

use registry_core::kind::FieldSpec;
use registry_core::{Credentials, Error, Registry, RegistryKind, Timestamp};
use registry_proto::v1 as pb;
use secrecy::SecretString;

/// The domain kind of a protobuf type; `None` for UNSPECIFIED.
pub fn kind_from_proto(value: i32, field: &str) -> Result<Option<RegistryKind>, Error> {
    use pb::RegistryType as T;
    let kind = match T::try_from(value) {
        Ok(T::Unspecified) => None,
        Ok(T::Ghcr) => Some(RegistryKind::Ghcr),
        Ok(T::Docker) => Some(RegistryKind::Docker),
        Ok(T::Ecr) => Some(RegistryKind::Ecr),
        Ok(T::Acr) => Some(RegistryKind::Acr),
        Ok(T::Gcr) => Some(RegistryKind::Gcr),
        Ok(T::Gar) => Some(RegistryKind::Gar),
        Ok(T::Quay) => Some(RegistryKind::Quay),
        Ok(T::Custom) => Some(RegistryKind::Custom),
        Ok(T::Public) => Some(RegistryKind::Public),
        Err(_) => return Err(Error::invalid(field, format!("unknown registry type {value}"))),
    };
    Ok(kind)
}

pub fn kind_to_proto(kind: RegistryKind) -> pb::RegistryType {
    use pb::RegistryType as T;
    match kind {
        RegistryKind::Ghcr => T::Ghcr,
        RegistryKind::Docker => T::Docker,
        RegistryKind::Ecr => T::Ecr,
        RegistryKind::Acr => T::Acr,
        RegistryKind::Gcr => T::Gcr,
        RegistryKind::Gar => T::Gar,
        RegistryKind::Quay => T::Quay,
        RegistryKind::Custom => T::Custom,
        RegistryKind::Public => T::Public,
    }
}

/// The domain credentials of a protobuf `Credentials`; `None` when the message
/// or its oneof is unset. The prost message's strings move into secret types.
pub fn credentials_from_proto(credentials: Option<pb::Credentials>) -> Option<Credentials> {
    use pb::credentials::Kind;
    let secret = SecretString::from;
    Some(match credentials?.kind? {
        Kind::Ghcr(c) => Credentials::Ghcr {
            username: c.username,
            token: secret(c.token),
        },
        Kind::Docker(c) => Credentials::Docker {
            username: c.username,
            password: secret(c.password),
        },
        Kind::Ecr(c) => Credentials::Ecr {
            access_key_id: secret(c.access_key_id),
            secret_access_key: secret(c.secret_access_key),
            region: c.region,
            session_token: Some(c.session_token).filter(|t| !t.is_empty()).map(SecretString::from),
        },
        Kind::Acr(c) => Credentials::Acr {
            login_server: c.login_server,
            username: c.username,
            password: secret(c.password),
        },
        Kind::Gcr(c) => Credentials::Gcr {
            service_account_key: secret(c.service_account_key),
        },
        Kind::Gar(c) => Credentials::Gar {
            service_account_key: secret(c.service_account_key),
            region: c.region,
        },
        Kind::Quay(c) => Credentials::Quay {
            username: c.username,
            token: secret(c.token),
        },
        Kind::Custom(c) => Credentials::Custom {
            url: c.url,
            username: c.username,
            password: secret(c.password),
            ca_bundle: c.ca_bundle,
        },
        Kind::Public(pb::PublicCredentials {}) => Credentials::Public,
    })
}

/// A domain timestamp as a protobuf one.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds(),
        nanos: t.subsec_nanos(),
    }
}

/// The protobuf view of a registry: credentials masked, never the secret.
pub fn registry_to_proto(registry: Registry) -> pb::Registry {
    pb::Registry {
        id: registry.id.to_string(),
        name: registry.name,
        r#type: kind_to_proto(registry.kind).into(),
        credentials: None,
        server: registry.server,
        credential_hints: registry
            .hints
            .into_iter()
            .map(|h| pb::CredentialHint {
                field: h.field,
                value: h.value,
                secret: h.secret,
            })
            .collect(),
        organization: registry.organization,
        created_by: registry.created_by,
        create_time: Some(timestamp(registry.created_at)),
        update_time: Some(timestamp(registry.updated_at)),
        etag: registry.etag,
        credential_revision: registry.credential_revision,
    }
}

fn field_to_proto(field: &FieldSpec, required: bool) -> pb::CredentialField {
    pb::CredentialField {
        name: field.name.to_owned(),
        json_name: field.json_name.to_owned(),
        label: field.label.to_owned(),
        secret: field.secret,
        required,
        help: field.help.to_owned(),
        multiline: field.multiline,
    }
}

/// The form schema of every kind, in the guide's order.
pub fn registry_types() -> Vec<pb::RegistryTypeInfo> {
    RegistryKind::ALL
        .into_iter()
        .map(|kind| pb::RegistryTypeInfo {
            r#type: kind_to_proto(kind).into(),
            key: kind.key().to_owned(),
            label: kind.label().to_owned(),
            default_server: kind.default_server().unwrap_or_default().to_owned(),
            fields: (kind.fields().iter().map(|f| field_to_proto(f, true)))
                .chain(kind.optional_fields().iter().map(|f| field_to_proto(f, false)))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_proto_type() {
        for kind in RegistryKind::ALL {
            let value: i32 = kind_to_proto(kind).into();
            assert_eq!(kind_from_proto(value, "type").unwrap(), Some(kind));
        }
        assert_eq!(kind_from_proto(0, "type").unwrap(), None);
        assert!(
            matches!(kind_from_proto(99, "registry.type"), Err(Error::InvalidArgument(v)) if v[0].field == "registry.type")
        );
    }

    #[test]
    fn the_type_list_covers_the_guide() {
        let types = registry_types();
        let keys: Vec<_> = types.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            ["GHCR", "Docker", "ECR", "ACR", "GCR", "GAR", "Quay", "Custom", "Public"]
        );
        // The guide's three required fields, then the optional session
        // token of temporary keys.
        let ecr = &types[2];
        assert_eq!(ecr.fields.len(), 4);
        assert!(ecr.fields[..3].iter().all(|f| f.required));
        assert!(ecr.fields[1].secret && !ecr.fields[2].secret);
        assert!(ecr.fields[3].name == "session_token" && ecr.fields[3].secret && !ecr.fields[3].required);
    }
}
