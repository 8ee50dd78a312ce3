//! The `[intensity]` section of the `wattprint` file as written: the zip and eGRID tables,
//! the regions and their marginal series, cloud site overrides and provider accounts. The
//! types live beside the loaders that read the files they name ([`crate::files`],
//! [`crate::locations`], [`crate::cloud_regions`]); unknown keys are refused.
//! [`RawIntensity::validate`] applies the defaults and bounds of every key (here and nowhere
//! else) and returns [`IntensitySettings`]; the files are read afterwards by
//! [`crate::configured`], each error naming its file.

use crate::cloud_regions::CloudProvider;
use crate::files::MarginalFormat;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wattprint_core::config::{invalid, InvalidConfig};
use wattprint_core::RegionId;

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

/// How far back each poll looks and restates (`[intensity.poll]`, validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollWindows {
    /// Actuals are fetched over this trailing window (providers publish late and revise).
    pub actuals: Duration,
    /// Intervals in this trailing window are restated when better intensity exists.
    pub restate: Duration,
}

impl Default for PollWindows {
    fn default() -> Self {
        Self {
            actuals: Duration::from_secs(DEFAULT_ACTUALS_HOURS * 3600),
            restate: Duration::from_secs(DEFAULT_RESTATE_HOURS * 3600),
        }
    }
}

/// Default `max_staleness_minutes`.
pub const DEFAULT_MAX_STALENESS_MINUTES: i64 = 15;
/// Default `poll.interval_s`.
pub const DEFAULT_POLL_INTERVAL_S: u64 = 300;
/// Default `poll.actuals_hours`.
pub const DEFAULT_ACTUALS_HOURS: u64 = 6;
/// Default `poll.restate_hours`.
pub const DEFAULT_RESTATE_HOURS: u64 = 48;

/// A provider's series polled for a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledRegion {
    /// Wattprint region.
    pub region: RegionId,
    /// Which provider.
    pub provider: ProviderKind,
    /// The provider's name for it.
    pub provider_region: String,
}

/// The intensity providers Wattprint can poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// WattTime API v3: marginal actuals and forecasts.
    WattTime,
    /// Electricity Maps API v3: average actuals.
    ElectricityMaps,
}

/// Polling of intensity providers (`[intensity.poll]`, accounts and per-region names).
#[derive(Debug, Clone, PartialEq)]
pub struct IntensityPolling {
    /// What to poll.
    pub regions: Vec<PolledRegion>,
    /// WattTime account, when configured.
    pub watttime: Option<RawProviderAccountSettings>,
    /// Electricity Maps account, when configured.
    pub electricitymaps: Option<RawProviderAccountSettings>,
    /// Time between polls.
    pub interval: Duration,
    /// Trailing windows fetched and restated.
    pub windows: PollWindows,
}

/// A provider account: base URL and the environment variables holding its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawProviderAccountSettings {
    /// API base URL, when not the public one.
    pub base_url: Option<String>,
    /// Variables holding the credentials (user and password, or the token).
    pub secret_env: Vec<String>,
}

/// A region's marginal series file, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MarginalFile {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: MarginalFormat,
    /// Source label of its points (`region:file` as written).
    pub label: String,
}

/// A validated `[[intensity.regions]]`; its files are not read yet.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSettings {
    /// Region id.
    pub id: RegionId,
    /// Marginal series, when configured.
    pub marginal: Option<MarginalFile>,
    /// Replay the historical series on a shifted clock.
    pub replay: bool,
    /// eGRID subregion of the average fallback.
    pub egrid_subregion: Option<String>,
    /// PUE (1.0..=3.0), when configured.
    pub pue: Option<f64>,
    /// Utilities whose zip codes map to this region.
    pub utilities: Vec<String>,
}

/// A validated `[[intensity.sites]]` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSettings {
    /// `provider:region`, as instances name it.
    pub cloud_region: String,
    /// The datacenter's zip code (checked against the zip table when loaded).
    pub zip_code: String,
}

