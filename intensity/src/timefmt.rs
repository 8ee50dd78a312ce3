//! Time parsing and formatting at the providers' edges, and [`parse_utc_timestamp`], the one
//! parser of the UTC times operators type (files, command lines).

use chrono::{DateTime, NaiveDateTime, Timelike};
use wattprint_core::UnixMillis;

/// An RFC 3339 / ISO 8601 instant with any explicit offset (API responses: the offset makes
/// the instant exact).
pub(crate) fn parse_instant(s: &str) -> Result<UnixMillis, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))?;
    no_leap_second(s, t.nanosecond())?;
    Ok(UnixMillis(t.timestamp_millis()))
}

/// chrono reads `:60` as a leap second and would fold it into the next second; Unix time has
/// no such second, so a `:60` in data is an error, never the next bucket's point.
fn no_leap_second(s: &str, nanosecond: u32) -> Result<(), String> {
    if nanosecond >= 1_000_000_000 {
        return Err(format!(
            "{s:?} is a leap second (:60), which UTC data here never has"
        ));
    }
    Ok(())
}

/// An RFC 3339 instant that must be in UTC (`Z` or `+00:00`): imported files, where another
/// offset suggests local times that are not meant.
pub(crate) fn parse_utc_rfc3339(s: &str) -> Result<UnixMillis, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))?;
    no_leap_second(s, t.nanosecond())?;
    if t.offset().local_minus_utc() != 0 {
        return Err(format!(
            "{s:?} has offset {}; times must be UTC (Z)",
            t.offset()
        ));
    }
    Ok(UnixMillis(t.timestamp_millis()))
}

/// `YYYY-MM-DD HH:MM:SS` without an offset, in formats documented as UTC (WattTime and
/// Electricity Maps CSV exports).
pub(crate) fn parse_naive_utc(s: &str) -> Result<UnixMillis, String> {
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map_err(|e| format!("{s:?} is not a `YYYY-MM-DD HH:MM:SS` time ({e})"))?;
    no_leap_second(s, t.nanosecond())?;
    Ok(UnixMillis(t.and_utc().timestamp_millis()))
}

/// Parses `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS`, optionally followed by `Z` or
/// `+00:00`, as UTC. Other offsets are rejected rather than guessed.
pub fn parse_utc_timestamp(s: &str) -> Option<UnixMillis> {
    let s = s.trim().trim_start_matches('\u{feff}');
    let main = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    // Exactly `YYYY-MM-DD?HH:MM:SS`: chrono alone would also take signed or longer years.
    if main.len() != 19 || !main.is_ascii() {
        return None;
    }
    let format = if main.as_bytes()[10] == b'T' {
        "%Y-%m-%dT%H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    let t = NaiveDateTime::parse_from_str(main, format).ok()?;
    // chrono folds a leap second (`:60`) into the next one; Unix time has none.
    if t.nanosecond() >= 1_000_000_000 {
        return None;
    }
    Some(UnixMillis(t.and_utc().timestamp_millis()))
}

/// ISO 8601 UTC for query parameters (`2023-06-08T00:00:00Z`).
pub(crate) fn to_iso(t: UnixMillis) -> String {
    match DateTime::from_timestamp_millis(t.0) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => t.to_rfc3339(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_exactly_and_files_must_be_utc() {
        let t = UnixMillis::from_utc(2023, 6, 8, 0, 5, 0).unwrap();
        assert_eq!(parse_instant("2023-06-08T00:05:00+00:00"), Ok(t));
        assert_eq!(parse_instant("2023-06-08T02:05:00+02:00"), Ok(t));
        assert_eq!(parse_instant("2023-06-08T00:05:00.000Z"), Ok(t));
        assert_eq!(parse_utc_rfc3339("2023-06-08T00:05:00Z"), Ok(t));
        assert_eq!(parse_utc_rfc3339("2023-06-08T00:05:00+00:00"), Ok(t));
        assert!(parse_utc_rfc3339("2023-06-08T02:05:00+02:00")
            .unwrap_err()
            .contains("must be UTC"));
        assert!(parse_utc_rfc3339("2023-06-08 00:05:00").is_err());
        assert_eq!(parse_naive_utc("2023-06-08 00:05:00"), Ok(t));
        assert!(parse_naive_utc("2023-06-08T00:05:00Z").is_err());
        assert_eq!(to_iso(t), "2023-06-08T00:05:00.000Z");
        for leap in [
            parse_naive_utc("2016-12-31 23:59:60"),
            parse_utc_rfc3339("2016-12-31T23:59:60Z"),
            parse_instant("2016-12-31T23:59:60+00:00"),
        ] {
            assert!(leap.unwrap_err().contains("leap second"));
        }
    }
}
