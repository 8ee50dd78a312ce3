//! The files a validated `[intensity]` ([`IntensitySettings`]) names, loaded: the zip table,
//! the eGRID rates, each region's marginal series, and the cloud-region table when instances
//! name cloud regions. Runs after every section is validated; each error names its file.

use crate::cloud_regions::CloudRegionDirectory;
use crate::config::{split_cloud_region, IntensitySettings};
use crate::files::{load_egrid_rates, load_marginal};
use crate::locations::ZipDirectory;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use thiserror::Error;
use wattprint_core::config::{invalid, InvalidConfig};
use wattprint_core::intensity::{IntensityJoin, RegionIntensity};
use wattprint_core::RegionId;

/// Loading what `[intensity]` names failed.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A value does not match the files (an unknown subregion, a zip code not in the table).
    #[error("{0}")]
    Invalid(#[from] InvalidConfig),
    /// A file failed to load; the message names it.
    #[error("{0}")]
    Data(String),
}

fn data(e: impl ToString) -> LoadError {
    LoadError::Data(e.to_string())
}

/// The `[intensity]` tables and series, loaded: the zip table, the as-of join, PUE per
/// region, the region of each utility and the cloud site overrides.
#[derive(Debug)]
pub struct LoadedIntensity {
    /// Zip table.
    pub zips: ZipDirectory,
    /// The as-of join over every region.
    pub join: IntensityJoin,
    /// PUE per region that sets one.
    pub pue: HashMap<RegionId, f64>,
    /// Region of each utility named by a region.
    pub utility_regions: BTreeMap<String, RegionId>,
    /// `[[intensity.sites]]`: cloud region → zip code.
    pub sites: HashMap<String, String>,
}

impl IntensitySettings {
    /// Loads the files these settings name and checks the values that refer into them.
    pub fn load(&self) -> Result<LoadedIntensity, LoadError> {
        let zips = ZipDirectory::load(&self.zip_table).map_err(data)?;
        let rates = load_egrid_rates(&self.egrid_rates).map_err(data)?;
        let mut join = IntensityJoin::new(self.max_staleness_ms);
        let mut pue = HashMap::new();
        let mut utility_regions = BTreeMap::new();
        for r in &self.regions {
            let marginal = match &r.marginal {
                Some(m) => Some(load_marginal(&m.path, m.format, &m.label).map_err(data)?),
                None => None,
            };
            let average = match &r.egrid_subregion {
                Some(s) => Some((
                    *rates.get(s).ok_or_else(|| {
                        invalid(format!(
                            "intensity region {}: unknown eGRID subregion {s}",
                            r.id
                        ))
                    })?,
                    format!("egrid2023:{s}:average"),
                )),
                None => None,
            };
            if let Some(p) = r.pue {
                pue.insert(r.id.clone(), p);
            }
            for u in &r.utilities {
                utility_regions.insert(u.clone(), r.id.clone());
            }
            join.insert(
                r.id.clone(),
                RegionIntensity {
                    marginal,
                    replay: r.replay,
                    average,
                },
            );
        }
        let mut sites = HashMap::new();
        for o in &self.sites {
            if zips.get(&o.zip_code).is_none() {
                return Err(invalid(format!(
                    "intensity.sites {}: zip code {} is not in the zip table",
                    o.cloud_region, o.zip_code
                ))
                .into());
            }
            sites.insert(o.cloud_region.clone(), o.zip_code.clone());
        }
        Ok(LoadedIntensity {
            zips,
            join,
            pue,
            utility_regions,
            sites,
        })
    }
}

impl LoadedIntensity {
    /// The zip code of every cloud region in `wanted`: an `[[intensity.sites]]` override, else
    /// the shipped table (beside the zip table `zip_table`, loaded only when needed). An
    /// unknown or unplaceable region is a configuration error, never a default.
    pub fn cloud_sites<'a>(
        &self,
        zip_table: &Path,
        wanted: impl IntoIterator<Item = &'a String>,
    ) -> Result<HashMap<String, String>, LoadError> {
        let mut sites = self.sites.clone();
        let wanted: Vec<&String> = wanted
            .into_iter()
            .filter(|c| !sites.contains_key(*c))
            .collect();
        if wanted.is_empty() {
            return Ok(sites);
        }
        let table_dir = zip_table
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let directory = CloudRegionDirectory::load(&table_dir).map_err(data)?;
        for cloud in wanted {
            let (provider, region) = split_cloud_region(cloud)?;
            let site = directory
                .resolve(provider, region, &self.zips)
                .map_err(|e| invalid(format!("cloud_region {cloud}: {e}")))?;
            sites.insert(cloud.clone(), site.zip_code);
        }
        Ok(sites)
    }
}
