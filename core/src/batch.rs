//! A flushed batch as it lives in the object store: its key and its metadata.
//!
//! The consumer builds both from a [`Batch`](crate::batcher::Batch) and writes them with the
//! object; the importer reads them back and checks them before it loads anything. The key is a
//! function of the records alone, so a replayed flush of the same records overwrites its object
//! instead of adding a second one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::position::{Position, SequenceNumber, ShardId};
use crate::time::Timestamp;

/// The prefix every load object lives under; notifications are filtered on it.
pub const LOADS_PREFIX: &str = "loads/";

/// How an object's bytes are compressed. Redshift's COPY reads all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".csv",
            Compression::Gzip => ".csv.gz",
            Compression::Zstd => ".csv.zst",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// `loads/<table>/<yyyy>/<mm>/<dd>/<hh>/<shard>-<first>-<last>.csv[.gz|.zst]`, the hour taken from
/// the first row's `received_at` (a property of the record, not of when it was flushed).
pub fn object_key(
    table: &str,
    first_received_at: Timestamp,
    shard: &ShardId,
    first: &Position,
    last: &Position,
    compression: Compression,
) -> String {
    let (y, m, d, h) = first_received_at.utc_hour_parts();
    format!(
        "{LOADS_PREFIX}{table}/{y:04}/{m:02}/{d:02}/{h:02}/{shard}-{first}-{last}{}",
        compression.extension()
    )
}

/// What travels with every load object (S3 user metadata, or a sidecar JSON where the store has
/// none): enough for the importer to load it without reading anything else but the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    pub table: String,
    pub columns: Vec<String>,
    pub row_count: u64,
    pub shard: ShardId,
    pub first: Position,
    pub last: Position,
    pub catalog_version: String,
    /// SHA-256 (hex) of the uncompressed CSV bytes.
    pub sha256: String,
    pub min_received_at: Timestamp,
    pub max_received_at: Timestamp,
    #[serde(default)]
    pub compression: Compression,
}

/// Metadata that is missing a field or has one the importer cannot read; the batch is poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("batch metadata is missing `{0}`")]
    Missing(&'static str),
    #[error("batch metadata field `{field}` is invalid: {value:?}")]
    Invalid { field: &'static str, value: String },
}

impl BatchMetadata {
    /// Flat string pairs, the shape of S3 user metadata (`x-amz-meta-<name>`).
    pub fn to_pairs(&self) -> BTreeMap<String, String> {
        let pos = |p: &Position| format!("{}:{}", p.seq, p.sub);
        BTreeMap::from([
            ("table".into(), self.table.clone()),
            ("columns".into(), self.columns.join(",")),
            ("rows".into(), self.row_count.to_string()),
            ("shard".into(), self.shard.to_string()),
            ("first-position".into(), pos(&self.first)),
            ("last-position".into(), pos(&self.last)),
            ("catalog-version".into(), self.catalog_version.clone()),
            ("sha256".into(), self.sha256.clone()),
            (
                "min-received-at".into(),
                self.min_received_at.as_micros().to_string(),
            ),
            (
                "max-received-at".into(),
                self.max_received_at.as_micros().to_string(),
            ),
            ("compression".into(), self.compression.as_str().into()),
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
        let columns = nonempty("columns")?.split(',').map(str::to_owned).collect();
        let rows = get("rows")?;
        let sha = get("sha256")?;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("sha256", sha));
        }
        let compression = match map.get("compression") {
            None => Compression::None,
            Some(v) => Compression::parse(v).ok_or_else(|| invalid("compression", v))?,
        };
        Ok(BatchMetadata {
            table: nonempty("table")?,
            columns,
            row_count: rows.parse().map_err(|_| invalid("rows", rows))?,
            shard: ShardId(nonempty("shard")?),
            first: pos("first-position")?,
            last: pos("last-position")?,
            catalog_version: get("catalog-version")?.to_owned(),
            sha256: sha.to_ascii_lowercase(),
            min_received_at: micros("min-received-at")?,
            max_received_at: micros("max-received-at")?,
            compression,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchMetadata {
        BatchMetadata {
            table: "orders".into(),
            columns: vec!["event_id".into(), "row_index".into(), "total".into()],
            row_count: 3,
            shard: ShardId::new("shardId-000000000001"),
            first: Position::new(SequenceNumber::from_u128(10), 0),
            last: Position::new(SequenceNumber::from_u128(12), 4),
            catalog_version: "abc".into(),
            sha256: "a".repeat(64),
            min_received_at: Timestamp::from_millis(1),
            max_received_at: Timestamp::from_millis(2),
            compression: Compression::Gzip,
        }
    }

    #[test]
    fn key_follows_the_design_layout() {
        let m = sample();
        let key = object_key(
            &m.table,
            Timestamp::parse_rfc3339("2024-05-01T07:59:00Z").unwrap(),
            &m.shard,
            &m.first,
            &m.last,
            Compression::None,
        );
        assert_eq!(key, "loads/orders/2024/05/01/07/shardId-000000000001-10-12.4.csv");
    }

    #[test]
    fn metadata_round_trips_through_pairs() {
        let m = sample();
        let pairs = m.to_pairs();
        let back = BatchMetadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let mut pairs = sample().to_pairs();
        pairs.remove("shard");
        let err = BatchMetadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_err();
        assert_eq!(err.to_string(), "batch metadata is missing `shard`");
        let mut pairs = sample().to_pairs();
        pairs.insert("rows".into(), "many".into());
        let err = BatchMetadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch metadata field `rows` is invalid: \"many\""
        );
    }
}
