//! Schemas the derives cannot produce: mirrors of core's types (core has no utoipa) and the
//! `anyOf` of a series' points.

use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
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

/// What the server accepts in ids and text: no control characters (Unicode `Cc`, as Rust's
/// `char::is_control`: U+0000–U+001F and U+007F–U+009F).
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// Free text (labels, functional units): no control characters and not blank.
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";
/// A workload label key: 1 to 63 of letters, digits, `.`, `_`, `/`, `-`, starting with a letter
/// or digit.
pub const LABEL_KEY_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$";
/// Longest id the server reads (characters).
pub const MAX_ID_CHARS: usize = 256;
/// Longest free text (characters).
pub const MAX_TEXT_CHARS: usize = 200;
/// Most labels on one workload.
pub const MAX_LABELS: usize = 64;

fn string_schema(min: usize, max: usize, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
}

/// A statement's month (`YYYY-MM`, 1970 to 9999) with an optional format suffix (`.json`,
/// `.csv`, `.pdf`): what the query API's `Period` parses.
pub const STATEMENT_PERIOD_PATTERN: &str =
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])(\.(json|csv|pdf))?$";

/// The `{period}` of `GET /v1/statements/{period}`.
pub fn statement_period_schema() -> Schema {
    string_schema(7, 12, STATEMENT_PERIOD_PATTERN).into()
}

/// An instance or workload id: 1 to 256 characters, no control characters.
pub fn id_schema() -> Schema {
    string_schema(1, MAX_ID_CHARS, NO_CONTROL_PATTERN).into()
}

/// Free text: 1 to 200 characters, not blank, no control characters.
pub fn text_schema() -> Schema {
    string_schema(1, MAX_TEXT_CHARS, TEXT_PATTERN).into()
}

/// A workload's `instance_ids`: 1 to 100 ids.
pub fn instance_ids_schema() -> Schema {
    ArrayBuilder::new()
        .items(RefOr::T(id_schema()))
        .min_items(Some(1))
        .max_items(Some(100))
        .into()
}

/// A workload's labels: at most 64, keys as [`LABEL_KEY_PATTERN`], values up to 200
/// characters.
pub fn labels_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(LABEL_KEY_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_TEXT_CHARS)),
        ))
        .max_properties(Some(MAX_LABELS))
        .into()
}

fn bounded_number(min: f64, exclusive_min: bool, max: f64) -> Schema {
    let item = ObjectBuilder::new()
        .schema_type(Type::Number)
        .maximum(Some(max));
    if exclusive_min {
        item.exclusive_minimum(Some(min)).into()
    } else {
        item.minimum(Some(min)).into()
    }
}

/// One of a what-if's `window_hours`: more than 0 and at most 720 hours, in whole 5-minute
/// steps (the step rule is in the description: JSON Schema's `multipleOf` cannot state
/// twelfths exactly).
pub fn window_hours_item() -> Schema {
    bounded_number(0.0, true, 720.0)
}

/// One of a what-if's Pause and Resume `factor`s: from 1 to 4.
pub fn factor_item() -> Schema {
    bounded_number(1.0, false, 4.0)
}
