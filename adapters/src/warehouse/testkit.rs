//! What both warehouses must do, written once: a small catalog, batches written with the core's
//! [`RowWriter`], and behaviour scenarios that the PostgreSQL and SQLite test modules run against
//! their warehouse (through [`behaviour_tests!`]) with a [`Probe`] to read it back.

use std::future::Future;

use microbatch_core::batch::BatchMetadata;
use microbatch_core::catalog::{Catalog, Source, Table};
use microbatch_core::csv::RowWriter;
use microbatch_core::import::{ErrorClass, WarehouseError, classify};
use microbatch_core::ports::{LoadOutcome, LoadRequest, ObjectLocation, Warehouse};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;

/// Facts with a column of every type, and a dimension keyed by `id`.
pub const CATALOG_V1: &str = r#"
[[events]]
type = "fact"

[[events.outputs]]
table = "facts"
columns = [
  { name = "txt", type = "text", pointer = "/txt" },
  { name = "n", type = "bigint", pointer = "/n" },
  { name = "x", type = "double", pointer = "/x" },
  { name = "flag", type = "boolean", pointer = "/flag" },
  { name = "at", type = "timestamp", pointer = "/at" },
  { name = "day", type = "date", pointer = "/day" },
  { name = "doc", type = "json", pointer = "/doc" },
]

[[events]]
type = "profile"

[[events.outputs]]
table = "profiles"
mode = "upsert"
key = ["id"]
columns = [
  { name = "id", type = "text", pointer = "/id", nullable = false },
  { name = "name", type = "text", pointer = "/name" },
  { name = "score", type = "bigint", pointer = "/score" },
]
"#;

/// V1 plus a nullable column in each table.
pub const CATALOG_V2: &str = r#"
[[events]]
type = "fact"

[[events.outputs]]
table = "facts"
columns = [
  { name = "txt", type = "text", pointer = "/txt" },
  { name = "n", type = "bigint", pointer = "/n" },
  { name = "x", type = "double", pointer = "/x" },
  { name = "flag", type = "boolean", pointer = "/flag" },
  { name = "at", type = "timestamp", pointer = "/at" },
  { name = "day", type = "date", pointer = "/day" },
  { name = "doc", type = "json", pointer = "/doc" },
  { name = "note", type = "text", pointer = "/note" },
]

[[events]]
type = "profile"

[[events.outputs]]
table = "profiles"
mode = "upsert"
key = ["id"]
columns = [
  { name = "id", type = "text", pointer = "/id", nullable = false },
  { name = "name", type = "text", pointer = "/name" },
  { name = "score", type = "bigint", pointer = "/score" },
  { name = "tier", type = "bigint", pointer = "/tier" },
]
"#;

/// V1 with `profiles.score` as text.
pub const CATALOG_V3: &str = r#"
[[events]]
type = "profile"

[[events.outputs]]
table = "profiles"
mode = "upsert"
key = ["id"]
columns = [
  { name = "id", type = "text", pointer = "/id", nullable = false },
  { name = "name", type = "text", pointer = "/name" },
  { name = "score", type = "text", pointer = "/score" },
]
"#;

pub fn catalog(text: &str) -> Catalog {
    Catalog::load([Source {
        name: "test.toml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"))
}

pub fn table<'c>(catalog: &'c Catalog, name: &str) -> &'c Table {
    &catalog.tables()[catalog.table_id(name).expect("table").0 as usize]
}

pub const T0: &str = "2024-05-01T11:00:00.000000Z";
pub const T1: &str = "2024-05-01T12:00:00.000000Z";
/// One microsecond after [`T1`].
pub const T2: &str = "2024-05-01T12:00:00.000001Z";

pub type Row = Vec<Option<String>>;

/// A row: the lineage values, then `data` (the declared columns, in table order).
pub fn row(event: &str, index: u32, received_at: &str, seq: &str, sub: u32, data: &[Option<&str>]) -> Row {
    [
        Some(event),
        Some(&*index.to_string()),
        Some(received_at),
        Some("shardId-000000000000"),
        Some(seq),
        Some(&*sub.to_string()),
    ]
    .into_iter()
    .map(|v| v.map(str::to_owned))
    .chain(data.iter().map(|v| v.map(str::to_owned)))
    .collect()
}

