//! Loading master keys from a key file, a comma-separated value, or a key
//! file generated in the data directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::Path;

use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use crate::error::{KeyError, KeyOrigin, Location};
use crate::key::{self, KEY_LEN, MasterKey};
use crate::keyring::KeyRing;

/// The key file [`KeyRing::load_or_generate`] uses in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The environment variable meant for [`KeyRing::from_env_value`].
pub const MASTER_KEYS_ENV: &str = "REGISTRY_MASTER_KEYS";

/// Whether [`KeyRing::load_or_generate`] found a key file or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileStatus {
    /// The key file existed and was loaded.
    Loaded,
    /// No key file existed: a new key was generated and written.
    Generated,
}

const GENERATED_HEADER: &str = "\
# Master key of the registry credential service, generated on first start.
# Credentials sealed under it are lost without it: back this file up, and in
# production replace it with a managed key.
# One standard-base64 key per line; the first is primary, later ones only open
# credentials sealed before a rotation.
";

impl KeyRing {
    /// Loads a key file: one standard-base64 key per line; blank lines and
    /// `#` comments (whole lines or after a key) are ignored. The first key
    /// is primary, the others are older keys kept for opening. On unix, warns
    /// if group or others have any access to the file.
    pub fn from_key_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let text = read_key_file(path)?;
        let origin = KeyOrigin::File(path.to_owned());
        let text = match std::str::from_utf8(&text) {
            Ok(text) => text,
            Err(error) => {
                let before = text.get(..error.valid_up_to()).unwrap_or_default();
                let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
                let chars = text.split(|&byte| byte == b'\n').nth(line - 1).map_or(0, |line| {
                    // Counted as a lossy decoding would show them.
                    line.utf8_chunks()
                        .map(|chunk| chunk.valid().chars().count() + usize::from(!chunk.invalid().is_empty()))
                        .sum()
                });
                return Err(KeyError::NotBase64 {
                    at: Location { origin, line },
                    chars,
                });
            }
        };
        let entries = text
            .lines()
            .map(|line| line.split_once('#').map_or(line, |(key, _comment)| key));
        let ring = from_entries(origin, entries)?;
        tracing::debug!(path = %path.display(), key_ids = ?ring.key_ids().collect::<Vec<_>>(), "loaded master keys");
        Ok(ring)
    }

    /// Loads comma-separated keys, the value of [`MASTER_KEYS_ENV`]; blank
    /// entries are ignored. The first key is primary.
    pub fn from_env_value(value: &str) -> Result<Self, KeyError> {
        from_entries(KeyOrigin::Env, value.split(','))
    }

    /// The embedded default: loads `<data_dir>/master.key`, or, if there is
    /// none, generates a key and writes it there (mode 0600 on unix, never
    /// overwriting an existing file) with a warning that a generated
    /// development key is in use. Creates `data_dir` if it is missing.
    pub fn load_or_generate(data_dir: impl AsRef<Path>) -> Result<(Self, KeyFileStatus), KeyError> {
        let data_dir = data_dir.as_ref();
        let path = data_dir.join(MASTER_KEY_FILE);
        let create_error = |source| KeyError::Create {
            path: path.clone(),
            source,
        };
        create_private_dir(data_dir).map_err(create_error)?;
        let (key, text) = MasterKey::generate(&SystemRandom::new())?;
        if !create_key_file(&path, &text).map_err(create_error)? {
            return Ok((Self::from_key_file(&path)?, KeyFileStatus::Loaded));
        }
        tracing::warn!(
            path = %path.display(),
            key_id = key.id(),
            "generated a development master key: back up this file, and in production \
             replace it with a managed key (a key file or {MASTER_KEYS_ENV})"
        );
        Ok((Self::new(key, Vec::new()), KeyFileStatus::Generated))
    }
}

