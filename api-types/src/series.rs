//! Series views: an instance's raw samples or aggregated steps.

use serde::{Deserialize, Deserializer, Serialize};

use crate::time::Step;

/// Counts of GPU-intervals by intensity provenance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntensityKinds {
    /// Joined with an actual marginal value.
    pub actual: u64,
    /// Joined with a forecast.
    pub forecast: u64,
    /// Joined with the region's average (flagged fallback).
    pub fallback_average: u64,
    /// No intensity at all (their energy is in `co2e_missing_energy_mj`).
    pub missing: u64,
    /// Of those with an intensity, how many used a historical series replayed on a shifted
    /// clock (the embedded demo): real data, but not the grid's at that time.
    pub replayed: u64,
}

/// One step of an aggregated series, all GPUs of the instance summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AggregatePoint {
    /// Start of the step (RFC 3339, UTC, aligned to the step).
    pub start: String,
    /// End of the step (exclusive).
    pub end: String,
    /// Energy of all GPUs in the step, exact.
    pub energy_mj: u64,
    /// The same in kWh.
    pub energy_kwh: f64,
    /// Part of `energy_mj` estimated by power integration rather than read from the counter.
    pub estimated_energy_mj: u64,
    /// Mean power of the instance while measured: Σ over GPUs of (GPU energy ÷ time that GPU
    /// was covered by samples in the step). Gaps are not averaged in as zero (see
    /// `coverage`); null when nothing was measured.
    pub power_mean_w: Option<f64>,
    /// Highest single-GPU power reading in the step; null when nothing was measured.
    pub power_max_w: Option<f64>,
    /// Covered GPU-time ÷ (step length × GPUs of the instance), 0 to 1.
    pub coverage: f64,
    /// Energy-weighted mean intensity of the GPU-intervals that have one; null if none.
    pub intensity_g_per_kwh: Option<f64>,
    /// How many GPU-intervals used which kind of intensity.
    pub intensity_kinds: IntensityKinds,
    /// IT emissions: Σ over 5-minute GPU-intervals of E_i × I_i (never E × mean I).
    pub co2e_g: f64,
    /// Facility emissions: Σ E_i × PUE_i × I_i.
    pub facility_co2e_g: f64,
    /// Energy of intervals without intensity, whose emissions are not counted.
    pub co2e_missing_energy_mj: u64,
    /// Energy-weighted mean of the region's **average** intensity (published average, else
    /// the static annual rate; see `average`); null when none applies or the server has no
    /// intensity sources.
    pub average_intensity_g_per_kwh: Option<f64>,
    /// IT emissions on average intensity: Σ E_i × A_i; null without intensity sources.
    pub average_co2e_g: Option<f64>,
    /// Facility emissions on average intensity: Σ E_i × PUE_i × A_i; null likewise.
    pub average_facility_co2e_g: Option<f64>,
}

/// One stored sample of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RawPoint {
    /// Previous counter reading (RFC 3339).
    pub start: String,
    /// This counter reading.
    pub end: String,
    /// GPU.
    pub gpu_uuid: String,
    /// Energy over the span, exact.
    pub energy_mj: u64,
    /// Power at `end`, watts.
    pub power_w: f64,
    /// Highest power read over the span (every 100 ms by default), watts.
    pub power_max_w: f64,
    /// GPU utilisation, mean of the span's reads, percent.
    pub util_gpu_pct: u32,
    /// Temperature, highest of the span's reads, °C.
    pub temp_c: u32,
    /// First span of a counter chain (the time before `start` is a gap).
    pub chain_start: bool,
    /// `counter`, `counter_bridged` (a gap the agent bridged with the counter delta) or
    /// `power_integration`.
    pub energy_source: String,
    /// `exclusive`, `apportioned_mig`, `apportioned_vgpu` or `guest_reported` (the instance's
    /// own agent reported it).
    pub attribution: String,
}

/// Points of a series: raw samples or aggregated steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeriesPoints {
    /// `step=raw`.
    Raw(Vec<RawPoint>),
    /// `step=5m|1h|1d`.
    Aggregated(Vec<AggregatePoint>),
}

/// A series response.
// Deserialized by hand: `points` is read by `step`, so an empty raw series stays a raw one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Series {
    /// Instance.
    pub instance_id: String,
    /// `raw`, `5m`, `1h` or `1d`.
    pub step: Step,
    /// Start of the range the points cover: as requested for raw, rounded down to the step
    /// otherwise.
    pub from: String,
    /// End of the range (exclusive): as requested for raw, rounded up to the step otherwise.
    pub to: String,
    /// Points in time order (aggregated: one per step, gaps included with zero coverage).
    #[schema(schema_with = crate::schema::series_points_schema)]
    pub points: SeriesPoints,
}

impl SeriesPoints {
    /// Number of points.
    pub fn len(&self) -> usize {
        match self {
            SeriesPoints::Raw(p) => p.len(),
            SeriesPoints::Aggregated(p) => p.len(),
        }
    }

    /// No points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Σ energy of the points, exact.
    pub fn energy_mj(&self) -> u64 {
        match self {
            SeriesPoints::Raw(p) => p.iter().map(|x| x.energy_mj).sum(),
            SeriesPoints::Aggregated(p) => p.iter().map(|x| x.energy_mj).sum(),
        }
    }
}

impl<'de> Deserialize<'de> for Series {
    /// Reads `points` by `step`, so an empty raw series is still a raw one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            instance_id: String,
            step: Step,
            from: String,
            to: String,
            points: serde_json::Value,
        }
        let w = Wire::deserialize(d)?;
        let points = match w.step {
            Step::Raw => SeriesPoints::Raw(
                serde_json::from_value(w.points).map_err(serde::de::Error::custom)?,
            ),
            _ => SeriesPoints::Aggregated(
                serde_json::from_value(w.points).map_err(serde::de::Error::custom)?,
            ),
        };
        Ok(Series {
            instance_id: w.instance_id,
            step: w.step,
            from: w.from,
            to: w.to,
            points,
        })
    }
}
