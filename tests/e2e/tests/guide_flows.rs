//! The product guide's flows through the real server on a loopback socket:
//! add, test, list, rotate, rename, delete — with masking, organization
//! scoping, roles, creator-only deletion, etags and precise errors.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use prost_types::FieldMask;
use registry_e2e::{TestServer, as_user, with_roles};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use tonic::Code;
use tonic_types::StatusExt;

const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const NEW_TOKEN: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";

fn ghcr(token: &str) -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: "myorg".into(),
            token: token.into(),
        })),
    }
}

fn ecr() -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ecr(pb::EcrCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        })),
    }
}

fn create_request(
    name: &str,
    kind: pb::RegistryType,
    credentials: Option<pb::Credentials>,
) -> pb::CreateRegistryRequest {
    pb::CreateRegistryRequest {
        registry: Some(pb::Registry {
            name: name.into(),
            r#type: kind.into(),
            credentials,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

fn field_violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn add_test_list_rotate_delete() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    // Test Connection before saving.
    let tested = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                r#type: pb::RegistryType::Ghcr.into(),
                credentials: Some(ghcr(TOKEN)),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok, "{tested:?}");
    assert_eq!(tested.server, "ghcr.io");

    // Save.
    let created = client
        .create_registry(as_user(
            create_request("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN))),
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert!(
        created.id.starts_with("reg-") && created.id.len() == 20,
        "{}",
        created.id
    );
    assert!(
        created.id[4..]
            .bytes()
            .all(|b| b"abcdefghijklmnopqrstuvwxyz234567".contains(&b))
    );
    assert_eq!(created.server, "ghcr.io");
    assert_eq!(created.credential_revision, 1);
    assert_eq!(created.created_by, "alice");
    assert_eq!(created.organization, "acme");
    assert!(created.credentials.is_none());
    let token_hint = created.credential_hints.iter().find(|h| h.field == "token").unwrap();
    assert_eq!(token_hint.value, "ghp_…8B4a");
    assert!(token_hint.secret);

    // It shows up in the list, and tests fine as saved.
    let listed = client
        .list_registries(as_user(pb::ListRegistriesRequest::default(), "bob", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.registries, vec![created.clone()]);
    let saved_test = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                registry_id: created.id.clone(),
                ..Default::default()
            },
            "bob",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(saved_test.ok && saved_test.violations.is_empty());

    // Rotate: new credentials, new revision, new etag; nothing else changes.
    let rotated = client
        .update_registry(as_user(
            pb::UpdateRegistryRequest {
                registry_id: created.id.clone(),
                registry: Some(pb::Registry {
                    credentials: Some(ghcr(NEW_TOKEN)),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["credentials".into()],
                }),
                etag: created.etag.clone(),
            },
            "bob",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert_eq!(rotated.credential_revision, 2);
    assert_ne!(rotated.etag, created.etag);
    assert_eq!(rotated.name, "My GHCR");
    assert_eq!(rotated.created_by, "alice");
    assert!(rotated.credential_hints.iter().any(|h| h.value == "ghp_…DcBa"));

    // Rename without resending secrets keeps the credentials.
    let renamed = client
        .update_registry(as_user(
            pb::UpdateRegistryRequest {
                registry_id: created.id.clone(),
                registry: Some(pb::Registry {
                    name: "GHCR (prod)".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
                etag: String::new(),
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert_eq!(renamed.name, "GHCR (prod)");
    assert_eq!(renamed.credential_revision, 2);
    assert_eq!(renamed.credential_hints, rotated.credential_hints);

    // Only the creator deletes.
    let denied = client
        .delete_registry(as_user(
            pb::DeleteRegistryRequest {
                registry_id: created.id.clone(),
                ..Default::default()
            },
            "bob",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("only the creator"), "{}", denied.message());
    client
        .delete_registry(as_user(
            pb::DeleteRegistryRequest {
                registry_id: created.id.clone(),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap();
    let gone = client
        .get_registry(as_user(
            pb::GetRegistryRequest {
                registry_id: created.id.clone(),
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(gone.message().contains(&created.id));
}

#[tokio::test]
async fn organizations_never_see_each_other() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = client
        .create_registry(as_user(
            create_request("Production ECR", pb::RegistryType::Ecr, Some(ecr())),
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert_eq!(created.server, "*.dkr.ecr.us-east-1.amazonaws.com");
    let id = created.id.clone();

    let get = client
        .get_registry(as_user(
            pb::GetRegistryRequest {
                registry_id: id.clone(),
            },
            "alice",
            "globex",
        ))
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let delete = client
        .delete_registry(as_user(
            pb::DeleteRegistryRequest {
                registry_id: id.clone(),
                ..Default::default()
            },
            "alice",
            "globex",
        ))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::NotFound);
    let test = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                registry_id: id.clone(),
                ..Default::default()
            },
            "alice",
            "globex",
        ))
        .await
        .unwrap_err();
    assert_eq!(test.code(), Code::NotFound);
    let listed = client
        .list_registries(as_user(pb::ListRegistriesRequest::default(), "alice", "globex"))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.registries.is_empty());
    // The same name is free in another organization.
    client
        .create_registry(as_user(
            create_request("Production ECR", pb::RegistryType::Ecr, Some(ecr())),
            "carol",
            "globex",
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn readers_read_but_never_write() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = client
        .create_registry(as_user(
            create_request("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN))),
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    let reader = |m| with_roles(m, "rita", "acme", "reader");
    client
        .get_registry(reader(pb::GetRegistryRequest {
            registry_id: created.id.clone(),
        }))
        .await
        .unwrap();
    let create = client
        .create_registry(with_roles(
            create_request("Other", pb::RegistryType::Ecr, Some(ecr())),
            "rita",
            "acme",
            "reader",
        ))
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::PermissionDenied);
    let update = client
        .update_registry(with_roles(
            pb::UpdateRegistryRequest {
                registry_id: created.id.clone(),
                registry: Some(pb::Registry {
                    name: "renamed".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "rita",
            "acme",
            "reader",
        ))
        .await
        .unwrap_err();
    assert_eq!(update.code(), Code::PermissionDenied);
    // Even its creator cannot delete with a reader-only role.
    let delete = client
        .delete_registry(with_roles(
            pb::DeleteRegistryRequest {
                registry_id: created.id.clone(),
                ..Default::default()
            },
            "alice",
            "acme",
            "reader",
        ))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::PermissionDenied);
    let unknown_role = client
        .list_registries(with_roles(pb::ListRegistriesRequest::default(), "rita", "acme", "root"))
        .await
        .unwrap_err();
    assert_eq!(unknown_role.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn etags_guard_concurrent_writes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = client
        .create_registry(as_user(
            create_request("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN))),
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    let rename = |name: &str, etag: &str| {
        as_user(
            pb::UpdateRegistryRequest {
                registry_id: created.id.clone(),
                registry: Some(pb::Registry {
                    name: name.into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
                etag: etag.into(),
            },
            "alice",
            "acme",
        )
    };
    let first = client
        .update_registry(rename("first", &created.etag))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    let stale = client
        .update_registry(rename("second", &created.etag))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let stale_delete = client
        .delete_registry(as_user(
            pb::DeleteRegistryRequest {
                registry_id: created.id.clone(),
                etag: created.etag.clone(),
                force: false,
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted);
    let current = client
        .get_registry(as_user(
            pb::GetRegistryRequest {
                registry_id: created.id.clone(),
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert_eq!(current, first);
    client
        .delete_registry(as_user(
            pb::DeleteRegistryRequest {
                registry_id: created.id.clone(),
                etag: first.etag.clone(),
                force: false,
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn retried_creates_and_duplicate_names() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut request = create_request("Production ECR", pb::RegistryType::Ecr, Some(ecr()));
    request.request_id = "5f0c6a7e-2b8e-4c1d-9a53-0d3b7e1f4a22".into();
    let first = client
        .create_registry(as_user(request.clone(), "alice", "acme"))
        .await
        .unwrap()
        .into_inner();
    let retry = client
        .create_registry(as_user(request.clone(), "alice", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    let listed = client
        .list_registries(as_user(pb::ListRegistriesRequest::default(), "alice", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.registries.len(), 1);

    let duplicate = client
        .create_registry(as_user(
            create_request("Production ECR", pb::RegistryType::Ecr, Some(ecr())),
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert!(duplicate.message().contains("Production ECR"));
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let placeholder = client
        .create_registry(as_user(
            create_request("My GHCR", pb::RegistryType::Ghcr, Some(ghcr("ghp_xxxxxxxxxxxx"))),
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(placeholder.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&placeholder), ["registry.credentials.ghcr.token"]);
    assert!(!placeholder.message().contains("ghp_xxxxxxxxxxxx"));

    let cases: Vec<(pb::CreateRegistryRequest, &[&str])> = vec![
        (pb::CreateRegistryRequest::default(), &["registry"]),
        (
            create_request("", pb::RegistryType::Ghcr, Some(ghcr(TOKEN))),
            &["registry.name"],
        ),
        (
            create_request("x", pb::RegistryType::Unspecified, Some(ghcr(TOKEN))),
            &["registry.type"],
        ),
        (
            create_request("x", pb::RegistryType::Ecr, Some(ghcr(TOKEN))),
            &["registry.credentials"],
        ),
        (
            create_request("x", pb::RegistryType::Docker, None),
            &["registry.credentials"],
        ),
        (
            create_request(
                "x",
                pb::RegistryType::Ecr,
                Some(pb::Credentials {
                    kind: Some(Kind::Ecr(pb::EcrCredentials {
                        access_key_id: "AKIA123".into(),
                        secret_access_key: "short".into(),
                        region: "moon-1".into(),
                    })),
                }),
            ),
            &[
                "registry.credentials.ecr.access_key_id",
                "registry.credentials.ecr.secret_access_key",
                "registry.credentials.ecr.region",
            ],
        ),
    ];
    for (request, fields) in cases {
        let status = client
            .create_registry(as_user(request, "alice", "acme"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(field_violations(&status), fields, "{}", status.message());
    }
    let mut unknown_type = create_request("x", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)));
    unknown_type.registry.as_mut().unwrap().r#type = 42;
    let status = client
        .create_registry(as_user(unknown_type, "alice", "acme"))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&status), ["registry.type"]);

    for (id, field) in [("", "registry_id"), ("REG-1", "registry_id")] {
        let status = client
            .get_registry(as_user(
                pb::GetRegistryRequest { registry_id: id.into() },
                "alice",
                "acme",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(field_violations(&status), [field]);
    }
    let status = client
        .list_registries(as_user(
            pb::ListRegistriesRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&status), ["page_token"]);

    // Nothing was stored by any of it.
    let listed = client
        .list_registries(as_user(pb::ListRegistriesRequest::default(), "alice", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.registries.is_empty());
}

#[tokio::test]
async fn test_connection_answers_in_the_response() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let outcome = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                r#type: pb::RegistryType::Docker.into(),
                credentials: Some(pb::Credentials {
                    kind: Some(Kind::Docker(pb::DockerCredentials {
                        username: "MyUser".into(),
                        password: "dckr_pat_xxxxxxxxxxxx".into(),
                    })),
                }),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!outcome.ok);
    let fields: Vec<_> = outcome.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["credentials.docker.username", "credentials.docker.password"]);
    assert!(outcome.violations.iter().all(|v| !v.description.contains("dckr_pat_x")));

    let no_type = client
        .test_registry_connection(as_user(pb::TestRegistryConnectionRequest::default(), "alice", "acme"))
        .await
        .unwrap_err();
    assert_eq!(no_type.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&no_type), ["type"]);

    let unknown = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                registry_id: "reg-doesnotexist".into(),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let live = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                r#type: pb::RegistryType::Ghcr.into(),
                credentials: Some(ghcr(TOKEN)),
                mode: pb::TestMode::Live.into(),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(live.code(), Code::Unimplemented);

    let public = client
        .test_registry_connection(as_user(
            pb::TestRegistryConnectionRequest {
                r#type: pb::RegistryType::Public.into(),
                ..Default::default()
            },
            "alice",
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(public.ok);
}

#[tokio::test]
async fn lists_page_through_every_registry() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for i in 0..7 {
        client
            .create_registry(as_user(
                create_request(&format!("registry {i}"), pb::RegistryType::Public, None),
                "alice",
                "acme",
            ))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_registries(as_user(
                pb::ListRegistriesRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    r#type: pb::RegistryType::Unspecified.into(),
                },
                "alice",
                "acme",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.registries.len() <= 3);
        names.extend(page.registries.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, (0..7).map(|i| format!("registry {i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in ["", "platform.registry.v1.RegistryService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    let channel = server.channel().await;
    server.stop().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_err()
    );
}
