//! The registry resource as stored: ids, timestamps, etags, sealed
//! credentials.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::credentials::CredentialHint;
use crate::kind::RegistryKind;

/// Lowercase RFC 4648 base32 alphabet used for ids and etags.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `count` random lowercase base32 characters.
pub(crate) fn random_base32(count: usize) -> String {
    let mut bytes = vec![0u8; count];
    // getrandom fails only without an OS random source, where nothing secure
    // can run at all.
    getrandom::fill(&mut bytes).expect("operating system random source");
    bytes.iter().map(|b| BASE32[usize::from(b & 31)] as char).collect()
}

/// A registry id: `reg-` followed by 16 lowercase base32 characters (80 random
/// bits), like the guide's `reg-abc123`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryId(String);

impl RegistryId {
    const PREFIX: &'static str = "reg-";
    const RANDOM_LEN: usize = 16;

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_base32(Self::RANDOM_LEN)))
    }

    /// Accepts `reg-` + 1..=64 lowercase letters and digits, so ids not made
    /// here (the guide's `reg-abc123`) stay addressable.
    pub fn parse(id: &str) -> Option<Self> {
        let rest = id.strip_prefix(Self::PREFIX)?;
        let valid =
            (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        valid.then(|| Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A new random etag; every write gets one.
pub fn new_etag() -> String {
    random_base32(20)
}

/// Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(micros)
    }

    /// This time plus `delay` (saturating).
    pub fn after(self, delay: std::time::Duration) -> Self {
        let micros = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    pub fn seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    pub fn subsec_nanos(self) -> i32 {
        // rem_euclid of 1e6 is below 1e6, so the product fits an i32.
        i32::try_from(self.0.rem_euclid(1_000_000) * 1_000).unwrap_or(0)
    }
}

/// A saved registry, as the API shows it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub id: RegistryId,
    pub organization: String,
    pub name: String,
    pub kind: RegistryKind,
    pub server: String,
    pub hints: Vec<CredentialHint>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub etag: String,
    /// Starts at 1 when saved and rises with every rotation;
    /// [`UNSAVED_REVISION`] for credentials that are not saved.
    pub credential_revision: i64,
}

/// The credential revision of credentials that are not saved (a live test
/// of the form's draft): nothing is cached under it.
pub const UNSAVED_REVISION: i64 = 0;

/// A registry with its sealed credentials, as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredRegistry {
    pub registry: Registry,
    /// The master key the credentials are sealed under.
    pub key_id: String,
    /// The sealed credential blob (see `registry-crypto`).
    pub sealed_credentials: Vec<u8>,
}

impl fmt::Debug for StoredRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredRegistry")
            .field("registry", &self.registry)
            .field("key_id", &self.key_id)
            .field(
                "sealed_credentials",
                &format_args!("<{} bytes>", self.sealed_credentials.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = RegistryId::generate();
        let b = RegistryId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 20);
        assert_eq!(RegistryId::parse(a.as_str()), Some(a));
        assert!(RegistryId::parse("reg-abc123").is_some());
        for bad in ["", "reg-", "reg-ABC", "reg-abc_1", "abc-abc", "reg-a b"] {
            assert!(RegistryId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let t = Timestamp(1_700_000_000_123_456);
        assert_eq!(t.seconds(), 1_700_000_000);
        assert_eq!(t.subsec_nanos(), 123_456_000);
    }
}
