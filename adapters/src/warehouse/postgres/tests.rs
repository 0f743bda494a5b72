//! Against a real PostgreSQL: `MICROBATCH_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. Each test works in a schema of its own and drops it
//! at the end (also when it fails). Without a server the tests fail, saying how to get one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use microbatch_core::catalog::{Catalog, ColumnType, Mode, Quoted, Table};
use microbatch_core::import::{ErrorClass, classify};
use microbatch_core::ports::{LoadOutcome, Warehouse};
use sqlx::{Connection, Executor, PgConnection, Row};

use super::super::SqlWarehouse;
use super::super::testkit::{self, Batch, CATALOG_V1, ManifestRow, Probe, behaviour_tests, catalog, table};
use super::*;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn database_url() -> String {
    std::env::var("MICROBATCH_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn no_server(url: &str, error: &WarehouseError) -> String {
    format!(
        "these tests need PostgreSQL, and none answered at {url}: {error}\n\
         Start one (trust auth, database `test`) on 127.0.0.1:5432, e.g. `apt-get install postgresql`, \
         or run `./scripts/test`, which starts a throwaway cluster with initdb/pg_ctl when none is \
         running; or point MICROBATCH_TEST_DATABASE_URL at a server you have."
    )
}

/// A warehouse in a fresh schema, dropped by [`finish`](Fixture::finish) or, if the test panics
/// first, on drop.
pub(crate) struct Fixture {
    pub w: PgWarehouse,
    pub url: String,
    pub schema: String,
    dropped: bool,
}

pub(crate) async fn fixture() -> Fixture {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = database_url();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!(
        "mbt_{}_{}_{nanos:09}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let options = PgWarehouseOptions {
        schema: schema.clone(),
        max_connections: 6,
        acquire_timeout: Duration::from_secs(10),
        ..PgWarehouseOptions::default()
    };
    let w = match PgWarehouse::connect_with(&url, options).await {
        Ok(w) => w,
        Err(e) => panic!("{}", no_server(&url, &e)),
    };
    Fixture {
        w,
        url,
        schema,
        dropped: false,
    }
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    conn.execute("SET lock_timeout = '10s'").await?;
    conn.execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", Quoted(schema)).as_str())
        .await?;
    conn.close().await
}

impl Fixture {
    pub async fn finish(mut self) {
        self.w.close().await;
        drop_schema(&self.url, &self.schema)
            .await
            .unwrap_or_else(|e| panic!("dropping schema {}: {e}", self.schema));
        self.dropped = true;
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // A fresh runtime on its own thread: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(drop_schema(&url, &schema));
            }
        })
        .join();
    }
}

