//! Sealed blobs as read from the database: any bytes fail to open with an
//! error (malformed, unknown key, not authentic), never a panic, and never
//! open without the key.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use registry_core::RegistryKind;
use registry_core::ports::sealer::{SealContext, Sealer as _};
use registry_crypto::KeyRing;

static RING: LazyLock<KeyRing> = LazyLock::new(|| KeyRing::ephemeral().expect("random"));

fuzz_target!(|blob: &[u8]| {
    let context = SealContext {
        registry_id: "reg-fuzz",
        kind: RegistryKind::Ghcr,
    };
    let _ = RING.key_id_of(blob);
    assert!(RING.open(context, blob).is_err(), "a blob opened without being sealed");
    // A blob sealed here opens, and the input as its plaintext survives.
    let sealed = RING.seal(context, blob).expect("seal");
    assert_eq!(RING.open(context, &sealed).expect("open").as_slice(), blob);
});
