//! Timestamps as workers write them.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Parses an RFC 3339 timestamp into epoch seconds. Python's logging also
/// writes `2026-11-27 16:23:14,123` (space, comma, no offset); such strings
/// without an offset are read as UTC.
pub fn parse_timestamp(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(seconds(t));
    }
    let fmt = format_description!(
        version = 2,
        "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [[first [.][,]][subsecond]]]"
    );
    let t = PrimitiveDateTime::parse(s, &fmt).ok()?;
    Some(seconds(t.assume_utc()))
}

fn seconds(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_python_logging_forms() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(parse_timestamp("1970-01-01T01:00:01+01:00"), Some(1.0));
        assert_eq!(parse_timestamp("1970-01-01 00:00:02,250"), Some(2.25));
        assert_eq!(parse_timestamp("1970-01-01T00:00:03"), Some(3.0));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
