//! A statement's period: one calendar month in UTC, written `YYYY-MM`.

use chrono::{Datelike, NaiveDate};
use wattprint_core::UnixMillis;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// Parses `YYYY-MM` (years 1970–9999).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("period {s:?} is not a month written YYYY-MM (e.g. 2026-11)");
        if s.len() != 7 || s.as_bytes()[4] != b'-' {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let month: u32 = s[5..].parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !s.is_ascii() {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The month containing `t`.
    pub fn containing(t: UnixMillis) -> Self {
        let d = chrono::DateTime::from_timestamp_millis(t.0)
            .unwrap_or_default()
            .date_naive();
        Self {
            year: d.year(),
            month: d.month(),
        }
    }

    /// First instant of the month.
    pub fn start(self) -> UnixMillis {
        let d = NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default();
        UnixMillis(
            d.and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc()
                .timestamp_millis(),
        )
    }

    /// First instant after the month.
    pub fn end(self) -> UnixMillis {
        self.next().start()
    }

    /// The month after.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                month: self.month + 1,
                ..self
            }
        }
    }

    /// The month before.
    pub fn prev(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                month: self.month - 1,
                ..self
            }
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_print_and_step_across_years() {
        let nov = Period::parse("2026-11").unwrap();
        assert_eq!(nov.to_string(), "2026-11");
        assert_eq!(nov.start().to_rfc3339(), "2026-11-01T00:00:00.000Z");
        assert_eq!(nov.end().to_rfc3339(), "2026-12-01T00:00:00.000Z");
        let dec = nov.next();
        assert_eq!(dec.next().to_string(), "2027-01");
        assert_eq!(dec.next().prev(), dec);
        assert_eq!(Period::containing(UnixMillis(dec.start().0 - 1)), nov);
        assert_eq!(Period::containing(dec.start()), dec);
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-1€",
            "1969-12",
            "",
        ] {
            let e = Period::parse(bad).unwrap_err();
            assert!(e.contains("YYYY-MM"), "{bad}: {e}");
        }
    }
}
