//! Bearer JWTs verified against locally configured keys.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use registry_core::{Principal, Role, Roles};
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic_types::{ErrorDetails, StatusExt as _};

use super::jwks::JwksKeys;

/// A key that verifies JWT signatures.
pub enum JwtKey {
    /// A shared HMAC secret (HS256, HS384, HS512).
    Hmac(Vec<u8>),
    /// A public key in PEM: RSA (RS256..512, PS256..512), EC (ES256, ES384)
    /// or Ed25519 (EdDSA), recognised from its content.
    PublicPem(String),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "JwtKey::Hmac([REDACTED])",
            Self::PublicPem(_) => "JwtKey::PublicPem",
        })
    }
}

/// How bearer tokens are checked and read.
#[derive(Debug)]
pub struct JwtSettings {
    pub keys: Vec<JwtKey>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// The claim holding the organization (default `org`).
    pub organization_claim: String,
    /// The claim holding the roles: an array or a space/comma separated
    /// string (default `roles`). Unknown role names are ignored.
    pub roles_claim: String,
    /// Keys published at a JWKS URL, by key id.
    pub jwks: Option<Arc<JwksKeys>>,
    /// Tokens issued (`iat`) longer ago than this are refused; `iat` is
    /// then required.
    pub max_token_age: Option<Duration>,
}

/// A key that failed to load.
#[derive(Debug, thiserror::Error)]
#[error("jwt key {index}: {reason}")]
pub struct JwtKeyError {
    pub index: usize,
    pub reason: String,
}

