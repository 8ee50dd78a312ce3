//! Emissions on the grid's **average** intensity, beside the marginal figures.
//!
//! Marginal intensity (what one more kWh emits) is what Wattprint joins to every interval and
//! what carbon-aware decisions use; inventories (GHG Protocol scope 2, location-based) use the
//! average. Both are reported. The average of a 5-minute GPU-interval is the region's
//! published average covering the bucket (Electricity Maps, hourly), else its static annual
//! rate (eGRID), as [`IntensityJoin::average`] gives it at read time — so a published average
//! that arrives later shows up without restating anything. Emissions are Σ E_i × A_i per
//! interval (× PUE_i for the facility figure), never E × mean A.

use std::collections::{BTreeSet, HashMap};

pub use wattprint_api_types::AverageEmissionsView;
use wattprint_core::intensity::{IntensityJoin, JoinedIntensity};
use wattprint_core::{Bucket, KilowattHours, Millijoules, RegionId, UnixMillis, BUCKET_MS};
use wattprint_store::{GpuHourUsage, HOUR_MS};

/// Running totals of emissions on average intensity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AverageTotals {
    /// Σ E_i × A_i, grams.
    pub it_co2e_g: f64,
    /// Σ E_i × PUE_i × A_i, grams.
    pub facility_co2e_g: f64,
    /// Σ E_i × A_i in mJ·g/kWh (for the energy-weighted mean intensity).
    weighted: f64,
    /// Energy that had an average intensity.
    pub energy_with_intensity: u64,
    /// Energy of intervals whose region has no average at all.
    pub energy_without_intensity: u64,
    /// Sources of the averages used (e.g. `egrid2023:CAMX`).
    pub sources: BTreeSet<String>,
}

impl AverageTotals {
    /// Adds `energy` used in `bucket` of `region` with facility overhead `pue`.
    pub fn add(
        &mut self,
        join: &IntensityJoin,
        region: &RegionId,
        bucket: Bucket,
        energy: Millijoules,
        pue: f64,
    ) {
        match join.average(region, bucket) {
            Some(a) => {
                let g = a.value.emissions(energy).0;
                self.it_co2e_g += g;
                self.facility_co2e_g += g * pue;
                self.weighted += energy.0 as f64 * a.value.0;
                self.energy_with_intensity = self.energy_with_intensity.saturating_add(energy.0);
                if !self.sources.contains(&a.source) {
                    self.sources.insert(a.source);
                }
            }
            None => {
                self.energy_without_intensity =
                    self.energy_without_intensity.saturating_add(energy.0)
            }
        }
    }

    /// Adds a whole hour of one region: `energy` (facility energy `facility`) at `average`,
    /// the region's one value over the hour ([`hour_averages`]); the same sums as adding its
    /// intervals one by one, up to float rounding.
    pub fn add_hour(
        &mut self,
        average: Option<&JoinedIntensity>,
        energy: Millijoules,
        facility: KilowattHours,
    ) {
        match average {
            Some(a) => {
                self.it_co2e_g += a.value.emissions(energy).0;
                self.facility_co2e_g += facility.0 * a.value.0;
                self.weighted += energy.0 as f64 * a.value.0;
                self.energy_with_intensity = self.energy_with_intensity.saturating_add(energy.0);
                if !self.sources.contains(&a.source) {
                    self.sources.insert(a.source.clone());
                }
            }
            None => {
                self.energy_without_intensity =
                    self.energy_without_intensity.saturating_add(energy.0)
            }
        }
    }

    /// Adds `other`'s totals into these.
    pub fn merge(&mut self, other: &AverageTotals) {
        self.it_co2e_g += other.it_co2e_g;
        self.facility_co2e_g += other.facility_co2e_g;
        self.weighted += other.weighted;
        self.energy_with_intensity = self
            .energy_with_intensity
            .saturating_add(other.energy_with_intensity);
        self.energy_without_intensity = self
            .energy_without_intensity
            .saturating_add(other.energy_without_intensity);
        self.sources.extend(other.sources.iter().cloned());
    }

    /// Energy-weighted mean average intensity, g/kWh; `None` without energy that had one.
    pub fn mean_intensity(&self) -> Option<f64> {
        (self.energy_with_intensity > 0).then(|| self.weighted / self.energy_with_intensity as f64)
    }
}

/// Per row of `hours`, the average intensity its whole hour counts at ([`HourAverages`], in
/// the row's region). `None` overall when a row's region is unknown or an average changes
/// inside an hour: those figures then need the 5-minute intervals.
pub fn hour_averages(
    join: &IntensityJoin,
    hours: &[GpuHourUsage],
) -> Option<Vec<Option<JoinedIntensity>>> {
    let mut averages = HourAverages::new(join);
    hours
        .iter()
        .map(|h| averages.get(h.region.as_ref()?, h.hour))
        .collect()
}

/// A region's average intensity per whole hour, each (region, hour) looked up once.
pub struct HourAverages<'j> {
    join: &'j IntensityJoin,
    seen: HashMap<(RegionId, UnixMillis), Option<Option<JoinedIntensity>>>,
}

impl<'j> HourAverages<'j> {
    /// Lookups in `join`.
    pub fn new(join: &'j IntensityJoin) -> Self {
        Self {
            join,
            seen: HashMap::new(),
        }
    }

    /// The average every 5-minute bucket of the hour starting at `hour` has in `region`:
    /// `Some(None)` when none has one, `None` when it is not one value (and source) over the
    /// whole hour.
    pub fn get(&mut self, region: &RegionId, hour: UnixMillis) -> Option<Option<JoinedIntensity>> {
        if let Some(a) = self.seen.get(&(region.clone(), hour)) {
            return a.clone();
        }
        let a = uniform_average(self.join, region, hour);
        self.seen.insert((region.clone(), hour), a.clone());
        a
    }
}

/// The region's average over the buckets of the hour starting at `hour` when they all have
/// the same (value and source, or none); `None` when it changes inside the hour.
fn uniform_average(
    join: &IntensityJoin,
    region: &RegionId,
    hour: UnixMillis,
) -> Option<Option<JoinedIntensity>> {
    let at = |i: i64| {
        join.average(
            region,
            Bucket::containing(UnixMillis(hour.0 + i * BUCKET_MS)),
        )
    };
    let first = at(0);
    let same = |a: &Option<JoinedIntensity>| match (a, &first) {
        (None, None) => true,
        (Some(a), Some(f)) => a.value.0.to_bits() == f.value.0.to_bits() && a.source == f.source,
        _ => false,
    };
    (1..HOUR_MS / BUCKET_MS)
        .all(|i| same(&at(i)))
        .then_some(first)
}

/// The view of `totals` with the embodied share and R of the workload.
pub fn average_emissions_view(
    totals: &AverageTotals,
    embodied_g: f64,
    functional_units: f64,
) -> AverageEmissionsView {
    let total = totals.facility_co2e_g + embodied_g;
    AverageEmissionsView {
        operational_it_co2e_g: totals.it_co2e_g,
        operational_co2e_g: totals.facility_co2e_g,
        total_co2e_g: total,
        sci_g_per_unit: total / functional_units,
        intensity_g_per_kwh: totals.mean_intensity(),
        energy_without_intensity_mj: totals.energy_without_intensity,
        intensity_sources: totals.sources.iter().cloned().collect(),
    }
}
