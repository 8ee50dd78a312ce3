//! Grid carbon intensity: ledger points as providers publish them, and the join of a 5-minute
//! bucket to one intensity value by an explicit policy, with the provenance of every value used.

use crate::ids::RegionId;
use crate::time::{Bucket, UnixMillis, BUCKET_MS};
use crate::units::GramsPerKwh;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use thiserror::Error;

mod point;
pub use point::{IntensityPoint, PointError, PointKind, Signal, MAX_PLAUSIBLE_G_PER_KWH};

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
    /// A value is negative, NaN, infinite or beyond any grid's intensity.
    #[error(
        "intensity value {value} at {at} is not a number from 0 to {MAX_PLAUSIBLE_G_PER_KWH} g/kWh"
    )]
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
            if !v.0.is_finite() || !(0.0..=MAX_PLAUSIBLE_G_PER_KWH).contains(&v.0) {
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

/// A region's intensity sources, as configuration gives them (files, replay, static average).
#[derive(Debug, Clone)]
pub struct RegionIntensity {
    /// 5-minute marginal actuals, if the region has a file of them.
    pub marginal: Option<MarginalSeries>,
    /// Replay the marginal series on a clock shifted into the present (looping over its span).
    pub replay: bool,
    /// The region's static average rate and its source (e.g. eGRID), the last fallback.
    pub average: Option<(GramsPerKwh, String)>,
}

/// A value in the join's index, with the provenance label intervals will carry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    value: GramsPerKwh,
    source: Arc<str>,
}

/// What the join knows of one region: every ledger point it was given, indexed for lookup.
#[derive(Debug, Clone, Default)]
struct RegionLedger {
    replay: bool,
    static_average: Option<(GramsPerKwh, String)>,
    /// Marginal actuals by bucket start.
    actual: BTreeMap<i64, Entry>,
    /// Marginal forecasts by target bucket start, then by issue time.
    forecast: BTreeMap<i64, BTreeMap<i64, Entry>>,
    /// Average actuals by period start: (period end, value).
    average: BTreeMap<i64, (i64, Entry)>,
}

impl RegionLedger {
    /// The time the region's data is looked up at for a bucket starting at `t`: `t` itself, or
    /// for a replayed region its place in the (looping) span of the marginal actuals.
    fn lookup_time(&self, t: UnixMillis) -> UnixMillis {
        match (
            self.replay,
            self.actual.first_key_value(),
            self.actual.last_key_value(),
        ) {
            (true, Some((&first, _)), Some((&last, _))) => {
                let span = last + BUCKET_MS - first;
                UnixMillis(first + (t.0 - first).rem_euclid(span))
            }
            _ => t,
        }
    }

    fn nearest_actual(&self, t: i64, bound: i64) -> Option<(i64, &Entry)> {
        let before = self.actual.range(..t).next_back();
        let after = self.actual.range(t + 1..).next();
        let candidates = [before, after];
        candidates
            .into_iter()
            .flatten()
            .filter(|(&at, _)| (at - t).abs() <= bound)
            .min_by_key(|(&at, _)| ((at - t).abs(), at))
            .map(|(&at, e)| (at, e))
    }
}

/// What recording a point did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The join had no value for this key.
    New,
    /// The join had the same value (a repeated fetch).
    Unchanged,
    /// The join had another value for this key; the later fetch replaced it.
    Revised,
}

/// The as-of join of buckets to intensity, region by region, fed from the intensity ledger.
///
/// Policy, in order, for a bucket of a region (all times UTC; a replayed region maps the
/// bucket onto its historical span first):
/// 1. the marginal **actual** for the bucket;
/// 2. else the latest marginal **forecast** for the bucket issued before its start;
/// 3. else the **nearest actual** within `max_staleness_ms` (earlier one on a tie), still
///    `actual`, with `point_at` naming the point used;
/// 4. else the region's **average** — a published average covering the bucket, else the
///    configured static rate — flagged `fallback_average`;
/// 5. else nothing: the interval's emissions are reported as missing, never invented.
#[derive(Debug, Clone, Default)]
pub struct IntensityJoin {
    regions: HashMap<RegionId, RegionLedger>,
    max_staleness_ms: i64,
}

