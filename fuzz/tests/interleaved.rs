//! Bad requests do not cost good ones: the whole embedded pipeline runs in this process while a
//! client interleaves good batches with mutated requests (the HTTP edge's seeds through the
//! fuzzer's mutator) on real TCP connections. Every bad request gets an answer the API
//! promises, every good batch is accepted on its first try, and at the end the warehouse holds
//! every good event's rows exactly once, with no row of any table twice.

use std::time::{Duration, Instant};

use microbatch_adapters::app::Shutdown;
use microbatch_adapters::commands::run_until;
use microbatch_adapters::config::{Config, WebhookConfig};
use microbatch_fuzz::http::{self, HUB_SECRET, STRIPE_SECRET, judge};
use microbatch_fuzz::mutate::{Rng, mutate};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GOOD: usize = 40;
const BAD_PER_GOOD: usize = 25;

/// Five page views (a row each) and five orders (a row and two line items each).
fn good(n: usize) -> Vec<Value> {
    (0..10)
        .map(|i| {
            let id = format!("good-{n}-{i}");
            if i % 2 == 0 {
                json!({"type": "page_viewed", "id": id, "payload": {"session_id": format!("s{n}"), "path": format!("/p/{i}")}})
            } else {
                json!({"type": "order_placed", "id": id, "payload": {"order_id": id, "customer_id": "c", "currency": "EUR", "total": 1.5, "items": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]}})
            }
        })
        .collect()
}

/// One request on its own connection, write side shut once sent, read to the end.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading all of a bad request.
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .ok();
    answer
}

async fn count(pool: &sqlx::SqlitePool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// While the pipeline starts, a table may not be there yet.
async fn count_so_far(pool: &sqlx::SqlitePool, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(pool).await.map_or(0, |r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_between_good_ones_cost_the_good_ones_nothing() {
    let data = tempfile::tempdir().unwrap();
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let vars = [
        ("MICROBATCH_DATA_DIR", data.path().display().to_string()),
        ("MICROBATCH_CATALOG__DIR", catalog.display().to_string()),
        ("MICROBATCH_PRODUCER__LISTEN", "127.0.0.1:0".into()),
        ("MICROBATCH_PRODUCER__BODY_TIMEOUT_MS", "1000".into()),
        ("MICROBATCH_PRODUCER__HEADER_TIMEOUT_MS", "1000".into()),
        ("MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS", "150".into()),
        ("MICROBATCH_CONSUMER__IDLE_POLL_MS", "20".into()),
        ("MICROBATCH_IMPORTER__RECEIVE_WAIT_MS", "100".into()),
        ("MICROBATCH_LOG__FILTER", "error".into()),
    ];
    let mut config = Config::load_with(None, vars.map(|(k, v)| (k.to_owned(), v))).unwrap();
    config.producer.webhooks = vec![
        WebhookConfig::hub("codehost", vec![HUB_SECRET.into()]),
        WebhookConfig::timestamped("payments", vec![STRIPE_SECRET.into()]),
    ];
    let shutdown = Shutdown::default();
    let (bound, addr) = tokio::sync::oneshot::channel();
    // Polled beside the client rather than spawned: the pipeline's future is not `Send` for
    // every lifetime (sqlx), and it spawns its services itself.
    let pipeline = run_until(config, shutdown.clone(), Some(bound));
    let client = async {
        let addr = addr.await.expect("the producer binds");
        let counts = send_and_wait(addr, data.path()).await;
        shutdown.trigger();
        counts
    };
    let (stopped, (bad_accepted, bad_refused)) = tokio::join!(pipeline, client);
    stopped.expect("the pipeline stops cleanly");
    check_warehouse(data.path()).await;
    eprintln!(
        "{} bad requests: {bad_accepted} accepted as mutated, {bad_refused} refused",
        GOOD * BAD_PER_GOOD
    );
}

fn database(data: &std::path::Path) -> String {
    format!("sqlite://{}?mode=ro", data.join("warehouse.db").display())
}

const EXPECTED: [(&str, usize); 3] = [("page_views", 5), ("orders", 5), ("order_items", 10)];

/// The client: good batches (each must be accepted at once) between mutated requests (each
/// must get an answer the API promises); then waits for the good rows. Returns how many bad
/// requests were accepted and refused.
async fn send_and_wait(addr: std::net::SocketAddr, data: &std::path::Path) -> (usize, usize) {
    let seeds = http::seeds();
    let mut rng = Rng::new(20261203);
    let (mut bad_accepted, mut bad_refused) = (0, 0);
    for n in 0..GOOD {
        let body = serde_json::to_string(&good(n)).unwrap();
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange(addr, request.as_bytes()).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 202"),
            "good batch {n} after {} bad requests: {}",
            n * BAD_PER_GOOD,
            String::from_utf8_lossy(&answer)
        );
        for _ in 0..BAD_PER_GOOD {
            let base = &seeds[rng.below(seeds.len() as u64) as usize];
            let other = &seeds[rng.below(seeds.len() as u64) as usize];
            let bad = http::resign(&mutate(&mut rng, base, other));
            let answer = exchange(addr, &bad).await;
            match judge(&bad, &answer) {
                Ok(()) => bad_accepted += 1,
                Err(m) if m.starts_with("BUG") => {
                    panic!("{m}\nfor the request {:?}", String::from_utf8_lossy(&bad))
                }
                Err(_) => bad_refused += 1,
            }
        }
    }
    assert!(
        bad_refused > GOOD * BAD_PER_GOOD / 2,
        "most mutations are refused"
    );

    let db = database(data);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        let mut done = true;
        for (table, per_batch) in EXPECTED {
            let n = count_so_far(
                &pool,
                &format!("SELECT count(*) FROM {table} WHERE _event_id LIKE 'good-%'"),
            )
            .await;
            done &= n >= (GOOD * per_batch) as i64;
        }
        pool.close().await;
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (bad_accepted, bad_refused)
}

/// After the stop: every good event's rows exactly once, and no row of any table twice.
async fn check_warehouse(data: &std::path::Path) {
    let pool = sqlx::SqlitePool::connect(&database(data)).await.unwrap();
    for (table, per_batch) in EXPECTED {
        let good = count(
            &pool,
            &format!("SELECT count(*) FROM {table} WHERE _event_id LIKE 'good-%'"),
        )
        .await;
        assert_eq!(
            good,
            (GOOD * per_batch) as i64,
            "{table}: every good event's rows, once"
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let catalog = microbatch_adapters::catalog_dir::load(&dir).unwrap();
    let tables: Vec<&str> = catalog.tables().iter().map(|t| t.name.as_str()).collect();
    for table in &tables {
        let total = count(&pool, &format!("SELECT count(*) FROM \"{table}\"")).await;
        let distinct = count(
            &pool,
            &format!("SELECT count(*) FROM (SELECT DISTINCT _event_id, _row_index FROM \"{table}\")"),
        )
        .await;
        assert_eq!(distinct, total, "{table}: no row twice");
    }
}
