//! The distribution registry of the test bed (`scripts/lib/docker-services.sh`):
//! its htpasswd file, which the registry re-reads when it changes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `user:bcrypt` from `htpasswd -niB` (the password goes through stdin).
pub fn htpasswd_line(user: &str, password: &str) -> String {
    let mut child = Command::new("htpasswd")
        .args(["-n", "-i", "-B", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("htpasswd (apache2-utils) runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(password.as_bytes())
        .expect("password written to htpasswd");
    let out = child.wait_with_output().expect("htpasswd finishes");
    assert!(out.status.success(), "htpasswd -n failed");
    String::from_utf8(out.stdout).expect("utf-8 line").trim().to_owned()
}

/// Sets (or with `None` removes) `user`'s line, leaving every other line as
/// it is. Test binaries run in parallel against one registry, so the
/// read-modify-write holds an exclusive lock on `<file>.lock`, and the file
/// is replaced whole (written aside, renamed) so the registry never reads
/// half of it.
pub fn htpasswd_set(path: &Path, user: &str, password: Option<&str>) {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .expect("htpasswd lock file opens");
    lock.lock().expect("htpasswd lock taken");
    let current = std::fs::read_to_string(path).expect("htpasswd readable");
    let prefix = format!("{user}:");
    let mut lines: Vec<String> = current
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    if let Some(password) = password {
        lines.push(htpasswd_line(user, password));
    }
    let aside = path.with_extension(format!("{user}.tmp"));
    std::fs::write(&aside, lines.join("\n") + "\n").expect("htpasswd written aside");
    std::fs::rename(&aside, path).expect("htpasswd replaced");
}

/// The test bed's registry: its address and the script's user.
#[derive(Debug, Clone, Default)]
pub struct Distribution {
    /// `127.0.0.1:PORT`.
    pub address: String,
    pub user: String,
    pub password: String,
}

/// An answer of the registry's HTTP API.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Distribution {
    /// The registry the test script started, from its `REGISTRY_TEST_*`
    /// variables; `None` (after a loud message) outside CI without one.
    pub fn from_env() -> Option<Self> {
        Some(Self {
            address: crate::require_service("the distribution registry", "REGISTRY_TEST_DISTRIBUTION")?,
            user: crate::require_service("the distribution registry", "REGISTRY_TEST_DISTRIBUTION_USER")?,
            password: crate::require_service("the distribution registry", "REGISTRY_TEST_DISTRIBUTION_PASSWORD")?,
        })
    }

    /// One request to the registry's HTTP API with the script user's Basic
    /// auth.
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<HttpResponse> {
        let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", self.user, self.password)));
        let mut all = vec![("Authorization", basic.as_str())];
        all.extend_from_slice(headers);
        http_request(&self.address, method, path, &all, body)
    }

    /// Copies `source@digest` to `target:1` inside the registry: blob mounts,
    /// then the same manifest bytes, so the copy has the same digest.
    pub fn copy_image(&self, source: &str, digest: &str, target: &str) -> io::Result<()> {
        let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
        let fail = |what: String| io::Error::other(what);
        let manifest = self.http(
            "GET",
            &format!("/v2/{source}/manifests/{digest}"),
            &[("Accept", accept)],
            b"",
        )?;
        if manifest.status != 200 {
            return Err(fail(format!("GET manifest of {source}: {}", manifest.status)));
        }
        let media_type = manifest.headers.get("content-type").cloned().unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_slice(&manifest.body).map_err(|e| fail(format!("manifest of {source}: {e}")))?;
        let layers = json["layers"].as_array().cloned().unwrap_or_default();
        let blobs = std::iter::once(&json["config"])
            .chain(layers.iter())
            .filter_map(|d| d["digest"].as_str().map(str::to_owned));
        for blob in blobs {
            let path = format!("/v2/{target}/blobs/uploads/?mount={blob}&from={source}");
            let mounted = self.http("POST", &path, &[], b"")?;
            if mounted.status != 201 {
                return Err(fail(format!("mount {blob} into {target}: {}", mounted.status)));
            }
        }
        let path = format!("/v2/{target}/manifests/1");
        let put = self.http("PUT", &path, &[("Content-Type", &media_type)], &manifest.body)?;
        if put.status != 201 || put.headers.get("docker-content-digest").map(String::as_str) != Some(digest) {
            return Err(fail(format!("PUT manifest {target}:1: {}", put.status)));
        }
        Ok(())
    }
}

/// One HTTP/1.0 request over loopback (the answer ends with the
/// connection), for the test registries' HTTP APIs.
pub(crate) fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = || io::Error::other(format!("{method} {path}: not an HTTP response"));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}
