//! A flushed batch as it lives in the object store: its metadata, and the schema object that
//! holds its column list.
//!
//! The consumer builds both from a [`Batch`](crate::batcher::Batch) and writes them with the
//! object; the importer reads them back and checks them before it loads anything.
//!
//! **Why the columns are not in the metadata.** S3 allows 2 KB of user metadata per object, and a
//! table of a hundred columns names more than that. The metadata carries the SHA-256 of the
//! column list instead, and the list itself is a small content-addressed object
//! ([`keys::schema_key`](crate::keys::schema_key)) the consumer writes before the first batch that
//! names it; the importer reads it once per digest and checks it against the digest. The
//! metadata's size is then bounded whatever the catalog: [`MAX_METADATA_BYTES`] holds the worst
//! case (a test proves it), so no catalog can be refused by S3 at write time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::compression::Compression;
pub use crate::csv::CsvEncoding;
use crate::position::{Position, SequenceNumber, ShardId};
use crate::time::Timestamp;

/// S3's limit on an object's user metadata: the UTF-8 bytes of every name and value together.
pub const MAX_METADATA_BYTES: usize = 2048;

/// What travels with every load object (S3 user metadata, or a sidecar JSON where the store has
/// none): with the batch's schema object and the catalog, enough to load it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    pub table: String,
    /// SHA-256 (hex) of the column list ([`columns_digest`]); the list is in the schema object.
    pub columns_sha256: String,
    pub column_count: u32,
    pub row_count: u64,
    pub shard: ShardId,
    pub first: Position,
    pub last: Position,
    pub catalog_version: String,
    /// SHA-256 (hex) of the uncompressed CSV bytes.
    pub sha256: String,
    /// Bytes of the uncompressed CSV: what decompression may produce, at most.
    pub csv_bytes: u64,
    pub min_received_at: Timestamp,
    pub max_received_at: Timestamp,
    #[serde(default)]
    pub compression: Compression,
    /// How the CSV spells NULL (`csv`; absent in batches written before it, which are
    /// [`CsvEncoding::EmptyIsNull`]).
    #[serde(default)]
    pub csv: CsvEncoding,
}