/// A batch as the importer hands it over: where it is, its metadata, its columns (from its
/// schema object) and the CSV body.
#[derive(Debug, Clone)]
pub struct Batch {
    pub key: String,
    pub location: ObjectLocation,
    pub metadata: BatchMetadata,
    pub columns: Vec<String>,
    pub body: Vec<u8>,
}

impl Batch {
    /// A batch of `rows` (in table column order) for `table`.
    pub fn new(key: &str, table: &Table, rows: &[Row]) -> Batch {
        let columns: Vec<String> = table.column_names().map(str::to_owned).collect();
        Batch::with_columns(key, table, &columns, rows)
    }

    /// A batch whose rows hold the values of `columns`, in that order.
    pub fn with_columns(key: &str, table: &Table, columns: &[String], rows: &[Row]) -> Batch {
        let mut body = Vec::new();
        for r in rows {
            assert_eq!(r.len(), columns.len(), "row width");
            let mut w = RowWriter::new(&mut body);
            for value in r {
                match value {
                    None => w.null(),
                    // Quoted only when needed (always when empty), as the mapper writes them.
                    Some(v) => w.text(v),
                }
            }
            w.finish();
        }
        // The stream positions the rows span, as a real batch's metadata says.
        let seq = columns.iter().position(|c| c == "_sequence");
        let sub = columns.iter().position(|c| c == "_sub_sequence");
        let positions: Vec<Position> = match (seq, sub) {
            (Some(seq), Some(sub)) => rows
                .iter()
                .filter_map(|r| {
                    let s = SequenceNumber::parse(r[seq].as_deref()?).ok()?;
                    Some(Position::new(s, r[sub].as_deref()?.parse().ok()?))
                })
                .collect(),
            _ => Vec::new(),
        };
        let first = positions
            .iter()
            .min()
            .cloned()
            .unwrap_or_else(|| Position::new(SequenceNumber::from_u128(1), 0));
        let last = positions
            .iter()
            .max()
            .cloned()
            .unwrap_or_else(|| Position::new(SequenceNumber::from_u128(2), 3));
        // Not a real SHA-256, but a function of the content, which is all the manifest needs.
        let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        Batch {
            key: key.to_owned(),
            location: ObjectLocation::new("test-bucket", key),
            columns: columns.to_vec(),
            metadata: BatchMetadata {
                table: table.name.clone(),
                columns_sha256: microbatch_core::batch::columns_digest(columns),
                column_count: columns.len() as u32,
                csv_bytes: body.len() as u64,
                row_count: rows.len() as u64,
                shard: ShardId::new("shardId-000000000000"),
                first,
                last,
                catalog_version: "test".into(),
                sha256: format!("{hash:016x}").repeat(4),
                min_received_at: Timestamp::parse_rfc3339(T0).unwrap(),
                max_received_at: Timestamp::parse_rfc3339(T2).unwrap(),
                compression: Default::default(),
                csv: microbatch_core::csv::CsvEncoding::CURRENT,
            },
            body,
        }
    }

    /// A batch as consumers wrote them before the NULL marker ([`CsvEncoding::EmptyIsNull`]: NULL
    /// an unquoted empty field).
    ///
    /// [`CsvEncoding::EmptyIsNull`]: microbatch_core::csv::CsvEncoding::EmptyIsNull
    pub fn first_encoding(key: &str, table: &Table, rows: &[Row]) -> Batch {
        let mut batch = Batch::new(key, table, rows);
        batch.body.clear();
        for r in rows {
            let mut w = RowWriter::new(&mut batch.body);
            for value in r {
                match value {
                    None => w.encoded(b""),
                    Some(v) => {
                        assert!(!v.ends_with("NULL"), "spelled the same in both encodings");
                        w.text(v)
                    }
                }
            }
            w.finish();
        }
        batch.metadata.csv_bytes = batch.body.len() as u64;
        batch.metadata.csv = microbatch_core::csv::CsvEncoding::EmptyIsNull;
        batch
    }

    pub fn request<'a>(&'a self, table: &'a Table) -> LoadRequest<'a> {
        self.skipping(table, &[])
    }

    /// The request that leaves the rows `skip` out.
    pub fn skipping<'a>(&'a self, table: &'a Table, skip: &'a [u64]) -> LoadRequest<'a> {
        LoadRequest {
            location: &self.location,
            metadata: &self.metadata,
            table,
            columns: &self.columns,
            body: Some(&self.body),
            skip_rows: skip,
        }
    }
}

