//! Timestamps (UTC milliseconds) and 5-minute buckets.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of an accounting bucket: 5 minutes, the granularity of marginal intensity.
pub const BUCKET_MS: i64 = 300_000;

/// A UTC instant in milliseconds since the Unix epoch. All time in Wattprint is UTC, so DST
/// never shifts anything.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current time: the one wall clock of the workspace. Code whose behaviour depends on
    /// the time takes a clock (`fn() -> UnixMillis`) or a `now` argument, so tests can pin it.
    pub fn now() -> UnixMillis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later), saturating at
    /// the ends of `i64`: times come from the wire, and `i64::MAX − i64::MIN` must read as
    /// "far too long", never overflow.
    pub fn since(self, earlier: UnixMillis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The instant at a UTC calendar date and time (proleptic Gregorian), or `None` if a field
    /// is out of range.
    pub fn from_utc(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        min: u32,
        sec: u32,
    ) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || min > 59 || sec > 59 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(UnixMillis(
            days * 86_400_000
                + i64::from(hour) * 3_600_000
                + i64::from(min) * 60_000
                + i64::from(sec) * 1000,
        ))
    }

    /// Formats as RFC 3339 (`2026-11-23T00:40:00.000Z`).
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (min, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        if !(0..=9999).contains(&y) {
            return format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z");
        }
        // Digits written in place: a month's 5-minute series formats 17,280 of these, and
        // `format!`'s padding machinery was a tenth of its serialisation.
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, i64::from(m));
        put(8, 2, i64::from(d));
        put(11, 2, h);
        put(14, 2, min);
        put(17, 2, s);
        put(20, 3, ms);
        out.iter().map(|&b| char::from(b)).collect()
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01. Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day). Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The 5-minute bucket starting at a multiple of [`BUCKET_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bucket(UnixMillis);

impl Bucket {
    /// The bucket that contains `t`.
    pub fn containing(t: UnixMillis) -> Bucket {
        Bucket(UnixMillis(t.0.div_euclid(BUCKET_MS) * BUCKET_MS))
    }

    /// The bucket starting exactly at `start`, if it is aligned.
    pub fn aligned(start: UnixMillis) -> Option<Bucket> {
        (start.0.rem_euclid(BUCKET_MS) == 0).then_some(Bucket(start))
    }

    /// Start of the bucket (inclusive).
    pub fn start(self) -> UnixMillis {
        self.0
    }

    /// End of the bucket (exclusive).
    pub fn end(self) -> UnixMillis {
        UnixMillis(self.0 .0 + BUCKET_MS)
    }

    /// The following bucket.
    pub fn next(self) -> Bucket {
        Bucket(self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_to_five_minutes_including_before_the_epoch() {
        assert_eq!(
            Bucket::containing(UnixMillis(299_999)).start(),
            UnixMillis(0)
        );
        assert_eq!(
            Bucket::containing(UnixMillis(300_000)).start(),
            UnixMillis(300_000)
        );
        assert_eq!(
            Bucket::containing(UnixMillis(-1)).start(),
            UnixMillis(-300_000)
        );
        assert!(Bucket::aligned(UnixMillis(600_000)).is_some());
        assert!(Bucket::aligned(UnixMillis(600_001)).is_none());
    }

    #[test]
    fn civil_dates_round_trip_and_reject_impossible_dates() {
        let t = UnixMillis::from_utc(2023, 6, 8, 0, 5, 0).unwrap();
        assert_eq!(t, UnixMillis(1_686_182_700_000));
        assert_eq!(
            UnixMillis::from_utc(2024, 2, 29, 23, 59, 59)
                .unwrap()
                .to_rfc3339(),
            "2024-02-29T23:59:59.000Z"
        );
        assert!(UnixMillis::from_utc(2023, 2, 29, 0, 0, 0).is_none());
        assert!(UnixMillis::from_utc(2023, 13, 1, 0, 0, 0).is_none());
        assert!(UnixMillis::from_utc(2023, 1, 1, 24, 0, 0).is_none());
        assert_eq!(
            UnixMillis::from_utc(1969, 12, 31, 23, 59, 59).unwrap(),
            UnixMillis(-1000)
        );
    }

    /// The digits written in place read the same as `format!`'s, from year 0 to 9999 and
    /// outside it (the fallback).
    #[test]
    fn rfc3339_digits_equal_format() {
        let reference = |t: UnixMillis| {
            let days = t.0.div_euclid(86_400_000);
            let ms_of_day = t.0.rem_euclid(86_400_000);
            let (y, m, d) = civil_from_days(days);
            let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
            let (min, rest) = (rest / 60_000, rest % 60_000);
            let (s, ms) = (rest / 1000, rest % 1000);
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
        };
        // Year 0 to 9999, in uneven steps that visit every field's digits.
        let (first, last) = (-62_167_219_200_000_i64, 253_402_300_799_999_i64);
        let mut t = first;
        while t <= last {
            assert_eq!(UnixMillis(t).to_rfc3339(), reference(UnixMillis(t)));
            t += 7_777_777_777 + t.rem_euclid(1009);
        }
        for t in [first, first - 1, last, last + 1, i64::MIN / 4, i64::MAX / 4] {
            assert_eq!(UnixMillis(t).to_rfc3339(), reference(UnixMillis(t)), "{t}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(UnixMillis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2023-06-08T00:05:00Z, the second row of the CAISO_NORTH series.
        assert_eq!(
            UnixMillis(1_686_182_700_000).to_rfc3339(),
            "2023-06-08T00:05:00.000Z"
        );
        // 2024-02-29 (leap day) 23:59:59.999
        assert_eq!(
            UnixMillis(1_709_251_199_999).to_rfc3339(),
            "2024-02-29T23:59:59.999Z"
        );
    }
}
