//! The Redshift warehouse's scripts: golden files of the exact SQL, and the same scripts run on a
//! real PostgreSQL with Redshift's COPY from S3 emulated ([`PgRedshift`]) — the behaviour
//! scenarios every warehouse passes, and what only this one has (statements failing one by one,
//! refused rows named by `sys_load_error_detail`, the Data API).

use std::path::PathBuf;

use microbatch_core::batch::Compression;
use microbatch_core::catalog::{Catalog, Table};
use microbatch_core::import::{ErrorClass, WarehouseError, classify};
use microbatch_core::ports::{LoadOutcome, LoadRequest, Warehouse};
use microbatch_core::time::Timestamp;

use super::emulator::{MemoryObjects, PgRedshift};
use super::script::{ScriptOptions, load_script};
use super::transport::{Failure, Rows, Transport};
use super::*;
use crate::warehouse::PgWarehouse;
use crate::warehouse::postgres::tests as pg;
use crate::warehouse::testkit::{
    self, Batch, CATALOG_V1, ManifestRow, Probe, Row, behaviour_tests, catalog, row, table,
};

const ROLE: &str = "arn:aws:iam::123456789012:role/microbatch-copy";

/// The Redshift warehouse over the emulator, with the batches' bytes put where its COPY reads
/// them before each load (the consumer's job in production).
pub(crate) struct Emulated<T = PgRedshift> {
    pub rs: RedshiftWarehouse<T, MemoryObjects>,
    pub pg: PgWarehouse,
    pub objects: MemoryObjects,
}

pub(crate) struct Fixture<T = PgRedshift> {
    pub w: Emulated<T>,
    pg: pg::Fixture,
}

pub(crate) async fn fixture() -> Fixture {
    let pg = pg::fixture().await;
    let objects = MemoryObjects::default();
    let emulator = PgRedshift::install(pg.w.pool().clone(), &pg.schema, objects.clone()).await;
    let rs = RedshiftWarehouse::new(emulator, objects.clone(), &pg.schema, ROLE)
        .unwrap()
        .portable();
    Fixture {
        w: Emulated {
            rs,
            pg: pg.w.clone(),
            objects,
        },
        pg,
    }
}

impl<T> Fixture<T> {
    pub async fn finish(self) {
        self.pg.finish().await;
    }
}

impl<T> Emulated<T> {
    fn put_objects(&self, requests: &[LoadRequest<'_>]) {
        for r in requests {
            if let Some(body) = r.body {
                let stored = r.metadata.compression.compress(body.to_vec());
                self.objects.insert(r.key(), stored);
            }
        }
    }
}

impl<T: Transport> Warehouse for Emulated<T> {
    fn needs_body(&self) -> bool {
        self.rs.needs_body()
    }

    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        self.rs.migrate(catalog).await
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        self.rs.is_loaded(key, sha256).await
    }

    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        self.put_objects(requests);
        let without_bodies: Vec<LoadRequest<'_>> = requests
            .iter()
            .map(|r| LoadRequest { body: None, ..*r })
            .collect();
        self.rs.load_all(&without_bodies).await
    }

    async fn probe(
        &self,
        request: LoadRequest<'_>,
        rows: std::ops::Range<u64>,
    ) -> Result<(), WarehouseError> {
        self.rs.probe(request, rows).await
    }
}

impl<T: Transport> Probe for Emulated<T> {
    async fn rows(&self, table: &Table) -> Vec<Row> {
        self.pg.rows(table).await
    }

    async fn manifest(&self) -> Vec<ManifestRow> {
        self.pg.manifest().await
    }

    async fn fail_on(&self, table: &str, column: &str, value: &str) {
        self.pg.fail_on(table, column, value).await
    }

    async fn diff(&self, catalog: &Catalog) -> Vec<String> {
        let d = self.rs.schema_diff(catalog).await.unwrap();
        d.iter().map(ToString::to_string).collect()
    }

    async fn refused(&self, key: &str) -> i64 {
        self.pg.refused(key).await
    }
}

// Every scenario but the one that bisects with probes: COPY reads whole objects.
behaviour_tests!(
    @each fixture;
    migrations_are_idempotent,
    load_stores_exact_values,
    same_batch_twice_is_already_loaded,
    overlapping_batches_insert_only_new_rows,
    batch_columns_in_another_order,
    upsert_latest_wins,
    hostile_strings_round_trip,
    failure_mid_load_commits_nothing,
    unknown_columns_are_permanent,
    a_group_loads_in_one_transaction,
    a_failed_group_commits_nothing,
    new_catalog_columns_are_added,
    schema_diff_names_differences,
    concurrent_loads_of_one_batch,
);

