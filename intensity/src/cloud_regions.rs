//! Cloud region → zip code → eGRID subregion and utility, from shipped data.
//!
//! Operators name a datacenter by cloud region (AWS `us-west-1`, Azure `westus2`, GCP `us-west1`).
//! A US region is placed at a zip code, which the EPA zip table ([`ZipDirectory`]) turns into a
//! predominant utility and eGRID subregion. The zip comes from one of two places:
//!
//! - `cloud_region_sites.csv`, a hand-checked table of the publicly documented metro of each US
//!   AWS and GCP region (AWS publishes no coordinates), which also overrides an Azure region where
//!   its published coordinates are known to be off;
//! - for other Azure regions, the Census ZCTA centroid nearest (great-circle) to the coordinates in
//!   the Green Software Foundation's `azure-regions.json`, if one lies within
//!   [`MAX_NEAREST_ZCTA_KM`]; further away the region is outside the US.
//!
//! A region that cannot be placed in eGRID is an error naming the region and what is missing: an
//! unknown location is never defaulted.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;
use wattprint_core::GramsPerKwh;

use crate::locations::ZipDirectory;

/// Hand-checked sites of US regions: `provider,region,zip_code,city,note`.
pub const SITES_FILE: &str = "cloud_region_sites.csv";
/// Census 2021 Gazetteer ZCTA internal points: `zcta,latitude,longitude`.
pub const ZCTA_CENTROIDS_FILE: &str = "census_zcta_centroids_2021.csv";
/// Azure region coordinates (Green Software Foundation carbon-aware-sdk).
pub const AZURE_REGIONS_FILE: &str = "gsf_azure-regions.json";
/// AWS region codes and names (Green Software Foundation carbon-aware-sdk); no coordinates.
pub const AWS_REGIONS_FILE: &str = "gsf_aws-regions.json";
/// codecarbon's average intensity per cloud region.
pub const CODECARBON_IMPACT_FILE: &str = "codecarbon_cloud_region_impact.csv";
/// GCP region → Electricity Maps zone.
pub const GCP_ELECTRICITYMAPS_FILE: &str = "gcp_region_to_electricitymaps_zone.json";

/// Farthest an Azure region's coordinates may be from a ZCTA centroid and still count as in the US.
///
/// The published points of the US Azure regions lie within 20 km of a centroid; the nearest
/// non-US one (`canadacentral`, Toronto) is 55 km from one, across Lake Ontario.
pub const MAX_NEAREST_ZCTA_KM: f64 = 30.0;

/// Mean Earth radius (IUGG), used for great-circle distances.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A cloud provider whose region names Wattprint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloudProvider {
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
    /// Google Cloud Platform.
    Gcp,
}

impl CloudProvider {
    /// The lowercase name used in configuration and data files.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudProvider::Aws => "aws",
            CloudProvider::Azure => "azure",
            CloudProvider::Gcp => "gcp",
        }
    }

    /// The region name as the shipped files spell it: trimmed, lowercase, and for Azure without
    /// spaces, so the display name `West US 2` is the API name `westus2`.
    fn normalise_region(self, region: &str) -> String {
        let lower = region.trim().to_ascii_lowercase();
        match self {
            CloudProvider::Azure => lower.split_whitespace().collect(),
            CloudProvider::Aws | CloudProvider::Gcp => lower,
        }
    }
}

impl fmt::Display for CloudProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CloudProvider {
    type Err = CloudRegionError;

    /// Parses `aws`, `azure` or `gcp`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aws" => Ok(CloudProvider::Aws),
            "azure" => Ok(CloudProvider::Azure),
            "gcp" => Ok(CloudProvider::Gcp),
            _ => Err(CloudRegionError::UnknownProvider(s.to_owned())),
        }
    }
}

/// A point on the Earth in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Latitude, degrees north.
    pub latitude: f64,
    /// Longitude, degrees east.
    pub longitude: f64,
}