/// A manifest row: key, sha256, table, rows, inserted.
pub type ManifestRow = (String, String, String, i64, i64);

/// Reads a warehouse back, in each dialect's SQL.
pub trait Probe: Warehouse {
    /// Every row of `table`, each value as text in the form the batch wrote it (timestamps as
    /// `2024-05-01T12:00:00.000000Z`, booleans `true`/`false`), ordered by (`_event_id`,
    /// `_row_index`) for append tables and by key for upsert tables.
    fn rows(&self, table: &Table) -> impl Future<Output = Vec<Row>>;
    fn manifest(&self) -> impl Future<Output = Vec<ManifestRow>>;
    /// Makes inserting a row whose `column` is `value` into `table` fail (a trigger).
    fn fail_on(&self, table: &str, column: &str, value: &str) -> impl Future<Output = ()>;
    fn diff(&self, catalog: &Catalog) -> impl Future<Output = Vec<String>>;
    /// The manifest's count of refused rows of `key`.
    fn refused(&self, key: &str) -> impl Future<Output = i64>;
}

fn some<'a>(values: &[&'a str]) -> Vec<Option<&'a str>> {
    values.iter().map(|v| Some(*v)).collect()
}

fn assert_permanent(result: Result<LoadOutcome, WarehouseError>, what: &str) -> WarehouseError {
    let e = result.expect_err(what);
    assert_eq!(classify(&e), ErrorClass::Permanent, "{what}: {e}");
    e
}

fn fact(event: &str, index: u32, txt: Option<&str>) -> Row {
    row(
        event,
        index,
        T1,
        "100",
        0,
        &[txt, Some("1"), None, None, None, None, None],
    )
}

// ---------------------------------------------------------------------------------------------
// Scenarios

pub async fn migrations_are_idempotent(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.expect("first migrate");
    w.migrate(&c).await.expect("second migrate");
    assert_eq!(w.diff(&c).await, Vec::<String>::new());
    let facts = table(&c, "facts");
    let b = Batch::new("k1", facts, &[fact("e1", 0, Some("a"))]);
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    w.migrate(&c).await.expect("migrate over loaded tables");
    assert_eq!(w.rows(facts).await.len(), 1);
    assert_eq!(w.manifest().await.len(), 1);
}

pub async fn load_stores_exact_values(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows = vec![
        row(
            "e1",
            0,
            T1,
            "100",
            0,
            &some(&[
                "hello",
                "42",
                "1.5",
                "true",
                "2024-05-01T12:00:00.500000Z",
                "2024-05-01",
                r#"{"a": [1, "x"]}"#,
            ]),
        ),
        row(
            "e1",
            1,
            T1,
            "100",
            0,
            &[
                None,
                Some("-9223372036854775808"),
                Some("-0.25"),
                Some("false"),
                None,
                None,
                None,
            ],
        ),
        row(
            "e2",
            0,
            T2,
            "49590338271490256608559692538361571095921575989136588898",
            7,
            &[
                Some(""),
                Some("9223372036854775807"),
                Some("3.25"),
                None,
                Some("1999-12-31T23:59:59.999999Z"),
                Some("2000-02-29"),
                Some("[]"),
            ],
        ),
    ];
    let b = Batch::new("loads/facts/a.csv", facts, &rows);
    assert!(!w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap());
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 3 }
    );
    assert_eq!(w.rows(facts).await, rows);
    assert!(w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap());
    assert!(!w.is_loaded(&b.key, &"0".repeat(64)).await.unwrap());
    assert!(
        !w.is_loaded("loads/facts/other.csv", &b.metadata.sha256)
            .await
            .unwrap()
    );
    assert_eq!(
        w.manifest().await,
        vec![(b.key.clone(), b.metadata.sha256.clone(), "facts".into(), 3, 3)]
    );
}

pub async fn same_batch_twice_is_already_loaded(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let b = Batch::new("k", facts, &[fact("e1", 0, Some("a")), fact("e1", 1, Some("b"))]);
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 2 }
    );
    let before = w.rows(facts).await;
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::AlreadyLoaded
    );
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::AlreadyLoaded
    );
    assert_eq!(w.rows(facts).await, before);
    assert_eq!(w.manifest().await.len(), 1);
}

