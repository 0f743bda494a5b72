//! Step 2 (and 4) of the importer: what to do with one announced object.
//!
//! The driver gathers what it knows about the object into an [`ImportInput`] and asks [`decide`]
//! before each load, and again after a failed one with the failure in `last_error`. The answer is
//! a [`Decision`]; when it is [`Decision::DeadLetter`], the [`DeadLetterReason`] renders as the one
//! line that travels with the message to the dead-letter queue.
//!
//! The checks run in this order, and the order matters:
//!
//! 1. metadata present (absent may mean a sidecar not yet written: retried) and readable;
//! 2. already in the load manifest: skip. This comes before the catalog checks and the last error,
//!    so a duplicate delivery of a loaded batch is never dead-lettered because the catalog moved
//!    on since, or because a concurrent importer's load won the race;
//! 3. key and metadata agree (table segment, compression extension);
//! 4. the schema object the metadata names is there (absent: retried, as for the metadata) and
//!    is the one it names;
//! 5. the table is in the catalog and the batch has exactly its columns (in any order: the COPY
//!    names them). When the batch was written under another catalog version, this importer may
//!    just be behind a deploy, so the mismatch is retried before it is dead-lettered;
//! 6. the last warehouse error, if any: permanent is dead-lettered, transient is retried with
//!    backoff until the attempts run out. (A row's error never gets here: the importer isolates
//!    the row first, see [`RowIsolation`](super::RowIsolation).)

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::classify::{ErrorClass, WarehouseError, classify};
use super::content::ContentError;
use super::notification::{NotificationError, ObjectRef};
use super::one_line;
use crate::backoff::Backoff;
use crate::batch::{BatchMetadata, BatchSchema, MetadataError};
use crate::compression::DecompressError;
use crate::keys;
use crate::time::Timestamp;

/// Everything [`decide`] looks at for one object.
#[derive(Clone, Copy, Debug)]
pub struct ImportInput<'a> {
    pub object: &'a ObjectRef,
    /// `None` when the object has no metadata (yet); else what reading it gave.
    pub metadata: Option<&'a Result<BatchMetadata, MetadataError>>,
    /// `None` when the schema object the metadata names is not there (yet); else what reading
    /// it gave. Not looked at without good metadata.
    pub schema: Option<&'a Result<BatchSchema, MetadataError>>,
    /// The catalog's columns for the metadata's table; `None` when the catalog has no such table.
    pub expected_columns: Option<&'a [String]>,
    /// The importer's catalog version.
    pub catalog_version: &'a str,
    /// Whether the load manifest already holds this object's `(key, sha256)`.
    pub already_loaded: bool,
    /// 1-based: the attempt about to run or, with `last_error`, the one that just failed. With SQS
    /// this is the message's `ApproximateReceiveCount`. Zero is read as one.
    pub attempt: u32,
    /// How the attempt `attempt` failed, if it did.
    pub last_error: Option<&'a WarehouseError>,
    pub now: Timestamp,
    /// Uniform in `[0, 1)`, for the backoff's jitter.
    pub draw: f64,
}

/// What to do with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// COPY it (after checking its content with [`ContentCheck`](super::ContentCheck)), recording
    /// it in the load manifest in the same transaction.
    Load,
    /// Ack without loading.
    Skip { reason: SkipReason },
    /// Try again at `at` (e.g. hide the message until then); `attempt` is the number of that next
    /// attempt.
    RetryAt { at: Timestamp, attempt: u32 },
    /// Send the message to the dead-letter queue with `reason`, then ack it.
    DeadLetter { reason: DeadLetterReason },
}

/// Why an object is acked without being loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The manifest has this exact content under this key: a duplicate delivery or a replayed
    /// flush that wrote the same bytes.
    AlreadyLoaded { key: String, sha256: String },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::AlreadyLoaded { key, sha256 } => {
                write!(f, "already loaded: {key:?} with sha256 {sha256}")
            }
        }
    }
}

