//! Parsing of the API's time parameters and series steps.

pub use wattprint_api_types::time::{
    check_bounds, parse_instant, parse_required_instant, InstantInput, Step, MAX_TIME, MIN_TIME,
};
use wattprint_core::UnixMillis;
#[cfg(test)]
use wattprint_core::BUCKET_MS;

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
        assert!(InstantInput::UnixMillis(i64::MIN).parse("to").is_err());
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
