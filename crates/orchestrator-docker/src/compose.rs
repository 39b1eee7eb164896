//! For callers that run the compose CLI themselves: a docker config holding
//! one login, in a directory of its own, so that
//! `DOCKER_CONFIG=<dir> docker-compose pull` authenticates without touching
//! `~/.docker` (nor any other login kept there).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use registry_core::login::DockerLogin;

/// The file the docker CLI and compose read in `DOCKER_CONFIG`.
pub const DOCKER_CONFIG_FILE: &str = "config.json";

/// Writes `<dir>/config.json` = [`DockerLogin::docker_config_json`], mode
/// 0600, creating `dir` (0700) when missing, and returns its path. The file
/// is replaced whole (written aside, then renamed), so a reader never sees
/// half of it.
pub fn write_isolated_docker_config(dir: &Path, login: &DockerLogin) -> io::Result<PathBuf> {
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let path = dir.join(DOCKER_CONFIG_FILE);
    let aside = dir.join(format!(".{DOCKER_CONFIG_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)?;
        // `mode` only applies to a file it creates.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&login.docker_config_json())?;
        file.sync_all()?;
        fs::rename(&aside, &path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&aside);
    }
    written.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::Credentials;

    #[test]
    fn writes_the_login_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nested/docker");
        let creds = Credentials::Custom {
            url: "http://127.0.0.1:5000".into(),
            username: "deploy".into(),
            password: "p?>>?secret".into(),
            ca_bundle: String::new(),
        };
        let login = DockerLogin::from_credentials(&creds, "127.0.0.1:5000").unwrap();
        let path = write_isolated_docker_config(&target, &login).unwrap();
        assert_eq!(path, target.join("config.json"));
        assert_eq!(fs::read(&path).unwrap(), *login.docker_config_json());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o700);

        // Rewriting replaces it, and tightens a file someone loosened.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let creds = Credentials::Custom {
            url: "http://127.0.0.1:5000".into(),
            username: "deploy".into(),
            password: "rotated".into(),
            ca_bundle: String::new(),
        };
        let login = DockerLogin::from_credentials(&creds, "127.0.0.1:5000").unwrap();
        write_isolated_docker_config(&target, &login).unwrap();
        assert_eq!(fs::read(&path).unwrap(), *login.docker_config_json());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&target).unwrap().count(), 1, "nothing left aside");
    }
}
