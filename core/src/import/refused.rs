//! The rows of a batch a warehouse refused, as the importer keeps them in `rejected/rows/`: which
//! batch, which rows, the warehouse's reason for each and, when the importer had the bytes, the
//! row's CSV as it was sent. One object per batch ([`keys::refused_rows_key`]), written before the
//! load that leaves those rows out commits, so a refused row is never only in a log line.
//!
//! [`keys::refused_rows_key`]: crate::keys::refused_rows_key

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::content::record_spans;
use crate::keys;
use crate::ports::{Bytes, ObjectLocation};

/// One refused row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRow {
    /// 0-based, in the batch.
    pub row: u64,
    pub reason: String,
    /// The row's CSV line, when the importer read the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
}

/// Every refused row of one batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRows {
    pub bucket: String,
    pub key: String,
    pub table: String,
    pub rows: Vec<RefusedRow>,
}

impl RefusedRows {
    /// The record of `refused` (row → reason) of the batch at `location`, with each row's CSV
    /// taken from `csv` when given.
    pub fn new(
        location: &ObjectLocation,
        table: &str,
        refused: &BTreeMap<u64, String>,
        csv: Option<&[u8]>,
    ) -> Self {
        let spans = csv.and_then(|c| record_spans(c).ok());
        let rows = refused
            .iter()
            .map(|(&row, reason)| RefusedRow {
                row,
                reason: reason.clone(),
                csv: match (csv, spans.as_ref().and_then(|s| s.get(row as usize))) {
                    (Some(c), Some(span)) => Some(String::from_utf8_lossy(&c[span.clone()]).into_owned()),
                    _ => None,
                },
            })
            .collect();
        RefusedRows {
            bucket: location.bucket.clone(),
            key: location.key.clone(),
            table: table.to_owned(),
            rows,
        }
    }

    /// Its key and JSON body.
    pub fn object(&self) -> (String, Bytes) {
        let body = serde_json::to_vec_pretty(self).expect("refused rows always serialise");
        (keys::refused_rows_key(&self.key), Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_rows_carry_their_csv_and_reasons() {
        let location = ObjectLocation::new("b", "loads/t/2024/05/01/12/s-1-3.csv.gz");
        let refused = BTreeMap::from([(1, "invalid input syntax".to_owned())]);
        let record = RefusedRows::new(&location, "t", &refused, Some(b"a,1\nb,\"x\ny\"\nc,3\n"));
        assert_eq!(record.rows[0].csv.as_deref(), Some("b,\"x\ny\"\n"));
        let (key, body) = record.object();
        assert_eq!(key, "rejected/rows/t/2024/05/01/12/s-1-3.json");
        let back: RefusedRows = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, record);
        let blind = RefusedRows::new(&location, "t", &refused, None);
        assert_eq!(blind.rows[0].csv, None);
    }
}
