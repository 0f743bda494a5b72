//! The stream on Amazon Kinesis Data Streams: both halves of the port.
//!
//! Writes are `PutRecords` calls as the core producer batches them (≤ 500 records, ≤ 5 MiB, KPL
//! aggregates routed by explicit hash key); per-record failures come back one by one, so only
//! those are put again. Reads poll `GetRecords` through shard iterators, which the port carries
//! as its [`Cursor`].
//!
//! **The shard's end.** Kinesis ends a closed shard's last page with no `NextShardIterator` (and
//! its `ChildShards`). Emulators do not all do that: moto's iterator is never null. So, as a second
//! rule, a shard also ends at an empty page when the last shard listing says it is closed and the
//! cursor has delivered its `EndingSequenceNumber` (or the shard never had a record). On Kinesis
//! the second rule never fires first: its ending sequence number closes the range and no page
//! after it is empty but the final one. [`shard_ended`] holds both rules.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use microbatch_core::kpl::HashKeyRange;
use microbatch_core::ports::{
    Cursor, PortError, PutAck, PutRecord, ReadBatch, ReadFrom, ShardInfo, StreamReader, StreamRecord,
    StreamWriter,
};
use microbatch_core::position::{SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;

use super::{Aws, error_kind, port_error};

const SERVICE: &str = "kinesis";

/// Most records one `GetRecords` returns (Kinesis' limit).
const MAX_READ_RECORDS: usize = 10_000;

/// How stale the closed-shard listing may be before an empty page at the tip re-lists: a shard
/// is closed by a reshard, which is rare, and `ListShards` is limited (100 calls/s per account).
const CLOSED_REFRESH: Duration = Duration::from_secs(5);

/// What the last listing said of a closed shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedShard {
    pub starting: SequenceNumber,
    pub ending: SequenceNumber,
}

#[derive(Debug, Default)]
struct Listing {
    at: Option<Instant>,
    closed: HashMap<ShardId, ClosedShard>,
}

/// A Kinesis data stream.
#[derive(Debug)]
pub struct KinesisStream {
    client: Client,
    name: String,
    listing: Mutex<Listing>,
}

