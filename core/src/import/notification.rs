//! Step 1 of the importer: a queue message's body to the objects it announces.
//!
//! The body is an S3 event notification (`{"Records": [...]}`), delivered straight from S3 to SQS
//! or wrapped by SNS (`{"Type": "Notification", "Message": "<the notification as a string>"}`)
//! when the bucket fans out through a topic. Everything that is not a new object under
//! [`LOADS_PREFIX`] is ignored with its reason, so the driver can ack and count it; a body that is
//! not a notification at all is a [`NotificationError`], which the driver dead-letters.

use std::cmp::Ordering;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::Value;

use crate::keys::{self, LOADS_PREFIX};
use crate::ports::ObjectLocation;
use crate::time::Timestamp;

/// An object announced by a notification, with its key already decoded: the importer's unit of
/// work, handed to [`decide`](super::decide) with the object's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// The key as stored, e.g. `loads/orders/2024/05/01/07/shardId-000000000001-10-12.csv`.
    pub key: String,
    /// Bytes of the stored (possibly compressed) object; S3 always sends it for `ObjectCreated`,
    /// some emulators do not.
    pub size: Option<u64>,
    pub sequencer: Option<Sequencer>,
    /// When the store finished the write.
    pub event_time: Timestamp,
    /// e.g. `ObjectCreated:Put`, kept for logs.
    pub event_name: String,
}

impl ObjectRef {
    /// Where the object is: the notification's bucket and key.
    pub fn location(&self) -> ObjectLocation {
        ObjectLocation::new(&self.bucket, &self.key)
    }

    /// The table segment of a `loads/<table>/...` key, which the batch metadata must agree with.
    pub fn key_table(&self) -> Option<&str> {
        keys::table_of_batch_key(&self.key)
    }
}

/// S3's per-key event order: a hex string. Sequencers may differ in length, so they compare as
/// numbers (as if the shorter were left-padded with zeros), never as plain strings. Only two
/// events on the same key are comparable.
#[derive(Clone, Debug)]
pub struct Sequencer(pub String);

impl Sequencer {
    /// The significant digits, case-folded: what ordering, equality and hashing all look at, so
    /// that `00AB` and `ab` are one sequencer.
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.0
            .trim_start_matches('0')
            .bytes()
            .map(|c| c.to_ascii_uppercase())
    }

    fn significant_len(&self) -> usize {
        self.0.trim_start_matches('0').len()
    }
}

impl Ord for Sequencer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.significant_len()
            .cmp(&other.significant_len())
            .then_with(|| self.digits().cmp(other.digits()))
    }
}

impl PartialEq for Sequencer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Sequencer {}

impl std::hash::Hash for Sequencer {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.digits() {
            state.write_u8(b);
        }
    }
}

impl PartialOrd for Sequencer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Sequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a message, or one record in it, carries nothing to load. The driver acks it and counts it
/// under [`code`](Self::code), so nothing is dropped silently.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreReason {
    /// S3 sends `s3:TestEvent` once when a notification configuration is saved.
    #[error("S3 test event")]
    TestEvent,
    #[error("message has no S3 event records")]
    NoRecords,
    /// An SNS envelope that is not a `Notification` (e.g. a `SubscriptionConfirmation`).
    #[error("SNS message of type {message_type:?} is not a notification")]
    NotSnsNotification { message_type: String },
    #[error("event {event_name:?} is not an ObjectCreated event")]
    NotObjectCreated { event_name: String },
    #[error("object key {key:?} is outside {LOADS_PREFIX}")]
    OutsideLoads { key: String },
    /// Under `loads/` but not a batch: a console "folder" placeholder, a sidecar, a marker.
    #[error("object key {key:?} is not a batch object (.csv, .csv.gz or .csv.zst)")]
    NotABatchObject { key: String },
}

impl IgnoreReason {
    /// A stable label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            IgnoreReason::TestEvent => "test_event",
            IgnoreReason::NoRecords => "no_records",
            IgnoreReason::NotSnsNotification { .. } => "not_sns_notification",
            IgnoreReason::NotObjectCreated { .. } => "not_object_created",
            IgnoreReason::OutsideLoads { .. } => "outside_loads",
            IgnoreReason::NotABatchObject { .. } => "not_a_batch_object",
        }
    }
}

/// What one queue message holds: the objects to load, and what was ignored and why. A message
/// with no objects is acked without loading anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    pub objects: Vec<ObjectRef>,
    pub ignored: Vec<IgnoreReason>,
}

