//! The series service: one instance's raw samples, or its 5-minute GPU-intervals summed
//! into steps. Invariant: emissions are summed per interval (Σ E_i × I_i), never E × mean I;
//! every step of the range is listed, gaps included with zero coverage.

use std::collections::BTreeSet;

use wattprint_core::intensity::{IntensityJoin, JoinedIntensity};
use wattprint_core::units::MJ_PER_KWH;
use wattprint_core::{GpuUuid, InstanceId, TenantScope, UnixMillis};
use wattprint_store::{GpuHourUsage, IntervalRow, SampleRow, Store, UsageTotals, HOUR_MS};

use super::*;
use crate::average::{hour_averages, AverageTotals};
use crate::error::ApiError;
use crate::time::{ceil_to, floor_to, Step};
use crate::ApiLimits;

/// The API's view of a stored sample.
pub fn raw_point(r: &SampleRow) -> RawPoint {
    let s = &r.sample;
    RawPoint {
        start: s.start.to_rfc3339(),
        end: s.end.to_rfc3339(),
        gpu_uuid: s.gpu.to_string(),
        energy_mj: s.energy.0,
        power_w: s.power.to_watts(),
        power_max_w: s.power_max.to_watts(),
        util_gpu_pct: s.util_gpu_pct,
        temp_c: s.temp_c,
        chain_start: s.chain_start,
        energy_source: s.energy_source.as_str().to_owned(),
        attribution: s.attribution.as_str().to_owned(),
    }
}

/// A validated series request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRequest {
    /// Start (inclusive).
    pub from: UnixMillis,
    /// End (exclusive).
    pub to: UnixMillis,
    /// Resolution.
    pub step: Step,
}

impl SeriesRequest {
    /// Checks `from < to`, the range limit and, for aggregated steps, the number of points.
    pub fn validate(&self, limits: &ApiLimits) -> Result<(), ApiError> {
        check_range(self.from, self.to, limits)?;
        if let Some(step_ms) = self.step.millis() {
            let points =
                (ceil_to(self.to, step_ms).since(floor_to(self.from, step_ms)) / step_ms) as u64;
            if points > limits.max_points as u64 {
                return Err(too_many_points(points, limits.max_points));
            }
        }
        Ok(())
    }
}

fn too_many_points(points: u64, max: usize) -> ApiError {
    ApiError::BadRequest(format!(
        "the range holds {points} points at this step, more than the limit of {max}; use a coarser step (raw < 5m < 1h < 1d) or a shorter range"
    ))
}

/// Reads one instance's series. Unknown or foreign instance: 404.
pub async fn instance_series(
    store: &dyn Store,
    scope: &TenantScope,
    instance: &InstanceId,
    req: SeriesRequest,
    limits: &ApiLimits,
    join: Option<&IntensityJoin>,
) -> Result<Series, ApiError> {
    req.validate(limits)?;
    // The inventory (the instance's GPUs) and the data are read at once: both are filtered
    // by the tenant, and a foreign or unknown instance is a 404 from the inventory first.
    let (instances, data) = tokio::join!(
        store.list_instances(scope),
        read_series_data(store, scope, instance, req, limits, join)
    );
    let instances = instances
        .map_err(|e| ApiError::from_store(e, || not_found_instance(instance).to_string()))?;
    let record = instances
        .iter()
        .find(|r| &r.instance == instance)
        .ok_or_else(|| not_found_instance(instance))?;
    let known = record.gpus.iter().map(|g| &g.uuid);
    let (from, to) = match req.step.millis() {
        Some(step_ms) => (floor_to(req.from, step_ms), ceil_to(req.to, step_ms)),
        None => (req.from, req.to),
    };
    let points = match data? {
        SeriesData::Samples(rows) => SeriesPoints::Raw(rows.iter().map(raw_point).collect()),
        SeriesData::Hours(hours, averages, step_ms) => {
            let gpus: BTreeSet<&GpuUuid> = known.chain(hours.iter().map(|h| &h.gpu)).collect();
            SeriesPoints::Aggregated(aggregate_hours(
                &hours,
                averages.as_deref(),
                from,
                to,
                step_ms,
                gpus.len(),
            ))
        }
        SeriesData::Intervals(rows, step_ms) => {
            let gpus: BTreeSet<&GpuUuid> = known.chain(rows.iter().map(|r| &r.gpu)).collect();
            let points = aggregate_intervals(&rows, from, to, step_ms, gpus.len(), join);
            drop(gpus);
            drop_off_the_request(rows);
            SeriesPoints::Aggregated(points)
        }
    };
    Ok(Series {
        instance_id: instance.to_string(),
        step: req.step,
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        points,
    })
}