pub async fn overlapping_batches_insert_only_new_rows(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let first = vec![
        fact("e1", 0, Some("a")),
        fact("e1", 1, Some("b")),
        fact("e2", 0, Some("c")),
    ];
    let a = Batch::new("ka", facts, &first);
    assert_eq!(
        w.load(a.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 3 }
    );
    // A replay cut differently: one row already there (with other content, which must not win),
    // one new row twice.
    let b = Batch::new(
        "kb",
        facts,
        &[
            fact("e2", 0, Some("changed")),
            fact("e3", 0, Some("d")),
            fact("e3", 0, Some("d")),
        ],
    );
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    let mut want = first;
    want.push(fact("e3", 0, Some("d")));
    assert_eq!(w.rows(facts).await, want);
    let manifest = w.manifest().await;
    assert_eq!(manifest.len(), 2);
    assert!(manifest.contains(&("kb".into(), b.metadata.sha256.clone(), "facts".into(), 3, 1)));
}

pub async fn batch_columns_in_another_order(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows = vec![
        row(
            "e1",
            0,
            T1,
            "5",
            0,
            &some(&["t", "7", "2.5", "true", T0, "2024-01-02", "{}"]),
        ),
        row(
            "e1",
            1,
            T1,
            "5",
            0,
            &[None, Some("8"), None, Some("false"), None, None, None],
        ),
    ];
    let mut columns: Vec<String> = facts.column_names().map(str::to_owned).collect();
    columns.reverse();
    columns.swap(0, 5);
    let permuted: Vec<Row> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|name| r[facts.column_names().position(|n| n == name).unwrap()].clone())
                .collect()
        })
        .collect();
    let b = Batch::with_columns("k", facts, &columns, &permuted);
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 2 }
    );
    assert_eq!(w.rows(facts).await, rows);
}

fn profile(event: &str, received_at: &str, seq: &str, sub: u32, id: &str, name: &str) -> Row {
    row(
        event,
        0,
        received_at,
        seq,
        sub,
        &[Some(id), Some(name), Some("1")],
    )
}

