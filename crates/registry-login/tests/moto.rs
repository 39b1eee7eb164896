//! ECR token exchanges against a real implementation of the AWS API: moto in
//! server mode on loopback (scripts/test starts it and exports
//! REGISTRY_TEST_MOTO_URL).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use registry_core::ports::login::{LoginError, LoginProvider, LoginUse};
use registry_core::{Credentials, Registry, Timestamp};
use registry_login::{LoginSettings, Logins};
use secrecy::ExposeSecret as _;

mod common;

use common::ACCOUNT_HOST;

fn logins() -> Option<Logins> {
    let url = registry_testkit::require_service("moto", "REGISTRY_TEST_MOTO_URL")?;
    Some(Logins::new(LoginSettings {
        ecr_endpoint_url: Some(url),
        ..LoginSettings::default()
    }))
}

fn registry(revision: i64) -> Registry {
    common::ecr_registry("reg-ecrtest", revision)
}

fn keys() -> Credentials {
    common::ecr_keys("AKIAIOSFODNN7EXAMPLE", None)
}

#[tokio::test]
async fn keys_become_an_aws_login_for_the_proxy_endpoint() {
    let Some(logins) = logins() else { return };
    let before = Timestamp::now();
    let login = logins
        .login(
            &registry(1),
            &keys(),
            "*.dkr.ecr.us-east-1.amazonaws.com",
            LoginUse::PullSecret,
        )
        .await
        .unwrap();
    assert_eq!(login.server, ACCOUNT_HOST);
    assert_eq!(login.username, "AWS");
    // moto's token is base64("AWS:<account>-auth-token").
    assert_eq!(login.password.expose_secret(), "123456789012-auth-token");
    // moto answers a fixed expiresAt in 2015; an expiry not in the future is
    // taken as Amazon's documented 12 hours.
    let expires = login.expires_at.unwrap();
    let twelve_hours = 12 * 3600 * 1_000_000;
    assert!(expires.0 >= before.0 + twelve_hours && expires.0 <= Timestamp::now().0 + twelve_hours);
    assert_eq!(logins.token_exchanges(), 1);

    let json: serde_json::Value = serde_json::from_slice(&login.docker_config_json()).unwrap();
    assert_eq!(json["auths"][ACCOUNT_HOST]["username"], "AWS");
    assert!(!format!("{login:?}").contains("auth-token"));
}

#[tokio::test]
async fn tokens_are_reused_per_revision_and_fetched_anew_after_a_rotation() {
    let Some(logins) = logins() else { return };
    let first = logins
        .login(&registry(1), &keys(), ACCOUNT_HOST, LoginUse::PullSecret)
        .await
        .unwrap();
    let again = logins
        .login(&registry(1), &keys(), ACCOUNT_HOST, LoginUse::PullSecret)
        .await
        .unwrap();
    assert_eq!(logins.token_exchanges(), 1, "the cached token is reused");
    assert_eq!(first.expires_at, again.expires_at);
    assert_eq!(first.password.expose_secret(), again.password.expose_secret());

    // Concurrent logins of one registry share one exchange.
    let rotated = registry(2);
    let concurrent = futures_join(&logins, &rotated).await;
    assert!(concurrent.iter().all(Result::is_ok));
    assert_eq!(logins.token_exchanges(), 2, "a rotated revision fetches anew, once");
}

async fn futures_join(
    logins: &Logins,
    registry: &Registry,
) -> Vec<Result<registry_core::login::DockerLogin, LoginError>> {
    let credentials = keys();
    let (a, b, c) = tokio::join!(
        logins.login(registry, &credentials, ACCOUNT_HOST, LoginUse::PullSecret),
        logins.login(registry, &credentials, ACCOUNT_HOST, LoginUse::PullSecret),
        logins.login(registry, &credentials, ACCOUNT_HOST, LoginUse::PullSecret),
    );
    vec![a, b, c]
}

#[tokio::test]
async fn hosts_of_another_region_are_refused_without_a_call() {
    let Some(logins) = logins() else { return };
    let error = logins
        .login(
            &registry(1),
            &keys(),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            LoginUse::PullSecret,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::WrongHost { .. }), "{error:?}");
    assert_eq!(logins.token_exchanges(), 0);
}

#[tokio::test]
async fn static_kinds_need_no_exchange() {
    let Some(logins) = logins() else { return };
    let ghcr = Credentials::Ghcr {
        username: "myorg".into(),
        token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
    };
    let login = logins
        .login(&registry(1), &ghcr, "ghcr.io", LoginUse::PullSecret)
        .await
        .unwrap();
    assert_eq!((login.server.as_str(), login.username.as_str()), ("ghcr.io", "myorg"));
    assert_eq!(login.expires_at, None);
    assert_eq!(logins.token_exchanges(), 0);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_and_never_shows_the_secret() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let logins = Logins::new(LoginSettings {
        ecr_endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        ..LoginSettings::default()
    });
    let error = logins
        .login(&registry(1), &keys(), ACCOUNT_HOST, LoginUse::PullSecret)
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        !message.contains("wJalrXUtnFEMI") && !message.contains("AKIAIOSFODNN7EXAMPLE"),
        "{message}"
    );
}
