//! Envelope encryption at rest for registry credentials: [`KeyRing`], the
//! implementation of the [`Sealer`](registry_core::ports::sealer::Sealer) port.
//!
//! # Envelope
//!
//! Every [`seal`](registry_core::ports::sealer::Sealer::seal) draws a fresh random
//! 256-bit data key and encrypts the plaintext under it with AES-256-GCM and a
//! random 96-bit nonce. The data key is then wrapped (AES-256-GCM, its own
//! random nonce) by the ring's primary master key. Only the wrapped data key
//! is stored; the blob names the master key that wrapped it, so a ring holding
//! several master keys opens blobs sealed under any of them.
//!
//! # Blob format, version 1
//!
//! All lengths are in bytes; `L` is the length of the master key id, `N` the
//! length of the plaintext.
//!
//! ```text
//! offset   size    field
//! 0        1       format version: 0x01
//! 1        1       L, length of the master key id (1..=255)
//! 2        L       master key id, printable ASCII (`mk-` + 16 hex digits)
//! 2+L      12      wrap nonce
//! 14+L     48      wrapped data key: AES-256-GCM(master key, data key) ‖ 16-byte tag
//! 62+L     12      data nonce
//! 74+L     N+16    ciphertext: AES-256-GCM(data key, plaintext) ‖ 16-byte tag
//! ```
//!
//! Both encryptions authenticate the same associated data, apart from a
//! purpose byte, with every variable-length field prefixed by its length as
//! a big-endian `u64`:
//!
//! ```text
//! version (1) ‖ purpose (1: 'K' for the wrap, 'D' for the data)
//!   ‖ len ‖ master key id ‖ len ‖ registry id ‖ len ‖ kind type key (`GHCR`, `Docker`, ...)
//! ```
//!
//! So a blob opens only for the registry id and kind it was sealed for, under
//! the master key it names, as the format version it claims; any changed byte
//! fails authentication.
//!
//! # Master keys
//!
//! A master key is 32 random bytes written as standard base64 (44 characters,
//! see [`generate_key`]). Its id is `mk-` and the first 16 hex digits of
//! SHA-256 over a domain-separation label and the key: derived from the key
//! material, so an id always names the same key and cannot be mislabelled.
//! Keys come from a key file ([`KeyRing::from_key_file`]), a comma-separated
//! value such as [`MASTER_KEYS_ENV`] ([`KeyRing::from_env_value`]), or, for
//! the embedded default, a file generated in the data directory on first
//! start ([`KeyRing::load_or_generate`]). The first key is primary: new blobs
//! are sealed under it; the others only open older blobs, which is how a
//! master key is rotated (open with the old key, seal with the new one).
//!
//! # Modules
//!
//! - `blob`: the byte layout and associated data of the format;
//! - `key`: one master key, key ids, key generation;
//! - `keyring`: [`KeyRing`] and its `Sealer` implementation;
//! - `load`: reading master keys from files and values;
//! - `error`: [`KeyError`], why master keys could not be loaded.

mod blob;
mod error;
mod key;
mod keyring;
mod load;

pub use blob::FORMAT_VERSION;
pub use error::{KeyError, KeyOrigin, Location};
pub use key::{KEY_LEN, generate_key};
pub use keyring::KeyRing;
pub use load::{KeyFileStatus, MASTER_KEY_FILE, MASTER_KEYS_ENV};
