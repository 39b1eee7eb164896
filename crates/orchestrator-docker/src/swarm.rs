//! Swarm services that pull with a registry login, as
//! `docker service create/update --with-registry-auth` does: the
//! `X-Registry-Auth` value goes with the request, the manager stores it in
//! the service's spec and hands it to the nodes that run its tasks. The
//! engine never refreshes it: a rotated password reaches a service at its
//! next update.
//!
//! Kept small: one replica, the host network, no published ports.

use bollard::models::{
    NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
};
use bollard::query_parameters::UpdateServiceOptionsBuilder;
use registry_core::ports::orchestrators::TargetError;
use registry_core::reference::ImageReference;

use crate::engine::DockerTarget;

/// The network every service made here joins: swarm services cannot use
/// `none`, and overlay networks need the routing mesh.
pub const SERVICE_NETWORK: &str = "host";

impl DockerTarget {
    /// Creates service `name` running `image` (one replica, network
    /// [`SERVICE_NETWORK`], no published ports). `registry_auth` is an
    /// `X-Registry-Auth` value
    /// ([`DockerLogin::registry_auth`](registry_core::login::DockerLogin::registry_auth)),
    /// used verbatim; `None` for a public image. Returns the service id.
    pub async fn create_service(
        &self,
        name: &str,
        image: &ImageReference,
        registry_auth: Option<&str>,
    ) -> Result<String, TargetError> {
        let docker = match registry_auth {
            Some(auth) => self.docker_with_registry_auth(auth).await?,
            None => self.docker().await?,
        };
        let spec = ServiceSpec {
            name: Some(name.to_owned()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.to_string()),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(SERVICE_NETWORK.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let action = format!("creating service {name:?}");
        let created = docker
            .create_service(spec, None)
            .await
            .map_err(|e| self.engine_error(&action, e))?;
        created
            .id
            .ok_or_else(|| TargetError::Other(format!("the Docker engine at {} {action}: no id", self.endpoint())))
    }

    /// Points service `name` at `image`, sending `registry_auth` (verbatim)
    /// as its new stored login; with `None` the service keeps the login it
    /// has. Its tasks roll as the service's update policy says.
    pub async fn update_service_image(
        &self,
        name: &str,
        image: &ImageReference,
        registry_auth: Option<&str>,
    ) -> Result<(), TargetError> {
        let action = format!("updating service {name:?}");
        let docker = self.docker().await?;
        let service = docker
            .inspect_service(name, None)
            .await
            .map_err(|e| self.engine_error(&action, e))?;
        let version = service.version.and_then(|v| v.index).unwrap_or_default();
        // bollard takes the version as i32 while the engine reports a u64.
        let version = i32::try_from(version).map_err(|_| {
            TargetError::Other(format!(
                "{action}: version {version} of the service is beyond what bollard can send back"
            ))
        })?;
        let mut spec = service.spec.unwrap_or_default();
        let task = spec.task_template.get_or_insert_with(Default::default);
        task.container_spec.get_or_insert_with(Default::default).image = Some(image.to_string());
        // Without a new login the engine keeps the stored one (`registryAuthFrom=spec`).
        let options = UpdateServiceOptionsBuilder::default()
            .version(version)
            .registry_auth_from("spec")
            .build();
        let docker = match registry_auth {
            Some(auth) => self.docker_with_registry_auth(auth).await?,
            None => docker,
        };
        docker
            .update_service(name, spec, options, None)
            .await
            .map_err(|e| self.engine_error(&action, e))?;
        Ok(())
    }

    /// Removes service `name`; its tasks' containers go with it.
    pub async fn remove_service(&self, name: &str) -> Result<(), TargetError> {
        self.docker()
            .await?
            .delete_service(name)
            .await
            .map_err(|e| self.engine_error(&format!("removing service {name:?}"), e))
    }
}
