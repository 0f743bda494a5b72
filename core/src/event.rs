//! The event envelope: what the producer accepts and the consumer maps into rows.
//!
//! The envelope travels inside each stream user record as JSON (see [`Envelope::encode`]). The
//! payload is kept as the raw bytes the client sent, so nothing is lost before the catalog maps it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::time::Timestamp;

/// An event's id: the client's own id when it gave one (the dedupe key for its retries), else a
/// UUIDv7 from the producer's [`IdSource`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    /// Longest client-supplied id kept (it lands in a `varchar` lineage column).
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where new event ids come from: the producer injects one backed by the clock and an OS random
/// source; the simulation injects a seeded one.
pub trait IdSource {
    fn next_id(&mut self, now: Timestamp) -> EventId;
}

/// A UUIDv7 (RFC 9562) from a millisecond time and 10 random bytes: time-ordered, so ids sort
/// roughly by arrival and index well.
pub fn uuid_v7(now: Timestamp, random: [u8; 10]) -> EventId {
    let millis = now.as_millis().max(0) as u64;
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    EventId(uuid.hyphenated().to_string())
}

/// An accepted event, stamped by the producer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub received_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    /// The payload exactly as received: a JSON document.
    pub payload: Box<RawValue>,
}

/// A stream record that is not an envelope.
#[derive(Debug, thiserror::Error)]
#[error("stream record is not an event envelope: {0}")]
pub struct EnvelopeDecodeError(#[from] serde_json::Error);

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.source == other.source
            && self.received_at == other.received_at
            && self.occurred_at == other.occurred_at
            && self.payload.get() == other.payload.get()
    }
}

impl Envelope {
    /// The bytes of a stream user record.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The payload's raw JSON text.
    pub fn payload_json(&self) -> &str {
        self.payload.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_is_time_ordered_and_versioned() {
        let a = uuid_v7(Timestamp::from_millis(1_700_000_000_000), [0xff; 10]);
        let b = uuid_v7(Timestamp::from_millis(1_700_000_000_001), [0x00; 10]);
        assert!(a < b, "{a} < {b}");
        let parsed = uuid::Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn envelope_round_trips_with_payload_bytes_intact() {
        let env = Envelope {
            id: EventId("evt-1".into()),
            event_type: "order_placed".into(),
            source: "shop".into(),
            received_at: Timestamp::from_millis(1_000),
            occurred_at: None,
            payload: RawValue::from_string(r#"{"a": 1.50,  "b":"x"}"#.into()).unwrap(),
        };
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back.payload_json(), r#"{"a": 1.50,  "b":"x"}"#);
        assert_eq!(back, env);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = Envelope::decode(b"\x00not json").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("stream record is not an event envelope")
        );
    }
}
