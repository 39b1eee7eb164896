//! The `platform.registry.v1` contract: messages, the gRPC client and server
//! traits, and the encoded file descriptor set for server reflection.

#![allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]

/// `platform.registry.v1`, generated from `proto/` at build time.
pub mod v1 {
    tonic::include_proto!("platform.registry.v1");
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