impl KinesisStream {
    pub fn new(aws: &Aws, name: impl Into<String>) -> Self {
        KinesisStream {
            client: aws.kinesis(),
            name: name.into(),
            listing: Mutex::new(Listing::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `microbatch check`: the stream exists and is active (`DescribeStreamSummary`).
    pub async fn probe(&self) -> Result<String, String> {
        let out = self
            .client
            .describe_stream_summary()
            .stream_name(&self.name)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("stream {:?}", self.name), e).to_string())?;
        let summary = out.stream_description_summary().ok_or_else(|| {
            format!(
                "stream {:?}: DescribeStreamSummary returned no summary",
                self.name
            )
        })?;
        let status = summary.stream_status().as_str();
        let line = format!(
            "kinesis stream {:?}: {status}, {} open shard(s), retention {} h",
            self.name,
            summary.open_shard_count(),
            summary.retention_period_hours()
        );
        if matches!(status, "ACTIVE" | "UPDATING") {
            Ok(line)
        } else {
            Err(format!("{line}: not ACTIVE, so it takes no records"))
        }
    }

    /// Every shard, through all pages of `ListShards`; remembers which are closed.
    async fn list(&self) -> Result<Vec<ShardInfo>, PortError> {
        let doing = format!("cannot list the shards of stream {}", self.name);
        let mut shards = Vec::new();
        let mut closed = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            // A page after the first names the token alone (naming the stream too is an error).
            let call = match &token {
                None => self.client.list_shards().stream_name(&self.name),
                Some(t) => self.client.list_shards().next_token(t),
            };
            let out = call.send().await.map_err(|e| port_error(SERVICE, &doing, e))?;
            for s in out.shards() {
                let info = shard_info(s).map_err(|m| PortError::invalid(SERVICE, format!("{doing}: {m}")))?;
                if let Some(range) = s.sequence_number_range()
                    && let Some(ending) = range.ending_sequence_number()
                {
                    let parse = |t: &str| {
                        SequenceNumber::parse(t)
                            .map_err(|e| PortError::invalid(SERVICE, format!("{doing}: {e}")))
                    };
                    closed.insert(
                        info.id.clone(),
                        ClosedShard {
                            starting: parse(range.starting_sequence_number())?,
                            ending: parse(ending)?,
                        },
                    );
                }
                shards.push(info);
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        if let Ok(mut listing) = self.listing.lock() {
            *listing = Listing {
                at: Some(Instant::now()),
                closed,
            };
        }
        Ok(shards)
    }

    /// The closed-shard entry of `shard`, re-listing first when the listing is stale.
    async fn closed(&self, shard: &ShardId) -> Result<Option<ClosedShard>, PortError> {
        let (fresh, known) = {
            let listing = self.listing.lock().map_err(|_| poisoned())?;
            (
                listing.at.is_some_and(|at| at.elapsed() < CLOSED_REFRESH),
                listing.closed.get(shard).cloned(),
            )
        };
        if known.is_some() || fresh {
            return Ok(known);
        }
        self.list().await?;
        Ok(self
            .listing
            .lock()
            .map_err(|_| poisoned())?
            .closed
            .get(shard)
            .cloned())
    }
}

fn poisoned() -> PortError {
    PortError::unavailable(SERVICE, "the shard listing's lock was poisoned by a panic")
}

fn shard_info(s: &aws_sdk_kinesis::types::Shard) -> Result<ShardInfo, String> {
    let range = match s.hash_key_range() {
        Some(r) => HashKeyRange::parse(r.starting_hash_key(), r.ending_hash_key())
            .map_err(|e| format!("shard {}: {e}", s.shard_id()))?,
        None => return Err(format!("shard {} has no hash key range", s.shard_id())),
    };
    Ok(ShardInfo {
        id: ShardId::new(s.shard_id()),
        parent: s.parent_shard_id().map(ShardId::new),
        adjacent_parent: s.adjacent_parent_shard_id().map(ShardId::new),
        range,
        closed: s
            .sequence_number_range()
            .is_some_and(|r| r.ending_sequence_number().is_some()),
    })
}

/// The port's cursor: the shard iterator, and the last sequence number delivered through the
/// cursors before it (for the end-of-shard rule), as `"<last> <iterator>"` (iterators are
/// base64, without spaces; `<last>` may be empty).
#[derive(Debug)]
struct KinesisCursor {
    last: Option<SequenceNumber>,
    iterator: String,
}

impl KinesisCursor {
    fn encode(&self) -> Cursor {
        let last = self.last.as_ref().map_or("", SequenceNumber::as_str);
        Cursor(format!("{last} {}", self.iterator))
    }

    fn decode(cursor: &Cursor) -> Result<Self, PortError> {
        let invalid =
            || PortError::invalid(SERVICE, format!("{:?} is not a Kinesis cursor", cursor.as_str()));
        let (last, iterator) = cursor.as_str().split_once(' ').ok_or_else(invalid)?;
        let last = match last {
            "" => None,
            digits => Some(SequenceNumber::parse(digits).map_err(|_| invalid())?),
        };
        Ok(KinesisCursor {
            last,
            iterator: iterator.to_owned(),
        })
    }
}

/// Whether a `GetRecords` answer ends its shard (see the module's doc): no next iterator, or
/// child shards named (Kinesis); or, for emulators, an empty page of a shard the listing says is
/// closed, once everything up to its ending sequence number was delivered (`last`) or when it
/// never held a record.
pub fn shard_ended(
    next_iterator: Option<&str>,
    child_shards: usize,
    page_empty: bool,
    closed: Option<&ClosedShard>,
    last: Option<&SequenceNumber>,
) -> bool {
    if next_iterator.is_none() || child_shards > 0 {
        return true;
    }
    match (page_empty, closed) {
        (true, Some(c)) => match last {
            Some(last) => *last >= c.ending,
            None => c.ending <= c.starting,
        },
        _ => false,
    }
}

fn timestamp(t: Option<&aws_sdk_kinesis::primitives::DateTime>) -> Timestamp {
    t.map_or(Timestamp::from_micros(0), |t| {
        Timestamp::from_micros(t.secs() * 1_000_000 + i64::from(t.subsec_nanos() / 1000))
    })
}

/// Kinesis bills a put in payload units of 25 KB (KiB: AWS's "25 KB" is 25 × 1024 bytes).
pub const PUT_PAYLOAD_UNIT_BYTES: usize = 25 * 1024;

/// One record Kinesis accepted into `shard`: its bytes against the shard's write limit, and the
/// payload units it is billed.
fn count_put(shard: &str, size: usize) {
    metrics::counter!("microbatch_kinesis_put_records_total", "shard" => shard.to_owned()).increment(1);
    metrics::counter!("microbatch_kinesis_put_bytes_total", "shard" => shard.to_owned())
        .increment(size as u64);
    metrics::counter!("microbatch_kinesis_put_payload_units_total")
        .increment(size.div_ceil(PUT_PAYLOAD_UNIT_BYTES) as u64);
}

impl StreamWriter for KinesisStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        self.list().await
    }

