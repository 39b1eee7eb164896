//! Amazon ECR registries deployed end to end: the real server exchanges the
//! registry's keys with `GetAuthorizationToken` at moto (a real AWS API
//! implementation on loopback, started by scripts/test) and writes the token
//! into a pull Secret on registry-testkit's simulated Kubernetes API server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use registry_e2e::{TestServer, kubernetes_config};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::prepare_deployment_response::Deployment;
use registry_testkit::kube_api::KubeSim;
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::Code;

/// moto's default account: the host its proxyEndpoint names.
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// moto's token decodes to `AWS:<account>-auth-token`.
const PASSWORD: &str = "123456789012-auth-token";

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

/// A server with a Kubernetes target "k8s" and ECR calls sent to `endpoint`.
async fn start(endpoint: String) -> (KubeSim, TestServer, tempfile::TempDir) {
    let sim = KubeSim::start().await;
    sim.create_namespace("env-production");
    let dir = tempfile::tempdir().unwrap();
    let mut config = kubernetes_config(dir.path(), sim.url());
    config.ecr.endpoint_url = Some(endpoint);
    let server = TestServer::start_with(config).await.unwrap();
    (sim, server, dir)
}

#[tokio::test]
async fn ecr_registries_deploy_with_a_token_from_get_authorization_token() {
    let Some(moto) = registry_testkit::require_service("moto", "REGISTRY_TEST_MOTO_URL") else {
        return;
    };
    let (sim, server, _dir) = start(moto).await;
    let registry = server
        .caller("alice", "acme")
        .await
        .create("Production ECR", pb::RegistryType::Ecr, Some(ecr()))
        .await
        .unwrap();
    let mut deployer = server.deployer("ci-bot", "acme").await;

    let prepared = deployer
        .prepare(
            "api",
            "production",
            "k8s",
            &registry.id,
            &format!("{HOST}/myorg/api"),
            "v1",
        )
        .await
        .unwrap();
    assert_eq!(prepared.image, format!("{HOST}/myorg/api:v1"));
    let Some(Deployment::Kubernetes(k8s)) = &prepared.deployment else {
        panic!("not a kubernetes deployment: {prepared:?}");
    };
    assert_eq!(k8s.image_pull_secrets.len(), 1);
    let name = &k8s.image_pull_secrets[0];
    assert!(name.starts_with("ecr-creds-"), "{name}");

    let secret = sim.secret("env-production", name).expect("secret exists");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    let config: serde_json::Value = serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"auths": {HOST: {
            "username": "AWS",
            "password": PASSWORD,
            "auth": STANDARD.encode(format!("AWS:{PASSWORD}")),
        }}})
    );

    let resolved = deployer.resolve(&registry.id).await.unwrap();
    assert_eq!(resolved.server, HOST);
    assert_eq!(resolved.docker_config_key, HOST);
    assert_eq!(resolved.username, "AWS");
    assert_eq!(resolved.password, PASSWORD);
    let expires = resolved.expire_time.expect("ECR logins expire");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let lifetime = u64::try_from(expires.seconds).unwrap().saturating_sub(now);
    // moto answers a fixed past expiresAt, which is taken as the documented
    // 12 hours.
    assert!(lifetime > 11 * 3600 && lifetime <= 12 * 3600, "expires in {lifetime} s");

    let state = deployer.sync_state(&registry.id).await.unwrap();
    assert_eq!(state.targets.len(), 1, "{state:?}");
    assert_eq!(state.targets[0].applied_revision, 1, "{state:?}");

    // The Secret is re-applied halfway through the token's lifetime: make
    // that moment pass and the sync loop writes it again.
    let db = Database::connect(registry_store_url(&server)).await.unwrap();
    let refresh_at = || async {
        let row = db
            .query_one(Statement::from_string(
                db.get_database_backend(),
                "SELECT refresh_at FROM pull_secrets".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "refresh_at").unwrap() / 1_000_000
    };
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let first = refresh_at().await;
    assert!(
        (now + 6 * 3600 - 60..=now + 6 * 3600).contains(&first),
        "refresh at {first}, now {now}"
    );
    let writes = sim.stats().writes();
    db.execute(Statement::from_string(
        db.get_database_backend(),
        "UPDATE pull_secrets SET refresh_at = 1".to_owned(),
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sim.stats().writes() == writes || refresh_at().await < now {
        assert!(tokio::time::Instant::now() < deadline, "the Secret was not refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config: serde_json::Value =
        serde_json::from_slice(&sim.secret("env-production", name).unwrap().data.unwrap()[".dockerconfigjson"].0)
            .unwrap();
    assert_eq!(config["auths"][HOST]["username"], "AWS");
    server.stop().await;
}

fn registry_store_url(server: &TestServer) -> String {
    format!("sqlite://{}?mode=rw", server.data_dir().join("registry.db").display())
}

#[tokio::test]
async fn an_unreachable_ecr_api_is_unavailable() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_sim, server, _dir) = start(format!("http://127.0.0.1:{port}")).await;
    let registry = server
        .caller("alice", "acme")
        .await
        .create("Production ECR", pb::RegistryType::Ecr, Some(ecr()))
        .await
        .unwrap();
    let mut deployer = server.deployer("ci-bot", "acme").await;
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        deployer.prepare(
            "api",
            "production",
            "k8s",
            &registry.id,
            &format!("{HOST}/myorg/api"),
            "v1",
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(!error.message().contains("wJalrXUtnFEMI"), "{}", error.message());
    let resolved = deployer.resolve(&registry.id).await.unwrap_err();
    assert_eq!(resolved.code(), Code::Unavailable);
}
