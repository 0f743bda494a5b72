//! The importer on SQS against the emulator and PostgreSQL, with the real binary: a poison batch
//! goes to the dead-letter queue with its reason while the rest loads, and comes back once fixed;
//! duplicate deliveries and lost acks load nothing twice; a long load is not delivered twice.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use microbatch_adapters::aws::S3Store;
use microbatch_adapters::commands::load_catalog;
use microbatch_adapters::config::Config;
use microbatch_core::batch::{BatchMetadata, BatchSchema, Compression};
use microbatch_core::csv::{RowWriter, parse_rows};
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::keys;
use microbatch_core::mapping::{Lineage, MappedRows, Mapper};
use microbatch_core::ports::{Bytes, ObjectWriter};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;
use serde_json::value::RawValue;
use sha2::Digest;
use support::{Pipeline, expected_rows, row_counts, send_until_accepted, wait_ready};

/// A `page_views` batch of `ids` as the consumer would write it, by the consumer's own mapper,
/// but with its last two columns swapped: a column list the consumer never wrote a schema
/// object for (the importer takes any order of the catalog's columns). Returns the key, the
/// body, the metadata and the schema object's key and bytes.
fn page_view_batch(ids: &[&str]) -> (String, Vec<u8>, BatchMetadata, String, Vec<u8>) {
    let config = Config {
        catalog: microbatch_adapters::config::CatalogConfig {
            dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog"),
        },
        ..Config::default()
    };
    let catalog = load_catalog(&config).unwrap();
    let mapper = Mapper::new(&catalog);
    let shard = ShardId::new("shardId-000000000077");
    let at = Timestamp::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
    let mut csv = Vec::new();
    let mut out = MappedRows::default();
    for (i, id) in ids.iter().enumerate() {
        let envelope = Envelope {
            id: EventId((*id).into()),
            event_type: "page_viewed".into(),
            source: "api".into(),
            received_at: at,
            occurred_at: None,
            payload: RawValue::from_string(r#"{"session_id":"poison","path":"/"}"#.into()).unwrap(),
        };
        let position = Position::new(SequenceNumber::from_u128(i as u128 + 1), 0);
        mapper
            .map(
                &envelope,
                Lineage {
                    shard: &shard,
                    position: &position,
                },
                &mut out,
            )
            .unwrap();
        for (_, row) in out.iter() {
            csv.extend_from_slice(row);
        }
    }
    let table = catalog.table(catalog.table_id("page_views").unwrap());
    let mut columns: Vec<String> = table.column_names().map(str::to_owned).collect();
    let n = columns.len();
    columns.swap(n - 2, n - 1);
    let mut swapped = Vec::new();
    for mut fields in parse_rows(&csv).unwrap() {
        fields.swap(n - 2, n - 1);
        let mut w = RowWriter::new(&mut swapped);
        for field in fields {
            match field {
                Some(v) => w.text(&v),
                None => w.null(),
            }
        }
        w.finish();
    }
    let csv = swapped;
    let schema = BatchSchema {
        table: "page_views".into(),
        columns,
    };
    let first = Position::new(SequenceNumber::from_u128(1), 0);
    let last = Position::new(SequenceNumber::from_u128(ids.len() as u128), 0);
    let metadata = BatchMetadata {
        table: "page_views".into(),
        columns_sha256: schema.digest(),
        column_count: schema.columns.len() as u32,
        row_count: ids.len() as u64,
        shard: shard.clone(),
        first: first.clone(),
        last: last.clone(),
        catalog_version: catalog.version().into(),
        sha256: hex::encode(sha2::Sha256::digest(&csv)),
        csv_bytes: csv.len() as u64,
        min_received_at: at,
        max_received_at: at,
        compression: Compression::None,
        csv: microbatch_core::csv::CsvEncoding::CURRENT,
    };
    let key = keys::batch_key("page_views", at, &shard, &first, &last, Compression::None);
    (
        key,
        csv,
        metadata,
        keys::schema_key("page_views", &schema.digest()),
        schema.to_json(),
    )
}

/// `microbatch dlq …` against the pipeline's queues.
fn dlq(p: &Pipeline, args: &[&str]) -> Output {
    let mut command = vec!["dlq"];
    command.extend(args);
    let child = support::microbatch(&command, p.data.path(), &p.env());
    child.wait_with_output().unwrap()
}

async fn poison_rows(p: &Pipeline) -> (i64, i64) {
    use sqlx::Row;
    let r = sqlx::query(&format!(
        "SELECT count(*), count(DISTINCT _event_id) FROM \"{}\".page_views WHERE session_id = 'poison'",
        p.schema
    ))
    .fetch_one(&p.pool)
    .await
    .unwrap();
    (r.get(0), r.get(1))
}

/// 4. A batch whose schema object is missing is retried, then dead-lettered with its reason
///    after the importer's attempts, while every other batch keeps loading; once the schema
///    object is back, `microbatch dlq replay` loads it exactly once, and again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_batch_is_dead_lettered_with_its_reason_and_replayed_once_fixed() {
    let mut p = Pipeline::new(2, 30, 10).await;
    p.extra
        .push(("MICROBATCH_IMPORTER__MAX_ATTEMPTS".into(), "3".into()));
    let mut producer = p.start("produce", &[]);
    let mut consumer = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    send_until_accepted(&p.client, &p.base, 0).await;
    p.wait_rows(&expected_rows(1), Duration::from_secs(60)).await;

    let ids = ["poison-1", "poison-2", "poison-3"];
    let (key, body, metadata, schema_key, schema) = page_view_batch(&ids);
    let store = S3Store::new(&p.aws, &p.resources.bucket, true);
    store.put_batch(&key, Bytes::from(body), &metadata).await.unwrap();
    // Others keep loading meanwhile.
    for n in 1..20 {
        send_until_accepted(&p.client, &p.base, n).await;
    }
    p.assert_exactly_once(&expected_rows(20), Duration::from_secs(60))
        .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = dlq(&p, &["list"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        if text.contains(&key) {
            break text;
        }
        assert!(Instant::now() < deadline, "never dead-lettered: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(listed.starts_with("1 dead letter(s)"), "{listed}");
    assert!(
        listed.contains("missing_schema") && listed.contains(&schema_key),
        "{listed}"
    );
    assert!(
        listed.contains("received   3x"),
        "after the importer's 3 attempts: {listed}"
    );
    assert_eq!(poison_rows(&p).await, (0, 0));

    // The fix: the schema object back. Then replay that key: loaded once.
    store
        .put(&schema_key, Bytes::from(schema), "application/json")
        .await
        .unwrap();
    let out = dlq(&p, &["replay", "--key", &key]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replayed 1"),
        "{out:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while poison_rows(&p).await.0 < 3 {
        assert!(Instant::now() < deadline, "the replayed batch never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Replay is idempotent: the same notification again loads nothing twice.
    support::sqs(&p)
        .send_message()
        .queue_url(&p.resources.queue_url)
        .message_body(microbatch_core::import::object_created_message(
            &p.resources.bucket,
            &key,
            1,
            1,
            Timestamp::from_millis(0),
        ))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(poison_rows(&p).await, (3, 3));
    let out = dlq(&p, &["list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("0 dead letter(s)"),
        "{out:?}"
    );

    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
    p.cleanup().await;
}

/// 5a. Duplicate deliveries (every notification sent again) and lost acks (the importer killed
///     mid-load, again and again, so that some loads commit and never get acked) load no row
///     twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_and_lost_acks_load_nothing_twice() {
    let p = Pipeline::new(2, 3, 50).await;
    let mut producer = p.start("produce", &[]);
    let mut consumer = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    let mut n = 0;
    for _ in 0..4 {
        for _ in 0..8 {
            send_until_accepted(&p.client, &p.base, n).await;
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
        importer.kill().unwrap();
        importer.wait().unwrap();
        importer = p.start("import", &[]);
    }
    p.assert_exactly_once(&expected_rows(n), Duration::from_secs(90))
        .await;
    // Every batch announced again, as SQS may deliver a message twice.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(p.aws.sdk())
            .force_path_style(true)
            .build(),
    );
    let listed = s3
        .list_objects_v2()
        .bucket(&p.resources.bucket)
        .prefix("loads/")
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert!(!keys.is_empty());
    for (i, key) in keys.iter().enumerate() {
        support::sqs(&p)
            .send_message()
            .queue_url(&p.resources.queue_url)
            .message_body(microbatch_core::import::object_created_message(
                &p.resources.bucket,
                key,
                1,
                i as u64,
                Timestamp::from_millis(0),
            ))
            .send()
            .await
            .unwrap();
    }
    // They are received and skipped: the queue empties, and the rows stay as they were.
    let deadline = Instant::now() + Duration::from_secs(60);
    while queue_depth(&p).await != (0, 0) {
        assert!(Instant::now() < deadline, "the duplicates were never consumed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p.assert_exactly_once(&expected_rows(n), Duration::from_secs(10))
        .await;
    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
    p.cleanup().await;
}

/// Messages (visible, in flight) of the load queue.
async fn queue_depth(p: &Pipeline) -> (u64, u64) {
    let attrs = support::sqs(p)
        .get_queue_attributes()
        .queue_url(&p.resources.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    let get = |a: QueueAttributeName| attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// 5b. A load that takes several visibility timeouts (its table locked in PostgreSQL) is kept
///     hidden by the importer's heartbeat: the message never becomes visible again, so no other
///     importer could receive it, and it loads once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_load_is_kept_hidden_by_the_heartbeat() {
    let p = Pipeline::new(1, 3, 50).await;
    let mut producer = p.start("produce", &[]);
    let mut consumer = p.start("consume", &[("MICROBATCH_CONSUMER__WORKER_ID", "w1")]);
    let mut importer = p.start("import", &[]);
    wait_ready(&p.client, &p.base).await;
    // Migrated and idle once the first request's rows are in.
    send_until_accepted(&p.client, &p.base, 0).await;
    p.assert_exactly_once(&expected_rows(1), Duration::from_secs(60))
        .await;

    let mut lock = p.pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE \"{}\".page_views IN ACCESS EXCLUSIVE MODE",
        p.schema
    ))
    .execute(&mut *lock)
    .await
    .unwrap();
    send_until_accepted(&p.client, &p.base, 1).await;
    // The batch's message is received (in flight) and its load waits on the lock.
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_depth(&p).await.1 == 0 {
        assert!(Instant::now() < deadline, "no load started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Four visibility timeouts: a message whose visibility were not extended would be visible
    // (and received again) within the first.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(12) {
        let (visible, in_flight) = queue_depth(&p).await;
        assert_eq!(
            visible,
            0,
            "a message in hand became visible again after {:?}",
            held.elapsed()
        );
        assert!(in_flight >= 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    lock.rollback().await.unwrap();
    p.assert_exactly_once(&expected_rows(2), Duration::from_secs(60))
        .await;
    assert_eq!(row_counts(&p.pool, &p.schema, "page_views").await, (10, 10));
    support::stop_gracefully([&mut producer, &mut consumer, &mut importer]);
    p.cleanup().await;
}
