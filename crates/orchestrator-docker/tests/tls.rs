//! A Docker engine over TLS: the test bed's dockerd also listens on a
//! loopback TCP port with `--tlsverify` (scripts/lib/docker-services.sh).
//! With the CA and a client certificate it answers; without the client
//! certificate, trusting another CA, or in plaintext it does not. Without
//! the bed each test skips loudly, and fails under `CI=true`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;

use orchestrator_docker::{DockerTarget, EngineTls, TlsFiles};
use registry_core::ports::orchestrators::{DockerEngine, EngineRole};
use registry_testkit::pki::TestCa;
use registry_testkit::require_service;

struct Bed {
    host: String,
    dir: PathBuf,
    api_version: String,
}

fn bed() -> Option<Bed> {
    Some(Bed {
        host: require_service("dockerd with --tlsverify", "REGISTRY_TEST_DOCKER_TLS_HOST")?,
        dir: require_service("the docker TLS files", "REGISTRY_TEST_DOCKER_TLS_DIR")?.into(),
        api_version: require_service("dockerd", "REGISTRY_TEST_DOCKER_API_VERSION")?,
    })
}

impl Bed {
    fn files(&self, client: bool) -> TlsFiles {
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            client: client.then(|| (self.dir.join("cert.pem"), self.dir.join("key.pem"))),
        }
    }
}

#[tokio::test]
async fn the_engine_answers_over_tls_with_the_client_certificate() {
    let Some(bed) = bed() else { return };
    let tls = EngineTls::load(&bed.files(true)).unwrap();
    let target = DockerTarget::with_tls(&bed.host, tls.clone()).unwrap();
    assert_eq!(target.api_version().await.unwrap(), bed.api_version);
    target.check(EngineRole::Standalone).await.unwrap();
    // https:// is the same engine, TLS by its scheme.
    let https = bed.host.replacen("tcp://", "https://", 1);
    let target = DockerTarget::with_tls(&https, tls).unwrap();
    assert_eq!(target.api_version().await.unwrap(), bed.api_version);
}

#[tokio::test]
async fn the_engine_refuses_what_docker_tlsverify_refuses() {
    let Some(bed) = bed() else { return };
    // No client certificate: the daemon requires one.
    let without = DockerTarget::with_tls(&bed.host, EngineTls::load(&bed.files(false)).unwrap()).unwrap();
    let err = without.api_version().await.unwrap_err().to_string();
    assert!(!err.is_empty());
    // Another CA: the daemon's certificate is not trusted, whatever the
    // system roots say.
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new("not the engine's CA").write(dir.path(), "ca");
    let files = TlsFiles {
        ca: other,
        client: bed.files(true).client,
    };
    let untrusted = DockerTarget::with_tls(&bed.host, EngineTls::load(&files).unwrap()).unwrap();
    let err = untrusted.api_version().await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Plaintext to the TLS port.
    let plain = DockerTarget::new(&bed.host).unwrap();
    assert!(plain.api_version().await.is_err());
    // https:// without TLS settings is refused before any request.
    let https = DockerTarget::new(&bed.host.replacen("tcp://", "https://", 1)).unwrap();
    let err = https.api_version().await.unwrap_err().to_string();
    assert!(err.contains("no TLS settings"), "{err}");
}

#[test]
fn tls_files_that_cannot_serve_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("engine CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, _) = ca.server().write(dir.path(), "client");
    let (_, other_key) = ca.server().write(dir.path(), "other");

    let missing = TlsFiles {
        ca: dir.path().join("absent.pem"),
        client: None,
    };
    let err = EngineTls::load(&missing).unwrap_err().to_string();
    assert!(err.contains("tls_ca_file") && err.contains("absent.pem"), "{err}");

    let mismatched = TlsFiles {
        ca: ca_file.clone(),
        client: Some((cert, other_key)),
    };
    let err = EngineTls::load(&mismatched).unwrap_err().to_string();
    assert!(err.contains("tls_key_file") && err.contains("other.key"), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "no certificate here").unwrap();
    let not_pem = TlsFiles {
        ca: garbage,
        client: None,
    };
    let err = EngineTls::load(&not_pem).unwrap_err().to_string();
    assert!(
        err.contains("tls_ca_file") && err.contains("no PEM certificate"),
        "{err}"
    );

    let unix = DockerTarget::with_tls(
        "unix:///run/docker.sock",
        EngineTls::load(&TlsFiles {
            ca: ca_file,
            client: None,
        })
        .unwrap(),
    );
    assert!(unix.unwrap_err().to_string().contains("unix socket"));
}
