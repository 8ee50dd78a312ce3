//! What-if views: Flexible Start and Pause and Resume of a workload.

use serde::{Deserialize, Serialize};

/// The intensity a what-if plans on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Actual marginal intensity (hindsight, as in the paper).
    #[default]
    Actual,
    /// Marginal forecasts known at the workload's start (planning), judged on actuals too.
    Forecast,
}

/// One Flexible Start result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlexibleStartView {
    /// Latest start considered, hours after the actual start.
    pub window_hours: f64,
    /// Emissions as run.
    pub actual_co2e_g: f64,
    /// Best start (RFC 3339) and its delay.
    pub best_start: String,
    /// Delay of the best start, minutes.
    pub best_delay_minutes: i64,
    /// Emissions when started at the best start.
    pub best_co2e_g: f64,
    /// Worst start (RFC 3339).
    pub worst_start: String,
    /// Emissions when started at the worst start.
    pub worst_co2e_g: f64,
    /// `actual − best`.
    pub saving_co2e_g: f64,
    /// Saving as a percentage of actual.
    pub saving_pct: f64,
    /// Basis `forecast`: emissions of the best start on the actual intensity; null for basis
    /// `actual` or where actuals do not cover it.
    pub realized_co2e_g: Option<f64>,
    /// Basis `forecast`: emissions as run minus `realized_co2e_g`, both on actuals (what the
    /// plan would really have saved; negative when it would have cost).
    pub realized_saving_co2e_g: Option<f64>,
}

/// A stretch of consecutive slots in which the paused-and-resumed run works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    /// Start (RFC 3339).
    pub from: String,
    /// End, exclusive (RFC 3339).
    pub to: String,
}

/// One Pause and Resume result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PauseResumeView {
    /// The run must end within `factor ×` its duration.
    pub factor: f64,
    /// That deadline (RFC 3339).
    pub deadline: String,
    /// Emissions as run.
    pub actual_co2e_g: f64,
    /// Emissions of the best schedule.
    pub co2e_g: f64,
    /// `actual − co2e_g`.
    pub saving_co2e_g: f64,
    /// Saving as a percentage of actual.
    pub saving_pct: f64,
    /// Time paused before the run ends, minutes.
    pub paused_minutes: i64,
    /// When the run works, in order.
    pub schedule: Vec<RunView>,
    /// Basis `forecast`: emissions of this schedule on the actual intensity; null for basis
    /// `actual` or where actuals do not cover it.
    pub realized_co2e_g: Option<f64>,
    /// Basis `forecast`: emissions as run minus `realized_co2e_g`, both on actuals.
    pub realized_saving_co2e_g: Option<f64>,
}

/// The what-ifs of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhatIfView {
    /// The workload.
    pub workload_id: String,
    /// Grid region of its instances.
    pub region: String,
    /// What intensity the results rest on, in words.
    pub basis: String,
    /// `actual` or `forecast`.
    pub basis_kind: Basis,
    /// Source of the intensity series.
    pub intensity_source: String,
    /// Whether that series is historical data replayed on a shifted clock.
    pub intensity_replayed: bool,
    /// Start of the run's first 5-minute slot (RFC 3339).
    pub first_slot: String,
    /// 5-minute slots the run spans.
    pub profile_slots: usize,
    /// Facility energy of the run (IT × PUE), kWh.
    pub energy_kwh: f64,
    /// End of the last slot read with a value of the basis (RFC 3339): where those values
    /// stop, or, when they go on, the end of the horizon the asked what-ifs needed.
    pub intensity_known_until: String,
    /// Flexible Start, per window asked.
    pub flexible_start: Vec<FlexibleStartView>,
    /// Pause and Resume, per factor asked.
    pub pause_resume: Vec<PauseResumeView>,
    /// What was asked but cannot be computed, and why.
    pub unavailable: Vec<String>,
}

impl Basis {
    /// The name the API uses (`actual`, `forecast`).
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Actual => "actual",
            Basis::Forecast => "forecast",
        }
    }
}
