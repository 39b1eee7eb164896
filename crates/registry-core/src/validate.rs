//! Structural validation: what "structurally valid" means for each registry
//! kind (token prefixes and lengths, AWS key ids, region names, service
//! account keys, URLs), checked offline and without contacting any registry.
//!
//! Every problem is reported, each as a [`FieldViolation`] naming its field
//! relative to the kind's credentials message (`token`, `region`, ...). A
//! description says what a valid value looks like. Descriptions of secret
//! fields never contain the value, at most its length; non-secret values may
//! be quoted.

use std::ops::RangeInclusive;
use std::sync::LazyLock;

use regex::Regex;
use secrecy::ExposeSecret;

use crate::credentials::Credentials;
use crate::error::FieldViolation;

/// The outcome of checking one value: `Err` holds a violation's description.
type Check = Result<(), String>;

/// The longest user name accepted for any kind.
const MAX_USERNAME: usize = 256;
/// The longest password or token accepted for any kind.
const MAX_SECRET: usize = 1024;
/// The longest registry name.
const MAX_REGISTRY_NAME: usize = 100;

/// Every structural problem of `credentials`, each naming its field relative
/// to the kind's credentials message (`token`, `region`, ...).
pub fn credentials(credentials: &Credentials) -> Vec<FieldViolation> {
    let mut violations = Violations::default();
    match credentials {
        Credentials::Ghcr { username, token } => {
            violations.check("username", ghcr::username(username));
            violations.check("token", ghcr::token(token.expose_secret()));
        }
        Credentials::Docker { username, password } => {
            violations.check("username", docker::username(username));
            violations.check("password", docker::password(password.expose_secret()));
        }
        Credentials::Ecr {
            access_key_id,
            secret_access_key,
            region,
            server_identity: true,
            session_token,
        } => {
            let empty = |value: &str| -> Check {
                if value.is_empty() {
                    Ok(())
                } else {
                    Err("must be empty with use_server_identity: the server's own AWS identity logs in".into())
                }
            };
            violations.check("access_key_id", empty(access_key_id.expose_secret()));
            violations.check("secret_access_key", empty(secret_access_key.expose_secret()));
            violations.check(
                "session_token",
                empty(session_token.as_ref().map_or("", ExposeSecret::expose_secret)),
            );
            violations.check("region", ecr::region(region));
        }
        Credentials::Ecr {
            access_key_id,
            secret_access_key,
            region,
            session_token,
            server_identity: false,
        } => {
            violations.check("access_key_id", ecr::access_key_id(access_key_id.expose_secret()));
            violations.check(
                "secret_access_key",
                ecr::secret_access_key(secret_access_key.expose_secret()),
            );
            violations.check("region", ecr::region(region));
            violations.check(
                "session_token",
                ecr::session_token(
                    access_key_id.expose_secret(),
                    session_token.as_ref().map(ExposeSecret::expose_secret),
                ),
            );
        }
        Credentials::Acr {
            login_server,
            username,
            password,
        } => {
            violations.check("login_server", acr::login_server(login_server));
            violations.check("username", acr::username(username));
            violations.check("password", text(password.expose_secret(), 8..=MAX_SECRET));
        }
        Credentials::Gcr {
            service_account_key, ..
        } => {
            violations.check_all(
                "service_account_key",
                google::service_account_key(service_account_key.expose_secret()),
            );
        }
        Credentials::Gar {
            service_account_key,
            region,
            ..
        } => {
            violations.check_all(
                "service_account_key",
                google::service_account_key(service_account_key.expose_secret()),
            );
            violations.check("region", google::location(region));
        }
        Credentials::Quay { username, token } => {
            violations.check("username", quay::username(username));
            violations.check("token", quay::token(token.expose_secret(), quay::is_robot(username)));
        }
        Credentials::Custom {
            url,
            username,
            password,
            ca_bundle,
        } => {
            violations.check_all("url", custom::url(url));
            violations.check("ca_bundle", custom::ca_bundle(ca_bundle));
            violations.check("username", text(username, 1..=MAX_USERNAME));
            violations.check("password", text(password.expose_secret(), 1..=MAX_SECRET));
        }
        Credentials::Public => {}
    }
    violations.0
}

/// The problem with a registry's display name, if any (field `name`): 1 to
/// 100 characters, no leading or trailing whitespace, no control characters.
/// Spaces inside are fine ("My GHCR").
pub fn registry_name(name: &str) -> Option<FieldViolation> {
    check_registry_name(name)
        .err()
        .map(|description| FieldViolation::new("name", description))
}

