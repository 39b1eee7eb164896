//! Referencing a pull Secret from a namespace's ServiceAccounts, so pods
//! that do not name it still pull with it.

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use registry_core::ports::orchestrators::TargetError;

use crate::errors::{is_conflict, target_error};

/// Read-modify-write attempts per ServiceAccount under concurrent changes.
const ATTEMPTS: usize = 5;

/// Adds `name` to every ServiceAccount of `namespace` that lacks it.
///
/// A ServiceAccount's `imagePullSecrets` is an atomic list: any patch
/// replaces it whole. So each account is read, the name appended, and the
/// whole object replaced under the `resourceVersion` read; a concurrent
/// change (409) is retried on a fresh read. A namespace holds one
/// organization's Secrets only, so only that organization's are added.
pub(crate) async fn reference(client: &Client, namespace: &str, name: &str) -> Result<(), TargetError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let list = accounts
        .list(&ListParams::default())
        .await
        .map_err(|e| target_error(e, namespace))?;
    for account in list {
        let Some(account_name) = account.metadata.name.clone() else {
            continue;
        };
        let mut current = account;
        for _ in 0..ATTEMPTS {
            let references = current.image_pull_secrets.get_or_insert_with(Vec::new);
            if references.iter().any(|r| r.name == name) {
                break;
            }
            references.push(LocalObjectReference { name: name.to_owned() });
            match accounts.replace(&account_name, &PostParams::default(), &current).await {
                Ok(_) => break,
                Err(e) if is_conflict(&e) => {
                    current = accounts
                        .get(&account_name)
                        .await
                        .map_err(|e| target_error(e, namespace))?;
                }
                Err(e) => return Err(target_error(e, namespace)),
            }
        }
    }
    Ok(())
}
