//! Events the consumer cannot map, as they are kept in `rejected/`: one JSON object each, with
//! the reason, where the record was in the stream, and the event (or the raw bytes when it was
//! no event at all). The key is a function of the record's position, so re-reading the record
//! after a crash rewrites the same object.

use serde::Serialize;

use crate::event::Envelope;
use crate::keys;
use crate::ports::Bytes;
use crate::position::{Position, ShardId};
use crate::time::Timestamp;

/// What a rejected event looks like in `rejected/`.
#[derive(Serialize)]
struct RejectedRecord<'a> {
    reason: &'a str,
    shard: &'a str,
    sequence: &'a str,
    sub_sequence: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Envelope>,
    /// The raw user record when it is not an envelope at all, lossy UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

/// The key and body of the `rejected/` object for the record at `position`.
pub(super) fn rejected_object(
    shard: &ShardId,
    position: &Position,
    reason: &str,
    event: Option<&Envelope>,
    raw: Option<&[u8]>,
    now: Timestamp,
) -> (String, Bytes) {
    let record = RejectedRecord {
        reason,
        shard: shard.as_str(),
        sequence: position.seq.as_str(),
        sub_sequence: position.sub,
        event,
        raw: raw.map(|r| String::from_utf8_lossy(r).into_owned()),
    };
    let body = serde_json::to_vec_pretty(&record).expect("a rejected record always serialises");
    let at = event.map_or(now, |e| e.received_at);
    (keys::rejected_event_key(at, shard, position), Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::SequenceNumber;

    #[test]
    fn a_record_that_is_no_event_keeps_its_bytes() {
        let shard = ShardId::new("s");
        let p = Position::new(SequenceNumber::from_u128(9), 1);
        let now = Timestamp::parse_rfc3339("2024-05-01T07:00:00Z").unwrap();
        let (key, body) = rejected_object(&shard, &p, "not JSON", None, Some(b"\xffoops"), now);
        assert_eq!(key, "rejected/2024/05/01/07/s-9.1.json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["reason"], "not JSON");
        assert_eq!(v["sequence"], "9");
        assert_eq!(v["sub_sequence"], 1);
        assert_eq!(v["raw"], "\u{FFFD}oops");
        assert!(v.get("event").is_none());
    }
}