fn check_registry_name(name: &str) -> Check {
    if name.trim().is_empty() {
        return Err("is required".into());
    }
    let len = name.chars().count();
    if len > MAX_REGISTRY_NAME {
        return Err(format!("must be at most {MAX_REGISTRY_NAME} characters, got {len}"));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err("must not start or end with whitespace".into());
    }
    if name.chars().any(is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The violations found so far.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check(&mut self, field: &str, check: Check) {
        if let Err(description) = check {
            self.0.push(FieldViolation::new(field, description));
        }
    }

    fn check_all(&mut self, field: &str, problems: Vec<String>) {
        self.0.extend(
            problems
                .into_iter()
                .map(|description| FieldViolation::new(field, description)),
        );
    }
}

/// Control characters, and the invisible format characters (zero-width and
/// bidirectional controls) that only ever get into a value by accident or
/// to deceive.
fn is_control(c: char) -> bool {
    const INVISIBLE: [RangeInclusive<char>; 4] = [
        '\u{200B}'..='\u{200F}', // zero-width spaces and joiners, direction marks
        '\u{202A}'..='\u{202E}', // bidirectional embeddings and overrides
        '\u{2066}'..='\u{2069}', // bidirectional isolates
        '\u{FEFF}'..='\u{FEFF}', // byte-order mark
    ];
    c.is_control() || INVISIBLE.iter().any(|range| range.contains(&c))
}

/// A required single-line value of `lengths` characters without whitespace
/// or control characters: what every field but the service-account key is.
fn text(value: &str, lengths: RangeInclusive<usize>) -> Check {
    if value.is_empty() {
        return Err("is required".into());
    }
    let len = value.chars().count();
    let (min, max) = (*lengths.start(), *lengths.end());
    if len > max {
        return Err(format!("must be at most {max} characters, got {len}"));
    }
    if value.chars().any(|c| c.is_whitespace() || is_control(c)) {
        return Err("must not contain whitespace or control characters".into());
    }
    if len < min {
        return Err(format!("must be at least {min} characters, got {len}"));
    }
    Ok(())
}

/// Checks what follows a token's prefix (or a whole fixed-format secret):
/// `lengths` characters, each `allowed`. `rule` describes a valid value; the
/// description adds at most the length, never the value.
fn shaped(rest: &str, lengths: RangeInclusive<usize>, allowed: impl Fn(char) -> bool, rule: &str) -> Check {
    let len = rest.chars().count();
    if !lengths.contains(&len) {
        return Err(format!("{rule} (got {len})"));
    }
    if !rest.chars().all(allowed) {
        return Err(format!("{rule} (found other characters)"));
    }
    Ok(())
}

/// Compiles one of this module's fixed patterns.
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// GitHub Container Registry: a GitHub login and a personal access token.
mod ghcr {
    use super::{Check, LazyLock, Regex, regex, shaped, text};

    /// 1 to 39 characters (checked apart), alphanumeric or single hyphens,
    /// no hyphen at either end.
    static LOGIN: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z0-9](?:-?[A-Za-z0-9])*$"));
    const MAX_LOGIN: usize = 39;
    /// Classic tokens: personal, OAuth, user-to-server, server-to-server,
    /// refresh.
    const CLASSIC_PREFIXES: [&str; 5] = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"];
    const FINE_GRAINED_PREFIX: &str = "github_pat_";
    /// GitHub asks integrators to allow tokens of up to 255 characters.
    const MAX_TOKEN: usize = 255;

    pub(super) fn username(username: &str) -> Check {
        text(username, 1..=MAX_LOGIN)?;
        if LOGIN.is_match(username) {
            Ok(())
        } else {
            Err(format!(
                "must be a github login: letters, digits and single hyphens, \
                 not starting or ending with a hyphen (got {username:?})"
            ))
        }
    }

    pub(super) fn token(token: &str) -> Check {
        text(token, 1..=MAX_TOKEN)?;
        if let Some(rest) = CLASSIC_PREFIXES.iter().find_map(|prefix| token.strip_prefix(prefix)) {
            shaped(
                rest,
                36..=36,
                |c| c.is_ascii_alphanumeric(),
                "must be ghp_ (or gho_, ghu_, ghs_, ghr_) followed by exactly 36 letters or digits",
            )
        } else if let Some(rest) = token.strip_prefix(FINE_GRAINED_PREFIX) {
            shaped(
                rest,
                22..=MAX_TOKEN - FINE_GRAINED_PREFIX.len(),
                |c| c.is_ascii_alphanumeric() || c == '_',
                "must be a fine-grained token: github_pat_ followed by at least 22 letters, digits or underscores",
            )
        } else {
            Err(
                "must be a personal access token (ghp_ followed by 36 letters or digits) \
                 or a fine-grained token (github_pat_...)"
                    .into(),
            )
        }
    }
}