impl IntensityJoin {
    /// A join that accepts a nearest actual up to `max_staleness_ms` from the bucket.
    pub fn new(max_staleness_ms: i64) -> Self {
        Self {
            regions: HashMap::new(),
            max_staleness_ms,
        }
    }

    /// Adds or replaces a region with its configured sources.
    pub fn insert(&mut self, region: RegionId, intensity: RegionIntensity) {
        let mut ledger = RegionLedger {
            replay: intensity.replay,
            static_average: intensity.average,
            ..RegionLedger::default()
        };
        if let Some(series) = intensity.marginal {
            let source: Arc<str> = Arc::from(series.source());
            for (at, value) in series.points {
                let entry = Entry {
                    value,
                    source: Arc::clone(&source),
                };
                ledger.actual.insert(at.0, entry);
            }
        }
        self.regions.insert(region, ledger);
    }

    /// Records a ledger point. Marginal points longer than 5 minutes apply to every bucket
    /// they cover; average points are kept as periods. Average forecasts are not joined.
    pub fn record(&mut self, point: &IntensityPoint) -> Result<Recorded, PointError> {
        point.validate()?;
        let ledger =
            self.regions
                .get_mut(&point.region)
                .ok_or_else(|| PointError::UnknownRegion {
                    provider: point.provider.clone(),
                    region: point.region.clone(),
                })?;
        let entry = Entry {
            value: point.value,
            source: Arc::from(point.source()),
        };
        let mut outcome = Recorded::Unchanged;
        let put = |slot: Option<Entry>, outcome: &mut Recorded, new: &Entry| match slot {
            None => *outcome = max_outcome(*outcome, Recorded::New),
            Some(old) if old == *new => {}
            Some(_) => *outcome = max_outcome(*outcome, Recorded::Revised),
        };
        match (point.signal, point.kind) {
            (Signal::Marginal, PointKind::Actual) => {
                for t in (point.at.0..point.end().0).step_by(BUCKET_MS as usize) {
                    let old = ledger.actual.insert(t, entry.clone());
                    put(old, &mut outcome, &entry);
                }
            }
            (Signal::Marginal, PointKind::Forecast) => {
                let issued = point.issued_at.map_or(point.at.0, |i| i.0);
                for t in (point.at.0..point.end().0).step_by(BUCKET_MS as usize) {
                    let old = ledger
                        .forecast
                        .entry(t)
                        .or_default()
                        .insert(issued, entry.clone());
                    put(old, &mut outcome, &entry);
                }
            }
            (Signal::Average, PointKind::Actual) => {
                let old = ledger
                    .average
                    .insert(point.at.0, (point.end().0, entry.clone()))
                    .map(|(_, e)| e);
                put(old, &mut outcome, &entry);
            }
            (Signal::Average, PointKind::Forecast) => {}
        }
        Ok(outcome)
    }

    /// Whether the join knows `region`.
    pub fn knows(&self, region: &RegionId) -> bool {
        self.regions.contains_key(region)
    }

    /// The regions known.
    pub fn regions(&self) -> impl Iterator<Item = &RegionId> {
        self.regions.keys()
    }

    /// Whether `region`'s historical series is replayed on a shifted clock.
    pub fn is_replayed(&self, region: &RegionId) -> bool {
        self.regions.get(region).is_some_and(|r| r.replay)
    }

    /// The start of the newest point of `signal` and `kind` the join holds for `region` (None:
    /// none). A replayed region's series loops: its newest marginal actual is the bucket
    /// containing `now` while it replays one, and it has no forecasts.
    pub fn latest(
        &self,
        region: &RegionId,
        signal: Signal,
        kind: PointKind,
        now: UnixMillis,
    ) -> Option<UnixMillis> {
        let r = self.regions.get(region)?;
        let t = match (signal, kind) {
            (Signal::Marginal, PointKind::Actual) if r.replay => {
                let bucket = Bucket::containing(now);
                self.has_actual(region, bucket).then_some(bucket.start().0)
            }
            (Signal::Marginal, PointKind::Actual) => r.actual.keys().next_back().copied(),
            (Signal::Marginal, PointKind::Forecast) => r.forecast.keys().next_back().copied(),
            (Signal::Average, PointKind::Actual) => r.average.keys().next_back().copied(),
            (Signal::Average, PointKind::Forecast) => None,
        };
        t.map(UnixMillis)
    }

