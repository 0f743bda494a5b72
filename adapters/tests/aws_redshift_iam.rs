//! The Redshift wire transport with IAM temporary credentials instead of a password: the
//! credentials come from the emulator's `GetClusterCredentials` for the URL's user, the
//! connections log in with them (to PostgreSQL, which speaks the same protocol and, with trust
//! authentication, takes any password for an existing role), and new ones are fetched in the
//! background before they expire.

mod support;

use std::time::Duration;

use microbatch_adapters::warehouse::redshift::transport::Transport;
use microbatch_adapters::warehouse::redshift::wire::{WireOptions, WireTransport};
use sqlx::Executor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_credentials_log_in_and_are_refreshed() {
    let aws = support::aws().await;
    let cluster = support::unique("mb-cluster");
    aws_sdk_redshift::Client::new(aws.sdk())
        .create_cluster()
        .cluster_identifier(&cluster)
        .node_type("ra3.xlplus")
        .master_username("admin")
        .master_user_password("Password1")
        .send()
        .await
        .unwrap();
    // Redshift names the user `IAM:<user>` (auto_create off); PostgreSQL needs that role.
    let pg = support::database_url();
    let admin = sqlx::PgPool::connect(&pg).await.unwrap();
    admin
        .execute(r#"DO $$ BEGIN CREATE ROLE "IAM:loader" LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"#)
        .await
        .unwrap();
    let (_, host_and_db) = pg.split_once('@').expect("postgres://user@host:port/db");
    let url = format!("redshift://loader@{host_and_db}?iam_cluster={cluster}");
    let options = WireOptions {
        max_connections: 2,
        timeout: Duration::from_secs(30),
        refresh_every: Some(Duration::from_millis(200)),
    };
    let wire = WireTransport::connect(&url, options, Some(&aws)).await.unwrap();
    let who = wire.query("SELECT current_user").await.unwrap();
    assert_eq!(who, vec![vec![Some("IAM:loader".to_owned())]]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wire.refreshes() < 2 {
        assert!(std::time::Instant::now() < deadline, "no refresh within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A connection opened after the refresh logs in with the new credentials.
    wire.close().await;
    let options = WireOptions {
        max_connections: 1,
        timeout: Duration::from_secs(30),
        refresh_every: None,
    };
    let again = WireTransport::connect(&url, options, Some(&aws)).await.unwrap();
    assert_eq!(
        again.query("SELECT current_user").await.unwrap()[0][0].as_deref(),
        Some("IAM:loader")
    );

    // No such cluster: refused by name, before any connection.
    let url = format!("redshift://loader@{host_and_db}?iam_cluster=no-such-cluster");
    let options = WireOptions {
        max_connections: 1,
        timeout: Duration::from_secs(30),
        refresh_every: None,
    };
    let e = WireTransport::connect(&url, options, Some(&aws))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("GetClusterCredentials") && e.message.contains("no-such-cluster"),
        "{e}"
    );
}