pub async fn upsert_latest_wins(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let profiles = table(&c, "profiles");
    let names = |rows: Vec<Row>| -> Vec<(String, String)> {
        rows.into_iter()
            .map(|r| (r[6].clone().unwrap(), r[7].clone().unwrap()))
            .collect()
    };
    let first = Batch::new(
        "p1",
        profiles,
        &[
            profile("ev1", T1, "100", 0, "a", "a-100"),
            // "99" sorts after "100" as text, but comes first in the stream.
            profile("ev2", T1, "99", 0, "a", "a-99"),
            profile("ev4", T2, "5", 1, "b", "b-5.1"),
            profile("ev3", T2, "5", 0, "b", "b-5.0"),
            profile("ev5", T0, "999", 0, "c", "c-t0"),
        ],
    );
    assert_eq!(
        w.load(first.request(profiles)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 3 }
    );
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    assert_eq!(
        names(w.rows(profiles).await),
        want(&[("a", "a-100"), ("b", "b-5.1"), ("c", "c-t0")])
    );
    // Older (by received_at) than what is stored for a; newer for c.
    let second = Batch::new(
        "p2",
        profiles,
        &[
            profile("ev6", T0, "1000", 0, "a", "a-older"),
            profile("ev7", T2, "1000", 0, "c", "c-t2"),
        ],
    );
    assert_eq!(
        w.load(second.request(profiles)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    assert_eq!(
        names(w.rows(profiles).await),
        want(&[("a", "a-100"), ("b", "b-5.1"), ("c", "c-t2")])
    );
    // Same received_at, later sequence (longer, so numerically larger).
    let third = Batch::new("p3", profiles, &[profile("ev8", T1, "1000", 0, "a", "a-1000")]);
    assert_eq!(
        w.load(third.request(profiles)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    // The first batch replayed under another key (a re-cut) changes nothing; under its own key it
    // is skipped.
    let replay = Batch {
        key: "p1-replayed".into(),
        location: ObjectLocation::new("test-bucket", "p1-replayed"),
        ..first.clone()
    };
    assert_eq!(
        w.load(replay.request(profiles)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 0 }
    );
    assert_eq!(
        w.load(first.request(profiles)).await.unwrap(),
        LoadOutcome::AlreadyLoaded
    );
    let stored = w.rows(profiles).await;
    assert_eq!(
        names(stored.clone()),
        want(&[("a", "a-1000"), ("b", "b-5.1"), ("c", "c-t2")])
    );
    // The whole winning row is stored, lineage included.
    assert_eq!(stored[0], profile("ev8", T1, "1000", 0, "a", "a-1000"));
    assert_eq!(stored[1], profile("ev4", T2, "5", 1, "b", "b-5.1"));
}

/// Text that CSV, COPY and SQL quoting could each get wrong.
pub const HOSTILE: &[&str] = &[
    "",
    "\"",
    "\"\"",
    "\"quoted\"",
    "a,b",
    ",",
    ",,",
    "line1\nline2",
    "\n",
    "\n\n",
    "cr\rlf\r\n",
    "\r",
    "back\\slash",
    "\\",
    "\\.",
    "a\n\\.\nb",
    "\\.\n",
    "\n\\.",
    "\\N",
    // The CSV's NULL marker, and its escaped spellings, as values.
    "NULL",
    "\\NULL",
    "\\\\NULL",
    "null",
    "  padded  ",
    " ",
    "tab\there",
    "zoë ✓ 日本語 🚀 עברית",
    "\u{FEFF}bom",
    "\u{2028}line separator",
    "'single'",
    "'); DROP TABLE facts; --",
    "$$dollar$$",
    "\u{1}\u{7f}",
];

pub async fn hostile_strings_round_trip(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let mut rows: Vec<Row> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, s)| fact(&format!("e{i:03}"), 0, Some(s)))
        .collect();
    rows.push(fact("e999", 0, None));
    // The hostile text in a JSON value too (JSON escapes it, the CSV quoting must keep it).
    let json = serde_json::to_string(&HOSTILE).unwrap();
    let mut with_json = fact("e999", 1, Some("json"));
    with_json[12] = Some(json);
    rows.push(with_json);
    let b = Batch::new("hostile", facts, &rows);
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded {
            inserted: rows.len() as u64
        }
    );
    let stored = w.rows(facts).await;
    assert_eq!(stored.len(), rows.len());
    for (got, want) in stored.iter().zip(&rows) {
        assert_eq!(got[..12], want[..12], "{:?}", want[6]);
    }
    let doc: Vec<String> = serde_json::from_str(stored.last().unwrap()[12].as_deref().unwrap()).unwrap();
    assert_eq!(doc, HOSTILE);
    // Empty text and NULL stay apart.
    assert_eq!(stored[0][6], Some(String::new()));
    assert_eq!(stored[rows.len() - 2][6], None);
}

/// A batch written before the NULL marker still loads NULL as NULL and `""` as the empty string.
pub async fn first_csv_encoding_loads_as_written(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows = vec![
        fact("e1", 0, Some("")),
        fact("e2", 0, None),
        fact("e3", 0, Some("x")),
    ];
    let b = Batch::first_encoding("first", facts, &rows);
    assert!(
        !b.body.windows(4).any(|w| w == b"NULL") && b.body.windows(2).any(|w| w == b",,"),
        "{}",
        String::from_utf8_lossy(&b.body)
    );
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 3 }
    );
    assert_eq!(w.rows(facts).await, rows);
}

