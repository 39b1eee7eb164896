//! A distribution registry with token auth, the flow GHCR, Docker Hub and
//! Quay use: the registry (Debian's `docker-registry`, started by the test
//! on loopback, stopped by its pid on drop) trusts a token issuer running
//! in the test process, which checks Basic logins and signs registry JWTs
//! (ES256, `x5c` header) granting `pull` only on each user's repositories.
//! Optionally served over TLS with a certificate of a test CA.

use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;

use crate::distribution::http_request;

/// Where the test script's packages put the registry.
const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// The `service` of the registry's challenge and of the tokens' audience.
pub const SERVICE: &str = "token-registry.test";
const ISSUER: &str = "registry-testkit";

/// A user of the token issuer and the repository prefixes it may pull.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub name: String,
    pub password: String,
    /// `myorg/` lets the user pull `myorg/anything`.
    pub pulls: Vec<String>,
}

/// The issuer's state: users, and the key whose certificate the registry
/// trusts.
struct Issuer {
    users: Vec<TokenUser>,
    key: jsonwebtoken::EncodingKey,
    certificate: String,
}

impl Issuer {
    fn token(&self, subject: &str, access: &[(String, Vec<&str>)]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "iat": now,
            "nbf": now.saturating_sub(5),
            "exp": now + 300,
            "jti": format!("{now}-{subject}"),
            "access": access.iter().map(|(name, actions)| json!({
                "type": "repository", "name": name, "actions": actions,
            })).collect::<Vec<_>>(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.certificate.clone()]);
        jsonwebtoken::encode(&header, &claims, &self.key).expect("a token signs")
    }
}

/// `GET /token?service=…&scope=repository:NAME:pull` with a Basic login.
async fn issue(
    State(issuer): State<Arc<Issuer>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let login = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let Some(user) = login.and_then(|login| {
        let (name, password) = login.split_once(':')?;
        issuer
            .users
            .iter()
            .find(|u| u.name == name && u.password == password)
            .cloned()
    }) else {
        return (StatusCode::UNAUTHORIZED, "{\"details\":\"bad login\"}").into_response();
    };
    // Granted: the intersection of the asked scope and the user's rights.
    let access: Vec<(String, Vec<&str>)> = query
        .get("scope")
        .and_then(|scope| scope.strip_prefix("repository:"))
        .and_then(|scope| scope.rsplit_once(':'))
        .filter(|(name, _)| user.pulls.iter().any(|prefix| name.starts_with(prefix.as_str())))
        .map(|(name, _)| vec![(name.to_owned(), vec!["pull"])])
        .unwrap_or_default();
    let token = issuer.token(&user.name, &access);
    axum::Json(json!({ "token": token, "expires_in": 300 })).into_response()
}

/// A running token-auth registry; stopped when dropped.
pub struct TokenRegistry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The test CA that signed the registry's certificate (TLS only).
    pub ca_pem: Option<String>,
    issuer: Arc<Issuer>,
    child: Child,
    issuer_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRegistry").field("address", &self.address).finish()
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("a bound address").port()
}

impl TokenRegistry {
    /// Starts the issuer and the registry (over TLS with `tls`); `None`
    /// (after a loud message, a failure under CI) without the registry's
    /// package.
    pub async fn start(users: Vec<TokenUser>, tls: bool) -> Option<Self> {
        if !Path::new(REGISTRY_BINARY).exists() {
            assert!(
                !crate::in_ci(),
                "{REGISTRY_BINARY} is required under CI; scripts/test installs docker-registry"
            );
            eprintln!(
                "\n!!! SKIPPED: this test needs {REGISTRY_BINARY} (Debian docker-registry); run scripts/test. !!!\n"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let signing = KeyPair::generate().expect("an ECDSA P-256 key");
        let params = CertificateParams::new(vec!["registry-testkit token issuer".to_owned()]).expect("params");
        let certificate = params.self_signed(&signing).expect("a self-signed certificate");
        std::fs::write(dir.path().join("issuer.pem"), certificate.pem()).expect("issuer certificate written");
        let issuer = Arc::new(Issuer {
            users,
            key: jsonwebtoken::EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes()).expect("an ES256 key"),
            certificate: STANDARD.encode(certificate.der()),
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("issuer listener");
        let realm = format!("http://{}/token", listener.local_addr().expect("issuer address"));
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue))
            .with_state(Arc::clone(&issuer));
        let issuer_task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let mut tls_config = String::new();
        let mut ca_pem = None;
        if tls {
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca =
                CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key")).expect("a test CA");
            let leaf_key = KeyPair::generate().expect("a server key");
            let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params")
                .signed_by(&leaf_key, &ca)
                .expect("a server certificate");
            std::fs::write(dir.path().join("server.pem"), leaf.pem()).expect("server certificate written");
            std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).expect("server key written");
            tls_config = format!(
                "  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\n",
                dir.path().display()
            );
            ca_pem = Some(ca.pem());
        }
        let address = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {dir}/storage\n  delete:\n    enabled: true\n\
             http:\n  addr: {address}\n{tls_config}auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {dir}/issuer.pem\n",
            dir = dir.path().display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config written");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let registry = Self {
            address,
            ca_pem,
            issuer,
            child,
            issuer_task,
            _dir: dir,
        };
        registry.wait_listening();
        Some(registry)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&self.address).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pushes a one-layer image `repository:tag` (plain HTTP registries
    /// only) with a token the issuer signs directly; returns its digest.
    pub fn push_image(&self, repository: &str, tag: &str) -> io::Result<String> {
        let token = self
            .issuer
            .token("pusher", &[(repository.to_owned(), vec!["pull", "push"])]);
        let auth = format!("Bearer {token}");
        let blob = |bytes: &[u8]| -> io::Result<(String, usize)> {
            let digest = sha256(bytes);
            let path = format!("/v2/{repository}/blobs/uploads/");
            let answer = http_request(&self.address, "POST", &path, &[("Authorization", &auth)], b"")?;
            let (status, headers) = (answer.status, answer.headers);
            let location = headers
                .get("location")
                .filter(|_| status == 202)
                .ok_or_else(|| io::Error::other(format!("blob upload start answered {status}")))?;
            // The location is absolute or a path, with a query of its own.
            let location = location
                .split_once(&self.address)
                .map_or(location.as_str(), |(_, path)| path);
            let separator = if location.contains('?') { '&' } else { '?' };
            let put = format!("{location}{separator}digest={digest}");
            let status = http_request(&self.address, "PUT", &put, &[("Authorization", &auth)], bytes)?.status;
            if status != 201 {
                return Err(io::Error::other(format!("blob upload answered {status}")));
            }
            Ok((digest, bytes.len()))
        };
        let (config, config_size) =
            blob(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)?;
        let (layer, layer_size) = blob(b"registry-testkit layer")?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config_size, "digest": config},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer_size, "digest": layer}],
        })
        .to_string();
        let answer = http_request(
            &self.address,
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/vnd.docker.distribution.manifest.v2+json"),
            ],
            manifest.as_bytes(),
        )?;
        if answer.status != 201 {
            return Err(io::Error::other(format!("manifest upload answered {}", answer.status)));
        }
        Ok(answer
            .headers
            .get("docker-content-digest")
            .cloned()
            .unwrap_or_else(|| sha256(manifest.as_bytes())))
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        // Only the process this helper started, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.issuer_task.abort();
    }
}

fn sha256(bytes: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!(
        "sha256:{}",
        hash.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
