//! Image references per the distribution reference grammar
//! (`[host[:port]/]path[:tag][@digest]`), with Docker Hub normalisation, and
//! the rules tying an image's host to a registry's server.
//!
//! The grammar is that of `github.com/distribution/reference`:
//!
//! - host: DNS-like labels (`[a-zA-Z0-9]`, inner `-`) joined by `.`, or an
//!   IPv6 address in brackets, optionally `:port`;
//! - path: `/`-separated components of lowercase letters and digits joined by
//!   `.`, `_`, `__` or dashes; at most 255 characters in all;
//! - tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//! - digest: `sha256:` + 64, `sha384:` + 96 or `sha512:` + 128 lowercase hex
//!   characters.
//!
//! The first `/`-separated component is a host only if it contains `.` or `:`
//! or is `localhost`; otherwise the reference is on Docker Hub. On Docker Hub
//! (`docker.io`, also written `index.docker.io` or `registry-1.docker.io`) a
//! single-component path is an official image under `library/`.
//!
//! Hosts are case-insensitive and kept in lower case, so that a normalised
//! reference compares and prints one way.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

/// Docker Hub's canonical domain in image references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's key in a `.dockerconfigjson` (Docker's `IndexServer`).
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag of an image reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository path (`library/` included on Docker Hub).
pub const NAME_MAX_LEN: usize = 255;
/// The longest tag.
pub const TAG_MAX_LEN: usize = 128;

/// The names of Docker Hub's registry, [`DOCKER_HUB`] first.
const DOCKER_HUB_ALIASES: [&str; 3] = [DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST];
/// Google Container Registry's hosts; one set of credentials serves them all.
const GCR_HOSTS: [&str; 4] = ["gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"];
const OFFICIAL_PREFIX: &str = "library/";
/// How many characters of the input an error message repeats.
const ECHO_MAX_CHARS: usize = 128;

/// `host[:port]`; the port, when any, is group 1.
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    const LABEL: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let pattern = format!(r"^(?:{LABEL}(?:\.{LABEL})*|\[[a-fA-F0-9:]+\])(?::([0-9]+))?$");
    Regex::new(&pattern).expect("the host pattern is a valid regex")
});

/// One component of a repository path.
static PATH_COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("the path component pattern is a valid regex")
});

/// The characters of a tag (its length is checked apart).
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$").expect("the tag pattern is a valid regex"));

/// The wildcard part of an ECR server: `dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.
static ECR_SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$").expect("the ECR pattern is a valid regex")
});

/// What is wrong with an image reference. Messages repeat at most
/// 128 characters of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference {input:?} has no repository name")]
    MissingRepository { input: String },
    #[error("registry host {host:?} is invalid: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error(
        "registry server {server:?} is a pattern, so the image name must start with the registry's host \
         (e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/app)"
    )]
    HostRequired { server: String },
    #[error("repository {repository:?} must be lowercase")]
    UppercaseRepository { repository: String },
    #[error("repository {repository:?} has an empty path component (leading, trailing or double '/')")]
    EmptyPathComponent { repository: String },
    #[error(
        "repository {repository:?} has an invalid path component {component:?}: a component is lowercase \
         letters and digits, separated by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent { repository: String, component: String },
    #[error("repository name is {len} characters long; at most 255 are allowed")]
    NameTooLong { len: usize },
    #[error("image name {name:?} is 64 hexadecimal characters, which reads as an image id, not a repository")]
    AmbiguousIdentifier { name: String },
    #[error("tag is empty")]
    EmptyTag,
    #[error("tag {tag:?} is invalid: letters, digits, '_', '.' and '-', not starting with '.' or '-'")]
    InvalidTag { tag: String },
    #[error("tag is {len} characters long; at most 128 are allowed")]
    TagTooLong { len: usize },
    #[error("digest {digest:?} is invalid: expected <algorithm>:<lowercase hex>, e.g. sha256:<64 hex characters>")]
    InvalidDigest { digest: String },
    #[error("digest algorithm {algorithm:?} is not supported: use sha256, sha384 or sha512")]
    UnsupportedDigest { algorithm: String },
    #[error("a {algorithm} digest has {expected} hexadecimal characters, not {len}")]
    DigestLength {
        algorithm: &'static str,
        expected: usize,
        len: usize,
    },
    #[error("the image name has tag {in_name:?} but the image tag is {in_tag:?}")]
    ConflictingTag { in_name: String, in_tag: String },
    #[error("the image name has digest {in_name:?} but the image tag is digest {in_tag:?}")]
    ConflictingDigest { in_name: String, in_tag: String },
}

