//! A server with one Kubernetes target, `k8s` (organization `acme`), on a
//! fresh simulated cluster, and what the Kubernetes tests ask of both.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use registry_proto::v1 as pb;
use registry_proto::v1::credentials::Kind;
use registry_proto::v1::prepare_deployment_response::Deployment;
use registry_server::config::Config;
use registry_testkit::kube_api::KubeSim;

use crate::{Caller, Deployer, TestServer, kubernetes_config};

/// The GitHub token a registry is created with.
pub const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
/// The token it is rotated to.
pub const NEW_TOKEN: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";

/// GHCR credentials with `token`.
pub fn ghcr(token: &str) -> pb::Credentials {
    pb::Credentials {
        kind: Some(Kind::Ghcr(pb::GhcrCredentials {
            username: "myorg".into(),
            token: token.into(),
        })),
    }
}

/// The `.dockerconfigjson` a GHCR login with `token` becomes.
pub fn expected_config(token: &str) -> serde_json::Value {
    serde_json::json!({"auths": {"ghcr.io": {
        "username": "myorg",
        "password": token,
        "auth": STANDARD.encode(format!("myorg:{token}")),
    }}})
}

/// What a prepare on a Kubernetes target answered.
pub fn kubernetes(response: &pb::PrepareDeploymentResponse) -> &pb::KubernetesDeployment {
    match &response.deployment {
        Some(Deployment::Kubernetes(k)) => k,
        other => panic!("not a kubernetes deployment: {other:?}"),
    }
}

/// The server and its simulated cluster, which has the namespaces
/// `env-production` and `env-staging`.
#[derive(Debug)]
pub struct Cluster {
    pub sim: KubeSim,
    pub server: TestServer,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// With the configuration changed by `tune` first.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let sim = KubeSim::start().await;
        for namespace in ["env-production", "env-staging"] {
            sim.create_namespace(namespace);
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = kubernetes_config(dir.path(), sim.url());
        tune(&mut config);
        let server = TestServer::start_with(config).await.expect("server starts");
        Self { sim, server, _dir: dir }
    }

    /// The server stopped and started again on the same data.
    pub async fn restart(self) -> Self {
        Self {
            server: self.server.restart().await.expect("server restarts"),
            ..self
        }
    }

    pub async fn caller(&self) -> Caller {
        self.server.caller("alice", "acme").await
    }

    pub async fn deployer(&self) -> Deployer {
        self.server.deployer("ci-bot", "acme").await
    }

    /// A GHCR registry of acme with [`TOKEN`].
    pub async fn ghcr_registry(&self) -> pb::Registry {
        self.caller()
            .await
            .create("My GHCR", pb::RegistryType::Ghcr, Some(ghcr(TOKEN)))
            .await
            .expect("registry created")
    }

    /// The `.dockerconfigjson` of a Secret, parsed; `None` when there is no
    /// such Secret.
    pub fn docker_config_of(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let secret = self.sim.secret(namespace, name)?;
        let bytes = &secret.data?[".dockerconfigjson"].0;
        serde_json::from_slice(bytes).ok()
    }

    /// The `.dockerconfigjson` of a Secret that must exist.
    pub fn docker_config(&self, namespace: &str, name: &str) -> serde_json::Value {
        self.docker_config_of(namespace, name).expect("secret exists")
    }
}
