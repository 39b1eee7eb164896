//! The canary's own flow: one registry of every secret-bearing kind with
//! the marker `c4n4ryS3cr3t` in every credential field that can hold it,
//! driven through each call that touches credentials — create (and its
//! replay), a refused create, get, list, update, rotate, test, prepare on
//! Kubernetes, resolve, the audit trail, delete. No response other than the
//! ones that exist to hand credentials out (resolve) carries the marker,
//! raw or base64, here; `scripts/canary` runs this file with every other
//! e2e test at `RUST_LOG=trace` and checks the logs for the same marker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use registry_e2e::cluster::{Cluster, kubernetes};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use tonic::Code;

/// The marker `scripts/lib/canary_check.py` looks for.
const CANARY: &str = "c4n4ryS3cr3t";
/// An ECR key id is upper case only, so it carries its own marker (the
/// checker takes every `AKIA…`/`ASIA…` literal of the test sources).
const ECR_KEY_ID: &str = "ASIAC4N4RY0000000001";
const SERVICE_ACCOUNT_KEY: &str = include_str!("../../../crates/registry-core/tests/fixtures/service-account.json");

/// A marker-carrying secret of `len` characters (letters and digits), so
/// that each kind's shape rules accept it; `n` tells rotations apart.
fn secret(prefix: &str, len: usize, n: u32) -> String {
    let mut value = format!("{prefix}{CANARY}{n}");
    while value.len() < len {
        value.push('0');
    }
    value
}

/// The fixture's service-account key with the marker in `private_key_id`:
/// the private key itself must stay a real key, and the checker finds its
/// PEM header wherever it leaks.
fn service_account_key(n: u32) -> String {
    let mut key: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT_KEY).unwrap();
    key["private_key_id"] = format!("{CANARY}{n}").into();
    key.to_string()
}

/// Every secret-bearing kind, its image host, and credentials whose every
/// secret field holds the marker.
fn kinds(n: u32) -> Vec<(pb::RegistryType, &'static str, Kind)> {
    vec![
        (
            pb::RegistryType::Ghcr,
            "ghcr.io/myorg/api",
            Kind::Ghcr(pb::GhcrCredentials {
                username: "myorg".into(),
                token: secret("ghp_", 40, n),
            }),
        ),
        (
            pb::RegistryType::Docker,
            "myorg/api",
            Kind::Docker(pb::DockerCredentials {
                username: "myorg".into(),
                password: secret("dckr_pat_", 40, n),
            }),
        ),
        (
            pb::RegistryType::Ecr,
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/api",
            Kind::Ecr(pb::EcrCredentials {
                access_key_id: ECR_KEY_ID.into(),
                secret_access_key: secret("", 40, n),
                region: "us-east-1".into(),
                session_token: secret("", 64, n),
                use_server_identity: false,
            }),
        ),
        (
            pb::RegistryType::Acr,
            "myorg.azurecr.io/api",
            Kind::Acr(pb::AcrCredentials {
                login_server: "myorg.azurecr.io".into(),
                username: "myorg-puller".into(),
                password: secret("", 32, n),
            }),
        ),
        (
            pb::RegistryType::Gcr,
            "gcr.io/acme-prod-412907/api",
            Kind::Gcr(pb::GcrCredentials {
                service_account_key: service_account_key(n),
                login: pb::GoogleLogin::JsonKey.into(),
            }),
        ),
        (
            pb::RegistryType::Gar,
            "us-central1-docker.pkg.dev/acme-prod-412907/images/api",
            Kind::Gar(pb::GarCredentials {
                service_account_key: service_account_key(n),
                region: "us-central1".into(),
                login: pb::GoogleLogin::JsonKey.into(),
            }),
        ),
        (
            pb::RegistryType::Quay,
            "quay.io/myorg/api",
            Kind::Quay(pb::QuayCredentials {
                username: "myorg".into(),
                token: secret("", 24, n),
            }),
        ),
        (
            pb::RegistryType::Custom,
            "registry.internal.example.com/api",
            Kind::Custom(pb::CustomCredentials {
                url: "https://registry.internal.example.com".into(),
                username: "deploy".into(),
                password: secret("", 24, n),
                ca_bundle: String::new(),
            }),
        ),
    ]
}

/// The marker raw and as base64 at each of the three alignments it can
/// take inside a longer encoded value (a docker `auth`, a Secret's data).
fn needles() -> Vec<Vec<u8>> {
    let mut needles = vec![CANARY.as_bytes().to_vec(), ECR_KEY_ID.as_bytes().to_vec()];
    for shift in 0..3 {
        let mut raw = vec![0u8; shift];
        raw.extend_from_slice(CANARY.as_bytes());
        let encoded = STANDARD.encode(&raw);
        let start = (shift * 8).div_ceil(6) + usize::from(shift > 0);
        needles.push(encoded.as_bytes()[start..encoded.len() - 4].to_vec());
    }
    needles
}

/// `what` holds no marker: its wire bytes (every string field), and, for
/// an error, its message and details.
fn assert_clean(bytes: &[u8], what: &str) {
    for needle in needles() {
        assert!(
            !bytes.windows(needle.len()).any(|window| window == needle.as_slice()),
            "{what} carries a credential ({:?})",
            String::from_utf8_lossy(&needle)
        );
    }
}

fn assert_clean_status(status: &tonic::Status, what: &str) {
    assert_clean(status.message().as_bytes(), what);
    assert_clean(status.details(), what);
}

