//! `platform.registry.v1.RegistryService` over the domain use cases.

use registry_core::audit_trail::AuditFilter;
use registry_core::ports::login::{LiveOutcome, LiveReport};
use registry_core::registries::{NewRegistry, Registries, RegistryPatch, TestMode, TestSubject};
use registry_core::{Error, FieldViolation};
use registry_proto::v1 as pb;
use registry_proto::v1::registry_service_server::RegistryService;
use tonic::{Request, Response, Status};

use crate::auth::principal;
use crate::convert::{
    audit_action_from_proto, audit_event_to_proto, credentials_from_proto, kind_from_proto, registry_to_proto,
    registry_types, timestamp_from_proto,
};
use crate::status::reply;

/// The gRPC face of [`Registries`].
#[derive(Debug, Clone)]
pub struct RegistryApi {
    registries: Registries,
}

impl RegistryApi {
    pub fn new(registries: Registries) -> Self {
        Self { registries }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// The update-mask paths a client may name.
const UPDATABLE: [&str; 2] = ["name", "credentials"];
/// Paths that exist on `Registry` but cannot be written.
const IMMUTABLE: [&str; 9] = [
    "id",
    "type",
    "server",
    "credential_hints",
    "organization",
    "created_by",
    "create_time",
    "update_time",
    "credential_revision",
];

/// Turns an update request into a patch, checking its mask.
fn patch_from(registry: pb::Registry, mask: Option<prost_types::FieldMask>) -> Result<RegistryPatch, Error> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    let mut violations = Vec::new();
    for path in &paths {
        if IMMUTABLE.contains(&path.as_str()) || path == "etag" {
            violations.push(FieldViolation::new(
                "update_mask",
                format!("{path:?} cannot be updated (updatable: name, credentials)"),
            ));
        } else if !UPDATABLE.contains(&path.as_str()) {
            violations.push(FieldViolation::new(
                "update_mask",
                format!("unknown path {path:?} (updatable: name, credentials)"),
            ));
        }
    }
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    let named = |field: &str| paths.iter().any(|p| p == field);
    let (want_name, want_credentials) = if paths.is_empty() {
        (!registry.name.is_empty(), registry.credentials.is_some())
    } else {
        (named("name"), named("credentials"))
    };
    let credentials = if want_credentials {
        let credentials = credentials_from_proto(registry.credentials, "registry.credentials")?;
        if credentials.is_none() {
            return Err(Error::invalid(
                "registry.credentials",
                "is required when update_mask names credentials",
            ));
        }
        credentials
    } else {
        None
    };
    Ok(RegistryPatch {
        name: want_name.then_some(registry.name),
        credentials,
    })
}

fn test_mode(value: i32) -> Result<TestMode, Error> {
    match pb::TestMode::try_from(value) {
        Ok(pb::TestMode::Unspecified | pb::TestMode::Structural) => Ok(TestMode::Structural),
        Ok(pb::TestMode::Live) => Ok(TestMode::Live),
        Err(_) => Err(Error::invalid("mode", format!("unknown test mode {value}"))),
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn list_registry_types(
        &self,
        request: Request<pb::ListRegistryTypesRequest>,
    ) -> Reply<pb::ListRegistryTypesResponse> {
        reply(principal(&request).map(|_| pb::ListRegistryTypesResponse {
            registry_types: registry_types(),
        }))
    }

    async fn create_registry(&self, request: Request<pb::CreateRegistryRequest>) -> Reply<pb::CreateRegistryResponse> {
        reply(self.create(request).await)
    }

    async fn get_registry(&self, request: Request<pb::GetRegistryRequest>) -> Reply<pb::GetRegistryResponse> {
        reply(self.get(request).await)
    }

    async fn list_registries(&self, request: Request<pb::ListRegistriesRequest>) -> Reply<pb::ListRegistriesResponse> {
        reply(self.list(request).await)
    }

    async fn update_registry(&self, request: Request<pb::UpdateRegistryRequest>) -> Reply<pb::UpdateRegistryResponse> {
        reply(self.update(request).await)
    }

    async fn delete_registry(&self, request: Request<pb::DeleteRegistryRequest>) -> Reply<pb::DeleteRegistryResponse> {
        reply(self.delete(request).await)
    }

    async fn test_registry_connection(
        &self,
        request: Request<pb::TestRegistryConnectionRequest>,
    ) -> Reply<pb::TestRegistryConnectionResponse> {
        reply(self.test(request).await)
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        reply(self.audit_events(request).await)
    }

    async fn rekey_registries(
        &self,
        request: Request<pb::RekeyRegistriesRequest>,
    ) -> Reply<pb::RekeyRegistriesResponse> {
        reply(self.rekey(request).await)
    }
}

/// The RPCs in domain terms: each maps its error to a status once, in
/// [`reply`].
impl RegistryApi {
    async fn rekey(&self, request: Request<pb::RekeyRegistriesRequest>) -> Result<pb::RekeyRegistriesResponse, Error> {
        let principal = principal(&request)?;
        let report = self
            .registries
            .rekey(&principal, request.into_inner().max_registries)
            .await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(pb::RekeyRegistriesResponse {
            primary_key_id: report.primary_key_id,
            rewrapped: count(report.rewrapped),
            raced: count(report.raced),
            failures: report
                .failures
                .into_iter()
                .map(|failure| pb::RekeyFailure {
                    registry_id: failure.registry_id.to_string(),
                    reason: failure.reason,
                })
                .collect(),
            remaining: count(report.remaining),
        })
    }

    async fn create(&self, request: Request<pb::CreateRegistryRequest>) -> Result<pb::CreateRegistryResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let registry = request
            .registry
            .ok_or_else(|| Error::invalid("registry", "is required"))?;
        let new = NewRegistry {
            kind: kind_from_proto(registry.r#type, "registry.type")?,
            name: registry.name,
            credentials: credentials_from_proto(registry.credentials, "registry.credentials")?,
            request_id: Some(request.request_id).filter(|id| !id.is_empty()),
        };
        let created = self.registries.create(&principal, new).await?;
        Ok(pb::CreateRegistryResponse {
            registry: Some(registry_to_proto(created)),
        })
    }

    async fn get(&self, request: Request<pb::GetRegistryRequest>) -> Result<pb::GetRegistryResponse, Error> {
        let principal = principal(&request)?;
        let registry = self.registries.get(&principal, &request.get_ref().registry_id).await?;
        Ok(pb::GetRegistryResponse {
            registry: Some(registry_to_proto(registry)),
        })
    }

    async fn list(&self, request: Request<pb::ListRegistriesRequest>) -> Result<pb::ListRegistriesResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let kind = kind_from_proto(request.r#type, "type")?;
        let page = self
            .registries
            .list(&principal, request.page_size, &request.page_token, kind)
            .await?;
        Ok(pb::ListRegistriesResponse {
            registries: page.registries.into_iter().map(registry_to_proto).collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<pb::ListAuditEventsResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let filter = AuditFilter {
            registry_id: request.registry_id,
            actor: request.actor,
            action: audit_action_from_proto(request.action, "action")?,
            since: timestamp_from_proto(request.start_time, "start_time")?,
            until: timestamp_from_proto(request.end_time, "end_time")?,
        };
        let page = self
            .registries
            .audit_trail(&principal, &filter, request.page_size, &request.page_token)
            .await?;
        Ok(pb::ListAuditEventsResponse {
            events: page.events.into_iter().map(audit_event_to_proto).collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn update(&self, request: Request<pb::UpdateRegistryRequest>) -> Result<pb::UpdateRegistryResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let registry = request
            .registry
            .ok_or_else(|| Error::invalid("registry", "is required"))?;
        let patch = patch_from(registry, request.update_mask)?;
        let updated = self
            .registries
            .update(&principal, &request.registry_id, patch, &request.etag)
            .await?;
        Ok(pb::UpdateRegistryResponse {
            registry: Some(registry_to_proto(updated)),
        })
    }

    async fn delete(&self, request: Request<pb::DeleteRegistryRequest>) -> Result<pb::DeleteRegistryResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.registries
            .delete(&principal, &request.registry_id, &request.etag, request.force)
            .await?;
        Ok(pb::DeleteRegistryResponse {})
    }

    async fn test(
        &self,
        request: Request<pb::TestRegistryConnectionRequest>,
    ) -> Result<pb::TestRegistryConnectionResponse, Error> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let mode = test_mode(request.mode)?;
        let subject = if request.registry_id.is_empty() {
            TestSubject::Inline {
                kind: kind_from_proto(request.r#type, "type")?,
                credentials: credentials_from_proto(request.credentials, "credentials")?,
            }
        } else if request.r#type != 0 || request.credentials.is_some() {
            return Err(Error::invalid(
                "registry_id",
                "set either registry_id or type and credentials, not both",
            ));
        } else {
            TestSubject::Saved(request.registry_id)
        };
        let image = Some(request.image.as_str()).filter(|image| !image.is_empty());
        let outcome = self.registries.test(&principal, subject, mode, image).await?;
        Ok(pb::TestRegistryConnectionResponse {
            ok: outcome.ok,
            live: outcome.live.map(live_to_proto),
            violations: outcome
                .violations
                .into_iter()
                .map(|v| pb::FieldViolation {
                    field: v.field,
                    description: v.description,
                })
                .collect(),
            mode: match mode {
                TestMode::Structural => pb::TestMode::Structural.into(),
                TestMode::Live => pb::TestMode::Live.into(),
            },
            server: outcome.server,
        })
    }
}

fn live_to_proto(report: LiveReport) -> pb::LiveTestResult {
    let outcome = match report.outcome {
        LiveOutcome::Ok => pb::LiveOutcome::Ok,
        LiveOutcome::Unauthorized => pb::LiveOutcome::Unauthorized,
        LiveOutcome::NoAccess => pb::LiveOutcome::NoAccess,
        LiveOutcome::NotFound => pb::LiveOutcome::NotFound,
        LiveOutcome::Unreachable => pb::LiveOutcome::Unreachable,
        LiveOutcome::TlsError => pb::LiveOutcome::TlsError,
        LiveOutcome::ProtocolError => pb::LiveOutcome::ProtocolError,
    };
    pb::LiveTestResult {
        outcome: outcome.into(),
        message: report.message,
        elapsed_ms: u32::try_from(report.elapsed.as_millis()).unwrap_or(u32::MAX),
        digest: report.digest.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    #[test]
    fn masks_name_what_changes() {
        let registry = pb::Registry {
            name: "renamed".into(),
            ..Default::default()
        };
        let patch = patch_from(registry.clone(), mask(&["name"])).unwrap();
        assert_eq!(patch.name.as_deref(), Some("renamed"));
        assert!(patch.credentials.is_none());
        let patch = patch_from(registry.clone(), None).unwrap();
        assert_eq!(patch.name.as_deref(), Some("renamed"));
        let err = patch_from(registry.clone(), mask(&["credentials"])).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(v) if v[0].field == "registry.credentials"));
        for bad in ["type", "nonsense", "etag"] {
            let err = patch_from(registry.clone(), mask(&[bad])).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(v) if v[0].field == "update_mask" && v[0].description.contains(bad))
            );
        }
    }
}
