//! The series service: one instance's raw samples, or its 5-minute GPU-intervals summed
//! into steps. Invariant: emissions are summed per interval (Σ E_i × I_i), never E × mean I;
//! every step of the range is listed, gaps included with zero coverage.

use std::collections::{BTreeMap, BTreeSet};

use wattprint_core::intensity::{IntensityJoin, IntensityKind};
use wattprint_core::units::MJ_PER_KWH;
use wattprint_core::{GpuUuid, InstanceId, TenantScope, UnixMillis};
use wattprint_store::{IntervalRow, SampleRow, Store};

use super::*;
use crate::average::AverageTotals;
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
    let instances = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || not_found_instance(instance).to_string()))?;
    let record = instances
        .iter()
        .find(|r| &r.instance == instance)
        .ok_or_else(|| not_found_instance(instance))?;
    let map_nf = |e| ApiError::from_store(e, || format!("instance {instance} not found"));
    match req.step.millis() {
        None => {
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
            Ok(Series {
                instance_id: instance.to_string(),
                step: req.step,
                from: req.from.to_rfc3339(),
                to: req.to.to_rfc3339(),
                points: SeriesPoints::Raw(rows.iter().map(raw_point).collect()),
            })
        }
        Some(step_ms) => {
            let from = floor_to(req.from, step_ms);
            let to = ceil_to(req.to, step_ms);
            let rows = store
                .instance_intervals(scope, instance, from, to)
                .await
                .map_err(map_nf)?;
            let gpus: BTreeSet<&GpuUuid> = record
                .gpus
                .iter()
                .map(|g| &g.uuid)
                .chain(rows.iter().map(|r| &r.gpu))
                .collect();
            let points = aggregate_intervals(&rows, from, to, step_ms, gpus.len(), join);
            Ok(Series {
                instance_id: instance.to_string(),
                step: req.step,
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
                points: SeriesPoints::Aggregated(points),
            })
        }
    }
}

#[derive(Default)]
struct StepAcc {
    energy: u64,
    estimated: u64,
    covered_ms: i64,
    per_gpu: BTreeMap<GpuUuid, (u64, i64)>,
    power_max_mw: Option<u32>,
    weighted_intensity: f64,
    energy_with_intensity: u64,
    intensity_sum: f64,
    intensity_count: u64,
    kinds: IntensityKinds,
    co2e_g: f64,
    facility_co2e_g: f64,
    missing_energy: u64,
    average: AverageTotals,
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
    let n = usize::try_from(to.since(from).max(0) / step_ms).unwrap_or(0);
    let mut accs: Vec<StepAcc> = (0..n).map(|_| StepAcc::default()).collect();
    for row in rows {
        let offset = row.bucket.start().since(from);
        if offset < 0 || row.bucket.start() >= to {
            continue;
        }
        let Some(acc) = accs.get_mut((offset / step_ms) as usize) else {
            continue;
        };
        let e = row.energy.0;
        acc.energy = acc.energy.saturating_add(e);
        acc.estimated = acc.estimated.saturating_add(row.estimated.0);
        acc.covered_ms += row.covered_ms;
        let g = acc.per_gpu.entry(row.gpu.clone()).or_default();
        g.0 = g.0.saturating_add(e);
        g.1 += row.covered_ms;
        acc.power_max_mw = Some(acc.power_max_mw.unwrap_or(0).max(row.power_max.0));
        if let Some(join) = join {
            acc.average
                .add(join, &row.region, row.bucket, row.energy, row.pue);
        }
        match &row.intensity {
            Some(j) => {
                let co2e = j.value.emissions(row.energy).0;
                acc.co2e_g += co2e;
                acc.facility_co2e_g += co2e * row.pue;
                acc.weighted_intensity += e as f64 * j.value.0;
                acc.energy_with_intensity = acc.energy_with_intensity.saturating_add(e);
                acc.intensity_sum += j.value.0;
                acc.intensity_count += 1;
                if j.replayed {
                    acc.kinds.replayed += 1;
                }
                match j.kind {
                    IntensityKind::Actual => acc.kinds.actual += 1,
                    IntensityKind::Forecast => acc.kinds.forecast += 1,
                    IntensityKind::FallbackAverage => acc.kinds.fallback_average += 1,
                }
            }
            None => {
                acc.kinds.missing += 1;
                acc.missing_energy = acc.missing_energy.saturating_add(e);
            }
        }
    }
    accs.into_iter()
        .enumerate()
        .map(|(i, acc)| {
            let start = UnixMillis(from.0 + i as i64 * step_ms);
            let end = UnixMillis(start.0 + step_ms);
            let covered: Vec<f64> = acc
                .per_gpu
                .values()
                .filter(|(_, ms)| *ms > 0)
                .map(|(mj, ms)| *mj as f64 / *ms as f64)
                .collect();
            let intensity = if acc.intensity_count == 0 {
                None
            } else if acc.energy_with_intensity == 0 {
                // No energy to weight by: the plain mean of the values.
                Some(acc.intensity_sum / acc.intensity_count as f64)
            } else {
                Some(acc.weighted_intensity / acc.energy_with_intensity as f64)
            };
            let denominator = step_ms as f64 * gpus as f64;
            AggregatePoint {
                start: start.to_rfc3339(),
                end: end.to_rfc3339(),
                energy_mj: acc.energy,
                energy_kwh: acc.energy as f64 / MJ_PER_KWH as f64,
                estimated_energy_mj: acc.estimated,
                power_mean_w: (!covered.is_empty()).then(|| covered.iter().sum()),
                power_max_w: acc.power_max_mw.map(|mw| f64::from(mw) / 1000.0),
                coverage: if denominator > 0.0 {
                    acc.covered_ms as f64 / denominator
                } else {
                    0.0
                },
                intensity_g_per_kwh: intensity,
                intensity_kinds: acc.kinds,
                co2e_g: acc.co2e_g,
                facility_co2e_g: acc.facility_co2e_g,
                co2e_missing_energy_mj: acc.missing_energy,
                average_intensity_g_per_kwh: acc.average.mean_intensity(),
                average_co2e_g: join.map(|_| acc.average.it_co2e_g),
                average_facility_co2e_g: join.map(|_| acc.average.facility_co2e_g),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::intensity::JoinedIntensity;
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
}