/// Builds a ring from entries, in order; the first key is primary.
fn from_entries<'a>(origin: KeyOrigin, entries: impl Iterator<Item = &'a str>) -> Result<KeyRing, KeyError> {
    let mut keys: Vec<(usize, MasterKey)> = Vec::new();
    for (index, entry) in entries.enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let at = || Location {
            origin: origin.clone(),
            line: index + 1,
        };
        let material = key::decode(entry).ok_or_else(|| KeyError::NotBase64 {
            at: at(),
            chars: entry.chars().count(),
        })?;
        let wrong_length = || KeyError::WrongLength {
            at: at(),
            len: material.len(),
        };
        let bytes: &[u8; KEY_LEN] = material.as_slice().try_into().map_err(|_| wrong_length())?;
        // ring refuses a key only for its length, which is checked above.
        let key = MasterKey::new(bytes).map_err(|_| wrong_length())?;
        if let Some((first, _)) = keys.iter().find(|(_, known)| known.id() == key.id()) {
            return Err(KeyError::Duplicate {
                at: at(),
                first: *first,
                key_id: key.id().to_owned(),
            });
        }
        keys.push((index + 1, key));
    }
    let mut keys = keys.into_iter().map(|(_, key)| key);
    let primary = keys.next().ok_or(KeyError::NoKeys { origin })?;
    Ok(KeyRing::new(primary, keys.collect()))
}

/// Reads a key file into a zeroizing buffer, warning about loose permissions.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    warn_if_shared(path, &metadata);
    // Reserve up front so reading does not reallocate and leave copies of
    // key bytes in freed memory (bounded: a key file is small).
    let expected = usize::try_from(metadata.len()).unwrap_or(usize::MAX).min(64 * 1024);
    let mut text = Zeroizing::new(Vec::with_capacity(expected + 1));
    file.read_to_end(&mut text).map_err(read_error)?;
    Ok(text)
}

