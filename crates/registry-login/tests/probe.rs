//! The live connection test against the test bed's distribution registry
//! (htpasswd Basic auth, plain http on loopback; scripts/test starts it) and
//! against loopback listeners that misbehave on purpose.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use registry_core::login::DockerLogin;
use registry_core::ports::login::{ImageProbe, LiveOutcome, LiveReport, RegistryProbe};
use registry_login::{Probe, ProbeSettings};
use registry_testkit::distribution::Distribution;
use registry_testkit::token_registry::{TokenRegistry, TokenUser};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

fn probe(deadline: Duration) -> Probe {
    Probe::new(ProbeSettings {
        deadline,
        ..ProbeSettings::default()
    })
    .unwrap()
}

fn login(server: &str, username: &str, password: &str) -> DockerLogin {
    DockerLogin {
        server: server.into(),
        username: username.into(),
        password: password.to_owned().into(),
        expires_at: None,
        refresh_failed: None,
    }
}

fn image(repository: &str, reference: &str) -> ImageProbe {
    ImageProbe {
        repository: repository.into(),
        reference: reference.into(),
    }
}

fn assert_outcome(report: &LiveReport, outcome: LiveOutcome, secret: &str) {
    assert_eq!(report.outcome, outcome, "{report:?}");
    assert!(!report.message.is_empty());
    assert!(!report.message.contains(secret), "{report:?}");
}

#[tokio::test]
async fn the_test_bed_registry_answers_each_outcome() {
    let Some(registry) = Distribution::from_env() else {
        return;
    };
    let image_ref = registry_testkit::require_service("the test image", "REGISTRY_TEST_IMAGE").unwrap();
    // 127.0.0.1:PORT/test/busybox:1
    let (repository, tag) = image_ref
        .strip_prefix(&format!("{}/", registry.address))
        .and_then(|rest| rest.rsplit_once(':'))
        .unwrap();
    let probe = probe(Duration::from_secs(10));
    let good = login(&registry.address, &registry.user, &registry.password);

    let report = probe.probe(&registry.address, Some(&good), None).await;
    assert_outcome(&report, LiveOutcome::Ok, &registry.password);

    let report = probe
        .probe(&registry.address, Some(&good), Some(&image(repository, tag)))
        .await;
    assert_outcome(&report, LiveOutcome::Ok, &registry.password);
    assert!(
        report.digest.as_deref().is_some_and(|d| d.starts_with("sha256:")),
        "{report:?}"
    );

    let report = probe
        .probe(&registry.address, Some(&good), Some(&image(repository, "no-such-tag")))
        .await;
    assert_outcome(&report, LiveOutcome::NotFound, &registry.password);

    let wrong = login(&registry.address, &registry.user, "not-the-password-4711");
    let report = probe
        .probe(&registry.address, Some(&wrong), Some(&image(repository, tag)))
        .await;
    assert_outcome(&report, LiveOutcome::Unauthorized, "not-the-password-4711");

    let report = probe.probe(&registry.address, None, None).await;
    assert_outcome(&report, LiveOutcome::Unauthorized, &registry.password);
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().to_string();
    drop(listener);
    let report = probe(Duration::from_secs(5))
        .probe(&server, Some(&login(&server, "u", "p4ssw0rd")), None)
        .await;
    assert_outcome(&report, LiveOutcome::Unreachable, "p4ssw0rd");
}

#[tokio::test]
async fn a_listener_that_never_answers_is_unreachable_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            open.push(socket);
        }
    });
    let deadline = Duration::from_millis(500);
    let report = probe(deadline)
        .probe(&server, Some(&login(&server, "u", "p4ssw0rd")), None)
        .await;
    held.abort();
    assert_outcome(&report, LiveOutcome::Unreachable, "p4ssw0rd");
    assert!(report.elapsed >= deadline, "{report:?}");
    assert!(report.message.contains("500 ms"), "{report:?}");
}

/// A plain-HTTP listener on loopback answering every request with `answer`.
async fn answering(answer: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (server, task)
}

#[tokio::test]
async fn malformed_challenges_are_protocol_errors() {
    for challenge in [
        "Bearer service=\"registry\"",
        "Negotiate",
        "Bearer realm=\"unterminated",
    ] {
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (server, task) = answering(answer).await;
        let report = probe(Duration::from_secs(5))
            .probe(&server, Some(&login(&server, "u", "p4ssw0rd")), None)
            .await;
        task.abort();
        assert_outcome(&report, LiveOutcome::ProtocolError, "p4ssw0rd");
    }
}

