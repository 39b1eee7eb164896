//! Credentials of each kind: secret-typed, serialisable for sealing, masked
//! for display, and the registry host they are for.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::kind::RegistryKind;

/// The credentials of one registry. Secret fields are [`SecretString`]: their
/// `Debug` prints `[REDACTED]` and their memory is zeroized on drop.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credentials {
    Ghcr {
        username: String,
        token: SecretString,
    },
    Docker {
        username: String,
        password: SecretString,
    },
    Ecr {
        access_key_id: SecretString,
        secret_access_key: SecretString,
        region: String,
        /// The session token of temporary (`ASIA…`) keys.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<SecretString>,
        /// Log in with the server's own AWS identity (the SDK's default
        /// chain) instead of stored keys, which are then empty.
        #[serde(default)]
        server_identity: bool,
    },
    Acr {
        login_server: String,
        username: String,
        password: SecretString,
    },
    Gcr {
        service_account_key: SecretString,
        #[serde(default)]
        login: GoogleLogin,
    },
    Gar {
        service_account_key: SecretString,
        region: String,
        #[serde(default)]
        login: GoogleLogin,
    },
    Quay {
        username: String,
        token: SecretString,
    },
    Custom {
        url: String,
        username: String,
        password: SecretString,
        /// PEM certificates trusted for this registry besides the system's
        /// and the server's (a self-hosted registry's own CA); empty for none.
        #[serde(default)]
        ca_bundle: String,
    },
    Public,
}

/// The borrowed, exposed twin of [`Credentials`], only ever serialised into a
/// zeroizing buffer.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Exposed<'a> {
    Ghcr {
        username: &'a str,
        token: &'a str,
    },
    Docker {
        username: &'a str,
        password: &'a str,
    },
    Ecr {
        access_key_id: &'a str,
        secret_access_key: &'a str,
        region: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_token: Option<&'a str>,
        #[serde(skip_serializing_if = "is_false")]
        server_identity: bool,
    },
    Acr {
        login_server: &'a str,
        username: &'a str,
        password: &'a str,
    },
    Gcr {
        service_account_key: &'a str,
        #[serde(skip_serializing_if = "GoogleLogin::is_default")]
        login: GoogleLogin,
    },
    Gar {
        service_account_key: &'a str,
        region: &'a str,
        #[serde(skip_serializing_if = "GoogleLogin::is_default")]
        login: GoogleLogin,
    },
    Quay {
        username: &'a str,
        token: &'a str,
    },
    Custom {
        url: &'a str,
        username: &'a str,
        password: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        ca_bundle: &'a str,
    },
    Public,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
fn is_false(value: &bool) -> bool {
    !*value
}

/// How a Google service-account key becomes a docker login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoogleLogin {
    /// Access tokens in Kubernetes pull Secrets (refreshed at half their
    /// lifetime) and for live tests; the key itself for Docker engines and
    /// deployers.
    #[default]
    Default,
    /// Always an OAuth access token.
    AccessToken,
    /// Always the key itself, as `_json_key`.
    JsonKey,
}

impl GoogleLogin {
    pub fn is_default(&self) -> bool {
        *self == Self::Default
    }

    /// Whether a login handed to `consumer` is an access token.
    pub fn uses_access_token(self, consumer: crate::ports::login::LoginUse) -> bool {
        use crate::ports::login::LoginUse;
        match self {
            Self::AccessToken => true,
            Self::JsonKey => false,
            Self::Default => matches!(consumer, LoginUse::PullSecret | LoginUse::LiveTest),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AccessToken => "access_token",
            Self::JsonKey => "json_key",
        }
    }
}

/// One credential field as shown back to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialHint {
    pub field: String,
    /// The value itself for non-secret fields, a mask for secret ones.
    pub value: String,
    pub secret: bool,
}

impl Credentials {
    pub fn kind(&self) -> RegistryKind {
        match self {
            Self::Ghcr { .. } => RegistryKind::Ghcr,
            Self::Docker { .. } => RegistryKind::Docker,
            Self::Ecr { .. } => RegistryKind::Ecr,
            Self::Acr { .. } => RegistryKind::Acr,
            Self::Gcr { .. } => RegistryKind::Gcr,
            Self::Gar { .. } => RegistryKind::Gar,
            Self::Quay { .. } => RegistryKind::Quay,
            Self::Custom { .. } => RegistryKind::Custom,
            Self::Public => RegistryKind::Public,
        }
    }