/// Great-circle distance in kilometres (haversine on a sphere of [`EARTH_RADIUS_KM`]).
///
/// Within about 0.5 % of the ellipsoidal distance, plenty to pick the nearest zip centroid.
pub fn haversine_km(from: GeoPoint, to: GeoPoint) -> f64 {
    let (lat1, lat2) = (from.latitude.to_radians(), to.latitude.to_radians());
    let d_lat = lat2 - lat1;
    let d_lon = (to.longitude - from.longitude).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// How a region's zip code was found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SiteSource {
    /// From the hand-checked `cloud_region_sites.csv`.
    Table,
    /// The Census ZCTA centroid nearest the region's published coordinates.
    NearestZcta {
        /// Distance from the region's coordinates to that centroid.
        distance_km: f64,
    },
}

/// Where a cloud region sits on the US grid.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudSite {
    /// Zip code of the site (for derived sites, a ZCTA, which eGRID's zip table keys by).
    pub zip_code: String,
    /// eGRID subregion of the zip (e.g. `NWPP`).
    pub subregion: String,
    /// Predominant utility of the zip, as the eGRID table names it.
    pub utility: String,
    /// How the zip was found.
    pub how: SiteSource,
    /// codecarbon's average intensity for the region, where it publishes one (GCP only today).
    pub average_g_per_kwh: Option<GramsPerKwh>,
    /// Electricity Maps zone of the region, where the shipped mapping has one (GCP only).
    pub electricitymaps_zone: Option<String>,
}

/// Errors loading the region data or placing a region.
#[derive(Debug, Error)]
pub enum CloudRegionError {
    /// A data file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A CSV data file is malformed.
    #[error("cannot parse {path}: {source}")]
    Csv {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: csv::Error,
    },
    /// A JSON data file is malformed.
    #[error("cannot parse {path}: {source}")]
    Json {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV data file lacks a required column.
    #[error("{path} has no column {column}")]
    MissingColumn {
        /// File.
        path: PathBuf,
        /// Column name.
        column: &'static str,
    },
    /// A value in a data file does not parse.
    #[error("{path}: {what}")]
    BadValue {
        /// File.
        path: PathBuf,
        /// What is wrong, with the record.
        what: String,
    },
    /// The provider is not one of `aws`, `azure`, `gcp`.
    #[error("unknown cloud provider {0:?}: expected aws, azure or gcp")]
    UnknownProvider(String),
    /// No shipped file knows the region.
    #[error("unknown {provider} region {region:?}: not in the shipped region lists")]
    UnknownRegion {
        /// Provider.
        provider: CloudProvider,
        /// Region as given.
        region: String,
    },
    /// The region is known but not in the US, so it has no zip code and no eGRID subregion.
    #[error(
        "{provider} region {region:?} is outside the US eGRID area ({evidence}); \
         configure an intensity region for it instead"
    )]
    OutsideEgrid {
        /// Provider.
        provider: CloudProvider,
        /// Region as given.
        region: String,
        /// Why the region is taken to be outside the US.
        evidence: String,
    },
    /// A US region that the hand-checked site table does not place.
    #[error(
        "{provider} region {region:?} is in the US but {SITES_FILE} has no site for it; \
         configure the datacenter's zip code instead"
    )]
    NoSite {
        /// Provider.
        provider: CloudProvider,
        /// Region as given.
        region: String,
    },
    /// The region's zip code is not in the eGRID zip table.
    #[error("{provider} region {region:?} sits at zip code {zip_code}, which is not in the eGRID zip table")]
    ZipNotInEgrid {
        /// Provider.
        provider: CloudProvider,
        /// Region as given.
        region: String,
        /// The zip code found for it.
        zip_code: String,
    },
}

/// A row of the hand-checked site table.
#[derive(Debug, Clone)]
struct TableSite {
    zip_code: String,
}

/// A row of codecarbon's impact table.
#[derive(Debug, Clone)]
struct RegionImpact {
    country: String,
    city: String,
    average: GramsPerKwh,
}

/// A Census ZCTA and its internal point.
#[derive(Debug, Clone)]
struct Zcta {
    code: String,
    point: GeoPoint,
}

/// Cloud regions of AWS, Azure and GCP, placed on the US grid from shipped data.
#[derive(Debug, Clone)]
pub struct CloudRegionDirectory {
    sites: HashMap<(CloudProvider, String), TableSite>,
    azure_points: HashMap<String, GeoPoint>,
    aws_names: HashMap<String, String>,
    impacts: HashMap<(CloudProvider, String), RegionImpact>,
    gcp_zones: HashMap<String, String>,
    zctas: Vec<Zcta>,
}

