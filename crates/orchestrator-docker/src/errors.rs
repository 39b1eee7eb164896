//! Engine API failures as [`TargetError`]s. Messages name the endpoint and
//! what failed, never a secret.
//!
//! What dockerd answers (20.10, measured): a pull the registry refuses is
//! HTTP 500 with the registry's words — `no basic auth credentials` without a
//! login, `unauthorized: authentication required` with a wrong password,
//! `denied: requested access to the resource is denied` on hosted
//! registries; an unknown tag or repository is HTTP 404 `manifest for … not
//! found: manifest unknown`. A failure after the pull started streams an
//! error message instead (bollard's `DockerStreamError`).

use std::error::Error as StdError;
use std::time::Duration;

use bollard::errors::Error;
use registry_core::ports::orchestrators::TargetError;
use registry_core::reference::ImageReference;

use crate::engine::Endpoint;

/// Words of a registry refusing the credentials (lower case).
const REFUSED: [&str; 7] = [
    "no basic auth credentials",
    "unauthorized",
    "authentication required",
    "incorrect username or password",
    "access to the resource is denied",
    "denied:",
    "access denied",
];

/// Words of an unknown image (lower case).
const NOT_FOUND: [&str; 5] = [
    "manifest unknown",
    "name unknown",
    "not found",
    "no such image",
    "repository does not exist",
];

/// Words of the engine failing to reach the registry (lower case).
const REGISTRY_UNREACHABLE: [&str; 6] = [
    "dial tcp",
    "connection refused",
    "no such host",
    "i/o timeout",
    "tls handshake timeout",
    "server gave http response to https client",
];

/// A failed engine request that is not a pull.
pub(crate) fn engine(endpoint: &Endpoint, timeout: Duration, action: &str, error: Error) -> TargetError {
    match error {
        Error::SocketNotFoundError(path) => TargetError::Unreachable(format!(
            "cannot reach the Docker engine at {endpoint}: socket {path} does not exist"
        )),
        Error::RequestTimeoutError => TargetError::Unreachable(format!(
            "the Docker engine at {endpoint} did not answer ({action}) within {} s",
            timeout.as_secs()
        )),
        Error::HyperLegacyError { err } => {
            TargetError::Unreachable(format!("cannot reach the Docker engine at {endpoint}: {}", chain(&err)))
        }
        Error::IOError { err } => {
            TargetError::Unreachable(format!("cannot reach the Docker engine at {endpoint}: {}", chain(&err)))
        }
        Error::HyperResponseError { err } => TargetError::Unreachable(format!(
            "the connection to the Docker engine at {endpoint} failed ({action}): {}",
            chain(&err)
        )),
        Error::DockerResponseServerError { status_code, message } => TargetError::Other(format!(
            "the Docker engine at {endpoint} answered {action} with HTTP {status_code}: {}",
            message.trim()
        )),
        Error::DockerStreamError { error } => TargetError::Other(format!(
            "the Docker engine at {endpoint} failed ({action}): {}",
            error.trim()
        )),
        other => TargetError::Other(format!("the Docker engine at {endpoint} failed ({action}): {other}")),
    }
}

/// A failed pull (or the inspection right after it) of `image`.
pub(crate) fn pull(
    endpoint: &Endpoint,
    timeout: Duration,
    image: &ImageReference,
    with_login: bool,
    error: Error,
) -> TargetError {
    let (status, message) = match &error {
        Error::DockerResponseServerError { status_code, message } => (Some(*status_code), message.trim()),
        Error::DockerStreamError { error } => (None, error.trim()),
        _ => return engine(endpoint, timeout, &format!("pulling {image}"), error),
    };
    classify(endpoint, image, with_login, status, message)
}

fn classify(
    endpoint: &Endpoint,
    image: &ImageReference,
    with_login: bool,
    status: Option<u16>,
    message: &str,
) -> TargetError {
    let lower = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    // Docker Hub's answer for a repository that is missing or private:
    // without a login it is most likely missing.
    if !with_login && lower.contains("repository does not exist") {
        return TargetError::ImageNotFound(format!("{image}: {message}"));
    }
    if has(&REFUSED) {
        return TargetError::RegistryRefused(format!("pulling {image}: {message}"));
    }
    if status == Some(404) || has(&NOT_FOUND) {
        return TargetError::ImageNotFound(format!("{image}: {message}"));
    }
    if has(&REGISTRY_UNREACHABLE) {
        return TargetError::Other(format!(
            "the Docker engine at {endpoint} could not reach the registry of {image}: {message}"
        ));
    }
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    TargetError::Other(format!(
        "the Docker engine at {endpoint} failed to pull {image}{status}: {message}"
    ))
}

