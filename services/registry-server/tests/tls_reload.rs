//! The real binary serving TLS re-reads its certificate files on SIGHUP,
//! without a restart (the periodic check is set to an hour, so only the
//! signal can have done it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use registry_testkit::pki::TestCa;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::free_port;

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a health check over TLS trusting only `ca` is answered.
async fn answers(address: &str, ca: &str) -> bool {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let Ok(endpoint) = Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
    else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok()
}

async fn until_answers(address: &str, ca: &str, server: &mut Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(address, ca).await {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("the server exited with {status}");
        }
        assert!(Instant::now() < deadline, "{what}: not served within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_re_reads_the_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new("first CA");
    let (cert, key) = first.server().write(dir.path(), "server");
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval_ms = 3600000\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", &address])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(common::append_to(&common::output_path(&dir.path().join("server.log"))))
        .stderr(common::unread_output())
        .spawn()
        .unwrap();
    let mut server = Server { child };
    until_answers(&address, &first.pem(), &mut server, "the first certificate").await;

    let second = TestCa::new("second CA");
    second.server().write(dir.path(), "server");
    assert!(
        !answers(&address, &second.pem()).await,
        "nothing but the signal may re-read the files"
    );
    let signalled = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    until_answers(&address, &second.pem(), &mut server, "the certificate after SIGHUP").await;
    assert!(
        !answers(&address, &first.pem()).await,
        "the old certificate is no longer served"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP re-reads, it does not stop the server"
    );
}
