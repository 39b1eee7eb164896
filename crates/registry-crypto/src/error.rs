//! Why master keys could not be loaded. No message ever contains key material:
//! a bad entry is named by its place, never by its text.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::load::MASTER_KEYS_ENV;

/// Where master keys were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// A key file: one key per line.
    File(PathBuf),
    /// A comma-separated list, the value of [`MASTER_KEYS_ENV`].
    Env,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "master key file {}", path.display()),
            Self::Env => write!(f, "{MASTER_KEYS_ENV}"),
        }
    }
}

/// One entry of a key source: a line of a file or an entry of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub origin: KeyOrigin,
    /// The 1-based line of the file, or entry of the list.
    pub line: usize,
}

impl Location {
    /// What an entry is called in this origin: `line` or `entry`.
    pub fn unit(&self) -> &'static str {
        match self.origin {
            KeyOrigin::File(_) => "line",
            KeyOrigin::Env => "entry",
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {} {}", self.origin, self.unit(), self.line)
    }
}

/// Master keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read master key file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A new key file could not be created or written.
    #[error("cannot create master key file {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An entry is not standard base64 (or the file is not UTF-8 text there).
    #[error("{at}: not a master key ({chars} characters; a master key is 44 characters of standard base64)")]
    NotBase64 { at: Location, chars: usize },
    /// An entry decodes to the wrong number of bytes.
    #[error("{at}: master key is {len} bytes, expected 32")]
    WrongLength { at: Location, len: usize },
    /// An entry repeats an earlier key.
    #[error("{at}: repeats master key {key_id} of {} {first}", .at.unit())]
    Duplicate {
        at: Location,
        /// The line or entry of the first occurrence.
        first: usize,
        key_id: String,
    },
    /// The source holds no key at all.
    #[error("{origin}: no master key")]
    NoKeys { origin: KeyOrigin },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}