impl Probe for PgWarehouse {
    async fn rows(&self, table: &Table) -> Vec<testkit::Row> {
        let exprs: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let q = Quoted(&c.name);
                match c.ty {
                    ColumnType::Text => q.to_string(),
                    ColumnType::Timestamp => {
                        format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
                    }
                    _ => format!("{q}::text"),
                }
            })
            .collect();
        let order = match &table.mode {
            Mode::Append => "\"_event_id\" COLLATE \"C\", \"_row_index\"".to_owned(),
            Mode::Upsert { key } => column_list(key.iter().map(String::as_str)),
        };
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            exprs.join(", "),
            self.table(&table.name)
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await.unwrap();
        rows.iter()
            .map(|r| (0..exprs.len()).map(|i| r.get::<Option<String>, _>(i)).collect())
            .collect()
    }

    async fn manifest(&self) -> Vec<ManifestRow> {
        let sql = format!(
            "SELECT \"key\", sha256, table_name, \"rows\", inserted FROM {} ORDER BY \"key\"",
            self.table(MANIFEST_TABLE)
        );
        sqlx::query_as(&sql).fetch_all(self.pool()).await.unwrap()
    }

    async fn fail_on(&self, table: &str, column: &str, value: &str) {
        let function = self.table("microbatch_test_fail");
        let sql = format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN \
               IF NEW.{column} = '{value}' THEN RAISE EXCEPTION '{value}: refused %', NEW.\"_event_id\"; \
               END IF; RETURN NEW; END $f$; \
             CREATE TRIGGER microbatch_test_fail BEFORE INSERT ON {target} \
               FOR EACH ROW EXECUTE FUNCTION {function}()",
            column = Quoted(column),
            value = value.replace('\'', "''"),
            target = self.table(table),
        );
        self.pool().execute(sql.as_str()).await.unwrap();
    }

    async fn diff(&self, catalog: &Catalog) -> Vec<String> {
        let d = self.schema_diff(catalog).await.unwrap();
        d.iter().map(ToString::to_string).collect()
    }

    async fn refused(&self, key: &str) -> i64 {
        let sql = format!(
            "SELECT refused FROM {} WHERE \"key\" = $1",
            self.table(MANIFEST_TABLE)
        );
        sqlx::query_scalar(&sql)
            .bind(key)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

behaviour_tests!(fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_loader_fails_transiently_then_skips() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows: Vec<testkit::Row> = (0..50)
        .map(|i| testkit::row(&format!("e{i:03}"), 0, testkit::T1, "1", 0, &[None; 7]))
        .collect();
    let b = Batch::new("race", facts, &rows);

    // Another importer has written the manifest row for this batch but not committed yet.
    let mut blocker = PgConnection::connect(&f.url).await.unwrap();
    let mut other = Connection::begin(&mut blocker).await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {} (\"key\", sha256, table_name, \"rows\", inserted, shard, first_position, \
         last_position, catalog_version, min_received_at, max_received_at) \
         VALUES ($1, $2, 'facts', 50, 50, 's', '1:0', '1:0', 'v', now(), now())",
        f.w.table(MANIFEST_TABLE)
    ))
    .bind(&b.key)
    .bind(&b.metadata.sha256)
    .execute(&mut *other)
    .await
    .unwrap();

    let mut watcher = PgConnection::connect(&f.url).await.unwrap();
    let release = async {
        // Commit once our load waits for that row: it has copied its rows by then.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%microbatch_manifest%'",
            )
            .bind(&f.schema)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the load never waited on the manifest row"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        other.commit().await.unwrap();
    };
    let (result, ()) = tokio::join!(f.w.load(b.request(facts)), release);
    let e = result.expect_err("the manifest row is taken");
    assert_eq!(e.sqlstate.as_deref(), Some("23505"), "{e}");
    assert_eq!(classify(&e), ErrorClass::Transient);
    assert_eq!(f.w.rows(facts).await.len(), 0, "the load's rows were rolled back");
    assert_eq!(
        f.w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::AlreadyLoaded
    );
    blocker.close().await.unwrap();
    watcher.close().await.unwrap();
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_errors_say_which_line_and_column() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let good = testkit::row("e1", 0, testkit::T1, "1", 0, &[None; 7]);
    let mut bad = testkit::row("e2", 0, testkit::T1, "1", 0, &[None; 7]);
    bad[7] = Some("12abc".into());
    let b = Batch::new("bad", facts, &[good, bad]);
    let e = f.w.load(b.request(facts)).await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("22P02"), "{e}");
    assert_eq!(classify(&e), ErrorClass::Row);
    assert_eq!(e.row, Some(1), "the batch row of line 2");
    assert!(e.message.contains("12abc"), "{e}");
    // A fresh append batch is copied straight into its table.
    assert!(e.message.contains("CONTEXT: COPY facts, line 2, column n"), "{e}");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_live_in_the_warehouse_schema() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT version FROM {} ORDER BY version",
        f.w.table("_sqlx_migrations")
    ))
    .fetch_all(f.w.pool())
    .await
    .unwrap();
    assert_eq!(versions, vec![20260101000001, 20261202000001]);
    let search_path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(f.w.pool())
        .await
        .unwrap();
    assert_eq!(search_path, f.schema);
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname")
            .bind(&f.schema)
            .fetch_all(f.w.pool())
            .await
            .unwrap();
    for want in [
        "facts__event_row",
        "profiles__key",
        "microbatch_manifest_key_sha256",
    ] {
        assert!(indexes.iter().any(|i| i == want), "{want} in {indexes:?}");
    }
    // The types each dialect promises.
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'facts' ORDER BY ordinal_position",
    )
    .bind(&f.schema)
    .fetch_all(f.w.pool())
    .await
    .unwrap();
    let types: Vec<(&str, &str)> = types.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        types,
        vec![
            ("_event_id", "text"),
            ("_row_index", "bigint"),
            ("_received_at", "timestamp with time zone"),
            ("_shard", "text"),
            ("_sequence", "text"),
            ("_sub_sequence", "bigint"),
            ("txt", "text"),
            ("n", "bigint"),
            ("x", "double precision"),
            ("flag", "boolean"),
            ("at", "timestamp with time zone"),
            ("day", "date"),
            ("doc", "jsonb"),
        ]
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warehouse_can_be_chosen_by_url() {
    let f = fixture().await;
    let w = SqlWarehouse::connect(&f.url, &f.schema).await.unwrap();
    assert!(matches!(w, SqlWarehouse::Postgres(_)));
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    assert_eq!(w.schema_diff(&c).await.unwrap(), vec![]);
    let facts = table(&c, "facts");
    let b = Batch::new(
        "k",
        facts,
        &[testkit::row("e1", 0, testkit::T1, "1", 0, &[None; 7])],
    );
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    assert!(w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap());
    w.close().await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_test_leaves_no_schema_behind() {
    let f = fixture().await;
    f.w.migrate(&catalog(CATALOG_V1)).await.unwrap();
    let (url, schema) = (f.url.clone(), f.schema.clone());
    drop(f); // what unwinding from a failed assertion does
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!left, "schema {schema} is still there");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    let options = PgWarehouseOptions {
        acquire_timeout: Duration::from_millis(500),
        ..PgWarehouseOptions::default()
    };
    let e = PgWarehouse::connect_with("postgres://postgres@127.0.0.1:1/test", options)
        .await
        .unwrap_err();
    assert_eq!(classify(&e), ErrorClass::Transient, "{e}");
}