#[cfg(unix)]
fn warn_if_shared(path: &Path, metadata: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;

    let mode = metadata.permissions().mode();
    if is_shared(mode) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{:03o}", mode & 0o777),
            "master key file is accessible by group or others; restrict it to its owner (chmod 600)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path, _metadata: &fs::Metadata) {}

/// Whether a unix mode grants group or others any access.
#[cfg(unix)]
fn is_shared(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` holding `key`; `false` if it already exists. A file that
/// cannot be fully written is removed, so no empty key file is left behind.
fn create_key_file(path: &Path, key: &str) -> io::Result<bool> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(error) => return Err(error),
    };
    let mut contents = Zeroizing::new(String::with_capacity(GENERATED_HEADER.len() + key.len() + 1));
    contents.push_str(GENERATED_HEADER);
    contents.push_str(key);
    contents.push('\n');
    if let Err(error) = file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()) {
        drop(file);
        // Nothing is sealed under the key yet; the next start makes a new one.
        let _ = fs::remove_file(path);
        return Err(error);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use registry_core::RegistryKind;
    use registry_core::ports::sealer::{SealContext, Sealer as _};

    use super::*;
    use crate::generate_key;

    const CONTEXT: SealContext<'static> = SealContext {
        registry_id: "reg-1",
        kind: RegistryKind::Docker,
    };

    fn key() -> Zeroizing<String> {
        generate_key().expect("random")
    }

    fn id_of(key: &str) -> String {
        KeyRing::from_env_value(key).expect("key").primary_key_id().to_owned()
    }

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("keys");
        fs::write(&path, text).expect("write");
        path
    }

    fn location(path: &Path, line: usize) -> Location {
        Location {
            origin: KeyOrigin::File(path.to_owned()),
            line,
        }
    }

    #[test]
    fn key_file_skips_comments_and_blank_lines_first_key_is_primary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (key(), key());
        let path = write(
            dir.path(),
            &format!("# rotated keys\n\n  {}  # current\r\n\t\n# older:\n{}\n", *a, *b),
        );
        let ring = KeyRing::from_key_file(&path).expect("valid file");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [id_of(&a), id_of(&b)]);
        assert_eq!(ring.primary_key_id(), id_of(&a));
    }

    #[test]
    fn key_file_errors_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = key();

        let path = write(dir.path(), &format!("# header\n{}\nnot base64!\n", *good));
        let error = KeyRing::from_key_file(&path).expect_err("bad line");
        assert!(
            matches!(&error, KeyError::NotBase64 { at, chars: 11 } if *at == location(&path, 3)),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "master key file {}, line 3: not a master key (11 characters; \
                 a master key is 44 characters of standard base64)",
                path.display()
            )
        );

        let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7_u8; 16]);
        let path = write(dir.path(), &format!("\n\n{short}\n"));
        let error = KeyRing::from_key_file(&path).expect_err("wrong length");
        assert!(
            matches!(&error, KeyError::WrongLength { at, len: 16 } if *at == location(&path, 3)),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with("line 3: master key is 16 bytes, expected 32"),
            "{error}"
        );

        // One character short: no longer valid base64.
        let path = write(dir.path(), &good[..43]);
        assert!(matches!(
            KeyRing::from_key_file(&path),
            Err(KeyError::NotBase64 { chars: 43, .. })
        ));

        let path = write(dir.path(), &format!("{}\n{}\n{}\n", *good, *key(), *good));
        let error = KeyRing::from_key_file(&path).expect_err("duplicate");
        assert!(
            matches!(&error, KeyError::Duplicate { at, first: 1, key_id } if *at == location(&path, 3) && *key_id == id_of(&good)),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with(&format!("line 3: repeats master key {} of line 1", id_of(&good)))
        );

        let path = write(dir.path(), "# nothing here\n\n");
        let error = KeyRing::from_key_file(&path).expect_err("no keys");
        assert!(matches!(&error, KeyError::NoKeys { origin } if *origin == KeyOrigin::File(path.clone())));

        let path = dir.path().join("bin");
        fs::write(&path, b"# ok\nk\xff\xfe\n").expect("write");
        assert!(matches!(
            KeyRing::from_key_file(&path),
            Err(KeyError::NotBase64 { at, chars: 3 }) if at == location(&path, 2)
        ));

        let missing = dir.path().join("missing");
        let error = KeyRing::from_key_file(&missing).expect_err("missing");
        assert!(
            matches!(&error, KeyError::Read { path, source } if *path == missing && source.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn env_value_is_comma_separated_first_primary() {
        let (a, b) = (key(), key());
        let ring = KeyRing::from_env_value(&format!(" {} , {},", *a, *b)).expect("valid");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [id_of(&a), id_of(&b)]);

        let error = KeyRing::from_env_value(&format!("{},oops!", *a)).expect_err("bad entry");
        assert_eq!(
            error.to_string(),
            "REGISTRY_MASTER_KEYS, entry 2: not a master key (5 characters; \
             a master key is 44 characters of standard base64)"
        );
        assert!(matches!(
            KeyRing::from_env_value(" , "),
            Err(KeyError::NoKeys { origin: KeyOrigin::Env })
        ));
        assert!(matches!(
            KeyRing::from_env_value(&format!("{},{}", *a, *a)),
            Err(KeyError::Duplicate { first: 1, .. })
        ));
    }

    #[test]
    fn errors_never_show_key_material() {
        let good = key();
        let almost = format!("{}!", &good[..43]);
        let long = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0x5a_u8; 48]);
        let errors = [
            KeyRing::from_env_value(&almost).expect_err("bad"),
            KeyRing::from_env_value(&long).expect_err("long"),
            KeyRing::from_env_value(&format!("{},{}", *good, *good)).expect_err("duplicate"),
        ];
        for error in errors {
            for text in [error.to_string(), format!("{error:?}")] {
                for secret in [&good[..], &almost, &long] {
                    assert!(!text.contains(&secret[..12]), "{text}");
                }
            }
        }
    }

    #[test]
    fn load_or_generate_creates_a_private_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");

        let (first, status) = KeyRing::load_or_generate(&data_dir).expect("generate");
        assert_eq!(status, KeyFileStatus::Generated);
        let path = data_dir.join(MASTER_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let contents = fs::read(&path).expect("read");
        let blob = first.seal(CONTEXT, b"kept").expect("seal");

        let (second, status) = KeyRing::load_or_generate(&data_dir).expect("load");
        assert_eq!(status, KeyFileStatus::Loaded);
        assert_eq!(second.primary_key_id(), first.primary_key_id());
        assert_eq!(fs::read(&path).expect("read"), contents, "never rewritten");
        assert_eq!(second.open(CONTEXT, &blob).expect("open").as_slice(), b"kept");
        assert_eq!(
            KeyRing::from_key_file(&path).expect("plain key file").primary_key_id(),
            first.primary_key_id()
        );
    }

    #[test]
    fn load_or_generate_refuses_a_broken_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(MASTER_KEY_FILE), "garbage\n").expect("write");
        assert!(matches!(
            KeyRing::load_or_generate(dir.path()),
            Err(KeyError::NotBase64 { .. })
        ));
        assert_eq!(
            fs::read_to_string(dir.path().join(MASTER_KEY_FILE)).expect("read"),
            "garbage\n",
            "an existing file is never overwritten"
        );
    }

    #[cfg(unix)]
    #[test]
    fn group_or_other_access_is_shared() {
        assert!(!is_shared(0o100600));
        assert!(!is_shared(0o400));
        assert!(is_shared(0o640));
        assert!(is_shared(0o604));
        assert!(is_shared(0o620));
    }
}