/// A fact at its own stream position (`100:<n>` for event `e<n>`), as a real batch's rows are.
fn fact(event: &str, txt: Option<&str>) -> Row {
    let sub = event.trim_start_matches('e').parse().unwrap_or(0);
    row(
        event,
        0,
        testkit::T1,
        "100",
        sub,
        &[txt, Some("1"), None, None, None, None, None],
    )
}

/// A refused row is named (the batch row, from `sys_load_error_detail`'s line), nothing is
/// committed, and the batch then loads without it — the COPY skipping exactly that row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_is_named_and_the_rest_loads_once() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let mut bad = fact("e2", Some("x"));
    bad[7] = Some("abc".into());
    let rows = vec![fact("e1", Some("a")), bad, fact("e3", Some("c"))];
    let b = Batch::new("refused", facts, &rows);
    let e = f.w.load(b.request(facts)).await.unwrap_err();
    assert_eq!(classify(&e), ErrorClass::Row, "{e}");
    assert_eq!(e.row, Some(1), "{e}");
    assert!(e.message.contains("line 2"), "{e}");
    assert!(f.w.rows(facts).await.is_empty());
    assert_eq!(
        f.w.load(b.skipping(facts, &[1])).await.unwrap(),
        LoadOutcome::Loaded { inserted: 2 }
    );
    assert_eq!(f.w.rows(facts).await, vec![rows[0].clone(), rows[2].clone()]);
    assert_eq!(f.w.refused(&b.key).await, 1);
    assert_eq!(
        f.w.load(b.skipping(facts, &[1])).await.unwrap(),
        LoadOutcome::AlreadyLoaded
    );
    // A probe cannot load part of an object, and says so.
    let e = f.w.probe(b.request(facts), 0..1).await.unwrap_err();
    assert!(e.message.contains("cannot load part of an object"), "{e}");
    f.finish().await;
}

/// Batches written before the NULL marker keep NULL as NULL, but their empty texts read as NULL
/// too: Redshift cannot tell an unquoted empty field from `""` (such batches predate every
/// Redshift importer; docs/DESIGN.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_csv_encoding_loads_its_empty_texts_as_null() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows = vec![fact("e1", Some("")), fact("e2", None), fact("e3", Some("x"))];
    let b = Batch::first_encoding("first", facts, &rows);
    assert_eq!(
        f.w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 3 }
    );
    let stored = f.w.rows(facts).await;
    assert_eq!((stored[0][6].as_deref(), stored[1][6].as_deref()), (None, None));
    assert_eq!(stored[2], rows[2]);
    f.finish().await;
}

/// Compressed objects of several tables: one COPY per table, through a manifest naming every
/// object of the table; the group commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_compressed_batches_is_one_copy_per_table() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let (facts, profiles) = (table(&c, "facts"), table(&c, "profiles"));
    let mut a = Batch::new("loads/facts/a.csv.gz", facts, &[fact("e1", Some("a"))]);
    a.metadata.compression = Compression::Gzip;
    let mut b = Batch::new(
        "loads/facts/b.csv.gz",
        facts,
        &[fact("e2", Some("NULL")), fact("e3", None)],
    );
    b.metadata.compression = Compression::Gzip;
    let p = |id: &str| row(id, 0, testkit::T1, "5", 0, &[Some(id), Some("n"), Some("1")]);
    let mut c1 = Batch::new("loads/profiles/c.csv.zst", profiles, &[p("u1"), p("u2")]);
    c1.metadata.compression = Compression::Zstd;
    let out =
        f.w.load_all(&[a.request(facts), b.request(facts), c1.request(profiles)])
            .await
            .unwrap();
    assert_eq!(
        out,
        vec![
            LoadOutcome::Loaded { inserted: 1 },
            LoadOutcome::Loaded { inserted: 2 },
            LoadOutcome::Loaded { inserted: 2 },
        ]
    );
    assert_eq!(
        f.w.objects.keys("copy-manifests/").len(),
        2,
        "one manifest per table"
    );
    let stored = f.w.rows(facts).await;
    assert_eq!(
        stored[1][6].as_deref(),
        Some("NULL"),
        "the marker's spelling as a value"
    );
    assert_eq!(stored[2][6], None);
    assert_eq!(f.w.rows(profiles).await.len(), 2);
    f.finish().await;
}