#[tokio::test]
async fn the_schema_must_be_an_identifier() {
    let e = PgWarehouse::connect(&database_url(), "x\"; DROP SCHEMA public; --")
        .await
        .unwrap_err();
    assert!(e.message.starts_with("warehouse schema: "), "{e}");
}

/// A warehouse on the fixture's schema with a pool of one connection: every load after the first
/// reuses the connection the one before it left.
async fn one_connection(f: &Fixture) -> PgWarehouse {
    let options = PgWarehouseOptions {
        schema: f.schema.clone(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(10),
        ..PgWarehouseOptions::default()
    };
    PgWarehouse::connect_with(&f.url, options).await.unwrap()
}

fn fact(event: &str, index: u32, txt: &str) -> testkit::Row {
    testkit::row(
        event,
        index,
        testkit::T1,
        "100",
        0,
        &[Some(txt), Some("1"), None, None, None, None, None],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_append_batches_are_copied_straight_into_the_table() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let w = one_connection(&f).await;
    let facts = table(&c, "facts");
    let a = Batch::new("a", facts, &[fact("e1", 0, "a"), fact("e1", 1, "b")]);
    assert_eq!(
        w.load_via(a.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 2 }, Some(LoadPath::Direct))
    );
    let b = Batch::new("b", facts, &[fact("e2", 0, "c")]);
    assert_eq!(
        w.load_via(b.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 1 }, Some(LoadPath::Direct))
    );
    assert_eq!(
        w.load_via(a.request(facts)).await.unwrap(),
        (LoadOutcome::AlreadyLoaded, None)
    );
    let empty = Batch::new("empty", facts, &[]);
    assert_eq!(
        w.load_via(empty.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 0 }, Some(LoadPath::Direct))
    );
    assert_eq!(
        f.w.rows(facts).await,
        vec![fact("e1", 0, "a"), fact("e1", 1, "b"), fact("e2", 0, "c")]
    );
    let manifest = f.w.manifest().await;
    assert_eq!(
        manifest
            .iter()
            .map(|m| (m.0.as_str(), m.3, m.4))
            .collect::<Vec<_>>(),
        vec![("a", 2, 2), ("b", 1, 1), ("empty", 0, 0)]
    );
    // Upsert tables need the merge: always staged.
    let profiles = table(&c, "profiles");
    let p = Batch::new(
        "p",
        profiles,
        &[testkit::row(
            "ev1",
            0,
            testkit::T1,
            "1",
            0,
            &[Some("id1"), Some("x"), Some("1")],
        )],
    );
    assert_eq!(
        w.load_via(p.request(profiles)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 1 }, Some(LoadPath::Staged))
    );
    w.close().await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_batches_overlapping_stored_rows_fall_back_to_staging() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let w = one_connection(&f).await;
    let facts = table(&c, "facts");
    let first = vec![fact("e1", 0, "a"), fact("e1", 1, "b"), fact("e2", 0, "c")];
    let a = Batch::new("loads/a.csv", facts, &first);
    assert_eq!(
        w.load_via(a.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 3 }, Some(LoadPath::Direct))
    );
    // The same rows cut differently under another key: two are stored already (one with other
    // content, which must not win), two are new.
    let b = Batch::new(
        "loads/b.csv",
        facts,
        &[
            fact("e3", 0, "d"),
            fact("e1", 1, "changed"),
            fact("e2", 0, "c"),
            fact("e4", 0, "e"),
        ],
    );
    assert_eq!(
        w.load_via(b.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 2 }, Some(LoadPath::Staged))
    );
    assert_eq!(
        w.load_via(b.request(facts)).await.unwrap(),
        (LoadOutcome::AlreadyLoaded, None)
    );
    // A row twice within one batch (a client retry with the same event id): once.
    let c2 = Batch::new("loads/c.csv", facts, &[fact("e5", 0, "f"), fact("e5", 0, "f")]);
    assert_eq!(
        w.load_via(c2.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 1 }, Some(LoadPath::Staged))
    );
    // Everything already there: nothing inserted, the batch recorded.
    let d = Batch::new("loads/d.csv", facts, &first);
    assert_eq!(
        w.load_via(d.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 0 }, Some(LoadPath::Staged))
    );
    // The connection the fallbacks used (the pool's only one) takes the direct path again.
    let e = Batch::new("loads/e.csv", facts, &[fact("e6", 0, "g")]);
    assert_eq!(
        w.load_via(e.request(facts)).await.unwrap(),
        (LoadOutcome::Loaded { inserted: 1 }, Some(LoadPath::Direct))
    );
    let mut want = first;
    want.extend([
        fact("e3", 0, "d"),
        fact("e4", 0, "e"),
        fact("e5", 0, "f"),
        fact("e6", 0, "g"),
    ]);
    assert_eq!(f.w.rows(facts).await, want);
    let manifest = f.w.manifest().await;
    assert_eq!(
        manifest
            .iter()
            .map(|m| (m.0.as_str(), m.3, m.4))
            .collect::<Vec<_>>(),
        vec![
            ("loads/a.csv", 3, 3),
            ("loads/b.csv", 4, 2),
            ("loads/c.csv", 2, 1),
            ("loads/d.csv", 3, 0),
            ("loads/e.csv", 1, 1),
        ]
    );
    w.close().await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_mismatches_fail_on_either_path() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let stored = Batch::new("stored", facts, &[fact("e1", 0, "a")]);
    f.w.load(stored.request(facts)).await.unwrap();
    for (key, rows, path) in [
        ("fresh", vec![fact("e2", 0, "b"), fact("e3", 0, "c")], "direct"),
        (
            "overlapping",
            vec![fact("e1", 0, "a"), fact("e4", 0, "d")],
            "staged",
        ),
    ] {
        let mut b = Batch::new(key, facts, &rows);
        b.metadata.row_count = 3;
        let e = f.w.load(b.request(facts)).await.expect_err(path);
        assert_eq!(e.sqlstate.as_deref(), Some("22P04"), "{path}: {e}");
        assert_eq!(classify(&e), ErrorClass::Permanent, "{path}: {e}");
        assert!(
            e.message.contains("COPY read 2 rows, the batch metadata says 3"),
            "{path}: {e}"
        );
        assert!(
            !f.w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap(),
            "{path}"
        );
    }
    assert_eq!(f.w.rows(facts).await, vec![fact("e1", 0, "a")]);
    assert_eq!(f.w.manifest().await.len(), 1);
    f.finish().await;
}