/// Why a batch goes to the dead-letter queue. Renders as one line (foreign text is flattened and
/// shortened), fit for an SQS message attribute; [`code`](Self::code) is the stable label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterReason {
    #[error("malformed notification: {}", one_line(&.0.to_string()))]
    MalformedNotification(NotificationError),
    #[error("no batch metadata found after {attempts} attempt(s)")]
    MissingMetadata { attempts: u32 },
    #[error("bad metadata: {}", one_line(&.0.to_string()))]
    BadMetadata(MetadataError),
    #[error("no schema object {} found after {attempts} attempt(s)", one_line(&format!("{key:?}")))]
    MissingSchema { key: String, attempts: u32 },
    #[error("object key {} does not match its metadata: {}", one_line(&format!("{key:?}")), one_line(detail))]
    KeyMismatch { key: String, detail: String },
    #[error(
        "unknown table {} (batch catalog version {}, importer catalog version {})",
        quoted(table),
        one_line(batch_catalog_version),
        one_line(catalog_version)
    )]
    UnknownTable {
        table: String,
        batch_catalog_version: String,
        catalog_version: String,
    },
    /// Boxed: its column lists would otherwise make every reason (and every `Result` carrying one)
    /// twice as large.
    #[error("{0}")]
    SchemaMismatch(Box<SchemaMismatch>),
    /// The bytes are not the batch the metadata describes.
    #[error("{0}")]
    Content(ContentError),
    #[error("cannot decompress: {}", one_line(&.0.to_string()))]
    Decompress(DecompressError),
    /// Row isolation gave up: too many rows refused, or none to blame.
    #[error("{}", one_line(.0))]
    RowsRefused(String),
    #[error("warehouse rejected the batch: {}", one_line(&.0.to_string()))]
    WarehouseRejected(WarehouseError),
    #[error("gave up after {attempts} attempts; last error: {}", one_line(&last_error.to_string()))]
    GaveUp {
        attempts: u32,
        last_error: WarehouseError,
    },
}

impl DeadLetterReason {
    /// A stable label for metrics and for a machine-readable message attribute.
    pub fn code(&self) -> &'static str {
        match self {
            DeadLetterReason::MalformedNotification(_) => "malformed_notification",
            DeadLetterReason::MissingMetadata { .. } => "missing_metadata",
            DeadLetterReason::BadMetadata(_) => "bad_metadata",
            DeadLetterReason::MissingSchema { .. } => "missing_schema",
            DeadLetterReason::KeyMismatch { .. } => "key_mismatch",
            DeadLetterReason::UnknownTable { .. } => "unknown_table",
            DeadLetterReason::SchemaMismatch(_) => "schema_mismatch",
            DeadLetterReason::Content(e) => e.code(),
            DeadLetterReason::Decompress(_) => "corrupt_compression",
            DeadLetterReason::RowsRefused(_) => "rows_refused",
            DeadLetterReason::WarehouseRejected(_) => "warehouse_rejected",
            DeadLetterReason::GaveUp { .. } => "gave_up",
        }
    }
}

/// A batch whose columns are not the catalog's columns for its table (order aside).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "schema mismatch for table {}: {} (batch catalog version {}, importer catalog version {})",
    quoted(table),
    column_diff(missing, unexpected, duplicated),
    one_line(batch_catalog_version),
    one_line(catalog_version)
)]
pub struct SchemaMismatch {
    pub table: String,
    /// In the catalog, not in the batch.
    pub missing: Vec<String>,
    /// In the batch, not in the catalog.
    pub unexpected: Vec<String>,
    /// More than once in the batch.
    pub duplicated: Vec<String>,
    pub batch_catalog_version: String,
    pub catalog_version: String,
}

fn quoted(name: &str) -> String {
    format!("`{}`", one_line(name))
}

fn column_diff(missing: &[String], unexpected: &[String], duplicated: &[String]) -> String {
    let mut parts = Vec::new();
    for (label, names) in [
        ("missing columns", missing),
        ("unexpected columns", unexpected),
        ("duplicated columns", duplicated),
    ] {
        if !names.is_empty() {
            let list = names.iter().map(|n| quoted(n)).collect::<Vec<_>>().join(", ");
            parts.push(format!("{label} {list}"));
        }
    }
    one_line(&parts.join("; "))
}