    /// Whether the join has the marginal actual for `bucket` itself (for a replayed region, for
    /// the bucket it replays).
    pub fn has_actual(&self, region: &RegionId, bucket: Bucket) -> bool {
        self.regions
            .get(region)
            .is_some_and(|r| r.actual.contains_key(&r.lookup_time(bucket.start()).0))
    }

    /// Intensity for `bucket` in `region`, by the policy above.
    pub fn lookup(&self, region: &RegionId, bucket: Bucket) -> Option<JoinedIntensity> {
        let r = self.regions.get(region)?;
        let t = r.lookup_time(bucket.start());
        let joined = |value: GramsPerKwh, kind, source: &str, point_at: i64| JoinedIntensity {
            value,
            kind,
            source: source.to_owned(),
            point_at: UnixMillis(point_at),
            replayed: r.replay,
        };
        if let Some(e) = r.actual.get(&t.0) {
            return Some(joined(e.value, IntensityKind::Actual, &e.source, t.0));
        }
        if let Some((&issued, e)) = r
            .forecast
            .get(&t.0)
            .and_then(|by_issue| by_issue.range(..t.0).next_back())
        {
            return Some(joined(e.value, IntensityKind::Forecast, &e.source, issued));
        }
        if let Some((at, e)) = r.nearest_actual(t.0, self.max_staleness_ms) {
            return Some(joined(e.value, IntensityKind::Actual, &e.source, at));
        }
        self.average(region, bucket).map(|a| JoinedIntensity {
            kind: IntensityKind::FallbackAverage,
            ..a
        })
    }

    /// The marginal forecast for `bucket` that was known at `decided_at`: the latest one issued
    /// at or before it (what a scheduler deciding then could have planned on). `None` when no
    /// forecast for the bucket had been issued by then. For a replayed region both times are
    /// mapped into the replayed span, keeping their distance.
    pub fn forecast_as_of(
        &self,
        region: &RegionId,
        bucket: Bucket,
        decided_at: UnixMillis,
    ) -> Option<JoinedIntensity> {
        let r = self.regions.get(region)?;
        let t = r.lookup_time(bucket.start());
        let decided = t.0 - bucket.start().0 + decided_at.0;
        let (&issued, e) = r.forecast.get(&t.0)?.range(..=decided).next_back()?;
        Some(JoinedIntensity {
            value: e.value,
            kind: IntensityKind::Forecast,
            source: e.source.to_string(),
            point_at: UnixMillis(issued),
            replayed: r.replay,
        })
    }

    /// The region's average intensity for `bucket` — a published average covering it, else the
    /// static rate — reported beside the marginal value (kind `fallback_average`).
    pub fn average(&self, region: &RegionId, bucket: Bucket) -> Option<JoinedIntensity> {
        let r = self.regions.get(region)?;
        let t = bucket.start().0;
        if let Some((&start, (_, e))) = r
            .average
            .range(..=t)
            .next_back()
            .filter(|(_, (end, _))| *end > t)
        {
            return Some(JoinedIntensity {
                value: e.value,
                kind: IntensityKind::FallbackAverage,
                source: e.source.to_string(),
                point_at: UnixMillis(start),
                replayed: false,
            });
        }
        r.static_average
            .as_ref()
            .map(|(value, source)| JoinedIntensity {
                value: *value,
                kind: IntensityKind::FallbackAverage,
                source: source.clone(),
                point_at: bucket.start(),
                replayed: false,
            })
    }

    /// The value that should replace `old` for `bucket` of `region`, if the join now has a
    /// better one: a step up the policy (missing < average < nearest actual < forecast <
    /// actual). Replayed regions are never restated: their history is fixed.
    pub fn restatement(
        &self,
        region: &RegionId,
        bucket: Bucket,
        old: Option<&JoinedIntensity>,
    ) -> Option<JoinedIntensity> {
        if self.is_replayed(region) {
            return None;
        }
        let new = self.lookup(region, bucket)?;
        (policy_rank(Some(&new), bucket) > policy_rank(old, bucket)).then_some(new)
    }
}