    /// The plaintext that gets sealed: JSON in a buffer zeroized on drop.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        let exposed = match self {
            Self::Ghcr { username, token } => Exposed::Ghcr {
                username,
                token: token.expose_secret(),
            },
            Self::Docker { username, password } => Exposed::Docker {
                username,
                password: password.expose_secret(),
            },
            Self::Ecr {
                access_key_id,
                secret_access_key,
                region,
                session_token,
                server_identity,
            } => Exposed::Ecr {
                access_key_id: access_key_id.expose_secret(),
                secret_access_key: secret_access_key.expose_secret(),
                region,
                session_token: session_token.as_ref().map(ExposeSecret::expose_secret),
                server_identity: *server_identity,
            },
            Self::Acr {
                login_server,
                username,
                password,
            } => Exposed::Acr {
                login_server,
                username,
                password: password.expose_secret(),
            },
            Self::Gcr {
                service_account_key,
                login,
            } => Exposed::Gcr {
                service_account_key: service_account_key.expose_secret(),
                login: *login,
            },
            Self::Gar {
                service_account_key,
                region,
                login,
            } => Exposed::Gar {
                service_account_key: service_account_key.expose_secret(),
                region,
                login: *login,
            },
            Self::Quay { username, token } => Exposed::Quay {
                username,
                token: token.expose_secret(),
            },
            Self::Custom {
                url,
                username,
                password,
                ca_bundle,
            } => Exposed::Custom {
                url,
                username,
                password: password.expose_secret(),
                ca_bundle,
            },
            Self::Public => Exposed::Public,
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(256));
        // Serialising borrowed strings into a Vec cannot fail.
        serde_json::to_writer(&mut *buf, &exposed).unwrap_or_default();
        buf
    }

    /// Reads credentials back from [`Credentials::to_plaintext`]'s output.
    pub fn from_plaintext(plaintext: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(plaintext)
    }

    /// The PEM certificates trusted for this registry besides the system's
    /// and the server's; `None` when there are none.
    pub fn ca_bundle(&self) -> Option<&str> {
        match self {
            Self::Custom { ca_bundle, .. } if !ca_bundle.is_empty() => Some(ca_bundle),
            _ => None,
        }
    }

    /// The registry host these credentials are for (empty for Public).
    ///
    /// ECR's account id is not part of the credentials, so its server is the
    /// wildcard `*.dkr.ecr.<region>.amazonaws.com` (`.com.cn` in China).
    pub fn server(&self) -> String {
        match self {
            Self::Ghcr { .. } | Self::Docker { .. } | Self::Gcr { .. } | Self::Quay { .. } => {
                self.kind().default_server().unwrap_or_default().to_owned()
            }
            Self::Ecr { region, .. } => {
                let suffix = if region.starts_with("cn-") { ".cn" } else { "" };
                format!("*.dkr.ecr.{region}.amazonaws.com{suffix}")
            }
            Self::Acr { login_server, .. } => login_server.to_ascii_lowercase(),
            Self::Gar { region, .. } => format!("{region}-docker.pkg.dev"),
            Self::Custom { url, .. } => url::Url::parse(url)
                .ok()
                .and_then(|u| {
                    let host = u.host_str()?.to_ascii_lowercase();
                    Some(match u.port() {
                        Some(port) => format!("{host}:{port}"),
                        None => host,
                    })
                })
                .unwrap_or_default(),
            Self::Public => String::new(),
        }
    }

    /// Every field, the secret ones masked (`ghp_…abcd`), in form order.
    pub fn hints(&self) -> Vec<CredentialHint> {
        let plain = |field: &str, value: &str| CredentialHint {
            field: field.to_owned(),
            value: value.to_owned(),
            secret: false,
        };
        let secret = |field: &str, value: &SecretString| CredentialHint {
            field: field.to_owned(),
            value: mask(value.expose_secret()),
            secret: true,
        };
        match self {
            Self::Ghcr { username, token } => vec![plain("username", username), secret("token", token)],
            Self::Docker { username, password } => {
                vec![plain("username", username), secret("password", password)]
            }
            Self::Ecr {
                region,
                server_identity: true,
                ..
            } => vec![plain("identity", "server"), plain("region", region)],
            Self::Ecr {
                access_key_id,
                secret_access_key,
                region,
                session_token,
                server_identity: false,
            } => {
                let mut hints = vec![
                    secret("access_key_id", access_key_id),
                    secret("secret_access_key", secret_access_key),
                    plain("region", region),
                ];
                hints.extend(session_token.as_ref().map(|token| secret("session_token", token)));
                hints
            }
            Self::Acr {
                login_server,
                username,
                password,
            } => vec![
                plain("login_server", login_server),
                plain("username", username),
                secret("password", password),
            ],
            Self::Gcr {
                service_account_key,
                login,
            } => vec![
                service_account_hint(service_account_key),
                plain("login", login.as_str()),
            ],
            Self::Gar {
                service_account_key,
                region,
                login,
            } => vec![
                service_account_hint(service_account_key),
                plain("region", region),
                plain("login", login.as_str()),
            ],
            Self::Quay { username, token } => vec![plain("username", username), secret("token", token)],
            Self::Custom {
                url,
                username,
                password,
                ca_bundle,
            } => {
                let mut hints = vec![
                    plain("url", url),
                    plain("username", username),
                    secret("password", password),
                ];
                if !ca_bundle.is_empty() {
                    use rustls_pki_types::CertificateDer;
                    use rustls_pki_types::pem::PemObject as _;
                    // Counted by the parser that validated the bundle.
                    let certificates = CertificateDer::pem_slice_iter(ca_bundle.as_bytes()).count();
                    hints.push(CredentialHint {
                        field: "ca_bundle".to_owned(),
                        value: format!("{certificates} certificate(s)"),
                        secret: false,
                    });
                }
                hints
            }
            Self::Public => Vec::new(),
        }
    }
}

