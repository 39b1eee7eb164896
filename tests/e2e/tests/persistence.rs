//! What survives a restart, what a wrong master key does, and what the bytes
//! at rest look like — on SQLite and on PostgreSQL. Also the JWT mode.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use registry_e2e::{TestServer, default_config};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_server::StartError;
use registry_server::config::{AuthMode, Config};
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::Code;

const GHCR_TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const ECR_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const CUSTOM_PASSWORD: &str = "s3cr3t-Deploy-Passw0rd";
const SERVICE_ACCOUNT_KEY: &str = include_str!("../../../crates/registry-core/tests/fixtures/service-account.json");

/// One registry of each secret-bearing kind, all in organization `acme`.
fn registries() -> Vec<pb::CreateRegistryRequest> {
    let registry = |name: &str, kind: pb::RegistryType, credentials: Kind| pb::CreateRegistryRequest {
        registry: Some(pb::Registry {
            name: name.into(),
            r#type: kind.into(),
            credentials: Some(pb::Credentials {
                kind: Some(credentials),
            }),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    vec![
        registry(
            "My GHCR",
            pb::RegistryType::Ghcr,
            Kind::Ghcr(pb::GhcrCredentials {
                username: "myorg".into(),
                token: GHCR_TOKEN.into(),
            }),
        ),
        registry(
            "Production ECR",
            pb::RegistryType::Ecr,
            Kind::Ecr(pb::EcrCredentials {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: ECR_SECRET.into(),
                region: "us-east-1".into(),
                ..Default::default()
            }),
        ),
        registry(
            "Internal Registry",
            pb::RegistryType::Custom,
            Kind::Custom(pb::CustomCredentials {
                url: "https://registry.internal.example.com".into(),
                username: "deploy".into(),
                password: CUSTOM_PASSWORD.into(),
                ca_bundle: String::new(),
            }),
        ),
        registry(
            "GCR",
            pb::RegistryType::Gcr,
            Kind::Gcr(pb::GcrCredentials {
                service_account_key: SERVICE_ACCOUNT_KEY.into(),
                login: pb::GoogleLogin::JsonKey.into(),
            }),
        ),
    ]
}

/// Fragments that must never appear at rest or in a response.
fn secrets() -> Vec<&'static str> {
    let private_key_line = SERVICE_ACCOUNT_KEY
        .lines()
        .find(|l| l.contains("private_key\""))
        .unwrap();
    // A stretch of the PEM body, well inside the key.
    let pem_fragment = &private_key_line[private_key_line.len() / 2..private_key_line.len() / 2 + 40];
    vec![
        GHCR_TOKEN,
        "16C7e42F292c6912",
        ECR_SECRET,
        CUSTOM_PASSWORD,
        pem_fragment,
    ]
}

async fn create_all(server: &TestServer) -> Vec<pb::Registry> {
    let mut alice = server.caller("alice", "acme").await;
    let mut created = Vec::new();
    for request in registries() {
        created.push(alice.create_with(request).await.unwrap());
    }
    created.sort_by(|a, b| a.name.cmp(&b.name));
    created
}

async fn list_all(server: &TestServer) -> Vec<pb::Registry> {
    server.caller("alice", "acme").await.list().await.unwrap()
}

/// Every saved registry still passes Test Connection: its credentials open.
async fn assert_all_open(server: &TestServer, registries: &[pb::Registry]) {
    let mut alice = server.caller("alice", "acme").await;
    for registry in registries {
        let outcome = alice.test_saved(&registry.id).await.unwrap();
        assert!(outcome.ok, "{}: {:?}", registry.name, outcome.violations);
    }
}

fn assert_no_secret_in(bytes: &[u8], what: &str) {
    for secret in secrets() {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{what} contains a credential in plaintext");
    }
}

fn files_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect()
}

#[tokio::test]
async fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(default_config(dir.path())).await.unwrap();
    let created = create_all(&server).await;
    server.stop().await;

    let server = TestServer::start_with(default_config(dir.path())).await.unwrap();
    assert_eq!(list_all(&server).await, created);
    assert_all_open(&server, &created).await;
}

