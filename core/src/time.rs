//! Instants in the flow: `received_at`, buffer ages, retry deadlines.
//!
//! Core never reads a clock; every `now` is passed in by a driver, which gets it from the
//! [`Clock`](crate::ports::Clock) port. A [`Timestamp`] is microseconds since the Unix epoch in
//! UTC, so it orders, subtracts and formats without a time-zone database.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// A text that is not an RFC 3339 timestamp, or one out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0:?}")]
pub struct TimestampError(pub String);

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Parses RFC 3339 (`2024-05-01T12:00:00.123Z`, any offset), normalised to UTC.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let dt = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError(text.to_owned()))?;
        Self::from_datetime(dt).ok_or_else(|| TimestampError(text.to_owned()))
    }

    fn from_datetime(dt: OffsetDateTime) -> Option<Self> {
        let micros = dt.unix_timestamp_nanos() / 1000;
        i64::try_from(micros).ok().map(Timestamp)
    }

    fn to_datetime(self) -> OffsetDateTime {
        // Every i64 of microseconds is within `time`'s range only up to year 9999; clamp so that
        // formatting never panics on a hostile value.
        let nanos = i128::from(self.0) * 1000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(if self.0 < 0 {
                OffsetDateTime::UNIX_EPOCH
            } else {
                max_datetime()
            })
            .to_offset(UtcOffset::UTC)
    }

    /// `(year, month, day, hour)` in UTC, for object-key partitions.
    pub fn utc_hour_parts(self) -> (i32, u8, u8, u8) {
        let dt = self.to_datetime();
        (dt.year(), u8::from(dt.month()), dt.day(), dt.hour())
    }

    /// `YYYY-MM-DD` in UTC: the text form of a `date` column.
    pub fn format_date(self) -> String {
        let dt = self.to_datetime();
        format!("{:04}-{:02}-{:02}", dt.year(), u8::from(dt.month()), dt.day())
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_micros(d)))
    }

    /// Time since `earlier`, zero if `earlier` is later (clocks may be skewed between components).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

fn max_datetime() -> OffsetDateTime {
    time::macros::datetime!(9999-12-31 23:59:59.999999 UTC)
}

/// A duration in whole microseconds, saturating.
pub fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Timestamp {
    /// The 27 bytes of [`Display`](fmt::Display), without the formatting machinery: the mapper
    /// writes two per row, so this is on the hot path.
    pub fn to_iso_bytes(self) -> [u8; 27] {
        let micros = self.0.clamp(MIN_MICROS, MAX_MICROS);
        let days = micros.div_euclid(MICROS_PER_DAY);
        let in_day = micros.rem_euclid(MICROS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = in_day / 1_000_000;
        let frac = in_day % 1_000_000;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        put(20, 6, frac);
        out
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: four-digit years only.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Days since the epoch to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Timestamp {
    /// UTC ISO-8601 with microseconds, e.g. `2024-05-01T12:00:00.123456Z`: the form both
    /// PostgreSQL and Redshift read into `timestamp` columns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_iso_bytes();
        f.write_str(std::str::from_utf8(&bytes).expect("ASCII digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_micros() {
        let t = Timestamp::parse_rfc3339("2024-05-01T14:00:00.5+02:00").unwrap();
        assert_eq!(t.to_string(), "2024-05-01T12:00:00.500000Z");
        assert_eq!(t.utc_hour_parts(), (2024, 5, 1, 12));
        assert_eq!(t.format_date(), "2024-05-01");
    }

    #[test]
    fn fast_formatting_agrees_with_the_time_crate() {
        let samples = [
            0i64,
            1,
            -1,
            951_782_400_000_000,
            1_714_564_800_123_456,
            -62_135_596_800_000_000,
            4_102_444_800_000_000,
        ];
        for micros in samples
            .into_iter()
            .chain((0..2000).map(|i| i * 7_919_999_999_937 - 5_000_000_000_000_000))
        {
            let t = Timestamp::from_micros(micros);
            let dt = t.to_datetime();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.microsecond()
            );
            assert_eq!(t.to_string(), expected, "{micros}");
        }
    }

    #[test]
    fn rejects_non_rfc3339() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("2024-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.saturating_add(Duration::from_millis(5)).as_millis(), 1_005);
        assert_eq!(Timestamp::from_millis(0).saturating_since(t), Duration::ZERO);
        assert_eq!(
            Timestamp::from_micros(i64::MAX).to_string(),
            "9999-12-31T23:59:59.999999Z"
        );
    }
}
