//! The hand-outs on the hot path and their audit trail, on SQLite and
//! PostgreSQL: every successful hand-out is exactly one audit row (the
//! group commit shares commits, never drops or doubles an event); when the
//! audit cannot be written the hand-out fails UNAVAILABLE and hands out
//! nothing; a repeat deploy is audited and asks the API server nothing.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use registry_e2e::cluster::{Cluster, TOKEN, kubernetes};
use registry_testkit::kube_api::Verb;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tonic::Code;

/// Where the server's rows are: its SQLite file, or the test's PostgreSQL.
async fn database(cluster: &Cluster, postgres: Option<&str>) -> DatabaseConnection {
    let url = match postgres {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", cluster.server.data_dir().join("registry.db").display()),
    };
    Database::connect(url).await.unwrap()
}

async fn audited(db: &DatabaseConnection, action: &str) -> i64 {
    let row = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT count(*) AS n FROM audit_events WHERE action = '{action}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// A cluster on SQLite, or on a fresh PostgreSQL database (`None` when the
/// test's PostgreSQL is missing and the test is skipped).
async fn cluster(postgres: bool) -> Option<(Cluster, Option<String>)> {
    if !postgres {
        return Some((Cluster::start().await, None));
    }
    let url = registry_testkit::postgres_database().await?;
    let database = url.clone();
    let cluster = Cluster::start_with(move |config| config.database_url = Some(database)).await;
    Some((cluster, Some(url)))
}

async fn every_hand_out_is_one_audit_row(postgres: bool) {
    let Some((cluster, url)) = cluster(postgres).await else {
        return;
    };
    let registry = cluster.ghcr_registry().await;
    let db = database(&cluster, url.as_deref()).await;
    let deployer = cluster.deployer().await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let mut deployer = deployer.clone();
        let id = registry.id.clone();
        calls.spawn(async move { deployer.resolve(&id).await });
    }
    for answer in calls.join_all().await {
        assert_eq!(answer.unwrap().password, TOKEN);
    }
    assert_eq!(audited(&db, "credentials.resolve").await, 200);
}

async fn a_hand_out_the_audit_cannot_record_fails_closed(postgres: bool) {
    let Some((cluster, url)) = cluster(postgres).await else {
        return;
    };
    let registry = cluster.ghcr_registry().await;
    let db = database(&cluster, url.as_deref()).await;
    let mut deployer = cluster.deployer().await;
    deployer.resolve(&registry.id).await.unwrap();

    let refuse: &[&str] = if postgres {
        &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit()",
        ]
    } else {
        &[
            "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END",
        ]
    };
    for sql in refuse {
        db.execute_unprepared(sql).await.unwrap();
    }
    let refused = deployer.resolve(&registry.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(!refused.message().contains(TOKEN));
    // The registry was resolvable from the cache: only the audit failed.
    let prepared = deployer
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap_err();
    assert_eq!(prepared.code(), Code::Unavailable, "{prepared:?}");
    assert!(
        cluster.sim.secrets("env-production").is_empty(),
        "no Secret without its audit event"
    );
    assert_eq!(audited(&db, "credentials.resolve").await, 1);

    db.execute_unprepared("DROP TRIGGER audit_refused ON audit_events")
        .await
        .or(db.execute_unprepared("DROP TRIGGER audit_refused").await)
        .unwrap();
    assert_eq!(deployer.resolve(&registry.id).await.unwrap().password, TOKEN);
    assert_eq!(audited(&db, "credentials.resolve").await, 2);
}

async fn a_repeat_deploy_is_audited_and_asks_the_api_server_nothing(postgres: bool) {
    let Some((cluster, url)) = cluster(postgres).await else {
        return;
    };
    let registry = cluster.ghcr_registry().await;
    let db = database(&cluster, url.as_deref()).await;
    let mut deployer = cluster.deployer().await;
    let first = deployer
        .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
        .await
        .unwrap();
    let secret = kubernetes(&first).image_pull_secrets[0].clone();
    // Until the watch has delivered the Secret that prepare wrote, a repeat
    // deploy confirms it with one read; wait for the first that needs none.
    let mut prepares = 1;
    loop {
        cluster.sim.reset_stats();
        deployer
            .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
        prepares += 1;
        if cluster
            .sim
            .stats()
            .requests
            .keys()
            .all(|(verb, _)| *verb == Verb::Watch)
        {
            break;
        }
        assert!(prepares < 100, "the watch never delivered {secret}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let version = cluster
        .sim
        .secret("env-production", &secret)
        .unwrap()
        .metadata
        .resource_version;

    cluster.sim.reset_stats();
    for _ in 0..20 {
        let again = deployer
            .prepare("api", "production", "k8s", &registry.id, "ghcr.io/myorg/api", "v1")
            .await
            .unwrap();
        assert_eq!(again, first);
    }
    let requests = cluster.sim.stats().requests;
    let asked: Vec<_> = requests.iter().filter(|((verb, _), _)| *verb != Verb::Watch).collect();
    assert!(asked.is_empty(), "repeat deploys asked the API server: {asked:?}");
    assert_eq!(
        cluster
            .sim
            .secret("env-production", &secret)
            .unwrap()
            .metadata
            .resource_version,
        version,
        "and wrote nothing"
    );
    assert_eq!(audited(&db, "deployment.prepare").await, prepares + 20);
}

#[tokio::test]
async fn sqlite_every_hand_out_is_one_audit_row() {
    every_hand_out_is_one_audit_row(false).await;
}

#[tokio::test]
async fn postgres_every_hand_out_is_one_audit_row() {
    every_hand_out_is_one_audit_row(true).await;
}

#[tokio::test]
async fn sqlite_a_hand_out_the_audit_cannot_record_fails_closed() {
    a_hand_out_the_audit_cannot_record_fails_closed(false).await;
}

#[tokio::test]
async fn postgres_a_hand_out_the_audit_cannot_record_fails_closed() {
    a_hand_out_the_audit_cannot_record_fails_closed(true).await;
}

#[tokio::test]
async fn sqlite_a_repeat_deploy_is_audited_and_asks_the_api_server_nothing() {
    a_repeat_deploy_is_audited_and_asks_the_api_server_nothing(false).await;
}

#[tokio::test]
async fn postgres_a_repeat_deploy_is_audited_and_asks_the_api_server_nothing() {
    a_repeat_deploy_is_audited_and_asks_the_api_server_nothing(true).await;
}
