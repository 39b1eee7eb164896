//! Google registries deployed end to end with OAuth access tokens: the real
//! server exchanges the service-account key at registry-testkit's token
//! endpoint (loopback, RS256-verified grants) and writes the token, never
//! the key, into the pull Secret on the simulated Kubernetes API server; the
//! sync loop refreshes it at half its lifetime.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use registry_e2e::cluster::{Cluster, kubernetes};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_testkit::google::{ServiceAccount, TokenEndpoint};
use tonic::Code;

fn gcr(key: String, login: pb::GoogleLogin) -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Gcr(pb::GcrCredentials {
            service_account_key: key,
            login: login.into(),
        })),
    }
}

async fn start() -> (TokenEndpoint, ServiceAccount, Cluster) {
    let endpoint = TokenEndpoint::start().await;
    let account = ServiceAccount::generate("puller", "acme-prod");
    endpoint.trust(&account);
    let uri = endpoint.url().to_owned();
    let cluster = Cluster::start_with(|config| config.google.token_uris = vec![uri]).await;
    (endpoint, account, cluster)
}

/// The username and password of the one login of a `.dockerconfigjson`.
fn login_of(config: &serde_json::Value, host: &str) -> (String, String) {
    let entry = &config["auths"][host];
    (
        entry["username"].as_str().unwrap_or_default().to_owned(),
        entry["password"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn kubernetes_pull_secrets_hold_an_access_token_refreshed_at_half_its_lifetime() {
    let (endpoint, account, cluster) = start().await;
    // Two seconds: the sync loop refreshes the Secret after about one.
    endpoint.set_lifetime(2);
    let key = account.key_json(endpoint.url());
    let registry = cluster
        .caller()
        .await
        .create(
            "GCR",
            pb::RegistryType::Gcr,
            Some(gcr(key.clone(), pb::GoogleLogin::Unspecified)),
        )
        .await
        .unwrap();
    let login_hint = registry.credential_hints.iter().find(|h| h.field == "login").unwrap();
    assert_eq!((login_hint.value.as_str(), login_hint.secret), ("default", false));

    let mut deployer = cluster.deployer().await;
    let prepared = deployer
        .prepare(
            "api",
            "production",
            "k8s",
            &registry.id,
            "eu.gcr.io/acme-prod/api",
            "v1",
        )
        .await
        .unwrap();
    let name = kubernetes(&prepared).image_pull_secrets[0].clone();
    let (username, first) = login_of(&cluster.docker_config("env-production", &name), "eu.gcr.io");
    assert_eq!(username, "oauth2accesstoken");
    assert_eq!(endpoint.issued(), vec![first.clone()]);
    let secret = serde_json::to_string(&cluster.sim.secret("env-production", &name).unwrap()).unwrap();
    assert!(!secret.contains("PRIVATE KEY") && !secret.contains(&account.key_id));

    // The sync loop re-applies the Secret with a fresh token once half the
    // first one's lifetime has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refreshed = loop {
        let (_, password) = login_of(&cluster.docker_config("env-production", &name), "eu.gcr.io");
        if password != first {
            break password;
        }
        assert!(tokio::time::Instant::now() < deadline, "the token was not refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(endpoint.issued().contains(&refreshed));

    // Deployers get the key itself in the default mode (they run their own
    // `docker login`); with GOOGLE_LOGIN_ACCESS_TOKEN a token.
    let resolved = deployer.resolve(&registry.id).await.unwrap();
    assert_eq!(
        (resolved.username.as_str(), resolved.password.as_str()),
        ("_json_key", key.as_str())
    );
    assert!(resolved.expire_time.is_none());
}

#[tokio::test]
async fn access_token_mode_hands_deployers_a_token_and_json_key_mode_the_key() {
    let (endpoint, account, cluster) = start().await;
    let key = account.key_json(endpoint.url());
    let mut caller = cluster.caller().await;
    let tokens = caller
        .create(
            "GCR tokens",
            pb::RegistryType::Gcr,
            Some(gcr(key.clone(), pb::GoogleLogin::AccessToken)),
        )
        .await
        .unwrap();
    let mut deployer = cluster.deployer().await;
    let resolved = deployer.resolve(&tokens.id).await.unwrap();
    assert_eq!(resolved.username, "oauth2accesstoken");
    assert_eq!(endpoint.issued(), vec![resolved.password.clone()]);
    let expires = resolved.expire_time.unwrap().seconds;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!(
        (3500..=3600).contains(&(expires - now)),
        "expires in {} s",
        expires - now
    );

    let keys = caller
        .create(
            "GCR key",
            pb::RegistryType::Gcr,
            Some(gcr(key.clone(), pb::GoogleLogin::JsonKey)),
        )
        .await
        .unwrap();
    let prepared = deployer
        .prepare("web", "staging", "k8s", &keys.id, "gcr.io/acme-prod/web", "v2")
        .await
        .unwrap();
    let name = kubernetes(&prepared).image_pull_secrets[0].clone();
    assert_eq!(
        login_of(&cluster.docker_config("env-staging", &name), "gcr.io"),
        ("_json_key".to_owned(), key)
    );
    assert_eq!(endpoint.grants(), 1, "json_key mode makes no exchange");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_valid_token_and_says_so_in_the_sync_state() {
    let (endpoint, account, cluster) = start().await;
    // Refreshed after 3 s, valid for 6 s.
    endpoint.set_lifetime(6);
    let registry = cluster
        .caller()
        .await
        .create(
            "GCR",
            pb::RegistryType::Gcr,
            Some(gcr(account.key_json(endpoint.url()), pb::GoogleLogin::Unspecified)),
        )
        .await
        .unwrap();
    let mut deployer = cluster.deployer().await;
    let prepared = deployer
        .prepare("api", "production", "k8s", &registry.id, "gcr.io/acme-prod/api", "v1")
        .await
        .unwrap();
    let name = kubernetes(&prepared).image_pull_secrets[0].clone();
    let (_, token) = login_of(&cluster.docker_config("env-production", &name), "gcr.io");
    // The key is deleted: the refresh at half-life fails while the token
    // still works.
    endpoint.revoke(&account);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let row = loop {
        let state = deployer.sync_state(&registry.id).await.unwrap();
        let row = state.targets[0].clone();
        if !row.error.is_empty() {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh failure reported: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row.status(), pb::SyncStatus::Synced, "{row:?}");
    assert!(
        row.error.contains("the token refresh failed") && row.error.contains("invalid_grant"),
        "{}",
        row.error
    );
    assert_eq!(
        login_of(&cluster.docker_config("env-production", &name), "gcr.io").1,
        token
    );
}

#[tokio::test]
async fn a_deleted_key_fails_the_deploy_without_writing_a_secret() {
    let (endpoint, account, cluster) = start().await;
    let registry = cluster
        .caller()
        .await
        .create(
            "GCR",
            pb::RegistryType::Gcr,
            Some(gcr(account.key_json(endpoint.url()), pb::GoogleLogin::Unspecified)),
        )
        .await
        .unwrap();
    endpoint.revoke(&account);
    let status = cluster
        .deployer()
        .await
        .prepare("api", "production", "k8s", &registry.id, "gcr.io/acme-prod/api", "v1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("Google refused the credentials") && status.message().contains("invalid_grant"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("PRIVATE KEY"));
    assert!(cluster.sim.secrets("env-production").is_empty());
}

#[tokio::test]
async fn an_unknown_google_login_value_is_invalid_argument_naming_the_field() {
    let (endpoint, account, cluster) = start().await;
    let mut credentials = gcr(account.key_json(endpoint.url()), pb::GoogleLogin::Unspecified);
    if let Some(Kind::Gcr(gcr)) = &mut credentials.kind {
        gcr.login = 9;
    }
    let status = cluster
        .caller()
        .await
        .create("GCR", pb::RegistryType::Gcr, Some(credentials))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&status).unwrap();
    assert_eq!(details.field_violations[0].field, "registry.credentials.gcr.login");
}
