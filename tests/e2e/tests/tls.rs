//! TLS and mutual TLS on the gRPC listener: certificates from a test CA,
//! identities mapped to principals, refused handshakes, files that do not
//! load, and certificates re-read while the server runs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use registry_e2e::{TestServer, default_config};
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::deploy_credential_service_client::DeployCredentialServiceClient;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use registry_server::StartError;
use registry_server::config::{AuthMode, Config, MtlsClientConfig};
use registry_testkit::pki::{ClientNames, Issued, TestCa};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const DEPLOYER: &str = "spiffe://platform.example/ns/deploy/sa/deployer";
const OPERATOR: &str = "ops.platform.example";
const AUDITOR: &str = "auditor";

struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: TestCa::new("registry test CA"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// TLS with the server certificate of `self.ca`; mutual TLS against
    /// the same CA when `mutual`.
    fn config(&self, data_dir: &Path, mutual: bool) -> Config {
        let (cert, key) = self.ca.server().write(self.path(), "server");
        let mut config = default_config(data_dir);
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
        if mutual {
            config.tls.client_ca_file = Some(self.ca.write(self.path(), "clients-ca"));
            config.auth.mode = AuthMode::Mtls;
            let client = |identity: &str, roles: &[&str]| MtlsClientConfig {
                identity: identity.into(),
                organization: "acme".into(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            };
            config.auth.mtls.clients = vec![
                client(DEPLOYER, &["deployer"]),
                client(OPERATOR, &["admin"]),
                client(AUDITOR, &["reader"]),
            ];
        }
        config
    }
}

/// A channel to `server` trusting `ca`, presenting `identity` if any.
async fn channel(server: &TestServer, ca: &str, identity: Option<&Issued>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem));
    }
    Channel::from_shared(format!("https://{}", server.server.local_addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

fn ghcr_draft() -> pb::Registry {
    pb::Registry {
        name: "GHCR".into(),
        r#type: pb::RegistryType::Ghcr.into(),
        credentials: Some(pb::Credentials {
            kind: Some(Kind::Ghcr(pb::GhcrCredentials {
                username: "myorg".into(),
                token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
            })),
        }),
        ..Default::default()
    }
}

async fn create(channel: Channel) -> Result<pb::Registry, tonic::Status> {
    let response = RegistryServiceClient::new(channel)
        .create_registry(pb::CreateRegistryRequest {
            registry: Some(ghcr_draft()),
            request_id: String::new(),
        })
        .await?;
    Ok(response.into_inner().registry.unwrap())
}

async fn list(channel: Channel) -> Result<Vec<pb::Registry>, tonic::Status> {
    let response = RegistryServiceClient::new(channel)
        .list_registries(pb::ListRegistriesRequest::default())
        .await?;
    Ok(response.into_inner().registries)
}

async fn resolve(channel: Channel, registry_id: &str) -> Result<pb::ResolvePullCredentialsResponse, tonic::Status> {
    let response = DeployCredentialServiceClient::new(channel)
        .resolve_pull_credentials(pb::ResolvePullCredentialsRequest {
            registry_id: registry_id.into(),
        })
        .await?;
    Ok(response.into_inner())
}

/// A call over a connection the server should not accept: either the
/// connection or the call fails, and never with an answer.
async fn refused(server: &TestServer, ca: &str, identity: Option<&Issued>) -> String {
    match channel(server, ca, identity).await {
        Err(e) => format!("connect: {e}"),
        Ok(channel) => {
            let status = list(channel)
                .await
                .expect_err("the server must not answer this connection");
            assert!(
                matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal),
                "a refused handshake, not an answer: {status:?}"
            );
            status.to_string()
        }
    }
}

#[tokio::test]
async fn mutual_tls_maps_certificates_to_principals_and_refuses_the_rest() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(pki.config(data.path(), true)).await.unwrap();
    let ca = pki.ca.pem();
    let names = |common_name, uri, dns| ClientNames {
        common_name,
        uri,
        dns,
        expired: false,
    };
    let deployer = pki.ca.client(names("deployer", Some(DEPLOYER), None));
    let operator = pki.ca.client(names("ops", None, Some(OPERATOR)));
    let auditor = pki.ca.client(names(AUDITOR, None, None));
    let stranger = pki.ca.client(names("stranger", None, Some("stranger.example")));

    // The operator (DNS SAN, admin) creates; the auditor (common name,
    // reader) lists but gets no credentials; the deployer (SPIFFE id)
    // resolves but cannot create.
    let operator_channel = channel(&server, &ca, Some(&operator)).await.unwrap();
    let registry = create(operator_channel.clone()).await.unwrap();
    let auditor_channel = channel(&server, &ca, Some(&auditor)).await.unwrap();
    assert_eq!(list(auditor_channel.clone()).await.unwrap().len(), 1);
    let status = resolve(auditor_channel, &registry.id).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let deployer_channel = channel(&server, &ca, Some(&deployer)).await.unwrap();
    let login = resolve(deployer_channel.clone(), &registry.id).await.unwrap();
    assert_eq!(login.username, "myorg");
    let status = create(deployer_channel).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A certificate of the CA whose identity is not configured: known
    // holder, no principal.
    let status = list(channel(&server, &ca, Some(&stranger)).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("stranger.example"), "{status:?}");

    // No certificate, one from another CA with a configured identity, and
    // an expired one: the handshake is refused.
    refused(&server, &ca, None).await;
    let other_ca = TestCa::new("another CA");
    refused(&server, &ca, Some(&other_ca.client(names("ops", None, Some(OPERATOR))))).await;
    let expired = pki.ca.client(ClientNames {
        expired: true,
        ..names("ops", None, Some(OPERATOR))
    });
    refused(&server, &ca, Some(&expired)).await;
    // Plaintext to a TLS listener is no gRPC call either.
    let plain = Channel::from_shared(format!("http://{}", server.server.local_addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(list(plain).await.is_err());
    }

    // Nothing the refused callers did reached the store.
    assert_eq!(list(operator_channel.clone()).await.unwrap().len(), 1);

    // The hand-out's audit event names the certificate it came with.
    let trail = RegistryServiceClient::new(operator_channel)
        .list_audit_events(pb::ListAuditEventsRequest {
            action: pb::AuditAction::CredentialsResolve.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let [handout, refusal] = trail.as_slice() else {
        panic!("a hand-out and a refusal: {trail:?}")
    };
    assert!(
        handout.peer.starts_with(&format!("{DEPLOYER}@127.0.0.1:")),
        "{handout:?}"
    );
    assert!(
        refusal.peer.starts_with(&format!("{AUDITOR}@127.0.0.1:")),
        "{refusal:?}"
    );
    assert_eq!(refusal.outcome, i32::from(pb::AuditOutcome::Denied));
    assert!(!handout.request_id.is_empty() && handout.request_id != refusal.request_id);
    server.server.shutdown().await.unwrap();
}

/// Writes `issued` over the server's certificate files.
fn replace(files: (&PathBuf, &PathBuf), issued: &Issued) {
    // A reload between the two writes sees a mismatch and keeps the
    // previous pair.
    std::fs::write(files.1, &issued.key_pem).unwrap();
    std::fs::write(files.0, &issued.cert_pem).unwrap();
}

/// Polls until a connection trusting only `ca` gets an answer.
async fn until_served_by(server: &TestServer, ca: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(channel) = channel(server, ca, None).await
            && list(channel).await.is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn certificate_files_are_re_read_when_they_change() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = pki.config(data.path(), false);
    config.tls.reload_interval_ms = 100;
    let cert = config.tls.cert_file.clone().unwrap();
    let key = config.tls.key_file.clone().unwrap();
    let server = TestServer::start_with(config).await.unwrap();
    let old_ca = pki.ca.pem();
    let old = channel(&server, &old_ca, None).await.unwrap();
    assert!(list(old.clone()).await.is_ok());

    // A renewed certificate from a new CA: new connections get it, the
    // connection already open keeps working.
    let new_ca = TestCa::new("renewed CA");
    replace((&cert, &key), &new_ca.server());
    until_served_by(&server, &new_ca.pem()).await;
    assert!(list(old).await.is_ok(), "an open connection survives the reload");
    refused(&server, &old_ca, None).await;

    // Files caught half-written (the key of another certificate) do not
    // stop the reloading: the good pair written after them is taken.
    let third_ca = TestCa::new("third CA");
    let third = third_ca.server();
    std::fs::write(&key, new_ca.server().key_pem).unwrap();
    std::fs::write(&cert, &third.cert_pem).unwrap();
    std::fs::write(&key, &third.key_pem).unwrap();
    until_served_by(&server, &third_ca.pem()).await;
    server.server.shutdown().await.unwrap();
}

fn start_error(result: Result<TestServer, StartError>) -> String {
    match result {
        Ok(_) => panic!("the server must refuse these files"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn files_that_cannot_serve_are_refused_at_start_naming_the_file() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let good = pki.config(data.path(), true);

    let mut missing = good.clone();
    missing.tls.cert_file = Some(pki.path().join("absent.pem"));
    let err = start_error(TestServer::start_with(missing).await);
    assert!(err.contains("tls.cert_file") && err.contains("absent.pem"), "{err}");

    let mut mismatched = good.clone();
    let (_, other_key) = pki.ca.server().write(pki.path(), "other");
    mismatched.tls.key_file = Some(other_key);
    let err = start_error(TestServer::start_with(mismatched).await);
    assert!(err.contains("tls.key_file") && err.contains("not the key"), "{err}");

    let mut expired = good.clone();
    let (cert, key) = pki.ca.expired_server().write(pki.path(), "expired");
    expired.tls.cert_file = Some(cert);
    expired.tls.key_file = Some(key);
    let err = start_error(TestServer::start_with(expired).await);
    assert!(err.contains("tls.cert_file") && err.contains("not now"), "{err}");

    let mut not_pem = good.clone();
    let garbage = pki.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    not_pem.tls.client_ca_file = Some(garbage);
    let err = start_error(TestServer::start_with(not_pem).await);
    assert!(
        err.contains("tls.client_ca_file") && err.contains("garbage.pem"),
        "{err}"
    );

    let mut no_key = good;
    let empty = pki.path().join("empty.key");
    std::fs::write(&empty, "").unwrap();
    no_key.tls.key_file = Some(empty);
    let err = start_error(TestServer::start_with(no_key).await);
    assert!(
        err.contains("tls.key_file") && err.contains("no PEM private key"),
        "{err}"
    );
}