/// A normalised image reference: a host (with `:port` when any), a
/// repository path, and an optional tag and digest.
///
/// `Display` gives the fully qualified form, e.g.
/// `docker.io/library/postgres:17-alpine`, `ghcr.io/myorg/api:v2.1.0` or
/// `reg:5000/a/b@sha256:…`; parsing it gives the same reference back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    host: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// Parses a reference; with no host it is on Docker Hub. A reference
    /// without tag or digest keeps none (see [`Self::with_default_tag`]).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        Self::parse_with_default_host(input, None)
    }

    /// Parses a reference; with no host it is on `default_host` (a registry
    /// server), or on Docker Hub when that is `None` or empty.
    ///
    /// `default_host` is only read when the reference has no host of its own;
    /// a wildcard server (ECR's `*.dkr.ecr…`) cannot stand in for a host.
    pub fn parse_with_default_host(input: &str, default_host: Option<&str>) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() == 64 && is_lower_hex(input) {
            return Err(ReferenceError::AmbiguousIdentifier { name: input.to_owned() });
        }

        let (name_and_tag, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (input, None),
        };
        let (host, remainder) = match name_and_tag.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), rest),
            _ => (None, name_and_tag),
        };
        // The path cannot hold ':', so the first one starts the tag.
        let (path, tag) = match remainder.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (remainder, None),
        };
        if path.is_empty() {
            return Err(ReferenceError::MissingRepository { input: clip(input) });
        }

        let host = match host {
            Some(host) => normalise_host(host)?,
            None => default_host_or_hub(default_host)?,
        };
        check_path(path)?;
        let repository = if host == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        if repository.len() > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong { len: repository.len() });
        }
        let tag = tag.map(parse_tag).transpose()?;
        let digest = digest.map(parse_digest).transpose()?;

        Ok(Self {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// The reference of a deploy request.
    ///
    /// `image_name` may carry its host (`ghcr.io/myorg/api`); when it does
    /// not, the image is on `default_host` (the registry's server), or on
    /// Docker Hub when that is `None` or empty (Public). `image_tag` is a tag,
    /// a digest (`sha256:…`, optionally written `@sha256:…`), or empty; with
    /// neither tag nor digest anywhere the tag is `latest`. A tag or digest
    /// in both `image_name` and `image_tag` must be the same; a tag in one
    /// and a digest in the other give `name:tag@digest`.
    pub fn from_parts(image_name: &str, image_tag: &str, default_host: Option<&str>) -> Result<Self, ReferenceError> {
        let mut reference = Self::parse_with_default_host(image_name, default_host)?;
        let digest = match image_tag.strip_prefix('@') {
            Some(digest) => Some(digest),
            None if image_tag.contains(':') => Some(image_tag),
            None => None,
        };
        if let Some(digest) = digest {
            let digest = parse_digest(digest)?;
            match reference.digest.take() {
                Some(in_name) if in_name != digest => {
                    return Err(ReferenceError::ConflictingDigest {
                        in_name,
                        in_tag: digest,
                    });
                }
                _ => reference.digest = Some(digest),
            }
        } else if !image_tag.is_empty() {
            let tag = parse_tag(image_tag)?;
            match reference.tag.take() {
                Some(in_name) if in_name != tag => {
                    return Err(ReferenceError::ConflictingTag { in_name, in_tag: tag });
                }
                _ => reference.tag = Some(tag),
            }
        }
        Ok(reference.with_default_tag())
    }

    /// The same reference, tagged `latest` if it has neither tag nor digest.
    #[must_use]
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The registry host, lower case, with `:port` when any (`docker.io` for
    /// Docker Hub).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repository path (`library/postgres`, `myorg/api`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, `<algorithm>:<hex>`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `host/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    pub fn is_docker_hub(&self) -> bool {
        self.host == DOCKER_HUB
    }

    /// The host that serves the registry API (`/v2/`) for this image:
    /// `registry-1.docker.io` for Docker Hub, the host itself otherwise.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API_HOST
        } else {
            &self.host
        }
    }

    /// What goes after `/v2/<repository>/manifests/`: the digest when there
    /// is one, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// The `.dockerconfigjson` key under which a pull secret must hold this
    /// image's credentials (see [`docker_config_key`]).
    pub fn docker_config_key(&self) -> &str {
        docker_config_key(&self.host)
    }

    /// Whether this image's host belongs to a registry `server` (see
    /// [`host_matches`]).
    pub fn matches_server(&self, server: &str) -> bool {
        host_matches(server, &self.host)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether an image `host` belongs to a registry `server`
/// ([`Credentials::server`](crate::Credentials::server)), ignoring case:
///
/// - an empty server (Public) matches any host;
/// - `*.dkr.ecr.<region>.amazonaws.com[.cn]` matches that name with `*`
///   replaced by a 12-digit account id, and nothing else (no other wildcard
///   is honoured);
/// - the Docker Hub names (`docker.io`, `index.docker.io`,
///   `registry-1.docker.io`) match one another;
/// - the GCR hosts (`gcr.io`, `us.gcr.io`, `eu.gcr.io`, `asia.gcr.io`) match
///   one another;
/// - otherwise host and server must be equal, port included.
pub fn host_matches(server: &str, host: &str) -> bool {
    if server.is_empty() {
        return true;
    }
    let server = server.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if let Some(suffix) = server.strip_prefix("*.") {
        return ECR_SUFFIX.is_match(suffix)
            && host
                .strip_suffix(suffix)
                .and_then(|account| account.strip_suffix('.'))
                .is_some_and(|account| account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    }
    host_family(&server) == host_family(&host)
}

/// The `.dockerconfigjson` `auths` key for an image host:
/// `https://index.docker.io/v1/` for Docker Hub (any of its names), the host
/// with its port otherwise.
///
/// The key is the image's own host, not the registry's server: an image on
/// `us.gcr.io` needs a `us.gcr.io` entry even though the server is `gcr.io`.
pub fn docker_config_key(host: &str) -> &str {
    if is_docker_hub_host(host) {
        DOCKER_HUB_CONFIG_KEY
    } else {
        host
    }
}

/// Whether `host` is one of Docker Hub's names, ignoring case.
pub fn is_docker_hub_host(host: &str) -> bool {
    DOCKER_HUB_ALIASES.iter().any(|alias| alias.eq_ignore_ascii_case(host))
}

/// The name standing for every host that shares credentials with `host`
/// (lower case already).
fn host_family(host: &str) -> &str {
    if is_docker_hub_host(host) {
        DOCKER_HUB
    } else if GCR_HOSTS.contains(&host) {
        GCR_HOSTS[0]
    } else {
        host
    }
}

/// Checks `host[:port]` and gives it in lower case, Docker Hub's names as
/// `docker.io`.
fn normalise_host(host: &str) -> Result<String, ReferenceError> {
    let invalid = |reason| ReferenceError::InvalidHost {
        host: clip(host),
        reason,
    };
    let captures = HOST.captures(host).ok_or_else(|| {
        invalid("expected DNS labels of letters, digits and inner '-' joined by '.', or [IPv6], then an optional :port")
    })?;
    if let Some(port) = captures.get(1)
        && !port.as_str().parse::<u16>().is_ok_and(|port| port != 0)
    {
        return Err(invalid("the port must be between 1 and 65535"));
    }
    if is_docker_hub_host(host) {
        return Ok(DOCKER_HUB.to_owned());
    }
    Ok(host.to_ascii_lowercase())
}

/// The host of a reference that has none: the registry's server, or Docker
/// Hub.
fn default_host_or_hub(default_host: Option<&str>) -> Result<String, ReferenceError> {
    match default_host {
        None | Some("") => Ok(DOCKER_HUB.to_owned()),
        Some(server) if server.contains('*') => Err(ReferenceError::HostRequired { server: clip(server) }),
        Some(server) => normalise_host(server),
    }
}

fn check_path(path: &str) -> Result<(), ReferenceError> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(ReferenceError::EmptyPathComponent { repository: clip(path) });
        }
        if !PATH_COMPONENT.is_match(component) {
            return Err(if PATH_COMPONENT.is_match(&component.to_ascii_lowercase()) {
                ReferenceError::UppercaseRepository { repository: clip(path) }
            } else {
                ReferenceError::InvalidPathComponent {
                    repository: clip(path),
                    component: clip(component),
                }
            });
        }
    }
    Ok(())
}

