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
    let mut config = match &connection.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ConnectError(format!("cannot read {}: {e}", path.display())))?;
            let explicit = explicit_proxy(&kubeconfig, connection.context.as_deref());
            let options = kube::config::KubeConfigOptions {
                context: connection.context.clone(),
                ..Default::default()
            };
            let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ConnectError(e.to_string()))?;
            // A kubeconfig's own proxy-url stands as kube read it.
            if explicit {
                return Ok(config);
            }
            config
        }
        None => Config::incluster().map_err(|e| ConnectError(e.to_string()))?,
    };
    config.proxy_url = proxy_for(&config.cluster_url, |name| std::env::var(name).ok())?;
    Ok(config)
}

/// Whether the cluster of `context` (default: the current one) names its
/// own `proxy-url`.
fn explicit_proxy(kubeconfig: &kube::config::Kubeconfig, context: Option<&str>) -> bool {
    let Some(context) = context.or(kubeconfig.current_context.as_deref()) else {
        return false;
    };
    let cluster = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == context)
        .and_then(|named| named.context.as_ref())
        .map(|context| context.cluster.as_str());
    kubeconfig
        .clusters
        .iter()
        .find(|named| Some(named.name.as_str()) == cluster)
        .and_then(|named| named.cluster.as_ref()?.proxy_url.as_deref())
        .is_some_and(|proxy| !proxy.trim().is_empty())
}

/// The proxy of the environment for the API server at `cluster`, as curl and
/// Go clients choose it: `HTTPS_PROXY` (or `HTTP_PROXY` for an http server),
/// upper or lower case, unless `NO_PROXY` covers the server's host. (kube
/// itself compares `NO_PROXY` with the proxy's address, not the server's.)
fn proxy_for(cluster: &http::Uri, env: impl Fn(&str) -> Option<String>) -> Result<Option<http::Uri>, ConnectError> {
    let var = |upper: &str| {
        env(upper)
            .or_else(|| env(&upper.to_ascii_lowercase()))
            .filter(|value| !value.trim().is_empty())
    };
    let proxy = match cluster.scheme_str() {
        Some("http") => var("HTTP_PROXY"),
        _ => var("HTTPS_PROXY"),
    };
    let Some(proxy) = proxy else { return Ok(None) };
    let host = cluster.host().unwrap_or_default();
    if var("NO_PROXY").is_some_and(|no_proxy| no_proxy_covers(&no_proxy, host)) {
        return Ok(None);
    }
    proxy
        .trim()
        .parse()
        .map(Some)
        .map_err(|e| ConnectError(format!("the proxy in the environment is not a URL: {e}")))
}

/// Whether a `NO_PROXY` list covers `host`: `*`, the host itself, a domain
/// it is in (`example.com` or `.example.com`), or a network holding its
/// address (`10.0.0.0/8`). Entries' ports are ignored.
fn no_proxy_covers(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let address = host.parse::<std::net::IpAddr>().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Ok(network) = entry.parse::<ipnet::IpNet>() {
                return address.is_some_and(|address| network.contains(&address));
            }
            let entry = entry.to_ascii_lowercase();
            let entry = entry.trim_start_matches('[');
            let name = match entry.split_once(']') {
                Some((ip, _)) => ip,
                None => match entry.parse::<std::net::IpAddr>() {
                    Ok(_) => entry,
                    Err(_) => entry.split(':').next().unwrap_or_default(),
                },
            };
            if let (Some(address), Ok(entry)) = (address, name.parse::<std::net::IpAddr>()) {
                return address == entry;
            }
            let domain = name.trim_start_matches('.');
            !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_kubeconfig_proxy_is_the_selected_clusters_own() {
        let kubeconfig = |proxy: &str| {
            kube::config::Kubeconfig::from_yaml(&format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://a:6443\n{proxy}\
                 - name: b\n  cluster:\n    server: https://b:6443\n\
                 contexts:\n- name: a\n  context:\n    cluster: a\n- name: b\n  context:\n    cluster: b\n\
                 current-context: a\n"
            ))
            .unwrap()
        };
        let with = kubeconfig("    proxy-url: http://proxy.internal:3128\n");
        assert!(explicit_proxy(&with, None));
        assert!(explicit_proxy(&with, Some("a")));
        assert!(
            !explicit_proxy(&with, Some("b")),
            "cluster b has no proxy-url of its own"
        );
        assert!(!explicit_proxy(&kubeconfig(""), None));
    }

    #[test]
    fn no_proxy_covers_hosts_domains_and_networks() {
        for (list, host, covered) in [
            ("*", "api.example.com", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("localhost,127.0.0.0/8", "127.0.0.5", true),
            ("10.0.0.0/8", "192.168.1.1", false),
            ("example.com", "api.example.com", true),
            (".example.com", "api.example.com", true),
            ("example.com", "example.com", true),
            ("example.com", "badexample.com", false),
            ("api.example.com:6443", "api.example.com", true),
            ("::1", "[::1]", true),
            ("[::1]:6443", "[::1]", true),
            ("", "127.0.0.1", false),
        ] {
            assert_eq!(no_proxy_covers(list, host), covered, "{list:?} covers {host:?}");
        }
    }

    #[test]
    fn the_environment_proxy_applies_unless_no_proxy_covers_the_server() {
        let https: http::Uri = "https://10.1.2.3:6443".parse().unwrap();
        let http: http::Uri = "http://127.0.0.1:8080".parse().unwrap();
        let proxy = "http://proxy.internal:3128";
        assert_eq!(proxy_for(&https, env(&[])).unwrap(), None);
        assert_eq!(
            proxy_for(&https, env(&[("HTTPS_PROXY", proxy)]))
                .unwrap()
                .unwrap()
                .to_string(),
            "http://proxy.internal:3128/"
        );
        assert!(proxy_for(&https, env(&[("https_proxy", proxy)])).unwrap().is_some());
        // NO_PROXY is about the server, not the proxy.
        for no_proxy in ["10.0.0.0/8", "10.1.2.3", "*"] {
            assert_eq!(
                proxy_for(&https, env(&[("HTTPS_PROXY", proxy), ("NO_PROXY", no_proxy)])).unwrap(),
                None,
                "{no_proxy}"
            );
        }
        assert!(
            proxy_for(&https, env(&[("HTTPS_PROXY", proxy), ("no_proxy", "proxy.internal")]))
                .unwrap()
                .is_some()
        );
        // An http API server takes HTTP_PROXY.
        assert_eq!(proxy_for(&http, env(&[("HTTPS_PROXY", proxy)])).unwrap(), None);
        assert!(proxy_for(&http, env(&[("HTTP_PROXY", proxy)])).unwrap().is_some());
        assert!(proxy_for(&https, env(&[("HTTPS_PROXY", "not a url")])).is_err());
    }
}
