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
use registry_core::ports::orchestrators::{SecretVersion, TargetError};
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

    /// Sends `registry_auth` (verbatim) as service `name`'s stored login with
    /// its spec exactly as inspected, at the inspected version (a concurrent
    /// update is a [`TargetError::Conflict`]). The manager re-runs no task
    /// for a change of the login alone; tasks scheduled later get it. The
    /// service's image must be on `server`, so a login never reaches a
    /// service pulling from another registry. Returns the service id and
    /// the version it was updated from.
    pub async fn update_service_login(
        &self,
        name: &str,
        server: &str,
        registry_auth: &str,
    ) -> Result<SecretVersion, TargetError> {
        let action = format!("updating the registry login of service {name:?}");
        let docker = self.docker().await?;
        let service = docker
            .inspect_service(name, None)
            .await
            .map_err(|e| self.engine_error(&action, e))?;
        let index = service.version.and_then(|v| v.index).unwrap_or_default();
        let version = i32::try_from(index).map_err(|_| {
            TargetError::Other(format!(
                "{action}: version {index} of the service is beyond what bollard can send back"
            ))
        })?;
        let spec = service.spec.unwrap_or_default();
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.as_deref())
            .unwrap_or_default();
        let pulls_from_server = ImageReference::parse(image).is_ok_and(|image| image.matches_server(server));
        if !pulls_from_server {
            return Err(TargetError::Other(format!(
                "{action}: its image {image:?} is not on {server}, the registry whose login it would get"
            )));
        }
        let options = UpdateServiceOptionsBuilder::default().version(version).build();
        self.docker_with_registry_auth(registry_auth)
            .await?
            .update_service(name, spec, options, None)
            .await
            .map_err(|e| match self.engine_error(&action, e) {
                // Swarm answers a stale version with "update out of sequence".
                TargetError::Other(detail) if detail.contains("out of sequence") => {
                    TargetError::Conflict(format!("service {name:?}"))
                }
                other => other,
            })?;
        Ok(SecretVersion {
            uid: service.id.unwrap_or_default(),
            resource_version: index.to_string(),
        })
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
