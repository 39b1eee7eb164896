//! Image references from deploy requests: never a panic; what parses prints
//! back to a reference that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_core::reference::ImageReference;

fuzz_target!(|input: &str| {
    let (name, tag) = input.split_once('\u{0}').unwrap_or((input, ""));
    let _ = ImageReference::from_parts(name, tag, Some("registry.example:5000"));
    let _ = ImageReference::parse_with_default_host(input, Some("ghcr.io"));
    if let Ok(reference) = ImageReference::parse(input) {
        let printed = reference.to_string();
        let again = ImageReference::parse(&printed).expect("a printed reference parses");
        assert_eq!(again.to_string(), printed);
        assert_eq!(again.host(), reference.host());
        assert_eq!(again.repository(), reference.repository());
        let _ = reference.with_default_tag();
    }
});