/// Frees a large read on the blocking pool rather than in the request: a month's 5-minute
/// rows of one instance hold some 170,000 strings, whose freeing would add milliseconds to
/// the response.
fn drop_off_the_request<T: Send + 'static>(rows: Vec<T>) {
    const LARGE: usize = 4096;
    if rows.len() >= LARGE {
        tokio::task::spawn_blocking(move || drop(rows));
    }
}

/// What a series is made of.
enum SeriesData {
    /// Raw samples.
    Samples(Vec<SampleRow>),
    /// Per-GPU hours, with each one's average intensity when a join asks for them, for
    /// steps of the given length.
    Hours(Vec<GpuHourUsage>, Option<Vec<Option<JoinedIntensity>>>, i64),
    /// 5-minute intervals, for steps of the given length.
    Intervals(Vec<IntervalRow>, i64),
}

/// Reads the data of `req`: samples for raw steps; hourly totals for whole-hour steps (with
/// figures on average intensity only where each hour has one region and one average,
/// [`hour_averages`]); else the 5-minute intervals.
async fn read_series_data(
    store: &dyn Store,
    scope: &TenantScope,
    instance: &InstanceId,
    req: SeriesRequest,
    limits: &ApiLimits,
    join: Option<&IntensityJoin>,
) -> Result<SeriesData, ApiError> {
    let map_nf = |e| ApiError::from_store(e, || format!("instance {instance} not found"));
    let Some(step_ms) = req.step.millis() else {
        let limit = u32::try_from(limits.max_points.saturating_add(1)).unwrap_or(u32::MAX);
        let rows = store
            .instance_samples(scope, instance, req.from, req.to, limit)
            .await
            .map_err(map_nf)?;
        if rows.len() > limits.max_points {
            return Err(ApiError::BadRequest(format!(
                "the range holds more than {} raw samples; use a coarser step (5m, 1h, 1d) or a shorter range",
                limits.max_points
            )));
        }
        return Ok(SeriesData::Samples(rows));
    };
    let (from, to) = (floor_to(req.from, step_ms), ceil_to(req.to, step_ms));
    if step_ms % HOUR_MS == 0 {
        let hours = store
            .instance_hourly_usage(scope, instance, from, to)
            .await
            .map_err(map_nf)?;
        match join {
            None => return Ok(SeriesData::Hours(hours, None, step_ms)),
            Some(j) => {
                if let Some(averages) = hour_averages(j, &hours) {
                    return Ok(SeriesData::Hours(hours, Some(averages), step_ms));
                }
            }
        }
    }
    let rows = store
        .instance_intervals(scope, instance, from, to)
        .await
        .map_err(map_nf)?;
    Ok(SeriesData::Intervals(rows, step_ms))
}

/// One step's running totals, from 5-minute intervals or from hourly totals alike.
#[derive(Default)]
struct StepAcc<'a> {
    totals: UsageTotals,
    /// Per GPU: energy and covered time (their ratio is the GPU's power while measured).
    /// A vector searched in place: an instance has a few GPUs, and a month's 5-minute series
    /// has 8,640 steps.
    per_gpu: Vec<(&'a GpuUuid, u64, i64)>,
    /// Σ E_i × I_i, mJ·g/kWh.
    weighted_intensity: f64,
    /// Σ I_i over intervals with an intensity.
    intensity_sum: f64,
    average: AverageTotals,
}

impl<'a> StepAcc<'a> {
    fn add_gpu(&mut self, gpu: &'a GpuUuid, energy: u64, covered_ms: i64) {
        match self.per_gpu.iter_mut().find(|(g, _, _)| *g == gpu) {
            Some((_, mj, ms)) => {
                *mj = mj.saturating_add(energy);
                *ms += covered_ms;
            }
            None => self.per_gpu.push((gpu, energy, covered_ms)),
        }
    }

