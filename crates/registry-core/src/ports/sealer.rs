//! The `Sealer` port: encryption at rest of credential blobs.

use zeroize::Zeroizing;

use crate::kind::RegistryKind;

/// What a sealed blob is bound to (its additional authenticated data): a blob
/// sealed for one registry and kind does not open for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealContext<'a> {
    pub registry_id: &'a str,
    pub kind: RegistryKind,
}

/// Why a blob could not be sealed or opened. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The blob was sealed under a master key that is not configured.
    #[error("master key {0:?} is not configured")]
    UnknownKey(String),
    /// The blob does not authenticate: wrong key material, tampered bytes, or
    /// bound to another registry.
    #[error("blob does not authenticate under master key {0:?}")]
    Unauthentic(String),
    /// The bytes are not a blob of a known format.
    #[error("malformed blob: {0}")]
    Malformed(String),
    /// The system random generator or cipher failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

/// Seals and opens credential blobs with envelope encryption.
pub trait Sealer: Send + Sync + std::fmt::Debug + 'static {
    /// Seals `plaintext` under the primary master key. The blob names its key.
    fn seal(&self, context: SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Opens a blob sealed by [`Sealer::seal`] with the same context.
    fn open(&self, context: SealContext<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;

    /// The id of the master key that new blobs are sealed under.
    fn primary_key_id(&self) -> &str;

    /// Whether a master key with this id is configured.
    fn has_key(&self, key_id: &str) -> bool;

    /// The id of the master key a blob was sealed under, read from the blob.
    fn key_id_of(&self, blob: &[u8]) -> Result<String, SealError>;
}