/// A transport that fails the `n`-th statement of the next load, as a crash there would.
struct FailingAt {
    inner: PgRedshift,
    at: std::sync::atomic::AtomicUsize,
}

impl Transport for FailingAt {
    async fn run(&self, statements: &[String], result: Option<usize>) -> Result<Rows, Failure> {
        let at = self.at.swap(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        if at < statements.len() {
            // Run what comes before the failure, inside the transaction, then fail it.
            let mut failing = statements[..at].to_vec();
            failing.push("SELECT 1 / 0".to_owned());
            let e = self.inner.run(&failing, None).await.unwrap_err();
            return Err(Failure {
                statement: Some(at),
                error: e.error,
            });
        }
        self.inner.run(statements, result).await
    }

    fn describe(&self) -> String {
        "failing".into()
    }
}

/// A load cut short after any statement commits nothing; the next attempt loads the batch once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_failing_at_any_statement_commits_nothing() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let (facts, profiles) = (table(&c, "facts"), table(&c, "profiles"));
    let a = Batch::new(
        "loads/facts/a.csv",
        facts,
        &[fact("e1", Some("a")), fact("e2", None)],
    );
    let p = row("p", 0, testkit::T1, "5", 0, &[Some("u1"), Some("n"), Some("1")]);
    let b = Batch::new("loads/profiles/b.csv", profiles, &[p]);
    let requests = [a.request(facts), b.request(profiles)];
    f.w.put_objects(&requests);
    let requests: Vec<LoadRequest<'_>> = requests
        .iter()
        .map(|r| LoadRequest { body: None, ..*r })
        .collect();
    let script = load_script(&requests, &f.w.rs.options, Timestamp::from_micros(0)).unwrap();
    let failing = FailingAt {
        inner: f.w.rs.transport().clone(),
        at: usize::MAX.into(),
    };
    let w = RedshiftWarehouse::new(failing, f.w.objects.clone(), &f.w.rs.options.schema, ROLE)
        .unwrap()
        .portable();
    for at in 0..script.statements.len() {
        w.transport.at.store(at, std::sync::atomic::Ordering::SeqCst);
        w.load_all(&requests).await.unwrap_err();
        assert!(
            f.w.rows(facts).await.is_empty(),
            "after a failure at statement {at}"
        );
        assert!(
            f.w.rows(profiles).await.is_empty(),
            "after a failure at statement {at}"
        );
        assert!(
            f.w.manifest().await.is_empty(),
            "after a failure at statement {at}"
        );
    }
    assert_eq!(
        w.load_all(&requests).await.unwrap(),
        vec![
            LoadOutcome::Loaded { inserted: 2 },
            LoadOutcome::Loaded { inserted: 1 }
        ]
    );
    assert_eq!(
        w.load_all(&requests).await.unwrap(),
        vec![LoadOutcome::AlreadyLoaded, LoadOutcome::AlreadyLoaded]
    );
    assert_eq!(f.w.rows(facts).await.len(), 2);
    f.finish().await;
}

/// Loaders that start while another holds the manifest lock queue behind it; the first to get
/// it loads the batch, the others find it in the manifest and record nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaders_queue_on_the_manifest_lock_and_load_once() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows: Vec<Row> = (0..100).map(|i| fact(&format!("e{i:03}"), Some("x"))).collect();
    let b = Batch::new("loads/facts/race.csv", facts, &rows);
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&f.pg.url)
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut other,
        format!("BEGIN; LOCK {}.microbatch_manifest", Quoted(&f.pg.schema)).as_str(),
    )
    .await
    .unwrap();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sqlx::Executor::execute(&mut other, "COMMIT").await.unwrap();
    };
    let (first, second, ()) = tokio::join!(f.w.load(b.request(facts)), f.w.load(b.request(facts)), release);
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, LoadOutcome::AlreadyLoaded));
    assert_eq!(
        outcomes,
        [LoadOutcome::Loaded { inserted: 100 }, LoadOutcome::AlreadyLoaded]
    );
    assert_eq!(f.w.rows(facts).await.len(), 100);
    assert_eq!(f.w.manifest().await.len(), 1);
    f.finish().await;
}