#[test]
fn the_needles_find_the_marker_wherever_it_is_encoded() {
    let finds = |value: &[u8]| {
        let encoded = STANDARD.encode(value);
        needles()
            .iter()
            .any(|needle| encoded.as_bytes().windows(needle.len()).any(|w| w == needle.as_slice()))
    };
    for prefix in ["", "u", "us", "user:", "myorg:"] {
        assert!(finds(format!("{prefix}{CANARY}-rest").as_bytes()), "{prefix:?}");
    }
    assert!(!finds(b"myorg:ghp_16C7e42F292c6912E7710c838347Ae178B4a"));
}

#[tokio::test]
async fn no_response_but_a_hand_out_carries_a_credential() {
    // ECR's keys are exchanged at prepare: against moto, a real AWS API.
    let moto = registry_testkit::require_service("moto", "REGISTRY_TEST_MOTO_URL");
    let endpoint = moto.clone();
    let cluster = Cluster::start_with(|config| config.ecr.endpoint_url = endpoint).await;
    let mut alice = cluster.caller().await;
    let mut deployer = cluster.deployer().await;
    let mut auditor = cluster.caller().await.with_roles("auditor");

    for (index, (kind, image, credentials)) in kinds(1).into_iter().enumerate() {
        let name = format!("canary {}", kind.as_str_name());
        let request = pb::CreateRegistryRequest {
            registry: Some(registry_e2e::draft(
                &name,
                kind,
                Some(pb::Credentials {
                    kind: Some(credentials.clone()),
                }),
            )),
            request_id: format!("canary-{index}"),
        };
        let created = alice.create_with(request.clone()).await.unwrap();
        assert_clean(&created.encode_to_vec(), &format!("{name}: create"));
        let replayed = alice.create_with(request).await.unwrap();
        assert_eq!(replayed.id, created.id);
        assert_clean(&replayed.encode_to_vec(), &format!("{name}: replayed create"));

        // Refused: the same secrets with a name that cannot be saved.
        let refused = alice
            .create(
                " ",
                kind,
                Some(pb::Credentials {
                    kind: Some(credentials.clone()),
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{name}");
        assert_clean_status(&refused, &format!("{name}: refused create"));

        let got = alice.get(&created.id).await.unwrap();
        assert_clean(&got.encode_to_vec(), &format!("{name}: get"));
        let renamed = alice
            .rename(&created.id, &format!("{name} renamed"), &got.etag)
            .await
            .unwrap();
        assert_clean(&renamed.encode_to_vec(), &format!("{name}: rename"));

        let tested = alice.test_saved(&created.id).await.unwrap();
        assert!(tested.ok, "{name}: {:?}", tested.violations);
        assert_clean(&tested.encode_to_vec(), &format!("{name}: test"));
        let inline = alice
            .test_inline(
                kind,
                Some(pb::Credentials {
                    kind: Some(credentials.clone()),
                }),
            )
            .await
            .unwrap();
        assert_clean(&inline.encode_to_vec(), &format!("{name}: inline test"));

        let exchanged = kind == pb::RegistryType::Ecr;
        if exchanged && moto.is_none() {
            alice.delete_forced(&created.id).await.unwrap();
            continue;
        }
        let prepared = deployer
            .prepare(
                &format!("canary-{index}"),
                "production",
                "k8s",
                &created.id,
                image,
                "v1",
            )
            .await
            .unwrap();
        assert_clean(&prepared.encode_to_vec(), &format!("{name}: prepare on kubernetes"));
        let secret_name = &kubernetes(&prepared).image_pull_secrets[0];
        assert!(cluster.sim.secret("env-production", secret_name).is_some(), "{name}");

        // The hand-out itself does carry the credentials (ECR's: the token
        // they were exchanged for).
        let resolved = deployer.resolve(&created.id).await.unwrap();
        let bytes = resolved.encode_to_vec();
        let found = bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes());
        assert_eq!(found, !exchanged, "{name}: the hand-out answers the credentials");

        let (_, _, rotated) = kinds(2).swap_remove(index);
        let rotated = alice
            .rotate(&created.id, pb::Credentials { kind: Some(rotated) }, &renamed.etag)
            .await
            .unwrap();
        assert_clean(&rotated.encode_to_vec(), &format!("{name}: rotate"));
        let state = deployer.sync_state(&created.id).await.unwrap();
        assert_clean(&state.encode_to_vec(), &format!("{name}: sync state"));
        let usages = deployer.usages(&created.id).await.unwrap();
        assert_clean(
            &pb::ListRegistryUsagesResponse {
                usages,
                ..Default::default()
            }
            .encode_to_vec(),
            &format!("{name}: usages"),
        );

        // In use: refused, naming the usage, not the secret.
        let in_use = alice.delete(&created.id, &rotated.etag).await.unwrap_err();
        assert_eq!(in_use.code(), Code::FailedPrecondition, "{name}");
        assert_clean_status(&in_use, &format!("{name}: refused delete"));
        deployer.release(&format!("canary-{index}")).await.unwrap();
        alice.delete_forced(&created.id).await.unwrap();
    }

    let listed = alice.list().await.unwrap();
    assert_clean(
        &pb::ListRegistriesResponse {
            registries: listed,
            ..Default::default()
        }
        .encode_to_vec(),
        "list",
    );
    let mut page_token = String::new();
    let mut events = 0;
    loop {
        let page = auditor
            .audit_events(pb::ListAuditEventsRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_clean(&page.encode_to_vec(), "the audit trail");
        events += page.events.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(events >= kinds(1).len() * 6, "{events} audit events");
}
