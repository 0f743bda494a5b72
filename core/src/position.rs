//! Where a record sits in the stream: shard, sequence number and, for a user record inside a KPL
//! aggregate, its sub-sequence number.
//!
//! Kinesis sequence numbers are decimal strings of up to 128 bits and more (56 digits today), so
//! they are kept as text and compared numerically: shorter is smaller, then byte order.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A shard of the stream, e.g. `shardId-000000000003`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub String);

impl ShardId {
    pub fn new(id: impl Into<String>) -> Self {
        ShardId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record's sequence number within its shard: ASCII digits, no leading zeros.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SequenceNumber(String);

/// A sequence number that is not a plain decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sequence number (decimal digits expected): {0:?}")]
pub struct SequenceNumberError(pub String);

impl SequenceNumber {
    pub fn parse(text: &str) -> Result<Self, SequenceNumberError> {
        let ok = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        if ok {
            Ok(SequenceNumber(text.to_owned()))
        } else {
            Err(SequenceNumberError(text.to_owned()))
        }
    }

    pub fn from_u128(n: u128) -> Self {
        SequenceNumber(n.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = SequenceNumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SequenceNumber::parse(&s)
    }
}

impl From<SequenceNumber> for String {
    fn from(s: SequenceNumber) -> String {
        s.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user record's place in its shard: the stream record's sequence number and the index of the
/// user record inside it (0 for a plain record). This is the unit the KCL checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub seq: SequenceNumber,
    pub sub: u32,
}

impl Position {
    pub fn new(seq: SequenceNumber, sub: u32) -> Self {
        Position { seq, sub }
    }
}

impl fmt::Display for Position {
    /// `seq` for sub-sequence 0, else `seq.sub`: the form used in object keys, so two batches cut
    /// inside one aggregate never share a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sub == 0 {
            write!(f, "{}", self.seq)
        } else {
            write!(f, "{}.{}", self.seq, self.sub)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_numerically() {
        let small = SequenceNumber::parse("99").unwrap();
        let big = SequenceNumber::parse("100").unwrap();
        assert!(small < big);
        let kinesis =
            SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
        assert!(big < kinesis);
    }

    #[test]
    fn sequence_numbers_reject_non_digits() {
        for bad in ["", "12a", "-1", "007", " 1"] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SequenceNumber::parse("0").is_ok());
    }

    #[test]
    fn positions_order_by_sequence_then_sub() {
        let p = |s: u128, sub| Position::new(SequenceNumber::from_u128(s), sub);
        assert!(p(5, 9) < p(6, 0));
        assert!(p(6, 0) < p(6, 1));
        assert_eq!(p(6, 0).to_string(), "6");
        assert_eq!(p(6, 2).to_string(), "6.2");
    }
}