/// Validated `[intensity]`: every key bounded and defaulted, every path resolved; no file is
/// read (see [`crate::configured`], which loads them, each error naming its file).
#[derive(Debug, Clone, PartialEq)]
pub struct IntensitySettings {
    /// EPA eGRID zip table.
    pub zip_table: PathBuf,
    /// EPA eGRID subregion output rates.
    pub egrid_rates: PathBuf,
    /// How old a marginal point may be before falling back, ms.
    pub max_staleness_ms: i64,
    /// Regions, in file order, ids unique.
    pub regions: Vec<RegionSettings>,
    /// Cloud site overrides, cloud regions unique.
    pub sites: Vec<SiteSettings>,
    /// What is polled, how often.
    pub polling: IntensityPolling,
}

impl RawIntensity {
    /// Validates `[intensity]`; `data` resolves the paths it names.
    pub fn validate(
        &self,
        data: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<IntensitySettings, InvalidConfig> {
        let staleness = self
            .max_staleness_minutes
            .unwrap_or(DEFAULT_MAX_STALENESS_MINUTES);
        if !(0..=24 * 60).contains(&staleness) {
            return Err(invalid(format!(
                "intensity.max_staleness_minutes = {staleness} must be 0..=1440"
            )));
        }
        let mut regions: Vec<RegionSettings> = Vec::new();
        for r in &self.regions {
            regions.push(r.validate(&regions, data)?);
        }
        let polling = self.polling()?;
        let mut sites: Vec<SiteSettings> = Vec::new();
        for o in &self.sites {
            split_cloud_region(&o.cloud_region)?;
            if sites.iter().any(|s| s.cloud_region == o.cloud_region) {
                return Err(invalid(format!(
                    "intensity.sites: {} is placed twice",
                    o.cloud_region
                )));
            }
            sites.push(SiteSettings {
                cloud_region: o.cloud_region.clone(),
                zip_code: o.zip_code.clone(),
            });
        }
        Ok(IntensitySettings {
            zip_table: data(&self.zip_table),
            egrid_rates: data(&self.egrid_rates),
            max_staleness_ms: staleness * 60_000,
            regions,
            sites,
            polling,
        })
    }

    /// Validates `[intensity.poll]`, the provider accounts and the regions' provider names.
    fn polling(&self) -> Result<IntensityPolling, InvalidConfig> {
        let watttime = account(
            &self.watttime,
            "watttime",
            &["WATTTIME_USERNAME", "WATTTIME_PASSWORD"],
        )?;
        let electricitymaps = account(
            &self.electricitymaps,
            "electricitymaps",
            &["ELECTRICITYMAPS_TOKEN"],
        )?;
        let mut regions = Vec::new();
        for r in &self.regions {
            for (name, kind, section, has_account) in [
                (
                    &r.watttime_region,
                    ProviderKind::WattTime,
                    "watttime",
                    watttime.is_some(),
                ),
                (
                    &r.electricitymaps_zone,
                    ProviderKind::ElectricityMaps,
                    "electricitymaps",
                    electricitymaps.is_some(),
                ),
            ] {
                let Some(name) = name else { continue };
                if !has_account {
                    return Err(invalid(format!(
                        "intensity region {}: polling {section} needs an [intensity.{section}] section",
                        r.id
                    )));
                }
                if r.replay {
                    return Err(invalid(format!(
                        "intensity region {}: a replayed region is not polled (its series is historical)",
                        r.id
                    )));
                }
                regions.push(PolledRegion {
                    region: RegionId::new(r.id.clone()),
                    provider: kind,
                    provider_region: name.clone(),
                });
            }
        }
        let (interval, windows) = self
            .poll
            .as_ref()
            .map_or_else(|| RawPoll::none().validate(), RawPoll::validate)?;
        Ok(IntensityPolling {
            regions,
            watttime,
            electricitymaps,
            interval,
            windows,
        })
    }
}

/// Validates a provider account section; `defaults` name the secret variables.
fn account(
    raw: &Option<RawProviderAccount>,
    section: &str,
    defaults: &[&str],
) -> Result<Option<RawProviderAccountSettings>, InvalidConfig> {
    let Some(a) = raw else { return Ok(None) };
    if let Some(url) = &a.base_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(format!(
                "intensity.{section}.base_url = {url:?} must be an http(s) URL"
            )));
        }
    }
    let named = match section {
        "watttime" => vec![a.username_env.clone(), a.password_env.clone()],
        _ => vec![a.token_env.clone()],
    };
    Ok(Some(RawProviderAccountSettings {
        base_url: a.base_url.clone(),
        secret_env: named
            .into_iter()
            .zip(defaults)
            .map(|(n, d)| n.unwrap_or_else(|| (*d).to_owned()))
            .collect(),
    }))
}