use microbatch_core::catalog::Quoted;

// ---------------------------------------------------------------------------------------------
// Golden files: the exact SQL. `MICROBATCH_BLESS=1 cargo test -p microbatch-adapters golden`
// rewrites them; review the diff.

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/warehouse/redshift/golden")
}

fn assert_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("MICROBATCH_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MICROBATCH_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the generated SQL (MICROBATCH_BLESS=1 rewrites it):\n{actual}",
        path.display()
    );
}

fn options() -> ScriptOptions {
    ScriptOptions {
        schema: "analytics".into(),
        iam_role: ROLE.into(),
        manifest_bucket: "events-bucket".into(),
        manifest_prefix: "copy-manifests/".into(),
    }
}

fn script_of(batches: &[(&Batch, &Table)]) -> String {
    let requests: Vec<LoadRequest<'_>> = batches
        .iter()
        .map(|(b, t)| LoadRequest {
            body: None,
            ..b.request(t)
        })
        .collect();
    let script = load_script(
        &requests,
        &options(),
        Timestamp::parse_rfc3339("2026-12-02T12:00:00Z").unwrap(),
    )
    .unwrap();
    let mut out = script.to_sql();
    for m in &script.manifests {
        out.push_str(&format!(
            "-- {}\n-- {}\n",
            m.location,
            String::from_utf8_lossy(&m.body).replace('\n', "\n-- ")
        ));
    }
    out
}

#[test]
fn golden_append_group() {
    let c = catalog(CATALOG_V1);
    let facts = table(&c, "facts");
    let a = Batch::new(
        "loads/facts/2026/12/02/12/s-1-2.csv.gz",
        facts,
        &[fact("e1", None)],
    );
    let b = Batch::new(
        "loads/facts/2026/12/02/12/s-3-4.csv.gz",
        facts,
        &[fact("e2", None), fact("e3", None)],
    );
    let (mut a, mut b) = (a, b);
    a.metadata.compression = Compression::Gzip;
    b.metadata.compression = Compression::Gzip;
    assert_golden("append_group.sql", &script_of(&[(&a, facts), (&b, facts)]));
}

#[test]
fn golden_upsert_group() {
    let c = catalog(CATALOG_V1);
    let profiles = table(&c, "profiles");
    let p = row("p", 0, testkit::T1, "5", 0, &[Some("u1"), None, None]);
    let mut a = Batch::new("loads/profiles/2026/12/02/12/s-1-2.csv.zst", profiles, &[p]);
    a.metadata.compression = Compression::Zstd;
    assert_golden("upsert_group.sql", &script_of(&[(&a, profiles)]));
}

#[test]
fn golden_mixed_group_and_compression_variants() {
    let c = catalog(CATALOG_V1);
    let (facts, profiles) = (table(&c, "facts"), table(&c, "profiles"));
    let plain = Batch::new("loads/facts/a.csv", facts, &[fact("e1", None)]);
    let mut gz = Batch::new("loads/facts/b.csv.gz", facts, &[fact("e2", None)]);
    gz.metadata.compression = Compression::Gzip;
    let mut zst = Batch::new("loads/facts/c.csv.zst", facts, &[fact("e3", None)]);
    zst.metadata.compression = Compression::Zstd;
    let old = Batch::first_encoding("loads/facts/d.csv", facts, &[fact("e4", None)]);
    let p = row("p", 0, testkit::T1, "5", 0, &[Some("u1"), None, None]);
    let dim = Batch::new("loads/profiles/e.csv", profiles, &[p]);
    assert_golden(
        "mixed_group.sql",
        &script_of(&[
            (&plain, facts),
            (&dim, profiles),
            (&gz, facts),
            (&zst, facts),
            (&old, facts),
        ]),
    );
}

