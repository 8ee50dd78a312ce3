//! Zip code → grid location, from EPA eGRID's zip-to-subregion-and-utility table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A zip code's predominant utility and eGRID subregion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipLocation {
    /// Predominant electric utility.
    pub utility: String,
    /// eGRID subregion (e.g. `CAMX`).
    pub subregion: String,
}

/// Errors loading the zip table.
#[derive(Debug, Error)]
pub enum LocationError {
    /// The file could not be read.
    #[error("cannot read zip table {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: csv::Error,
    },
    /// A required column is missing.
    #[error("zip table {path} has no column {column}")]
    MissingColumn {
        /// File.
        path: PathBuf,
        /// Column name.
        column: &'static str,
    },
}

/// Zip code → predominant utility and subregion.
#[derive(Debug, Clone, Default)]
pub struct ZipDirectory {
    zips: HashMap<String, ZipLocation>,
}

impl ZipDirectory {
    /// Loads EPA's `zip,state,eiaid,UtilName,SUBRGN,Predominant Utility` table (UTF-8 with BOM).
    pub fn load(path: &Path) -> Result<Self, LocationError> {
        let read_err = |source| LocationError::Read {
            path: path.to_owned(),
            source,
        };
        let mut reader = csv::Reader::from_path(path).map_err(read_err)?;
        let headers = reader.headers().map_err(read_err)?.clone();
        let col = |column: &'static str| {
            headers
                .iter()
                .position(|h| h.trim_start_matches('\u{feff}') == column)
                .ok_or(LocationError::MissingColumn {
                    path: path.to_owned(),
                    column,
                })
        };
        let (zip, util, sub, pred) = (
            col("zip")?,
            col("UtilName")?,
            col("SUBRGN")?,
            col("Predominant Utility")?,
        );
        let mut zips = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(read_err)?;
            let field = |i: usize| record.get(i).unwrap_or_default().trim().to_owned();
            let location = ZipLocation {
                utility: field(util),
                subregion: field(sub),
            };
            // The predominant row wins; otherwise keep the first row seen.
            if field(pred) == "1" {
                zips.insert(field(zip), location);
            } else {
                zips.entry(field(zip)).or_insert(location);
            }
        }
        Ok(Self { zips })
    }

    /// Location of a zip code.
    pub fn get(&self, zip: &str) -> Option<&ZipLocation> {
        self.zips.get(zip)
    }

    /// Number of zip codes.
    pub fn len(&self) -> usize {
        self.zips.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.zips.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_maps_real_zip_codes_to_their_predominant_utility() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/locations/epa_egrid2023_zip_to_subregion.csv");
        let d = ZipDirectory::load(&path).unwrap();
        assert_eq!(d.len(), 41_588);
        let sac = d.get("95814").unwrap();
        assert_eq!(
            (sac.utility.as_str(), sac.subregion.as_str()),
            ("Pacific Gas & Electric Co.", "CAMX")
        );
        assert_eq!(
            d.get("91770").unwrap().utility,
            "Southern California Edison Co"
        );
        assert!(d.get("00000").is_none());
    }
}
