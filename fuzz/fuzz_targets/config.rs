//! The configuration file: any TOML text is a configuration or a
//! configuration error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_server::config::Config;

fuzz_target!(|text: &str| {
    let _ = Config::from_toml(text);
});
