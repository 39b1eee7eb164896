//! What the tests of the real binary share: acme's principal, GHCR
//! credentials, a free port, and creating a registry.

#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;

use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::transport::Channel;
use tonic::{IntoRequest, Request};

pub(crate) const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
pub(crate) const NEW_TOKEN: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn ghcr(token: &str) -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: "myorg".into(),
            token: token.into(),
        })),
    }
}

pub(crate) fn as_acme<T>(message: T) -> Request<T> {
    let mut request = message.into_request();
    let metadata = request.metadata_mut();
    metadata.insert("x-user", "alice".parse().unwrap());
    metadata.insert("x-org", "acme".parse().unwrap());
    metadata.insert("x-roles", "writer,deployer".parse().unwrap());
    request
}

/// acme's GHCR registry "My GHCR" with [`TOKEN`].
pub(crate) async fn create_registry(channel: Channel) -> pb::Registry {
    RegistryServiceClient::new(channel)
        .create_registry(as_acme(pb::CreateRegistryRequest {
            registry: Some(pb::Registry {
                name: "My GHCR".into(),
                r#type: pb::RegistryType::Ghcr.into(),
                credentials: Some(ghcr(TOKEN)),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap()
}
