//! Timestamps: Unix milliseconds inside tripline, RFC 3339 on the wire.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ModelError;

/// Earliest timestamp tripline accepts at all: 0001-01-01T00:00:00Z, in Unix milliseconds.
pub const MIN_TS_MS: i64 = -62_135_596_800_000;
/// Latest timestamp tripline accepts at all: 9999-12-31T23:59:59.999Z, in Unix milliseconds.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp with an offset (`Z` or `±hh:mm`) into Unix milliseconds.
/// Digits below the millisecond are truncated.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, ModelError> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|error| {
        let value: String = text.chars().take(64).collect();
        // RFC 3339 has four-digit years: a date of year 10000 or later is out of range, not garbage.
        let (year, rest) = text.split_at(text.find('-').unwrap_or(0));
        if year.len() > 4 && year.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty() {
            ModelError::TimestampOutOfRange { value, future: true }
        } else {
            ModelError::InvalidTimestamp { value, reason: error.to_string() }
        }
    })?;
    check_ts_range(parsed.timestamp_millis())
}

/// Checks that Unix milliseconds lie within years 1–9999, so every timestamp formats as RFC 3339.
pub fn check_ts_range(ts_ms: i64) -> Result<i64, ModelError> {
    if (MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms) {
        Ok(ts_ms)
    } else {
        Err(ModelError::TimestampOutOfRange { value: ts_ms.to_string(), future: ts_ms > MAX_TS_MS })
    }
}

/// Unix milliseconds as a UTC date-time. Values outside years 1–9999 are clamped to that range.
pub fn to_datetime(ts_ms: i64) -> DateTime<Utc> {
    let clamped = ts_ms.clamp(MIN_TS_MS, MAX_TS_MS);
    DateTime::from_timestamp_millis(clamped).unwrap_or_default()
}

/// Formats Unix milliseconds as RFC 3339 in UTC with millisecond precision, e.g.
/// `2026-11-25T10:15:30.250Z`.
pub fn format_rfc3339_ms(ts_ms: i64) -> String {
    to_datetime(ts_ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The wall clock in Unix milliseconds, for the callers that inject "now" into the pure code
/// (the decoder, the engine, the stores' expiry). 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `serde` adapter: Unix milliseconds written as an RFC 3339 string.
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `ts_ms` as RFC 3339 (UTC, milliseconds).
    pub fn serialize<S: Serializer>(ts_ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_rfc3339_ms(*ts_ms))
    }

    /// Reads an RFC 3339 string into Unix milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::parse_rfc3339_ms(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offset_is_read_as_utc_milliseconds() {
        let utc = parse_rfc3339_ms("2026-11-25T10:15:30.250Z").unwrap();
        let berlin = parse_rfc3339_ms("2026-11-25T11:15:30.250+01:00").unwrap();
        assert_eq!(utc, berlin);
        assert_eq!(format_rfc3339_ms(utc), "2026-11-25T10:15:30.250Z");
    }

    #[test]
    fn timestamps_without_offset_or_out_of_range_are_refused() {
        assert!(parse_rfc3339_ms("2026-11-25T10:15:30").is_err());
        assert!(parse_rfc3339_ms("yesterday").is_err());
        assert!(check_ts_range(MAX_TS_MS + 1).is_err());
        assert!(check_ts_range(MIN_TS_MS).is_ok());
    }

    #[test]
    fn sub_millisecond_digits_are_truncated() {
        let ts = parse_rfc3339_ms("2026-11-25T10:15:30.250999Z").unwrap();
        assert_eq!(format_rfc3339_ms(ts), "2026-11-25T10:15:30.250Z");
    }
}