/// Docker Hub: a Docker ID and an access token or password.
mod docker {
    use super::{Check, LazyLock, MAX_SECRET, Regex, regex, shaped, text};

    static DOCKER_ID: LazyLock<Regex> = LazyLock::new(|| regex(r"^[a-z0-9]{4,30}$"));
    const ID_RULE: &str = "a docker id is 4 to 30 lowercase letters and digits";
    /// Personal and organisation access tokens.
    const TOKEN_PREFIXES: [&str; 2] = ["dckr_pat_", "dckr_oat_"];

    pub(super) fn username(username: &str) -> Check {
        text(username, 1..=30)?;
        if DOCKER_ID.is_match(username) {
            Ok(())
        } else if username.chars().any(|c| c.is_ascii_uppercase()) {
            Err(format!("must be lowercase: {ID_RULE} (got {username:?})"))
        } else {
            Err(format!("must be a docker id: {ID_RULE} (got {username:?})"))
        }
    }

    /// An access token (`dckr_pat_...`, `dckr_oat_...`) or a password.
    pub(super) fn password(password: &str) -> Check {
        if !password.starts_with("dckr_") {
            return text(password, 8..=MAX_SECRET);
        }
        text(password, 1..=MAX_SECRET)?;
        let rest = TOKEN_PREFIXES
            .iter()
            .find_map(|prefix| password.strip_prefix(prefix))
            .ok_or("must be an access token starting with dckr_pat_ or dckr_oat_")?;
        shaped(
            rest,
            20..=MAX_SECRET,
            |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
            "must be dckr_pat_ or dckr_oat_ followed by at least 20 letters, digits, - or _",
        )
    }
}

/// Amazon ECR: an IAM access key and the registry's region.
mod ecr {
    use super::{Check, LazyLock, Regex, regex, shaped, text};

    /// Commercial, China, GovCloud and isolated partitions.
    static REGION: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"^(?:af|ap|ca|cn|eu|il|me|mx|sa|us|us-gov|us-iso|us-isob|us-isof|eu-isoe)-(?:north|south|east|west|central|northeast|northwest|southeast|southwest)-[1-9]$",
        )
    });
    /// Long-term (IAM user) and temporary (STS) access keys.
    const KEY_ID_PREFIXES: [&str; 2] = ["AKIA", "ASIA"];

    pub(super) fn access_key_id(id: &str) -> Check {
        text(id, 1..=128)?;
        let rest = KEY_ID_PREFIXES
            .iter()
            .find_map(|prefix| id.strip_prefix(prefix))
            .ok_or("must start with AKIA (an iam user's key) or ASIA (a temporary key)")?;
        shaped(
            rest,
            16..=16,
            |c| c.is_ascii_uppercase() || c.is_ascii_digit(),
            "must be AKIA or ASIA followed by 16 upper-case letters or digits",
        )
    }

    /// Temporary (`ASIA`) keys work only with their session token; an IAM
    /// user's (`AKIA`) keys have none.
    pub(super) fn session_token(key_id: &str, token: Option<&str>) -> Check {
        match (key_id.starts_with("ASIA"), token) {
            (true, None) => Err("is required with temporary (ASIA) access keys".into()),
            (false, Some(_)) => Err("must be empty with an IAM user's (AKIA) access keys".into()),
            (true, Some(token)) => shaped(
                token,
                16..=4096,
                |c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+' | '='),
                "must be the base64 session token AWS issued with the keys",
            ),
            (false, None) => Ok(()),
        }
    }

    pub(super) fn secret_access_key(key: &str) -> Check {
        text(key, 1..=128)?;
        shaped(
            key,
            40..=40,
            |c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+' | '='),
            "must be exactly 40 letters, digits, /, + or =",
        )
    }

    pub(super) fn region(region: &str) -> Check {
        text(region, 1..=64)?;
        if REGION.is_match(region) {
            Ok(())
        } else {
            Err(format!(
                "must be an aws region such as us-east-1, eu-central-1 or us-gov-west-1 (got {region:?})"
            ))
        }
    }
}

