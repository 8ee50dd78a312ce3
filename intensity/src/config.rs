//! The `[intensity]` section of the `wattprint` file as written: the zip and eGRID tables,
//! the regions and their marginal series, cloud site overrides and provider accounts. The
//! types live beside the loaders that read the files they name ([`crate::files`],
//! [`crate::locations`], [`crate::cloud_regions`]); unknown keys are refused.

use crate::files::MarginalFormat;
use serde::Deserialize;
use std::path::PathBuf;

/// `[intensity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntensity {
    /// EPA eGRID zip → subregion/utility table.
    pub zip_table: PathBuf,
    /// EPA eGRID subregion output rates (average fallback).
    pub egrid_rates: PathBuf,
    /// How old a marginal point may be before falling back, minutes (default 15).
    pub max_staleness_minutes: Option<i64>,
    /// Regions with marginal series.
    pub regions: Vec<RawRegion>,
    /// Operator overrides of where a cloud region's datacenter is.
    #[serde(default)]
    pub sites: Vec<RawSite>,
    /// WattTime API account (for regions with `watttime_region`).
    pub watttime: Option<RawProviderAccount>,
    /// Electricity Maps API token (for regions with `electricitymaps_zone`).
    pub electricitymaps: Option<RawProviderAccount>,
    /// Polling schedule.
    pub poll: Option<RawPoll>,
}

/// `[intensity.watttime]` / `[intensity.electricitymaps]`: where the API is and which
/// environment variables hold the credentials (never the secrets themselves in the file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderAccount {
    /// API base URL (default: the provider's public API).
    pub base_url: Option<String>,
    /// WattTime: variable holding the user name (default `WATTTIME_USERNAME`).
    pub username_env: Option<String>,
    /// WattTime: variable holding the password (default `WATTTIME_PASSWORD`).
    pub password_env: Option<String>,
    /// Electricity Maps: variable holding the token (default `ELECTRICITYMAPS_TOKEN`).
    pub token_env: Option<String>,
}

/// `[intensity.poll]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// Seconds between polls (default 300).
    pub interval_s: Option<u64>,
    /// Trailing hours of actuals fetched each poll (default 6).
    pub actuals_hours: Option<u64>,
    /// Trailing hours of intervals restated each poll (default 48).
    pub restate_hours: Option<u64>,
}

/// `[[intensity.sites]]`: a cloud region placed at a zip code, overriding the shipped table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// `provider:region`, as instances name it.
    pub cloud_region: String,
    /// The datacenter's zip code.
    pub zip_code: String,
}

/// `[[intensity.regions]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// Region id.
    pub id: String,
    /// Marginal series file.
    pub marginal_file: Option<PathBuf>,
    /// Its format.
    pub format: Option<MarginalFormat>,
    /// Replay the historical series on a shifted clock.
    #[serde(default)]
    pub replay: bool,
    /// eGRID subregion whose average rate is the flagged fallback.
    pub egrid_subregion: Option<String>,
    /// Facility overhead (PUE), ≥ 1.
    pub pue: Option<f64>,
    /// Utilities (as named in the zip table) whose zip codes map to this region.
    #[serde(default)]
    pub utilities: Vec<String>,
    /// WattTime region polled for marginal actuals and forecasts (needs `[intensity.watttime]`).
    pub watttime_region: Option<String>,
    /// Electricity Maps zone polled for average intensity (needs `[intensity.electricitymaps]`).
    pub electricitymaps_zone: Option<String>,
}