/// Decides what to do with one object; see the module docs for the order of the checks.
pub fn decide(input: &ImportInput<'_>, backoff: &Backoff) -> Decision {
    let attempt = input.attempt.max(1);
    let retry_or_dead_letter =
        |reason: DeadLetterReason| match backoff.retry_at(attempt, input.now, input.draw) {
            Some(at) => Decision::RetryAt {
                at,
                attempt: attempt + 1,
            },
            None => Decision::DeadLetter { reason },
        };
    let dead_letter = |reason: DeadLetterReason| Decision::DeadLetter { reason };

    let meta = match input.metadata {
        None => return retry_or_dead_letter(DeadLetterReason::MissingMetadata { attempts: attempt }),
        Some(Err(e)) => return dead_letter(DeadLetterReason::BadMetadata(e.clone())),
        Some(Ok(meta)) => meta,
    };
    if input.already_loaded {
        return Decision::Skip {
            reason: SkipReason::AlreadyLoaded {
                key: input.object.key.clone(),
                sha256: meta.sha256.clone(),
            },
        };
    }
    if let Some(detail) = key_mismatch(input.object, meta) {
        return dead_letter(DeadLetterReason::KeyMismatch {
            key: input.object.key.clone(),
            detail,
        });
    }
    let schema = match input.schema {
        None => {
            return retry_or_dead_letter(DeadLetterReason::MissingSchema {
                key: keys::schema_key(&meta.table, &meta.columns_sha256),
                attempts: attempt,
            });
        }
        Some(Err(e)) => return dead_letter(DeadLetterReason::BadMetadata(e.clone())),
        Some(Ok(schema)) => schema,
    };
    if let Some(reason) = catalog_mismatch(meta, schema, input.expected_columns, input.catalog_version) {
        return if meta.catalog_version == input.catalog_version {
            dead_letter(reason)
        } else {
            retry_or_dead_letter(reason)
        };
    }
    match input.last_error {
        None => Decision::Load,
        Some(error) => match classify(error) {
            ErrorClass::Permanent | ErrorClass::Row => {
                dead_letter(DeadLetterReason::WarehouseRejected(error.clone()))
            }
            ErrorClass::Transient => retry_or_dead_letter(DeadLetterReason::GaveUp {
                attempts: attempt,
                last_error: error.clone(),
            }),
        },
    }
}

/// The key is built from the same batch as the metadata, so a disagreement means one of them was
/// tampered with or mixed up; loading would put rows in a table the key does not name.
fn key_mismatch(object: &ObjectRef, meta: &BatchMetadata) -> Option<String> {
    let mut detail = String::new();
    match keys::table_of_batch_key(&object.key) {
        Some(table) if table == meta.table => {}
        Some(table) => {
            let _ = write!(
                detail,
                "key is under table `{table}`, metadata says `{}`",
                meta.table
            );
        }
        None => {
            let _ = write!(detail, "key has no table segment, metadata says `{}`", meta.table);
        }
    }
    let extension = meta.compression.extension();
    if !object.key.ends_with(extension) {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        let _ = write!(
            detail,
            "metadata says compression {:?}, so the key should end in `{extension}`",
            meta.compression
        );
    }
    (!detail.is_empty()).then_some(detail)
}