/// A service-account key is shown as its (public) client email, never the
/// key itself.
fn service_account_hint(key: &SecretString) -> CredentialHint {
    let email = serde_json::from_str::<serde_json::Value>(key.expose_secret())
        .ok()
        .and_then(|v| v.get("client_email")?.as_str().map(str::to_owned));
    CredentialHint {
        field: "service_account_key".to_owned(),
        value: match email {
            Some(email) => format!("{email} (key …)"),
            None => "…".to_owned(),
        },
        secret: true,
    }
}

/// Masks a secret for display: a well-known token prefix and the last four
/// characters of secrets long enough that these give nothing away, `…` for
/// shorter ones.
pub fn mask(secret: &str) -> String {
    const PREFIXES: [&str; 11] = [
        "github_pat_",
        "dckr_pat_",
        "dckr_oat_",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "AKIA",
        "ASIA",
        "glpat-",
    ];
    let chars = secret.chars().count();
    if chars < 16 {
        return "…".to_owned();
    }
    let prefix = PREFIXES.iter().find(|p| secret.starts_with(**p)).copied().unwrap_or("");
    let tail: String = secret.chars().skip(chars - 4).collect();
    format!("{prefix}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ghcr() -> Credentials {
        Credentials::Ghcr {
            username: "myorg".into(),
            token: SecretString::from("ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
        }
    }

    #[test]
    fn plaintext_round_trips() {
        let creds = ghcr();
        let plain = creds.to_plaintext();
        let back = Credentials::from_plaintext(&plain).unwrap();
        assert_eq!(&*back.to_plaintext(), &*plain);
        assert_eq!(back.kind(), RegistryKind::Ghcr);
    }

    #[test]
    fn google_keys_sealed_before_login_modes_read_as_the_default_and_modes_round_trip() {
        let old = Credentials::from_plaintext(br#"{"kind":"gcr","service_account_key":"{}"}"#).unwrap();
        assert!(matches!(
            old,
            Credentials::Gcr {
                login: GoogleLogin::Default,
                ..
            }
        ));
        assert!(!String::from_utf8_lossy(&old.to_plaintext()).contains("login"));
        let tokens = Credentials::Gar {
            service_account_key: "{}".into(),
            region: "europe".into(),
            login: GoogleLogin::AccessToken,
        };
        let back = Credentials::from_plaintext(&tokens.to_plaintext()).unwrap();
        assert!(matches!(
            back,
            Credentials::Gar {
                login: GoogleLogin::AccessToken,
                ..
            }
        ));
    }

    #[test]
    fn debug_and_hints_never_show_the_secret() {
        let creds = ghcr();
        let debug = format!("{creds:?}");
        assert!(!debug.contains("16C7e42F"), "{debug}");
        let hints = creds.hints();
        assert_eq!(hints[1].value, "ghp_…8B4a");
        assert!(hints.iter().all(|h| !h.value.contains("16C7e42F")));
    }

    #[test]
    fn short_secrets_are_fully_masked() {
        assert_eq!(mask("secret"), "…");
        assert_eq!(mask("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "…EKEY");
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
    }

    #[test]
    fn servers_per_kind() {
        assert_eq!(ghcr().server(), "ghcr.io");
        let ecr = Credentials::Ecr {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            session_token: None,
            server_identity: false,
        };
        assert_eq!(ecr.server(), "*.dkr.ecr.us-east-1.amazonaws.com");
        let custom = Credentials::Custom {
            url: "https://Registry.Internal.example.com:5443/".into(),
            username: "deploy".into(),
            password: "secret".into(),
            ca_bundle: String::new(),
        };
        assert_eq!(custom.server(), "registry.internal.example.com:5443");
        let gar = Credentials::Gar {
            service_account_key: "{}".into(),
            region: "europe-west4".into(),
            login: GoogleLogin::Default,
        };
        assert_eq!(gar.server(), "europe-west4-docker.pkg.dev");
        assert_eq!(Credentials::Public.server(), "");
    }
}
