//! Timestamps as workers write them.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::config::NaiveTime;

/// Parses an RFC 3339 timestamp into epoch seconds. Python's logging also
/// writes `2026-11-27 16:23:14,123` (space, comma, no offset); such strings
/// without an offset are read as UTC.
pub fn parse_timestamp(s: &str) -> Option<f64> {
    parse_timestamp_as(s, NaiveTime::Utc)
}

/// Like [`parse_timestamp`], reading a timestamp without an offset as
/// `naive` says: Python's `asctime` is local time.
pub fn parse_timestamp_as(s: &str, naive: NaiveTime) -> Option<f64> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(seconds(t.unix_timestamp(), t.nanosecond()));
    }
    let fmt = format_description!(
        version = 2,
        "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [[first [.][,]][subsecond]]]"
    );
    let t = PrimitiveDateTime::parse(s, &fmt).ok()?.assume_utc();
    let secs = t.unix_timestamp();
    let secs = match naive {
        NaiveTime::Utc => secs,
        NaiveTime::Local => secs - local_offset_of_wall_clock(secs),
    };
    Some(seconds(secs, t.nanosecond()))
}

/// The time a text line starts with, read by [`parse_timestamp_as`]: the
/// forms Python's `logging` (`%(asctime)s`, also in brackets), structlog's
/// `TimeStamper` and most loggers put first, `2026-03-10 01:54:05,123`,
/// `[2026-03-10T01:54:05.123456Z]`. Only finds where the stamp is; the
/// one parser above reads it.
pub fn leading_timestamp(line: &str, naive: NaiveTime) -> Option<f64> {
    static STAMP: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = STAMP.get_or_init(|| {
        regex::Regex::new(
            // [0-9], not \d: the same stamps (the parser reads ASCII digits
            // only) for a twentieth of the compile time.
            r"^\s*\[?([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)(?:[\]\s|,;]|$)",
        )
        .expect("valid regex")
    });
    let stamp = re.captures(line)?.get(1)?.as_str();
    parse_timestamp_as(stamp, naive)
}

/// Epoch seconds as the nearest `f64` to the exact decimal value, which is
/// what Python gets from the same text; `secs + nanos / 1e9` in floating
/// point can be an ulp off.
fn seconds(secs: i64, nanos: u32) -> f64 {
    if nanos == 0 {
        return secs as f64;
    }
    if secs < 0 {
        return secs as f64 + f64::from(nanos) / 1e9;
    }
    // Written on the stack: this runs for every row that carries a time.
    use std::io::Write;
    let mut buf = [0u8; 40];
    let mut cursor = &mut buf[..];
    if write!(cursor, "{secs}.{nanos:09}").is_err() {
        return secs as f64;
    }
    let len = 40 - cursor.len();
    std::str::from_utf8(&buf[..len])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(secs as f64)
}

/// The UTC offset (seconds east) in force when the local wall clock showed
/// `wall` (its fields read as if UTC). Around a DST change one of the two
/// candidate offsets is picked, as `mktime` does.
fn local_offset_of_wall_clock(wall: i64) -> i64 {
    let first = utc_offset_at(wall);
    utc_offset_at(wall - first)
}

/// The local zone's UTC offset at the instant `t` (epoch seconds), from the
/// C library, which reads `TZ` and the zone database as Python does. The
/// `time` crate refuses to give it in a multi-threaded process.
fn utc_offset_at(t: i64) -> i64 {
    // time_t is 64-bit on every target this agent is built for.
    #[allow(clippy::useless_conversion, irrefutable_let_patterns)]
    let Ok(tt) = libc::time_t::try_from(t) else {
        return 0;
    };
    // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the
    // reentrant form and writes only `tm`.
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    if r.is_null() {
        0
    } else {
        // c_long: i64 here, i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        i64::from(tm.tm_gmtoff)
    }
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

    #[test]
    fn fractions_are_the_nearest_double_of_the_decimal() {
        let t = parse_timestamp("2026-12-02T01:49:43.308640Z").unwrap();
        assert_eq!(t.to_bits(), 1796176183.30864f64.to_bits());
        let t = parse_timestamp("2026-12-02 01:49:43,307").unwrap();
        assert_eq!(t.to_bits(), 1796176183.307f64.to_bits());
    }

    #[test]
    fn stamps_at_the_start_of_log_lines() {
        let utc = NaiveTime::Utc;
        let at = |l: &str| leading_timestamp(l, utc);
        // logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
        assert_eq!(at("1970-01-01 00:00:02,250 - root - INFO - hi"), Some(2.25));
        // "[%(asctime)s] %(levelname)s ..." and structlog's TimeStamper(fmt="iso")
        assert_eq!(at("[1970-01-01 00:00:03,500] INFO hi"), Some(3.5));
        assert_eq!(at("1970-01-01T00:00:01.5Z [info     ] hi"), Some(1.5));
        assert_eq!(at("1970-01-01T01:00:01+01:00 hi"), Some(1.0));
        // MOSAIC's format (the cleanrl-text rule's prefix).
        assert_eq!(at("1970-01-01 00:00:04 | INFO | __main__ | x=1"), Some(4.0));
        assert_eq!(at("1970-01-01 00:00:04"), Some(4.0));
        // Not at the start, not a whole time, or followed by more digits.
        assert_eq!(at("step 1970-01-01 00:00:04 hi"), None);
        assert_eq!(at("1970-01-01 hi"), None);
        assert_eq!(at("1970-01-01 00:00:0412 hi"), None);
        assert_eq!(at("global_step=5"), None);
    }

    #[test]
    fn naive_local_time_uses_the_zone_offset() {
        // Whatever this machine's zone is, local wall clock minus the
        // offset in force is the instant; an offset-carrying string is
        // unaffected.
        let utc = parse_timestamp_as("2026-03-10 01:54:05", NaiveTime::Utc).unwrap();
        let local = parse_timestamp_as("2026-03-10 01:54:05", NaiveTime::Local).unwrap();
        assert_eq!(local, utc - utc_offset_at(local as i64) as f64);
        assert_eq!(
            parse_timestamp_as("1970-01-01T00:00:01.5Z", NaiveTime::Local),
            Some(1.5)
        );
    }
}