/// One verification key and the algorithms it verifies.
pub(super) struct Verifier {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl Verifier {
    pub(super) fn new(key: DecodingKey, algorithms: Vec<Algorithm>) -> Self {
        Self { key, algorithms }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Verifies bearer JWTs against locally configured keys.
pub struct JwtAuth {
    verifiers: Vec<Verifier>,
    settings: JwtSettings,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("keys", &self.verifiers.len())
            .field("issuer", &self.settings.issuer)
            .field("audience", &self.settings.audience)
            .finish()
    }
}

impl JwtAuth {
    pub fn new(settings: JwtSettings) -> Result<Self, JwtKeyError> {
        use Algorithm::*;
        let verifiers = settings
            .keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let error = |e: jsonwebtoken::errors::Error| JwtKeyError {
                    index,
                    reason: e.to_string(),
                };
                Ok(match key {
                    JwtKey::Hmac(secret) => Verifier {
                        key: DecodingKey::from_secret(secret),
                        algorithms: vec![HS256, HS384, HS512],
                    },
                    JwtKey::PublicPem(pem) => {
                        let pem = pem.as_bytes();
                        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                            Verifier {
                                key,
                                algorithms: vec![RS256, RS384, RS512, PS256, PS384, PS512],
                            }
                        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                            Verifier {
                                key,
                                algorithms: vec![ES256, ES384],
                            }
                        } else {
                            Verifier {
                                key: DecodingKey::from_ed_pem(pem).map_err(error)?,
                                algorithms: vec![EdDSA],
                            }
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if verifiers.is_empty() && settings.jwks.is_none() {
            return Err(JwtKeyError {
                index: 0,
                reason: "no verification key configured".into(),
            });
        }
        Ok(Self { verifiers, settings })
    }

    pub(super) fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing bearer token in the authorization metadata"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("authorization metadata must be \"Bearer <jwt>\""))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Status::unauthenticated("bearer token is not a JWT"))?;
        let algorithm = header.alg;
        // A key id the published set has picks that key; otherwise the
        // locally configured keys are tried.
        let published = header
            .kid
            .as_deref()
            .and_then(|kid| self.settings.jwks.as_ref()?.get(kid));
        let candidates: Vec<&Verifier> = match &published {
            Some(verifier) => vec![verifier.as_ref()],
            None => self.verifiers.iter().collect(),
        };
        let mut last_error = None;
        for verifier in candidates.into_iter().filter(|v| v.algorithms.contains(&algorithm)) {
            let mut validation = Validation::new(algorithm);
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            // A token is refused before its nbf as after its exp (both
            // with jsonwebtoken's 60 s leeway for clock skew).
            validation.validate_nbf = true;
            if let Some(issuer) = &self.settings.issuer {
                validation.set_issuer(&[issuer]);
            }
            if let Some(audience) = &self.settings.audience {
                validation.set_audience(&[audience]);
            }
            match jsonwebtoken::decode::<serde_json::Value>(token, &verifier.key, &validation) {
                Ok(data) => {
                    self.check_age(&data.claims)?;
                    return self.principal(&data.claims);
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let (Some(jwks), Some(kid), None) = (&self.settings.jwks, &header.kid, &published)
            && last_error.is_none()
        {
            // Signed by a key published since the set was fetched, perhaps:
            // fetch it again; the client retries.
            jwks.want_refresh();
            return Err(Status::with_error_details(
                tonic::Code::Unavailable,
                format!(
                    "bearer token signed by key {kid:?}, which the JWKS does not hold yet; it is being fetched again, retry"
                ),
                ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
            ));
        }
        let reason = match last_error {
            Some(e) => format!("bearer token rejected: {e}"),
            None => format!("bearer token algorithm {algorithm:?} matches no configured key"),
        };
        Err(Status::unauthenticated(reason))
    }

    /// Refuses tokens issued longer ago than the maximum age (with the same
    /// 60 s leeway as `exp` and `nbf`).
    fn check_age(&self, claims: &serde_json::Value) -> Result<(), Status> {
        let Some(max) = self.settings.max_token_age else {
            return Ok(());
        };
        let issued = claims.get("iat").and_then(serde_json::Value::as_u64).ok_or_else(|| {
            Status::unauthenticated("bearer token has no iat claim, which auth.jwt.max_token_age_secs requires")
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let age = now.saturating_sub(issued);
        if age > max.as_secs() + 60 {
            return Err(Status::unauthenticated(format!(
                "bearer token issued {age} s ago, longer than the {} s this server accepts (auth.jwt.max_token_age_secs)",
                max.as_secs()
            )));
        }
        Ok(())
    }

    fn principal(&self, claims: &serde_json::Value) -> Result<Principal, Status> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Status::unauthenticated(format!("bearer token has no {name} claim")))
        };
        let subject = text("sub")?;
        let organization = text(&self.settings.organization_claim)?;
        let names: Vec<&str> = match claims.get(&self.settings.roles_claim) {
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
            Some(serde_json::Value::String(list)) => list.split([' ', ',']).collect(),
            _ => Vec::new(),
        };
        let roles: Roles = names.into_iter().filter_map(|name| name.parse::<Role>().ok()).collect();
        let roles = if roles == Roles::default() {
            [Role::Reader].into_iter().collect()
        } else {
            roles
        };
        Ok(Principal::new(subject, organization, roles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn jwt() -> JwtAuth {
        JwtAuth::new(JwtSettings {
            keys: vec![JwtKey::Hmac(b"test-secret-of-32-bytes-at-least!".to_vec())],
            issuer: Some("https://issuer.example".into()),
            audience: Some("registry".into()),
            organization_claim: "org".into(),
            roles_claim: "roles".into(),
            jwks: None,
            max_token_age: None,
        })
        .unwrap()
    }

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", format!("Bearer {token}").parse().unwrap());
        map
    }

    fn exp() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    }

    #[test]
    fn jwt_mode_verifies_and_reads_claims() {
        let claims = serde_json::json!({
            "sub": "ci-bot", "org": "acme", "roles": ["deployer", "something-else"],
            "iss": "https://issuer.example", "aud": "registry", "exp": exp(),
        });
        let p = jwt()
            .authenticate(&bearer(&token(b"test-secret-of-32-bytes-at-least!", claims)))
            .unwrap();
        assert_eq!((p.subject.as_str(), p.organization.as_str()), ("ci-bot", "acme"));
        assert!(p.roles.contains(Role::Deployer) && !p.roles.contains(Role::Writer));
    }

    #[test]
    fn jwt_mode_rejects_bad_tokens() {
        let good = serde_json::json!({
            "sub": "a", "org": "acme", "iss": "https://issuer.example", "aud": "registry", "exp": exp(),
        });
        let cases = [
            (token(b"another-secret-of-32-bytes-long!!", good.clone()), "signature"),
            (
                token(
                    b"test-secret-of-32-bytes-at-least!",
                    serde_json::json!({"sub": "a", "org": "acme", "iss": "https://issuer.example", "aud": "other", "exp": exp()}),
                ),
                "rejected",
            ),
            (
                token(
                    b"test-secret-of-32-bytes-at-least!",
                    serde_json::json!({"sub": "a", "iss": "https://issuer.example", "aud": "registry", "exp": exp()}),
                ),
                "org claim",
            ),
            (
                token(
                    b"test-secret-of-32-bytes-at-least!",
                    serde_json::json!({"sub": "a", "org": "acme", "iss": "https://issuer.example", "exp": exp()}),
                ),
                "aud",
            ),
            (
                token(
                    b"test-secret-of-32-bytes-at-least!",
                    serde_json::json!({"sub": "a", "org": "acme", "iss": "https://other.example", "aud": "registry", "exp": exp()}),
                ),
                "issuer",
            ),
            (
                token(
                    b"test-secret-of-32-bytes-at-least!",
                    serde_json::json!({"sub": "a", "org": "acme", "iss": "https://issuer.example", "aud": "registry",
                        "exp": exp(), "nbf": exp()}),
                ),
                "immature",
            ),
            ("not-a-jwt".to_owned(), "not a JWT"),
        ];
        for (token, expected) in cases {
            let err = jwt().authenticate(&bearer(&token)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(
                err.message().to_lowercase().contains(&expected.to_lowercase()),
                "{}",
                err.message()
            );
        }
        let err = jwt().authenticate(&MetadataMap::new()).unwrap_err();
        assert!(err.message().contains("missing bearer token"));
    }

    #[test]
    fn a_maximum_age_requires_iat_and_refuses_older_tokens() {
        let aged = JwtAuth::new(JwtSettings {
            max_token_age: Some(Duration::from_secs(600)),
            ..jwt().settings
        })
        .unwrap();
        let now = exp() - 600;
        let with_iat = |iat: Option<u64>| {
            let mut claims = serde_json::json!({
                "sub": "a", "org": "acme", "iss": "https://issuer.example", "aud": "registry", "exp": exp(),
            });
            if let Some(iat) = iat {
                claims["iat"] = iat.into();
            }
            aged.authenticate(&bearer(&token(b"test-secret-of-32-bytes-at-least!", claims)))
        };
        assert!(with_iat(Some(now - 30)).is_ok());
        let old = with_iat(Some(now - 3600)).unwrap_err();
        assert!(old.message().contains("longer than the 600 s"), "{}", old.message());
        let missing = with_iat(None).unwrap_err();
        assert!(missing.message().contains("iat"), "{}", missing.message());
    }

    #[test]
    fn jwt_principal_defaults_to_reader() {
        let claims = serde_json::json!({
            "sub": "a", "org": "acme", "iss": "https://issuer.example", "aud": "registry", "exp": exp(),
        });
        let p = jwt()
            .authenticate(&bearer(&token(b"test-secret-of-32-bytes-at-least!", claims)))
            .unwrap();
        assert!(p.roles.allows(Role::Reader) && !p.roles.allows(Role::Writer));
    }
}