impl CloudRegionDirectory {
    /// Loads the region files from `data_dir` (the shipped `data/locations` directory).
    pub fn load(data_dir: &Path) -> Result<Self, CloudRegionError> {
        Ok(Self {
            sites: load_sites(&data_dir.join(SITES_FILE))?,
            azure_points: load_azure_points(&data_dir.join(AZURE_REGIONS_FILE))?,
            aws_names: load_aws_names(&data_dir.join(AWS_REGIONS_FILE))?,
            impacts: load_impacts(&data_dir.join(CODECARBON_IMPACT_FILE))?,
            gcp_zones: read_json(&data_dir.join(GCP_ELECTRICITYMAPS_FILE))?,
            zctas: load_zctas(&data_dir.join(ZCTA_CENTROIDS_FILE))?,
        })
    }

    /// Places `region` of `provider` at a zip code and looks up its eGRID subregion and utility.
    ///
    /// Errors if the region is unknown, outside the US, a US region without a known site, or at a
    /// zip code the eGRID table lacks.
    pub fn resolve(
        &self,
        provider: CloudProvider,
        region: &str,
        zips: &ZipDirectory,
    ) -> Result<CloudSite, CloudRegionError> {
        let key = provider.normalise_region(region);
        let (zip_code, how) = match self.sites.get(&(provider, key.clone())) {
            Some(site) => (site.zip_code.clone(), SiteSource::Table),
            None => self.derive_zip(provider, &key, region)?,
        };
        let location = zips
            .get(&zip_code)
            .ok_or_else(|| CloudRegionError::ZipNotInEgrid {
                provider,
                region: region.to_owned(),
                zip_code: zip_code.clone(),
            })?;
        let electricitymaps_zone = match provider {
            CloudProvider::Gcp => self.gcp_zones.get(&key).cloned(),
            CloudProvider::Aws | CloudProvider::Azure => None,
        };
        Ok(CloudSite {
            subregion: location.subregion.clone(),
            utility: location.utility.clone(),
            zip_code,
            how,
            average_g_per_kwh: self.impacts.get(&(provider, key)).map(|i| i.average),
            electricitymaps_zone,
        })
    }

    /// The zip of a region the site table does not list, or why there is none.
    fn derive_zip(
        &self,
        provider: CloudProvider,
        key: &str,
        region: &str,
    ) -> Result<(String, SiteSource), CloudRegionError> {
        let unknown = || CloudRegionError::UnknownRegion {
            provider,
            region: region.to_owned(),
        };
        let outside = |evidence: String| CloudRegionError::OutsideEgrid {
            provider,
            region: region.to_owned(),
            evidence,
        };
        let no_site = || CloudRegionError::NoSite {
            provider,
            region: region.to_owned(),
        };
        match provider {
            CloudProvider::Azure => {
                let point = *self.azure_points.get(key).ok_or_else(unknown)?;
                let (zcta, distance_km) = self
                    .nearest_zcta(point)
                    .ok_or_else(|| outside(format!("{ZCTA_CENTROIDS_FILE} is empty")))?;
                if distance_km > MAX_NEAREST_ZCTA_KM {
                    return Err(outside(format!(
                        "its published coordinates ({}, {}) are {distance_km:.0} km from the \
                         nearest US zip centroid ({}), more than {MAX_NEAREST_ZCTA_KM} km",
                        point.latitude, point.longitude, zcta.code
                    )));
                }
                Ok((zcta.code.clone(), SiteSource::NearestZcta { distance_km }))
            }
            CloudProvider::Aws => {
                let name = self.aws_names.get(key).ok_or_else(unknown)?;
                if key.starts_with("us-") {
                    Err(no_site())
                } else {
                    Err(outside(format!("AWS names it {name:?}")))
                }
            }
            CloudProvider::Gcp => match self.impacts.get(&(provider, key.to_owned())) {
                Some(impact) if impact.country == "USA" => Err(no_site()),
                Some(impact) => Err(outside(format!(
                    "codecarbon places it in {}, {}",
                    impact.city, impact.country
                ))),
                None => match self.gcp_zones.get(key) {
                    Some(_) if key.starts_with("us-") => Err(no_site()),
                    Some(zone) => Err(outside(format!("Electricity Maps zone {zone}"))),
                    None => Err(unknown()),
                },
            },
        }
    }

