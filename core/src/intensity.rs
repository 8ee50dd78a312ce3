//! Grid carbon intensity series and the as-of join of a 5-minute bucket to an intensity value,
//! with the provenance of every value used.

use crate::ids::RegionId;
use crate::time::{Bucket, UnixMillis, BUCKET_MS};
use crate::units::GramsPerKwh;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use thiserror::Error;

/// What kind of intensity value an interval was joined with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntensityKind {
    /// A published actual marginal value for the bucket.
    Actual,
    /// A forecast made before the bucket.
    Forecast,
    /// The region's average (location-based) rate, used because no marginal value exists:
    /// always flagged, never silent.
    FallbackAverage,
}

impl IntensityKind {
    /// Stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            IntensityKind::Actual => "actual",
            IntensityKind::Forecast => "forecast",
            IntensityKind::FallbackAverage => "fallback_average",
        }
    }

    /// Parses [`IntensityKind::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "actual" => Some(IntensityKind::Actual),
            "forecast" => Some(IntensityKind::Forecast),
            "fallback_average" => Some(IntensityKind::FallbackAverage),
            _ => None,
        }
    }
}

/// The intensity an interval was joined with, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinedIntensity {
    /// Marginal (or fallback average) intensity.
    pub value: GramsPerKwh,
    /// Actual, forecast or fallback.
    pub kind: IntensityKind,
    /// Data source (e.g. `watttime:CAISO_NORTH`, `egrid2023:CAMX`).
    pub source: String,
    /// Time of the data point used, in the source's own clock (differs from the bucket when
    /// replayed or when the nearest earlier point was used).
    pub point_at: UnixMillis,
    /// True when a historical series is replayed on a shifted clock (demo, tests).
    pub replayed: bool,
}

/// Errors building a series.
#[derive(Debug, Error, PartialEq)]
pub enum SeriesError {
    /// A point is not on a 5-minute boundary.
    #[error("intensity point at {0} is not aligned to a 5-minute boundary")]
    Unaligned(UnixMillis),
    /// A value is negative, NaN or infinite.
    #[error("intensity value {value} at {at} is not a finite non-negative number")]
    BadValue {
        /// Offending time.
        at: UnixMillis,
        /// Offending value.
        value: f64,
    },
    /// Two points share a timestamp.
    #[error("duplicate intensity point at {0}")]
    Duplicate(UnixMillis),
    /// No points at all.
    #[error("intensity series is empty")]
    Empty,
}

/// A region's 5-minute marginal series, sorted and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MarginalSeries {
    source: String,
    points: Vec<(UnixMillis, GramsPerKwh)>,
}

impl MarginalSeries {
    /// Validates and sorts points (aligned, finite, non-negative, unique).
    pub fn new(
        source: impl Into<String>,
        mut points: Vec<(UnixMillis, GramsPerKwh)>,
    ) -> Result<Self, SeriesError> {
        if points.is_empty() {
            return Err(SeriesError::Empty);
        }
        points.sort_by_key(|p| p.0);
        for w in points.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(SeriesError::Duplicate(w[0].0));
            }
        }
        for &(at, v) in &points {
            if Bucket::aligned(at).is_none() {
                return Err(SeriesError::Unaligned(at));
            }
            if !v.0.is_finite() || v.0 < 0.0 {
                return Err(SeriesError::BadValue { at, value: v.0 });
            }
        }
        Ok(Self {
            source: source.into(),
            points,
        })
    }

    /// First point's time.
    pub fn first(&self) -> UnixMillis {
        self.points[0].0
    }

    /// One bucket past the last point: the series spans `[first, end)`.
    pub fn end(&self) -> UnixMillis {
        UnixMillis(self.points[self.points.len() - 1].0 .0 + BUCKET_MS)
    }

    /// Where the data came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Always false: a series has at least one point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The point at `at` exactly, else the latest earlier one no older than `max_staleness_ms`.
    pub fn as_of(
        &self,
        at: UnixMillis,
        max_staleness_ms: i64,
    ) -> Option<(UnixMillis, GramsPerKwh)> {
        let idx = self.points.partition_point(|p| p.0 <= at);
        let &(t, v) = self.points.get(idx.checked_sub(1)?)?;
        (at.since(t) <= max_staleness_ms).then_some((t, v))
    }
}

/// A region's intensity sources.
#[derive(Debug, Clone)]
pub struct RegionIntensity {
    /// 5-minute marginal series, if the region has one.
    pub marginal: Option<MarginalSeries>,
    /// Replay the marginal series on a clock shifted into the present (looping over its span).
    pub replay: bool,
    /// The region's average rate and its source, for flagged fallback.
    pub average: Option<(GramsPerKwh, String)>,
}

/// The as-of join of buckets to intensity, region by region.
///
/// Rule: the marginal point at the bucket's start; else the latest earlier point within
/// `max_staleness_ms` (still `actual`, with `point_at` showing which); else the region's
/// average, flagged `fallback_average`; else nothing (the interval's emissions are reported as
/// missing coverage, never invented).
#[derive(Debug, Clone, Default)]
pub struct IntensityJoin {
    regions: HashMap<RegionId, RegionIntensity>,
    max_staleness_ms: i64,
}

impl IntensityJoin {
    /// A join that accepts marginal points up to `max_staleness_ms` older than the bucket.
    pub fn new(max_staleness_ms: i64) -> Self {
        Self {
            regions: HashMap::new(),
            max_staleness_ms,
        }
    }

