//! The `platform.registry.v1` contract: messages, the gRPC client and server
//! traits, and the encoded file descriptor set for server reflection.

#![allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]

/// `platform.registry.v1`, generated from `proto/` at build time.
pub mod v1 {
    tonic::include_proto!("platform.registry.v1");
}

/// A `Debug` that shows a message's non-secret fields and only the names of
/// its secret ones.
macro_rules! redacted_debug {
    ($($message:ident { shown: [$($shown:ident),*], redacted: [$($redacted:ident),*] })*) => {
        $(
            impl std::fmt::Debug for v1::$message {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct(stringify!($message))
                        $(.field(stringify!($shown), &self.$shown))*
                        $(.field(stringify!($redacted), &"[REDACTED]"))*
                        .finish()
                }
            }
        )*
    };
}

redacted_debug! {
    GhcrCredentials { shown: [username], redacted: [token] }
    DockerCredentials { shown: [username], redacted: [password] }
    EcrCredentials { shown: [region], redacted: [access_key_id, secret_access_key, session_token] }
    AcrCredentials { shown: [login_server, username], redacted: [password] }
    GcrCredentials { shown: [], redacted: [service_account_key] }
    GarCredentials { shown: [region], redacted: [service_account_key] }
    QuayCredentials { shown: [username], redacted: [token] }
    CustomCredentials { shown: [url, username, ca_bundle], redacted: [password] }
    SwarmDeployment { shown: [], redacted: [registry_auth] }
    ResolvePullCredentialsResponse {
        shown: [server, docker_config_key, username, expire_time, credential_revision],
        redacted: [password, identity_token, docker_config_json]
    }
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