#[test]
fn golden_wide_table_and_quoted_identifiers() {
    let mut columns = String::new();
    for i in 0..194 {
        columns.push_str(&format!(
            "{{ name = \"c{i:03}\", type = \"bigint\", pointer = \"/c{i}\" }},\n"
        ));
    }
    let wide = catalog(&format!(
        "[[events]]\ntype = \"w\"\n[[events.outputs]]\ntable = \"wide\"\ncolumns = [\n{columns}]\n\
         [[events]]\ntype = \"q\"\n[[events.outputs]]\ntable = \"rows\"\nmode = \"upsert\"\nkey = [\"key\", \"time\"]\n\
         columns = [\n{{ name = \"key\", type = \"text\", pointer = \"/a\", nullable = false }},\n\
         {{ name = \"time\", type = \"timestamp\", pointer = \"/b\", nullable = false }},\n\
         {{ name = \"_{long}\", type = \"json\", pointer = \"/c\" }},\n]\n",
        long = "x".repeat(126),
    ));
    let t = table(&wide, "wide");
    assert_eq!(t.columns.len(), 200);
    let values: Vec<Option<&str>> = vec![Some("1"); 194];
    let w = Batch::new(
        "loads/wide/a.csv",
        t,
        &[row("e1", 0, testkit::T1, "1", 0, &values)],
    );
    let q = table(&wide, "rows");
    let s = Batch::new(
        "loads/rows/a.csv",
        q,
        &[row(
            "e1",
            0,
            testkit::T1,
            "1",
            0,
            &[Some("o"), Some(testkit::T1), None],
        )],
    );
    assert_golden("wide_and_quoted.sql", &script_of(&[(&w, t), (&s, q)]));
    let mut ddl = String::new();
    for table in wide.tables() {
        ddl.push_str(&ddl::create_table(
            &format!("\"analytics\".{}", Quoted(&table.name)),
            table,
            Flavor::Redshift,
        ));
        ddl.push_str(";\n");
    }
    assert_golden("wide_and_quoted_ddl.sql", &ddl);
}

#[test]
fn golden_migrations() {
    let c = catalog(CATALOG_V1);
    let fresh = ddl::migration_plan(
        "analytics",
        &[],
        &Existing::new(),
        &c,
        Flavor::Redshift,
        "2026-12-02T12:00:00Z",
    )
    .unwrap();
    let mut out = ddl::bootstrap("analytics").join(";\n");
    out.push_str(";\n-- a fresh schema\n");
    out.push_str(&fresh.join(";\n"));
    // The manifest applied and `facts` there without `doc`: only the column is added.
    let mut existing = Existing::new();
    existing.insert(
        "facts".into(),
        table(&c, "facts")
            .columns
            .iter()
            .filter(|c| c.name != "doc")
            .map(|c| (c.name.clone(), "x".into()))
            .collect(),
    );
    existing.insert(
        "profiles".into(),
        table(&c, "profiles")
            .columns
            .iter()
            .map(|c| (c.name.clone(), "x".into()))
            .collect(),
    );
    let versions: Vec<i64> = ddl::MIGRATIONS.iter().map(|m| m.0).collect();
    let later = ddl::migration_plan(
        "analytics",
        &versions,
        &existing,
        &c,
        Flavor::Redshift,
        "2026-12-02T12:00:00Z",
    )
    .unwrap();
    out.push_str(";\n-- a later start, one column new in the catalog\n");
    out.push_str(&later.join(";\n"));
    out.push_str(";\n");
    assert_golden("migrations.sql", &out);
}

#[test]
fn literals_refuse_what_they_cannot_write() {
    assert_eq!(script::literal("it's").unwrap(), "'it''s'");
    assert!(script::literal("a\\b").unwrap_err().message.contains("'\\\\'"));
    assert!(script::literal("a\nb").is_err());
}

// ---------------------------------------------------------------------------------------------
// The Data API transport: the real SDK against the stand-in.

mod through_the_data_api {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::super::data_api::{DataApiOptions, DataApiTarget, DataApiTransport, MAX_STATEMENTS};
    use super::super::stand_in::StandIn;
    use super::*;

    pub(crate) async fn fixture_with(timeout: Duration) -> (Fixture<DataApiTransport>, StandIn) {
        let pg = pg::fixture().await;
        let objects = MemoryObjects::default();
        let emulator = PgRedshift::install(pg.w.pool().clone(), &pg.schema, objects.clone()).await;
        let stand_in = StandIn::start(emulator).await;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&stand_in.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_redshiftdata::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        let transport = DataApiTransport::new(
            &crate::aws::Aws::from_sdk(sdk),
            DataApiOptions {
                database: "test".into(),
                target: DataApiTarget::Workgroup {
                    workgroup_name: "microbatch".into(),
                    secret_arn: None,
                },
                poll_min: Duration::from_millis(5),
                poll_max: Duration::from_millis(50),
                timeout,
            },
        );
        let rs = RedshiftWarehouse::new(transport, objects.clone(), &pg.schema, ROLE)
            .unwrap()
            .with_max_statements(MAX_STATEMENTS)
            .portable();
        let fixture = Fixture {
            w: Emulated {
                rs,
                pg: pg.w.clone(),
                objects,
            },
            pg,
        };
        (fixture, stand_in)
    }