impl Notification {
    fn ignored(reason: IgnoreReason) -> Self {
        Notification {
            objects: Vec::new(),
            ignored: vec![reason],
        }
    }
}

/// A queue message that is not a readable notification; the driver dead-letters it with this
/// message as the reason (see [`DeadLetterReason::MalformedNotification`](super::DeadLetterReason)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("queue message is not JSON: {0}")]
    NotJson(String),
    #[error("queue message is JSON but not an object")]
    NotAnObject,
    #[error("SNS notification has no string `Message`")]
    SnsWithoutMessage,
    #[error("`Records` is not an array")]
    RecordsNotArray,
    #[error("S3 event record {index} is malformed: {detail}")]
    MalformedRecord { index: usize, detail: String },
    #[error("S3 event record {index} has an invalid eventTime: {value:?}")]
    InvalidEventTime { index: usize, value: String },
    #[error("S3 event record {index} has an object key that does not decode to UTF-8: {key:?}")]
    KeyNotUtf8 { index: usize, key: String },
}

/// Reads an SQS message body holding an S3 event notification, bare or SNS-wrapped.
pub fn parse_message(body: &str) -> Result<Notification, NotificationError> {
    let value: Value = serde_json::from_str(body).map_err(|e| NotificationError::NotJson(e.to_string()))?;
    parse_value(&value, true)
}

