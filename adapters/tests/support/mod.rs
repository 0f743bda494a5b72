//! What the AWS integration tests share: the emulator's endpoint, AWS resources made for one
//! test (named apart, so tests run in parallel against one emulator), and the `microbatch`
//! binary started against them.
//!
//! The emulator is moto, started by `./scripts/test` (scripts/moto/start), which exports
//! `MICROBATCH_TEST_AWS_ENDPOINT`. Without it these tests fail, saying how to start it: they
//! never skip.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use microbatch_adapters::aws::Aws;
use microbatch_adapters::aws::provision;
use microbatch_adapters::telemetry::scrape;

/// Endpoints a test set for itself (the containers feature starts its own), ahead of the
/// environment's.
static ENDPOINTS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Makes [`endpoint`] and [`database_url`] answer these, for the rest of the test process.
pub fn use_endpoints(aws: String, database: String) {
    let _ = ENDPOINTS.set((aws, database));
}

/// The emulator's endpoint, or a failure saying how to get one.
pub fn endpoint() -> String {
    if let Some((aws, _)) = ENDPOINTS.get() {
        return aws.clone();
    }
    std::env::var("MICROBATCH_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "MICROBATCH_TEST_AWS_ENDPOINT is not set: this test needs the local AWS emulator. \
             ./scripts/test starts it; by hand: scripts/moto/start /tmp/moto && \
             export MICROBATCH_TEST_AWS_ENDPOINT=http://127.0.0.1:$(cat /tmp/moto/port)"
        )
    })
}

/// The SDK configuration a test's own clients use: the emulator, a region, static keys.
pub async fn aws() -> Aws {
    provision::emulator_aws(&endpoint()).await
}

/// The environment a `microbatch` child needs to reach the emulator: what a deployment's task
/// gets from its role and region, plus the endpoint.
pub fn aws_env() -> Vec<(String, String)> {
    provision::emulator_env(&endpoint())
}

/// A name no other test (or earlier run against the same emulator) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!(
        "{prefix}-{}-{now}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn create_stream(aws: &Aws, name: &str, shards: i32) {
    provision::create_stream(aws, name, shards).await.unwrap();
}

pub async fn create_queues(
    aws: &Aws,
    name: &str,
    visibility_secs: u32,
    max_receives: u32,
) -> (String, String) {
    provision::create_queues(aws, name, visibility_secs, max_receives)
        .await
        .unwrap()
}

/// A bucket whose new objects under `loads/` are announced to the queue at `queue_url`.
pub async fn create_bucket(aws: &Aws, bucket: &str, queue_url: &str) {
    provision::create_bucket(aws, bucket, queue_url).await.unwrap();
}

pub async fn create_lease_table(aws: &Aws, table: &str) {
    provision::create_lease_table(aws, table).await.unwrap();
}

/// The resources of one pipeline, under a name of their own.
#[derive(Debug, Clone)]
pub struct Resources(pub provision::Resources);

impl std::ops::Deref for Resources {
    type Target = provision::Resources;
    fn deref(&self) -> &provision::Resources {
        &self.0
    }
}

impl Resources {
    /// Everything of one pipeline, created on the emulator.
    pub async fn create(aws: &Aws, shards: i32, visibility_secs: u32, max_receives: u32) -> Resources {
        let name = unique("mb");
        Resources(
            provision::Resources::create(aws, &name, shards, visibility_secs, max_receives)
                .await
                .unwrap(),
        )
    }

    /// The configuration of a deployment on these resources, with the emulator's, for a
    /// `microbatch` child.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = aws_env();
        env.extend(self.0.env());
        env
    }
}

/// A `microbatch <command>` child with a clean environment plus `env`.
pub fn microbatch(command: &[&str], data: &Path, env: &[(String, String)]) -> Child {
    microbatch_command(command, data, env)
        .spawn()
        .expect("the microbatch binary starts")
}

