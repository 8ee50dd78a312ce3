//! Parsing of the API's time parameters and series steps.

use serde::{Deserialize, Serialize};
use wattprint_core::{UnixMillis, BUCKET_MS};

/// Earliest instant accepted: 0000-01-01T00:00:00Z. Bounding inputs to years 0–9999 keeps
/// every sum and alignment below far from `i64` overflow.
pub const MIN_TIME: UnixMillis = UnixMillis(-62_167_219_200_000);
/// Latest instant accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME: UnixMillis = UnixMillis(253_402_300_799_999);

/// Parses an instant given as RFC 3339 (`2026-11-23T00:00:00Z`, any offset) or as integer
/// Unix milliseconds. The error says what was wrong, for a 400.
pub fn parse_instant(name: &str, raw: &str) -> Result<UnixMillis, String> {
    let raw = raw.trim();
    let t = if !raw.is_empty()
        && raw
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        raw.parse::<i64>()
            .map_err(|_| format!("{name}: {raw:?} is out of range"))?
    } else {
        chrono::DateTime::parse_from_rfc3339(raw)
            .map_err(|e| {
                format!("{name}: {raw:?} is neither RFC 3339 (e.g. 2026-11-23T00:00:00Z) nor integer unix milliseconds ({e})")
            })?
            .timestamp_millis()
    };
    check_bounds(name, UnixMillis(t))
}

/// Parses a required instant parameter: [`parse_instant`], or an error naming it when it is
/// absent. An empty value (what a gRPC client sends for an unset string) counts as absent.
pub fn parse_required_instant(name: &str, raw: Option<&str>) -> Result<UnixMillis, String> {
    match raw.filter(|s| !s.is_empty()) {
        Some(s) => parse_instant(name, s),
        None => Err(format!(
            "{name} is required (RFC 3339, e.g. 2026-11-01T00:00:00Z, or unix milliseconds)"
        )),
    }
}

/// Checks an instant lies within [`MIN_TIME`, `MAX_TIME`].
pub fn check_bounds(name: &str, t: UnixMillis) -> Result<UnixMillis, String> {
    if t < MIN_TIME || t > MAX_TIME {
        return Err(format!("{name}: {} ms is outside years 0000-9999", t.0));
    }
    Ok(t)
}

/// An instant as given in a JSON body: integer milliseconds or a string (RFC 3339 or digits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum InstantInput {
    /// Unix milliseconds.
    Millis(i64),
    /// RFC 3339 or a decimal string of Unix milliseconds.
    Text(String),
}

impl InstantInput {
    /// Parses into an instant, naming the field in the error.
    pub fn parse(&self, name: &str) -> Result<UnixMillis, String> {
        match self {
            InstantInput::Millis(ms) => check_bounds(name, UnixMillis(*ms)),
            InstantInput::Text(s) => parse_instant(name, s),
        }
    }
}

/// Resolution of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Step {
    /// The stored samples as they are.
    #[serde(rename = "raw")]
    Raw,
    /// 5-minute buckets (the accounting granularity).
    #[serde(rename = "5m")]
    FiveMinutes,
    /// Hours (UTC).
    #[serde(rename = "1h")]
    Hour,
    /// Days (UTC midnight to midnight).
    #[serde(rename = "1d")]
    Day,
}

impl Step {
    /// Parses `raw`, `5m`, `1h` or `1d`.
    pub fn parse(s: &str) -> Result<Step, String> {
        match s {
            "raw" => Ok(Step::Raw),
            "5m" => Ok(Step::FiveMinutes),
            "1h" => Ok(Step::Hour),
            "1d" => Ok(Step::Day),
            other => Err(format!("step: {other:?} is not one of raw, 5m, 1h, 1d")),
        }
    }

    /// The name used in requests and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Raw => "raw",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    /// Length of one step; `None` for raw.
    pub fn millis(self) -> Option<i64> {
        match self {
            Step::Raw => None,
            Step::FiveMinutes => Some(BUCKET_MS),
            Step::Hour => Some(3_600_000),
            Step::Day => Some(86_400_000),
        }
    }
}

/// `t` rounded down to a multiple of `step_ms` (UTC-aligned: the epoch is a midnight).
pub fn floor_to(t: UnixMillis, step_ms: i64) -> UnixMillis {
    UnixMillis(t.0.div_euclid(step_ms) * step_ms)
}

/// `t` rounded up to a multiple of `step_ms`.
pub fn ceil_to(t: UnixMillis, step_ms: i64) -> UnixMillis {
    let f = floor_to(t, step_ms);
    if f == t {
        f
    } else {
        UnixMillis(f.0 + step_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_from_rfc3339_and_millis() {
        assert_eq!(
            parse_instant("from", "2023-06-08T00:05:00Z"),
            Ok(UnixMillis(1_686_182_700_000))
        );
        assert_eq!(
            parse_instant("from", "2023-06-08T02:05:00+02:00"),
            Ok(UnixMillis(1_686_182_700_000))
        );
        assert_eq!(
            parse_instant("from", "1686182700000"),
            Ok(UnixMillis(1_686_182_700_000))
        );
        assert_eq!(parse_instant("from", "-5"), Ok(UnixMillis(-5)));
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "99999999999999999999",
            "1e3",
            "-",
            "1686182700000x",
            "' OR 1=1 --",
        ] {
            assert!(
                parse_instant("from", bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(parse_instant("to", "253402300800000").is_err());
        assert!(InstantInput::Millis(i64::MIN).parse("to").is_err());
    }

    #[test]
    fn steps_parse_and_align() {
        assert_eq!(Step::parse("1h"), Ok(Step::Hour));
        assert!(Step::parse("7m").is_err());
        assert_eq!(
            floor_to(UnixMillis(3_600_001), 3_600_000),
            UnixMillis(3_600_000)
        );
        assert_eq!(
            ceil_to(UnixMillis(3_600_001), 3_600_000),
            UnixMillis(7_200_000)
        );
        assert_eq!(
            ceil_to(UnixMillis(3_600_000), 3_600_000),
            UnixMillis(3_600_000)
        );
        assert_eq!(floor_to(UnixMillis(-1), BUCKET_MS), UnixMillis(-BUCKET_MS));
    }
}
