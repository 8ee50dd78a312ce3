//! Restatement views: intervals whose intensity was replaced by better data.

use serde::{Deserialize, Serialize};

/// An intensity value an interval was joined with, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntensityView {
    /// Grams CO2e per kWh.
    pub value_g_per_kwh: f64,
    /// `actual`, `forecast` or `fallback_average`. A nearest actual (the actual of another
    /// bucket, used while the bucket's own was not published) is `actual` with `point_at` other
    /// than the bucket's start.
    pub kind: String,
    /// Data source (e.g. `watttime:CAISO_NORTH`, `egrid2023:CAMX`).
    pub source: String,
    /// Time of the point used (RFC 3339): a forecast's issue time, an actual's period start.
    pub point_at: String,
    /// Whether it came from a historical series replayed on a shifted clock.
    pub replayed: bool,
}

/// One restatement of one GPU-interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestatementView {
    /// Instance.
    pub instance: String,
    /// GPU.
    pub gpu: String,
    /// Start of the interval's 5-minute bucket (RFC 3339).
    pub bucket_start: String,
    /// Grid region.
    pub region: String,
    /// The interval's IT energy, exact.
    pub energy_mj: u64,
    /// Its PUE.
    pub pue: f64,
    /// Intensity before; null when the interval had none.
    pub previous: Option<IntensityView>,
    /// Intensity after.
    pub current: IntensityView,
    /// Why it changed, in words.
    pub reason: String,
    /// When it was restated (RFC 3339).
    pub restated_at: String,
    /// Change of IT emissions: E × (I_current − I_previous), I_previous = 0 when null.
    pub it_co2e_delta_g: f64,
    /// Change of facility emissions: the IT change × PUE.
    pub facility_co2e_delta_g: f64,
}

/// Sums over the restatements listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestatementTotals {
    /// Distinct GPU-intervals restated (one restated twice, e.g. average → forecast → actual,
    /// counts once; the list holds both steps).
    pub intervals: u64,
    /// Σ `it_co2e_delta_g`: how much the IT emissions of these intervals moved.
    pub it_co2e_delta_g: f64,
    /// Σ `facility_co2e_delta_g`: how much their facility emissions moved.
    pub facility_co2e_delta_g: f64,
}

/// Body of `GET /v1/restatements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestatementsView {
    /// Start of the buckets covered (RFC 3339, rounded down to 5 minutes).
    pub from: String,
    /// End of the buckets covered (exclusive, rounded up to 5 minutes).
    pub to: String,
    /// By bucket, instance, GPU, then in the order they happened.
    pub restatements: Vec<RestatementView>,
    /// Their sums.
    pub totals: RestatementTotals,
}