/// `error` with each of `secrets` (when not empty) replaced, in case an
/// engine or registry ever echoes one.
pub(crate) fn redact(error: TargetError, secrets: &[&str]) -> TargetError {
    let clean = |text: String| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text, |text, secret| text.replace(secret, "[REDACTED]"))
    };
    match error {
        TargetError::RegistryRefused(m) => TargetError::RegistryRefused(clean(m)),
        TargetError::ImageNotFound(m) => TargetError::ImageNotFound(clean(m)),
        TargetError::Unreachable(m) => TargetError::Unreachable(clean(m)),
        TargetError::Other(m) => TargetError::Other(clean(m)),
        other => other,
    }
}

/// An error and its sources, `outer: inner: …` (hyper's own message is only
/// "client error (Connect)").
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::parse("unix:///run/test/docker.sock").unwrap()
    }

    fn server(status_code: u16, message: &str) -> Error {
        Error::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn pull_failures_are_classified() {
        let image = ImageReference::parse("127.0.0.1:5000/test/busybox:1").unwrap();
        let hub = ImageReference::parse("docker.io/acme/private:1").unwrap();
        let timeout = Duration::from_secs(30);
        /// image, whether a login was sent, what the engine said, what it must become
        type Case<'a> = (&'a ImageReference, bool, Error, fn(&TargetError) -> bool);
        let cases: Vec<Case<'_>> = vec![
            (
                &image,
                false,
                server(
                    500,
                    "Head \"http://127.0.0.1:5000/v2/test/busybox/manifests/1\": no basic auth credentials",
                ),
                |e| matches!(e, TargetError::RegistryRefused(_)),
            ),
            (
                &image,
                true,
                server(500, "unauthorized: authentication required"),
                |e| matches!(e, TargetError::RegistryRefused(_)),
            ),
            (
                &hub,
                true,
                server(
                    500,
                    "pull access denied for acme/private, repository does not exist or may require 'docker login': \
                     denied: requested access to the resource is denied",
                ),
                |e| matches!(e, TargetError::RegistryRefused(_)),
            ),
            (
                &hub,
                false,
                server(
                    404,
                    "pull access denied for acme/private, repository does not exist or may require 'docker login': \
                     denied: requested access to the resource is denied",
                ),
                |e| matches!(e, TargetError::ImageNotFound(_)),
            ),
            (
                &image,
                true,
                server(
                    404,
                    "manifest for 127.0.0.1:5000/test/busybox:nope not found: manifest unknown: manifest unknown",
                ),
                |e| matches!(e, TargetError::ImageNotFound(_)),
            ),
            (
                &image,
                true,
                Error::DockerStreamError {
                    error: "unauthorized: authentication required".to_owned(),
                },
                |e| matches!(e, TargetError::RegistryRefused(_)),
            ),
            (
                &image,
                true,
                server(
                    500,
                    "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
                ),
                |e| matches!(e, TargetError::Other(m) if m.contains("could not reach the registry")),
            ),
            (
                &image,
                true,
                Error::SocketNotFoundError("/run/test/docker.sock".to_owned()),
                |e| matches!(e, TargetError::Unreachable(m) if m.contains("unix:///run/test/docker.sock")),
            ),
            (
                &image,
                true,
                Error::RequestTimeoutError,
                |e| matches!(e, TargetError::Unreachable(m) if m.contains("within 30 s")),
            ),
            (
                &image,
                true,
                server(409, "conflict"),
                |e| matches!(e, TargetError::Other(m) if m.contains("HTTP 409")),
            ),
        ];
        for (image, with_login, error, expected) in cases {
            let text = error.to_string();
            let mapped = pull(&endpoint(), timeout, image, with_login, error);
            assert!(expected(&mapped), "{text} -> {mapped:?}");
        }
    }

    #[test]
    fn redact_removes_secrets() {
        let error = TargetError::RegistryRefused("user deploy password hunter2 auth eyJhIjoiYiJ9".to_owned());
        let redacted = redact(error, &["hunter2", "eyJhIjoiYiJ9", ""]);
        assert_eq!(
            redacted,
            TargetError::RegistryRefused("user deploy password [REDACTED] auth [REDACTED]".to_owned())
        );
    }
}