#[tokio::test]
async fn a_different_master_key_refuses_to_start_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(default_config(dir.path())).await.unwrap();
    let created = create_all(&server).await;
    server.stop().await;
    let before = files_bytes(dir.path());

    let other_key = registry_crypto::generate_key().unwrap();
    let wrong = Config {
        master_keys: Some(other_key.to_string()),
        ..default_config(dir.path())
    };
    let refused = TestServer::start_with(wrong).await.unwrap_err();
    assert!(matches!(refused, StartError::KeyMismatch(_)), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("cannot open the stored credentials") && message.contains("mk-"),
        "{message}"
    );
    assert!(!message.contains(other_key.as_str()));

    // The database and key file are byte for byte what they were (SQLite's
    // WAL may have been checkpointed into the main file, so compare content
    // through a restart with the right key instead of raw bytes for those).
    let key_file = dir.path().join("master.key");
    let key_before = &before.iter().find(|(p, _)| Path::new(p) == key_file).unwrap().1;
    assert_eq!(&std::fs::read(&key_file).unwrap(), key_before);

    // The old key, as an older key behind a new primary, opens everything.
    let original_key = String::from_utf8(key_before.clone()).unwrap();
    let original_key = original_key
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_owned();
    let rotated = Config {
        master_keys: Some(format!(
            "{},{original_key}",
            registry_crypto::generate_key().unwrap().as_str()
        )),
        ..default_config(dir.path())
    };
    let server = TestServer::start_with(rotated).await.unwrap();
    assert_eq!(list_all(&server).await, created);
    assert_all_open(&server, &created).await;
}

#[tokio::test]
async fn a_missing_generated_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(default_config(dir.path())).await.unwrap();
    create_all(&server).await;
    server.stop().await;
    let key_file = dir.path().join("master.key");
    let saved = dir.path().join("master.key.bak");
    std::fs::rename(&key_file, &saved).unwrap();

    let refused = TestServer::start_with(default_config(dir.path())).await.unwrap_err();
    assert!(matches!(refused, StartError::MissingKeyFile(_)), "{refused}");
    assert!(!key_file.exists(), "no new key may be generated over existing data");

    std::fs::rename(&saved, &key_file).unwrap();
    let server = TestServer::start_with(default_config(dir.path())).await.unwrap();
    assert_eq!(list_all(&server).await.len(), 4);
}

#[tokio::test]
async fn the_sqlite_file_never_holds_a_credential_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(default_config(dir.path())).await.unwrap();
    let created = create_all(&server).await;

    // Responses carry no secret either.
    let listed = list_all(&server).await;
    assert_no_secret_in(format!("{listed:?}").as_bytes(), "a ListRegistries response");
    server.stop().await;

    let files = files_bytes(dir.path());
    assert!(files.iter().any(|(p, _)| p.ends_with("registry.db")));
    for (path, bytes) in &files {
        if !path.ends_with("master.key") {
            assert_no_secret_in(bytes, path);
        }
    }
    // The search does see plaintext: the non-secret username is there (in
    // the database file or its write-ahead log).
    let database_files = files.iter().filter(|(p, _)| p.contains("registry.db"));
    assert!(
        database_files
            .into_iter()
            .any(|(_, bytes)| bytes.windows(6).any(|w| w == b"deploy"))
    );
    assert_eq!(created.len(), 4);
}

#[tokio::test]
async fn postgres_rows_never_hold_a_credential_in_plaintext() {
    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_url: Some(url.clone()),
        ..default_config(dir.path())
    };
    let server = TestServer::start_with(config.clone()).await.unwrap();
    let created = create_all(&server).await;
    server.stop().await;

    let db = Database::connect(url.as_str()).await.unwrap();
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT row_to_json(r)::text AS row, encode(sealed_credentials, 'escape') AS blob FROM registries r"
                .to_owned(),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        let json: String = row.try_get("", "row").unwrap();
        let blob: String = row.try_get("", "blob").unwrap();
        assert!(json.contains("acme"), "the query sees the rows");
        assert_no_secret_in(json.as_bytes(), "a registries row");
        assert_no_secret_in(blob.as_bytes(), "a sealed blob");
    }

    // And PostgreSQL keeps everything over a restart as well.
    let server = TestServer::start_with(config).await.unwrap();
    assert_eq!(list_all(&server).await, created);
    assert_all_open(&server, &created).await;
}