/// Metadata that is missing a field or has one the importer cannot read; the batch is poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("batch metadata is missing `{0}`")]
    Missing(&'static str),
    #[error("batch metadata field `{field}` is invalid: {value:?}")]
    Invalid { field: &'static str, value: String },
}

/// The SHA-256 (hex) that names a column list: of the names joined by newlines (identifiers
/// cannot hold one).
pub fn columns_digest<S: AsRef<str>>(columns: &[S]) -> String {
    let mut hasher = Sha256::new();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(c.as_ref().as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A batch's column list, as its schema object holds it (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSchema {
    pub table: String,
    pub columns: Vec<String>,
}

impl BatchSchema {
    pub fn digest(&self) -> String {
        columns_digest(&self.columns)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a schema always serialises")
    }

    /// Reads a schema object back and checks that it is the one `meta` names.
    pub fn from_json(bytes: &[u8], meta: &BatchMetadata) -> Result<Self, MetadataError> {
        let schema: BatchSchema = serde_json::from_slice(bytes).map_err(|e| MetadataError::Invalid {
            field: "schema object",
            value: e.to_string(),
        })?;
        let digest = schema.digest();
        if schema.table != meta.table || digest != meta.columns_sha256 {
            return Err(MetadataError::Invalid {
                field: "columns-sha256",
                value: format!(
                    "the schema object holds table {:?} with columns hashing to {digest}",
                    schema.table
                ),
            });
        }
        if schema.columns.len() != meta.column_count as usize {
            return Err(MetadataError::Invalid {
                field: "columns",
                value: format!("{} in the schema object", schema.columns.len()),
            });
        }
        Ok(schema)
    }
}

/// The bytes S3 counts of a metadata map: every name and value, in UTF-8.
pub fn metadata_bytes(pairs: &BTreeMap<String, String>) -> usize {
    pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl BatchMetadata {
    /// Flat string pairs, the shape of S3 user metadata (`x-amz-meta-<name>`).
    pub fn to_pairs(&self) -> BTreeMap<String, String> {
        let pos = |p: &Position| format!("{}:{}", p.seq, p.sub);
        BTreeMap::from([
            ("table".into(), self.table.clone()),
            ("columns-sha256".into(), self.columns_sha256.clone()),
            ("columns".into(), self.column_count.to_string()),
            ("rows".into(), self.row_count.to_string()),
            ("shard".into(), self.shard.to_string()),
            ("first-position".into(), pos(&self.first)),
            ("last-position".into(), pos(&self.last)),
            ("catalog-version".into(), self.catalog_version.clone()),
            ("sha256".into(), self.sha256.clone()),
            ("csv-bytes".into(), self.csv_bytes.to_string()),
            (
                "min-received-at".into(),
                self.min_received_at.as_micros().to_string(),
            ),
            (
                "max-received-at".into(),
                self.max_received_at.as_micros().to_string(),
            ),
            ("compression".into(), self.compression.as_str().into()),
            ("csv".into(), self.csv.as_str().into()),
        ])
    }

    /// Reads [`to_pairs`](Self::to_pairs) back; names are matched case-insensitively because
    /// HTTP lowercases header names.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, MetadataError> {
        let map: BTreeMap<String, &str> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let get = |field: &'static str| map.get(field).copied().ok_or(MetadataError::Missing(field));
        let invalid = |field: &'static str, value: &str| MetadataError::Invalid {
            field,
            value: value.to_owned(),
        };
        let pos = |field: &'static str| -> Result<Position, MetadataError> {
            let v = get(field)?;
            let (seq, sub) = v.split_once(':').ok_or_else(|| invalid(field, v))?;
            Ok(Position::new(
                SequenceNumber::parse(seq).map_err(|_| invalid(field, v))?,
                sub.parse().map_err(|_| invalid(field, v))?,
            ))
        };
        let number = |field: &'static str| -> Result<u64, MetadataError> {
            let v = get(field)?;
            v.parse().map_err(|_| invalid(field, v))
        };
        let micros = |field: &'static str| -> Result<Timestamp, MetadataError> {
            let v = get(field)?;
            v.parse()
                .map(Timestamp::from_micros)
                .map_err(|_| invalid(field, v))
        };
        let nonempty = |field: &'static str| -> Result<String, MetadataError> {
            let v = get(field)?;
            if v.is_empty() {
                Err(invalid(field, v))
            } else {
                Ok(v.to_owned())
            }
        };
        let sha = |field: &'static str| -> Result<String, MetadataError> {
            let v = get(field)?;
            if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(field, v));
            }
            Ok(v.to_ascii_lowercase())
        };
        let compression = match map.get("compression") {
            None => Compression::None,
            Some(v) => Compression::parse(v).ok_or_else(|| invalid("compression", v))?,
        };
        let csv = match map.get("csv") {
            None => CsvEncoding::EmptyIsNull,
            Some(v) => CsvEncoding::parse(v).ok_or_else(|| invalid("csv", v))?,
        };
        let columns = number("columns")?;
        Ok(BatchMetadata {
            table: nonempty("table")?,
            columns_sha256: sha("columns-sha256")?,
            column_count: u32::try_from(columns)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("columns", &columns.to_string()))?,
            row_count: number("rows")?,
            shard: ShardId(nonempty("shard")?),
            first: pos("first-position")?,
            last: pos("last-position")?,
            catalog_version: get("catalog-version")?.to_owned(),
            sha256: sha("sha256")?,
            csv_bytes: number("csv-bytes")?,
            min_received_at: micros("min-received-at")?,
            max_received_at: micros("max-received-at")?,
            compression,
            csv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::validate_ident;

    fn sample() -> BatchMetadata {
        let columns = ["event_id", "row_index", "total"];
        BatchMetadata {
            table: "orders".into(),
            columns_sha256: columns_digest(&columns),
            column_count: 3,
            row_count: 3,
            shard: ShardId::new("shardId-000000000001"),
            first: Position::new(SequenceNumber::from_u128(10), 0),
            last: Position::new(SequenceNumber::from_u128(12), 4),
            catalog_version: "abc".into(),
            sha256: "a".repeat(64),
            csv_bytes: 99,
            min_received_at: Timestamp::from_millis(1),
            max_received_at: Timestamp::from_millis(2),
            compression: Compression::Gzip,
            csv: CsvEncoding::CURRENT,
        }
    }

    #[test]
    fn metadata_round_trips_through_pairs() {
        let m = sample();
        let pairs = m.to_pairs();
        let back = BatchMetadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, m);
    }

    /// Found reviewing the S3 adapter's needs: every column name went into the metadata, so a
    /// table of ~100 columns overflowed S3's 2 KB. Now the worst case the catalog and the stream
    /// allow fits, with S3's `x-amz-meta-` prefixes counted too.
    #[test]
    fn the_largest_metadata_fits_s3s_limit() {
        let longest_table = "t".repeat(127);
        assert!(validate_ident(&longest_table).is_ok(), "the catalog allows it");
        // Kinesis sequence numbers match `0|([1-9]\d{0,128})`.
        let longest_seq = SequenceNumber::parse(&format!("9{}", "9".repeat(128))).unwrap();
        let m = BatchMetadata {
            table: longest_table,
            shard: ShardId::new(format!("shardId-{}", "9".repeat(120))),
            first: Position::new(longest_seq.clone(), u32::MAX),
            last: Position::new(longest_seq, u32::MAX),
            catalog_version: "f".repeat(64),
            row_count: u64::MAX,
            csv_bytes: u64::MAX,
            column_count: u32::MAX,
            min_received_at: Timestamp::from_micros(i64::MIN),
            max_received_at: Timestamp::from_micros(i64::MIN),
            compression: Compression::Gzip,
            csv: CsvEncoding::CURRENT,
            ..sample()
        };
        let pairs = m.to_pairs();
        let prefixes = pairs.len() * "x-amz-meta-".len();
        assert!(
            metadata_bytes(&pairs) + prefixes <= MAX_METADATA_BYTES,
            "{} bytes",
            metadata_bytes(&pairs) + prefixes
        );
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let parse = |pairs: &BTreeMap<String, String>| {
            BatchMetadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        };
        let mut pairs = sample().to_pairs();
        pairs.remove("shard");
        assert_eq!(
            parse(&pairs).unwrap_err().to_string(),
            "batch metadata is missing `shard`"
        );
        let mut pairs = sample().to_pairs();
        pairs.insert("rows".into(), "many".into());
        assert_eq!(
            parse(&pairs).unwrap_err().to_string(),
            "batch metadata field `rows` is invalid: \"many\""
        );
        let mut pairs = sample().to_pairs();
        pairs.insert("columns".into(), "0".into());
        assert!(parse(&pairs).is_err(), "a batch has columns");
    }

    #[test]
    fn a_schema_object_must_be_the_one_the_metadata_names() {
        let m = sample();
        let good = BatchSchema {
            table: "orders".into(),
            columns: vec!["event_id".into(), "row_index".into(), "total".into()],
        };
        assert_eq!(BatchSchema::from_json(&good.to_json(), &m).unwrap(), good);
        let other = BatchSchema {
            columns: vec!["event_id".into(), "row_index".into(), "totl".into()],
            ..good.clone()
        };
        let err = BatchSchema::from_json(&other.to_json(), &m).unwrap_err();
        assert!(err.to_string().contains("columns-sha256"), "{err}");
        assert!(BatchSchema::from_json(b"{", &m).is_err());
        // The digest cannot be fooled by moving a name boundary.
        assert_ne!(columns_digest(&["ab", "c"]), columns_digest(&["a", "bc"]));
    }
}