/// The command [`microbatch`] spawns, stdout piped and stderr inherited.
pub fn microbatch_command(command: &[&str], data: &Path, env: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_microbatch"));
    c.args(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MICROBATCH_DATA_DIR", data)
        .env(
            "MICROBATCH_CATALOG__DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog"),
        )
        .env("MICROBATCH_LOG__FILTER", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// SIGTERM, by the `kill` command.
pub fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// SIGTERM to each service, and each must drain and exit 0 within 40 s.
pub fn stop_gracefully<const N: usize>(children: [&mut Child; N]) {
    for child in children {
        terminate(child);
        let status = wait_exit(child, Duration::from_secs(40));
        assert!(status.success(), "a service after SIGTERM: {status}");
    }
}

/// Waits for a child's exit, failing the test if it takes longer than `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- PostgreSQL ----------------------------------------------------------------------------------

pub fn database_url() -> String {
    if let Some((_, database)) = ENDPOINTS.get() {
        return database.clone();
    }
    std::env::var("MICROBATCH_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "MICROBATCH_TEST_DATABASE_URL is not set: this test needs PostgreSQL; ./scripts/test \
             starts one (or uses the server on 127.0.0.1:5432)"
        )
    })
}

/// Rows of `table` in `schema`, and how many distinct (`_event_id`, `_row_index`) among them.
pub async fn row_counts(pool: &sqlx::PgPool, schema: &str, table: &str) -> (i64, i64) {
    use sqlx::Row;
    let row = sqlx::query(&format!(
        "SELECT count(*), count(DISTINCT (_event_id, _row_index)) FROM \"{schema}\".\"{table}\""
    ))
    .fetch_one(pool)
    .await;
    match row {
        Ok(r) => (r.get(0), r.get(1)),
        // Not migrated yet.
        Err(_) => (0, 0),
    }
}

pub async fn drop_schema(pool: &sqlx::PgPool, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(pool)
        .await
        .unwrap();
}

// --- events --------------------------------------------------------------------------------------

/// Ten events of request `n` from the example catalog: five page views (one `page_views` row
/// each) and five orders (one `orders` row and two `order_items` rows each).
pub fn events(n: usize) -> Vec<serde_json::Value> {
    use serde_json::json;
    (0..10)
        .map(|i| {
            let id = format!("e-{n}-{i}");
            if i % 2 == 0 {
                json!({"type": "page_viewed", "id": id, "payload": {"session_id": format!("s{n}"), "path": format!("/p/{i}")}})
            } else {
                json!({"type": "order_placed", "id": id, "payload": {"order_id": id, "customer_id": "c", "currency": "EUR", "total": 1.5, "items": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]}})
            }
        })
        .collect()
}

