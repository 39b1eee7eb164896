//! Support for the end-to-end tests: the real server on 127.0.0.1:0 with a
//! fresh data directory, and clients that speak as a given principal.

use std::path::{Path, PathBuf};

use registry_proto::v1::registry_service_client::RegistryServiceClient;
use registry_server::config::Config;
use registry_server::{RunningServer, StartError};
use tonic::transport::Channel;
use tonic::{IntoRequest, Request};

/// A registry-server started for one test, with its data directory.
#[derive(Debug)]
pub struct TestServer {
    pub server: RunningServer,
    pub config: Config,
    _dir: Option<tempfile::TempDir>,
}

/// The embedded default, on an ephemeral loopback port, in `data_dir`.
pub fn default_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    }
}

impl TestServer {
    /// The embedded default in a fresh temporary data directory.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = default_config(dir.path());
        let mut server = Self::start_with(config).await.expect("server starts");
        server._dir = Some(dir);
        server
    }

    /// Any configuration; the caller owns the data directory.
    pub async fn start_with(config: Config) -> Result<Self, StartError> {
        let server = registry_server::start(config.clone()).await?;
        Ok(Self {
            server,
            config,
            _dir: None,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.local_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("valid url")
            .connect()
            .await
            .expect("server accepts connections")
    }

    pub async fn client(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel().await)
    }

    /// Stops the server, keeping its data directory (when owned) alive.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.server.shutdown().await.expect("clean shutdown");
        self._dir
    }
}

/// A request made by `user` of `org` in the development auth mode.
pub fn as_user<T>(message: T, user: &str, org: &str) -> Request<T> {
    let mut request = message.into_request();
    let metadata = request.metadata_mut();
    metadata.insert("x-user", user.parse().expect("ascii user"));
    metadata.insert("x-org", org.parse().expect("ascii org"));
    request
}

/// The same with explicit roles (`reader`, `writer,deployer`, ...).
pub fn with_roles<T>(message: T, user: &str, org: &str, roles: &str) -> Request<T> {
    let mut request = as_user(message, user, org);
    request
        .metadata_mut()
        .insert("x-roles", roles.parse().expect("ascii roles"));
    request
}
