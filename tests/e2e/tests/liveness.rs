//! A sync loop that cannot be wedged: a namespace whose writes hang
//! forever and a target asking to wait a day hold back nothing else.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry_e2e::cluster::{Cluster, NEW_TOKEN, expected_config, ghcr};
use registry_proto::v1 as pb;
use registry_testkit::kube_api::RequestMatch;

const NAMESPACES: [&str; 6] = ["a", "b", "c", "d", "e", "hung"];

/// Every namespace has the registry's Secret at revision 1.
async fn deployed_everywhere(cluster: &Cluster) -> String {
    let registry = cluster.ghcr_registry().await;
    let mut deployer = cluster.deployer().await;
    for environment in NAMESPACES {
        cluster.sim.create_namespace(&format!("env-{environment}"));
        deployer
            .prepare(environment, environment, "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
    }
    registry.id
}

async fn rotate(cluster: &Cluster, registry: &str) {
    cluster
        .caller()
        .await
        .rotate(registry, ghcr(NEW_TOKEN), "")
        .await
        .unwrap();
}

fn target<'a>(state: &'a pb::GetRegistrySyncStateResponse, namespace: &str) -> &'a pb::TargetSyncState {
    state.targets.iter().find(|t| t.namespace == namespace).unwrap()
}

#[tokio::test]
async fn a_namespace_whose_writes_hang_holds_back_no_other() {
    let cluster = Cluster::start_with(|config| {
        config.sync.concurrency = 2;
        config.sync.call_timeout_ms = 1_000;
        config.sync.lease_ms = 10_000;
    })
    .await;
    let registry = deployed_everywhere(&cluster).await;
    // Never released: every request there hangs until the client gives up.
    let hung = cluster
        .sim
        .hold(RequestMatch::any().resource("secrets").namespace("env-hung"));
    rotate(&cluster, &registry).await;
    let state = cluster
        .deployer()
        .await
        .wait_for_sync(&registry, Duration::from_secs(10), |s| {
            s.targets
                .iter()
                .filter(|t| t.namespace != "env-hung")
                .all(|t| t.applied_revision == 2 && t.status() == pb::SyncStatus::Synced)
        })
        .await;
    let stuck = target(&state, "env-hung");
    assert_eq!(stuck.applied_revision, 1);
    assert_ne!(stuck.status(), pb::SyncStatus::Synced);
    for environment in NAMESPACES.iter().filter(|e| **e != "hung") {
        let name = &state.targets[0].secret_name;
        assert_eq!(
            cluster.docker_config(&format!("env-{environment}"), name),
            expected_config(NEW_TOKEN)
        );
    }
    // The hung write reaches its deadline and is recorded as a failure,
    // retried later.
    let state = cluster
        .deployer()
        .await
        .wait_for_sync(&registry, Duration::from_secs(10), |s| {
            target(s, "env-hung").status() == pb::SyncStatus::Failed
        })
        .await;
    let stuck = target(&state, "env-hung");
    assert!(
        stuck.error.contains("did not answer") || stuck.error.contains("unreachable"),
        "{stuck:?}"
    );
    assert!(stuck.next_attempt_time.is_some(), "{stuck:?}");
    drop(hung);
}

#[tokio::test]
async fn a_retry_after_of_a_day_is_capped_and_visible_in_the_sync_state() {
    let cluster = Cluster::start().await;
    let registry = deployed_everywhere(&cluster).await;
    cluster.sim.inject_429_on_writes(1, 86_400);
    rotate(&cluster, &registry).await;
    let state = cluster
        .deployer()
        .await
        .wait_for_sync(&registry, Duration::from_secs(10), |s| {
            s.targets.iter().filter(|t| t.applied_revision == 2).count() == NAMESPACES.len() - 1
        })
        .await;
    let throttled: Vec<_> = state.targets.iter().filter(|t| t.applied_revision == 1).collect();
    assert_eq!(throttled.len(), 1, "{state:?}");
    let throttled = throttled[0];
    assert_eq!(throttled.status(), pb::SyncStatus::Pending);
    assert!(
        throttled.error.contains("86400") && throttled.error.contains("300"),
        "{throttled:?}"
    );
    let next = throttled.next_attempt_time.unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let wait = u64::try_from(next.seconds).unwrap().saturating_sub(now);
    assert!((280..=300).contains(&wait), "next attempt in {wait} s");
}