    fn add_interval(&mut self, row: &'a IntervalRow, join: Option<&IntensityJoin>) {
        self.totals.add_interval(row);
        self.add_gpu(&row.gpu, row.energy.0, row.covered_ms);
        if let Some(j) = &row.intensity {
            self.weighted_intensity += row.energy.0 as f64 * j.value.0;
            self.intensity_sum += j.value.0;
        }
        if let Some(join) = join {
            self.average
                .add(join, &row.region, row.bucket, row.energy, row.pue);
        }
    }

    fn add_hour(&mut self, hour: &'a GpuHourUsage) {
        self.totals.add(&hour.totals);
        self.add_gpu(&hour.gpu, hour.totals.energy.0, hour.totals.covered_ms);
        // Σ E·I = Σ E·I/MJ_PER_KWH × MJ_PER_KWH: the same sum up to rounding.
        self.weighted_intensity += hour.totals.it_co2e.0 * MJ_PER_KWH as f64;
        self.intensity_sum += hour.intensity_sum;
    }

    /// The point of the step `[start, start + step_ms)` of an instance with `gpus` GPUs.
    fn point(
        mut self,
        start: UnixMillis,
        step_ms: i64,
        gpus: usize,
        average: bool,
    ) -> AggregatePoint {
        let t = &self.totals;
        let end = UnixMillis(start.0 + step_ms);
        // Summed in GPU order, so a step's figure does not depend on the rows' order.
        self.per_gpu.sort_unstable_by_key(|(g, _, _)| *g);
        let covered = self.per_gpu.iter().filter(|(_, _, ms)| *ms > 0);
        let power_mean_w = (covered.clone().count() > 0)
            .then(|| covered.map(|(_, mj, ms)| *mj as f64 / *ms as f64).sum());
        let with_intensity = t.intervals_actual + t.intervals_forecast + t.intervals_fallback;
        let energy_with_intensity = t.energy.0.saturating_sub(t.energy_without_intensity.0);
        let intensity = if with_intensity == 0 {
            None
        } else if energy_with_intensity == 0 {
            // No energy to weight by: the plain mean of the values.
            Some(self.intensity_sum / with_intensity as f64)
        } else {
            Some(self.weighted_intensity / energy_with_intensity as f64)
        };
        let denominator = step_ms as f64 * gpus as f64;
        AggregatePoint {
            start: start.to_rfc3339(),
            end: end.to_rfc3339(),
            energy_mj: t.energy.0,
            energy_kwh: t.energy.0 as f64 / MJ_PER_KWH as f64,
            estimated_energy_mj: t.estimated.0,
            power_mean_w,
            power_max_w: t.power_max.map(|mw| f64::from(mw.0) / 1000.0),
            coverage: if denominator > 0.0 {
                t.covered_ms as f64 / denominator
            } else {
                0.0
            },
            intensity_g_per_kwh: intensity,
            intensity_kinds: IntensityKinds {
                actual: t.intervals_actual,
                forecast: t.intervals_forecast,
                fallback_average: t.intervals_fallback,
                missing: t.intervals_missing_intensity,
                replayed: t.intervals_replayed_intensity,
            },
            co2e_g: t.it_co2e.0,
            facility_co2e_g: t.facility_co2e.0,
            co2e_missing_energy_mj: t.energy_without_intensity.0,
            average_intensity_g_per_kwh: self.average.mean_intensity(),
            average_co2e_g: average.then_some(self.average.it_co2e_g),
            average_facility_co2e_g: average.then_some(self.average.facility_co2e_g),
        }
    }
}

/// The steps of `step_ms` over `[from, to)` (both aligned to the step), each accumulated by
/// `fill` from the items `start_of` places in it (items outside the range are ignored).
fn steps<'a, T>(
    items: &'a [T],
    (from, to): (UnixMillis, UnixMillis),
    step_ms: i64,
    start_of: impl Fn(&T) -> UnixMillis,
    mut fill: impl FnMut(&mut StepAcc<'a>, &'a T),
) -> Vec<StepAcc<'a>> {
    let n = usize::try_from(to.since(from).max(0) / step_ms).unwrap_or(0);
    let mut accs: Vec<StepAcc<'a>> = (0..n).map(|_| StepAcc::default()).collect();
    for item in items {
        let start = start_of(item);
        let offset = start.since(from);
        if offset < 0 || start >= to {
            continue;
        }
        if let Some(acc) = accs.get_mut((offset / step_ms) as usize) {
            fill(acc, item);
        }
    }
    accs
}

