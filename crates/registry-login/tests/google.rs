//! Google service-account keys exchanged for OAuth access tokens against
//! registry-testkit's token endpoint (a real HTTP server on loopback that
//! verifies the grant's RS256 signature with the public half of a key made
//! in the test), with a clock the test controls.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use registry_core::ports::login::{LoginError, LoginProvider, LoginUse};
use registry_core::{Credentials, GoogleLogin, Registry, RegistryId, RegistryKind, Timestamp};
use registry_login::{LoginSettings, Logins};
use registry_testkit::google::{Answer, ServiceAccount, TokenEndpoint};
use secrecy::ExposeSecret as _;

/// A clock that moves only when the test says so.
#[derive(Clone)]
struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(AtomicI64::new(Timestamp::now().0)))
    }

    fn advance(&self, by: Duration) {
        self.0
            .fetch_add(i64::try_from(by.as_micros()).unwrap(), Ordering::SeqCst);
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

fn registry(revision: i64) -> Registry {
    Registry {
        id: RegistryId::parse("reg-google1").unwrap(),
        organization: "acme".into(),
        name: "GCR".into(),
        kind: RegistryKind::Gcr,
        server: "gcr.io".into(),
        hints: Vec::new(),
        created_by: "alice".into(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        etag: "e".into(),
        credential_revision: revision,
    }
}

fn gcr(key: String, login: GoogleLogin) -> Credentials {
    Credentials::Gcr {
        service_account_key: key.into(),
        login,
    }
}

struct Setup {
    endpoint: TokenEndpoint,
    account: ServiceAccount,
    clock: ManualClock,
    logins: Logins,
}

async fn setup() -> Setup {
    let endpoint = TokenEndpoint::start().await;
    let account = ServiceAccount::generate("puller", "acme-prod");
    endpoint.trust(&account);
    let clock = ManualClock::new();
    let ticks = clock.clone();
    let logins = Logins::new(LoginSettings {
        google_token_uris: vec![endpoint.url().to_owned()],
        google_timeout: Duration::from_secs(2),
        clock: Arc::new(move || ticks.now()),
        ..LoginSettings::default()
    });
    Setup {
        endpoint,
        account,
        clock,
        logins,
    }
}

impl Setup {
    fn key(&self) -> String {
        self.account.key_json(self.endpoint.url())
    }

    async fn login(
        &self,
        login: GoogleLogin,
        consumer: LoginUse,
    ) -> Result<registry_core::login::DockerLogin, LoginError> {
        self.logins
            .login(&registry(1), &gcr(self.key(), login), "eu.gcr.io", consumer)
            .await
    }
}

#[tokio::test]
async fn pull_secrets_get_an_access_token_reused_until_half_its_lifetime() {
    let s = setup().await;
    s.endpoint.set_lifetime(3600);
    let first = s.login(GoogleLogin::Default, LoginUse::PullSecret).await.unwrap();
    assert_eq!(
        (first.server.as_str(), first.username.as_str()),
        ("eu.gcr.io", "oauth2accesstoken")
    );
    assert_eq!(s.endpoint.issued(), vec![first.password.expose_secret().to_owned()]);
    assert_eq!(first.expires_at, Some(s.clock.now().after(Duration::from_secs(3600))));
    assert_eq!(
        first.refresh_at(s.clock.now()),
        Some(s.clock.now().after(Duration::from_secs(1800)))
    );

    s.clock.advance(Duration::from_secs(1799));
    let again = s.login(GoogleLogin::Default, LoginUse::PullSecret).await.unwrap();
    assert_eq!(again.password.expose_secret(), first.password.expose_secret());
    assert_eq!(
        s.endpoint.grants(),
        1,
        "the cached token is reused before half its lifetime"
    );

    s.clock.advance(Duration::from_secs(1));
    let refreshed = s.login(GoogleLogin::Default, LoginUse::PullSecret).await.unwrap();
    assert_ne!(refreshed.password.expose_secret(), first.password.expose_secret());
    assert_eq!(
        s.endpoint.grants(),
        2,
        "at half its lifetime the token is exchanged again"
    );

    // Another revision of the registry is another key: never the old token.
    let rotated = s
        .logins
        .login(
            &registry(2),
            &gcr(s.key(), GoogleLogin::Default),
            "eu.gcr.io",
            LoginUse::PullSecret,
        )
        .await
        .unwrap();
    assert_eq!(s.endpoint.grants(), 3);
    assert_ne!(rotated.password.expose_secret(), refreshed.password.expose_secret());
}

#[tokio::test]
async fn the_mode_decides_who_gets_the_key_and_who_a_token() {
    let s = setup().await;
    for consumer in [LoginUse::Engine, LoginUse::Deployer] {
        let login = s.login(GoogleLogin::Default, consumer).await.unwrap();
        assert_eq!(login.username, "_json_key", "{consumer:?}");
        assert_eq!(login.password.expose_secret(), s.key());
        assert_eq!(login.expires_at, None);
    }
    let key_everywhere = s.login(GoogleLogin::JsonKey, LoginUse::PullSecret).await.unwrap();
    assert_eq!(key_everywhere.username, "_json_key");
    assert_eq!(s.endpoint.grants(), 0);
    for consumer in [LoginUse::Engine, LoginUse::Deployer, LoginUse::LiveTest] {
        let login = s.login(GoogleLogin::AccessToken, consumer).await.unwrap();
        assert_eq!(login.username, "oauth2accesstoken", "{consumer:?}");
    }
    assert_eq!(s.endpoint.grants(), 1, "one cached token for every consumer");
}

#[tokio::test]
async fn a_deleted_key_is_refused_and_a_valid_cached_token_outlives_a_failed_refresh() {
    let s = setup().await;
    s.endpoint.set_lifetime(3600);
    let first = s.login(GoogleLogin::Default, LoginUse::PullSecret).await.unwrap();
    s.endpoint.revoke(&s.account);
    s.clock.advance(Duration::from_secs(2000));
    let kept = s.login(GoogleLogin::Default, LoginUse::PullSecret).await.unwrap();
    assert_eq!(kept.password.expose_secret(), first.password.expose_secret());
    assert_eq!(s.endpoint.grants(), 2, "the refresh was tried");
    let why = kept.refresh_failed.as_deref().unwrap_or_default();
    assert!(why.contains("invalid_grant"), "{why:?}");
    assert_eq!(first.refresh_failed, None);

    s.clock.advance(Duration::from_secs(1600));
    let error = s.login(GoogleLogin::Default, LoginUse::PullSecret).await.unwrap_err();
    assert!(matches!(error, LoginError::Refused { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("Google refused the credentials of registry reg-google1")
            && message.contains("invalid_grant"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY") && !message.contains(first.password.expose_secret()));
}

#[tokio::test]
async fn a_key_naming_another_token_endpoint_is_refused_without_a_call() {
    let s = setup().await;
    let elsewhere = s.account.key_json("http://127.0.0.1:1/token");
    let error = s
        .logins
        .login(
            &registry(1),
            &gcr(elsewhere, GoogleLogin::AccessToken),
            "gcr.io",
            LoginUse::PullSecret,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Refused { .. }), "{error:?}");
    assert!(
        error.to_string().contains("token_uri \"http://127.0.0.1:1/token\""),
        "{error}"
    );
    assert_eq!(s.endpoint.grants(), 0);
}

#[tokio::test]
async fn huge_garbled_redirecting_and_silent_token_endpoints_are_unavailable() {
    let s = setup().await;
    s.endpoint.set_answer(Answer::Huge);
    let error = s
        .login(GoogleLogin::AccessToken, LoginUse::PullSecret)
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("larger than 65536 bytes"), "{error}");

    s.endpoint.set_answer(Answer::NotJson);
    let error = s
        .login(GoogleLogin::AccessToken, LoginUse::PullSecret)
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("not a token"), "{error}");

    // A redirect is not followed (nor is the assertion sent elsewhere).
    s.endpoint.set_answer(Answer::Redirect);
    let error = s
        .login(GoogleLogin::AccessToken, LoginUse::PullSecret)
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("302"), "{error}");

    s.endpoint.set_answer(Answer::Silent);
    let started = std::time::Instant::now();
    let error = s
        .login(GoogleLogin::AccessToken, LoginUse::PullSecret)
        .await
        .unwrap_err();
    assert!(s.endpoint.held_one());
    assert!(error.to_string().contains("did not answer within 2s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_key_signed_by_another_account_is_refused() {
    let s = setup().await;
    let stranger = ServiceAccount::generate("stranger", "elsewhere");
    let error = s
        .logins
        .login(
            &registry(1),
            &gcr(stranger.key_json(s.endpoint.url()), GoogleLogin::AccessToken),
            "gcr.io",
            LoginUse::PullSecret,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Refused { .. }), "{error:?}");
    assert!(error.to_string().contains("Invalid JWT Signature"), "{error}");
}
