//! The deployment, end to end, against the AWS emulator and PostgreSQL: the real `microbatch`
//! binary as three services (`produce`, `consume`, `import`), as infra/ runs them, with HTTP in
//! and rows out. Every test counts every accepted event's rows: all there, none twice.

mod support;

use std::time::{Duration, Instant};

use microbatch_adapters::aws::{DynamoLeases, check_kcl_item};
use microbatch_adapters::telemetry::scrape;
use microbatch_core::ports::{Checkpoint, LeaseStore};
use support::{
    Pipeline, aws_requests, expected_rows, free_port, metrics_page, send_until_accepted, terminate,
    wait_exit, wait_ready,
};

/// 1. Two shards, mixed event types: HTTP → Kinesis → consumer → S3 → SQS → importer →
///    PostgreSQL, every accepted event's rows exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_from_http_through_kinesis_s3_and_sqs_into_postgres_exactly_once() {
    let p = Pipeline::new(2, 30, 5).await;
    let (consumer_metrics, importer_metrics) = (free_port(), free_port());
    let mut producer = p.start("produce", &[]);
    let mut consumer = p.start(
        "consume",
        &[
            ("MICROBATCH_CONSUMER__WORKER_ID", "w1"),
            (
                "MICROBATCH_LOG__METRICS_LISTEN",
                &format!("127.0.0.1:{consumer_metrics}"),
            ),
        ],
    );
    let mut importer = p.start(
        "import",
        &[(
            "MICROBATCH_LOG__METRICS_LISTEN",
            &format!("127.0.0.1:{importer_metrics}"),
        )],
    );
    wait_ready(&p.client, &p.base).await;
    const REQUESTS: usize = 60;
    for n in 0..REQUESTS {
        send_until_accepted(&p.client, &p.base, n).await;
    }
    p.assert_exactly_once(&expected_rows(REQUESTS), Duration::from_secs(90))
        .await;
    // Every service counted its AWS calls, each under its own name (the cost model's input).
    let produced = metrics_page(&p.client, p.port).await;
    assert!(
        aws_requests(&produced, "kinesis", "PutRecords", "ok") >= 1.0,
        "{produced}"
    );
    // Each accepted Kinesis record counted with its bytes and its billed 25 KB units.
    let records = scrape::sum(&produced, "microbatch_kinesis_put_records_total", &[]);
    let bytes = scrape::sum(&produced, "microbatch_kinesis_put_bytes_total", &[]);
    let units = scrape::sum(&produced, "microbatch_kinesis_put_payload_units_total", &[]);
    assert!(records >= 1.0 && units >= records, "{produced}");
    assert!(bytes >= records && bytes <= units * 25.0 * 1024.0, "{produced}");
    let consumed = metrics_page(&p.client, consumer_metrics).await;
    for (service, operation) in [
        ("kinesis", "GetRecords"),
        ("kinesis", "ListShards"),
        ("s3", "PutObject"),
        ("dynamodb", "UpdateItem"),
    ] {
        assert!(
            aws_requests(&consumed, service, operation, "ok") >= 1.0,
            "consumer: no {service} {operation} counted:\n{consumed}"
        );
    }
    let imported = metrics_page(&p.client, importer_metrics).await;
    let deletes = aws_requests(&imported, "sqs", "DeleteMessageBatch", "ok")
        + aws_requests(&imported, "sqs", "DeleteMessage", "ok");
    assert!(deletes >= 1.0, "importer: no SQS delete counted:\n{imported}");
    for (service, operation) in [("sqs", "ReceiveMessage"), ("s3", "GetObject")] {
        assert!(
            aws_requests(&imported, service, operation, "ok") >= 1.0,
            "importer: no {service} {operation} counted:\n{imported}"
        );
    }
    // Both shards carried events and were checkpointed.
    let leases = DynamoLeases::new(&p.aws, &p.resources.table)
        .list()
        .await
        .unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert!(
        leases.iter().all(|l| matches!(l.checkpoint, Checkpoint::At(_))),
        "{leases:?}"
    );
    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
    p.cleanup().await;
}

