//! Timestamps (UTC milliseconds) and 5-minute buckets.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of an accounting bucket: 5 minutes, the granularity of marginal intensity.
pub const BUCKET_MS: i64 = 300_000;

/// A UTC instant in milliseconds since the Unix epoch. All time in Wattprint is UTC, so DST
/// never shifts anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: UnixMillis) -> i64 {
        self.0 - earlier.0
    }

    /// Formats as RFC 3339 (`2026-11-23T00:40:00.000Z`).
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (min, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
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
        assert_eq!(Bucket::containing(UnixMillis(299_999)).start(), UnixMillis(0));
        assert_eq!(Bucket::containing(UnixMillis(300_000)).start(), UnixMillis(300_000));
        assert_eq!(Bucket::containing(UnixMillis(-1)).start(), UnixMillis(-300_000));
        assert!(Bucket::aligned(UnixMillis(600_000)).is_some());
        assert!(Bucket::aligned(UnixMillis(600_001)).is_none());
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(UnixMillis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2023-06-08T00:05:00Z, the second row of the CAISO_NORTH series.
        assert_eq!(UnixMillis(1_686_182_700_000).to_rfc3339(), "2023-06-08T00:05:00.000Z");
        // 2024-02-29 (leap day) 23:59:59.999
        assert_eq!(UnixMillis(1_709_251_199_999).to_rfc3339(), "2024-02-29T23:59:59.999Z");
    }
}