fn parse_value(value: &Value, may_be_sns: bool) -> Result<Notification, NotificationError> {
    let obj = value.as_object().ok_or(NotificationError::NotAnObject)?;
    if obj.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::ignored(IgnoreReason::TestEvent));
    }
    // SNS envelopes have `Type`; S3 notifications never do. Only one level of wrapping exists
    // (S3 → SNS → SQS), so an envelope inside an envelope is not unwrapped again.
    if may_be_sns
        && !obj.contains_key("Records")
        && let Some(message_type) = obj.get("Type").and_then(Value::as_str)
    {
        if message_type != "Notification" {
            return Ok(Notification::ignored(IgnoreReason::NotSnsNotification {
                message_type: message_type.to_owned(),
            }));
        }
        let inner = obj
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(NotificationError::SnsWithoutMessage)?;
        let inner: Value =
            serde_json::from_str(inner).map_err(|e| NotificationError::NotJson(e.to_string()))?;
        return parse_value(&inner, false);
    }
    let records = match obj.get("Records") {
        None | Some(Value::Null) => return Ok(Notification::ignored(IgnoreReason::NoRecords)),
        Some(Value::Array(records)) if records.is_empty() => {
            return Ok(Notification::ignored(IgnoreReason::NoRecords));
        }
        Some(Value::Array(records)) => records,
        Some(_) => return Err(NotificationError::RecordsNotArray),
    };
    let mut out = Notification::default();
    for (index, record) in records.iter().enumerate() {
        match parse_record(index, record)? {
            Ok(object) => out.objects.push(object),
            Err(reason) => out.ignored.push(reason),
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecord {
    event_time: String,
    s3: RawS3,
}

#[derive(Deserialize)]
struct RawS3 {
    bucket: RawBucket,
    object: RawObject,
}

#[derive(Deserialize)]
struct RawBucket {
    name: String,
}

#[derive(Deserialize)]
struct RawObject {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    sequencer: Option<String>,
}

/// One record: `Ok(Ok(object))` to load, `Ok(Err(reason))` to ignore.
fn parse_record(index: usize, record: &Value) -> Result<Result<ObjectRef, IgnoreReason>, NotificationError> {
    let malformed = |detail: String| NotificationError::MalformedRecord { index, detail };
    let event_name = record
        .get("eventName")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("missing string field `eventName`".into()))?;
    // MinIO and some emulators prefix the name with `s3:` as in the configuration's filter.
    let bare = event_name.strip_prefix("s3:").unwrap_or(event_name);
    if !bare.starts_with("ObjectCreated:") {
        return Ok(Err(IgnoreReason::NotObjectCreated {
            event_name: event_name.to_owned(),
        }));
    }
    let raw: RawRecord = RawRecord::deserialize(record).map_err(|e| malformed(e.to_string()))?;
    let key = decode_key(&raw.s3.object.key).ok_or_else(|| NotificationError::KeyNotUtf8 {
        index,
        key: raw.s3.object.key.clone(),
    })?;
    if !key.starts_with(LOADS_PREFIX) {
        return Ok(Err(IgnoreReason::OutsideLoads { key }));
    }
    if !keys::is_batch_key(&key) {
        return Ok(Err(IgnoreReason::NotABatchObject { key }));
    }
    let event_time =
        Timestamp::parse_rfc3339(&raw.event_time).map_err(|_| NotificationError::InvalidEventTime {
            index,
            value: raw.event_time.clone(),
        })?;
    Ok(Ok(ObjectRef {
        bucket: raw.s3.bucket.name,
        key,
        size: raw.s3.object.size,
        sequencer: raw.s3.object.sequencer.map(Sequencer),
        event_time,
        event_name: event_name.to_owned(),
    }))
}

/// S3 writes keys form-URL-encoded: `+` is a space and everything else is percent-encoded, so
/// `+` must become a space *before* percent-decoding (a literal `+` arrives as `%2B`).
fn decode_key(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event_name: &str, key: &str) -> Value {
        serde_json::json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": "2024-05-01T12:00:00.123Z",
            "eventName": event_name,
            "userIdentity": {"principalId": "EXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "loads",
                "bucket": {"name": "mb-loads", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                           "arn": "arn:aws:s3:::mb-loads"},
                "object": {"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                           "sequencer": "0055AED6DCD90281E5"}
            }
        })
    }

    fn message(records: Vec<Value>) -> String {
        serde_json::json!({ "Records": records }).to_string()
    }

    fn single(event_name: &str, key: &str) -> Notification {
        parse_message(&message(vec![record(event_name, key)])).unwrap()
    }

    #[test]
    fn reads_an_object_created_record() {
        let n = single(
            "ObjectCreated:Put",
            "loads/orders/2024/05/01/12/shardId-000000000001-10-12.csv",
        );
        assert!(n.ignored.is_empty());
        assert_eq!(
            n.objects,
            vec![ObjectRef {
                bucket: "mb-loads".into(),
                key: "loads/orders/2024/05/01/12/shardId-000000000001-10-12.csv".into(),
                size: Some(1024),
                sequencer: Some(Sequencer("0055AED6DCD90281E5".into())),
                event_time: Timestamp::parse_rfc3339("2024-05-01T12:00:00.123Z").unwrap(),
                event_name: "ObjectCreated:Put".into(),
            }]
        );
        assert_eq!(n.objects[0].key_table(), Some("orders"));
    }

    #[test]
    fn decodes_form_url_encoded_keys() {
        let cases = [
            ("loads/a+b/x.csv", "loads/a b/x.csv"),
            ("loads%2Forders%2Fx.csv", "loads/orders/x.csv"),
            ("loads/c%2Bd/x.csv", "loads/c+d/x.csv"),
            ("loads/caf%C3%A9/%E2%9C%93.csv", "loads/café/✓.csv"),
            ("loads/p%25q/x.csv", "loads/p%q/x.csv"),
            // A stray `%` that is not an escape is kept as it is.
            ("loads/100%/x.csv", "loads/100%/x.csv"),
        ];
        for (raw, decoded) in cases {
            let n = single("ObjectCreated:Put", raw);
            assert_eq!(n.objects.len(), 1, "{raw}");
            assert_eq!(n.objects[0].key, decoded, "{raw}");
        }
    }

    #[test]
    fn a_key_that_is_not_utf8_is_an_error() {
        let err = parse_message(&message(vec![record("ObjectCreated:Put", "loads/%FF.csv")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "S3 event record 0 has an object key that does not decode to UTF-8: \"loads/%FF.csv\""
        );
    }

    #[test]
    fn ignores_the_test_event() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z",
            "Bucket":"mb-loads","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;
        let n = parse_message(body).unwrap();
        assert_eq!(
            n,
            Notification {
                objects: vec![],
                ignored: vec![IgnoreReason::TestEvent]
            }
        );
        assert_eq!(n.ignored[0].to_string(), "S3 test event");
        assert_eq!(n.ignored[0].code(), "test_event");
    }

    #[test]
    fn ignores_messages_without_records() {
        for body in [
            r#"{}"#,
            r#"{"Records":null}"#,
            r#"{"Records":[]}"#,
            r#"{"hello":"world"}"#,
        ] {
            let n = parse_message(body).unwrap();
            assert_eq!(n.ignored, vec![IgnoreReason::NoRecords], "{body}");
            assert!(n.objects.is_empty());
        }
        assert_eq!(
            IgnoreReason::NoRecords.to_string(),
            "message has no S3 event records"
        );
    }

    #[test]
    fn ignores_events_other_than_object_created() {
        let n = single("ObjectRemoved:Delete", "loads/orders/x.csv");
        assert!(n.objects.is_empty());
        assert_eq!(
            n.ignored,
            vec![IgnoreReason::NotObjectCreated {
                event_name: "ObjectRemoved:Delete".into()
            }]
        );
        assert_eq!(
            n.ignored[0].to_string(),
            "event \"ObjectRemoved:Delete\" is not an ObjectCreated event"
        );
    }

    #[test]
    fn accepts_every_object_created_flavour_and_the_s3_prefix() {
        for name in [
            "ObjectCreated:Put",
            "ObjectCreated:Post",
            "ObjectCreated:Copy",
            "ObjectCreated:CompleteMultipartUpload",
            "s3:ObjectCreated:Put",
        ] {
            assert_eq!(single(name, "loads/t/x.csv").objects.len(), 1, "{name}");
        }
    }

    #[test]
    fn ignores_keys_outside_loads() {
        let n = single("ObjectCreated:Put", "unloads/orders/0000_part_00");
        assert!(n.objects.is_empty());
        assert_eq!(
            n.ignored,
            vec![IgnoreReason::OutsideLoads {
                key: "unloads/orders/0000_part_00".into()
            }]
        );
        assert_eq!(
            n.ignored[0].to_string(),
            "object key \"unloads/orders/0000_part_00\" is outside loads/"
        );
        // The prefix is checked on the decoded key.
        assert_eq!(single("ObjectCreated:Put", "loads%2Ft%2Fx.csv").objects.len(), 1);
        assert_eq!(single("ObjectCreated:Put", "loadsX/t/x.csv").objects.len(), 0);
    }

    #[test]
    fn ignores_objects_under_loads_that_are_not_batches() {
        for key in [
            "loads/orders/",
            "loads/orders/x.csv.meta.json",
            "loads/_SUCCESS",
            "loads/x.csv.bz2",
        ] {
            let n = single("ObjectCreated:Put", key);
            assert!(n.objects.is_empty(), "{key}");
            assert_eq!(n.ignored, vec![IgnoreReason::NotABatchObject { key: key.into() }]);
        }
        assert_eq!(
            IgnoreReason::NotABatchObject {
                key: "loads/orders/".into()
            }
            .to_string(),
            "object key \"loads/orders/\" is not a batch object (.csv, .csv.gz or .csv.zst)"
        );
        for key in ["loads/t/x.csv", "loads/t/x.csv.gz", "loads/t/x.csv.zst"] {
            assert_eq!(single("ObjectCreated:Put", key).objects.len(), 1, "{key}");
        }
    }

    #[test]
    fn keeps_every_record_of_a_mixed_message() {
        let body = message(vec![
            record("ObjectCreated:Put", "loads/a/1.csv"),
            record("ObjectRemoved:Delete", "loads/a/0.csv"),
            record("ObjectCreated:Put", "other/2.csv"),
            record("ObjectCreated:CompleteMultipartUpload", "loads/b/3.csv.gz"),
        ]);
        let n = parse_message(&body).unwrap();
        let keys: Vec<_> = n.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["loads/a/1.csv", "loads/b/3.csv.gz"]);
        let codes: Vec<_> = n.ignored.iter().map(IgnoreReason::code).collect();
        assert_eq!(codes, ["not_object_created", "outside_loads"]);
    }

    #[test]
    fn unwraps_sns_envelopes() {
        let inner = message(vec![record("ObjectCreated:Put", "loads/orders/a+b%2Fc.csv")]);
        let sns = serde_json::json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:mb-loads",
            "Subject": "Amazon S3 Notification",
            "Message": inner,
            "Timestamp": "2024-05-01T12:00:00.200Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertURL": "https://sns.us-west-2.amazonaws.com/x.pem",
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe"
        })
        .to_string();
        let n = parse_message(&sns).unwrap();
        assert_eq!(n.objects.len(), 1);
        assert_eq!(n.objects[0].key, "loads/orders/a b/c.csv");

        let test_event = serde_json::json!({
            "Type": "Notification",
            "Message": r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"mb-loads"}"#
        });
        assert_eq!(
            parse_message(&test_event.to_string()).unwrap().ignored,
            vec![IgnoreReason::TestEvent]
        );

        let confirm =
            serde_json::json!({"Type": "SubscriptionConfirmation", "Message": "You have chosen..."});
        let n = parse_message(&confirm.to_string()).unwrap();
        assert_eq!(
            n.ignored,
            vec![IgnoreReason::NotSnsNotification {
                message_type: "SubscriptionConfirmation".into()
            }]
        );
        assert_eq!(
            n.ignored[0].to_string(),
            "SNS message of type \"SubscriptionConfirmation\" is not a notification"
        );
    }

    #[test]
    fn sns_wrapping_is_unwrapped_only_once() {
        let twice = serde_json::json!({
            "Type": "Notification",
            "Message": serde_json::json!({"Type": "Notification", "Message": message(vec![])}).to_string()
        });
        assert_eq!(
            parse_message(&twice.to_string()).unwrap().ignored,
            vec![IgnoreReason::NoRecords]
        );
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "queue message is not JSON: expected ident at line 1 column 2"),
            ("[1,2]".into(), "queue message is JSON but not an object"),
            (r#"{"Records": {"a": 1}}"#.into(), "`Records` is not an array"),
            (r#"{"Type":"Notification"}"#.into(), "SNS notification has no string `Message`"),
            (
                r#"{"Type":"Notification","Message":"{oops"}"#.into(),
                "queue message is not JSON: key must be a string at line 1 column 2",
            ),
            (r#"{"Records":[{"s3":{}}]}"#.into(), "S3 event record 0 is malformed: missing string field `eventName`"),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2024-05-01T12:00:00Z","s3":{"bucket":{"name":"b"},"object":{}}}]}"#.into(),
                "S3 event record 0 is malformed: missing field `key`",
            ),
        ];
        for (body, want) in cases {
            let err = parse_message(&body).unwrap_err();
            assert_eq!(err.to_string(), want, "{body}");
        }
        let mut bad_time = record("ObjectCreated:Put", "loads/t/x.csv");
        bad_time["eventTime"] = "yesterday".into();
        let err = parse_message(&message(vec![
            record("ObjectCreated:Put", "loads/t/y.csv"),
            bad_time,
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            NotificationError::InvalidEventTime {
                index: 1,
                value: "yesterday".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "S3 event record 1 has an invalid eventTime: \"yesterday\""
        );
    }

    #[test]
    fn size_and_sequencer_are_optional() {
        let mut r = record("ObjectCreated:Put", "loads/t/x.csv");
        r["s3"]["object"] = serde_json::json!({"key": "loads/t/x.csv"});
        let n = parse_message(&message(vec![r])).unwrap();
        assert_eq!(n.objects[0].size, None);
        assert_eq!(n.objects[0].sequencer, None);
    }

    #[test]
    fn sequencers_compare_as_left_padded_hex() {
        let s = |v: &str| Sequencer(v.into());
        assert!(s("0055AED6DCD90281E5") < s("0055AED6DCD90281E6"));
        assert!(s("FF") < s("0100"));
        assert!(s("ff") < s("100"));
        assert_eq!(s("00AB").cmp(&s("ab")), Ordering::Equal);
        assert!(s("0055AED6DCD90281E5") > s("55AED6DCD9028"));
    }
}

/// Characters S3 leaves bare in a notification's key; everything else is percent-encoded (and a
/// space becomes `+`), as in `application/x-www-form-urlencoded`.
const KEY_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'*')
    .remove(b' ');

/// The body of an S3 `ObjectCreated:Put` notification for one object, as S3 sends it to SQS.
/// Stores that have no notifications of their own (the local directory, the simulation) send
/// this, so the importer reads one format everywhere.
pub fn object_created_message(
    bucket: &str,
    key: &str,
    size: u64,
    sequencer: u64,
    event_time: Timestamp,
) -> String {
    let key = percent_encoding::utf8_percent_encode(key, KEY_ESCAPES)
        .to_string()
        .replace(' ', "+");
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "eventTime": event_time.to_string(),
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": { "key": key, "size": size, "sequencer": format!("{sequencer:016X}") }
            }
        }]
    })
    .to_string()
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    #[test]
    fn built_messages_parse_back_with_the_same_key() {
        let key = "loads/my table/2024/05/01/12/s-1-2.csv";
        let body = object_created_message("b", key, 10, 7, Timestamp::from_millis(0));
        assert!(body.contains("loads%2Fmy+table%2F2024"), "{body}");
        let n = parse_message(&body).unwrap();
        assert_eq!(n.objects.len(), 1);
        assert_eq!(n.objects[0].key, key);
        assert_eq!(n.objects[0].size, Some(10));
    }
}
