//! A registry's `WWW-Authenticate` challenge during a live connection
//! test: any header value is a challenge or a protocol error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    let _ = registry_login::probe::is_usable_challenge(value);
});
