//! With the `containers` feature, where a Docker engine is reachable: the end-to-end flow of
//! `aws_pipeline.rs` against LocalStack and PostgreSQL containers that testcontainers starts,
//! instead of moto and a local server. Nothing needs it (`./scripts/test` runs on moto); CI only
//! compiles it: `cargo check -p microbatch-adapters --features containers --tests`.
#![cfg(feature = "containers")]

mod support;

use std::time::Duration;

use support::{Pipeline, expected_rows, send_until_accepted, wait_ready};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_localstack_and_a_postgres_container() {
    let localstack = GenericImage::new("localstack/localstack", "4.4")
        .with_exposed_port(4566.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready."))
        .with_env_var("SERVICES", "kinesis,s3,sqs,dynamodb")
        .start()
        .await
        .expect("a Docker engine to start LocalStack in");
    let postgres = GenericImage::new("postgres", "16")
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
        .start()
        .await
        .expect("a Docker engine to start PostgreSQL in");
    let aws_port = localstack.get_host_port_ipv4(4566).await.unwrap();
    let pg_port = postgres.get_host_port_ipv4(5432).await.unwrap();
    support::use_endpoints(
        format!("http://127.0.0.1:{aws_port}"),
        format!("postgres://postgres@127.0.0.1:{pg_port}/postgres"),
    );

    let p = Pipeline::new(2, 30, 5).await;
    let mut producer = p.start("produce", &[]);
    let mut consumer = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    for n in 0..30 {
        send_until_accepted(&p.client, &p.base, n).await;
    }
    p.assert_exactly_once(&expected_rows(30), Duration::from_secs(120))
        .await;
    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
}