/// Rows per table that `requests` requests of [`events`] make.
pub fn expected_rows(requests: usize) -> [(&'static str, i64); 3] {
    let r = requests as i64;
    [("page_views", 5 * r), ("orders", 5 * r), ("order_items", 10 * r)]
}

/// Sends request `n` until the producer answers 202 (resending the same ids, as a client
/// retries).
pub async fn send_until_accepted(client: &reqwest::Client, base: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client
            .post(format!("{base}/v1/events"))
            .json(&events(n))
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 202 => return,
            _ => {
                assert!(Instant::now() < deadline, "request {n} was never accepted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the producer did not become ready at {base}");
}

/// The sum of `microbatch_aws_requests_total` over the samples of `service`'s `operation` with
/// `outcome` in a Prometheus page.
pub fn aws_requests(page: &str, service: &str, operation: &str, outcome: &str) -> f64 {
    scrape::sum(
        page,
        "microbatch_aws_requests_total",
        &[
            ("service", service),
            ("operation", operation),
            ("outcome", outcome),
        ],
    )
}

/// `GET /metrics` at 127.0.0.1:`port`.
pub async fn metrics_page(client: &reqwest::Client, port: u16) -> String {
    client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET /metrics on port {port}: {e}"))
        .text()
        .await
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A deployment on the emulator and PostgreSQL: the three services as separate processes, as
/// infra/ runs them, with settings that make a test quick (short flushes, leases and polls).
pub struct Pipeline {
    pub aws: Aws,
    pub resources: Resources,
    pub schema: String,
    pub pool: sqlx::PgPool,
    pub data: tempfile::TempDir,
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub extra: Vec<(String, String)>,
    /// Every service started, killed when the pipeline is dropped: a failing test leaves no
    /// process behind.
    started: std::sync::Mutex<Vec<u32>>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for pid in self.started.lock().map(|p| p.clone()).unwrap_or_default() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Pipeline {
    pub async fn new(shards: i32, visibility_secs: u32, max_receives: u32) -> Pipeline {
        let aws = aws().await;
        let resources = Resources::create(&aws, shards, visibility_secs, max_receives).await;
        let pool = sqlx::PgPool::connect(&database_url()).await.unwrap_or_else(|e| {
            panic!("this test needs PostgreSQL at {}: {e}", database_url());
        });
        let port = free_port();
        Pipeline {
            aws,
            schema: unique("mbaws").replace('-', "_"),
            resources,
            pool,
            data: tempfile::tempdir().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            extra: Vec::new(),
            started: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The environment of every service: the resources, the warehouse, quick timings, then
    /// the test's own settings.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.resources.env();
        env.extend(
            [
                ("MICROBATCH_WAREHOUSE_URL", database_url()),
                ("MICROBATCH_WAREHOUSE__SCHEMA", self.schema.clone()),
                ("MICROBATCH_PRODUCER__LISTEN", format!("127.0.0.1:{}", self.port)),
                ("MICROBATCH_PRODUCER__LINGER_MS", "20".into()),
                ("MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS", "300".into()),
                ("MICROBATCH_CONSUMER__IDLE_POLL_MS", "50".into()),
                ("MICROBATCH_CONSUMER__LEASE_SYNC_MS", "500".into()),
                ("MICROBATCH_CONSUMER__SHARD_SYNC_MS", "1000".into()),
                ("MICROBATCH_CONSUMER__FAILOVER_MS", "3000".into()),
                ("MICROBATCH_IMPORTER__RECEIVE_WAIT_MS", "1000".into()),
                ("MICROBATCH_IMPORTER__BACKOFF_BASE_MS", "200".into()),
                ("MICROBATCH_IMPORTER__BACKOFF_CAP_MS", "1000".into()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env.extend(self.extra.iter().cloned());
        env
    }

    /// `microbatch <service>` with this pipeline's environment and `more`.
    pub fn start(&self, service: &str, more: &[(&str, &str)]) -> Child {
        let mut env = self.env();
        env.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let child = microbatch(&[service], self.data.path(), &env);
        if let Ok(mut started) = self.started.lock() {
            started.push(child.id());
        }
        child
    }

    /// Waits until every table has at least its expected rows (or the time is up), then
    /// returns (rows, distinct rows) per table.
    pub async fn wait_rows(&self, expected: &[(&str, i64)], within: Duration) -> Vec<(String, i64, i64)> {
        let deadline = Instant::now() + within;
        loop {
            let mut counts = Vec::new();
            for (table, _) in expected {
                let (rows, distinct) = row_counts(&self.pool, &self.schema, table).await;
                counts.push(((*table).to_owned(), rows, distinct));
            }
            let done = counts
                .iter()
                .zip(expected)
                .all(|((_, rows, _), (_, n))| rows >= n);
            if done || Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Asserts every table holds exactly its expected rows, none twice.
    pub async fn assert_exactly_once(&self, expected: &[(&str, i64)], within: Duration) {
        let counts = self.wait_rows(expected, within).await;
        // A little longer, so that a duplicate arriving late is seen too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts_after = self.wait_rows(expected, Duration::ZERO).await;
        assert_eq!(
            counts, counts_after,
            "rows still arriving after the expected count"
        );
        for ((table, rows, distinct), (_, n)) in counts.iter().zip(expected) {
            assert_eq!(distinct, rows, "{table}: a row twice");
            assert_eq!(rows, n, "{table}: every accepted event's rows exactly once");
        }
    }

    pub async fn cleanup(&self) {
        drop_schema(&self.pool, &self.schema).await;
    }
}

/// An SQS client on the pipeline's emulator, for what a test does by hand.
pub fn sqs(p: &Pipeline) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(p.aws.sdk())
}