/// A value the warehouse cannot take is a row's error: it names the row (PostgreSQL's COPY line,
/// SQLite's conversion), the load commits nothing, and the batch loads without that row, its
/// manifest row counting it as refused; a probe names it too, and commits nothing either.
pub async fn bad_values_name_their_row_and_commit_nothing(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let good = fact("e1", 0, Some("fine"));
    let after = fact("e3", 0, Some("after"));
    let mut text_in_bigint = fact("e2", 0, Some("x"));
    text_in_bigint[7] = Some("abc".into());
    let mut bad_json = fact("e2", 0, Some("x"));
    bad_json[12] = Some("{not json".into());
    let mut bad_timestamp = fact("e2", 0, Some("x"));
    bad_timestamp[10] = Some("2024-13-45T00:00:00Z".into());
    let mut null_event = fact("e2", 0, Some("x"));
    null_event[0] = None;
    let mut empty_bigint = fact("e2", 0, Some("x"));
    empty_bigint[7] = Some(String::new());
    for (name, bad) in [
        ("text in a bigint column", text_in_bigint),
        ("invalid JSON", bad_json),
        ("invalid timestamp", bad_timestamp),
        ("NULL event id", null_event),
        ("empty string in a bigint column", empty_bigint),
    ] {
        let b = Batch::new(name, facts, &[good.clone(), bad, after.clone()]);
        let e = w.load(b.request(facts)).await.expect_err(name);
        assert_eq!(classify(&e), ErrorClass::Row, "{name}: {e}");
        assert_eq!(e.row, Some(1), "{name}: {e}");
        assert!(!w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap(), "{name}");
        assert_eq!(w.rows(facts).await, Vec::<Row>::new(), "{name}");
        let probed = w.probe(b.request(facts), 1..3).await.expect_err(name);
        assert_eq!(probed.row, Some(1), "{name}: {probed}");
        w.probe(b.request(facts), 0..1).await.expect(name);
        w.probe(b.skipping(facts, &[1]), 0..3).await.expect(name);
        assert_eq!(
            w.rows(facts).await,
            Vec::<Row>::new(),
            "a probe commits nothing: {name}"
        );
    }
    assert_eq!(w.manifest().await, Vec::<ManifestRow>::new());
    // Without the refused row the batch loads, once.
    let mut bad = fact("e2", 0, Some("x"));
    bad[7] = Some("abc".into());
    let b = Batch::new("refused", facts, &[good.clone(), bad, after.clone()]);
    assert_eq!(
        w.load(b.skipping(facts, &[1])).await.unwrap(),
        LoadOutcome::Loaded { inserted: 2 }
    );
    assert_eq!(w.rows(facts).await, vec![good.clone(), after.clone()]);
    assert_eq!(
        w.load(b.skipping(facts, &[1])).await.unwrap(),
        LoadOutcome::AlreadyLoaded
    );
    assert_eq!(w.refused(&b.key).await, 1, "the manifest counts the refused row");
    assert!(w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap());
}

pub async fn failure_mid_load_commits_nothing(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    w.fail_on("facts", "txt", "boom").await;
    // Enough rows that SQLite inserts several statements' worth before the bad one.
    let mut rows: Vec<Row> = (0..1200)
        .map(|i| fact(&format!("e{i:05}"), 0, Some("ok")))
        .collect();
    rows.push(fact("e99999", 0, Some("boom")));
    let b = Batch::new("boom", facts, &rows);
    let e = w
        .load(b.request(facts))
        .await
        .expect_err("the trigger fails the load");
    assert!(e.message.contains("boom"), "{e}");
    assert_eq!(w.rows(facts).await.len(), 0);
    assert_eq!(w.manifest().await.len(), 0);
    assert!(!w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap());
    rows.pop();
    let b = Batch::new("fine", facts, &rows);
    assert_eq!(
        w.load(b.request(facts)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1200 }
    );
}

pub async fn a_group_loads_in_one_transaction(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let (facts, profiles) = (table(&c, "facts"), table(&c, "profiles"));
    // Each row at its own stream position, as a real batch's are.
    let at = |event: &str, sub: u32, txt: &str| {
        row(
            event,
            0,
            T1,
            "100",
            sub,
            &[Some(txt), Some("1"), None, None, None, None, None],
        )
    };
    let a = Batch::new("ga", facts, &[at("e1", 1, "a"), at("e2", 2, "b")]);
    let p = Batch::new("gp", profiles, &[profile("ev1", T1, "100", 0, "a", "a-100")]);
    // Overlaps `a` (PostgreSQL takes its staged path, after `p` used one already).
    let b = Batch::new("gb", facts, &[at("e2", 2, "b"), at("e3", 3, "c")]);
    let q = Batch::new("gq", profiles, &[profile("ev2", T2, "101", 0, "a", "a-101")]);
    let outcomes = w
        .load_all(&[
            a.request(facts),
            p.request(profiles),
            b.request(facts),
            q.request(profiles),
            a.request(facts),
        ])
        .await
        .unwrap();
    // `p`'s row is replaced by `q`'s within the group: PostgreSQL wrote it first (1), Redshift
    // merges the group's latest rows only (0).
    let p_inserted = match outcomes.get(1) {
        Some(LoadOutcome::Loaded { inserted }) if *inserted <= 1 => *inserted,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        outcomes,
        vec![
            LoadOutcome::Loaded { inserted: 2 },
            LoadOutcome::Loaded { inserted: p_inserted },
            LoadOutcome::Loaded { inserted: 1 },
            LoadOutcome::Loaded { inserted: 1 },
            LoadOutcome::AlreadyLoaded,
        ],
        "one outcome per request, in order; the batch named twice loads once"
    );
    assert_eq!(
        w.rows(facts).await,
        vec![at("e1", 1, "a"), at("e2", 2, "b"), at("e3", 3, "c")]
    );
    assert_eq!(w.rows(profiles).await[0][7].as_deref(), Some("a-101"));
    assert_eq!(w.manifest().await.len(), 4);
    assert_eq!(
        w.load_all(&[a.request(facts), b.request(facts)]).await.unwrap(),
        vec![LoadOutcome::AlreadyLoaded; 2]
    );
    assert_eq!(w.load_all(&[]).await.unwrap(), Vec::<LoadOutcome>::new());
}

