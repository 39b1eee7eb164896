//! A Google OAuth token endpoint on loopback, in the test process: it
//! verifies JWT bearer grants (RS256 signature with the public half of a key
//! generated in the test, `iss`, `aud`, `scope`, `exp`) and issues access
//! tokens with the lifetime the test chooses. Service-account key files are
//! generated here too, their `token_uri` pointing at the endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use serde_json::json;

/// The scope a docker login needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A service account with a freshly generated 2048-bit RSA key.
pub struct ServiceAccount {
    pub email: String,
    pub key_id: String,
    private_key_pem: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// A new account `name@project.iam.gserviceaccount.com`.
    #[allow(clippy::expect_used)] // a test key that cannot be made is a failed test
    pub fn generate(name: &str, project: &str) -> Self {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA key");
        let private_key_pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("a PKCS#8 PEM")
            .to_string();
        let mut id = [0u8; 20];
        getrandom::fill(&mut id).expect("random bytes");
        Self {
            email: format!("{name}@{project}.iam.gserviceaccount.com"),
            key_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            private_key_pem,
            n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }
    }

    /// The key file Google Cloud's console downloads, sending grants to
    /// `token_uri`.
    pub fn key_json(&self, token_uri: &str) -> String {
        let project = self
            .email
            .split('@')
            .nth(1)
            .and_then(|domain| domain.split('.').next())
            .unwrap_or("project");
        json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.key_id,
            "private_key": self.private_key_pem,
            "client_email": self.email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
        .to_string()
    }
}

/// How the endpoint answers grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Verified grants get a token, others `invalid_grant`.
    Tokens,
    /// Every grant: a 200 answer of 1 MiB.
    Huge,
    /// Every grant: accepted and never answered.
    Silent,
    /// Every grant: a 200 answer that is not JSON.
    NotJson,
    /// Every grant: a redirect to another host.
    Redirect,
}

#[derive(Default)]
struct Accounts {
    /// email → (key id, public key)
    keys: HashMap<String, (String, DecodingKey)>,
    issued: Vec<String>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("issued", &self.issued.len())
            .finish()
    }
}

#[derive(Debug)]
struct Endpoint {
    url: String,
    accounts: Mutex<Accounts>,
    lifetime_secs: AtomicU64,
    grants: AtomicU64,
    answer: Mutex<Answer>,
    /// Set once a grant arrived while `Silent`.
    held: AtomicBool,
}

/// The token endpoint; stops when dropped.
#[derive(Debug)]
pub struct TokenEndpoint {
    endpoint: Arc<Endpoint>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    /// Listens on a free loopback port; tokens live an hour unless
    /// [`Self::set_lifetime`] says otherwise.
    #[allow(clippy::expect_used)] // no loopback port is a failed test
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let endpoint = Arc::new(Endpoint {
            url: format!("http://{address}/token"),
            accounts: Mutex::default(),
            lifetime_secs: AtomicU64::new(3599),
            grants: AtomicU64::new(0),
            answer: Mutex::new(Answer::Tokens),
            held: AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::post(grant))
            .with_state(Arc::clone(&endpoint));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { endpoint, task }
    }

    /// The `token_uri` of the endpoint.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Grants signed by `account`'s key are accepted from now on.
    pub fn trust(&self, account: &ServiceAccount) {
        #[allow(clippy::expect_used)] // our own key's components
        let key = DecodingKey::from_rsa_components(&account.n, &account.e).expect("an RSA public key");
        self.accounts()
            .keys
            .insert(account.email.clone(), (account.key_id.clone(), key));
    }

    /// The account's key is deleted: its grants get `invalid_grant`.
    pub fn revoke(&self, account: &ServiceAccount) {
        self.accounts().keys.remove(&account.email);
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_lifetime(&self, seconds: u64) {
        self.endpoint.lifetime_secs.store(seconds, Ordering::SeqCst);
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.endpoint.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// Grants received, verified or not.
    pub fn grants(&self) -> u64 {
        self.endpoint.grants.load(Ordering::SeqCst)
    }

    /// Whether a grant arrived while [`Answer::Silent`].
    pub fn held_one(&self) -> bool {
        self.endpoint.held.load(Ordering::SeqCst)
    }

    /// The access tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.accounts().issued.clone()
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, Accounts> {
        self.endpoint.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct Claims {
    scope: String,
}

fn refusal(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn grant(State(endpoint): State<Arc<Endpoint>>, body: String) -> Response {
    endpoint.grants.fetch_add(1, Ordering::SeqCst);
    let answer = *endpoint.answer.lock().unwrap_or_else(PoisonError::into_inner);
    match answer {
        Answer::Tokens => {}
        Answer::Huge => return (StatusCode::OK, "x".repeat(1 << 20)).into_response(),
        Answer::NotJson => return (StatusCode::OK, "<html>sign in</html>").into_response(),
        Answer::Redirect => {
            return (
                StatusCode::FOUND,
                [(axum::http::header::LOCATION, "http://127.0.0.2:1/token")],
            )
                .into_response();
        }
        Answer::Silent => {
            endpoint.held.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refusal(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.get("assertion") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return refusal(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT.");
    };
    let mut accounts = endpoint.accounts.lock().unwrap_or_else(PoisonError::into_inner);
    let verified = accounts.keys.iter().find_map(|(email, (key_id, key))| {
        if header.kid.as_deref() != Some(key_id.as_str()) {
            return None;
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[endpoint.url.as_str()]);
        validation.set_issuer(&[email.as_str()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        jsonwebtoken::decode::<Claims>(assertion, key, &validation).ok()
    });
    let Some(token) = verified else {
        return refusal(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.");
    };
    if token.claims.scope != SCOPE {
        return refusal(StatusCode::BAD_REQUEST, "invalid_scope", "Invalid OAuth scope.");
    }
    let mut nonce = [0u8; 12];
    let _ = getrandom::fill(&mut nonce);
    let access_token = format!("ya29.test-{}", URL_SAFE_NO_PAD.encode(nonce));
    accounts.issued.push(access_token.clone());
    let expires_in = endpoint.lifetime_secs.load(Ordering::SeqCst);
    axum::Json(json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}
