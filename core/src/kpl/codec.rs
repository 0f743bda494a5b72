//! Encoding user records into one aggregated record and decoding them back.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use prost::Message;
use prost::encoding::encoded_len_varint;

use super::proto::{AggregatedRecord, Record};
use super::shard::{hash_key_of, parse_explicit_hash_key};
use super::{DIGEST_LEN, KplError, MAGIC};

/// One record as the application sees it: what the producer hands to the [`Aggregator`] before
/// the put, and what the consumer gets out of [`decode`] after the read.
///
/// [`Aggregator`]: super::Aggregator
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserRecord {
    /// Decides the shard (through its MD5) unless an explicit hash key is given.
    pub partition_key: String,
    /// A decimal hash key in `0..=2^128-1` that overrides the partition key's hash for routing.
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

impl UserRecord {
    pub fn new(partition_key: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        UserRecord {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }

    /// The hash key Kinesis (and the KCL's shard filter) routes this record by: the explicit hash
    /// key when there is one, else the MD5 of the partition key.
    pub fn hash_key(&self) -> Result<u128, KplError> {
        match &self.explicit_hash_key {
            Some(ehk) => parse_explicit_hash_key(ehk),
            None => Ok(hash_key_of(&self.partition_key)),
        }
    }
}

/// Whether a stream record's data is (or claims to be) a KPL aggregate.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Packs user records into one KPL aggregated record, without any size limit (the [`Aggregator`]
/// is what keeps aggregates under Kinesis' limits).
///
/// Key tables list each distinct key once, in order of first use, as the KPL and the reference
/// Python aggregator do, so the same records give the same bytes as theirs.
///
/// [`Aggregator`]: super::Aggregator
pub fn encode(records: &[UserRecord]) -> Vec<u8> {
    let mut builder = Builder::default();
    for r in records {
        builder.push(
            r.partition_key.clone(),
            r.explicit_hash_key.clone(),
            r.data.clone(),
        );
    }
    builder.finish()
}

/// The length [`encode`] would give for these records, computed without encoding them.
pub fn encoded_len(records: &[UserRecord]) -> usize {
    let mut builder = Builder::default();
    for r in records {
        builder.body_len += builder.cost(&r.partition_key, r.explicit_hash_key.as_deref(), r.data.len());
        builder.index_keys(&r.partition_key, r.explicit_hash_key.as_deref());
    }
    builder.len()
}

/// Unpacks one stream record into its user records, in order: a user record's index in the result
/// is its sub-sequence number.
///
/// A record that does not start with [`MAGIC`] is a plain record and comes back as one user record
/// under the stream record's partition key. A record that does start with it must be a whole,
/// valid aggregate: a bad checksum, a body that is not the protobuf, or a key index outside its
/// table is an error rather than a guess, so the consumer can set the record aside with the reason
/// instead of loading garbage. (The KCL instead passes such a record through as plain data.)
pub fn decode(stream_partition_key: &str, data: &[u8]) -> Result<Vec<UserRecord>, KplError> {
    let Some(rest) = data.strip_prefix(&MAGIC) else {
        return Ok(vec![UserRecord::new(stream_partition_key, data)]);
    };
    if rest.len() < DIGEST_LEN {
        return Err(KplError::Truncated { len: rest.len() });
    }
    let (body, trailer) = rest.split_at(rest.len() - DIGEST_LEN);
    let actual = Md5::digest(body);
    if actual.as_slice() != trailer {
        return Err(KplError::ChecksumMismatch {
            expected: hex::encode(trailer),
            actual: hex::encode(actual),
        });
    }
    let aggregate = AggregatedRecord::decode(body).map_err(KplError::Protobuf)?;
    if aggregate.records.is_empty() {
        return Err(KplError::EmptyAggregate);
    }
    let AggregatedRecord {
        partition_key_table: pks,
        explicit_hash_key_table: ehks,
        records,
    } = aggregate;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let partition_key =
                lookup(&pks, r.partition_key_index).ok_or(KplError::PartitionKeyIndexOutOfRange {
                    record: i,
                    index: r.partition_key_index,
                    table_len: pks.len(),
                })?;
            let explicit_hash_key = match r.explicit_hash_key_index {
                None => None,
                Some(index) => Some(lookup(&ehks, index).ok_or(
                    KplError::ExplicitHashKeyIndexOutOfRange {
                        record: i,
                        index,
                        table_len: ehks.len(),
                    },
                )?),
            };
            Ok(UserRecord {
                partition_key,
                explicit_hash_key,
                data: r.data,
            })
        })
        .collect()
}

