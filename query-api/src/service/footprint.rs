//! The footprint service: a workload's exact energy over its span and the footprint (SCI)
//! computed from it. Invariant: whole buckets count their stored energy; edge buckets re-read
//! the raw samples and clip them with the same arithmetic that bucketed them, so a span equal
//! to some samples' gets exactly their energy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wattprint_core::accounting::clip_energy;
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::EnergySource;
use wattprint_core::sci::{
    footprint, Footprint, FootprintProvenance, FootprintSlice, HardwareCatalog,
};
use wattprint_core::{
    Bucket, GpuUuid, GramsCo2e, InstanceId, Millijoules, RegionId, TenantScope, UnixMillis,
    BUCKET_MS,
};
use wattprint_store::{
    InstanceRecord, IntervalRow, SampleRow, Store, UsageTotals, Workload, HOUR_MS,
};

use super::*;
use crate::average::{average_emissions_view, AverageTotals, HourAverages};
use crate::error::ApiError;
use crate::time::{ceil_to, floor_to};

/// Most samples read for the edge buckets of a workload (5-minute windows, two per instance
/// and part); reaching it means the stored data is not what any agent sends.
const MAX_EDGE_SAMPLES: u32 = 5_000_000;

/// Interval rows one read of [`edge_reads`] should bring at most (by the instances' GPUs and
/// buckets): a workload's ragged ends are read for all its instances at once, a long span
/// with intensity a few instances at a time.
const INTERVALS_PER_READ: i64 = 100_000;

/// A workload's energy, slice by slice, before any emissions arithmetic.
#[derive(Debug, Clone, Default)]
pub struct WorkloadEnergy {
    /// One slice per (GPU, bucket) with energy inside `[from, to)`.
    pub slices: Vec<FootprintSlice>,
    /// GPU-time inside `[from, to)` covered by samples.
    pub covered_gpu_ms: i64,
    /// Model of every GPU of the workload's instances (one entry per GPU).
    pub gpu_models: Vec<String>,
    /// Grid regions of the workload's instances.
    pub regions: BTreeSet<RegionId>,
    /// Instances of the workload no longer in the tenant's inventory.
    pub missing_instances: Vec<String>,
    /// Emissions of the slices on average intensity (only when a join was given).
    pub average: AverageTotals,
    /// Sources of the marginal intensities joined to the slices.
    pub marginal_sources: BTreeSet<String>,
}

impl WorkloadEnergy {
    /// Energy of the slices integrated from power rather than counted.
    pub fn estimated_mj(&self) -> u64 {
        self.slices.iter().map(|s| s.estimated.0).sum()
    }

    /// Location-based facility emissions of `view` (this energy's footprint) and the energy
    /// left out of them: null where no slice had an average intensity — never guessed.
    pub fn location_emissions(&self, view: &FootprintView) -> (Option<f64>, u64) {
        let average = view.average.as_ref();
        (
            average
                .filter(|_| self.average.energy_with_intensity > 0)
                .map(|a| a.operational_co2e_g),
            average.map_or(view.footprint.it_energy_mj, |a| {
                a.energy_without_intensity_mj
            }),
        )
    }

    fn push(&mut self, row: &IntervalRow, energy: Millijoules, estimated: Millijoules) {
        if let Some(j) = &row.intensity {
            self.marginal_sources.insert(j.source.clone());
        }
        self.slices.push(slice_of(row, energy, estimated));
    }
}

/// Collects a workload's energy over `span` (its range; for an open workload, so far) exactly.
///
/// Per instance: the 5-minute intervals with buckets starting in `[floor5(from), to)`. A bucket
/// wholly inside `[from, to)` counts its stored energy. An edge bucket re-reads the raw samples
/// overlapping `[max(from, start), min(to, end))` and clips each with
/// [`clip_energy`] — the same arithmetic that split it into buckets — so a range that is exactly
/// the span of some samples gets exactly their energy, to the millijoule. Each (GPU, bucket)
/// slice keeps its bucket's intensity and PUE.
pub async fn workload_energy(
    store: &dyn Store,
    scope: &TenantScope,
    w: &Workload,
    span: (UnixMillis, UnixMillis),
    join: Option<&IntensityJoin>,
) -> Result<WorkloadEnergy, ApiError> {
    let inventory = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    workload_energy_in(store, scope, &inventory, w, &[span], join).await
}