    async fn fixture() -> Fixture<DataApiTransport> {
        fixture_with(Duration::from_secs(60)).await.0
    }

    behaviour_tests!(
        @each fixture;
        load_stores_exact_values,
        same_batch_twice_is_already_loaded,
        overlapping_batches_insert_only_new_rows,
        upsert_latest_wins,
        hostile_strings_round_trip,
        a_group_loads_in_one_transaction,
        a_failed_group_commits_nothing,
        new_catalog_columns_are_added,
        schema_diff_names_differences,
        concurrent_loads_of_one_batch,
    );

    /// A statement still running is polled until it finishes; a failed one names its
    /// sub-statement, so a refused row is named as over the wire.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polls_until_finished_and_reports_the_failed_statement() {
        let (f, stand_in) = fixture_with(Duration::from_secs(60)).await;
        let c = catalog(CATALOG_V1);
        f.w.migrate(&c).await.unwrap();
        let facts = table(&c, "facts");
        stand_in.hold.store(true, Ordering::SeqCst);
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stand_in.hold.store(false, Ordering::SeqCst);
        };
        let b = Batch::new("loads/facts/a.csv", facts, &[fact("e1", Some("a"))]);
        let (loaded, ()) = tokio::join!(f.w.load(b.request(facts)), release);
        assert_eq!(loaded.unwrap(), LoadOutcome::Loaded { inserted: 1 });
        let describes = stand_in
            .operations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| *o == "DescribeStatement")
            .count();
        assert!(describes >= 3, "polled {describes} times while the statement ran");

        let mut bad = fact("e2", Some("x"));
        bad[7] = Some("abc".into());
        let b = Batch::new("loads/facts/b.csv", facts, &[fact("e3", None), bad]);
        let e = f.w.load(b.request(facts)).await.unwrap_err();
        assert_eq!(classify(&e), ErrorClass::Row, "{e}");
        assert_eq!(e.row, Some(1), "{e}");
        assert!(e.message.starts_with("COPY into \"facts\""), "{e}");
        f.finish().await;
    }

    /// A submission whose answer is lost is retried by the SDK with the same client token: the
    /// stand-in runs it once, and the load is not repeated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_answer_is_retried_with_the_same_client_token() {
        let (f, stand_in) = fixture_with(Duration::from_secs(60)).await;
        let c = catalog(CATALOG_V1);
        f.w.migrate(&c).await.unwrap();
        let facts = table(&c, "facts");
        let before = stand_in.executions.load(Ordering::SeqCst);
        stand_in.operations.lock().unwrap().clear();
        stand_in.lose_answers.store(1, Ordering::SeqCst);
        let b = Batch::new("loads/facts/a.csv", facts, &[fact("e1", Some("a"))]);
        assert_eq!(
            f.w.load(b.request(facts)).await.unwrap(),
            LoadOutcome::Loaded { inserted: 1 }
        );
        let submissions = stand_in
            .operations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| *o == "BatchExecuteStatement")
            .count();
        assert_eq!(submissions, 2, "the SDK retried the submission");
        assert_eq!(
            stand_in.executions.load(Ordering::SeqCst) - before,
            1,
            "and it ran once"
        );
        assert_eq!(f.w.manifest().await.len(), 1);
        f.finish().await;
    }

    /// A statement past its timeout is cancelled, the load fails transiently, and nothing is
    /// committed; the next attempt loads the batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_past_its_timeout_is_cancelled() {
        // The migration runs under the same timeout, and on two busy cores it has taken over
        // 200 ms; the held load never finishes, so a longer timeout costs time, not strength.
        let (f, stand_in) = fixture_with(Duration::from_secs(3)).await;
        let c = catalog(CATALOG_V1);
        f.w.migrate(&c).await.unwrap();
        let facts = table(&c, "facts");
        stand_in.hold.store(true, Ordering::SeqCst);
        let b = Batch::new("loads/facts/a.csv", facts, &[fact("e1", Some("a"))]);
        let e = f.w.load(b.request(facts)).await.unwrap_err();
        assert_eq!(classify(&e), ErrorClass::Transient, "{e}");
        assert!(e.message.contains("was cancelled"), "{e}");
        assert_eq!(stand_in.cancels.load(Ordering::SeqCst), 1);
        stand_in.hold.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            f.w.manifest().await.is_empty(),
            "the cancelled load committed nothing: {:?}",
            stand_in.operations.lock().unwrap()
        );
        assert_eq!(
            f.w.load(b.request(facts)).await.unwrap(),
            LoadOutcome::Loaded { inserted: 1 }
        );
        f.finish().await;
    }

    /// More units than one Data API transaction holds: the group is split into transactions
    /// of whole batches, each within the limit, and every batch loads once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_larger_than_one_batch_statement_is_split() {
        let (f, stand_in) = fixture_with(Duration::from_secs(60)).await;
        let mut text = String::new();
        for t in 0..12 {
            text.push_str(&format!(
                "[[events]]\ntype = \"t{t}\"\n[[events.outputs]]\ntable = \"t{t}\"\n\
                 columns = [{{ name = \"v\", type = \"text\", pointer = \"/v\" }}]\n"
            ));
        }
        let c = catalog(&text);
        f.w.migrate(&c).await.unwrap();
        let batches: Vec<(Batch, &Table)> = c
            .tables()
            .iter()
            .map(|t| {
                let r = row("e1", 0, testkit::T1, "1", 0, &[Some("v")]);
                (Batch::new(&format!("loads/{}/a.csv", t.name), t, &[r]), t)
            })
            .collect();
        let requests: Vec<LoadRequest<'_>> = batches.iter().map(|(b, t)| b.request(t)).collect();
        let outcomes = f.w.load_all(&requests).await.unwrap();
        assert!(
            outcomes.iter().all(|o| *o == LoadOutcome::Loaded { inserted: 1 }),
            "{outcomes:?}"
        );
        assert_eq!(f.w.manifest().await.len(), 12);
        let submissions = stand_in
            .operations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| *o == "BatchExecuteStatement")
            .count();
        assert!(submissions >= 3, "{submissions} transactions for 12 tables");
        f.finish().await;
    }
}

