//! The product guide's flows through the real server on a loopback socket:
//! add, test, list, rotate, rename, delete — with masking, organization
//! scoping, roles, creator-only deletion, etags and precise errors.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use registry_e2e::{TestServer, draft};
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
            ..Default::default()
        })),
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
    let mut alice = server.caller("alice", "acme").await;
    let mut bob = server.caller("bob", "acme").await;

    // Test Connection before saving.
    let tested = alice
        .test_inline(pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))
        .await
        .unwrap();
    assert!(tested.ok, "{tested:?}");
    assert_eq!(tested.server, "ghcr.io");

    // Save.
    let created = alice
        .create("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))
        .await
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
    assert_eq!(bob.list().await.unwrap(), vec![created.clone()]);
    let saved_test = bob.test_saved(&created.id).await.unwrap();
    assert!(saved_test.ok && saved_test.violations.is_empty());

    // Rotate: new credentials, new revision, new etag; nothing else changes.
    let rotated = bob.rotate(&created.id, ghcr(NEW_TOKEN), &created.etag).await.unwrap();
    assert_eq!(rotated.credential_revision, 2);
    assert_ne!(rotated.etag, created.etag);
    assert_eq!(rotated.name, "My GHCR");
    assert_eq!(rotated.created_by, "alice");
    assert!(rotated.credential_hints.iter().any(|h| h.value == "ghp_…DcBa"));

    // Rename without resending secrets keeps the credentials.
    let renamed = alice.rename(&created.id, "GHCR (prod)", "").await.unwrap();
    assert_eq!(renamed.name, "GHCR (prod)");
    assert_eq!(renamed.credential_revision, 2);
    assert_eq!(renamed.credential_hints, rotated.credential_hints);

    // Only the creator deletes.
    let denied = bob.delete(&created.id, "").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("only the creator"), "{}", denied.message());
    alice.delete(&created.id, "").await.unwrap();
    let gone = alice.get(&created.id).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(gone.message().contains(&created.id));
}

