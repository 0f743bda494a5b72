//! Against SQLite files in temporary directories.

use microbatch_core::catalog::{Catalog, ColumnType, Mode, Quoted, Table};
use microbatch_core::import::{ErrorClass, classify};
use microbatch_core::ports::{LoadOutcome, Warehouse};
use sqlx::{Executor, Row};
use tempfile::TempDir;

use super::super::SqlWarehouse;
use super::super::testkit::{self, Batch, CATALOG_V1, ManifestRow, Probe, behaviour_tests, catalog, table};
use super::*;

struct Fixture {
    w: SqliteWarehouse,
    _dir: TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let w = SqliteWarehouse::open(dir.path().join("warehouse.db"))
        .await
        .unwrap();
    Fixture { w, _dir: dir }
}

impl Fixture {
    async fn finish(self) {
        self.w.close().await;
    }
}

impl Probe for SqliteWarehouse {
    async fn rows(&self, table: &Table) -> Vec<testkit::Row> {
        let exprs: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let q = Quoted(&c.name);
                match c.ty {
                    ColumnType::Bigint | ColumnType::Double => format!("CAST({q} AS TEXT)"),
                    ColumnType::Boolean => format!("CASE {q} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END"),
                    _ => q.to_string(),
                }
            })
            .collect();
        let order = match &table.mode {
            Mode::Append => "\"_event_id\", \"_row_index\"".to_owned(),
            Mode::Upsert { key } => column_list(key.iter().map(String::as_str)),
        };
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            exprs.join(", "),
            Quoted(&table.name)
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await.unwrap();
        rows.iter()
            .map(|r| (0..exprs.len()).map(|i| r.get::<Option<String>, _>(i)).collect())
            .collect()
    }

    async fn manifest(&self) -> Vec<ManifestRow> {
        sqlx::query_as(
            "SELECT \"key\", sha256, table_name, \"rows\", inserted FROM microbatch_manifest ORDER BY \"key\"",
        )
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    async fn fail_on(&self, table: &str, column: &str, value: &str) {
        let sql = format!(
            "CREATE TRIGGER microbatch_test_fail BEFORE INSERT ON {} WHEN NEW.{} = '{value}' \
             BEGIN SELECT RAISE(ABORT, '{value}: refused'); END",
            Quoted(table),
            Quoted(column),
            value = value.replace('\'', "''"),
        );
        self.pool().execute(sql.as_str()).await.unwrap();
    }

    async fn diff(&self, catalog: &Catalog) -> Vec<String> {
        let d = self.schema_diff(catalog).await.unwrap();
        d.iter().map(ToString::to_string).collect()
    }

    async fn refused(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT refused FROM microbatch_manifest WHERE \"key\" = ?1")
            .bind(key)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

behaviour_tests!(fixture);

#[tokio::test]
async fn the_file_is_wal_and_the_tables_strict() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(f.w.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let strict: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, strict FROM pragma_table_list WHERE schema = 'main' ORDER BY name")
            .fetch_all(f.w.pool())
            .await
            .unwrap();
    for name in ["facts", "microbatch_manifest", "profiles"] {
        assert!(strict.contains(&(name.to_owned(), 1)), "{name} in {strict:?}");
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(f.w.pool())
        .await
        .unwrap();
    assert_eq!(versions, vec![20260101000001, 20261202000001]);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_warehouses_on_one_file_load_a_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteWarehouse::open(&path).await.unwrap();
    let b = SqliteWarehouse::open(&path).await.unwrap();
    let c = catalog(CATALOG_V1);
    let (ma, mb) = tokio::join!(a.migrate(&c), b.migrate(&c));
    ma.unwrap();
    mb.unwrap();
    let facts = table(&c, "facts");
    let rows: Vec<testkit::Row> = (0..300)
        .map(|i| testkit::row(&format!("e{i:03}"), 0, testkit::T1, "1", 0, &[None; 7]))
        .collect();
    let batch = Batch::new("shared", facts, &rows);
    let (ra, rb) = tokio::join!(a.load(batch.request(facts)), b.load(batch.request(facts)));
    let mut outcomes = [ra.unwrap(), rb.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, LoadOutcome::Loaded { .. }));
    assert_eq!(
        outcomes,
        [LoadOutcome::AlreadyLoaded, LoadOutcome::Loaded { inserted: 300 }]
    );
    assert_eq!(a.rows(facts).await.len(), 300);
    assert_eq!(b.manifest().await.len(), 1);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn urls_name_a_file_and_its_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/warehouse.db");
    let w = SqlWarehouse::connect(&format!("sqlite://{}?mode=rwc", path.display()), "ignored")
        .await
        .unwrap();
    assert!(matches!(&w, SqlWarehouse::Sqlite(s) if s.path() == path));
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    assert_eq!(w.schema_diff(&c).await.unwrap(), vec![]);
    w.close().await;
    assert!(path.exists());
    for url in ["sqlite::memory:", "sqlite://", "postgres-ish"] {
        assert!(SqliteWarehouse::connect(url).await.is_err(), "{url}");
    }
}

#[test]
fn fields_convert_as_postgres_reads_them() {
    use ColumnType as T;
    let ok = |ty, s: &str| convert(ty, Some(s.to_owned())).unwrap();
    let bad = |ty, s: &str| convert(ty, Some(s.to_owned())).unwrap_err();
    assert_eq!(convert(T::Bigint, None), Ok(Value::Null));
    assert_eq!(ok(T::Text, ""), Value::Text(String::new()));
    assert_eq!(ok(T::Bigint, " 42 "), Value::Integer(42));
    assert_eq!(ok(T::Bigint, "+7"), Value::Integer(7));
    assert_eq!(bad(T::Bigint, "1.5"), "not a bigint");
    assert_eq!(bad(T::Bigint, "9223372036854775808"), "not a bigint");
    assert_eq!(bad(T::Bigint, ""), "not a bigint");
    assert_eq!(ok(T::Double, "1e3"), Value::Real(1000.0));
    assert_eq!(ok(T::Double, "-Infinity"), Value::Real(f64::NEG_INFINITY));
    assert_eq!(bad(T::Double, "NaN"), "NaN cannot be stored");
    assert_eq!(bad(T::Double, "one"), "not a double");
    for t in ["t", "TRUE", "yes", "on", "1", "y"] {
        assert_eq!(ok(T::Boolean, t), Value::Integer(1), "{t}");
    }
    for f in ["f", "False", "no", "off", "0", "n"] {
        assert_eq!(ok(T::Boolean, f), Value::Integer(0), "{f}");
    }
    assert_eq!(bad(T::Boolean, "maybe"), "not a boolean");
    assert_eq!(
        ok(T::Timestamp, "2024-05-01T14:00:00.5+02:00"),
        Value::Text("2024-05-01T12:00:00.500000Z".into())
    );
    assert_eq!(
        ok(T::Timestamp, "2024-05-01 12:00:00Z"),
        Value::Text("2024-05-01T12:00:00.000000Z".into())
    );
    assert_eq!(bad(T::Timestamp, "2024-05-01"), "not an RFC 3339 timestamp");
    assert_eq!(ok(T::Date, "2024-02-29"), Value::Text("2024-02-29".into()));
    assert_eq!(bad(T::Date, "2023-02-29"), "not a date (YYYY-MM-DD)");
    assert_eq!(bad(T::Date, "2023-2-1"), "not a date (YYYY-MM-DD)");
    assert_eq!(ok(T::Json, "{\"a\": [1]}"), Value::Text("{\"a\": [1]}".into()));
    assert_eq!(bad(T::Json, "{"), "not JSON");
}

#[tokio::test]
async fn bad_values_name_the_row_and_column() {
    let f = fixture().await;
    let c = catalog(CATALOG_V1);
    f.w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let good = testkit::row("e1", 0, testkit::T1, "1", 0, &[None; 7]);
    let mut bad = testkit::row("e2", 0, testkit::T1, "1", 0, &[None; 7]);
    bad[7] = Some("12abc".into());
    let b = Batch::new("bad", facts, &[good, bad]);
    let e = f.w.load(b.request(facts)).await.unwrap_err();
    assert_eq!(e.sqlite_code, Some(20), "{e}");
    assert_eq!(classify(&e), ErrorClass::Row);
    assert_eq!(e.row, Some(1));
    assert_eq!(e.message, "row 2, column \"n\": not a bigint: \"12abc\"");
    f.finish().await;
}
