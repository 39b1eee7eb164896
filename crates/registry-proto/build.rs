//! Generates the gRPC code from `proto/` with protox, so no system `protoc` is
//! needed, and writes the file descriptor set that feeds server reflection.

use std::path::PathBuf;

use prost::Message;

/// Kept in step with the `redacted_debug!` list in src/lib.rs.
const SECRET_MESSAGES: &[&str] = &[
    "GhcrCredentials",
    "DockerCredentials",
    "EcrCredentials",
    "AcrCredentials",
    "GcrCredentials",
    "GarCredentials",
    "QuayCredentials",
    "CustomCredentials",
    "SwarmDeployment",
    "ResolvePullCredentialsResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "platform/registry/v1/registry.proto",
        "platform/registry/v1/deploy.proto",
    ];
    let fds = protox::compile(files, [&root])?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Messages that carry credentials get a Debug that prints none of
        // them (src/lib.rs), so a stray `{:?}` cannot leak one.
        .skip_debug(
            SECRET_MESSAGES
                .iter()
                .map(|name| format!(".platform.registry.v1.{name}")),
        )
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