fn parse_tag(tag: &str) -> Result<String, ReferenceError> {
    if tag.is_empty() {
        return Err(ReferenceError::EmptyTag);
    }
    if !TAG.is_match(tag) {
        return Err(ReferenceError::InvalidTag { tag: clip(tag) });
    }
    if tag.len() > TAG_MAX_LEN {
        return Err(ReferenceError::TagTooLong { len: tag.len() });
    }
    Ok(tag.to_owned())
}

fn parse_digest(digest: &str) -> Result<String, ReferenceError> {
    let invalid = || ReferenceError::InvalidDigest { digest: clip(digest) };
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(invalid)?;
    let (algorithm, expected) = match algorithm {
        "sha256" => ("sha256", 64),
        "sha384" => ("sha384", 96),
        "sha512" => ("sha512", 128),
        "" => return Err(invalid()),
        other => {
            return Err(ReferenceError::UnsupportedDigest { algorithm: clip(other) });
        }
    };
    if encoded.is_empty() || !is_lower_hex(encoded) {
        return Err(invalid());
    }
    if encoded.len() != expected {
        return Err(ReferenceError::DigestLength {
            algorithm,
            expected,
            len: encoded.len(),
        });
    }
    Ok(digest.to_owned())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The input as repeated in an error message: at most
/// [`ECHO_MAX_CHARS`] characters.
fn clip(s: &str) -> String {
    match s.char_indices().nth(ECHO_MAX_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credentials;

    const SHA256: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    const SHA256_B: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    const SHA512: &str = "sha512:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// input, host, repository, tag, digest, display
    type ParseCase = (
        String,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        String,
    );

    #[test]
    fn parses_and_normalises() {
        let cases: Vec<ParseCase> = vec![
            (
                "postgres".into(),
                "docker.io",
                "library/postgres",
                None,
                None,
                "docker.io/library/postgres".into(),
            ),
            (
                "postgres:17-alpine".into(),
                "docker.io",
                "library/postgres",
                Some("17-alpine"),
                None,
                "docker.io/library/postgres:17-alpine".into(),
            ),
            (
                "ghcr.io/myorg/api:v2.1.0".into(),
                "ghcr.io",
                "myorg/api",
                Some("v2.1.0"),
                None,
                "ghcr.io/myorg/api:v2.1.0".into(),
            ),
            (
                "myorg/api".into(),
                "docker.io",
                "myorg/api",
                None,
                None,
                "docker.io/myorg/api".into(),
            ),
            (
                "docker.io/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                None,
                "docker.io/library/nginx".into(),
            ),
            (
                "index.docker.io/nginx:1.27".into(),
                "docker.io",
                "library/nginx",
                Some("1.27"),
                None,
                "docker.io/library/nginx:1.27".into(),
            ),
            (
                "registry-1.docker.io/bitnami/redis".into(),
                "docker.io",
                "bitnami/redis",
                None,
                None,
                "docker.io/bitnami/redis".into(),
            ),
            (
                "Docker.IO/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                None,
                "docker.io/library/nginx".into(),
            ),
            (
                "GHCR.io/myorg/api".into(),
                "ghcr.io",
                "myorg/api",
                None,
                None,
                "ghcr.io/myorg/api".into(),
            ),
            (
                "localhost/app".into(),
                "localhost",
                "app",
                None,
                None,
                "localhost/app".into(),
            ),
            (
                "localhost:5000/app:dev".into(),
                "localhost:5000",
                "app",
                Some("dev"),
                None,
                "localhost:5000/app:dev".into(),
            ),
            (
                format!("reg:5000/a/b@{SHA256}"),
                "reg:5000",
                "a/b",
                None,
                Some(SHA256),
                format!("reg:5000/a/b@{SHA256}"),
            ),
            (
                format!("registry.example.com:5443/team/svc:1.0@{SHA256}"),
                "registry.example.com:5443",
                "team/svc",
                Some("1.0"),
                Some(SHA256),
                format!("registry.example.com:5443/team/svc:1.0@{SHA256}"),
            ),
            (
                "[::1]:5000/app".into(),
                "[::1]:5000",
                "app",
                None,
                None,
                "[::1]:5000/app".into(),
            ),
            (
                "127.0.0.1:5000/app".into(),
                "127.0.0.1:5000",
                "app",
                None,
                None,
                "127.0.0.1:5000/app".into(),
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:v1".into(),
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "api",
                Some("v1"),
                None,
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:v1".into(),
            ),
            (
                "myreg.azurecr.io/team/app".into(),
                "myreg.azurecr.io",
                "team/app",
                None,
                None,
                "myreg.azurecr.io/team/app".into(),
            ),
            (
                "europe-west4-docker.pkg.dev/proj/repo/img:tag".into(),
                "europe-west4-docker.pkg.dev",
                "proj/repo/img",
                Some("tag"),
                None,
                "europe-west4-docker.pkg.dev/proj/repo/img:tag".into(),
            ),
            (
                "us.gcr.io/proj/img".into(),
                "us.gcr.io",
                "proj/img",
                None,
                None,
                "us.gcr.io/proj/img".into(),
            ),
            (
                format!("quay.io/org/app@{SHA512}"),
                "quay.io",
                "org/app",
                None,
                Some(SHA512),
                format!("quay.io/org/app@{SHA512}"),
            ),
            // A single component is a path, even with a dot; ':' then starts the tag.
            (
                "test.com:5000".into(),
                "docker.io",
                "library/test.com",
                Some("5000"),
                None,
                "docker.io/library/test.com:5000".into(),
            ),
            (
                "a--b__c/d.e_f---g".into(),
                "docker.io",
                "a--b__c/d.e_f---g",
                None,
                None,
                "docker.io/a--b__c/d.e_f---g".into(),
            ),
            (
                "app:_Under.x-Y".into(),
                "docker.io",
                "library/app",
                Some("_Under.x-Y"),
                None,
                "docker.io/library/app:_Under.x-Y".into(),
            ),
        ];
        for (input, host, repository, tag, digest, display) in cases {
            let reference = ImageReference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(reference.host(), host, "{input}");
            assert_eq!(reference.repository(), repository, "{input}");
            assert_eq!(reference.tag(), tag, "{input}");
            assert_eq!(reference.digest(), digest, "{input}");
            assert_eq!(reference.to_string(), display, "{input}");
            // The normalised form parses back to the same reference.
            assert_eq!(display.parse::<ImageReference>(), Ok(reference), "{input}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let tag = "t".repeat(TAG_MAX_LEN);
        assert!(ImageReference::parse(&format!("app:{tag}")).is_ok());
        let path = "a".repeat(NAME_MAX_LEN);
        assert!(ImageReference::parse(&format!("ghcr.io/{path}")).is_ok());
        let path = "a".repeat(NAME_MAX_LEN - OFFICIAL_PREFIX.len());
        assert!(ImageReference::parse(&path).is_ok());
    }

    #[test]
    fn rejects_with_a_precise_error() {
        use ReferenceError as E;
        let host_syntax =
            "expected DNS labels of letters, digits and inner '-' joined by '.', or [IPv6], then an optional :port";
        let port_range = "the port must be between 1 and 65535";
        let hex64 = "0123456789abcdef".repeat(4);
        let cases: Vec<(String, ReferenceError)> = vec![
            (String::new(), E::Empty),
            (":tag".into(), E::MissingRepository { input: ":tag".into() }),
            (
                format!("@{SHA256}"),
                E::MissingRepository {
                    input: format!("@{SHA256}"),
                },
            ),
            (
                "ghcr.io/".into(),
                E::MissingRepository {
                    input: "ghcr.io/".into(),
                },
            ),
            (
                "ghcr.io//app".into(),
                E::EmptyPathComponent {
                    repository: "/app".into(),
                },
            ),
            (
                "ghcr.io/org/app/".into(),
                E::EmptyPathComponent {
                    repository: "org/app/".into(),
                },
            ),
            (
                "MyOrg/api".into(),
                E::UppercaseRepository {
                    repository: "MyOrg/api".into(),
                },
            ),
            (
                "ghcr.io/MyOrg/api:v1".into(),
                E::UppercaseRepository {
                    repository: "MyOrg/api".into(),
                },
            ),
            (
                "Postgres".into(),
                E::UppercaseRepository {
                    repository: "Postgres".into(),
                },
            ),
            (
                "ghcr.io/org/a$b".into(),
                E::InvalidPathComponent {
                    repository: "org/a$b".into(),
                    component: "a$b".into(),
                },
            ),
            (
                "ghcr.io/org/-app".into(),
                E::InvalidPathComponent {
                    repository: "org/-app".into(),
                    component: "-app".into(),
                },
            ),
            (
                "ghcr.io/org/app..x".into(),
                E::InvalidPathComponent {
                    repository: "org/app..x".into(),
                    component: "app..x".into(),
                },
            ),
            (
                " postgres".into(),
                E::InvalidPathComponent {
                    repository: " postgres".into(),
                    component: " postgres".into(),
                },
            ),
            (format!("ghcr.io/{}", "a".repeat(256)), E::NameTooLong { len: 256 }),
            // `library/` counts on Docker Hub.
            (format!("docker.io/{}", "a".repeat(250)), E::NameTooLong { len: 258 }),
            (hex64.clone(), E::AmbiguousIdentifier { name: hex64 }),
            ("postgres:".into(), E::EmptyTag),
            ("app:vé".into(), E::InvalidTag { tag: "vé".into() }),
            ("app:-x".into(), E::InvalidTag { tag: "-x".into() }),
            ("app:.x".into(), E::InvalidTag { tag: ".x".into() }),
            ("ghcr.io/o/app:v1:v2".into(), E::InvalidTag { tag: "v1:v2".into() }),
            (format!("app:{}", "t".repeat(129)), E::TagTooLong { len: 129 }),
            (
                "app@nodigest".into(),
                E::InvalidDigest {
                    digest: "nodigest".into(),
                },
            ),
            ("app@".into(), E::InvalidDigest { digest: String::new() }),
            ("app@:abc".into(), E::InvalidDigest { digest: ":abc".into() }),
            (
                format!("app@sha256:{}", "F".repeat(64)),
                E::InvalidDigest {
                    digest: format!("sha256:{}", "F".repeat(64)),
                },
            ),
            (
                "app@sha256:abc".into(),
                E::DigestLength {
                    algorithm: "sha256",
                    expected: 64,
                    len: 3,
                },
            ),
            (
                format!("app@md5:{}", "a".repeat(32)),
                E::UnsupportedDigest {
                    algorithm: "md5".into(),
                },
            ),
            (
                "bad_host.com/app".into(),
                E::InvalidHost {
                    host: "bad_host.com".into(),
                    reason: host_syntax,
                },
            ),
            (
                "-bad.com/app".into(),
                E::InvalidHost {
                    host: "-bad.com".into(),
                    reason: host_syntax,
                },
            ),
            (
                "https://ghcr.io/org/app".into(),
                E::InvalidHost {
                    host: "https:".into(),
                    reason: host_syntax,
                },
            ),
            (
                "reg:99999/app".into(),
                E::InvalidHost {
                    host: "reg:99999".into(),
                    reason: port_range,
                },
            ),
            (
                "reg:0/app".into(),
                E::InvalidHost {
                    host: "reg:0".into(),
                    reason: port_range,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(ImageReference::parse(&input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_stay_short() {
        let err = ImageReference::parse("ghcr.io/MyOrg/api").unwrap_err();
        assert_eq!(err.to_string(), r#"repository "MyOrg/api" must be lowercase"#);
        let long = format!("ghcr.io/org/{}$", "a".repeat(1000));
        let message = ImageReference::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 600, "{message}");
        assert!(message.contains('…'), "{message}");
    }

    #[test]
    fn from_parts_combines_name_tag_and_server() {
        // image_name, image_tag, default_host, expected
        let cases: Vec<(String, String, Option<&str>, String)> = vec![
            (
                "ghcr.io/myorg/api".into(),
                "v2.1.0".into(),
                Some("ghcr.io"),
                "ghcr.io/myorg/api:v2.1.0".into(),
            ),
            (
                "postgres".into(),
                "17-alpine".into(),
                None,
                "docker.io/library/postgres:17-alpine".into(),
            ),
            (
                "postgres".into(),
                String::new(),
                None,
                "docker.io/library/postgres:latest".into(),
            ),
            (
                "nginx".into(),
                String::new(),
                Some(""),
                "docker.io/library/nginx:latest".into(),
            ),
            (
                "nginx".into(),
                "1.27".into(),
                Some("docker.io"),
                "docker.io/library/nginx:1.27".into(),
            ),
            (
                "nginx".into(),
                "1.27".into(),
                Some("index.docker.io"),
                "docker.io/library/nginx:1.27".into(),
            ),
            (
                "myorg/api".into(),
                "v1".into(),
                Some("ghcr.io"),
                "ghcr.io/myorg/api:v1".into(),
            ),
            ("api".into(), "v1".into(), Some("ghcr.io"), "ghcr.io/api:v1".into()),
            (
                "team/app".into(),
                "1.0".into(),
                Some("registry.example.com:5443"),
                "registry.example.com:5443/team/app:1.0".into(),
            ),
            (
                "app".into(),
                SHA256.into(),
                Some("reg:5000"),
                format!("reg:5000/app@{SHA256}"),
            ),
            (
                "app".into(),
                format!("@{SHA256}"),
                Some("reg:5000"),
                format!("reg:5000/app@{SHA256}"),
            ),
            (
                "ghcr.io/o/app:v1".into(),
                "v1".into(),
                Some("ghcr.io"),
                "ghcr.io/o/app:v1".into(),
            ),
            (
                "ghcr.io/o/app:v1".into(),
                String::new(),
                Some("ghcr.io"),
                "ghcr.io/o/app:v1".into(),
            ),
            (
                "ghcr.io/o/app:v1".into(),
                SHA256.into(),
                None,
                format!("ghcr.io/o/app:v1@{SHA256}"),
            ),
            (
                format!("ghcr.io/o/app@{SHA256}"),
                String::new(),
                None,
                format!("ghcr.io/o/app@{SHA256}"),
            ),
            (
                format!("ghcr.io/o/app@{SHA256}"),
                SHA256.into(),
                None,
                format!("ghcr.io/o/app@{SHA256}"),
            ),
            (
                format!("ghcr.io/o/app@{SHA256}"),
                "v1".into(),
                None,
                format!("ghcr.io/o/app:v1@{SHA256}"),
            ),
            // A host in the name wins over the server; the caller then checks they match.
            (
                "docker.io/library/redis".into(),
                "7".into(),
                Some("ghcr.io"),
                "docker.io/library/redis:7".into(),
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api".into(),
                "v1".into(),
                Some("*.dkr.ecr.us-east-1.amazonaws.com"),
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:v1".into(),
            ),
            (
                "GHCR.IO/myorg/api".into(),
                "v1".into(),
                Some("GHCR.io"),
                "ghcr.io/myorg/api:v1".into(),
            ),
        ];
        for (name, tag, server, expected) in cases {
            let reference = ImageReference::from_parts(&name, &tag, server)
                .unwrap_or_else(|e| panic!("{name} + {tag} on {server:?}: {e}"));
            assert_eq!(reference.to_string(), expected, "{name} + {tag} on {server:?}");
        }
    }

    #[test]
    fn from_parts_rejects_with_a_precise_error() {
        use ReferenceError as E;
        let cases: Vec<(String, String, Option<&str>, ReferenceError)> = vec![
            (String::new(), "v1".into(), None, E::Empty),
            (
                "ghcr.io/o/app:v1".into(),
                "v2".into(),
                None,
                E::ConflictingTag {
                    in_name: "v1".into(),
                    in_tag: "v2".into(),
                },
            ),
            (
                format!("ghcr.io/o/app@{SHA256}"),
                SHA256_B.into(),
                None,
                E::ConflictingDigest {
                    in_name: SHA256.into(),
                    in_tag: SHA256_B.into(),
                },
            ),
            (
                "api".into(),
                "v1".into(),
                Some("*.dkr.ecr.us-east-1.amazonaws.com"),
                E::HostRequired {
                    server: "*.dkr.ecr.us-east-1.amazonaws.com".into(),
                },
            ),
            ("app".into(), "v 1".into(), None, E::InvalidTag { tag: "v 1".into() }),
            (
                "app".into(),
                "sha256:zzz".into(),
                None,
                E::InvalidDigest {
                    digest: "sha256:zzz".into(),
                },
            ),
            (
                "app".into(),
                "@v1".into(),
                None,
                E::InvalidDigest { digest: "v1".into() },
            ),
            (
                "app".into(),
                "v1:2".into(),
                None,
                E::UnsupportedDigest { algorithm: "v1".into() },
            ),
            (
                "app".into(),
                "v1".into(),
                Some("bad host"),
                E::InvalidHost {
                    host: "bad host".into(),
                    reason: "expected DNS labels of letters, digits and inner '-' joined by '.', or [IPv6], \
                             then an optional :port",
                },
            ),
            (
                "ghcr.io/Org/app".into(),
                "v1".into(),
                Some("ghcr.io"),
                E::UppercaseRepository {
                    repository: "Org/app".into(),
                },
            ),
        ];
        for (name, tag, server, expected) in cases {
            assert_eq!(
                ImageReference::from_parts(&name, &tag, server),
                Err(expected),
                "{name:?} + {tag:?} on {server:?}"
            );
        }
    }

    #[test]
    fn hosts_match_servers() {
        let ecr = "*.dkr.ecr.us-east-1.amazonaws.com";
        let cases = [
            // exact, ignoring case
            ("ghcr.io", "ghcr.io", true),
            ("GHCR.io", "ghcr.IO", true),
            ("ghcr.io", "docker.io", false),
            ("quay.io", "quay.io", true),
            ("myreg.azurecr.io", "myreg.azurecr.io", true),
            ("myreg.azurecr.io", "other.azurecr.io", false),
            ("europe-west4-docker.pkg.dev", "europe-west4-docker.pkg.dev", true),
            ("europe-west4-docker.pkg.dev", "us-docker.pkg.dev", false),
            // ports are part of the host
            ("registry.example.com:5443", "registry.example.com:5443", true),
            ("registry.example.com:5443", "registry.example.com", false),
            ("registry.example.com", "registry.example.com:5443", false),
            // Public matches anything
            ("", "anything.example.com", true),
            ("", "docker.io", true),
            // ECR: exactly one 12-digit account label
            (ecr, "123456789012.dkr.ecr.us-east-1.amazonaws.com", true),
            (ecr, "123456789012.DKR.ECR.US-EAST-1.AMAZONAWS.COM", true),
            (ecr, "123456789012.dkr.ecr.us-west-2.amazonaws.com", false),
            (ecr, "12345678901.dkr.ecr.us-east-1.amazonaws.com", false),
            (ecr, "1234567890123.dkr.ecr.us-east-1.amazonaws.com", false),
            (ecr, "12345678901a.dkr.ecr.us-east-1.amazonaws.com", false),
            (ecr, "x.123456789012.dkr.ecr.us-east-1.amazonaws.com", false),
            (ecr, "dkr.ecr.us-east-1.amazonaws.com", false),
            (ecr, "123456789012.dkr.ecr.us-east-1.amazonaws.com.cn", false),
            (ecr, "123456789012.dkr.ecr.us-east-1.amazonaws.com:443", false),
            (ecr, "evil.com/123456789012.dkr.ecr.us-east-1.amazonaws.com", false),
            (
                "*.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                true,
            ),
            // no other wildcard is honoured
            ("*.example.com", "a.example.com", false),
            ("*.example.com", "123456789012.example.com", false),
            // GCR family
            ("gcr.io", "gcr.io", true),
            ("gcr.io", "us.gcr.io", true),
            ("gcr.io", "eu.gcr.io", true),
            ("gcr.io", "asia.gcr.io", true),
            ("gcr.io", "evil.gcr.io", false),
            ("gcr.io", "europe-west4-docker.pkg.dev", false),
            // Docker Hub's names
            ("docker.io", "docker.io", true),
            ("docker.io", "index.docker.io", true),
            ("docker.io", "registry-1.docker.io", true),
            ("docker.io", "auth.docker.io", false),
            ("docker.io", "ghcr.io", false),
        ];
        for (server, host, expected) in cases {
            assert_eq!(host_matches(server, host), expected, "{host} on {server:?}");
        }
    }

    #[test]
    fn docker_config_keys() {
        let cases = [
            ("docker.io", DOCKER_HUB_CONFIG_KEY),
            ("index.docker.io", DOCKER_HUB_CONFIG_KEY),
            ("registry-1.docker.io", DOCKER_HUB_CONFIG_KEY),
            ("Docker.IO", DOCKER_HUB_CONFIG_KEY),
            ("ghcr.io", "ghcr.io"),
            ("us.gcr.io", "us.gcr.io"),
            ("reg:5000", "reg:5000"),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            ),
        ];
        for (host, key) in cases {
            assert_eq!(docker_config_key(host), key, "{host}");
        }
    }

    #[test]
    fn accessors_for_pulling() {
        let hub = ImageReference::from_parts("postgres", "17-alpine", None).unwrap();
        assert!(hub.is_docker_hub());
        assert_eq!(hub.name(), "docker.io/library/postgres");
        assert_eq!(hub.api_host(), DOCKER_HUB_API_HOST);
        assert_eq!(hub.manifest_reference(), "17-alpine");
        assert_eq!(hub.docker_config_key(), DOCKER_HUB_CONFIG_KEY);

        let pinned = ImageReference::parse(&format!("reg:5000/a/b:v1@{SHA256}")).unwrap();
        assert!(!pinned.is_docker_hub());
        assert_eq!(pinned.api_host(), "reg:5000");
        assert_eq!(pinned.manifest_reference(), SHA256);
        assert_eq!(pinned.docker_config_key(), "reg:5000");

        let bare = ImageReference::parse("ghcr.io/o/app").unwrap();
        assert_eq!(bare.tag(), None);
        assert_eq!(bare.manifest_reference(), DEFAULT_TAG);
        assert_eq!(bare.with_default_tag().tag(), Some(DEFAULT_TAG));
    }

    #[test]
    fn works_with_each_kind_of_server() {
        let ecr = Credentials::Ecr {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            session_token: None,
            server_identity: false,
        };
        let custom = Credentials::Custom {
            url: "https://Registry.Example.com:5443/".into(),
            username: "deploy".into(),
            password: "secret".into(),
            ca_bundle: String::new(),
        };
        let gcr = Credentials::Gcr {
            service_account_key: "{}".into(),
            login: crate::GoogleLogin::Default,
        };
        let docker = Credentials::Docker {
            username: "me".into(),
            password: "dckr_pat_x".into(),
        };
        // credentials, image_name, expected reference
        let cases = [
            (
                &ecr,
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:v1",
            ),
            (&custom, "team/app", "registry.example.com:5443/team/app:v1"),
            (&gcr, "us.gcr.io/proj/app", "us.gcr.io/proj/app:v1"),
            (&gcr, "proj/app", "gcr.io/proj/app:v1"),
            (&docker, "postgres", "docker.io/library/postgres:v1"),
            (&Credentials::Public, "nginx", "docker.io/library/nginx:v1"),
            (&Credentials::Public, "quay.io/org/app", "quay.io/org/app:v1"),
        ];
        for (credentials, name, expected) in cases {
            let server = credentials.server();
            let reference = ImageReference::from_parts(name, "v1", Some(&server)).unwrap();
            assert_eq!(reference.to_string(), expected);
            assert!(reference.matches_server(&server), "{reference} on {server}");
        }
        let reference = ImageReference::from_parts("ghcr.io/o/app", "v1", Some(&ecr.server())).unwrap();
        assert!(!reference.matches_server(&ecr.server()));
    }
}

/// Round trips for any input (the fuzz target `image_reference` runs the
/// same property longer): what parses prints back to a reference that
/// parses to the same parts.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::ImageReference;

    fn check(input: &str) -> Result<(), TestCaseError> {
        if let Ok(reference) = ImageReference::parse(input) {
            let printed = reference.to_string();
            let again = ImageReference::parse(&printed);
            prop_assert!(again.is_ok(), "{printed:?} does not parse again");
            let again = again.unwrap_or(reference.clone());
            prop_assert_eq!(again.to_string(), printed);
            prop_assert_eq!(again.host(), reference.host());
            prop_assert_eq!(again.repository(), reference.repository());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_text_round_trips(input in "\\PC{0,80}") {
            check(&input)?;
        }

        #[test]
        fn reference_shaped_text_round_trips(
            input in "([a-z0-9.-]{1,12}(:[0-9]{1,5})?/)?[a-z0-9._/-]{1,30}(:[A-Za-z0-9._-]{1,20})?(@sha256:[0-9a-f]{64})?"
        ) {
            check(&input)?;
        }
    }
}