fn lookup(table: &[String], index: u64) -> Option<String> {
    usize::try_from(index).ok().and_then(|i| table.get(i)).cloned()
}

/// An aggregate under construction that knows its exact encoded length at every step, so the
/// aggregator can tell whether one more record fits before adding it rather than after encoding.
///
/// The lengths follow the protobuf wire format: every field here has a tag below 16 (one byte),
/// and strings, bytes and sub-messages are length-delimited with a varint length.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    body: AggregatedRecord,
    // BTreeMap rather than HashMap: core takes no randomness, not even a hasher seed.
    pk_index: BTreeMap<String, u64>,
    ehk_index: BTreeMap<String, u64>,
    body_len: usize,
    user_bytes: usize,
}

/// One-byte tag, varint length, payload.
fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The smallest growth one more user record can cause (known partition key at an index below 128,
/// no explicit hash key, empty data): an aggregate with less room than this is full.
pub(crate) const MIN_RECORD_COST: usize = 6;

impl Builder {
    /// Magic, body and trailer.
    pub(crate) fn len(&self) -> usize {
        MAGIC.len() + self.body_len + DIGEST_LEN
    }

    pub(crate) fn record_count(&self) -> usize {
        self.body.records.len()
    }

    pub(crate) fn user_bytes(&self) -> usize {
        self.user_bytes
    }

    pub(crate) fn first_partition_key(&self) -> Option<&str> {
        self.body.partition_key_table.first().map(String::as_str)
    }

    /// How much the body would grow by adding this record.
    pub(crate) fn cost(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        let mut cost = 0;
        let pk_index = match self.pk_index.get(partition_key) {
            Some(&i) => i,
            None => {
                cost += delimited_len(partition_key.len());
                self.body.partition_key_table.len() as u64
            }
        };
        let mut record_len = 1 + encoded_len_varint(pk_index) + delimited_len(data_len);
        if let Some(ehk) = explicit_hash_key {
            let ehk_index = match self.ehk_index.get(ehk) {
                Some(&i) => i,
                None => {
                    cost += delimited_len(ehk.len());
                    self.body.explicit_hash_key_table.len() as u64
                }
            };
            record_len += 1 + encoded_len_varint(ehk_index);
        }
        cost + delimited_len(record_len)
    }

    /// Adds the keys to the tables if new, and gives their indexes.
    fn index_keys(&mut self, partition_key: &str, explicit_hash_key: Option<&str>) -> (u64, Option<u64>) {
        fn index(table: &mut Vec<String>, map: &mut BTreeMap<String, u64>, key: &str) -> u64 {
            if let Some(&i) = map.get(key) {
                return i;
            }
            let i = table.len() as u64;
            table.push(key.to_owned());
            map.insert(key.to_owned(), i);
            i
        }
        let pk = index(
            &mut self.body.partition_key_table,
            &mut self.pk_index,
            partition_key,
        );
        let ehk =
            explicit_hash_key.map(|k| index(&mut self.body.explicit_hash_key_table, &mut self.ehk_index, k));
        (pk, ehk)
    }

    pub(crate) fn push(&mut self, partition_key: String, explicit_hash_key: Option<String>, data: Vec<u8>) {
        self.body_len += self.cost(&partition_key, explicit_hash_key.as_deref(), data.len());
        self.user_bytes += data.len();
        let (partition_key_index, explicit_hash_key_index) =
            self.index_keys(&partition_key, explicit_hash_key.as_deref());
        self.body.records.push(Record {
            partition_key_index,
            explicit_hash_key_index,
            data,
            tags: Vec::new(),
        });
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&MAGIC);
        // Encoding into a Vec cannot run out of room.
        let _ = self.body.encode(&mut out);
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        debug_assert_eq!(out.len(), self.len(), "KPL size prediction is off");
        out
    }

    /// The user records back, for re-bucketing when the shard map changes.
    pub(crate) fn into_user_records(self) -> Vec<UserRecord> {
        let AggregatedRecord {
            partition_key_table: pks,
            explicit_hash_key_table: ehks,
            records,
        } = self.body;
        records
            .into_iter()
            .map(|r| UserRecord {
                partition_key: pks[r.partition_key_index as usize].clone(),
                explicit_hash_key: r.explicit_hash_key_index.map(|i| ehks[i as usize].clone()),
                data: r.data,
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::kpl::proto::Tag;

    const GOLDEN: &str = include_str!("../../tests/fixtures/kpl/golden.json");

    #[derive(Deserialize)]
    struct Golden {
        cases: Vec<GoldenCase>,
    }

    #[derive(Deserialize)]
    struct GoldenCase {
        name: String,
        records: Vec<GoldenRecord>,
        aggregate_partition_key: String,
        aggregate_hex: String,
    }

    #[derive(Deserialize)]
    struct GoldenRecord {
        partition_key: String,
        explicit_hash_key: Option<String>,
        data_hex: String,
    }

    fn golden() -> Vec<(String, Vec<UserRecord>, String, Vec<u8>)> {
        let golden: Golden = serde_json::from_str(GOLDEN).expect("golden.json parses");
        golden
            .cases
            .into_iter()
            .map(|c| {
                let records = c
                    .records
                    .into_iter()
                    .map(|r| UserRecord {
                        partition_key: r.partition_key,
                        explicit_hash_key: r.explicit_hash_key,
                        data: hex::decode(r.data_hex).unwrap(),
                    })
                    .collect();
                (
                    c.name,
                    records,
                    c.aggregate_partition_key,
                    hex::decode(c.aggregate_hex).unwrap(),
                )
            })
            .collect()
    }

    /// Wraps an arbitrary body the way an aggregate is framed, for crafting bad aggregates.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out
    }

    #[test]
    fn golden_vectors_cover_the_promised_cases() {
        let names: Vec<String> = golden().into_iter().map(|c| c.0).collect();
        for want in [
            "single_record",
            "repeated_partition_keys",
            "explicit_hash_keys",
            "empty_data",
            "unicode_keys",
            "binary_data",
            "many_distinct_keys",
        ] {
            assert!(names.iter().any(|n| n == want), "golden.json lacks case {want}");
        }
    }

    #[test]
    fn decodes_reference_python_aggregates() {
        for (name, records, pk, bytes) in golden() {
            assert!(is_aggregated(&bytes), "{name}");
            let decoded = decode(&pk, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded, records, "{name}");
        }
    }

    #[test]
    fn encodes_byte_identical_to_reference_python() {
        for (name, records, _, bytes) in golden() {
            let ours = encode(&records);
            assert_eq!(hex::encode(&ours), hex::encode(&bytes), "{name}");
            assert_eq!(encoded_len(&records), bytes.len(), "{name}");
        }
    }

    #[test]
    fn plain_record_passes_through_as_one_user_record() {
        let got = decode("pk", br#"{"id":1}"#).unwrap();
        assert_eq!(got, vec![UserRecord::new("pk", br#"{"id":1}"#.to_vec())]);
        assert_eq!(
            decode("pk", b"").unwrap(),
            vec![UserRecord::new("pk", Vec::new())]
        );
        // A prefix of the magic is not the magic.
        assert_eq!(
            decode("pk", &MAGIC[..3]).unwrap(),
            vec![UserRecord::new("pk", MAGIC[..3].to_vec())]
        );
        assert!(!is_aggregated(&MAGIC[..3]));
    }

    #[test]
    fn corrupt_checksum_is_named() {
        let mut bytes = encode(&[UserRecord::new("pk", b"hello".to_vec())]);
        let n = bytes.len();
        bytes[n - 20] ^= 0x01; // inside the body
        let err = decode("pk", &bytes).unwrap_err();
        assert!(matches!(err, KplError::ChecksumMismatch { .. }), "{err:?}");
        assert!(
            err.to_string().contains("KPL aggregate checksum mismatch"),
            "{err}"
        );
    }

    #[test]
    fn truncated_aggregate_is_an_error() {
        let bytes = encode(&[UserRecord::new("pk", b"hello".to_vec())]);
        let err = decode("pk", &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(err, KplError::ChecksumMismatch { .. }), "{err:?}");
        let err = decode("pk", &bytes[..MAGIC.len() + 5]).unwrap_err();
        assert_eq!(err, KplError::Truncated { len: 5 });
        assert!(err.to_string().contains("too short"), "{err}");
    }

    #[test]
    fn bad_protobuf_is_an_error() {
        // Field 3 (records) says 100 bytes follow, but none do.
        let err = decode("pk", &frame(&[0x1a, 100])).unwrap_err();
        assert!(matches!(err, KplError::Protobuf(_)), "{err:?}");
        assert!(
            err.to_string().contains("not a valid AggregatedRecord protobuf"),
            "{err}"
        );
        // A partition key that is not UTF-8.
        let err = decode("pk", &frame(&[0x0a, 1, 0xff])).unwrap_err();
        assert!(matches!(err, KplError::Protobuf(_)), "{err:?}");
    }

    #[test]
    fn empty_aggregate_is_an_error() {
        assert_eq!(decode("pk", &frame(&[])).unwrap_err(), KplError::EmptyAggregate);
    }

    #[test]
    fn key_index_out_of_range_is_named() {
        let body = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![
                Record {
                    partition_key_index: 0,
                    explicit_hash_key_index: None,
                    data: vec![1],
                    tags: vec![],
                },
                Record {
                    partition_key_index: 1,
                    explicit_hash_key_index: None,
                    data: vec![2],
                    tags: vec![],
                },
            ],
        };
        let err = decode("pk", &frame(&body.encode_to_vec())).unwrap_err();
        assert_eq!(
            err,
            KplError::PartitionKeyIndexOutOfRange {
                record: 1,
                index: 1,
                table_len: 1
            }
        );
        assert!(
            err.to_string()
                .contains("user record 1 points at partition key 1"),
            "{err}"
        );

        let body = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec!["5".into()],
            records: vec![Record {
                partition_key_index: 0,
                explicit_hash_key_index: Some(u64::MAX),
                data: vec![],
                tags: vec![],
            }],
        };
        let err = decode("pk", &frame(&body.encode_to_vec())).unwrap_err();
        assert_eq!(
            err,
            KplError::ExplicitHashKeyIndexOutOfRange {
                record: 0,
                index: u64::MAX,
                table_len: 1
            }
        );
    }

    #[test]
    fn tags_are_ignored_on_read() {
        let body = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: b"x".to_vec(),
                tags: vec![Tag {
                    key: "k".into(),
                    value: Some("v".into()),
                }],
            }],
        };
        let got = decode("pk", &frame(&body.encode_to_vec())).unwrap();
        assert_eq!(got, vec![UserRecord::new("a", b"x".to_vec())]);
    }

    #[test]
    fn required_fields_are_written_even_when_default() {
        // Index 0 and empty data are still on the wire, as proto2 `required` demands: a reader
        // built from messages.proto would otherwise reject the record.
        let bytes = encode(&[UserRecord::new("", Vec::new())]);
        let body = &bytes[MAGIC.len()..bytes.len() - DIGEST_LEN];
        assert_eq!(body, [0x0a, 0x00, 0x1a, 0x04, 0x08, 0x00, 0x1a, 0x00]);
    }

    #[test]
    fn hash_key_prefers_the_explicit_one() {
        let r = UserRecord::new("a", Vec::new());
        assert_eq!(r.hash_key().unwrap(), hash_key_of("a"));
        assert_eq!(r.clone().with_explicit_hash_key("42").hash_key().unwrap(), 42);
        assert!(r.with_explicit_hash_key("x").hash_key().is_err());
    }

    pub(crate) fn user_record() -> impl Strategy<Value = UserRecord> {
        (
            prop_oneof!["[a-c]", "[a-z0-9]{0,12}", "\\PC{1,8}"],
            proptest::option::weighted(0.3, prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,20}"]),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(partition_key, explicit_hash_key, data)| UserRecord {
                partition_key,
                explicit_hash_key,
                data,
            })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(records in proptest::collection::vec(user_record(), 1..60)) {
            let bytes = encode(&records);
            prop_assert_eq!(bytes.len(), encoded_len(&records));
            prop_assert_eq!(decode("stream-pk", &bytes).unwrap(), records);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode("pk", &bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode("pk", &framed);
            let _ = decode("pk", &frame(&bytes));
        }
    }
}
