//! The baselines each figure is a ratio against, measured in the same run: a bare axum handler,
//! `psql \copy`, a bare `serde_json` parse; and the in-process measurements that say what bounds
//! batched ingest (producer core over the local stream, the request parse per event).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use futures::StreamExt as _;
use microbatch_adapters::local::{
    DirStore, NoNotifier, QueueOptions, SqliteQueue, SqliteStream, StreamOptions,
};
use microbatch_adapters::producer::ingest::{BodyFormat, Limits, parse_events};
use microbatch_adapters::runtime::{OsEntropy, OsIds, SystemClock};
use microbatch_adapters::telemetry::MetricsObserver;
use microbatch_adapters::warehouse::SqlWarehouse;
use microbatch_core::batch::{BatchMetadata, BatchSchema};
use microbatch_core::catalog::{Catalog, Source};
use microbatch_core::driver::{Importer, ImporterConfig, Producer, ProducerConfig};
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::kpl::KINESIS_MAX_RECORD_BYTES;
use microbatch_core::mapping::{Lineage, MappedRows, Mapper};
use microbatch_core::ports::{
    ObjectLocation, ObjectReader as _, ObjectWriter as _, Observation, Observer, Warehouse as _,
};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;
use serde_json::value::RawValue;

use crate::probe::Probe;
use crate::workload::Workload;

