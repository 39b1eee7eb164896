//! JWT mode with the issuer's keys published as a JWKS on loopback: tokens
//! signed by a published key are accepted; a key published after start is
//! fetched when a token names it (the first call is UNAVAILABLE with a
//! RetryInfo, a retry passes); a withdrawn or foreign key, a wrong audience
//! or issuer, a token not yet valid or too old are refused.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry_e2e::{TestServer, default_config};
use registry_proto::v1 as pb;
use registry_server::config::AuthMode;
use registry_testkit::jwks::{JwksServer, SigningKey};
use tonic::Code;
use tonic_types::StatusExt as _;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> serde_json::Value {
    serde_json::json!({
        "sub": "ci-bot", "org": "acme", "roles": ["reader"],
        "iss": "https://id.example", "aud": "registry",
        "iat": now(), "exp": now() + 300,
    })
}

async fn list(server: &TestServer, token: &str) -> Result<pb::ListRegistriesResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::ListRegistriesRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    Ok(server.client().await.list_registries(request).await?.into_inner())
}

async fn start(jwks: &JwksServer) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(dir.path());
    config.auth.mode = AuthMode::Jwt;
    config.auth.jwt.jwks_url = Some(jwks.url().to_owned());
    config.auth.jwt.issuer = Some("https://id.example".into());
    config.auth.jwt.audience = Some("registry".into());
    config.auth.jwt.max_token_age_secs = Some(600);
    (TestServer::start_with(config).await.unwrap(), dir)
}

#[tokio::test]
async fn tokens_of_published_keys_pass_and_a_new_key_is_fetched_when_a_token_names_it() {
    let first = SigningKey::generate("key-2026-11");
    let jwks = JwksServer::start(&[&first]).await;
    let (server, _dir) = start(&jwks).await;
    assert_eq!(jwks.fetches(), 1, "fetched at start");
    list(&server, &first.sign(&claims())).await.unwrap();

    // The issuer rotates its key: the set gains the new one after the
    // server fetched it.
    let second = SigningKey::generate("key-2026-12");
    jwks.publish(&[&first, &second]);
    let token = second.sign(&claims());
    let status = list(&server, &token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("key-2026-12"), "{}", status.message());
    assert!(status.get_details_retry_info().and_then(|r| r.retry_delay).is_some());
    // The client retries as told; the refresh comes within MIN_REFRESH.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match list(&server, &token).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable => {}
            Err(status) => panic!("{status:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the new key was never fetched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(jwks.fetches() >= 2);
}

#[tokio::test]
async fn foreign_keys_and_bad_claims_are_refused() {
    let key = SigningKey::generate("key-a");
    let jwks = JwksServer::start(&[&key]).await;
    let (server, _dir) = start(&jwks).await;

    // Signed by a key that claims a published kid: the signature fails.
    let impostor = SigningKey::generate("key-a");
    let status = list(&server, &impostor.sign(&claims())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims();
        edit(&mut claims);
        key.sign(&claims)
    };
    let cases: [(&str, String); 5] = [
        ("audience", with(&|c| c["aud"] = "another-service".into())),
        ("issuer", with(&|c| c["iss"] = "https://other.example".into())),
        ("immature", with(&|c| c["nbf"] = (now() + 600).into())),
        ("longer than the 600 s", with(&|c| c["iat"] = (now() - 7200).into())),
        (
            "iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
    ];
    for (expected, token) in cases {
        let status = list(&server, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{expected}: {status:?}");
        assert!(
            status.message().to_lowercase().contains(&expected.to_lowercase()),
            "{expected}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn an_unreachable_jwks_refuses_the_start_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(dir.path());
    config.auth.mode = AuthMode::Jwt;
    config.auth.jwt.jwks_url = Some("http://127.0.0.1:1/jwks.json".into());
    config.auth.jwt.issuer = Some("https://id.example".into());
    config.auth.jwt.audience = Some("registry".into());
    let error = TestServer::start_with(config.clone()).await.unwrap_err().to_string();
    assert!(error.contains("http://127.0.0.1:1/jwks.json"), "{error}");
    config.auth.jwt.jwks_url = Some("http://id.example/jwks.json".into());
    let error = TestServer::start_with(config).await.unwrap_err().to_string();
    assert!(error.contains("must be https"), "{error}");
}
