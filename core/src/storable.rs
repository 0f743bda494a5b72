//! What every warehouse the project supports can store: PostgreSQL, Redshift and SQLite.
//!
//! The mapper checks each value it writes against these rules, so a row it emits always loads
//! (contract 4: one bad value must not sink a batch); the producer runs the same checks at the
//! door ([`Mapper::unstorable`](crate::mapping::Mapper::unstorable)), so a client hears 422 naming
//! the field instead of 202 followed by a rejection. The rules are the intersection of the
//! warehouses' limits:
//!
//! | value | rule | who refuses it otherwise |
//! |---|---|---|
//! | text, json | no NUL character (also not as `\u0000` inside a JSON string or key) | PostgreSQL (`text`, `jsonb`: 22021 / 22P05), Redshift |
//! | text, json | at most [`MAX_TEXT_BYTES`] bytes of UTF-8 | Redshift (`VARCHAR(65535)`, the longest it has) |
//! | double | finite, and zero or normal (not subnormal) | Redshift ("out of range for type double precision") |
//! | timestamp, date | years 1 to 9999 | PostgreSQL reads no year 0; four-digit years are what both write and read back |
//! | row | at most [`MAX_ROW_BYTES`] of CSV | Redshift's COPY (one input row ≤ 4 MB) |
//!
//! Text is UTF-8 by construction (JSON strings are), and bigints are `i64`, which all three
//! store. Lone UTF-16 surrogates in JSON escapes are refused by the JSON parser before any of
//! this.

use serde_json::Value;

use crate::time::Timestamp;

/// Longest text or JSON value, in bytes: Redshift's `VARCHAR(65535)`.
pub const MAX_TEXT_BYTES: usize = 65_535;
/// Longest row, in CSV bytes: Redshift's COPY refuses an input row over 4 MB.
pub const MAX_ROW_BYTES: usize = 4 * 1024 * 1024;

/// Why a value cannot be stored; renders as the reason a client or `rejected/` sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unstorable {
    #[error("contains a NUL character, which PostgreSQL and Redshift cannot store")]
    Nul,
    #[error("is {bytes} bytes long; the longest value every warehouse stores is {MAX_TEXT_BYTES} bytes")]
    TooLong { bytes: usize },
    #[error("{value} is not a finite double")]
    NotFinite { value: String },
    #[error("{value} is too close to zero for Redshift's double precision (subnormal)")]
    Subnormal { value: String },
    #[error("{value} is outside the years 1 to 9999")]
    YearOutOfRange { value: String },
    #[error("the row is {bytes} bytes of CSV; Redshift's COPY takes rows of at most {MAX_ROW_BYTES}")]
    RowTooLong { bytes: usize },
}

/// A text value.
pub fn text(s: &str) -> Result<(), Unstorable> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(Unstorable::TooLong { bytes: s.len() });
    }
    if memchr::memchr(0, s.as_bytes()).is_some() {
        return Err(Unstorable::Nul);
    }
    Ok(())
}

/// A JSON value for a `json` column, with the length of its text as it will be stored.
pub fn json(value: &Value, stored_len: usize) -> Result<(), Unstorable> {
    if stored_len > MAX_TEXT_BYTES {
        return Err(Unstorable::TooLong { bytes: stored_len });
    }
    if json_has_nul(value) {
        return Err(Unstorable::Nul);
    }
    Ok(())
}

fn json_has_nul(value: &Value) -> bool {
    let nul = |s: &str| memchr::memchr(0, s.as_bytes()).is_some();
    match value {
        Value::String(s) => nul(s),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| nul(k) || json_has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A double value.
pub fn double(f: f64) -> Result<(), Unstorable> {
    if !f.is_finite() {
        return Err(Unstorable::NotFinite {
            value: format!("{f:e}"),
        });
    }
    if f != 0.0 && !f.is_normal() {
        return Err(Unstorable::Subnormal {
            value: format!("{f:e}"),
        });
    }
    Ok(())
}

/// A timestamp value (or the instant of a date).
pub fn timestamp(t: Timestamp) -> Result<(), Unstorable> {
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z.
    const MIN: i64 = -62_135_596_800_000_000;
    const MAX: i64 = 253_402_300_799_999_999;
    if !(MIN..=MAX).contains(&t.as_micros()) {
        return Err(Unstorable::YearOutOfRange {
            value: format!("{} microseconds since the epoch", t.as_micros()),
        });
    }
    Ok(())
}

/// A `YYYY-MM-DD` date's year.
pub fn year(y: i32, shown: &str) -> Result<(), Unstorable> {
    if !(1..=9999).contains(&y) {
        return Err(Unstorable::YearOutOfRange {
            value: shown.to_owned(),
        });
    }
    Ok(())
}

/// A whole CSV row.
pub fn row(bytes: usize) -> Result<(), Unstorable> {
    if bytes > MAX_ROW_BYTES {
        return Err(Unstorable::RowTooLong { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(text("fine"), Ok(()));
        assert_eq!(text("a\0b"), Err(Unstorable::Nul));
        assert_eq!(text(&"x".repeat(MAX_TEXT_BYTES)), Ok(()));
        assert_eq!(
            text(&"é".repeat(MAX_TEXT_BYTES / 2 + 1)),
            Err(Unstorable::TooLong {
                bytes: MAX_TEXT_BYTES + 1
            }),
            "bytes, not characters"
        );
    }

    #[test]
    fn json_rules_look_into_strings_and_keys() {
        let v: Value = serde_json::from_str(r#"{"a":[1,{"b":"x\u0000y"}]}"#).unwrap();
        assert_eq!(json(&v, 10), Err(Unstorable::Nul));
        let v: Value = serde_json::from_str(r#"{"k\u0000":1}"#).unwrap();
        assert_eq!(json(&v, 10), Err(Unstorable::Nul));
        let v: Value = serde_json::from_str(r#"{"a":"\\u0000 is only text here"}"#).unwrap();
        assert_eq!(json(&v, 10), Ok(()));
        assert!(json(&Value::Null, MAX_TEXT_BYTES + 1).is_err());
        // Lone surrogates never get this far.
        assert!(serde_json::from_str::<Value>(r#""\ud800""#).is_err());
    }

    #[test]
    fn number_and_time_rules() {
        assert_eq!(double(0.0), Ok(()));
        assert_eq!(double(-1.5e300), Ok(()));
        assert_eq!(double(f64::MIN_POSITIVE), Ok(()));
        assert!(matches!(double(2.33125e-315), Err(Unstorable::Subnormal { .. })));
        assert!(matches!(double(f64::NAN), Err(Unstorable::NotFinite { .. })));
        assert_eq!(timestamp(Timestamp::from_millis(0)), Ok(()));
        assert!(timestamp(Timestamp::from_micros(i64::MAX)).is_err());
        assert!(timestamp(Timestamp::from_micros(-62_135_596_800_000_001)).is_err());
        assert!(year(0, "0000-01-01").is_err() && year(9999, "9999-12-31").is_ok());
        assert!(row(MAX_ROW_BYTES).is_ok() && row(MAX_ROW_BYTES + 1).is_err());
    }
}
