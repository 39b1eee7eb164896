//! A JSON Web Key Set served on loopback, and ES256 signing keys to publish
//! in it: the identity platform a JWT-mode server trusts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An ES256 key pair with a key id.
pub struct SigningKey {
    pub kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new P-256 key (rcgen on ring).
    #[allow(clippy::expect_used)] // a key that cannot be made is a failed test
    pub fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("a P-256 key");
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("an EC PEM");
        // An uncompressed point: 0x04, then X and Y.
        let point = pair.public_key_raw();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self {
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// `claims` signed ES256 with this key's `kid` in the header.
    #[allow(clippy::expect_used)] // signing our own claims cannot fail
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("a signed token")
    }

    /// The public half, as a JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }
}

#[derive(Debug, Default)]
struct Published {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicU64,
}

/// The key set server; stops when dropped.
#[derive(Debug)]
pub struct JwksServer {
    url: String,
    published: Arc<Published>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Serves `GET /jwks.json` on a free loopback port, publishing `keys`.
    #[allow(clippy::expect_used)] // no loopback port is a failed test
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("a bound address"));
        let published = Arc::new(Published::default());
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(serve))
            .with_state(Arc::clone(&published));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let server = Self { url, published, task };
        server.publish(keys);
        server
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Publishes `keys` instead of the current set.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.keys.lock().unwrap_or_else(PoisonError::into_inner) = keys.iter().map(|k| k.jwk()).collect();
    }

    /// How many times the set was fetched.
    pub fn fetches(&self) -> u64 {
        self.published.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(published): State<Arc<Published>>) -> axum::Json<Value> {
    published.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = published.keys.lock().unwrap_or_else(PoisonError::into_inner).clone();
    axum::Json(json!({ "keys": keys }))
}
