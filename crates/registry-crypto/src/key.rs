//! One master key, key ids, and key generation.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// The length of a master key (and of a data key) in bytes.
pub const KEY_LEN: usize = 32;

/// Domain separation for key ids: changing it renames every key and orphans
/// every blob, so it is part of the format.
const KEY_ID_LABEL: &[u8] = b"registry-crypto master key id v1\0";

/// A master key: its id and the AES-256-GCM key schedule built from it. The
/// raw bytes are not kept (ring holds its own copy inside [`LessSafeKey`]).
pub(crate) struct MasterKey {
    id: String,
    aead: LessSafeKey,
}

impl MasterKey {
    pub(crate) fn new(material: &[u8; KEY_LEN]) -> Result<Self, ring::error::Unspecified> {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material)?);
        Ok(Self {
            id: key_id(material),
            aead,
        })
    }

    /// Generates a fresh master key; also returns its base64 text.
    pub(crate) fn generate(rng: &SystemRandom) -> Result<(Self, Zeroizing<String>), KeyError> {
        let material = random_material(rng)?;
        let key = Self::new(&material).map_err(|_| KeyError::Random)?;
        Ok((key, Zeroizing::new(STANDARD.encode(&material[..]))))
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn aead(&self) -> &LessSafeKey {
        &self.aead
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MasterKey").field(&self.id).finish()
    }
}

/// `mk-` and the first 16 hex digits of SHA-256(label ‖ key).
pub(crate) fn key_id(material: &[u8; KEY_LEN]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(KEY_ID_LABEL);
    context.update(material);
    let digest = context.finish();
    let hex: String = digest
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("mk-{hex}")
}

/// Decodes one standard-base64 entry into a zeroizing buffer; `None` if it is
/// not base64. The length is not checked here.
pub(crate) fn decode(entry: &str) -> Option<Zeroizing<Vec<u8>>> {
    // Reserve the whole output up front so decoding never reallocates and
    // leaves a copy of key bytes behind in freed memory.
    let mut material = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(entry.len())));
    STANDARD.decode_vec(entry, &mut material).ok()?;
    Some(material)
}

fn random_material(rng: &SystemRandom) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let mut material = Zeroizing::new([0_u8; KEY_LEN]);
    rng.fill(material.as_mut()).map_err(|_| KeyError::Random)?;
    Ok(material)
}

/// A new master key: 32 random bytes as standard base64 (44 characters), for
/// a key file or [`MASTER_KEYS_ENV`](crate::MASTER_KEYS_ENV). The text is
/// wiped from memory when dropped.
pub fn generate_key() -> Result<Zeroizing<String>, KeyError> {
    let material = random_material(&SystemRandom::new())?;
    Ok(Zeroizing::new(STANDARD.encode(&material[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_44_base64_characters_of_32_bytes() {
        let key = generate_key().expect("random");
        assert_eq!(key.len(), 44);
        assert_eq!(decode(&key).expect("base64").len(), KEY_LEN);
        assert_ne!(*key, *generate_key().expect("random"));
    }

    #[test]
    fn key_ids_are_derived_from_the_material_and_pinned() {
        // Pinned: ids are stored in every blob and bound into its AAD.
        assert_eq!(key_id(&[0; KEY_LEN]), "mk-bc942ae30f2f4dfe");
        assert_eq!(key_id(&[0; KEY_LEN]), key_id(&[0; KEY_LEN]));
        assert_ne!(key_id(&[0; KEY_LEN]), key_id(&[1; KEY_LEN]));
    }
}