fn points(
    accs: Vec<StepAcc<'_>>,
    from: UnixMillis,
    step_ms: i64,
    gpus: usize,
    average: bool,
) -> Vec<AggregatePoint> {
    accs.into_iter()
        .enumerate()
        .map(|(i, acc)| {
            acc.point(
                UnixMillis(from.0 + i as i64 * step_ms),
                step_ms,
                gpus,
                average,
            )
        })
        .collect()
}

/// Aggregates 5-minute GPU-intervals into steps of `step_ms` over `[from, to)` (both aligned to
/// the step): one point per step, empty steps included. `gpus` is the instance's GPU count,
/// the denominator of coverage. Rows outside the range are ignored. With `join`, each point
/// also carries its emissions on average intensity.
pub fn aggregate_intervals(
    rows: &[IntervalRow],
    from: UnixMillis,
    to: UnixMillis,
    step_ms: i64,
    gpus: usize,
    join: Option<&IntensityJoin>,
) -> Vec<AggregatePoint> {
    let accs = steps(
        rows,
        (from, to),
        step_ms,
        |r| r.bucket.start(),
        |acc, row| acc.add_interval(row, join),
    );
    points(accs, from, step_ms, gpus, join.is_some())
}

/// Aggregates per-GPU hourly totals ([`Store::instance_hourly_usage`]) into steps of
/// `step_ms`, a whole number of hours, over `[from, to)` (aligned to the step): the same
/// points [`aggregate_intervals`] makes of the intervals they sum. With `averages` (per row,
/// its hour's average intensity, [`hour_averages`]) each point also carries its emissions on
/// average intensity, as [`aggregate_intervals`] with the join gives them.
pub fn aggregate_hours(
    hours: &[GpuHourUsage],
    averages: Option<&[Option<JoinedIntensity>]>,
    from: UnixMillis,
    to: UnixMillis,
    step_ms: i64,
    gpus: usize,
) -> Vec<AggregatePoint> {
    let items: Vec<(&GpuHourUsage, Option<&Option<JoinedIntensity>>)> = hours
        .iter()
        .enumerate()
        .map(|(i, h)| (h, averages.and_then(|a| a.get(i))))
        .collect();
    let accs = steps(
        &items,
        (from, to),
        step_ms,
        |(h, _)| h.hour,
        |acc, (h, a)| {
            acc.add_hour(h);
            if let Some(a) = a {
                acc.average
                    .add_hour(a.as_ref(), h.totals.energy, h.totals.facility_energy);
            }
        },
    );
    points(accs, from, step_ms, gpus, averages.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
    use wattprint_core::{Bucket, GramsPerKwh, Millijoules, Milliwatts, RegionId, BUCKET_MS};

    fn row(
        bucket_i: i64,
        gpu: &str,
        mj: u64,
        covered: i64,
        intensity: Option<(f64, IntensityKind)>,
    ) -> IntervalRow {
        IntervalRow {
            instance: InstanceId::from("i"),
            gpu: GpuUuid::from(gpu),
            bucket: Bucket::containing(UnixMillis(bucket_i * BUCKET_MS)),
            energy: Millijoules(mj),
            estimated: Millijoules(0),
            covered_ms: covered,
            samples: 1,
            power_max: Milliwatts(400_000),
            region: RegionId::from("R"),
            intensity: intensity.map(|(v, kind)| JoinedIntensity {
                value: GramsPerKwh(v),
                kind,
                source: "t".into(),
                point_at: UnixMillis(bucket_i * BUCKET_MS),
                replayed: false,
            }),
            pue: 1.5,
        }
    }

    #[test]
    fn aggregation_sums_per_step_and_weights_intensity_by_energy() {
        let kwh = MJ_PER_KWH;
        let rows = vec![
            row(
                0,
                "g1",
                kwh,
                BUCKET_MS,
                Some((100.0, IntensityKind::Actual)),
            ),
            row(
                0,
                "g2",
                kwh,
                BUCKET_MS / 2,
                Some((100.0, IntensityKind::Actual)),
            ),
            row(
                1,
                "g1",
                3 * kwh,
                BUCKET_MS,
                Some((500.0, IntensityKind::FallbackAverage)),
            ),
            row(2, "g1", 7, BUCKET_MS, None),
        ];
        // One 15-minute step over 3 buckets with 2 GPUs.
        let pts = aggregate_intervals(
            &rows,
            UnixMillis(0),
            UnixMillis(3 * BUCKET_MS),
            3 * BUCKET_MS,
            2,
            None,
        );
        assert_eq!(pts.len(), 1);
        let p = &pts[0];
        assert_eq!(p.energy_mj, 5 * kwh + 7);
        // Per interval: 100 + 100 + 1500 g; never 5 kWh × mean.
        assert!((p.co2e_g - 1700.0).abs() < 1e-9);
        assert!((p.facility_co2e_g - 2550.0).abs() < 1e-9);
        assert!((p.intensity_g_per_kwh.unwrap() - 1700.0 / 5.0).abs() < 1e-9);
        assert_eq!(p.co2e_missing_energy_mj, 7);
        assert_eq!(
            p.intensity_kinds,
            IntensityKinds {
                actual: 2,
                forecast: 0,
                fallback_average: 1,
                missing: 1,
                replayed: 0,
            }
        );
        // Coverage: 3.5 buckets of 6 GPU-buckets.
        assert!((p.coverage - 3.5 / 6.0).abs() < 1e-12);
        // Power while measured: g1 (4 kWh + 7 mJ over 3 buckets) + g2 (1 kWh over half a bucket).
        let g1 = (4 * kwh + 7) as f64 / (3 * BUCKET_MS) as f64;
        let g2 = kwh as f64 / (BUCKET_MS / 2) as f64;
        assert!((p.power_mean_w.unwrap() - (g1 + g2)).abs() < 1e-6);
        assert_eq!(p.power_max_w, Some(400.0));
    }

    #[test]
    fn empty_steps_are_reported_as_gaps() {
        let pts = aggregate_intervals(
            &[],
            UnixMillis(0),
            UnixMillis(2 * BUCKET_MS),
            BUCKET_MS,
            1,
            None,
        );
        assert_eq!(pts.len(), 2);
        assert_eq!(
            (pts[1].energy_mj, pts[1].coverage, pts[1].power_mean_w),
            (0, 0.0, None)
        );
        assert_eq!(pts[1].start, "1970-01-01T00:05:00.000Z");
        assert_eq!(pts[1].intensity_g_per_kwh, None);
    }

    #[test]
    fn zero_energy_intervals_fall_back_to_the_plain_mean_intensity() {
        let rows = vec![
            row(0, "g1", 0, 10, Some((100.0, IntensityKind::Actual))),
            row(0, "g2", 0, 10, Some((300.0, IntensityKind::Forecast))),
        ];
        let pts = aggregate_intervals(
            &rows,
            UnixMillis(0),
            UnixMillis(BUCKET_MS),
            BUCKET_MS,
            2,
            None,
        );
        assert_eq!(pts[0].intensity_g_per_kwh, Some(200.0));
    }

    /// Panics unless `a` and `b` are the same points: integers equal, floats to 1e-9 relative.
    fn assert_same_points(a: &[AggregatePoint], b: &[AggregatePoint]) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-9);
        let close_opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => close(x, y),
            (x, y) => x == y,
        };
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(b) {
            let ints = |p: &AggregatePoint| {
                (
                    p.start.clone(),
                    p.end.clone(),
                    p.energy_mj,
                    p.estimated_energy_mj,
                    p.intensity_kinds,
                    p.co2e_missing_energy_mj,
                    p.power_max_w,
                )
            };
            assert_eq!(ints(p), ints(q));
            assert!(
                close(p.energy_kwh, q.energy_kwh)
                    && close(p.coverage, q.coverage)
                    && close(p.co2e_g, q.co2e_g)
                    && close(p.facility_co2e_g, q.facility_co2e_g)
                    && close_opt(p.power_mean_w, q.power_mean_w)
                    && close_opt(p.intensity_g_per_kwh, q.intensity_g_per_kwh)
                    && close_opt(p.average_co2e_g, q.average_co2e_g)
                    && close_opt(p.average_facility_co2e_g, q.average_facility_co2e_g)
                    && close_opt(p.average_intensity_g_per_kwh, q.average_intensity_g_per_kwh),
                "{p:?} != {q:?}"
            );
        }
    }

    /// A join where region `R` has a static average and published hourly averages for its
    /// first 20 hours (one of them published for half an hour only when `half_hour`), and
    /// region `S` has no average at all.
    fn averages_join(half_hour: bool) -> IntensityJoin {
        use wattprint_core::intensity::{IntensityPoint, PointKind, RegionIntensity, Signal};
        let mut join = IntensityJoin::new(0);
        join.insert(
            RegionId::from("R"),
            RegionIntensity {
                marginal: None,
                replay: false,
                average: Some((GramsPerKwh(380.5), "egrid2023:R".into())),
            },
        );
        join.insert(
            RegionId::from("S"),
            RegionIntensity {
                marginal: None,
                replay: false,
                average: None,
            },
        );
        for h in 0..20i64 {
            let duration_ms = if half_hour && h == 7 {
                HOUR_MS / 2
            } else {
                HOUR_MS
            };
            join.record(&IntensityPoint {
                region: RegionId::from("R"),
                at: UnixMillis(h * HOUR_MS),
                duration_ms,
                value: GramsPerKwh(200.0 + 13.25 * h as f64),
                signal: Signal::Average,
                kind: PointKind::Actual,
                issued_at: None,
                provider: "electricitymaps:R".into(),
                model_version: None,
                fetched_at: UnixMillis(0),
            })
            .unwrap();
        }
        join
    }

    #[test]
    fn an_average_changing_inside_an_hour_needs_the_intervals() {
        let rows = vec![
            row(7 * 12, "g1", 5_000, 10, None),
            row(0, "g1", 7, 10, None),
        ];
        let mut rows = rows;
        rows.sort_by_key(|r| r.bucket);
        let hours = wattprint_store::hourly_usage(&rows);
        assert!(hour_averages(&averages_join(false), &hours).is_some());
        assert_eq!(hour_averages(&averages_join(true), &hours), None);
        // An hour whose region is unknown (mixed, or a store that cannot tell) too.
        let mut unknown = hours.clone();
        unknown[0].region = None;
        assert_eq!(hour_averages(&averages_join(false), &unknown), None);
    }

    proptest::proptest! {
        /// Hourly totals summed into 1 h and 1 d steps give the points the intervals give,
        /// figures on average intensity included (intervals in two regions, one of them
        /// with published hourly averages then a static rate, the other with none).
        #[test]
        fn hourly_totals_give_the_points_of_their_intervals(
            cells in proptest::collection::vec(
                (0i64..600, 0usize..3, 0u64..5_000_000, 0i64..=BUCKET_MS, 0u8..5),
                0..400,
            )
        ) {
            let kinds = [
                None,
                Some((120.5, IntensityKind::Actual)),
                Some((333.25, IntensityKind::Forecast)),
                Some((410.0, IntensityKind::FallbackAverage)),
                Some((77.0, IntensityKind::Actual)),
            ];
            let mut seen = BTreeSet::new();
            let mut rows: Vec<IntervalRow> = cells
                .into_iter()
                .filter(|(b, g, ..)| seen.insert((*b, *g)))
                .map(|(b, g, mj, covered, k)| {
                    // Some zero-energy intervals with intensity: the plain-mean case.
                    let mj = if k == 4 { 0 } else { mj };
                    let mut r = row(b, &format!("g{g}"), mj, covered, kinds[k as usize]);
                    if g == 2 {
                        r.region = RegionId::from("S");
                    }
                    r
                })
                .collect();
            rows.sort_by_key(|r| (r.bucket, r.gpu.clone()));
            let hours = wattprint_store::hourly_usage(&rows);
            let join = averages_join(false);
            let averages = hour_averages(&join, &hours).expect("hourly averages");
            for step in [HOUR_MS, 24 * HOUR_MS] {
                let (from, to) = (UnixMillis(-step), UnixMillis(3 * 24 * HOUR_MS));
                assert_same_points(
                    &aggregate_hours(&hours, None, from, to, step, 3),
                    &aggregate_intervals(&rows, from, to, step, 3, None),
                );
                assert_same_points(
                    &aggregate_hours(&hours, Some(&averages), from, to, step, 3),
                    &aggregate_intervals(&rows, from, to, step, 3, Some(&join)),
                );
            }
        }
    }
}