/// Why `new` replaces `old` for `bucket`, in words, for the restatement record.
pub fn restatement_reason(
    bucket: Bucket,
    old: Option<&JoinedIntensity>,
    new: &JoinedIntensity,
) -> String {
    let describe = |j: &JoinedIntensity| match policy_rank(Some(j), bucket) {
        4 => format!("actual {} g/kWh ({})", j.value.0, j.source),
        3 => format!(
            "forecast {} g/kWh issued {} ({})",
            j.value.0,
            j.point_at.to_rfc3339(),
            j.source
        ),
        2 => format!(
            "nearest actual {} g/kWh of {} ({})",
            j.value.0,
            j.point_at.to_rfc3339(),
            j.source
        ),
        _ => format!("fallback average {} g/kWh ({})", j.value.0, j.source),
    };
    match old {
        Some(old) => format!("{} replaces {}", describe(new), describe(old)),
        None => format!("{} fills an interval that had no intensity", describe(new)),
    }
}

/// An [`IntensityJoin`] shared by the tasks that read it (enricher, query API) and the ones that
/// feed it (provider poller, ledger refresh). Readers take a cheap snapshot; a writer copies the
/// join only while a snapshot is still held.
#[derive(Debug, Clone, Default)]
pub struct SharedJoin(Arc<RwLock<Arc<IntensityJoin>>>);

/// What [`SharedJoin::record_all`] did.
#[derive(Debug, Default, PartialEq)]
pub struct RecordReport {
    /// Points the join did not have.
    pub new: u32,
    /// Points it had with the same value.
    pub unchanged: u32,
    /// Points whose value replaced another.
    pub revised: u32,
    /// Points refused, with why.
    pub rejected: Vec<PointError>,
}

impl SharedJoin {
    /// Shares `join`.
    pub fn new(join: IntensityJoin) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(join))))
    }

    /// The join as it is now.
    pub fn snapshot(&self) -> Arc<IntensityJoin> {
        // A writer cannot panic halfway through an update (see `record_all`), so a poisoned
        // lock still holds a whole join.
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Records `points` (see [`IntensityJoin::record`]); refused ones are reported, the others
    /// kept.
    pub fn record_all(&self, points: &[IntensityPoint]) -> RecordReport {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let join = Arc::make_mut(&mut guard);
        let mut report = RecordReport::default();
        for p in points {
            match join.record(p) {
                Ok(Recorded::New) => report.new += 1,
                Ok(Recorded::Unchanged) => report.unchanged += 1,
                Ok(Recorded::Revised) => report.revised += 1,
                Err(e) => report.rejected.push(e),
            }
        }
        report
    }
}

impl From<IntensityJoin> for SharedJoin {
    fn from(join: IntensityJoin) -> Self {
        Self::new(join)
    }
}

impl From<Arc<IntensityJoin>> for SharedJoin {
    fn from(join: Arc<IntensityJoin>) -> Self {
        Self(Arc::new(RwLock::new(join)))
    }
}

