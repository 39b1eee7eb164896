//! kube clients for a target: one for requests, with deadlines, and one for
//! watches, which stay open for minutes.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, header::USER_AGENT};
use kube::{Client, Config};

/// Where the client comes from.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// A kubeconfig file; `None`: in-cluster (service account) configuration.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None`: its current context.
    pub context: Option<String>,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("kubernetes client: {0}")]
pub struct ConnectError(String);

/// The two clients of a target.
#[derive(Clone)]
pub struct Clients {
    /// Requests: no answer within the request timeout is an error.
    pub requests: Client,
    /// Watches: no read timeout (the watcher detects dead streams).
    pub watches: Client,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

/// How the clients talk to the API server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The longest wait for one answer (connect, send, first byte).
    pub request_timeout: Duration,
    /// Sent as `User-Agent`, so the API server's audit log names us.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            user_agent: crate::FIELD_MANAGER.to_owned(),
        }
    }
}

/// The configuration of `connection`.
pub async fn config(connection: &Connection) -> Result<Config, ConnectError> {
    match &connection.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ConnectError(format!("cannot read {}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: connection.context.clone(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ConnectError(e.to_string()))
        }
        None => Config::incluster().map_err(|e| ConnectError(e.to_string())),
    }
}

/// Clients for `connection`.
pub async fn connect(connection: &Connection, options: &ClientOptions) -> Result<Clients, ConnectError> {
    clients(config(connection).await?, options)
}

/// Clients from a configuration. kube's own retries of 429s are off: the
/// sync loop waits instead, bounded, visible in the sync state, and
/// surviving a restart.
pub fn clients(mut config: Config, options: &ClientOptions) -> Result<Clients, ConnectError> {
    config.default_retry = false;
    let agent = HeaderValue::from_str(&options.user_agent)
        .map_err(|_| ConnectError(format!("user agent {:?} is not a header value", options.user_agent)))?;
    config.headers.retain(|(name, _)| name != USER_AGENT);
    config.headers.push((USER_AGENT, agent));
    let mut requests = config.clone();
    requests.connect_timeout = Some(options.request_timeout);
    requests.read_timeout = Some(options.request_timeout);
    requests.write_timeout = Some(options.request_timeout);
    // The deadline counts from the request, not from when its pooled
    // connection went idle.
    requests.reset_reader_on_write = true;
    let mut watches = config;
    watches.connect_timeout = Some(options.request_timeout);
    watches.read_timeout = None;
    Ok(Clients {
        requests: Client::try_from(requests).map_err(|e| ConnectError(e.to_string()))?,
        watches: Client::try_from(watches).map_err(|e| ConnectError(e.to_string()))?,
    })
}