/// Another session inserts `rows` into `facts` and holds its transaction open until our load's COPY
/// waits for it, then commits (or rolls back); returns what our load did.
async fn load_behind_uncommitted_rows(
    f: &Fixture,
    batch: &Batch,
    facts: &Table,
    rows: &[testkit::Row],
    commit: bool,
) -> (LoadOutcome, Option<LoadPath>) {
    let mut blocker = PgConnection::connect(&f.url).await.unwrap();
    let mut other = Connection::begin(&mut blocker).await.unwrap();
    let other_batch = Batch::new("other", facts, rows);
    let mut copy = other
        .copy_in_raw(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT csv, NULL 'NULL')",
            f.w.table("facts"),
            column_list(facts.column_names())
        ))
        .await
        .unwrap();
    copy.send(other_batch.body.as_slice()).await.unwrap();
    copy.finish().await.unwrap();

    let mut watcher = PgConnection::connect(&f.url).await.unwrap();
    let release = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'COPY %' || $1 || '%facts%'",
            )
            .bind(&f.schema)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the load never waited on the other rows"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if commit {
            other.commit().await.unwrap();
        } else {
            other.rollback().await.unwrap();
        }
    };
    let (result, ()) = tokio::join!(f.w.load_via(batch.request(facts)), release);
    blocker.close().await.unwrap();
    watcher.close().await.unwrap();
    result.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_blocked_by_uncommitted_rows_waits_for_their_fate() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let theirs = [fact("e2", 0, "theirs")];
    let ours = Batch::new(
        "ours",
        facts,
        &[
            fact("e1", 0, "ours"),
            fact("e2", 0, "ours"),
            fact("e3", 0, "ours"),
        ],
    );
    // They roll back: nothing was in the way after all.
    assert_eq!(
        load_behind_uncommitted_rows(&f, &ours, facts, &theirs, false).await,
        (LoadOutcome::Loaded { inserted: 3 }, Some(LoadPath::Direct))
    );
    assert_eq!(
        f.w.rows(facts).await,
        vec![
            fact("e1", 0, "ours"),
            fact("e2", 0, "ours"),
            fact("e3", 0, "ours")
        ]
    );
    // They commit: our COPY fails on their row, and the staged path inserts the rest.
    let theirs = [fact("e5", 0, "theirs")];
    let ours = Batch::new(
        "ours2",
        facts,
        &[
            fact("e4", 0, "ours"),
            fact("e5", 0, "ours"),
            fact("e6", 0, "ours"),
        ],
    );
    assert_eq!(
        load_behind_uncommitted_rows(&f, &ours, facts, &theirs, true).await,
        (LoadOutcome::Loaded { inserted: 2 }, Some(LoadPath::Staged))
    );
    let rows = f.w.rows(facts).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[3..],
        [
            fact("e4", 0, "ours"),
            fact("e5", 0, "theirs"),
            fact("e6", 0, "ours")
        ]
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_longer_than_postgres_keeps_are_refused_by_name() {
    let f = fixture().await;
    let long = "t".repeat(64);
    let c = catalog(&format!(
        "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"{long}\"\ncolumns = [ {{ name = \"a\", type = \"text\", pointer = \"/a\" }} ]\n"
    ));
    let e = f.w.migrate(&c).await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("42622"), "{e}");
    assert!(
        e.message.contains(&format!(
            "table \"{long}\" is 64 bytes; PostgreSQL keeps only the first 63"
        )),
        "{e}"
    );
    let c = catalog(&format!(
        "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ {{ name = \"{long}\", type = \"text\", pointer = \"/a\" }} ]\n"
    ));
    let e = f.w.migrate(&c).await.unwrap_err();
    assert!(e.message.contains("column of table \"t\""), "{e}");
    // 63 bytes is fine.
    let c = catalog(&format!(
        "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"{}\"\ncolumns = [ {{ name = \"a\", type = \"text\", pointer = \"/a\" }} ]\n",
        "t".repeat(63)
    ));
    f.w.migrate(&c).await.unwrap();
    f.finish().await;
}