fn catalog_mismatch(
    meta: &BatchMetadata,
    schema: &BatchSchema,
    expected: Option<&[String]>,
    catalog_version: &str,
) -> Option<DeadLetterReason> {
    let Some(expected) = expected else {
        return Some(DeadLetterReason::UnknownTable {
            table: meta.table.clone(),
            batch_catalog_version: meta.catalog_version.clone(),
            catalog_version: catalog_version.to_owned(),
        });
    };
    let expected_set: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    let batch_set: BTreeSet<&str> = schema.columns.iter().map(String::as_str).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|c| !batch_set.contains(c.as_str()))
        .cloned()
        .collect();
    let mut unexpected: Vec<String> = Vec::new();
    let mut duplicated: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for c in &schema.columns {
        if !seen.insert(c.as_str()) {
            if !duplicated.contains(c) {
                duplicated.push(c.clone());
            }
        } else if !expected_set.contains(c.as_str()) {
            unexpected.push(c.clone());
        }
    }
    if missing.is_empty() && unexpected.is_empty() && duplicated.is_empty() {
        return None;
    }
    Some(DeadLetterReason::SchemaMismatch(Box::new(SchemaMismatch {
        table: meta.table.clone(),
        missing,
        unexpected,
        duplicated,
        batch_catalog_version: meta.catalog_version.clone(),
        catalog_version: catalog_version.to_owned(),
    })))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::batch::Compression;
    use crate::import::classify::WarehouseErrorKind;
    use crate::position::{Position, SequenceNumber, ShardId};

    const KEY: &str = "loads/orders/2024/05/01/12/shardId-000000000001-10-12.csv";

    fn object() -> ObjectRef {
        ObjectRef {
            bucket: "mb-loads".into(),
            key: KEY.into(),
            size: Some(100),
            sequencer: None,
            event_time: Timestamp::from_millis(500),
            event_name: "ObjectCreated:Put".into(),
        }
    }

    fn meta() -> BatchMetadata {
        BatchMetadata {
            table: "orders".into(),
            columns_sha256: crate::batch::columns_digest(&cols(&["event_id", "row_index", "total"])),
            column_count: 3,
            row_count: 3,
            shard: ShardId::new("shardId-000000000001"),
            first: Position::new(SequenceNumber::from_u128(10), 0),
            last: Position::new(SequenceNumber::from_u128(12), 0),
            catalog_version: "v1".into(),
            sha256: "ab".repeat(32),
            csv_bytes: 30,
            min_received_at: Timestamp::from_millis(1),
            max_received_at: Timestamp::from_millis(2),
            compression: Compression::None,
            csv: crate::csv::CsvEncoding::CURRENT,
        }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 3)
    }

    const NOW: Timestamp = Timestamp::from_millis(1_000);

    /// Owns what an [`ImportInput`] borrows, with everything set to "loadable".
    struct Case {
        object: ObjectRef,
        metadata: Option<Result<BatchMetadata, MetadataError>>,
        schema: Option<Result<BatchSchema, MetadataError>>,
        expected_columns: Option<Vec<String>>,
        catalog_version: String,
        already_loaded: bool,
        attempt: u32,
        last_error: Option<WarehouseError>,
    }

    impl Case {
        fn new() -> Self {
            Case {
                object: object(),
                metadata: Some(Ok(meta())),
                schema: Some(Ok(BatchSchema {
                    table: "orders".into(),
                    columns: cols(&["event_id", "row_index", "total"]),
                })),
                expected_columns: Some(cols(&["event_id", "row_index", "total"])),
                catalog_version: "v1".into(),
                already_loaded: false,
                attempt: 1,
                last_error: None,
            }
        }

        fn meta(mut self, f: impl FnOnce(&mut BatchMetadata)) -> Self {
            if let Some(Ok(m)) = &mut self.metadata {
                f(m);
            }
            self
        }

        fn columns(mut self, names: &[&str]) -> Self {
            if let Some(Ok(s)) = &mut self.schema {
                s.columns = cols(names);
            }
            self
        }

        fn decide(&self) -> Decision {
            let input = ImportInput {
                object: &self.object,
                metadata: self.metadata.as_ref(),
                schema: self.schema.as_ref(),
                expected_columns: self.expected_columns.as_deref(),
                catalog_version: &self.catalog_version,
                already_loaded: self.already_loaded,
                attempt: self.attempt,
                last_error: self.last_error.as_ref(),
                now: NOW,
                draw: 0.5,
            };
            decide(&input, &backoff())
        }

        fn dead_letter(&self) -> DeadLetterReason {
            match self.decide() {
                Decision::DeadLetter { reason } => reason,
                other => panic!("expected a dead letter, got {other:?}"),
            }
        }
    }

    fn retry(at_millis: i64, attempt: u32) -> Decision {
        Decision::RetryAt {
            at: Timestamp::from_millis(at_millis),
            attempt,
        }
    }

    #[test]
    fn a_good_batch_loads() {
        assert_eq!(Case::new().decide(), Decision::Load);
    }

    #[test]
    fn column_order_does_not_matter() {
        let case = Case::new().columns(&["total", "event_id", "row_index"]);
        assert_eq!(case.decide(), Decision::Load);
    }

    #[test]
    fn an_already_loaded_batch_is_skipped() {
        let case = Case {
            already_loaded: true,
            ..Case::new()
        };
        let Decision::Skip { reason } = case.decide() else {
            panic!("expected a skip")
        };
        assert_eq!(
            reason,
            SkipReason::AlreadyLoaded {
                key: KEY.into(),
                sha256: "ab".repeat(32)
            }
        );
        assert_eq!(
            reason.to_string(),
            format!("already loaded: \"{KEY}\" with sha256 {}", "ab".repeat(32))
        );
    }

    #[test]
    fn skip_wins_over_a_moved_catalog_and_a_lost_race() {
        let case = Case {
            already_loaded: true,
            expected_columns: Some(cols(&["event_id", "row_index", "total", "currency"])),
            catalog_version: "v2".into(),
            last_error: Some(WarehouseError::with_sqlstate(
                "23505",
                "duplicate key value violates unique constraint",
            )),
            attempt: 3,
            ..Case::new()
        };
        assert!(matches!(case.decide(), Decision::Skip { .. }));
    }

    #[test]
    fn missing_metadata_is_retried_then_dead_lettered() {
        let case = Case {
            metadata: None,
            ..Case::new()
        };
        assert_eq!(case.decide(), retry(1_050, 2));
        let case = Case {
            metadata: None,
            attempt: 2,
            ..Case::new()
        };
        assert_eq!(case.decide(), retry(1_100, 3));
        let case = Case {
            metadata: None,
            attempt: 3,
            ..Case::new()
        };
        let reason = case.dead_letter();
        assert_eq!(reason, DeadLetterReason::MissingMetadata { attempts: 3 });
        assert_eq!(reason.to_string(), "no batch metadata found after 3 attempt(s)");
        assert_eq!(reason.code(), "missing_metadata");
    }

    #[test]
    fn bad_metadata_is_dead_lettered_at_once() {
        let case = Case {
            metadata: Some(Err(MetadataError::Missing("shard"))),
            ..Case::new()
        };
        let reason = case.dead_letter();
        assert_eq!(
            reason.to_string(),
            "bad metadata: batch metadata is missing `shard`"
        );
        assert_eq!(reason.code(), "bad_metadata");
        let case = Case {
            metadata: Some(Err(MetadataError::Invalid {
                field: "rows",
                value: "many\nmore".into(),
            })),
            ..Case::new()
        };
        assert_eq!(
            case.dead_letter().to_string(),
            "bad metadata: batch metadata field `rows` is invalid: \"many\\nmore\""
        );
    }

    #[test]
    fn a_key_that_disagrees_with_its_metadata_is_dead_lettered() {
        let case = Case::new().meta(|m| m.table = "refunds".into());
        let reason = case.dead_letter();
        assert_eq!(reason.code(), "key_mismatch");
        assert_eq!(
            reason.to_string(),
            format!(
                "object key \"{KEY}\" does not match its metadata: key is under table `orders`, metadata says `refunds`"
            )
        );
        let case = Case::new().meta(|m| m.compression = Compression::Gzip);
        assert_eq!(
            case.dead_letter().to_string(),
            format!(
                "object key \"{KEY}\" does not match its metadata: metadata says compression Gzip, so the key should \
                 end in `.csv.gz`"
            )
        );
        let mut case = Case::new();
        case.object.key = "loads/x.csv".into();
        assert_eq!(
            case.dead_letter().to_string(),
            "object key \"loads/x.csv\" does not match its metadata: key has no table segment, metadata says `orders`"
        );
    }

    #[test]
    fn an_unknown_table_is_dead_lettered_when_the_catalogs_agree() {
        let case = Case {
            expected_columns: None,
            ..Case::new()
        };
        let reason = case.dead_letter();
        assert_eq!(reason.code(), "unknown_table");
        assert_eq!(
            reason.to_string(),
            "unknown table `orders` (batch catalog version v1, importer catalog version v1)"
        );
    }

    #[test]
    fn an_unknown_table_from_a_newer_catalog_is_retried_first() {
        let case = Case {
            expected_columns: None,
            ..Case::new()
        }
        .meta(|m| m.catalog_version = "v2".into());
        assert_eq!(case.decide(), retry(1_050, 2));
        let case = Case {
            expected_columns: None,
            attempt: 3,
            ..Case::new()
        }
        .meta(|m| m.catalog_version = "v2".into());
        assert_eq!(
            case.dead_letter().to_string(),
            "unknown table `orders` (batch catalog version v2, importer catalog version v1)"
        );
    }

    #[test]
    fn a_schema_mismatch_names_the_differing_columns() {
        let case = Case::new().columns(&["event_id", "totl", "row_index", "totl", "event_id"]);
        let reason = case.dead_letter();
        assert_eq!(
            reason,
            DeadLetterReason::SchemaMismatch(Box::new(SchemaMismatch {
                table: "orders".into(),
                missing: cols(&["total"]),
                unexpected: cols(&["totl"]),
                duplicated: cols(&["totl", "event_id"]),
                batch_catalog_version: "v1".into(),
                catalog_version: "v1".into(),
            }))
        );
        assert_eq!(reason.code(), "schema_mismatch");

        let case = Case::new().columns(&["event_id", "row_index"]);
        assert_eq!(
            case.dead_letter().to_string(),
            "schema mismatch for table `orders`: missing columns `total` (batch catalog version v1, importer \
             catalog version v1)"
        );
        let case = Case::new().columns(&["event_id", "row_index", "total", "currency", "note"]);
        assert_eq!(
            case.dead_letter().to_string(),
            "schema mismatch for table `orders`: unexpected columns `currency`, `note` (batch catalog version v1, \
             importer catalog version v1)"
        );
        let case = Case::new().columns(&["event_id", "row_index", "total", "total"]);
        assert_eq!(
            case.dead_letter().to_string(),
            "schema mismatch for table `orders`: duplicated columns `total` (batch catalog version v1, importer \
             catalog version v1)"
        );
    }

    #[test]
    fn a_schema_mismatch_across_catalog_versions_is_retried_first() {
        let skewed = |attempt| {
            Case {
                expected_columns: Some(cols(&["event_id", "row_index"])),
                catalog_version: "v1".into(),
                attempt,
                ..Case::new()
            }
            .meta(|m| m.catalog_version = "v2".into())
        };
        assert_eq!(skewed(1).decide(), retry(1_050, 2));
        assert_eq!(
            skewed(3).dead_letter().to_string(),
            "schema mismatch for table `orders`: unexpected columns `total` (batch catalog version v2, importer \
             catalog version v1)"
        );
    }

    #[test]
    fn a_permanent_warehouse_error_is_dead_lettered_at_once() {
        let error = WarehouseError::with_sqlstate(
            "22P02",
            "invalid input syntax for type integer: \"abc\"\nCONTEXT:  COPY orders, line 3, column total: \"abc\"",
        );
        let case = Case {
            last_error: Some(error.clone()),
            ..Case::new()
        };
        let reason = case.dead_letter();
        assert_eq!(reason, DeadLetterReason::WarehouseRejected(error));
        assert_eq!(reason.code(), "warehouse_rejected");
        assert_eq!(
            reason.to_string(),
            "warehouse rejected the batch: database error (SQLSTATE 22P02): invalid input syntax for type integer: \
             \"abc\" CONTEXT: COPY orders, line 3, column total: \"abc\""
        );
    }

    #[test]
    fn a_transient_warehouse_error_backs_off_then_gives_up() {
        let error = WarehouseError::new(WarehouseErrorKind::Connection, "connection reset by peer");
        let at = |attempt| Case {
            last_error: Some(error.clone()),
            attempt,
            ..Case::new()
        };
        // Ceilings 100 ms, 200 ms; the draw is 0.5.
        assert_eq!(at(1).decide(), retry(1_050, 2));
        assert_eq!(at(2).decide(), retry(1_100, 3));
        let reason = at(3).dead_letter();
        assert_eq!(
            reason,
            DeadLetterReason::GaveUp {
                attempts: 3,
                last_error: error.clone()
            }
        );
        assert_eq!(reason.code(), "gave_up");
        assert_eq!(
            reason.to_string(),
            "gave up after 3 attempts; last error: connection error: connection reset by peer"
        );
        assert!(matches!(at(9).decide(), Decision::DeadLetter { .. }));
        // Attempt 0 is read as the first.
        assert_eq!(at(0).decide(), retry(1_050, 2));
    }

    #[test]
    fn a_redshift_serialization_conflict_is_retried() {
        let error =
            WarehouseError::with_sqlstate("XX000", "1023 DETAIL: Serializable isolation violation on table");
        let case = Case {
            last_error: Some(error),
            ..Case::new()
        };
        assert_eq!(case.decide(), retry(1_050, 2));
    }

    #[test]
    fn a_missing_schema_object_is_retried_then_dead_lettered() {
        let case = |attempt| Case {
            schema: None,
            attempt,
            ..Case::new()
        };
        assert_eq!(case(1).decide(), retry(1_050, 2));
        let reason = case(3).dead_letter();
        assert_eq!(reason.code(), "missing_schema");
        assert!(
            reason
                .to_string()
                .starts_with("no schema object \"schemas/orders/"),
            "{reason}"
        );
        let bad = Case {
            schema: Some(Err(MetadataError::Invalid {
                field: "columns-sha256",
                value: "x".into(),
            })),
            ..Case::new()
        };
        assert_eq!(bad.dead_letter().code(), "bad_metadata");
    }

    #[test]
    fn bad_metadata_wins_over_the_last_error() {
        let case = Case {
            metadata: Some(Err(MetadataError::Missing("sha256"))),
            last_error: Some(WarehouseError::new(WarehouseErrorKind::Timeout, "pool timed out")),
            ..Case::new()
        };
        assert_eq!(case.dead_letter().code(), "bad_metadata");
    }

    #[test]
    fn every_reason_renders_on_one_line() {
        let nasty = "line one\nline two\r\n\tthree";
        let reasons = vec![
            DeadLetterReason::MalformedNotification(NotificationError::MalformedRecord {
                index: 0,
                detail: nasty.into(),
            }),
            DeadLetterReason::MissingMetadata { attempts: 1 },
            DeadLetterReason::BadMetadata(MetadataError::Invalid {
                field: "table",
                value: nasty.into(),
            }),
            DeadLetterReason::KeyMismatch {
                key: nasty.into(),
                detail: nasty.into(),
            },
            DeadLetterReason::UnknownTable {
                table: nasty.into(),
                batch_catalog_version: nasty.into(),
                catalog_version: nasty.into(),
            },
            DeadLetterReason::SchemaMismatch(Box::new(SchemaMismatch {
                table: nasty.into(),
                missing: vec![nasty.into()],
                unexpected: vec![nasty.into()],
                duplicated: vec![],
                batch_catalog_version: nasty.into(),
                catalog_version: nasty.into(),
            })),
            DeadLetterReason::Content(ContentError::ChecksumMismatch {
                expected: nasty.into(),
                actual: "00".into(),
            }),
            DeadLetterReason::Content(ContentError::RowCountMismatch {
                expected: 1,
                actual: 2,
            }),
            DeadLetterReason::Content(ContentError::MalformedCsv(
                crate::import::CsvError::UnterminatedQuote { offset: 9 },
            )),
            DeadLetterReason::MissingSchema {
                key: nasty.into(),
                attempts: 3,
            },
            DeadLetterReason::Decompress(DecompressError::Corrupt {
                compression: crate::compression::Compression::Gzip,
                detail: nasty.into(),
            }),
            DeadLetterReason::RowsRefused(nasty.into()),
            DeadLetterReason::WarehouseRejected(WarehouseError::with_sqlstate("42P01", nasty)),
            DeadLetterReason::GaveUp {
                attempts: 2,
                last_error: WarehouseError::new(WarehouseErrorKind::Io, "x".repeat(10_000)),
            },
        ];
        let mut codes = BTreeSet::new();
        for reason in &reasons {
            let text = reason.to_string();
            assert!(!text.contains(['\n', '\r', '\t']), "{text:?}");
            assert!(text.chars().count() < 2_000, "{}", reason.code());
            codes.insert(reason.code());
        }
        assert_eq!(codes.len(), reasons.len(), "codes are distinct");
        assert_eq!(
            reasons[0].to_string(),
            "malformed notification: S3 event record 0 is malformed: line one line two three"
        );
        assert_eq!(
            reasons[8].to_string(),
            "malformed CSV: quoted field opened at byte 9 is never closed"
        );
    }
}