/// A handler that reads the body and answers 202: what the producer is compared with.
pub async fn serve_bare_axum(listen: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/v1/events",
            post(|body: axum::body::Bytes| async move {
                black_box(body.len());
                (StatusCode::ACCEPTED, "{\"accepted\":1}")
            }),
        )
        .route("/readyz", get(|| async { "{\"status\":\"ready\"}" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

pub fn catalog_of(workload: &Workload) -> anyhow::Result<Catalog> {
    Ok(Catalog::load([Source {
        name: "loadtest.toml".into(),
        text: workload.catalog_toml(),
    }])?)
}

/// Envelopes of events `0..n`, as the producer would stamp them.
fn envelopes(workload: &Workload, n: u64) -> Vec<Envelope> {
    let now = Timestamp::from_millis(1_714_564_800_000);
    (0..n)
        .map(|seq| {
            let mut line = String::new();
            workload.write_event(&mut line, seq, 1);
            let v: serde_json::Value = serde_json::from_str(&line).expect("valid event");
            Envelope {
                id: EventId(v["id"].as_str().unwrap_or_default().to_owned()),
                event_type: v["type"].as_str().unwrap_or_default().to_owned(),
                source: "api".into(),
                received_at: now,
                occurred_at: None,
                payload: RawValue::from_string(v["payload"].to_string()).expect("JSON"),
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct FillObserver {
    records: AtomicU64,
    user_bytes: AtomicU64,
    user_records: AtomicU64,
}

impl Observer for FillObserver {
    fn observe(&self, o: Observation<'_>) {
        if let Observation::AggregatePut {
            user_records,
            user_bytes,
            ..
        } = o
        {
            self.records.fetch_add(1, Ordering::Relaxed);
            self.user_bytes.fetch_add(user_bytes as u64, Ordering::Relaxed);
            self.user_records
                .fetch_add(user_records as u64, Ordering::Relaxed);
        }
    }
}

/// In-process batched ingest: core's producer over the local SQLite stream, fed pre-built
/// envelopes in submissions of `batch` (no HTTP, no parse).
#[derive(Debug, Clone, Copy)]
pub struct StreamIngest {
    pub events_per_s: f64,
    /// User bytes per stream record / the 1 MiB record limit.
    pub aggregation_fill: f64,
    pub user_records_per_record: f64,
}

pub async fn stream_ingest(workload: &Workload, events: u64, batch: usize) -> anyhow::Result<StreamIngest> {
    let dir = tempfile::tempdir()?;
    let stream: &'static SqliteStream = Box::leak(Box::new(
        SqliteStream::open(dir.path().join("stream.db"), StreamOptions::default()).await?,
    ));
    let observer: &'static FillObserver = Box::leak(Box::default());
    let envelopes = envelopes(workload, events);
    let (producer, handle) = Producer::start(
        stream,
        &SystemClock,
        &OsEntropy,
        observer,
        ProducerConfig::default(),
    )
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(producer.run(async {
        let _ = stop_rx.await;
    }));
    let mut chunks: Vec<Vec<Envelope>> = Vec::new();
    let mut it = envelopes.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(batch).collect());
    }
    let started = Instant::now();
    // Each submission on its own task, as each HTTP request is: the envelopes are encoded by the
    // submitter, on whichever worker thread runs it.
    let results: Vec<_> = futures::stream::iter(chunks.into_iter().map(|c| {
        let h = handle.clone();
        async move {
            tokio::spawn(async move { h.submit(c).await })
                .await
                .unwrap_or(Err(microbatch_core::driver::producer::SubmitError::Closed))
        }
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    driver.await?;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        bail!("in-process ingest: a submission failed: {e}");
    }
    let records = observer.records.load(Ordering::Relaxed).max(1) as f64;
    let user_bytes = observer.user_bytes.load(Ordering::Relaxed) as f64;
    Ok(StreamIngest {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        aggregation_fill: user_bytes / records / KINESIS_MAX_RECORD_BYTES as f64,
        user_records_per_record: observer.user_records.load(Ordering::Relaxed) as f64 / records,
    })
}

/// The producer's request parse (split, validate, stamp) per event, on one core: ns/event.
pub fn parse_ns_per_event(workload: &Workload, catalog: &Catalog, batch: usize) -> f64 {
    let (body, _) = workload.body(0, batch, 1);
    let limits = Limits {
        max_events: batch.max(1000),
        max_depth: 32,
    };
    let now = Timestamp::from_millis(1_714_564_800_000);
    let run = |iters: usize| {
        let t = Instant::now();
        for _ in 0..iters {
            let events = parse_events(
                body.as_bytes(),
                BodyFormat::NdJson,
                limits,
                catalog,
                &mut OsIds,
                "api",
                now,
            )
            .expect("valid body");
            black_box(events);
        }
        t.elapsed()
    };
    run(3);
    let iters = 40;
    let best = (0..3).map(|_| run(iters)).min().unwrap_or_default();
    best.as_nanos() as f64 / (iters * batch) as f64
}

/// Mapper (JSON → CSV rows) against a bare parse of the same payload bytes: per size, the ratio
/// parse time / map time, best of five rounds each.
pub fn mapper_vs_parse(catalog: &Catalog) -> Vec<(usize, f64, f64)> {
    let mapper = Mapper::new(catalog);
    let shard = ShardId::new("shardId-000000000000");
    let position = Position::new(SequenceNumber::from_u128(4_959_033_827_149_025_660), 3);
    let mut out = Vec::new();
    for size in [256, 1024, 4096] {
        let w = Workload::new(1, crate::workload::SizeMix::Fixed(size), "m");
        let env = envelopes(&w, 1).remove(0);
        let bytes = env.payload_json().as_bytes().to_vec();
        let mut rows = MappedRows::default();
        let iters = 20_000;
        let (mut parse, mut map) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).expect("JSON"));
            }
            parse = parse.min(t.elapsed());
            let t = Instant::now();
            for _ in 0..iters {
                mapper
                    .map(
                        black_box(&env),
                        Lineage {
                            shard: &shard,
                            position: &position,
                        },
                        &mut rows,
                    )
                    .expect("maps");
                black_box(rows.len());
            }
            map = map.min(t.elapsed());
        }
        let ns = |d: Duration| d.as_nanos() as f64 / iters as f64;
        out.push((size, ns(parse), ns(map)));
    }
    out
}

/// The minimum `bare_parse / map_to_csv` ratio of the criterion bench `map`, if it ran.
pub fn criterion_mapper_ratio() -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let root = Path::new(&target).join("criterion").join("map");
    let mean = |p: &Path| -> Option<f64> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    let mut min: Option<f64> = None;
    for case in std::fs::read_dir(root.join("bare_parse")).ok()?.flatten() {
        let name = case.file_name();
        if name == "report" {
            continue;
        }
        let b = mean(&case.path().join("new/estimates.json"))?;
        let c = mean(&root.join("map_to_csv").join(&name).join("new/estimates.json"))?;
        min = Some(min.map_or(b / c, |m: f64| m.min(b / c)));
    }
    min
}

/// Importer vs `psql \copy`: the same batch files into tables of the same DDL.
#[derive(Debug, Clone, Copy)]
pub struct ImportComparison {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    /// The importer with its defaults (concurrent loops, load groups).
    pub importer_s: f64,
    /// One loop, one batch per transaction: the way the psql session loads them.
    pub importer_serial_s: f64,
    pub psql_s: f64,
}

struct Batch {
    key: String,
    body: Vec<u8>,
    meta: BatchMetadata,
    /// From its schema object.
    columns: Vec<String>,
}

async fn reset_schema(url: &str, schema: &str, catalog: &Catalog) -> anyhow::Result<SqlWarehouse> {
    let pool = sqlx::PgPool::connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await?;
    pool.close().await;
    let warehouse = SqlWarehouse::connect(url, schema).await?;
    warehouse.migrate(catalog).await?;
    Ok(warehouse)
}