impl RawPoll {
    /// An empty `[intensity.poll]`: every default.
    fn none() -> Self {
        RawPoll {
            interval_s: None,
            actuals_hours: None,
            restate_hours: None,
        }
    }

    /// The poll interval and windows.
    fn validate(&self) -> Result<(Duration, PollWindows), InvalidConfig> {
        let interval_s = self.interval_s.unwrap_or(DEFAULT_POLL_INTERVAL_S);
        if !(10..=3600).contains(&interval_s) {
            return Err(invalid(format!(
                "intensity.poll.interval_s = {interval_s} must be 10..=3600"
            )));
        }
        let hours = |v: Option<u64>, default: u64, key: &str| {
            let h = v.unwrap_or(default);
            if (1..=24 * 31).contains(&h) {
                Ok(Duration::from_secs(h * 3600))
            } else {
                Err(invalid(format!(
                    "intensity.poll.{key} = {h} must be 1..=744"
                )))
            }
        };
        Ok((
            Duration::from_secs(interval_s),
            PollWindows {
                actuals: hours(self.actuals_hours, DEFAULT_ACTUALS_HOURS, "actuals_hours")?,
                restate: hours(self.restate_hours, DEFAULT_RESTATE_HOURS, "restate_hours")?,
            },
        ))
    }
}

impl RawRegion {
    /// Validates one region against those before it.
    fn validate(
        &self,
        before: &[RegionSettings],
        data: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<RegionSettings, InvalidConfig> {
        let id = RegionId::new(self.id.clone());
        if before.iter().any(|r| r.id == id) {
            return Err(invalid(format!(
                "intensity region {} is defined twice",
                self.id
            )));
        }
        let marginal = match (&self.marginal_file, self.format) {
            (Some(f), Some(format)) => Some(MarginalFile {
                path: data(f),
                format,
                label: format!("{}:{}", self.id, f.display()),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(format!(
                    "intensity region {}: marginal_file and format go together",
                    self.id
                )))
            }
        };
        if let Some(p) = self.pue {
            if !p.is_finite() || !(1.0..=3.0).contains(&p) {
                return Err(invalid(format!(
                    "intensity region {}: pue = {p} must be within 1.0..=3.0",
                    self.id
                )));
            }
        }
        Ok(RegionSettings {
            id,
            marginal,
            replay: self.replay,
            egrid_subregion: self.egrid_subregion.clone(),
            pue: self.pue,
            utilities: self.utilities.clone(),
        })
    }
}

/// `aws:us-west-1` → (AWS, `us-west-1`).
pub fn split_cloud_region(s: &str) -> Result<(CloudProvider, &str), InvalidConfig> {
    let (provider, region) = s.split_once(':').ok_or_else(|| {
        invalid(format!(
            "cloud_region {s:?} must be provider:region, e.g. aws:us-west-1"
        ))
    })?;
    let provider = provider
        .parse::<CloudProvider>()
        .map_err(|e| invalid(format!("cloud_region {s:?}: {e}")))?;
    Ok((provider, region))
}
