//! Load limits of the real server: a principal beyond its request rate, and
//! a server at its limit of requests in flight, are refused at once with
//! RESOURCE_EXHAUSTED and a google.rpc.RetryInfo; other principals and
//! health checks are not.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use registry_e2e::cluster::{Cluster, kubernetes};
use registry_e2e::{TestServer, default_config};
use registry_testkit::kube_api::{RequestMatch, Verb};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

/// The RetryInfo delay of a RESOURCE_EXHAUSTED status.
fn retry_delay(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo with a delay")
}

#[tokio::test]
async fn a_principal_beyond_its_rate_is_refused_with_retry_info_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config(dir.path());
    config.limits.principal_requests_per_second = 1;
    config.limits.principal_burst = 3;
    let server = TestServer::start_with(config).await.unwrap();
    let mut alice = server.caller("alice", "acme").await;
    for _ in 0..3 {
        alice.list().await.unwrap();
    }
    let refused = alice.list().await.unwrap_err();
    let delay = retry_delay(&refused);
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(1), "{delay:?}");
    assert!(
        refused.message().contains("limits.principal_requests_per_second"),
        "{}",
        refused.message()
    );
    // Another subject, and the same name in another organization, have
    // their own rates.
    server.caller("bob", "acme").await.list().await.unwrap();
    server.caller("alice", "globex").await.list().await.unwrap();
}

#[tokio::test]
async fn a_server_at_its_limit_of_requests_in_flight_sheds_the_next_but_answers_health_checks() {
    let cluster = Cluster::start_with(|config| config.limits.max_concurrent_requests = 1).await;
    let registry = cluster.ghcr_registry().await;
    // The one request in flight: a deploy whose Secret write the API server
    // holds.
    let hold = cluster
        .sim
        .hold(RequestMatch::any().verb(Verb::Create).resource("secrets"));
    let mut deployer = cluster.deployer().await;
    let id = registry.id.clone();
    let deploy = tokio::spawn(async move {
        deployer
            .prepare("api", "production", "k8s", &id, "ghcr.io/myorg/api", "v1")
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), hold.arrived(1))
        .await
        .expect("the deploy reached the API server");

    let refused = cluster.caller().await.list().await.unwrap_err();
    assert_eq!(retry_delay(&refused), Duration::from_millis(100));
    assert!(
        refused.message().contains("limits.max_concurrent_requests"),
        "{}",
        refused.message()
    );
    let health = HealthClient::new(cluster.server.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    hold.release();
    let prepared = deploy.await.unwrap().unwrap();
    assert_eq!(kubernetes(&prepared).image_pull_secrets.len(), 1);
    // The permit went with the finished call.
    cluster.caller().await.list().await.unwrap();
}