/// Azure Container Registry: login server, service principal or admin user.
mod acr {
    use super::{Check, LazyLock, RangeInclusive, Regex, regex, text};

    static LOGIN_SERVER: LazyLock<Regex> = LazyLock::new(|| regex(r"^([a-z0-9]+)\.azurecr\.(?:io|cn|us)$"));
    /// A service principal's application id (a GUID, which this includes), an
    /// admin user (the registry name) or a token name; length checked apart.
    static USERNAME: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z0-9][A-Za-z0-9-]*$"));
    const NAME_LENGTHS: RangeInclusive<usize> = 5..=50;

    pub(super) fn login_server(server: &str) -> Check {
        text(server, 1..=253)?;
        if server.contains('/') {
            return Err("must be the host name only, without scheme or path, e.g. myregistry.azurecr.io".into());
        }
        if server.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "must be lowercase, e.g. myregistry.azurecr.io (got {server:?})"
            ));
        }
        let Some(captures) = LOGIN_SERVER.captures(server) else {
            return Err(format!(
                "must be <registry name>.azurecr.io (or .azurecr.cn, .azurecr.us), got {server:?}"
            ));
        };
        let name_len = captures[1].len();
        if NAME_LENGTHS.contains(&name_len) {
            Ok(())
        } else {
            Err(format!(
                "the registry name must be 5 to 50 lowercase letters and digits (got {name_len} in {server:?})"
            ))
        }
    }

    pub(super) fn username(username: &str) -> Check {
        text(username, 1..=50)?;
        if USERNAME.is_match(username) {
            Ok(())
        } else {
            Err(format!(
                "must be a service principal's application id (a guid), the admin user or a token name: \
                 letters, digits and hyphens, starting with a letter or digit (got {username:?})"
            ))
        }
    }
}

/// Google Container Registry and Artifact Registry: a service-account key.
mod google {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use ring::error::KeyRejected;
    use ring::signature::RsaKeyPair;
    use serde_json::Value;
    use url::Url;
    use zeroize::{Zeroize, Zeroizing};

    use super::{Check, LazyLock, Regex, regex, text};

    /// Downloaded keys are about 2.4 KB.
    const MAX_KEY_BYTES: usize = 16 * 1024;
    const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const PEM_END: &str = "-----END PRIVATE KEY-----";
    const PKCS1_BEGIN: &str = "-----BEGIN RSA PRIVATE KEY-----";

