//! Bearer JWTs verified against locally configured keys.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use registry_core::{Principal, Role, Roles};
use tonic::Status;
use tonic::metadata::MetadataMap;

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
}

/// A key that failed to load.
#[derive(Debug, thiserror::Error)]
#[error("jwt key {index}: {reason}")]
pub struct JwtKeyError {
    pub index: usize,
    pub reason: String,
}

struct Verifier {
    key: DecodingKey,
    algorithms: &'static [Algorithm],
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
                        algorithms: &[HS256, HS384, HS512],
                    },
                    JwtKey::PublicPem(pem) => {
                        let pem = pem.as_bytes();
                        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                            Verifier {
                                key,
                                algorithms: &[RS256, RS384, RS512, PS256, PS384, PS512],
                            }
                        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                            Verifier {
                                key,
                                algorithms: &[ES256, ES384],
                            }
                        } else {
                            Verifier {
                                key: DecodingKey::from_ed_pem(pem).map_err(error)?,
                                algorithms: &[EdDSA],
                            }
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if verifiers.is_empty() {
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
        let algorithm = jsonwebtoken::decode_header(token)
            .map_err(|_| Status::unauthenticated("bearer token is not a JWT"))?
            .alg;
        let mut last_error = None;
        for verifier in self.verifiers.iter().filter(|v| v.algorithms.contains(&algorithm)) {
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
                Ok(data) => return self.principal(&data.claims),
                Err(e) => last_error = Some(e),
            }
        }
        let reason = match last_error {
            Some(e) => format!("bearer token rejected: {e}"),
            None => format!("bearer token algorithm {algorithm:?} matches no configured key"),
        };
        Err(Status::unauthenticated(reason))
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