#[tokio::test]
async fn organizations_never_see_each_other() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let mut outsider = server.caller("alice", "globex").await;
    let created = alice
        .create("Production ECR", pb::RegistryType::Ecr, Some(ecr()))
        .await
        .unwrap();
    assert_eq!(created.server, "*.dkr.ecr.us-east-1.amazonaws.com");
    let id = &created.id;

    assert_eq!(outsider.get(id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(outsider.delete(id, "").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        outsider.rename(id, "mine", "").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(outsider.test_saved(id).await.unwrap_err().code(), Code::NotFound);
    assert!(outsider.list().await.unwrap().is_empty());
    // The same name is free in another organization.
    outsider
        .create("Production ECR", pb::RegistryType::Ecr, Some(ecr()))
        .await
        .unwrap();
    assert_eq!(alice.get(id).await.unwrap(), created);
}

#[tokio::test]
async fn readers_read_but_never_write() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let created = alice
        .create("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))
        .await
        .unwrap();
    let mut rita = server.caller("rita", "acme").await.with_roles("reader");

    rita.get(&created.id).await.unwrap();
    rita.test_saved(&created.id).await.unwrap();
    let create = rita
        .create("Other", pb::RegistryType::Ecr, Some(ecr()))
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::PermissionDenied);
    let update = rita.rename(&created.id, "renamed", "").await.unwrap_err();
    assert_eq!(update.code(), Code::PermissionDenied);
    // Even its creator cannot delete with a reader-only role.
    let mut alice_reading = server.caller("alice", "acme").await.with_roles("reader");
    let delete = alice_reading.delete(&created.id, "").await.unwrap_err();
    assert_eq!(delete.code(), Code::PermissionDenied);

    let mut unknown_role = server.caller("rita", "acme").await.with_roles("root");
    assert_eq!(unknown_role.list().await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(alice.get(&created.id).await.unwrap(), created);
}

#[tokio::test]
async fn etags_guard_concurrent_writes() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let created = alice
        .create("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))
        .await
        .unwrap();

    let first = alice.rename(&created.id, "first", &created.etag).await.unwrap();
    let stale = alice.rename(&created.id, "second", &created.etag).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let stale = alice
        .rotate(&created.id, ghcr(NEW_TOKEN), &created.etag)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let stale_delete = alice.delete(&created.id, &created.etag).await.unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted);
    assert_eq!(alice.get(&created.id).await.unwrap(), first);
    alice.delete(&created.id, &first.etag).await.unwrap();
}

#[tokio::test]
async fn retried_creates_and_duplicate_names() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let request = pb::CreateRegistryRequest {
        registry: Some(draft("Production ECR", pb::RegistryType::Ecr, Some(ecr()))),
        request_id: "5f0c6a7e-2b8e-4c1d-9a53-0d3b7e1f4a22".into(),
    };
    let first = alice.create_with(request.clone()).await.unwrap();
    let retry = alice.create_with(request).await.unwrap();
    assert_eq!(first, retry);
    assert_eq!(alice.list().await.unwrap().len(), 1);

    let duplicate = alice
        .create("Production ECR", pb::RegistryType::Ecr, Some(ecr()))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert!(duplicate.message().contains("Production ECR"));
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;

    let placeholder = alice
        .create("My GHCR", pb::RegistryType::Ghcr, Some(ghcr("ghp_xxxxxxxxxxxx")))
        .await
        .unwrap_err();
    assert_eq!(placeholder.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&placeholder), ["registry.credentials.ghcr.token"]);
    assert!(!placeholder.message().contains("ghp_xxxxxxxxxxxx"));

    let bad_ecr = pb::Credentials {
        kind: Some(Kind::Ecr(pb::EcrCredentials {
            access_key_id: "AKIA123".into(),
            secret_access_key: "short".into(),
            region: "moon-1".into(),
            ..Default::default()
        })),
    };
    let mut unknown_type = draft("x", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)));
    unknown_type.r#type = 42;
    let cases: Vec<(Option<pb::Registry>, &[&str])> = vec![
        (None, &["registry"]),
        (
            Some(draft("", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))),
            &["registry.name"],
        ),
        (
            Some(draft("x", pb::RegistryType::Unspecified, Some(ghcr(TOKEN)))),
            &["registry.type"],
        ),
        (Some(unknown_type), &["registry.type"]),
        (
            Some(draft("x", pb::RegistryType::Ecr, Some(ghcr(TOKEN)))),
            &["registry.credentials"],
        ),
        (
            Some(draft("x", pb::RegistryType::Docker, None)),
            &["registry.credentials"],
        ),
        (
            Some(draft("x", pb::RegistryType::Ecr, Some(bad_ecr))),
            &[
                "registry.credentials.ecr.access_key_id",
                "registry.credentials.ecr.secret_access_key",
                "registry.credentials.ecr.region",
            ],
        ),
    ];
    for (registry, fields) in cases {
        let request = pb::CreateRegistryRequest {
            registry,
            request_id: String::new(),
        };
        let status = alice.create_with(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(field_violations(&status), fields, "{}", status.message());
    }

    for id in ["", "REG-1"] {
        let status = alice.get(id).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(field_violations(&status), ["registry_id"]);
    }
    let garbage_token = pb::ListRegistriesRequest {
        page_token: "garbage".into(),
        ..Default::default()
    };
    let status = alice.list_page(garbage_token).await.unwrap_err();
    assert_eq!(field_violations(&status), ["page_token"]);

    // Nothing was stored by any of it.
    assert!(alice.list().await.unwrap().is_empty());

    // A bad update leaves the stored registry as it was.
    let created = alice
        .create("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))
        .await
        .unwrap();
    let bad_rotation = alice.rotate(&created.id, ecr(), "").await.unwrap_err();
    assert_eq!(field_violations(&bad_rotation), ["registry.credentials"]);
    let bad_mask = alice
        .update(
            &created.id,
            draft("x", pb::RegistryType::Unspecified, None),
            &["type"],
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(field_violations(&bad_mask), ["update_mask"]);
    assert_eq!(alice.get(&created.id).await.unwrap(), created);
}

#[tokio::test]
async fn test_connection_answers_in_the_response() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let docker = pb::Credentials {
        kind: Some(Kind::Docker(pb::DockerCredentials {
            username: "MyUser".into(),
            password: "dckr_pat_xxxxxxxxxxxx".into(),
        })),
    };
    let outcome = alice.test_inline(pb::RegistryType::Docker, Some(docker)).await.unwrap();
    assert!(!outcome.ok);
    let fields: Vec<_> = outcome.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["credentials.docker.username", "credentials.docker.password"]);
    assert!(outcome.violations.iter().all(|v| !v.description.contains("dckr_pat_x")));

    let no_type = alice
        .test_inline(pb::RegistryType::Unspecified, None)
        .await
        .unwrap_err();
    assert_eq!(no_type.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&no_type), ["type"]);

    let unknown = alice.test_saved("reg-doesnotexist").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // A live test is an answer, not an error: here a registry on a closed
    // loopback port (tests never leave loopback).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let custom = |image: &str| pb::TestRegistryConnectionRequest {
        r#type: pb::RegistryType::Custom.into(),
        credentials: Some(pb::Credentials {
            kind: Some(pb::credentials::Kind::Custom(pb::CustomCredentials {
                url: format!("http://127.0.0.1:{port}"),
                username: "bot".into(),
                password: TOKEN.into(),
                ..Default::default()
            })),
        }),
        mode: pb::TestMode::Live.into(),
        image: image.into(),
        ..Default::default()
    };
    let live = alice.test(custom("myorg/api:v1")).await.unwrap();
    assert!(!live.ok);
    assert_eq!(live.mode(), pb::TestMode::Live);
    let result = live.live.unwrap();
    assert_eq!(result.outcome(), pb::LiveOutcome::Unreachable, "{result:?}");
    assert!(!result.message.contains(TOKEN));
    // A bad image is a bad request, named by its field.
    let bad = alice.test(custom("MyOrg/API")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&bad), ["image"]);
    let mut structural = custom("myorg/api:v1");
    structural.mode = pb::TestMode::Structural.into();
    let bad = alice.test(structural).await.unwrap_err();
    assert_eq!(field_violations(&bad), ["image"]);

    assert!(alice.test_inline(pb::RegistryType::Public, None).await.unwrap().ok);
}

