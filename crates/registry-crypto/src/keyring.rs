//! [`KeyRing`]: the master keys, and sealing and opening blobs with them.

use std::fmt;

use registry_core::ports::sealer::{SealContext, SealError, Sealer};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::blob::{self, NONCE_LEN, Parts, Purpose};
use crate::error::KeyError;
use crate::key::{KEY_LEN, MasterKey};

/// Several master keys at once: the primary seals new blobs, every key opens
/// the blobs that name it. `Debug` shows key ids only.
pub struct KeyRing {
    primary: MasterKey,
    older: Vec<MasterKey>,
    rng: SystemRandom,
}

impl KeyRing {
    /// Keys are distinct (the loaders refuse duplicates).
    pub(crate) fn new(primary: MasterKey, older: Vec<MasterKey>) -> Self {
        Self {
            primary,
            older,
            rng: SystemRandom::new(),
        }
    }

    /// A ring of one fresh key that exists only in memory: what it seals is
    /// lost with it. For tests and throwaway instances.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let (key, _text) = MasterKey::generate(&SystemRandom::new())?;
        Ok(Self::new(key, Vec::new()))
    }

    /// The ids of all keys, primary first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys().map(MasterKey::id)
    }

    fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.primary).chain(&self.older)
    }

    fn find(&self, key_id: &str) -> Option<&MasterKey> {
        self.keys().find(|key| key.id() == key_id)
    }

    fn random<const N: usize>(&self) -> Result<Zeroizing<[u8; N]>, SealError> {
        let mut bytes = Zeroizing::new([0_u8; N]);
        self.rng
            .fill(bytes.as_mut())
            .map_err(|_| SealError::Crypto("the system random generator failed".into()))?;
        Ok(bytes)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("primary", &self.primary.id())
            .field("older", &self.older.iter().map(MasterKey::id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn cipher_failure(what: &str) -> impl FnOnce(ring::error::Unspecified) -> SealError {
    move |_| SealError::Crypto(format!("AES-256-GCM failed to {what}"))
}

/// Encrypts `blob[start..]` in place and appends the tag.
fn seal_tail(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: Vec<u8>,
    blob: &mut Vec<u8>,
    start: usize,
    what: &str,
) -> Result<(), SealError> {
    let tail = blob
        .get_mut(start..)
        .ok_or_else(|| SealError::Crypto("blob shorter than expected".into()))?;
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), tail)
        .map_err(cipher_failure(what))?;
    blob.extend_from_slice(tag.as_ref());
    Ok(())
}

impl Sealer for KeyRing {
    fn seal(&self, context: SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let master = &self.primary;
        let key_id = master.id();
        let data_key = self.random::<KEY_LEN>()?;
        let wrap_nonce = *self.random::<NONCE_LEN>()?;
        let data_nonce = *self.random::<NONCE_LEN>()?;
        let data_aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, data_key.as_ref()).map_err(cipher_failure("accept a data key"))?,
        );

        // Built in place at its final size; wiped if anything fails midway.
        let mut blob = Zeroizing::new(Vec::with_capacity(blob::sealed_len(key_id, plaintext.len())));
        blob::write_header(&mut blob, key_id)?;
        blob.extend_from_slice(&wrap_nonce);
        let start = blob.len();
        blob.extend_from_slice(data_key.as_ref());
        let wrap_aad = blob::aad(Purpose::WrapKey, key_id, context);
        seal_tail(master.aead(), wrap_nonce, wrap_aad, &mut blob, start, "wrap a data key")?;
        blob.extend_from_slice(&data_nonce);
        let start = blob.len();
        blob.extend_from_slice(plaintext);
        let data_aad = blob::aad(Purpose::Data, key_id, context);
        seal_tail(&data_aead, data_nonce, data_aad, &mut blob, start, "seal")?;
        Ok(std::mem::take(&mut *blob))
    }

    fn open(&self, context: SealContext<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parts = Parts::parse(blob)?;
        let key_id = parts.key_id;
        let master = self
            .find(key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let unauthentic = |_| SealError::Unauthentic(key_id.to_owned());

        let mut data_key = Zeroizing::new(*parts.wrapped_key);
        let data_key = master
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(parts.wrap_nonce),
                Aad::from(blob::aad(Purpose::WrapKey, key_id, context)),
                data_key.as_mut(),
            )
            .map_err(unauthentic)?;
        let data_aead =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key).map_err(cipher_failure("accept a data key"))?);

        let mut plaintext = Zeroizing::new(parts.ciphertext.to_vec());
        let len = data_aead
            .open_in_place(
                Nonce::assume_unique_for_key(parts.data_nonce),
                Aad::from(blob::aad(Purpose::Data, key_id, context)),
                &mut plaintext,
            )
            .map_err(unauthentic)?
            .len();
        plaintext.truncate(len);
        Ok(plaintext)
    }

    fn primary_key_id(&self) -> &str {
        self.primary.id()
    }

    fn has_key(&self, key_id: &str) -> bool {
        self.find(key_id).is_some()
    }

    fn key_id_of(&self, blob: &[u8]) -> Result<String, SealError> {
        Parts::parse(blob).map(|parts| parts.key_id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use registry_core::RegistryKind;

    use super::*;
    use crate::generate_key;

    const CONTEXT: SealContext<'static> = SealContext {
        registry_id: "reg-a",
        kind: RegistryKind::Ghcr,
    };

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::from_env_value(&keys.join(",")).expect("valid keys")
    }

    fn key() -> Zeroizing<String> {
        generate_key().expect("random")
    }

    fn is_unauthentic(result: Result<Zeroizing<Vec<u8>>, SealError>, key_id: &str) -> bool {
        matches!(result, Err(SealError::Unauthentic(id)) if id == key_id)
    }

    #[test]
    fn round_trip_through_the_port() {
        let ring = KeyRing::ephemeral().expect("random");
        let sealer: Arc<dyn Sealer> = Arc::new(ring);
        for plaintext in [&b""[..], b"x", &[0xa5; 4096]] {
            let blob = sealer.seal(CONTEXT, plaintext).expect("seal");
            assert_eq!(blob.len(), blob::sealed_len(sealer.primary_key_id(), plaintext.len()));
            assert_eq!(blob[0], blob::FORMAT_VERSION);
            assert_eq!(sealer.key_id_of(&blob).expect("key id"), sealer.primary_key_id());
            assert_eq!(sealer.open(CONTEXT, &blob).expect("open").as_slice(), plaintext);
        }
        assert!(sealer.has_key(sealer.primary_key_id()));
        assert!(!sealer.has_key("mk-0000000000000000"));
    }

    #[test]
    fn every_seal_uses_a_fresh_data_key_and_nonces() {
        let ring = KeyRing::ephemeral().expect("random");
        let a = ring.seal(CONTEXT, b"same secret").expect("seal");
        let b = ring.seal(CONTEXT, b"same secret").expect("seal");
        let (a, b) = (Parts::parse(&a).expect("parse"), Parts::parse(&b).expect("parse"));
        assert_ne!(a.wrap_nonce, b.wrap_nonce);
        assert_ne!(a.data_nonce, b.data_nonce);
        assert_ne!(a.wrapped_key, b.wrapped_key);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn blob_is_bound_to_registry_and_kind() {
        let ring = KeyRing::ephemeral().expect("random");
        let id = ring.primary_key_id().to_owned();
        let blob = ring.seal(CONTEXT, b"secret").expect("seal");
        let other_registry = SealContext {
            registry_id: "reg-b",
            ..CONTEXT
        };
        assert!(is_unauthentic(ring.open(other_registry, &blob), &id));
        for kind in RegistryKind::ALL.into_iter().filter(|&kind| kind != CONTEXT.kind) {
            assert!(is_unauthentic(ring.open(SealContext { kind, ..CONTEXT }, &blob), &id));
        }
    }

    #[test]
    fn any_changed_bit_or_length_fails() {
        let ring = KeyRing::ephemeral().expect("random");
        let blob = ring.seal(CONTEXT, b"hi").expect("seal");
        for position in 0..blob.len() {
            for bit in 0..8 {
                let mut tampered = blob.clone();
                tampered[position] ^= 1 << bit;
                assert!(ring.open(CONTEXT, &tampered).is_err(), "byte {position} bit {bit}");
            }
        }
        for len in 0..blob.len() {
            assert!(ring.open(CONTEXT, &blob[..len]).is_err(), "truncated to {len}");
        }
        let mut extended = blob.clone();
        extended.push(0);
        assert!(ring.open(CONTEXT, &extended).is_err());
        assert!(ring.open(CONTEXT, &blob).is_ok());
    }

    /// Tampering fails with an error that says which kind it is, in the
    /// style of Vault's barrier tests: the header (version, key id length)
    /// is malformed; another key id is unknown; a changed bit in the wrap
    /// nonce, wrapped key, data nonce, ciphertext or tag does not
    /// authenticate; the same blob on another registry's row does not
    /// authenticate either.
    #[test]
    fn each_kind_of_tamper_has_its_own_error() {
        let ring = KeyRing::ephemeral().expect("random");
        let id = ring.primary_key_id().to_owned();
        let blob = ring.seal(CONTEXT, b"secret").expect("seal");
        let flipped = |position: usize| {
            let mut tampered = blob.clone();
            tampered[position] ^= 0x01;
            ring.open(CONTEXT, &tampered)
        };
        let key_id_start = 2;
        let wrap_nonce = key_id_start + id.len();
        let wrapped_key = wrap_nonce + NONCE_LEN;
        let data_nonce = wrapped_key + blob::WRAPPED_KEY_LEN;
        let ciphertext = data_nonce + NONCE_LEN;
        let tag = blob.len() - blob::TAG_LEN;

        assert!(matches!(flipped(0), Err(SealError::Malformed(_))), "version");
        // A key id length of zero, or past the end, is malformed; one
        // shorter by a byte names a key id of no configured key.
        for len in [0, u8::MAX] {
            let mut tampered = blob.clone();
            tampered[1] = len;
            assert!(
                matches!(ring.open(CONTEXT, &tampered), Err(SealError::Malformed(_))),
                "key id length {len}"
            );
        }
        assert!(matches!(flipped(1), Err(SealError::UnknownKey(_))), "key id length");
        // The last character of the id flipped: a well-formed id of no
        // configured key.
        let last = wrap_nonce - 1;
        assert!(
            matches!(flipped(last), Err(SealError::UnknownKey(other)) if other != id),
            "key id"
        );
        for (region, position) in [
            ("wrap nonce", wrap_nonce),
            ("wrapped key", wrapped_key),
            ("data nonce", data_nonce),
            ("ciphertext", ciphertext),
            ("tag", tag),
            ("last tag byte", blob.len() - 1),
        ] {
            assert!(is_unauthentic(flipped(position), &id), "{region}");
        }
        let moved = SealContext {
            registry_id: "reg-b",
            ..CONTEXT
        };
        assert!(
            is_unauthentic(ring.open(moved, &blob), &id),
            "moved to another registry"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let ring = KeyRing::ephemeral().expect("random");
        for garbage in [&b""[..], b"{\"token\":\"x\"}", &[1, 19]] {
            assert!(matches!(ring.open(CONTEXT, garbage), Err(SealError::Malformed(_))));
            assert!(matches!(ring.key_id_of(garbage), Err(SealError::Malformed(_))));
        }
    }

    #[test]
    fn rotation_opens_old_blobs_and_seals_with_the_primary() {
        let (a, b) = (key(), key());
        let ring_a = ring(&[&a]);
        let ring_b = ring(&[&b]);
        let blob_a = ring_a.seal(CONTEXT, b"old").expect("seal");

        assert_eq!(
            ring_b.open(CONTEXT, &blob_a).err(),
            Some(SealError::UnknownKey(ring_a.primary_key_id().to_owned())),
        );

        let rotated = ring(&[&b, &a]);
        assert_eq!(rotated.primary_key_id(), ring_b.primary_key_id());
        assert_eq!(
            rotated.key_ids().collect::<Vec<_>>(),
            [ring_b.primary_key_id(), ring_a.primary_key_id()]
        );
        assert_eq!(rotated.open(CONTEXT, &blob_a).expect("open").as_slice(), b"old");
        let blob_b = rotated.seal(CONTEXT, b"new").expect("seal");
        assert_eq!(rotated.key_id_of(&blob_b).expect("key id"), ring_b.primary_key_id());
        assert_eq!(ring_b.open(CONTEXT, &blob_b).expect("open").as_slice(), b"new");
        assert!(matches!(ring_a.open(CONTEXT, &blob_b), Err(SealError::UnknownKey(_))));
    }

    #[test]
    fn a_key_with_a_forged_id_does_not_open() {
        // A blob relabelled with another configured key's id fails to authenticate.
        let (a, b) = (key(), key());
        let both = ring(&[&a, &b]);
        let blob = ring(&[&b]).seal(CONTEXT, b"secret").expect("seal");
        let mut relabelled = blob.clone();
        let (id_a, id_b) = (
            both.primary_key_id().to_owned(),
            ring(&[&b]).primary_key_id().to_owned(),
        );
        relabelled[2..2 + id_a.len()].copy_from_slice(id_a.as_bytes());
        assert!(both.open(CONTEXT, &blob).is_ok());
        assert!(is_unauthentic(both.open(CONTEXT, &relabelled), &id_a));
        assert_ne!(id_a, id_b);
    }

    /// A version 1 blob sealed by an earlier build (and opened independently
    /// with Python's `cryptography` from the documented format): every later
    /// build must keep opening it.
    #[test]
    fn opens_a_pinned_version_1_blob() {
        let ring = ring(&["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]);
        let blob = hex(PINNED_BLOB);
        assert_eq!(ring.primary_key_id(), "mk-d7e68abdd52cbdfc");
        assert_eq!(ring.key_id_of(&blob).expect("key id"), ring.primary_key_id());
        assert_eq!(ring.open(CONTEXT, &blob).expect("open").as_slice(), b"pinned secret");
    }

    const PINNED_BLOB: &str = concat!(
        "01136d6b2d64376536386162646435326362646663de5eaee66aae697f02a74d2a99",
        "4380210ae91457f4d5044ef8eaea0abff52a7ff674fc3476f81c4009b2c7bc5f9ee6",
        "b11a41bae4a6669530ec1dfcf17e7ceaa87c2f9645a2b7ca0232d0867523e6bbb2f8",
        "f0f412dedf957b8adcbcb27a414dc183b6e7fda3",
    );

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let text = key();
        let ring = ring(&[&text]);
        let debug = format!("{ring:?}");
        assert!(debug.contains(ring.primary_key_id()), "{debug}");
        assert!(!debug.contains(text.as_str()), "{debug}");
        assert!(!debug.contains(&text[..8]), "{debug}");
    }
}
