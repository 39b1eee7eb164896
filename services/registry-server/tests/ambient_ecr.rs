//! ECR registries that log in with the server's own AWS identity: the real
//! binary, its environment holding AWS keys (the SDK default chain's first
//! provider), `GetAuthorizationToken` answered by moto on loopback. The
//! environment is cleared otherwise, instance metadata disabled and the
//! profile files pointed at nothing, so no request leaves the machine.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::transport::Channel;
use tonic::{Code, IntoRequest, Request};

use crate::common::free_port;

/// moto's token decodes to `AWS:<account>-auth-token`.
const PASSWORD: &str = "123456789012-auth-token";

struct Server {
    child: Child,
    channel: Channel,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &Path, moto: &str, aws_keys: bool) -> Server {
    let config = dir.join("registry.toml");
    std::fs::write(
        &config,
        format!("[ecr]\nendpoint_url = \"{moto}\"\nambient_identity_organizations = [\"acme\"]\n"),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_registry-server"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--listen", &address])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-aws-credentials"))
        .stdout(common::unread_output())
        .stderr(Stdio::inherit());
    common::canary_log_level(&mut command);
    if aws_keys {
        command
            .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
        {
            break channel;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited with {status}");
        }
        assert!(Instant::now() < deadline, "not served within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Server { child, channel }
}

fn as_user<T>(message: T, org: &str) -> Request<T> {
    let mut request = message.into_request();
    let metadata = request.metadata_mut();
    metadata.insert("x-user", "alice".parse().unwrap());
    metadata.insert("x-org", org.parse().unwrap());
    metadata.insert("x-roles", "writer,deployer".parse().unwrap());
    request
}

fn server_identity() -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ecr(pb::EcrCredentials {
            region: "us-east-1".into(),
            use_server_identity: true,
            ..Default::default()
        })),
    }
}

async fn create(channel: &Channel, org: &str, credentials: pb::Credentials) -> Result<pb::Registry, tonic::Status> {
    let request = pb::CreateRegistryRequest {
        registry: Some(pb::Registry {
            name: "ECR (server identity)".into(),
            r#type: pb::RegistryType::Ecr.into(),
            credentials: Some(credentials),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let response = RegistryServiceClient::new(channel.clone())
        .create_registry(as_user(request, org))
        .await?;
    Ok(response.into_inner().registry.unwrap())
}

async fn resolve(channel: &Channel, registry_id: &str) -> Result<pb::ResolvePullCredentialsResponse, tonic::Status> {
    let request = pb::ResolvePullCredentialsRequest {
        registry_id: registry_id.into(),
    };
    let mut client =
        registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient::new(channel.clone());
    Ok(client
        .resolve_pull_credentials(as_user(request, "acme"))
        .await?
        .into_inner())
}

#[tokio::test]
async fn the_servers_own_aws_identity_logs_in_for_the_organizations_allowed() {
    let Some(moto) = registry_testkit::require_service("moto", "REGISTRY_TEST_MOTO_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &moto, true).await;

    let registry = create(&server.channel, "acme", server_identity()).await.unwrap();
    let hints: Vec<_> = registry
        .credential_hints
        .iter()
        .map(|h| (h.field.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(hints, [("identity", "server"), ("region", "us-east-1")]);
    let resolved = resolve(&server.channel, &registry.id).await.unwrap();
    assert_eq!(
        (resolved.username.as_str(), resolved.password.as_str()),
        ("AWS", PASSWORD)
    );
    assert!(resolved.expire_time.is_some());

    let refused = create(&server.channel, "globex", server_identity()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("registry.credentials.ecr.use_server_identity")
            && refused.message().contains("\"globex\""),
        "{}",
        refused.message()
    );

    let mut with_keys = server_identity();
    if let Some(Kind::Ecr(ecr)) = &mut with_keys.kind {
        ecr.access_key_id = "AKIAIOSFODNN7EXAMPLE".into();
    }
    let invalid = create(&server.channel, "acme", with_keys).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&invalid).unwrap();
    assert_eq!(
        details.field_violations[0].field,
        "registry.credentials.ecr.access_key_id"
    );
}

#[tokio::test]
async fn a_server_without_an_aws_identity_refuses_the_login_without_a_hang() {
    let Some(moto) = registry_testkit::require_service("moto", "REGISTRY_TEST_MOTO_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &moto, false).await;
    let registry = create(&server.channel, "acme", server_identity()).await.unwrap();
    let started = Instant::now();
    let status = resolve(&server.channel, &registry.id).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains(&registry.id)
            && status
                .message()
                .contains("the server's AWS identity gave no credentials"),
        "{}",
        status.message()
    );
}
