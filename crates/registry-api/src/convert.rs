//! Protobuf messages <-> domain types.

use registry_core::audit::{AuditAction, AuditOutcome};
use registry_core::kind::FieldSpec;
use registry_core::ports::store::RecordedAuditEvent;
use registry_core::{Credentials, Error, GoogleLogin, Registry, RegistryKind, Timestamp};
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

/// The domain credentials of a protobuf `Credentials` at `field`; `None`
/// when the message or its oneof is unset. The prost message's strings move
/// into secret types.
pub fn credentials_from_proto(credentials: Option<pb::Credentials>, field: &str) -> Result<Option<Credentials>, Error> {
    use pb::credentials::Kind;
    let secret = SecretString::from;
    let Some(kind) = credentials.and_then(|c| c.kind) else {
        return Ok(None);
    };
    Ok(Some(match kind {
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
            server_identity: c.use_server_identity,
        },
        Kind::Acr(c) => Credentials::Acr {
            login_server: c.login_server,
            username: c.username,
            password: secret(c.password),
        },
        Kind::Gcr(c) => Credentials::Gcr {
            service_account_key: secret(c.service_account_key),
            login: google_login_from_proto(c.login, &format!("{field}.gcr.login"))?,
        },
        Kind::Gar(c) => Credentials::Gar {
            service_account_key: secret(c.service_account_key),
            region: c.region,
            login: google_login_from_proto(c.login, &format!("{field}.gar.login"))?,
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
    }))
}

fn google_login_from_proto(value: i32, field: &str) -> Result<GoogleLogin, Error> {
    match pb::GoogleLogin::try_from(value) {
        Ok(pb::GoogleLogin::Unspecified) => Ok(GoogleLogin::Default),
        Ok(pb::GoogleLogin::AccessToken) => Ok(GoogleLogin::AccessToken),
        Ok(pb::GoogleLogin::JsonKey) => Ok(GoogleLogin::JsonKey),
        Err(_) => Err(Error::invalid(field, format!("unknown google login {value}"))),
    }
}

/// A protobuf timestamp as a domain one (microseconds), `None` when unset.
pub fn timestamp_from_proto(t: Option<prost_types::Timestamp>, field: &str) -> Result<Option<Timestamp>, Error> {
    let Some(t) = t else { return Ok(None) };
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be from 0 to 999999999"));
    }
    let micros = t
        .seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(t.nanos / 1000)))
        .ok_or_else(|| Error::invalid(field, "is out of range"))?;
    Ok(Some(Timestamp(micros)))
}

const AUDIT_ACTIONS: [(AuditAction, pb::AuditAction); 13] = [
    (AuditAction::RegistryCreate, pb::AuditAction::RegistryCreate),
    (AuditAction::RegistryUpdate, pb::AuditAction::RegistryUpdate),
    (AuditAction::RegistryDelete, pb::AuditAction::RegistryDelete),
    (AuditAction::RegistryTest, pb::AuditAction::RegistryTest),
    (AuditAction::DeploymentPrepare, pb::AuditAction::DeploymentPrepare),
    (AuditAction::DeploymentRelease, pb::AuditAction::DeploymentRelease),
    (AuditAction::CredentialsResolve, pb::AuditAction::CredentialsResolve),
    (AuditAction::PullSecretRepair, pb::AuditAction::PullSecretRepair),
    (AuditAction::PullSecretWrite, pb::AuditAction::PullSecretWrite),
    (AuditAction::PullSecretDelete, pb::AuditAction::PullSecretDelete),
    (AuditAction::RegistryRead, pb::AuditAction::RegistryRead),
    (AuditAction::AuditRead, pb::AuditAction::AuditRead),
    (AuditAction::RegistryRekey, pb::AuditAction::RegistryRekey),
];

/// An audit action filter: `None` for UNSPECIFIED.
pub fn audit_action_from_proto(value: i32, field: &str) -> Result<Option<AuditAction>, Error> {
    match pb::AuditAction::try_from(value) {
        Ok(pb::AuditAction::Unspecified) => Ok(None),
        Ok(action) => Ok(AUDIT_ACTIONS.iter().find(|(_, p)| *p == action).map(|(a, _)| *a)),
        Err(_) => Err(Error::invalid(field, format!("{value} is not an AuditAction"))),
    }
}

/// The protobuf view of a stored audit event.
pub fn audit_event_to_proto(recorded: RecordedAuditEvent) -> pb::AuditEvent {
    let event = recorded.event;
    let action = AUDIT_ACTIONS
        .iter()
        .find(|(a, _)| *a == event.action)
        .map_or(pb::AuditAction::Unspecified, |(_, p)| *p);
    let outcome = match event.outcome {
        AuditOutcome::Ok => pb::AuditOutcome::Ok,
        AuditOutcome::Denied => pb::AuditOutcome::Denied,
        AuditOutcome::Invalid => pb::AuditOutcome::Invalid,
        AuditOutcome::Forced => pb::AuditOutcome::Forced,
        AuditOutcome::Failed => pb::AuditOutcome::Failed,
        AuditOutcome::Replayed => pb::AuditOutcome::Replayed,
    };
    pb::AuditEvent {
        id: recorded.id,
        time: Some(timestamp(event.at)),
        actor: event.actor,
        action: action.into(),
        registry_id: event.registry_id.map(|id| id.to_string()).unwrap_or_default(),
        outcome: outcome.into(),
        detail: event.detail,
        request_id: event.request_id,
        peer: event.peer,
    }
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

#[cfg(test)]
mod audit_tests {
    use super::*;

    #[test]
    fn every_audit_action_has_its_protobuf_value() {
        for action in AuditAction::ALL {
            let (_, proto) = AUDIT_ACTIONS.iter().find(|(a, _)| *a == action).unwrap();
            assert_eq!(
                audit_action_from_proto((*proto).into(), "action").unwrap(),
                Some(action)
            );
        }
        assert_eq!(audit_action_from_proto(0, "action").unwrap(), None);
        assert!(audit_action_from_proto(99, "action").is_err());
    }

    #[test]
    fn timestamps_convert_to_microseconds() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        assert_eq!(
            timestamp_from_proto(Some(t), "start_time").unwrap(),
            Some(Timestamp(1_700_000_000_123_456))
        );
        let bad = prost_types::Timestamp { seconds: 0, nanos: -1 };
        assert!(timestamp_from_proto(Some(bad), "start_time").is_err());
        assert_eq!(timestamp_from_proto(None, "start_time").unwrap(), None);
    }
}