    /// `name@project.iam` (domain-scoped projects add dots), the App Engine
    /// default `project@appspot` and the Compute Engine default
    /// `number-compute@developer`.
    static CLIENT_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?@(?:[a-z0-9](?:[a-z0-9.-]{0,98}[a-z0-9])?\.iam|appspot|developer)\.gserviceaccount\.com$",
        )
    });
    /// Multi-regions and regions (`europe-west10` has two digits).
    static LOCATION: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"^(?:us|europe|asia|(?:africa|asia|australia|europe|me|northamerica|southamerica|us)-(?:north|south|east|west|central|northeast|northwest|southeast|southwest)[1-9][0-9]?)$",
        )
    });

    pub(super) fn location(region: &str) -> Check {
        text(region, 1..=64)?;
        if LOCATION.is_match(region) {
            Ok(())
        } else {
            Err(format!(
                "must be a google cloud location such as us-central1 or europe-west4, \
                 or the multi-region us, europe or asia (got {region:?})"
            ))
        }
    }

    /// Every problem of a key file, each naming the JSON key it is about.
    pub(super) fn service_account_key(key: &str) -> Vec<String> {
        let key = match parse(key) {
            Ok(key) => key,
            Err(problem) => return vec![problem],
        };
        [
            type_is_service_account(&key.0),
            client_email(&key.0),
            private_key(&key.0),
            token_uri(&key.0),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect()
    }

    /// A parsed key whose strings (the private key among them) are wiped
    /// when it is dropped.
    struct Wiped(Value);

    impl Drop for Wiped {
        fn drop(&mut self) {
            fn wipe(value: &mut Value) {
                match value {
                    Value::String(s) => s.zeroize(),
                    Value::Array(items) => items.iter_mut().for_each(wipe),
                    Value::Object(fields) => fields.values_mut().for_each(wipe),
                    Value::Null | Value::Bool(_) | Value::Number(_) => {}
                }
            }
            wipe(&mut self.0);
        }
    }

    fn parse(key: &str) -> Result<Wiped, String> {
        if key.trim().is_empty() {
            return Err("is required".into());
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("must be at most 16 KiB, got {} bytes", key.len()));
        }
        if key.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err("must not contain control characters other than line breaks and tabs".into());
        }
        let value = serde_json::from_str(key).map_err(|error| {
            // The error's position only: its message may quote the input.
            format!(
                "must be the json key file downloaded from google cloud: invalid json at line {}, column {}",
                error.line(),
                error.column()
            )
        })?;
        let key = Wiped(value);
        if key.0.is_object() {
            Ok(key)
        } else {
            Err("must be a json object: the key file downloaded from google cloud".into())
        }
    }

    /// A string member of the key; empty counts as missing.
    fn string<'a>(key: &'a Value, name: &str) -> Result<&'a str, String> {
        match key.get(name) {
            None | Some(Value::Null) => Err(format!("{name} is missing")),
            Some(Value::String(s)) if s.is_empty() => Err(format!("{name} is missing")),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }

    fn type_is_service_account(key: &Value) -> Check {
        if string(key, "type")? == "service_account" {
            Ok(())
        } else {
            Err(r#"type must be "service_account""#.into())
        }
    }

    fn client_email(key: &Value) -> Check {
        if CLIENT_EMAIL.is_match(string(key, "client_email")?) {
            Ok(())
        } else {
            Err("client_email must be a service account's email: name@project.iam.gserviceaccount.com".into())
        }
    }

    /// A PKCS#8 PEM that decodes to an RSA key `ring` can sign with.
    fn private_key(key: &Value) -> Check {
        let pem = string(key, "private_key")?;
        if pem.contains("\\n") {
            return Err("private_key contains literal \\n sequences: the key was escaped twice".into());
        }
        let Some(body) = pem
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
        else {
            return Err(if pem.contains(PKCS1_BEGIN) {
                "private_key must be pkcs#8 (-----BEGIN PRIVATE KEY-----), not pkcs#1 (-----BEGIN RSA PRIVATE KEY-----)"
            } else {
                "private_key must be a pkcs#8 pem: -----BEGIN PRIVATE KEY-----, base64, -----END PRIVATE KEY-----"
            }
            .into());
        };
        let base64 = Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect::<String>());
        let der = Zeroizing::new(
            STANDARD
                .decode(base64.as_bytes())
                .map_err(|_| "private_key's pem body is not valid base64")?,
        );
        RsaKeyPair::from_pkcs8(&der).map_err(rejection)?;
        Ok(())
    }

    /// `ring`'s reason, in words; only its fixed reason names are matched.
    fn rejection(rejected: KeyRejected) -> String {
        match rejected.to_string().as_str() {
            "WrongAlgorithm" => "private_key is not an rsa key",
            "TooSmall" => "private_key is an rsa key of fewer than 2048 bits",
            "TooLarge" => "private_key is an rsa key of more than 4096 bits",
            _ => "private_key is not a valid pkcs#8 rsa private key",
        }
        .into()
    }

    /// Optional; when present, where the JWT bearer grant goes: https, or
    /// http to a loopback address (a local test double). Which token
    /// endpoints the server actually calls is its configuration's choice.
    fn token_uri(key: &Value) -> Check {
        if matches!(key.get("token_uri"), None | Some(Value::Null)) {
            return Ok(());
        }
        match Url::parse(string(key, "token_uri")?) {
            Ok(uri) if uri.scheme() == "https" && uri.host().is_some() => Ok(()),
            Ok(uri) if uri.scheme() == "http" && is_loopback_url(&uri) => Ok(()),
            _ => Err("token_uri must be an https url such as https://oauth2.googleapis.com/token".into()),
        }
    }

    fn is_loopback_url(uri: &Url) -> bool {
        match uri.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }
}

/// Red Hat Quay: a robot account and its token, or a user and its password.
mod quay {
    use super::{Check, LazyLock, MAX_SECRET, MAX_USERNAME, Regex, regex, shaped, text};

    /// Users and organisations share one namespace. Quay itself requires
    /// `[a-z0-9]+(?:[._-][a-z0-9]+)*` of 2 to 255 characters; this accepts
    /// every such name.
    const NAMESPACE: &str = "[a-z0-9][a-z0-9_.-]{1,254}";
    static ROBOT: LazyLock<Regex> = LazyLock::new(|| regex(&format!(r"^{NAMESPACE}\+[a-z][a-z0-9_]{{1,254}}$")));
    static USER: LazyLock<Regex> = LazyLock::new(|| regex(&format!("^{NAMESPACE}$")));