#[tokio::test]
async fn jwt_mode_takes_the_principal_from_verified_tokens() {
    use jsonwebtoken::{EncodingKey, Header};
    let dir = tempfile::tempdir().unwrap();
    let secret = b"an-hmac-secret-of-at-least-32-bytes!";
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let mut config = default_config(&dir.path().join("data"));
    config.auth.mode = AuthMode::Jwt;
    config.auth.jwt.hmac_secret_file = Some(secret_file);
    config.auth.jwt.issuer = Some("https://id.example".into());
    config.auth.jwt.audience = Some("registry".into());
    let server = TestServer::start_with(config).await.unwrap();
    let mut client = server.client().await;

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = |sub: &str, roles: &[&str], key: &[u8]| {
        let claims = serde_json::json!({"sub": sub, "org": "acme", "roles": roles, "iss": "https://id.example", "aud": "registry", "exp": exp});
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
    };
    let bearer = |request: pb::CreateRegistryRequest, token: String| {
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        // Development metadata is ignored in JWT mode.
        request.metadata_mut().insert("x-user", "mallory".parse().unwrap());
        request
    };
    let created = client
        .create_registry(bearer(registries().remove(0), token("alice", &["writer"], secret)))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    assert_eq!(
        (created.created_by.as_str(), created.organization.as_str()),
        ("alice", "acme")
    );

    let forged = client
        .create_registry(bearer(
            registries().remove(1),
            token("alice", &["writer"], b"not-the-configured-secret-at-all!!!"),
        ))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    let reader = client
        .create_registry(bearer(registries().remove(1), token("rita", &["reader"], secret)))
        .await
        .unwrap_err();
    assert_eq!(reader.code(), Code::PermissionDenied);
    let anonymous = client
        .list_registries(pb::ListRegistriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

/// JWT mode on `data` (and `database_url`), with a secret file in `dir`.
fn jwt_config(dir: &Path, database_url: Option<&str>) -> Config {
    let secret_file = dir.join("jwt.secret");
    std::fs::write(&secret_file, b"an-hmac-secret-of-at-least-32-bytes!").unwrap();
    let mut config = default_config(&dir.join("data"));
    config.database_url = database_url.map(str::to_owned);
    config.auth.mode = AuthMode::Jwt;
    config.auth.jwt.hmac_secret_file = Some(secret_file);
    config.auth.jwt.issuer = Some("https://id.example".into());
    config.auth.jwt.audience = Some("registry".into());
    config
}

/// Starts `config`, waiting (5 s at most) for a server just stopped to let
/// go of the SQLite file's lock.
async fn start_after_stop(config: Config) -> Result<TestServer, StartError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match TestServer::start_with(config.clone()).await {
            Err(StartError::Store(registry_store::OpenError::Locked(_))) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            started => return started,
        }
    }
}

/// Starts JWT mode on a store, then development mode on the same store:
/// refused, naming the mode, unless the operator says it is not production.
async fn development_mode_refuses_a_store_jwt_mode_served(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let production = jwt_config(dir.path(), database_url);
    TestServer::start_with(production.clone()).await.unwrap().stop().await;

    let mut development = production.clone();
    development.auth.mode = AuthMode::Development;
    let refused = start_after_stop(development.clone()).await.unwrap_err();
    assert!(
        matches!(refused, StartError::ProductionStore(ref mode) if mode == "jwt"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("auth.development_over_production_store"),
        "{refused}"
    );

    development.auth.development_over_production_store = true;
    start_after_stop(development).await.unwrap().stop().await;
    // Still marked: the override is per start, never remembered.
    let mut again = production;
    again.auth.mode = AuthMode::Development;
    assert!(matches!(
        start_after_stop(again).await.unwrap_err(),
        StartError::ProductionStore(_)
    ));
}

#[tokio::test]
async fn development_mode_refuses_a_sqlite_store_jwt_mode_served() {
    development_mode_refuses_a_store_jwt_mode_served(None).await;
}

#[tokio::test]
async fn development_mode_refuses_a_postgres_store_jwt_mode_served() {
    let Some(url) = registry_testkit::postgres_database().await else {
        return;
    };
    development_mode_refuses_a_store_jwt_mode_served(Some(&url)).await;
}

#[tokio::test]
async fn a_fresh_store_and_one_development_served_start_in_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = default_config(&dir.path().join("data"));
    TestServer::start_with(config.clone()).await.unwrap().stop().await;
    start_after_stop(config).await.unwrap().stop().await;
}