pub async fn a_failed_group_commits_nothing(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let (facts, profiles) = (table(&c, "facts"), table(&c, "profiles"));
    let good = Batch::new("good", facts, &[fact("e1", 0, Some("fine"))]);
    let p = Batch::new("p", profiles, &[profile("ev1", T1, "100", 0, "a", "a-100")]);
    let mut text_in_bigint = fact("e2", 0, Some("x"));
    text_in_bigint[7] = Some("abc".into());
    let bad = Batch::new("bad", facts, &[text_in_bigint]);
    let e = w
        .load_all(&[good.request(facts), p.request(profiles), bad.request(facts)])
        .await
        .expect_err("the last batch of the group is bad");
    assert_eq!(classify(&e), ErrorClass::Row, "{e}");
    assert_eq!(e.row, Some(0), "the row of the batch that has it: {e}");
    for b in [&good, &p, &bad] {
        assert!(
            !w.is_loaded(&b.key, &b.metadata.sha256).await.unwrap(),
            "{}",
            b.key
        );
    }
    assert_eq!(w.rows(facts).await, Vec::<Row>::new());
    assert_eq!(w.rows(profiles).await, Vec::<Row>::new());
    assert_eq!(w.manifest().await, Vec::<ManifestRow>::new());
    assert_eq!(
        w.load_all(&[good.request(facts), p.request(profiles)])
            .await
            .unwrap(),
        vec![LoadOutcome::Loaded { inserted: 1 }; 2],
        "the good batches load once the bad one is out of the group"
    );
}

pub async fn unknown_columns_are_permanent(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let mut columns: Vec<String> = facts.column_names().map(str::to_owned).collect();
    columns[6] = "nope\"; DROP TABLE facts; --".into();
    let b = Batch::with_columns("k", facts, &columns, &[fact("e1", 0, Some("a"))]);
    let e = assert_permanent(w.load(b.request(facts)).await, "unknown column");
    assert!(e.message.contains("does not have"), "{e}");
    columns[6] = "n".into();
    let b = Batch::with_columns("k", facts, &columns, &[fact("e1", 0, Some("a"))]);
    assert_permanent(w.load(b.request(facts)).await, "duplicated column");
    assert_eq!(w.manifest().await.len(), 0);
    assert_eq!(w.diff(&c).await, Vec::<String>::new(), "the table is still there");
}

