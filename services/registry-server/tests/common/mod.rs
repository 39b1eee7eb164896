//! What the tests of the real binary share: acme's principal, GHCR
//! credentials, a free port, creating a registry, and where a spawned
//! process's output goes.

#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::transport::Channel;
use tonic::{IntoRequest, Request};

pub(crate) const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
pub(crate) const NEW_TOKEN: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn ghcr(token: &str) -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: "myorg".into(),
            token: token.into(),
        })),
    }
}

pub(crate) fn as_acme<T>(message: T) -> Request<T> {
    let mut request = message.into_request();
    let metadata = request.metadata_mut();
    metadata.insert("x-user", "alice".parse().unwrap());
    metadata.insert("x-org", "acme".parse().unwrap());
    metadata.insert("x-roles", "writer,deployer".parse().unwrap());
    request
}

/// acme's GHCR registry "My GHCR" with [`TOKEN`].
pub(crate) async fn create_registry(channel: Channel) -> pb::Registry {
    RegistryServiceClient::new(channel)
        .create_registry(as_acme(pb::CreateRegistryRequest {
            registry: Some(pb::Registry {
                name: "My GHCR".into(),
                r#type: pb::RegistryType::Ghcr.into(),
                credentials: Some(ghcr(TOKEN)),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap()
}

/// The canary run (`scripts/canary`) names a directory here: the output of
/// every process these tests spawn is then kept there, logged at the run's
/// `RUST_LOG`, for its secret check.
const CANARY_DIR_ENV: &str = "REGISTRY_TEST_OUTPUT_DIR";

fn canary_dir() -> Option<PathBuf> {
    std::env::var_os(CANARY_DIR_ENV).map(PathBuf::from)
}

/// A new file in the canary's directory, named after `stem`.
fn canary_file(dir: &Path, stem: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(dir).unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}-{stem}.log", std::process::id()))
}

/// The file a spawned process's output goes to: `path`, or in the canary
/// run a new file in its directory (the test reads whichever it gets).
pub(crate) fn output_path(path: &Path) -> PathBuf {
    match canary_dir() {
        Some(dir) => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("output");
            canary_file(&dir, stem)
        }
        None => path.to_owned(),
    }
}

/// Appends to `path` (from [`output_path`]); both streams may share it.
pub(crate) fn append_to(path: &Path) -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap(),
    )
}

/// Output no test reads: discarded, or kept in the canary run.
pub(crate) fn unread_output() -> Stdio {
    match canary_dir() {
        Some(dir) => append_to(&canary_file(&dir, "unread")),
        None => Stdio::null(),
    }
}

/// A finished process's captured output, kept in the canary run.
pub(crate) fn keep(output: &Output) {
    if let Some(dir) = canary_dir() {
        let mut all = output.stdout.clone();
        all.extend_from_slice(&output.stderr);
        std::fs::write(canary_file(&dir, "captured"), all).unwrap();
    }
}

/// In the canary run, the run's `RUST_LOG` for `command`, whatever the
/// test set or cleared before.
pub(crate) fn canary_log_level(command: &mut Command) -> &mut Command {
    if canary_dir().is_some()
        && let Some(level) = std::env::var_os("RUST_LOG")
    {
        command.env("RUST_LOG", level);
    }
    command
}
