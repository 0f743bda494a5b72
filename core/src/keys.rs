//! Every object key the pipeline writes or reads, in one place.
//!
//! | prefix | what | written by | key |
//! |---|---|---|---|
//! | `loads/` | batches (CSV, maybe compressed) | consumer | [`batch_key`] |
//! | `schemas/` | a batch's column list, content-addressed | consumer | [`schema_key`] |
//! | `rejected/` | events that could not be mapped | consumer | [`rejected_event_key`] |
//! | `rejected/rows/` | rows a warehouse refused | importer | [`refused_rows_key`] |
//!
//! Keys are built from catalog names and stream positions only (contract 6), and are a function
//! of what they hold: a replayed flush, a re-mapped event, a reloaded batch write the same key
//! again instead of adding one. Notifications are filtered on [`LOADS_PREFIX`]; the other
//! prefixes never reach the importer's queue.

use std::fmt::Display;

use crate::batch::Compression;
use crate::position::{Position, ShardId};
use crate::time::Timestamp;

/// Where batches live; the bucket notifies the load queue of new objects under it.
pub const LOADS_PREFIX: &str = "loads/";
/// Where batch schemas live (never expired: every batch names one).
pub const SCHEMAS_PREFIX: &str = "schemas/";
/// Where what could not be loaded is kept, with why.
pub const REJECTED_PREFIX: &str = "rejected/";

/// `loads/<table>/<yyyy>/<mm>/<dd>/<hh>/<shard>-<first>-<last>.csv[.gz|.zst]`, the hour taken from
/// the first row's `received_at` (a property of the record, not of when it was flushed).
pub fn batch_key(
    table: &str,
    first_received_at: Timestamp,
    shard: &ShardId,
    first: impl Display,
    last: impl Display,
    compression: Compression,
) -> String {
    let (y, m, d, h) = first_received_at.utc_hour_parts();
    format!(
        "{LOADS_PREFIX}{table}/{y:04}/{m:02}/{d:02}/{h:02}/{shard}-{first}-{last}{}",
        compression.extension()
    )
}

/// The table segment of a `loads/<table>/...` key, which the batch metadata must agree with.
pub fn table_of_batch_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(LOADS_PREFIX)?;
    let (table, _) = rest.split_once('/')?;
    (!table.is_empty()).then_some(table)
}

/// Whether `key` has a batch's extension (the notification filter lets other objects under
/// `loads/` through too).
pub fn is_batch_key(key: &str) -> bool {
    key.starts_with(LOADS_PREFIX)
        && [Compression::None, Compression::Gzip, Compression::Zstd]
            .iter()
            .any(|c| key.ends_with(c.extension()))
}

/// `schemas/<table>/<sha256 of the column list>.json`: one object per column list ever written,
/// so a batch's metadata names its columns in 64 characters, whatever their number.
pub fn schema_key(table: &str, columns_sha256: &str) -> String {
    format!("{SCHEMAS_PREFIX}{table}/{columns_sha256}.json")
}

/// `rejected/<yyyy>/<mm>/<dd>/<hh>/<shard>-<position>.json`: one event that could not be mapped,
/// the hour from its `received_at` (or the time it was read, when it was no event at all).
pub fn rejected_event_key(at: Timestamp, shard: &ShardId, position: &Position) -> String {
    let (y, m, d, h) = at.utc_hour_parts();
    format!("{REJECTED_PREFIX}{y:04}/{m:02}/{d:02}/{h:02}/{shard}-{position}.json")
}

/// `rejected/rows/<the batch key without loads/ and its extension>.json`: the rows of one batch
/// the warehouse refused, with its reasons.
pub fn refused_rows_key(batch_key: &str) -> String {
    let rest = batch_key.strip_prefix(LOADS_PREFIX).unwrap_or(batch_key);
    let stem = [Compression::Gzip, Compression::Zstd, Compression::None]
        .iter()
        .find_map(|c| rest.strip_suffix(c.extension()))
        .unwrap_or(rest);
    format!("{REJECTED_PREFIX}rows/{stem}.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::SequenceNumber;

    fn at() -> Timestamp {
        Timestamp::parse_rfc3339("2024-05-01T07:59:00Z").unwrap()
    }

    #[test]
    fn batch_keys_follow_the_design_layout() {
        let shard = ShardId::new("shardId-000000000001");
        let first = Position::new(SequenceNumber::from_u128(10), 0);
        let last = Position::new(SequenceNumber::from_u128(12), 4);
        let key = batch_key("orders", at(), &shard, &first, &last, Compression::None);
        assert_eq!(key, "loads/orders/2024/05/01/07/shardId-000000000001-10-12.4.csv");
        assert_eq!(table_of_batch_key(&key), Some("orders"));
        assert!(is_batch_key(&key));
        let zst = batch_key("orders", at(), &shard, &first, &last, Compression::Zstd);
        assert!(zst.ends_with(".csv.zst") && is_batch_key(&zst));
        assert_eq!(table_of_batch_key("loads/x.csv"), None);
        assert!(!is_batch_key("loads/orders/readme.txt"));
    }

    #[test]
    fn the_other_keys() {
        let shard = ShardId::new("s");
        let p = Position::new(SequenceNumber::from_u128(7), 2);
        assert_eq!(
            rejected_event_key(at(), &shard, &p),
            "rejected/2024/05/01/07/s-7.2.json"
        );
        assert_eq!(schema_key("orders", "ab12"), "schemas/orders/ab12.json");
        assert_eq!(
            refused_rows_key("loads/orders/2024/05/01/07/s-1-9.csv.gz"),
            "rejected/rows/orders/2024/05/01/07/s-1-9.json"
        );
        assert_eq!(
            refused_rows_key("loads/orders/2024/05/01/07/s-1-9.csv"),
            "rejected/rows/orders/2024/05/01/07/s-1-9.json"
        );
    }
}