pub async fn new_catalog_columns_are_added(w: &impl Probe) {
    let v1 = catalog(CATALOG_V1);
    let v2 = catalog(CATALOG_V2);
    w.migrate(&v1).await.unwrap();
    let facts1 = table(&v1, "facts");
    let b = Batch::new("old", facts1, &[fact("e1", 0, Some("old"))]);
    w.load(b.request(facts1)).await.unwrap();
    assert_eq!(w.diff(&v2).await.len(), 2);
    w.migrate(&v2).await.unwrap();
    assert_eq!(w.diff(&v2).await, Vec::<String>::new());
    assert_eq!(
        w.diff(&v1).await,
        Vec::<String>::new(),
        "extra columns are no difference"
    );
    let facts2 = table(&v2, "facts");
    let mut new = fact("e2", 0, Some("new"));
    new.push(Some("a note".into()));
    let b = Batch::new("new", facts2, std::slice::from_ref(&new));
    assert_eq!(
        w.load(b.request(facts2)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    let mut old = fact("e1", 0, Some("old"));
    old.push(None);
    assert_eq!(w.rows(facts2).await, vec![old, new]);
    // An old batch (without the new column) still loads into the wider table.
    let b = Batch::new("old2", facts1, &[fact("e3", 0, Some("older"))]);
    assert_eq!(
        w.load(b.request(facts2)).await.unwrap(),
        LoadOutcome::Loaded { inserted: 1 }
    );
    let profiles = table(&v2, "profiles");
    let mut p = profile("ev1", T1, "1", 0, "a", "a");
    p.push(Some("3".into()));
    let b = Batch::new("p", profiles, std::slice::from_ref(&p));
    w.load(b.request(profiles)).await.unwrap();
    assert_eq!(w.rows(profiles).await, vec![p]);
}

pub async fn schema_diff_names_differences(w: &impl Probe) {
    let v1 = catalog(CATALOG_V1);
    let before = w.diff(&v1).await;
    assert_eq!(
        before,
        vec![
            "table \"microbatch_manifest\" is missing".to_owned(),
            "table \"facts\" is missing".to_owned(),
            "table \"profiles\" is missing".to_owned(),
        ]
    );
    w.migrate(&v1).await.unwrap();
    assert_eq!(w.diff(&v1).await, Vec::<String>::new());
    let v2 = w.diff(&catalog(CATALOG_V2)).await;
    assert_eq!(v2.len(), 2, "{v2:?}");
    assert!(
        v2[0].starts_with("column \"facts\".\"note\" is missing (the catalog wants "),
        "{v2:?}"
    );
    assert!(
        v2[1].starts_with("column \"profiles\".\"tier\" is missing"),
        "{v2:?}"
    );
    let v3 = w.diff(&catalog(CATALOG_V3)).await;
    assert_eq!(v3.len(), 1, "{v3:?}");
    assert!(v3[0].starts_with("column \"profiles\".\"score\" is "), "{v3:?}");
    assert!(v3[0].contains("in the warehouse, the catalog wants "), "{v3:?}");
}

pub async fn concurrent_loads_of_one_batch(w: &impl Probe) {
    let c = catalog(CATALOG_V1);
    w.migrate(&c).await.unwrap();
    let facts = table(&c, "facts");
    let rows: Vec<Row> = (0..200)
        .map(|i| fact(&format!("e{i:04}"), 0, Some("x")))
        .collect();
    let b = Batch::new("race", facts, &rows);
    let (r1, r2, r3, r4) = tokio::join!(
        w.load(b.request(facts)),
        w.load(b.request(facts)),
        w.load(b.request(facts)),
        w.load(b.request(facts)),
    );
    let mut loaded = 0;
    for r in [r1, r2, r3, r4] {
        match r {
            Ok(LoadOutcome::Loaded { inserted }) => {
                assert_eq!(inserted, 200);
                loaded += 1;
            }
            Ok(LoadOutcome::AlreadyLoaded) => {}
            Err(e) => {
                // The loser of the race on the manifest row: retried, it skips.
                assert_eq!(classify(&e), ErrorClass::Transient, "{e}");
                assert_eq!(
                    w.load(b.request(facts)).await.unwrap(),
                    LoadOutcome::AlreadyLoaded
                );
            }
        }
    }
    assert_eq!(loaded, 1);
    assert_eq!(w.rows(facts).await.len(), 200);
    assert_eq!(w.manifest().await.len(), 1);
}

/// One `#[tokio::test]` per scenario above, each on a fresh warehouse from `$fixture().await`
/// (a value with a `w` field and an async `finish(self)`).
macro_rules! behaviour_tests {
    ($fixture:ident) => {
        behaviour_tests!(
            @each $fixture;
            migrations_are_idempotent,
            load_stores_exact_values,
            same_batch_twice_is_already_loaded,
            overlapping_batches_insert_only_new_rows,
            batch_columns_in_another_order,
            upsert_latest_wins,
            hostile_strings_round_trip,
            first_csv_encoding_loads_as_written,
            bad_values_name_their_row_and_commit_nothing,
            failure_mid_load_commits_nothing,
            unknown_columns_are_permanent,
            a_group_loads_in_one_transaction,
            a_failed_group_commits_nothing,
            new_catalog_columns_are_added,
            schema_diff_names_differences,
            concurrent_loads_of_one_batch,
        );
    };
    (@each $fixture:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture().await;
                testkit::$name(&fixture.w).await;
                fixture.finish().await;
            }
        )*
    };
}
pub(crate) use behaviour_tests;