/// [`workload_energy`] over the parts `ranges` of the workload's span (disjoint, each
/// `[from, to)`): the slices of each part, the instances and their GPUs once. The intervals of
/// all the instances are one read, and the samples of all their edge buckets another.
/// `inventory` is the tenant's, read by the caller.
async fn workload_energy_in(
    store: &dyn Store,
    scope: &TenantScope,
    inventory: &[InstanceRecord],
    w: &Workload,
    ranges: &[(UnixMillis, UnixMillis)],
    join: Option<&IntensityJoin>,
) -> Result<WorkloadEnergy, ApiError> {
    let mut out = WorkloadEnergy::default();
    let mut present = Vec::new();
    for instance in &w.spec.instances {
        match inventory.iter().find(|r| &r.instance == instance) {
            Some(record) => present.push(record),
            None => out.missing_instances.push(instance.to_string()),
        }
    }
    let ranges: Vec<(UnixMillis, UnixMillis)> =
        ranges.iter().copied().filter(|(a, b)| a < b).collect();
    // Instances read together, as many as keep a read near `INTERVALS_PER_READ` rows.
    let buckets: i64 = ranges
        .iter()
        .map(|&(from, to)| to.since(Bucket::containing(from).start()) / BUCKET_MS + 1)
        .sum();
    let mut chunks: Vec<Vec<&InstanceRecord>> = Vec::new();
    let mut rows_in_last = 0;
    for record in present {
        let rows = buckets.saturating_mul(record.gpus.len().max(1) as i64);
        match chunks.last_mut() {
            Some(last) if rows_in_last + rows <= INTERVALS_PER_READ => last.push(record),
            _ => {
                chunks.push(vec![record]);
                rows_in_last = 0;
            }
        }
        rows_in_last += rows;
    }
    for chunk in chunks {
        // An instance given up since the inventory was read fails its chunk's read: the chunk
        // is read again instance by instance, and the ones not found are listed as missing
        // (their GPUs still counted), as when every instance was read alone.
        let reads = match edge_reads(store, scope, &chunk, &ranges).await? {
            Some(read) => vec![(chunk, Some(read))],
            None => {
                let mut alone = Vec::new();
                for record in chunk {
                    let read = edge_reads(store, scope, &[record], &ranges).await?;
                    alone.push((vec![record], read));
                }
                alone
            }
        };
        for (records, read) in reads {
            for record in records {
                match &read {
                    Some((intervals, samples)) => {
                        instance_energy(&mut out, record, &ranges, intervals, samples, join)
                    }
                    None => {
                        out.regions.insert(record.region.clone());
                        out.gpu_models
                            .extend(record.gpus.iter().map(|g| g.model.clone()));
                        out.missing_instances.push(record.instance.to_string());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Adds to `out` the slices of one instance over `ranges`, from the `intervals` and edge
/// `samples` of [`edge_reads`] (which may hold other instances' too).
fn instance_energy(
    out: &mut WorkloadEnergy,
    record: &InstanceRecord,
    ranges: &[(UnixMillis, UnixMillis)],
    intervals: &[IntervalRow],
    samples: &[SampleRow],
    join: Option<&IntensityJoin>,
) {
    let instance = &record.instance;
    out.regions.insert(record.region.clone());
    out.gpu_models
        .extend(record.gpus.iter().map(|g| g.model.clone()));
    let first_slice = out.slices.len();
    let samples: Vec<SampleRow> = samples
        .iter()
        .filter(|s| &s.sample.instance == instance)
        .cloned()
        .collect();
    for &(from, to) in ranges {
        // Group by bucket (rows come by bucket then GPU; grouping does not rely on it).
        let mut by_bucket: BTreeMap<Bucket, Vec<&IntervalRow>> = BTreeMap::new();
        for row in intervals.iter().filter(|r| {
            &r.instance == instance
                && r.bucket.start() >= Bucket::containing(from).start()
                && r.bucket.start() < to
        }) {
            by_bucket.entry(row.bucket).or_default().push(row);
        }
        for (bucket, rows) in by_bucket {
            if bucket.start() >= from && bucket.end() <= to {
                for row in rows {
                    out.covered_gpu_ms += row.covered_ms;
                    out.push(row, row.energy, row.estimated);
                }
                continue;
            }
            let (a, b) = (from.max(bucket.start()), to.min(bucket.end()));
            if b <= a {
                continue;
            }
            let clipped = clip_window(&samples, a, b);
            let row_of: HashMap<&GpuUuid, &IntervalRow> =
                rows.iter().map(|r| (&r.gpu, *r)).collect();
            for (gpu, part) in clipped {
                out.covered_gpu_ms += part.covered_ms;
                match row_of.get(&gpu) {
                    Some(row) => out.push(row, part.energy, part.estimated),
                    // A sample with no interval row: count its energy, with no intensity.
                    None => out.slices.push(FootprintSlice {
                        bucket,
                        energy: part.energy,
                        estimated: part.estimated,
                        intensity: None,
                        intensity_replayed: false,
                        pue: 1.0,
                    }),
                }
            }
        }
    }
    if let Some(join) = join {
        for s in &out.slices[first_slice..] {
            out.average
                .add(join, &record.region, s.bucket, s.energy, s.pue);
        }
    }
}

/// The intervals and the edge samples of some instances.
type EdgeRead = (Vec<IntervalRow>, Vec<SampleRow>);

/// The two reads behind [`workload_energy_in`], side by side: the 5-minute intervals of the
/// `instances` with buckets starting in each range from its first bucket, and the raw samples
/// of every bucket a range cuts (its edges), which are clipped where they have intervals.
/// `None` when one of the instances is not (any more) the tenant's.
async fn edge_reads(
    store: &dyn Store,
    scope: &TenantScope,
    instances: &[&InstanceRecord],
    ranges: &[(UnixMillis, UnixMillis)],
) -> Result<Option<EdgeRead>, ApiError> {
    if ranges.is_empty() {
        return Ok(Some((Vec::new(), Vec::new())));
    }
    let ids: Vec<InstanceId> = instances.iter().map(|r| r.instance.clone()).collect();
    // From each range's first bucket; ranges sharing a bucket are read as one, so no row
    // comes twice.
    let mut bucket_ranges: Vec<(UnixMillis, UnixMillis)> = ranges
        .iter()
        .map(|&(from, to)| (Bucket::containing(from).start(), to))
        .collect();
    bucket_ranges.sort_unstable();
    bucket_ranges.dedup_by(|next, kept| {
        let joined = next.0 < kept.1;
        if joined {
            kept.1 = kept.1.max(next.1);
        }
        joined
    });
    let mut windows = Vec::new();
    for id in &ids {
        for &(from, to) in ranges {
            let mut edges = vec![Bucket::containing(from)];
            if to > from {
                edges.push(Bucket::containing(UnixMillis(to.0 - 1)));
            }
            edges.dedup();
            for bucket in edges {
                let (a, b) = (from.max(bucket.start()), to.min(bucket.end()));
                if (a, b) != (bucket.start(), bucket.end()) && a < b {
                    windows.push((id.clone(), a, b));
                }
            }
        }
    }
    let read = tokio::try_join!(
        store.instances_intervals(scope, &ids, &bucket_ranges),
        store.windows_samples(scope, &windows, MAX_EDGE_SAMPLES),
    );
    let (intervals, samples) = match read {
        Ok(read) => read,
        Err(wattprint_store::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(ApiError::from_store(e, || "instance not found".into())),
    };
    if samples.len() >= MAX_EDGE_SAMPLES as usize {
        return Err(ApiError::Internal(format!(
            "more than {MAX_EDGE_SAMPLES} samples in the edge buckets of a workload"
        )));
    }
    Ok(Some((intervals, samples)))
}

/// Computes a workload's footprint from [`workload_energy`]: emissions summed per slice by
/// [`footprint`]. Embodied M: every GPU of the instances, `catalog.embodied_share(model, to −
/// from)`; unknown models count 0 and are listed.
///
/// The whole hours of the span are read as hourly totals ([`Store::instance_hourly_usage`],
/// rollups) and only the ragged ends as slices: the same sums, a few hundred rows per
/// GPU-month instead of thousands. With a join, figures on average intensity come from the
/// hours too where the instance's region has one average over each hour; otherwise the whole
/// span is read as slices.
pub async fn workload_footprint(
    store: &dyn Store,
    scope: &TenantScope,
    catalog: &HardwareCatalog,
    w: &Workload,
    (from, to): (UnixMillis, UnixMillis),
    join: Option<&IntensityJoin>,
) -> Result<FootprintView, ApiError> {
    if let Some(view) = footprint_by_hours(store, scope, catalog, w, (from, to), join).await? {
        return Ok(view);
    }
    let energy = workload_energy(store, scope, w, (from, to), join).await?;
    footprint_of(&energy, catalog, w, (from, to), join.is_some())
}

/// Instances whose hourly totals a footprint reads at once.
const HOURLY_READS_AT_ONCE: usize = 8;

/// [`workload_footprint`] from hourly totals and the ragged ends; `None` when the span holds
/// no whole hour or, with a join, an hour's average intensity is not one value over it.
async fn footprint_by_hours(
    store: &dyn Store,
    scope: &TenantScope,
    catalog: &HardwareCatalog,
    w: &Workload,
    (from, to): (UnixMillis, UnixMillis),
    join: Option<&IntensityJoin>,
) -> Result<Option<FootprintView>, ApiError> {
    let (h1, h2) = (ceil_to(from, HOUR_MS), floor_to(to, HOUR_MS));
    if h1 >= h2 {
        return Ok(None);
    }
    let inventory = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    // Every instance's hours, a few at a time, and the ragged ends, all at once.
    let held: Vec<_> = w
        .spec
        .instances
        .iter()
        .filter_map(|i| inventory.iter().find(|r| &r.instance == i))
        .collect();
    let hourly = async {
        let mut out = Vec::with_capacity(held.len());
        for chunk in held.chunks(HOURLY_READS_AT_ONCE) {
            let reads: Vec<_> = chunk
                .iter()
                .map(|r| store.instance_hourly_usage(scope, &r.instance, h1, h2))
                .collect();
            out.extend(chunk.iter().zip(futures::future::join_all(reads).await));
        }
        out
    };
    let ends = [(from, h1), (h2, to)];
    let edges = workload_energy_in(store, scope, &inventory, w, &ends, join);
    let (hourly, energy) = tokio::join!(hourly, edges);
    let mut averages = join.map(HourAverages::new);
    let mut by_hour = AverageTotals::default();
    let mut hours = UsageTotals::default();
    let mut missing = BTreeSet::new();
    for (record, rows) in hourly {
        let instance = &record.instance;
        let rows = match rows {
            Ok(rows) => rows,
            Err(wattprint_store::StoreError::NotFound(_)) => {
                missing.insert(instance);
                continue;
            }
            Err(e) => return Err(ApiError::from_store(e, || "instance not found".into())),
        };
        for h in &rows {
            if let Some(averages) = averages.as_mut() {
                // The slices' figures take the instance's region, as `workload_energy` does.
                let Some(a) = averages.get(&record.region, h.hour) else {
                    return Ok(None);
                };
                by_hour.add_hour(a.as_ref(), h.totals.energy, h.totals.facility_energy);
            }
            hours.add(&h.totals);
        }
    }
    let mut energy = energy?;
    for instance in missing {
        if !energy.missing_instances.contains(&instance.to_string()) {
            energy.missing_instances.push(instance.to_string());
        }
    }
    energy.covered_gpu_ms += hours.covered_ms;
    energy.average.merge(&by_hour);
    let mut view = footprint_of(&energy, catalog, w, (from, to), join.is_some())?;
    view.footprint = with_hours(view.footprint, energy.estimated_mj(), &hours);
    Ok(Some(view))
}

/// `fp`, the footprint of slices with `estimated_mj` of their energy estimated, with the
/// usage `hours` added: each sum extended, the shares and SCI recomputed.
fn with_hours(fp: Footprint, estimated_mj: u64, hours: &UsageTotals) -> Footprint {
    let energy = Millijoules(fp.it_energy_mj.saturating_add(hours.energy.0));
    let estimated = estimated_mj.saturating_add(hours.estimated.0);
    let operational = fp.operational_co2e_g + hours.facility_co2e.0;
    let total = operational + fp.embodied_co2e_g;
    let (p, h) = (&fp.provenance, hours.provenance());
    Footprint {
        it_energy_mj: energy.0,
        it_energy_kwh: energy.to_kwh().0,
        facility_energy_kwh: fp.facility_energy_kwh + hours.facility_energy.0,
        operational_it_co2e_g: fp.operational_it_co2e_g + hours.it_co2e.0,
        operational_co2e_g: operational,
        total_co2e_g: total,
        sci_g_per_unit: total / fp.functional_units,
        provenance: FootprintProvenance {
            energy_measured_share: if energy.0 == 0 {
                1.0
            } else {
                1.0 - estimated as f64 / energy.0 as f64
            },
            intervals_actual: p.intervals_actual + h.intervals_actual,
            intervals_forecast: p.intervals_forecast + h.intervals_forecast,
            intervals_fallback: p.intervals_fallback + h.intervals_fallback,
            intervals_missing_intensity: p.intervals_missing_intensity
                + h.intervals_missing_intensity,
            energy_without_intensity_mj: p.energy_without_intensity_mj
                + h.energy_without_intensity_mj,
            intervals_replayed_intensity: p.intervals_replayed_intensity
                + h.intervals_replayed_intensity,
        },
        ..fp
    }
}

/// The footprint of a workload's energy already collected by [`workload_energy`] over
/// `(from, to)`; `with_average` adds the figures on average intensity.
pub fn footprint_of(
    energy: &WorkloadEnergy,
    catalog: &HardwareCatalog,
    w: &Workload,
    (from, to): (UnixMillis, UnixMillis),
    with_average: bool,
) -> Result<FootprintView, ApiError> {
    let mut embodied = 0.0;
    let mut unknown_models = BTreeSet::new();
    for model in &energy.gpu_models {
        match catalog.embodied_share(model, to.since(from)) {
            Some(m) => embodied += m.0,
            None => {
                unknown_models.insert(model.clone());
            }
        }
    }
    let gpus = energy.gpu_models.len();
    let fp = footprint(&energy.slices, GramsCo2e(embodied), w.spec.functional_units)
        .map_err(|e| ApiError::Internal(format!("stored workload {}: {e}", w.id)))?;
    Ok(FootprintView {
        footprint: fp,
        functional_unit: w.spec.functional_unit.clone(),
        coverage: CoverageView {
            expected_gpu_ms: to.since(from).saturating_mul(gpus as i64),
            covered_gpu_ms: energy.covered_gpu_ms,
        },
        embodied: EmbodiedView {
            gpus,
            unknown_models: unknown_models.into_iter().collect(),
        },
        missing_instances: energy.missing_instances.clone(),
        average: with_average
            .then(|| average_emissions_view(&energy.average, embodied, w.spec.functional_units)),
    })
}

fn slice_of(row: &IntervalRow, energy: Millijoules, estimated: Millijoules) -> FootprintSlice {
    FootprintSlice {
        bucket: row.bucket,
        energy,
        estimated,
        intensity: row.intensity.as_ref().map(|j| (j.value, j.kind)),
        intensity_replayed: row.intensity.as_ref().is_some_and(|j| j.replayed),
        pue: row.pue,
    }
}

/// Energy of one GPU inside a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClippedEnergy {
    /// Energy inside the window.
    pub energy: Millijoules,
    /// Part of it from power integration.
    pub estimated: Millijoules,
    /// Milliseconds of the window covered by samples.
    pub covered_ms: i64,
}

/// Per GPU, the energy of `samples` that falls in `[a, b)`, clipped with [`clip_energy`].
pub fn clip_window(
    samples: &[SampleRow],
    a: UnixMillis,
    b: UnixMillis,
) -> BTreeMap<GpuUuid, ClippedEnergy> {
    let mut out: BTreeMap<GpuUuid, ClippedEnergy> = BTreeMap::new();
    for row in samples {
        let s = &row.sample;
        let overlap = b.min(s.end).since(a.max(s.start));
        if overlap <= 0 {
            continue;
        }
        let e = clip_energy(s.start, s.end, s.energy, a, b);
        let acc = out.entry(s.gpu.clone()).or_default();
        acc.energy += e;
        if s.energy_source == EnergySource::PowerIntegration {
            acc.estimated += e;
        }
        acc.covered_ms += overlap;
    }
    out
}