    /// Robot accounts are `org+name`; nothing else has a `+`.
    pub(super) fn is_robot(username: &str) -> bool {
        username.contains('+')
    }

    pub(super) fn username(username: &str) -> Check {
        text(username, 1..=MAX_USERNAME)?;
        let (pattern, rule) = if is_robot(username) {
            (
                &ROBOT,
                "must be a robot account org+name: the org of lowercase letters, digits, ., _ or -, \
                 the name a lowercase letter then lowercase letters, digits or _",
            )
        } else {
            (
                &USER,
                "must be a robot account (org+name) or a user name: at least 2 lowercase letters, \
                 digits, ., _ or -, starting with a letter or digit",
            )
        };
        if pattern.is_match(username) {
            Ok(())
        } else {
            Err(format!("{rule} (got {username:?})"))
        }
    }

    /// A robot's generated token, or a user's (encrypted) password.
    pub(super) fn token(token: &str, robot: bool) -> Check {
        if !robot {
            return text(token, 8..=MAX_SECRET);
        }
        text(token, 1..=MAX_SECRET)?;
        shaped(
            token,
            64..=64,
            |c| c.is_ascii_uppercase() || c.is_ascii_digit(),
            "must be a robot token: exactly 64 upper-case letters or digits",
        )
    }
}

/// A self-hosted registry: its URL and a user name and password.
mod custom {
    use url::{Host, ParseError, Url};

    use super::text;

    const MAX_URL: usize = 2048;

    /// Every problem of the URL. The URL is never quoted: it could carry a
    /// password (`https://user:password@host`).
    pub(super) fn url(url: &str) -> Vec<String> {
        if let Err(problem) = text(url, 1..=MAX_URL) {
            return vec![problem];
        }
        let parsed = match Url::parse(url) {
            Ok(parsed) => parsed,
            Err(ParseError::RelativeUrlWithoutBase) => {
                return vec!["must be an absolute url such as https://registry.example.com".into()];
            }
            Err(error) => {
                return vec![format!("is not a valid url ({error}); use https://host[:port]")];
            }
        };
        let mut problems = Vec::new();
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(&parsed) => {}
            "http" => problems
                .push("must use https; http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1])".into()),
            _ => problems.push("must start with https:// (http:// only for loopback hosts)".into()),
        }
        if parsed.host().is_none_or(|host| matches!(host, Host::Domain(""))) {
            problems.push("must include a host, e.g. https://registry.example.com".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            problems.push("must not contain a user name or password: use the username and password fields".into());
        }
        if !matches!(parsed.path(), "" | "/") {
            problems.push("must not have a path: only https://host[:port]".into());
        }
        if parsed.query().is_some() {
            problems.push("must not have a query".into());
        }
        if parsed.fragment().is_some() {
            problems.push("must not have a fragment".into());
        }
        problems
    }

    /// The most a CA bundle may hold.
    const MAX_CA_BUNDLE: usize = 256 * 1024;
    const MAX_CERTIFICATES: usize = 100;

    /// A CA bundle: empty, or PEM `CERTIFICATE` blocks each holding an X.509
    /// certificate usable as a trust anchor.
    pub(super) fn ca_bundle(pem: &str) -> super::Check {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;

        if pem.is_empty() {
            return Ok(());
        }
        if pem.len() > MAX_CA_BUNDLE {
            return Err(format!("must be at most {} KiB of PEM", MAX_CA_BUNDLE / 1024));
        }
        let mut count = 0;
        for (n, certificate) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let certificate =
                certificate.map_err(|error| format!("certificate {} is not valid PEM ({error})", n + 1))?;
            webpki::anchor_from_trusted_cert(&certificate)
                .map_err(|error| format!("certificate {} is not an X.509 certificate ({error})", n + 1))?;
            count += 1;
        }
        match count {
            0 => Err("must hold PEM certificates (-----BEGIN CERTIFICATE-----), or be empty".into()),
            n if n > MAX_CERTIFICATES => Err(format!("must hold at most {MAX_CERTIFICATES} certificates")),
            _ => Ok(()),
        }
    }

    fn is_loopback(url: &Url) -> bool {
        match url.host() {
            Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
    }
}
