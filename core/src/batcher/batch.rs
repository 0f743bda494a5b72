//! What a flush yields: one table's rows from one shard, ready to write as one object.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::FlushReason;
use crate::batch::{BatchMetadata, BatchSchema, Compression};
use crate::catalog::TableId;
use crate::keys;
use crate::position::{Position, ShardId};
use crate::time::Timestamp;

/// A flushed buffer. The consumer writes [`data`](Self::data) to [`key`](Self::key) with
/// [`metadata`](Self::metadata), then acknowledges it to the checkpoint tracker.
#[derive(Clone, Debug)]
pub struct Batch {
    pub table_id: TableId,
    pub table: Arc<str>,
    pub columns: Arc<[String]>,
    /// The digest of `columns`, which names the batch's schema object.
    pub columns_sha256: Arc<str>,
    pub shard: ShardId,
    /// The positions of the first and last record with rows here.
    pub first: Position,
    /// The ordinal of the first row among the rows of `first` for this table: non-zero when the
    /// batch starts after a cut between rows of one event (an exploded array cut by a limit).
    pub first_row: u32,
    pub last: Position,
    /// When the batch was cut just before another row of `last` was added: the ordinal of its
    /// last row among that record's rows for this table (the rest are in the next batch).
    pub last_row: Option<u32>,
    pub rows: u64,
    /// CSV rows, uncompressed.
    pub data: Vec<u8>,
    pub first_received_at: Timestamp,
    pub min_received_at: Timestamp,
    pub max_received_at: Timestamp,
    /// When the buffer got its first row (its age at flush is a metric).
    pub opened_at: Timestamp,
    pub reason: FlushReason,
    pub catalog_version: Arc<str>,
    /// SHA-256 (hex) of `data`.
    pub sha256: String,
}

impl Batch {
    pub(super) fn checksum(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Bytes of CSV in the batch.
    pub fn byte_size(&self) -> usize {
        self.data.len()
    }

    /// The deterministic object key (see [`keys::batch_key`]). When a cut fell between two rows
    /// of one record (an exploded array cut by a limit), the key names the rows too: the batch
    /// after the cut starts at `<first>r<row>`, and the one before ends at `<last>r<row>` when the
    /// cut was known to fall inside the record. Two batches on either side of a cut never share a
    /// key, so a key names one set of rows and a replayed flush overwrites it with the same bytes.
    pub fn key(&self, compression: Compression) -> String {
        let first = match self.first_row {
            0 => self.first.to_string(),
            n => format!("{}r{n}", self.first),
        };
        let last = match self.last_row {
            None => self.last.to_string(),
            Some(n) => format!("{}r{n}", self.last),
        };
        keys::batch_key(
            &self.table,
            self.first_received_at,
            &self.shard,
            first,
            last,
            compression,
        )
    }

    /// The key of the schema object this batch names.
    pub fn schema_key(&self) -> String {
        keys::schema_key(&self.table, &self.columns_sha256)
    }

    /// The schema object this batch names.
    pub fn schema(&self) -> BatchSchema {
        BatchSchema {
            table: self.table.to_string(),
            columns: self.columns.to_vec(),
        }
    }

    pub fn metadata(&self, compression: Compression) -> BatchMetadata {
        BatchMetadata {
            table: self.table.to_string(),
            columns_sha256: self.columns_sha256.to_string(),
            column_count: self.columns.len() as u32,
            row_count: self.rows,
            shard: self.shard.clone(),
            first: self.first.clone(),
            last: self.last.clone(),
            catalog_version: self.catalog_version.to_string(),
            sha256: self.sha256.clone(),
            csv_bytes: self.data.len() as u64,
            min_received_at: self.min_received_at,
            max_received_at: self.max_received_at,
            compression,
            csv: crate::csv::CsvEncoding::CURRENT,
        }
    }
}