    /// The ZCTA whose centroid is nearest `point`, and its distance in km.
    fn nearest_zcta(&self, point: GeoPoint) -> Option<(&Zcta, f64)> {
        self.zctas
            .iter()
            .map(|z| (z, haversine_km(point, z.point)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, CloudRegionError> {
    std::fs::read(path).map_err(|source| CloudRegionError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, CloudRegionError> {
    serde_json::from_slice(&read_bytes(path)?).map_err(|source| CloudRegionError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Reads a CSV file with headers, giving each record's fields by the named columns.
fn read_csv<const N: usize>(
    path: &Path,
    columns: [&'static str; N],
) -> Result<Vec<[String; N]>, CloudRegionError> {
    let csv_err = |source| CloudRegionError::Csv {
        path: path.to_owned(),
        source,
    };
    let bytes = read_bytes(path)?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers = reader.headers().map_err(csv_err)?.clone();
    let mut positions = [0; N];
    for (position, column) in positions.iter_mut().zip(columns) {
        *position = headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').trim() == column)
            .ok_or(CloudRegionError::MissingColumn {
                path: path.to_owned(),
                column,
            })?;
    }
    reader
        .records()
        .map(|record| {
            let record = record.map_err(csv_err)?;
            Ok(positions.map(|i| record.get(i).unwrap_or_default().trim().to_owned()))
        })
        .collect()
}

fn parse_f64(path: &Path, what: &str, value: &str) -> Result<f64, CloudRegionError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| CloudRegionError::BadValue {
            path: path.to_owned(),
            what: format!("{what}: {value:?} is not a number"),
        })
}

fn load_sites(
    path: &Path,
) -> Result<HashMap<(CloudProvider, String), TableSite>, CloudRegionError> {
    let mut sites = HashMap::new();
    for [provider, region, zip_code] in read_csv(path, ["provider", "region", "zip_code"])? {
        let bad = |what: String| CloudRegionError::BadValue {
            path: path.to_owned(),
            what,
        };
        let provider: CloudProvider = provider
            .parse()
            .map_err(|e| bad(format!("region {region}: {e}")))?;
        if zip_code.len() != 5 || !zip_code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "{provider} {region}: zip code {zip_code:?} is not five digits"
            )));
        }
        let key = (provider, provider.normalise_region(&region));
        if sites.insert(key, TableSite { zip_code }).is_some() {
            return Err(bad(format!("{provider} {region} is listed twice")));
        }
    }
    Ok(sites)
}

/// An entry of `azure-regions.json`; coordinates are strings there.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AzureRegion {
    latitude: String,
    longitude: String,
}

fn load_azure_points(path: &Path) -> Result<HashMap<String, GeoPoint>, CloudRegionError> {
    let regions: HashMap<String, AzureRegion> = read_json(path)?;
    regions
        .into_iter()
        .map(|(name, r)| {
            let point = GeoPoint {
                latitude: parse_f64(path, &format!("{name} latitude"), &r.latitude)?,
                longitude: parse_f64(path, &format!("{name} longitude"), &r.longitude)?,
            };
            Ok((name.to_ascii_lowercase(), point))
        })
        .collect()
}

/// An entry of `aws-regions.json`.
#[derive(Deserialize)]
struct AwsRegion {
    code: String,
    full_name: String,
}

fn load_aws_names(path: &Path) -> Result<HashMap<String, String>, CloudRegionError> {
    // The upstream file is Latin-1 (`São Paulo`); accept UTF-8 too should it be re-encoded.
    let bytes = read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect());
    let regions: Vec<AwsRegion> =
        serde_json::from_str(&text).map_err(|source| CloudRegionError::Json {
            path: path.to_owned(),
            source,
        })?;
    Ok(regions
        .into_iter()
        .map(|r| (r.code.to_ascii_lowercase(), r.full_name))
        .collect())
}

fn load_impacts(
    path: &Path,
) -> Result<HashMap<(CloudProvider, String), RegionImpact>, CloudRegionError> {
    let mut impacts = HashMap::new();
    let rows = read_csv(
        path,
        ["provider", "region", "country_name", "city", "impact"],
    )?;
    for [provider, region, country, city, impact] in rows {
        // codecarbon may list providers Wattprint does not know; they cannot be asked for.
        let Ok(provider) = provider.parse::<CloudProvider>() else {
            continue;
        };
        let average = GramsPerKwh(parse_f64(
            path,
            &format!("{provider} {region} impact"),
            &impact,
        )?);
        let key = (provider, provider.normalise_region(&region));
        impacts.insert(
            key,
            RegionImpact {
                country,
                city,
                average,
            },
        );
    }
    Ok(impacts)
}

fn load_zctas(path: &Path) -> Result<Vec<Zcta>, CloudRegionError> {
    read_csv(path, ["zcta", "latitude", "longitude"])?
        .into_iter()
        .map(|[code, latitude, longitude]| {
            let point = GeoPoint {
                latitude: parse_f64(path, &format!("zcta {code} latitude"), &latitude)?,
                longitude: parse_f64(path, &format!("zcta {code} longitude"), &longitude)?,
            };
            Ok(Zcta { code, point })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/locations")
    }

    /// The shipped region data and eGRID zip table, loaded once for all tests.
    fn shipped() -> &'static (CloudRegionDirectory, ZipDirectory) {
        static SHIPPED: OnceLock<(CloudRegionDirectory, ZipDirectory)> = OnceLock::new();
        SHIPPED.get_or_init(|| {
            let dir = data_dir();
            let regions = CloudRegionDirectory::load(&dir).unwrap();
            let zips = ZipDirectory::load(&dir.join("epa_egrid2023_zip_to_subregion.csv")).unwrap();
            (regions, zips)
        })
    }

    fn resolve(provider: CloudProvider, region: &str) -> Result<CloudSite, CloudRegionError> {
        let (regions, zips) = shipped();
        regions.resolve(provider, region, zips)
    }

    fn is_virginia_zip(zip: &str) -> bool {
        matches!(
            zip.get(..3).and_then(|p| p.parse::<u32>().ok()),
            Some(201 | 220..=246)
        )
    }

    #[test]
    fn haversine_matches_one_degree_of_latitude_and_the_jfk_lax_great_circle() {
        let p = |latitude, longitude| GeoPoint {
            latitude,
            longitude,
        };
        // One degree of arc on the sphere: pi * R / 180.
        assert!((haversine_km(p(0.0, 0.0), p(1.0, 0.0)) - 111.195_08).abs() < 1e-3);
        assert!((haversine_km(p(0.0, 0.0), p(0.0, 1.0)) - 111.195_08).abs() < 1e-3);
        assert_eq!(haversine_km(p(47.2, -119.8), p(47.2, -119.8)), 0.0);
        // JFK to LAX: published great-circle distance 2,475 mi = 3,983 km (ellipsoid); the
        // sphere gives 3,974 km.
        let jfk_lax = haversine_km(p(40.6413, -73.7781), p(33.9416, -118.4085));
        assert!((jfk_lax - 3974.34).abs() < 0.1, "{jfk_lax}");
        assert!((jfk_lax - 3983.1).abs() / 3983.1 < 0.005);
        // Antipodes: half the circumference, no NaN from rounding.
        let half = haversine_km(p(0.0, 0.0), p(0.0, 180.0));
        assert!((half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn provider_parses_aws_azure_gcp_in_any_case_and_rejects_others() {
        assert_eq!("aws".parse::<CloudProvider>().unwrap(), CloudProvider::Aws);
        assert_eq!(
            " Azure ".parse::<CloudProvider>().unwrap(),
            CloudProvider::Azure
        );
        assert_eq!("GCP".parse::<CloudProvider>().unwrap(), CloudProvider::Gcp);
        let err = "oracle".parse::<CloudProvider>().unwrap_err();
        assert!(matches!(&err, CloudRegionError::UnknownProvider(p) if p == "oracle"));
        assert_eq!(
            err.to_string(),
            "unknown cloud provider \"oracle\": expected aws, azure or gcp"
        );
        assert_eq!(CloudProvider::Gcp.to_string(), "gcp");
    }

    #[test]
    fn azure_westus2_resolves_by_nearest_zcta_to_quincy_washington_in_nwpp() {
        let site = resolve(CloudProvider::Azure, "westus2").unwrap();
        assert_eq!(site.zip_code, "98848"); // Quincy, WA
        assert_eq!(site.subregion, "NWPP");
        assert_eq!(site.utility, "PUD No 1 of Douglas County");
        assert!(
            matches!(site.how, SiteSource::NearestZcta { distance_km } if distance_km < 10.0),
            "{:?}",
            site.how
        );
        assert_eq!(site.average_g_per_kwh, None);
        assert_eq!(site.electricitymaps_zone, None);
    }

    #[test]
    fn azure_display_name_with_spaces_and_capitals_resolves_like_the_api_name() {
        assert_eq!(
            resolve(CloudProvider::Azure, "West US 2").unwrap(),
            resolve(CloudProvider::Azure, "westus2").unwrap()
        );
    }

    #[test]
    fn azure_eastus_point_resolves_to_a_virginia_zip_that_egrid_puts_in_rfcw_not_srvc() {
        // Azure's published eastus point (37.37, -79.82) is near Roanoke, in Appalachian
        // Power's territory, which eGRID puts in RFC West rather than SERC Virginia/Carolina.
        let site = resolve(CloudProvider::Azure, "eastus").unwrap();
        assert!(is_virginia_zip(&site.zip_code), "{}", site.zip_code);
        assert_eq!(site.zip_code, "24064");
        assert_eq!(site.utility, "Appalachian Power Co");
        assert_eq!(site.subregion, "RFCW");
        // eastus2's point (Boydton, Mecklenburg County) is in SRVC.
        let east2 = resolve(CloudProvider::Azure, "eastus2").unwrap();
        assert!(is_virginia_zip(&east2.zip_code), "{}", east2.zip_code);
        assert_eq!(
            (east2.zip_code.as_str(), east2.subregion.as_str()),
            ("23917", "SRVC")
        );
    }

    #[test]
    fn azure_westcentralus_uses_the_table_cheyenne_site_not_the_metadata_point() {
        let site = resolve(CloudProvider::Azure, "westcentralus").unwrap();
        assert_eq!(site.how, SiteSource::Table);
        assert_eq!(site.zip_code, "82001");
        assert_eq!(site.subregion, "RMPA");
        assert_eq!(site.utility, "Cheyenne Light Fuel & Power");
    }

    #[test]
    fn only_the_us_azure_regions_resolve_and_canada_55_km_from_a_us_zcta_does_not() {
        let (regions, _) = shipped();
        let resolved: BTreeSet<&str> = regions
            .azure_points
            .keys()
            .filter(|r| resolve(CloudProvider::Azure, r).is_ok())
            .map(String::as_str)
            .collect();
        let expected: BTreeSet<&str> = [
            "centralus",
            "centraluseuap",
            "eastus",
            "eastus2",
            "eastus2euap",
            "eastusstg",
            "northcentralus",
            "southcentralus",
            "westcentralus",
            "westus",
            "westus2",
            "westus3",
        ]
        .into_iter()
        .collect();
        assert_eq!(resolved, expected);
        let err = resolve(CloudProvider::Azure, "canadacentral").unwrap_err();
        assert!(
            matches!(&err, CloudRegionError::OutsideEgrid { region, .. } if region == "canadacentral"),
            "{err}"
        );
        assert!(err.to_string().contains("55 km"), "{err}");
        // brazilus is published at (0, 0).
        assert!(matches!(
            resolve(CloudProvider::Azure, "brazilus"),
            Err(CloudRegionError::OutsideEgrid { .. })
        ));
    }

    #[test]
    fn gcp_us_west1_resolves_to_the_dalles_97058_in_nwpp_with_codecarbon_average_and_zone() {
        let site = resolve(CloudProvider::Gcp, "us-west1").unwrap();
        assert_eq!(site.zip_code, "97058");
        assert_eq!(site.subregion, "NWPP");
        assert_eq!(site.utility, "Northern Wasco County PUD");
        assert_eq!(site.how, SiteSource::Table);
        assert_eq!(site.average_g_per_kwh, Some(GramsPerKwh(94.0)));
        assert_eq!(site.electricitymaps_zone.as_deref(), Some("US-NW-PACW"));
    }

    #[test]
    fn aws_us_west_1_resolves_to_san_jose_95112_whose_predominant_utility_is_pge() {
        let site = resolve(CloudProvider::Aws, "us-west-1").unwrap();
        assert_eq!(site.zip_code, "95112");
        assert_eq!(site.utility, "Pacific Gas & Electric Co.");
        assert_eq!(site.subregion, "CAMX");
        assert_eq!(site.how, SiteSource::Table);
        // The shipped codecarbon table has GCP rows only, and the zone map is GCP's.
        assert_eq!(site.average_g_per_kwh, None);
        assert_eq!(site.electricitymaps_zone, None);
    }

    #[test]
    fn aws_us_east_1_resolves_to_ashburn_in_dominion_srvc() {
        let site = resolve(CloudProvider::Aws, "US-EAST-1").unwrap();
        assert_eq!(site.zip_code, "20147");
        assert_eq!(site.utility, "Virginia Electric & Power Co");
        assert_eq!(site.subregion, "SRVC");
    }

    #[test]
    fn every_shipped_table_site_is_a_zip_in_the_egrid_table() {
        let (regions, _) = shipped();
        assert_eq!(regions.sites.len(), 14);
        for (provider, region) in regions.sites.keys() {
            let site =
                resolve(*provider, region).unwrap_or_else(|e| panic!("{provider} {region}: {e}"));
            assert_eq!(site.how, SiteSource::Table);
        }
    }

    #[test]
    fn every_gcp_table_city_agrees_with_codecarbon() {
        let rows = read_csv(&data_dir().join(SITES_FILE), ["provider", "region", "city"]).unwrap();
        let (regions, _) = shipped();
        let mut checked = 0;
        for [_, region, city] in rows.iter().filter(|[provider, ..]| provider == "gcp") {
            let table_city = city.split(", ").next().unwrap();
            let impact = &regions.impacts[&(CloudProvider::Gcp, region.clone())];
            assert_eq!(impact.country, "USA", "{region}");
            assert_eq!(table_city, impact.city, "{region}");
            checked += 1;
        }
        assert_eq!(checked, 9);
    }

    #[test]
    fn aws_eu_west_1_is_outside_egrid_and_the_error_names_the_region_and_why() {
        let err = resolve(CloudProvider::Aws, "eu-west-1").unwrap_err();
        assert!(
            matches!(&err, CloudRegionError::OutsideEgrid { provider: CloudProvider::Aws, region, .. } if region == "eu-west-1"),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("aws region \"eu-west-1\""), "{message}");
        assert!(message.contains("EU (Ireland)"), "{message}");
        assert!(message.contains("outside the US eGRID area"), "{message}");
    }

    #[test]
    fn gcp_europe_west1_is_outside_egrid_per_codecarbon_country() {
        let err = resolve(CloudProvider::Gcp, "europe-west1").unwrap_err();
        assert!(
            matches!(&err, CloudRegionError::OutsideEgrid { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("Belgium"), "{err}");
    }

    #[test]
    fn aws_govcloud_is_a_us_region_without_a_shipped_site() {
        let err = resolve(CloudProvider::Aws, "us-gov-west-1").unwrap_err();
        assert!(
            matches!(&err, CloudRegionError::NoSite { region, .. } if region == "us-gov-west-1"),
            "{err}"
        );
        assert!(err.to_string().contains("zip code"), "{err}");
    }

    #[test]
    fn unknown_regions_are_errors_naming_provider_and_region() {
        for (provider, region) in [
            (CloudProvider::Aws, "us-west-9"),
            (CloudProvider::Azure, "moonbase1"),
            (CloudProvider::Gcp, "us-west1a"),
            // A real region of another provider is unknown to this one.
            (CloudProvider::Gcp, "westus2"),
        ] {
            let err = resolve(provider, region).unwrap_err();
            assert!(
                matches!(&err, CloudRegionError::UnknownRegion { provider: p, region: r } if *p == provider && r == region),
                "{err}"
            );
            assert_eq!(
                err.to_string(),
                format!("unknown {provider} region {region:?}: not in the shipped region lists")
            );
        }
    }

    #[test]
    fn a_zip_missing_from_the_egrid_table_is_an_error_naming_region_and_zip() {
        let (regions, _) = shipped();
        let err = regions
            .resolve(CloudProvider::Gcp, "us-west1", &ZipDirectory::default())
            .unwrap_err();
        assert!(
            matches!(&err, CloudRegionError::ZipNotInEgrid { region, zip_code, .. } if region == "us-west1" && zip_code == "97058"),
            "{err}"
        );
    }
}
