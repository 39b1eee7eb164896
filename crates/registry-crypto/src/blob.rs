//! The byte layout of a sealed blob and its associated data (see the crate
//! documentation for the table).

use registry_core::ports::sealer::{SealContext, SealError};

use crate::key::KEY_LEN;

/// The version byte that starts every blob this crate seals.
pub const FORMAT_VERSION: u8 = 1;

pub(crate) const NONCE_LEN: usize = ring::aead::NONCE_LEN;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const WRAPPED_KEY_LEN: usize = KEY_LEN + TAG_LEN;

/// Which of the two encryptions associated data is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Purpose {
    /// The data key, wrapped by the master key.
    WrapKey = b'K',
    /// The plaintext, encrypted by the data key.
    Data = b'D',
}

/// The associated data of one encryption: version, purpose, then master key
/// id, registry id and kind, each prefixed by its length (big-endian `u64`).
pub(crate) fn aad(purpose: Purpose, key_id: &str, context: SealContext<'_>) -> Vec<u8> {
    let fields = [key_id, context.registry_id, context.kind.key()];
    let mut aad = Vec::with_capacity(2 + fields.iter().map(|field| 8 + field.len()).sum::<usize>());
    aad.push(FORMAT_VERSION);
    aad.push(purpose as u8);
    for field in fields {
        aad.extend_from_slice(&(field.len() as u64).to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

/// The exact length of a blob, so it can be built without reallocating (which
/// would leave copies of the plaintext in freed memory).
pub(crate) fn sealed_len(key_id: &str, plaintext_len: usize) -> usize {
    2 + key_id.len() + NONCE_LEN + WRAPPED_KEY_LEN + NONCE_LEN + plaintext_len + TAG_LEN
}

/// Appends the version and the length-prefixed key id.
pub(crate) fn write_header(blob: &mut Vec<u8>, key_id: &str) -> Result<(), SealError> {
    let len = u8::try_from(key_id.len())
        .ok()
        .filter(|&len| len > 0)
        .ok_or_else(|| SealError::Crypto(format!("master key id of {} bytes", key_id.len())))?;
    blob.push(FORMAT_VERSION);
    blob.push(len);
    blob.extend_from_slice(key_id.as_bytes());
    Ok(())
}

/// The fields of a blob, borrowed from it.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) wrap_nonce: [u8; NONCE_LEN],
    pub(crate) wrapped_key: &'a [u8; WRAPPED_KEY_LEN],
    pub(crate) data_nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag; at least [`TAG_LEN`] bytes.
    pub(crate) ciphertext: &'a [u8],
}

impl<'a> Parts<'a> {
    /// Splits a blob into its fields; [`SealError::Malformed`] if it is not
    /// a well-formed version 1 blob.
    pub(crate) fn parse(blob: &'a [u8]) -> Result<Self, SealError> {
        let truncated = || malformed(format!("truncated ({} bytes)", blob.len()));
        let (&version, rest) = blob.split_first().ok_or_else(|| malformed("empty".into()))?;
        if version != FORMAT_VERSION {
            return Err(malformed(format!("unknown format version {version}")));
        }
        let (&id_len, rest) = rest.split_first().ok_or_else(truncated)?;
        let (key_id, rest) = rest.split_at_checked(usize::from(id_len)).ok_or_else(truncated)?;
        if key_id.is_empty() || !key_id.iter().all(u8::is_ascii_graphic) {
            return Err(malformed("invalid master key id".into()));
        }
        let key_id = std::str::from_utf8(key_id).map_err(|_| malformed("invalid master key id".into()))?;
        let (wrap_nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(truncated)?;
        let (wrapped_key, rest) = rest.split_first_chunk::<WRAPPED_KEY_LEN>().ok_or_else(truncated)?;
        let (data_nonce, ciphertext) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(truncated)?;
        if ciphertext.len() < TAG_LEN {
            return Err(truncated());
        }
        Ok(Self {
            key_id,
            wrap_nonce: *wrap_nonce,
            wrapped_key,
            data_nonce: *data_nonce,
            ciphertext,
        })
    }
}

fn malformed(reason: String) -> SealError {
    SealError::Malformed(reason)
}

#[cfg(test)]
mod tests {
    use registry_core::RegistryKind;

    use super::*;

    fn context(registry_id: &str, kind: RegistryKind) -> SealContext<'_> {
        SealContext { registry_id, kind }
    }

    #[test]
    fn aad_is_unambiguous() {
        // Moving bytes between fields changes the AAD.
        let a = aad(Purpose::Data, "mk-1", context("ab", RegistryKind::Ghcr));
        let b = aad(Purpose::Data, "mk-1a", context("b", RegistryKind::Ghcr));
        assert_ne!(a, b);
        assert_ne!(
            aad(Purpose::Data, "mk-1", context("r", RegistryKind::Gcr)),
            aad(Purpose::Data, "mk-1", context("r", RegistryKind::Gar)),
        );
        assert_ne!(
            aad(Purpose::Data, "mk-1", context("r", RegistryKind::Gcr)),
            aad(Purpose::WrapKey, "mk-1", context("r", RegistryKind::Gcr)),
        );
        let mut expected = vec![1, b'K', 0, 0, 0, 0, 0, 0, 0, 1, b'k', 0, 0, 0, 0, 0, 0, 0, 1, b'r'];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        expected.extend_from_slice(b"ECR");
        assert_eq!(aad(Purpose::WrapKey, "k", context("r", RegistryKind::Ecr)), expected);
    }

    #[test]
    fn parse_rejects_garbage_with_malformed() {
        for blob in [
            &[][..],
            &[1],
            &[2, 1, b'k'],
            &[1, 0],
            &[1, 3, b'm', b'k'],
            &[1, 1, b' '],
        ] {
            assert!(matches!(Parts::parse(blob), Err(SealError::Malformed(_))), "{blob:?}");
        }
        let mut blob = Vec::new();
        write_header(&mut blob, "mk-1").expect("header");
        blob.resize(sealed_len("mk-1", 0), 0);
        let parts = Parts::parse(&blob).expect("minimal blob");
        assert_eq!(parts.key_id, "mk-1");
        assert_eq!(parts.ciphertext.len(), TAG_LEN);
        blob.pop();
        assert!(matches!(Parts::parse(&blob), Err(SealError::Malformed(_))));
    }
}