/// `objects` is a data directory's `objects/` after a run: its `loads/` batches are loaded by
/// the importer (its driver, over a fresh local queue and store) and by one `psql` session of
/// `\copy` commands, alternately, `rounds` times each; the best time of each counts.
pub async fn importer_vs_psql(
    objects: &Path,
    catalog: &Catalog,
    url: &str,
    rounds: usize,
) -> anyhow::Result<ImportComparison> {
    let src = DirStore::open(objects, "microbatch", NoNotifier).await?;
    let mut batches = Vec::new();
    let mut schemas = std::collections::BTreeMap::new();
    for key in src.keys("schemas/").await? {
        if let Some(obj) = src.get(&ObjectLocation::new("microbatch", &key)).await? {
            schemas.insert(key, obj.body);
        }
    }
    for key in src.keys("loads/").await? {
        let Some(obj) = src.get(&ObjectLocation::new("microbatch", &key)).await? else {
            continue;
        };
        let meta = BatchMetadata::from_pairs(obj.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let schema_key = microbatch_core::keys::schema_key(&meta.table, &meta.columns_sha256);
        let schema = schemas
            .get(&schema_key)
            .with_context(|| format!("{key} names a schema object {schema_key} that is not there"))?;
        let columns = BatchSchema::from_json(schema, &meta)?.columns;
        batches.push(Batch {
            key,
            body: obj.body,
            meta,
            columns,
        });
    }
    if batches.is_empty() {
        bail!("no batches under {}", objects.display());
    }
    let rows: u64 = batches.iter().map(|b| b.meta.row_count).sum();
    let bytes: u64 = batches.iter().map(|b| b.body.len() as u64).sum();
    let (mut best_importer, mut best_serial, mut best_psql) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..rounds.max(1) {
        // psql: one session, one \copy per file, straight into the table.
        reset_schema(url, "lt_psql", catalog).await?.close().await;
        let script_dir = tempfile::tempdir()?;
        let mut script = String::new();
        for b in &batches {
            let cols: Vec<String> = b.columns.iter().map(|c| format!("\"{c}\"")).collect();
            script.push_str(&format!(
                "\\copy \"lt_psql\".\"{}\" ({}) FROM '{}' WITH (FORMAT csv)\n",
                b.meta.table,
                cols.join(", "),
                objects.join(&b.key).display()
            ));
        }
        let script_path = script_dir.path().join("copy.sql");
        std::fs::write(&script_path, script)?;
        let t = Instant::now();
        let status = tokio::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
            .arg(&script_path)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .context("cannot run psql")?;
        let psql_s = t.elapsed().as_secs_f64();
        if !status.success() {
            bail!("psql \\copy failed ({status})");
        }
        best_psql = best_psql.min(psql_s);

        // The importer as deployed (its default loops and load groups), then with one loop and
        // one batch per transaction, as the psql session loads them.
        best_importer = best_importer
            .min(time_importer(&batches, &schemas, catalog, url, ImporterConfig::default()).await?);
        let serial = ImporterConfig {
            concurrency: 1,
            load_group_bytes: 1,
            ..ImporterConfig::default()
        };
        best_serial = best_serial.min(time_importer(&batches, &schemas, catalog, url, serial).await?);
    }
    Ok(ImportComparison {
        files: batches.len(),
        rows,
        bytes,
        importer_s: best_importer,
        importer_serial_s: best_serial,
        psql_s: best_psql,
    })
}

/// Seconds for the importer's driver with `config` to load `batches`, over a fresh local queue
/// holding one notification per batch, into a fresh schema.
async fn time_importer(
    batches: &[Batch],
    schemas: &std::collections::BTreeMap<String, Vec<u8>>,
    catalog: &Catalog,
    url: &str,
    config: ImporterConfig,
) -> anyhow::Result<f64> {
    let rows: u64 = batches.iter().map(|b| b.meta.row_count).sum();
    let warehouse = reset_schema(url, "lt_import", catalog).await?;
    let tmp = tempfile::tempdir()?;
    let queue = Arc::new(SqliteQueue::open(tmp.path().join("queue.db"), QueueOptions::default()).await?);
    let store = DirStore::open(tmp.path().join("objects"), "microbatch", queue.clone()).await?;
    for (key, body) in schemas {
        store.put(key, body.clone().into(), "application/json").await?;
    }
    for b in batches {
        store.put_batch(&b.key, b.body.clone().into(), &b.meta).await?;
    }
    static OBSERVER: MetricsObserver = MetricsObserver { service: "import" };
    let config = ImporterConfig {
        receive_wait: Duration::from_millis(100),
        ..config
    };
    let importer = Importer::start(
        &*queue,
        &store,
        &warehouse,
        &SystemClock,
        &OsEntropy,
        &OBSERVER,
        catalog,
        config,
    )
    .await?;
    let probe = Probe::postgres(url, "lt_import").await?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(300);
        while probe.loaded_rows().await? < rows as i64 {
            if Instant::now() > deadline {
                bail!("the importer did not load every batch within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = t.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        Ok(elapsed)
    };
    let run = importer.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    });
    let (elapsed, ran) = tokio::join!(watch, run);
    ran?;
    probe.close().await;
    warehouse.close().await;
    elapsed
}