#[tokio::test]
async fn a_server_that_is_not_a_registry_is_a_protocol_error() {
    let (server, task) = answering("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let report = probe(Duration::from_secs(5))
        .probe(&server, Some(&login(&server, "u", "p4ssw0rd")), None)
        .await;
    task.abort();
    assert_outcome(&report, LiveOutcome::ProtocolError, "p4ssw0rd");
    assert!(report.message.contains("404"), "{report:?}");
}

fn token_users() -> Vec<TokenUser> {
    vec![TokenUser {
        name: "alice".into(),
        password: "alice-s3cret".into(),
        pulls: vec!["myorg/".into()],
    }]
}

/// The Bearer flow against a real registry with token auth: the token
/// grants only the repositories the account may pull.
#[tokio::test]
async fn a_token_auth_registry_answers_each_outcome() {
    let Some(registry) = TokenRegistry::start(token_users(), false).await else {
        return;
    };
    let digest = registry.push_image("myorg/app", "1").unwrap();
    registry.push_image("secret/app", "1").unwrap();
    let probe = probe(Duration::from_secs(10));
    let alice = login(&registry.address, "alice", "alice-s3cret");

    let report = probe.probe(&registry.address, Some(&alice), None).await;
    assert_outcome(&report, LiveOutcome::Ok, "alice-s3cret");

    let report = probe
        .probe(&registry.address, Some(&alice), Some(&image("myorg/app", "1")))
        .await;
    assert_outcome(&report, LiveOutcome::Ok, "alice-s3cret");
    assert_eq!(report.digest.as_deref(), Some(digest.as_str()));

    let report = probe
        .probe(&registry.address, Some(&alice), Some(&image("secret/app", "1")))
        .await;
    assert_outcome(&report, LiveOutcome::NoAccess, "alice-s3cret");

    let report = probe
        .probe(
            &registry.address,
            Some(&alice),
            Some(&image("myorg/app", "no-such-tag")),
        )
        .await;
    assert_outcome(&report, LiveOutcome::NotFound, "alice-s3cret");

    let wrong = login(&registry.address, "alice", "wrong-4711");
    let report = probe
        .probe(&registry.address, Some(&wrong), Some(&image("myorg/app", "1")))
        .await;
    assert_outcome(&report, LiveOutcome::Unauthorized, "wrong-4711");
}

/// A registry over TLS with a certificate of a test CA: not trusted by
/// default, trusted with the CA as an extra root.
#[tokio::test]
async fn a_tls_registry_needs_its_ca() {
    let Some(registry) = TokenRegistry::start(token_users(), true).await else {
        return;
    };
    let alice = login(&registry.address, "alice", "alice-s3cret");

    let report = probe(Duration::from_secs(10))
        .probe(&registry.address, Some(&alice), None)
        .await;
    assert_outcome(&report, LiveOutcome::TlsError, "alice-s3cret");

    let ca = registry.ca_pem.clone().unwrap();
    let roots = CertificateDer::pem_slice_iter(ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let trusting = Probe::new(ProbeSettings {
        deadline: Duration::from_secs(10),
        extra_roots: roots,
    })
    .unwrap();
    let report = trusting.probe(&registry.address, Some(&alice), None).await;
    assert_outcome(&report, LiveOutcome::Ok, "alice-s3cret");

    // The same CA as the registry's own bundle (a Custom registry's
    // ca_bundle), trusted for that test only.
    let untrusting = probe(Duration::from_secs(10));
    let report = untrusting
        .probe_trusting(&registry.address, Some(&alice), None, Some(&ca))
        .await;
    assert_outcome(&report, LiveOutcome::Ok, "alice-s3cret");
    let report = untrusting.probe(&registry.address, Some(&alice), None).await;
    assert_outcome(&report, LiveOutcome::TlsError, "alice-s3cret");
    // Another CA's certificate does not vouch for this registry.
    let other = include_str!("../../registry-core/tests/fixtures/registry-ca.pem");
    let report = untrusting
        .probe_trusting(&registry.address, Some(&alice), None, Some(other))
        .await;
    assert_outcome(&report, LiveOutcome::TlsError, "alice-s3cret");
}