    async fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<PutAck, PortError>>, PortError> {
        let doing = format!("cannot put records into stream {}", self.name);
        let n = records.len();
        let mut call = self.client.put_records().stream_name(&self.name);
        // What Kinesis counts against a shard's 1 MiB/s and bills in 25 KB payload units.
        let sizes: Vec<usize> = records
            .iter()
            .map(|r| r.data.len() + r.partition_key.len())
            .collect();
        for r in records {
            let mut entry = PutRecordsRequestEntry::builder()
                .partition_key(r.partition_key)
                .data(Blob::new(r.data));
            if let Some(key) = r.explicit_hash_key {
                entry = entry.explicit_hash_key(key);
            }
            let entry = entry
                .build()
                .map_err(|e| PortError::invalid(SERVICE, format!("{doing}: {e}")))?;
            call = call.records(entry);
        }
        let out = call.send().await.map_err(|e| port_error(SERVICE, &doing, e))?;
        if out.records().len() != n {
            return Err(PortError::unavailable(
                SERVICE,
                format!("{doing}: {} results for {n} records", out.records().len()),
            ));
        }
        Ok(out
            .records()
            .iter()
            .zip(sizes)
            .map(
                |(r, size)| match (r.error_code(), r.shard_id(), r.sequence_number()) {
                    (None, Some(shard), Some(seq)) => Ok({
                        count_put(shard, size);
                        PutAck {
                            shard: ShardId::new(shard),
                            seq: SequenceNumber::parse(seq)
                                .map_err(|e| PortError::invalid(SERVICE, e.to_string()))?,
                        }
                    }),
                    (code, _, _) => Err(PortError::new(
                        SERVICE,
                        // A record's failure has a code and no status: a code we do not know is
                        // Kinesis' own trouble, so it is retried.
                        match code {
                            Some(c) => error_kind(Some(c), Some(500)),
                            None => error_kind(None, Some(500)),
                        },
                        format!(
                            "{}: {}",
                            code.unwrap_or("no sequence number"),
                            r.error_message().unwrap_or("")
                        ),
                    )),
                },
            )
            .collect())
    }
}