#[tokio::test]
async fn lists_page_through_every_registry() {
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    for i in 0..7 {
        alice
            .create(&format!("registry {i}"), pb::RegistryType::Public, None)
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = alice
            .list_page(pb::ListRegistriesRequest {
                page_size: 3,
                page_token,
                r#type: pb::RegistryType::Public.into(),
            })
            .await
            .unwrap();
        assert!(page.registries.len() <= 3);
        names.extend(page.registries.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
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

/// Live Test Connection against the test bed's distribution registry
/// (htpasswd, plain http on loopback), through the gRPC API.
#[tokio::test]
async fn live_tests_log_in_to_a_real_registry() {
    let Some(registry) = registry_testkit::distribution::Distribution::from_env() else {
        return;
    };
    let image = registry_testkit::require_service("the test image", "REGISTRY_TEST_IMAGE").unwrap();
    let repository_tag = image
        .strip_prefix(&format!("{}/", registry.address))
        .unwrap()
        .to_owned();
    let repository = repository_tag.rsplit_once(':').unwrap().0.to_owned();
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let credentials = |password: &str| pb::Credentials {
        kind: Some(Kind::Custom(pb::CustomCredentials {
            url: format!("http://{}", registry.address),
            username: registry.user.clone(),
            password: password.into(),
            ..Default::default()
        })),
    };
    let saved = alice
        .create(
            "test bed",
            pb::RegistryType::Custom,
            Some(credentials(&registry.password)),
        )
        .await
        .unwrap();
    let live =
        |registry_id: &str, credentials: Option<pb::Credentials>, image: &str| pb::TestRegistryConnectionRequest {
            registry_id: registry_id.into(),
            r#type: if credentials.is_some() {
                pb::RegistryType::Custom.into()
            } else {
                0
            },
            credentials,
            mode: pb::TestMode::Live.into(),
            image: image.into(),
        };

    let found = alice.test(live(&saved.id, None, &repository_tag)).await.unwrap();
    assert!(found.ok, "{found:?}");
    let result = found.live.unwrap();
    assert_eq!(result.outcome(), pb::LiveOutcome::Ok, "{result:?}");
    assert!(result.digest.starts_with("sha256:"), "{result:?}");

    let missing = alice
        .test(live(&saved.id, None, &format!("{repository}:no-such-tag")))
        .await
        .unwrap();
    assert!(!missing.ok);
    assert_eq!(missing.live.unwrap().outcome(), pb::LiveOutcome::NotFound);

    let wrong = alice
        .test(live("", Some(credentials("wrong-password-4711")), &repository_tag))
        .await
        .unwrap();
    assert!(!wrong.ok);
    assert!(!format!("{wrong:?}").contains(&registry.password));
    let result = wrong.live.unwrap();
    assert_eq!(result.outcome(), pb::LiveOutcome::Unauthorized, "{result:?}");
    assert!(!result.message.contains("wrong-password-4711"), "{result:?}");
}

/// A self-hosted registry behind a private CA: its Custom credentials carry
/// the CA bundle, and the live test trusts it for that registry only.
#[tokio::test]
async fn a_custom_registry_with_its_own_ca_passes_the_live_test() {
    use registry_testkit::token_registry::{TokenRegistry, TokenUser};
    let users = vec![TokenUser {
        name: "deploy".into(),
        password: "deploy-s3cret".into(),
        pulls: vec!["myorg/".into()],
    }];
    let Some(registry) = TokenRegistry::start(users, true).await else {
        return;
    };
    let ca = registry.ca_pem.clone().unwrap();
    let server = TestServer::start().await;
    let mut alice = server.caller("alice", "acme").await;
    let credentials = |ca_bundle: &str| pb::Credentials {
        kind: Some(Kind::Custom(pb::CustomCredentials {
            url: format!("https://{}", registry.address),
            username: "deploy".into(),
            password: "deploy-s3cret".into(),
            ca_bundle: ca_bundle.into(),
        })),
    };
    let live = |registry_id: &str| pb::TestRegistryConnectionRequest {
        registry_id: registry_id.into(),
        mode: pb::TestMode::Live.into(),
        ..Default::default()
    };

    let trusting = alice
        .create("internal", pb::RegistryType::Custom, Some(credentials(&ca)))
        .await
        .unwrap();
    let hints: Vec<_> = trusting
        .credential_hints
        .iter()
        .map(|h| (h.field.as_str(), h.value.as_str()))
        .collect();
    assert!(hints.contains(&("ca_bundle", "1 certificate(s)")), "{hints:?}");
    let answer = alice.test(live(&trusting.id)).await.unwrap();
    let result = answer.live.unwrap();
    assert_eq!(result.outcome(), pb::LiveOutcome::Ok, "{result:?}");

    // The same registry saved without the bundle: the system's roots do not
    // know the private CA.
    let plain = alice
        .create("internal, no CA", pb::RegistryType::Custom, Some(credentials("")))
        .await
        .unwrap();
    let answer = alice.test(live(&plain.id)).await.unwrap();
    assert!(!answer.ok);
    let result = answer.live.unwrap();
    assert_eq!(result.outcome(), pb::LiveOutcome::TlsError, "{result:?}");
    assert!(!result.message.contains("deploy-s3cret"), "{result:?}");

    // A bundle that is not certificates is refused naming the field.
    let refused = alice
        .create(
            "bad CA",
            pb::RegistryType::Custom,
            Some(credentials("not a certificate")),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&refused), ["registry.credentials.custom.ca_bundle"]);
}
