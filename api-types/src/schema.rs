//! Schemas the derives cannot produce: mirrors of core's types (core has no utoipa) and the
//! `anyOf` of a series' points.

use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::{AggregatePoint, RawPoint};

/// Energy, emissions and SCI of a workload: the fields of [`wattprint_core::sci::Footprint`],
/// flattened into a workload's `footprint`.
#[derive(ToSchema)]
#[schema(as = Footprint)]
pub struct FootprintSchema {
    /// IT (GPU) energy, exact.
    pub it_energy_mj: u64,
    /// IT energy.
    pub it_energy_kwh: f64,
    /// Facility energy: Σ IT energy × PUE.
    pub facility_energy_kwh: f64,
    /// Σ E_i × I_i over 5-minute GPU-intervals, on IT energy.
    pub operational_it_co2e_g: f64,
    /// Σ E_i × PUE_i × I_i: the operational emissions SCI uses.
    pub operational_co2e_g: f64,
    /// Embodied share M of the workload's GPUs.
    pub embodied_co2e_g: f64,
    /// Operational + embodied.
    pub total_co2e_g: f64,
    /// Number of functional units R.
    pub functional_units: f64,
    /// (E·I + M) / R, gCO2e per functional unit.
    pub sci_g_per_unit: f64,
    /// Where the numbers came from.
    pub provenance: FootprintProvenanceSchema,
}

/// Where a footprint's or summary's numbers came from: the fields of
/// [`wattprint_core::sci::FootprintProvenance`].
#[derive(ToSchema)]
#[schema(as = FootprintProvenance)]
pub struct FootprintProvenanceSchema {
    /// Share of energy read from the counter (1.0 = all measured), 0 to 1.
    pub energy_measured_share: f64,
    /// GPU-intervals joined with an actual marginal value.
    pub intervals_actual: u64,
    /// GPU-intervals joined with a forecast.
    pub intervals_forecast: u64,
    /// GPU-intervals joined with the region's average (flagged fallback).
    pub intervals_fallback: u64,
    /// GPU-intervals with no intensity at all: their energy has no emissions counted.
    pub intervals_missing_intensity: u64,
    /// Energy in those intervals.
    pub energy_without_intensity_mj: u64,
    /// GPU-intervals whose intensity was a historical series replayed on a shifted clock: real
    /// data, but not the grid's at the time the energy was used.
    pub intervals_replayed_intensity: u64,
}

/// `points` of a series: raw samples (`step=raw`) or aggregated steps (`5m`, `1h`, `1d`).
/// `anyOf`, not `oneOf`: an empty list is both.
pub fn series_points_schema() -> impl Into<RefOr<Schema>> {
    AnyOfBuilder::new()
        .item(ArrayBuilder::new().items(RawPoint::schema_ref()))
        .item(ArrayBuilder::new().items(AggregatePoint::schema_ref()))
        .description(Some(
            "`step=raw`: the stored samples (RawPoint); otherwise one AggregatePoint per step.",
        ))
}

/// A `$ref` to a component schema.
trait SchemaRef {
    /// `#/components/schemas/<name>`.
    fn schema_ref() -> RefOr<Schema>;
}

impl<T: ToSchema> SchemaRef for T {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
    }
}