impl StreamReader for KinesisStream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        self.list().await
    }

    async fn open(&self, shard: &ShardId, from: &ReadFrom) -> Result<Cursor, PortError> {
        let doing = format!("cannot open a shard iterator on {}/{shard}", self.name);
        let call = self
            .client
            .get_shard_iterator()
            .stream_name(&self.name)
            .shard_id(shard.as_str());
        let (call, last) = match from {
            ReadFrom::Oldest => (call.shard_iterator_type(ShardIteratorType::TrimHorizon), None),
            ReadFrom::At(seq) => (
                call.shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                    .starting_sequence_number(seq.as_str()),
                None,
            ),
            ReadFrom::After(seq) => (
                call.shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq.as_str()),
                Some(seq.clone()),
            ),
        };
        let out = call.send().await.map_err(|e| port_error(SERVICE, &doing, e))?;
        let iterator = out
            .shard_iterator()
            .ok_or_else(|| PortError::not_found(SERVICE, format!("{doing}: no iterator returned")))?;
        Ok(KinesisCursor {
            last,
            iterator: iterator.to_owned(),
        }
        .encode())
    }

    async fn read(&self, shard: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch, PortError> {
        let cursor = KinesisCursor::decode(cursor)?;
        let doing = format!("cannot read {}/{shard}", self.name);
        let limit = i32::try_from(limit.clamp(1, MAX_READ_RECORDS)).unwrap_or(10_000);
        let out = self
            .client
            .get_records()
            .shard_iterator(&cursor.iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &doing, e))?;
        let mut records = Vec::with_capacity(out.records().len());
        for r in out.records() {
            records.push(StreamRecord {
                seq: SequenceNumber::parse(r.sequence_number())
                    .map_err(|e| PortError::invalid(SERVICE, format!("{doing}: {e}")))?,
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                data: r.data().as_ref().to_vec(),
                arrived_at: timestamp(r.approximate_arrival_timestamp()),
            });
        }
        let millis_behind_latest = out.millis_behind_latest().and_then(|m| u64::try_from(m).ok());
        let last = records.last().map(|r| r.seq.clone()).or(cursor.last);
        // The listing is asked only at an empty page, where the end can be.
        let closed = if records.is_empty() && out.next_shard_iterator().is_some() {
            self.closed(shard).await?
        } else {
            None
        };
        let ended = shard_ended(
            out.next_shard_iterator(),
            out.child_shards().len(),
            records.is_empty(),
            closed.as_ref(),
            last.as_ref(),
        );
        let next = match (ended, out.next_shard_iterator()) {
            (false, Some(iterator)) => Some(
                KinesisCursor {
                    last,
                    iterator: iterator.to_owned(),
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(ReadBatch {
            records,
            millis_behind_latest,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u128) -> SequenceNumber {
        SequenceNumber::from_u128(n)
    }

    #[test]
    fn kinesis_ends_a_shard_with_a_null_iterator_or_its_children() {
        assert!(
            shard_ended(None, 0, false, None, None),
            "a last page with records"
        );
        assert!(shard_ended(None, 2, true, None, Some(&seq(7))));
        assert!(shard_ended(Some("it"), 2, true, None, None), "children named");
        assert!(
            !shard_ended(Some("it"), 0, true, None, Some(&seq(7))),
            "an empty page of an open shard"
        );
        assert!(!shard_ended(Some("it"), 0, false, None, Some(&seq(7))));
    }

    #[test]
    fn an_emulator_ends_a_closed_shard_once_its_ending_sequence_number_was_delivered() {
        let closed = ClosedShard {
            starting: seq(1),
            ending: seq(40),
        };
        assert!(
            !shard_ended(Some("it"), 0, true, Some(&closed), Some(&seq(39))),
            "one more to read"
        );
        assert!(
            !shard_ended(Some("it"), 0, false, Some(&closed), Some(&seq(40))),
            "a page with records"
        );
        assert!(shard_ended(Some("it"), 0, true, Some(&closed), Some(&seq(40))));
        assert!(
            !shard_ended(Some("it"), 0, true, Some(&closed), None),
            "nothing read of 40 records"
        );
        // moto lists a closed shard that never held a record with starting = ending = "0".
        let empty = ClosedShard {
            starting: seq(0),
            ending: seq(0),
        };
        assert!(shard_ended(Some("it"), 0, true, Some(&empty), None));
        // Sequence numbers of any width: Kinesis' are 56 digits, moto's "1", "2", …
        let wide = ClosedShard {
            starting: SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
                .unwrap(),
            ending: SequenceNumber::parse("49590338271490256608559692540925702759324208523137515618")
                .unwrap(),
        };
        let before =
            SequenceNumber::parse("49590338271490256608559692540925702759324208523137515617").unwrap();
        assert!(!shard_ended(Some("it"), 0, true, Some(&wide), Some(&before)));
        assert!(shard_ended(Some("it"), 0, true, Some(&wide), Some(&wide.ending)));
    }

    #[test]
    fn cursors_carry_the_last_delivered_sequence_number() {
        let c = KinesisCursor {
            last: Some(seq(12)),
            iterator: "AAAA+/==".into(),
        }
        .encode();
        let back = KinesisCursor::decode(&c).unwrap();
        assert_eq!((back.last, back.iterator.as_str()), (Some(seq(12)), "AAAA+/=="));
        let none = KinesisCursor::decode(&Cursor(" it".into())).unwrap();
        assert_eq!(none.last, None);
        let err = KinesisCursor::decode(&Cursor("shardId-1@5".into())).unwrap_err();
        assert!(err.message.contains("not a Kinesis cursor"), "{err}");
    }
}