/// 2. Two consumers on four shards; one is SIGKILLed mid-load. Its leases move to the other
///    within the failover time; nothing is lost or doubled; the lease table reads as a KCL one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumers_leases_move_within_the_failover_time() {
    let p = Pipeline::new(4, 30, 5).await;
    let mut producer = p.start("produce", &[]);
    let mut a = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "a")]);
    let mut b = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "b")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    let leases = DynamoLeases::new(&p.aws, &p.resources.table);

    // Both hold shards, balanced (the coordinator's share: ceil(4 / 2)).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        send_until_accepted(&p.client, &p.base, n).await;
        n += 1;
        let held = leases.list().await.unwrap();
        let by = |w: &str| held.iter().filter(|l| l.owner.as_deref() == Some(w)).count();
        if by("a") == 2 && by("b") == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never balanced: {held:?}");
    }
    for _ in 0..10 {
        send_until_accepted(&p.client, &p.base, n).await;
        n += 1;
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    // Traffic goes on; b takes all four once a's leases stand still for the failover (3 s).
    let moved = loop {
        send_until_accepted(&p.client, &p.base, n).await;
        n += 1;
        let held = leases.list().await.unwrap();
        if held.iter().all(|l| l.owner.as_deref() == Some("b")) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "a's leases never moved: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("leases moved {moved:?} after the kill (failover 3 s, lease sync 0.5 s)");
    assert!(
        moved >= Duration::from_secs(2),
        "taken before the failover time: {moved:?}"
    );
    for _ in 0..10 {
        send_until_accepted(&p.client, &p.base, n).await;
        n += 1;
    }
    p.assert_exactly_once(&expected_rows(n), Duration::from_secs(90))
        .await;
    for item in leases.items().await.unwrap() {
        check_kcl_item(&item).unwrap_or_else(|e| panic!("{e}: {item:?}"));
    }
    support::stop_gracefully([&mut producer, &mut b, &mut importer]);
    p.cleanup().await;
}

/// 3. The stream is resharded (UpdateShardCount 2 → 4, splitting both shards) while events
///    flow: parents are read to their end before their children start, and nothing is lost or
///    doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshard_mid_stream_reads_parents_before_children() {
    let p = Pipeline::new(2, 30, 5).await;
    let mut producer = p.start(
        "produce",
        &[("MICROBATCH_PRODUCER__STREAM_FAILURE_GRACE_MS", "60000")],
    );
    let mut consumer = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    let leases = DynamoLeases::new(&p.aws, &p.resources.table);
    let mut n = 0;
    for _ in 0..20 {
        send_until_accepted(&p.client, &p.base, n).await;
        n += 1;
    }
    aws_sdk_kinesis::Client::new(p.aws.sdk())
        .update_shard_count()
        .stream_name(&p.resources.stream)
        .target_shard_count(4)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    // Events go on; meanwhile no child may have a checkpoint while a parent of it has a lease
    // that has not reached SHARD_END.
    let mut children_started = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < 80 || !children_started {
        send_until_accepted(&p.client, &p.base, n).await;
        n += 1;
        let all = leases.list().await.unwrap();
        for child in all.iter().filter(|l| !l.parents.is_empty()) {
            if matches!(child.checkpoint, Checkpoint::At(_)) {
                children_started = true;
                for parent in all.iter().filter(|l| child.parents.contains(&l.shard)) {
                    assert_eq!(
                        parent.checkpoint,
                        Checkpoint::ShardEnd,
                        "{} read before its parent {} ended",
                        child.shard,
                        parent.shard
                    );
                }
            }
        }
        assert!(Instant::now() < deadline, "the children never started: {all:?}");
    }
    p.assert_exactly_once(&expected_rows(n), Duration::from_secs(90))
        .await;
    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
    p.cleanup().await;
}

/// 6. SIGTERM of each service mid-load: each drains (the producer makes what it accepted
///    durable, the consumer flushes and checkpoints, the importer finishes its load), exits 0,
///    and once started again nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_drains_each_service_and_loses_nothing() {
    let p = Pipeline::new(2, 30, 5).await;
    let mut producer = p.start("produce", &[]);
    let mut consumer = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    let mut n = 0;
    for service in ["import", "consume", "produce"] {
        // A load in progress: requests in flight while the signal arrives.
        let sender = {
            let (client, base, from) = (p.client.clone(), p.base.clone(), n);
            tokio::spawn(async move {
                for i in from..from + 15 {
                    send_until_accepted(&client, &base, i).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(400)).await;
        let child = match service {
            "import" => &mut importer,
            "consume" => &mut consumer,
            _ => &mut producer,
        };
        terminate(child);
        let status = wait_exit(child, Duration::from_secs(40));
        assert!(status.success(), "{service} after SIGTERM: {status}");
        *child = p.start(service, &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
        sender.await.unwrap();
        n += 15;
    }
    wait_ready(&p.client, &p.base).await;
    p.assert_exactly_once(&expected_rows(n), Duration::from_secs(90))
        .await;
    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
    p.cleanup().await;
}