/// `check --warehouse`: a one-row COPY into a scratch table, dropped; nothing of the catalog is
/// touched. Without the object the COPY reads, it says which step failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_copies_a_row_into_a_scratch_table() {
    let f = fixture().await;
    f.w.rs.dry_run().await.unwrap();
    assert_eq!(
        f.w.objects.keys("copy-manifests/check/").len(),
        2,
        "the object and its manifest"
    );
    assert!(
        f.w.manifest_exists().await.is_none(),
        "no catalog table or manifest made"
    );
    // The role cannot read the bucket: here, the object is gone when COPY looks.
    let broken = RedshiftWarehouse::new(
        f.w.rs.transport().clone(),
        LostObjects,
        &f.w.rs.options.schema,
        ROLE,
    )
    .unwrap();
    let e = broken.dry_run().await.unwrap_err();
    assert!(
        e.message
            .starts_with("COPY from the bucket (can the cluster assume the COPY role"),
        "{e}"
    );
    f.finish().await;
}

/// A bucket that forgets what is written to it.
struct LostObjects;

impl microbatch_core::ports::ObjectWriter for LostObjects {
    fn bucket(&self) -> &str {
        super::emulator::BUCKET
    }

    async fn put_batch(
        &self,
        _key: &str,
        _body: microbatch_core::ports::Bytes,
        _metadata: &microbatch_core::batch::BatchMetadata,
    ) -> Result<(), microbatch_core::ports::PortError> {
        Ok(())
    }

    async fn put(
        &self,
        _key: &str,
        _body: microbatch_core::ports::Bytes,
        _content_type: &str,
    ) -> Result<(), microbatch_core::ports::PortError> {
        Ok(())
    }
}

impl<T> Emulated<T> {
    /// The manifest table, if it exists.
    async fn manifest_exists(&self) -> Option<String> {
        sqlx::query_scalar("SELECT to_regclass('microbatch_manifest')::text")
            .fetch_one(self.pg.pool())
            .await
            .unwrap()
    }
}