    /// Adds or replaces a region.
    pub fn insert(&mut self, region: RegionId, intensity: RegionIntensity) {
        self.regions.insert(region, intensity);
    }

    /// Whether the join knows `region`.
    pub fn knows(&self, region: &RegionId) -> bool {
        self.regions.contains_key(region)
    }

    /// The regions known.
    pub fn regions(&self) -> impl Iterator<Item = &RegionId> {
        self.regions.keys()
    }

    /// Intensity for `bucket` in `region`.
    pub fn lookup(&self, region: &RegionId, bucket: Bucket) -> Option<JoinedIntensity> {
        let r = self.regions.get(region)?;
        if let Some(series) = &r.marginal {
            let at = if r.replay {
                replay_time(series, bucket.start())
            } else {
                bucket.start()
            };
            if let Some((point_at, value)) = series.as_of(at, self.max_staleness_ms) {
                return Some(JoinedIntensity {
                    value,
                    kind: IntensityKind::Actual,
                    source: series.source().to_owned(),
                    point_at,
                    replayed: r.replay,
                });
            }
        }
        r.average.as_ref().map(|(value, source)| JoinedIntensity {
            value: *value,
            kind: IntensityKind::FallbackAverage,
            source: source.clone(),
            point_at: bucket.start(),
            replayed: false,
        })
    }
}

/// Maps a present-day time onto a historical series, looping over its span. The mapping
/// depends only on `t` and the series, so restarts replay the same values.
pub fn replay_time(series: &MarginalSeries, t: UnixMillis) -> UnixMillis {
    let span = series.end().since(series.first());
    UnixMillis(series.first().0 + t.since(series.first()).rem_euclid(span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> MarginalSeries {
        MarginalSeries::new(
            "test",
            vec![
                (UnixMillis(0), GramsPerKwh(100.0)),
                (UnixMillis(BUCKET_MS), GramsPerKwh(200.0)),
                (UnixMillis(3 * BUCKET_MS), GramsPerKwh(400.0)),
            ],
        )
        .unwrap()
    }

    fn join(replay: bool, average: bool) -> IntensityJoin {
        let mut j = IntensityJoin::new(BUCKET_MS);
        j.insert(
            RegionId::from("R"),
            RegionIntensity {
                marginal: Some(series()),
                replay,
                average: average.then(|| (GramsPerKwh(250.0), "egrid:CAMX".to_owned())),
            },
        );
        j
    }

    fn at(i: i64) -> Bucket {
        Bucket::containing(UnixMillis(i * BUCKET_MS))
    }

    #[test]
    fn exact_point_then_stale_point_then_fallback_then_nothing() {
        let j = join(false, true);
        let r = RegionId::from("R");
        let exact = j.lookup(&r, at(1)).unwrap();
        assert_eq!(
            (exact.value, exact.kind, exact.point_at),
            (
                GramsPerKwh(200.0),
                IntensityKind::Actual,
                UnixMillis(BUCKET_MS)
            )
        );
        // Bucket 2 has no point; bucket 1's is 5 minutes old, within the bound.
        let stale = j.lookup(&r, at(2)).unwrap();
        assert_eq!(
            (stale.value, stale.point_at),
            (GramsPerKwh(200.0), UnixMillis(BUCKET_MS))
        );
        // Bucket 5: the last point (bucket 3) is 10 minutes old: fallback, flagged.
        let fb = j.lookup(&r, at(5)).unwrap();
        assert_eq!(
            (fb.value, fb.kind),
            (GramsPerKwh(250.0), IntensityKind::FallbackAverage)
        );
        // Without an average there is no value at all.
        assert!(join(false, false).lookup(&r, at(5)).is_none());
        assert!(j.lookup(&RegionId::from("other"), at(1)).is_none());
    }

    #[test]
    fn replay_loops_the_series_on_a_shifted_clock() {
        let j = join(true, false);
        let r = RegionId::from("R");
        // The series spans 4 buckets; bucket 4 maps to bucket 0, bucket 9 to bucket 1.
        let v = j.lookup(&r, at(4)).unwrap();
        assert_eq!(
            (v.value, v.point_at, v.replayed),
            (GramsPerKwh(100.0), UnixMillis(0), true)
        );
        assert_eq!(j.lookup(&r, at(9)).unwrap().value, GramsPerKwh(200.0));
        assert_eq!(j.lookup(&r, at(-1)).unwrap().value, GramsPerKwh(400.0));
    }

    #[test]
    fn bad_series_are_rejected_with_the_reason() {
        assert_eq!(
            MarginalSeries::new("x", vec![(UnixMillis(1), GramsPerKwh(1.0))]),
            Err(SeriesError::Unaligned(UnixMillis(1)))
        );
        assert!(matches!(
            MarginalSeries::new("x", vec![(UnixMillis(0), GramsPerKwh(f64::NAN))]),
            Err(SeriesError::BadValue { .. })
        ));
        assert_eq!(
            MarginalSeries::new(
                "x",
                vec![
                    (UnixMillis(0), GramsPerKwh(1.0)),
                    (UnixMillis(0), GramsPerKwh(2.0))
                ]
            ),
            Err(SeriesError::Duplicate(UnixMillis(0)))
        );
        assert_eq!(MarginalSeries::new("x", vec![]), Err(SeriesError::Empty));
    }
}