fn max_outcome(a: Recorded, b: Recorded) -> Recorded {
    let rank = |r| match r {
        Recorded::Unchanged => 0,
        Recorded::New => 1,
        Recorded::Revised => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Where a joined value stands in the policy, for a bucket that is not replayed: 4 actual,
/// 3 forecast, 2 nearest actual, 1 average, 0 missing.
pub fn policy_rank(j: Option<&JoinedIntensity>, bucket: Bucket) -> u8 {
    match j {
        None => 0,
        Some(j) => match j.kind {
            IntensityKind::Actual if j.point_at == bucket.start() => 4,
            IntensityKind::Forecast => 3,
            IntensityKind::Actual => 2,
            IntensityKind::FallbackAverage => 1,
        },
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

    fn pt(
        at: i64,
        value: f64,
        signal: Signal,
        kind: PointKind,
        issued: Option<i64>,
    ) -> IntensityPoint {
        IntensityPoint {
            region: RegionId::from("L"),
            at: UnixMillis(at * BUCKET_MS),
            duration_ms: if signal == Signal::Average {
                12 * BUCKET_MS
            } else {
                BUCKET_MS
            },
            value: GramsPerKwh(value),
            signal,
            kind,
            issued_at: issued.map(|i| UnixMillis(i * BUCKET_MS)),
            provider: "watttime:L".to_owned(),
            model_version: None,
            fetched_at: UnixMillis(0),
        }
    }

    fn live_join() -> IntensityJoin {
        let mut j = IntensityJoin::new(2 * BUCKET_MS);
        j.insert(
            RegionId::from("L"),
            RegionIntensity {
                marginal: None,
                replay: false,
                average: Some((GramsPerKwh(250.0), "egrid2023:CAMX".to_owned())),
            },
        );
        j
    }

    #[test]
    fn a_forecast_as_of_a_decision_is_the_latest_issued_by_then() {
        let mut j = live_join();
        let l = RegionId::from("L");
        for (issued, value) in [(2, 310.0), (5, 320.0), (8, 330.0)] {
            j.record(&pt(
                10,
                value,
                Signal::Marginal,
                PointKind::Forecast,
                Some(issued),
            ))
            .unwrap();
        }
        let as_of = |decided: i64| {
            j.forecast_as_of(&l, at(10), UnixMillis(decided * BUCKET_MS))
                .map(|v| (v.value.0, v.kind, v.point_at.0 / BUCKET_MS))
        };
        assert_eq!(as_of(1), None);
        assert_eq!(as_of(2), Some((310.0, IntensityKind::Forecast, 2)));
        assert_eq!(as_of(4), Some((310.0, IntensityKind::Forecast, 2)));
        assert_eq!(as_of(7), Some((320.0, IntensityKind::Forecast, 5)));
        assert_eq!(as_of(100), Some((330.0, IntensityKind::Forecast, 8)));
        // No forecast for the bucket, or an unknown region: nothing.
        assert!(j
            .forecast_as_of(&l, at(11), UnixMillis(100 * BUCKET_MS))
            .is_none());
        assert!(j
            .forecast_as_of(&RegionId::from("X"), at(10), UnixMillis(0))
            .is_none());
    }

    #[test]
    fn the_fallback_chain_is_taken_in_order() {
        let mut j = live_join();
        let l = RegionId::from("L");
        let get = |j: &IntensityJoin, b: i64| {
            let v = j.lookup(&l, at(b)).unwrap();
            (v.value.0, v.kind, v.point_at.0 / BUCKET_MS)
        };
        // Nothing recorded: the static average, flagged.
        assert_eq!(get(&j, 10), (250.0, IntensityKind::FallbackAverage, 10));
        // A published hourly average covering buckets 0..12 beats the static rate.
        j.record(&pt(0, 300.0, Signal::Average, PointKind::Actual, None))
            .unwrap();
        assert_eq!(get(&j, 10), (300.0, IntensityKind::FallbackAverage, 0));
        assert_eq!(get(&j, 12), (250.0, IntensityKind::FallbackAverage, 12));
        // An actual 2 buckets away is within the bound: nearest actual beats the average.
        j.record(&pt(8, 410.0, Signal::Marginal, PointKind::Actual, None))
            .unwrap();
        assert_eq!(get(&j, 10), (410.0, IntensityKind::Actual, 8));
        // A forecast made before the bucket beats the nearest actual; the latest such wins;
        // one made as the bucket started is not "before" it and is never used.
        j.record(&pt(
            10,
            420.0,
            Signal::Marginal,
            PointKind::Forecast,
            Some(7),
        ))
        .unwrap();
        j.record(&pt(
            10,
            430.0,
            Signal::Marginal,
            PointKind::Forecast,
            Some(9),
        ))
        .unwrap();
        j.record(&pt(
            10,
            999.0,
            Signal::Marginal,
            PointKind::Forecast,
            Some(10),
        ))
        .unwrap();
        assert_eq!(get(&j, 10), (430.0, IntensityKind::Forecast, 9));
        // The actual beats everything.
        j.record(&pt(10, 440.0, Signal::Marginal, PointKind::Actual, None))
            .unwrap();
        assert_eq!(get(&j, 10), (440.0, IntensityKind::Actual, 10));
        // The average stays available beside the marginal value.
        assert_eq!(j.average(&l, at(10)).unwrap().value, GramsPerKwh(300.0));
    }

    #[test]
    fn nearest_actual_looks_both_ways_and_prefers_the_earlier_on_a_tie() {
        let mut j = live_join();
        let l = RegionId::from("L");
        j.record(&pt(4, 1.0, Signal::Marginal, PointKind::Actual, None))
            .unwrap();
        j.record(&pt(8, 2.0, Signal::Marginal, PointKind::Actual, None))
            .unwrap();
        assert_eq!(j.lookup(&l, at(6)).unwrap().value, GramsPerKwh(1.0));
        assert_eq!(j.lookup(&l, at(7)).unwrap().value, GramsPerKwh(2.0));
        assert_eq!(j.lookup(&l, at(3)).unwrap().value, GramsPerKwh(1.0));
        // Three buckets away is beyond the bound of two.
        assert_eq!(
            j.lookup(&l, at(11)).unwrap().kind,
            IntensityKind::FallbackAverage
        );
    }

    #[test]
    fn recording_reports_new_unchanged_and_revised_and_refuses_unknown_regions() {
        let mut j = live_join();
        let p = pt(1, 100.0, Signal::Marginal, PointKind::Actual, None);
        assert_eq!(j.record(&p), Ok(Recorded::New));
        assert_eq!(j.record(&p), Ok(Recorded::Unchanged));
        let revised = IntensityPoint {
            value: GramsPerKwh(101.0),
            ..p.clone()
        };
        assert_eq!(j.record(&revised), Ok(Recorded::Revised));
        let unknown = IntensityPoint {
            region: RegionId::from("nowhere"),
            ..p
        };
        assert!(matches!(
            j.record(&unknown),
            Err(PointError::UnknownRegion { .. })
        ));
        // A 30-minute marginal point applies to each of its six buckets.
        let mut long = pt(12, 7.0, Signal::Marginal, PointKind::Actual, None);
        long.duration_ms = 6 * BUCKET_MS;
        j.record(&long).unwrap();
        for b in 12..18 {
            assert_eq!(
                j.lookup(&RegionId::from("L"), at(b)).unwrap().point_at,
                UnixMillis(b * BUCKET_MS)
            );
        }
    }

    #[test]
    fn restatement_only_ever_moves_up_the_policy() {
        let mut j = live_join();
        let l = RegionId::from("L");
        j.record(&pt(
            5,
            300.0,
            Signal::Marginal,
            PointKind::Forecast,
            Some(4),
        ))
        .unwrap();
        let forecast = j.lookup(&l, at(5));
        // Nothing better yet.
        assert_eq!(j.restatement(&l, at(5), forecast.as_ref()), None);
        // Missing intensity is filled even by the average.
        assert_eq!(
            j.restatement(&l, at(30), None).map(|n| n.kind),
            Some(IntensityKind::FallbackAverage)
        );
        j.record(&pt(5, 320.0, Signal::Marginal, PointKind::Actual, None))
            .unwrap();
        let actual = j.restatement(&l, at(5), forecast.as_ref()).unwrap();
        assert_eq!(
            (actual.value, actual.kind),
            (GramsPerKwh(320.0), IntensityKind::Actual)
        );
        assert_eq!(j.restatement(&l, at(5), Some(&actual)), None);
        assert_eq!(
            restatement_reason(at(5), forecast.as_ref(), &actual),
            format!(
                "actual 320 g/kWh (watttime:L) replaces forecast 300 g/kWh issued {} (watttime:L)",
                at(4).start().to_rfc3339()
            )
        );
        // A nearest actual (bucket 6 used bucket 5's) is restated when its own arrives.
        let nearest = j.lookup(&l, at(6)).unwrap();
        assert_eq!(nearest.point_at, at(5).start());
        j.record(&pt(6, 330.0, Signal::Marginal, PointKind::Actual, None))
            .unwrap();
        assert_eq!(
            j.restatement(&l, at(6), Some(&nearest)).unwrap().value,
            GramsPerKwh(330.0)
        );
        // Replayed regions never are.
        let replayed = join(true, true);
        assert_eq!(
            replayed.restatement(&RegionId::from("R"), at(2), None),
            None
        );
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
