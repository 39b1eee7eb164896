//! The real binary with a proxy in its environment and a Kubernetes target:
//! it reaches the API server through the proxy, or directly when NO_PROXY
//! covers the server. The proxy is a small forwarding proxy on loopback
//! (CONNECT tunnels) that counts the connections it carried.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use registry_testkit::kube_api::{KubeSim, Verb};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::free_port;

/// A forwarding proxy to loopback: `CONNECT host:port` tunnels (what kube's
/// client sends, for http servers too), and absolute-form requests (`GET
/// http://host:port/…`) are passed on as they came.
async fn proxy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let carried = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&carried);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 || head.len() > 16 * 1024 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let mut words = line.split_whitespace();
                let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
                let authority = match method {
                    "CONNECT" => target.to_owned(),
                    _ => target
                        .strip_prefix("http://")
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or_default()
                        .to_owned(),
                };
                // Loopback only: a test never leaves this machine.
                if !authority.starts_with("127.0.0.1:") {
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(&authority).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let sent = if method == "CONNECT" {
                    client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await
                } else {
                    upstream.write_all(&head).await
                };
                if sent.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (address, carried)
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with a Kubernetes target on `sim` and `env`, and waits
/// until it serves.
async fn serve(sim: &KubeSim, env: &[(&str, String)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!(
            "[targets.k8s]\nkind = \"kubernetes\"\norganizations = [\"acme\"]\nkubeconfig = \"{}\"\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let log = common::output_path(&dir.path().join("server.log"));
    let stderr_log = common::output_path(&dir.path().join("stderr.log"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_registry-server"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--listen", &address])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(common::append_to(&log))
        .stderr(common::append_to(&stderr_log));
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let stderr = std::fs::read_to_string(&stderr_log).unwrap_or_default();
            panic!("the server exited with {status}:\n{log}\n{stderr}");
        }
        if let Ok(channel) = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            && let Ok(answer) = HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
            && answer.get_ref().status() == ServingStatus::Serving
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, _dir: dir }
}

/// Waits until the cluster's namespaces have been listed more than `before`
/// times.
async fn listed(sim: &KubeSim, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim.stats().count(Verb::List, "namespaces") <= before {
        assert!(Instant::now() < deadline, "the server never listed the namespaces");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_api_server_is_reached_through_the_proxy_of_the_environment() {
    let sim = KubeSim::start().await;
    let (proxy, carried) = proxy().await;
    let server = serve(&sim, &[("HTTP_PROXY", format!("http://{proxy}"))]).await;
    listed(&sim, 0).await;
    assert!(carried.load(Ordering::SeqCst) > 0, "nothing went through the proxy");
    drop(server);
}

#[tokio::test]
async fn no_proxy_covering_the_api_server_bypasses_the_proxy() {
    let sim = KubeSim::start().await;
    let (proxy, carried) = proxy().await;
    for no_proxy in ["127.0.0.1", "127.0.0.0/8,localhost"] {
        let before = sim.stats().count(Verb::List, "namespaces");
        let server = serve(
            &sim,
            &[
                ("HTTP_PROXY", format!("http://{proxy}")),
                ("HTTPS_PROXY", format!("http://{proxy}")),
                ("NO_PROXY", no_proxy.to_owned()),
            ],
        )
        .await;
        listed(&sim, before).await;
        assert_eq!(carried.load(Ordering::SeqCst), 0, "{no_proxy}: the proxy was used");
        drop(server);
    }
}
