//! Credentials as the store keeps them (JSON plaintext) and the validators
//! every create, update and test runs: never a panic; what reads back
//! writes out the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_core::{Credentials, validate};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = validate::registry_name(text);
    }
    let Ok(credentials) = Credentials::from_plaintext(data) else {
        return;
    };
    let _ = validate::credentials(&credentials);
    let _ = (credentials.server(), credentials.hints(), credentials.ca_bundle());
    let plaintext = credentials.to_plaintext();
    let again = Credentials::from_plaintext(&plaintext).expect("written credentials read back");
    assert_eq!(*again.to_plaintext(), *plaintext);
});
