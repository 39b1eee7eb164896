//! The messages that carry credentials print none of them in `Debug`, also
//! nested in the messages that hold them.

use registry_proto::v1 as pb;

const SECRET: &str = "s3cr3t-marker-4711";

#[test]
fn debug_output_never_holds_a_credential() {
    let kinds = [
        pb::credentials::Kind::Ghcr(pb::GhcrCredentials {
            username: "octo".into(),
            token: SECRET.into(),
        }),
        pb::credentials::Kind::Docker(pb::DockerCredentials {
            username: "octo".into(),
            password: SECRET.into(),
        }),
        pb::credentials::Kind::Ecr(pb::EcrCredentials {
            access_key_id: SECRET.into(),
            secret_access_key: SECRET.into(),
            region: "eu-west-1".into(),
            session_token: SECRET.into(),
            use_server_identity: false,
        }),
        pb::credentials::Kind::Acr(pb::AcrCredentials {
            login_server: "x.azurecr.io".into(),
            username: "octo".into(),
            password: SECRET.into(),
        }),
        pb::credentials::Kind::Gcr(pb::GcrCredentials {
            service_account_key: SECRET.into(),
            login: pb::GoogleLogin::Unspecified.into(),
        }),
        pb::credentials::Kind::Gar(pb::GarCredentials {
            service_account_key: SECRET.into(),
            region: "europe".into(),
            login: pb::GoogleLogin::AccessToken.into(),
        }),
        pb::credentials::Kind::Quay(pb::QuayCredentials {
            username: "org+bot".into(),
            token: SECRET.into(),
        }),
        pb::credentials::Kind::Custom(pb::CustomCredentials {
            url: "https://registry.example.com".into(),
            username: "octo".into(),
            password: SECRET.into(),
            ca_bundle: String::new(),
        }),
    ];
    for kind in kinds {
        let request = pb::TestRegistryConnectionRequest {
            credentials: Some(pb::Credentials { kind: Some(kind) }),
            ..Default::default()
        };
        let printed = format!("{request:?} {request:#?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("[REDACTED]"), "{printed}");
    }
    let response = pb::ResolvePullCredentialsResponse {
        server: "ghcr.io".into(),
        username: "octo".into(),
        password: SECRET.into(),
        identity_token: SECRET.into(),
        docker_config_json: format!("{{\"auths\":{{\"ghcr.io\":{{\"password\":\"{SECRET}\"}}}}}}"),
        ..Default::default()
    };
    let swarm = pb::SwarmDeployment {
        registry_auth: SECRET.into(),
    };
    let printed = format!("{response:?} {swarm:?}");
    assert!(!printed.contains(SECRET), "{printed}");
    assert!(printed.contains("ghcr.io") && printed.contains("octo"), "{printed}");
}
