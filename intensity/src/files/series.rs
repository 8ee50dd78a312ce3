//! Loaders for the intensity files shipped in `data/`: WattTime marginal CSV (gCO2/kWh, as
//! exported by vessim), SGIP marginal CSV (kgCO2/kWh, gzip) and eGRID subregion average rates
//! (lb/MWh). Each converts exactly to g/kWh and reports bad rows by file and line.

use crate::timefmt::parse_utc_timestamp;
use flate2::read::GzDecoder;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;
use wattprint_core::intensity::PointKind;
use wattprint_core::intensity::{MarginalSeries, SeriesError};
use wattprint_core::{GramsPerKwh, UnixMillis};

/// The format of a marginal-intensity file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginalFormat {
    /// `time,<Region>`; naive UTC timestamps; gCO2/kWh.
    #[serde(rename = "watttime_csv")]
    WattTimeCsv,
    /// `time,moer,f1..f36`; ISO timestamps with offset; kgCO2/kWh; optionally gzip.
    Sgip,
}

/// Errors reading intensity files.
#[derive(Debug, Error)]
pub enum IntensityFileError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A row is malformed.
    #[error("{path}:{line}: {message}")]
    Row {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A WattTime export is not in its format (see [`super::FileProvider`]'s reader).
    #[error(transparent)]
    File(#[from] super::FileError),
    /// The rows do not form a valid series.
    #[error("{path}: {source}")]
    Series {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: SeriesError,
    },
}

fn open(path: &Path) -> Result<Box<dyn Read>, IntensityFileError> {
    let file = std::fs::File::open(path).map_err(|source| IntensityFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

fn row_err(path: &Path, line: u64, message: impl Into<String>) -> IntensityFileError {
    IntensityFileError::Row {
        path: path.to_owned(),
        line,
        message: message.into(),
    }
}

/// Loads a marginal series, converting to g/kWh. `source` names it in provenance.
pub fn load_marginal(
    path: &Path,
    format: MarginalFormat,
    source: &str,
) -> Result<MarginalSeries, IntensityFileError> {
    let points = match format {
        MarginalFormat::WattTimeCsv => watttime_points(path)?,
        MarginalFormat::Sgip => sgip_points(path)?,
    };
    MarginalSeries::new(source, points).map_err(|source| IntensityFileError::Series {
        path: path.to_owned(),
        source,
    })
}

/// A WattTime actuals export through the crate's one WattTime reader; a value that is not a
/// number fails the file (a configured series is taken whole or not at all).
fn watttime_points(path: &Path) -> Result<Vec<(UnixMillis, GramsPerKwh)>, IntensityFileError> {
    let (_, rows) = super::read_watttime_csv(path, PointKind::Actual)?;
    rows.into_iter()
        .map(|row| {
            let v = row.value.map_err(|m| row_err(path, row.line, m))?;
            Ok((row.at, GramsPerKwh(v)))
        })
        .collect()
}

/// SGIP's `time,moer,…` in kg/kWh, first two columns.
fn sgip_points(path: &Path) -> Result<Vec<(UnixMillis, GramsPerKwh)>, IntensityFileError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(open(path)?);
    let mut points = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let record = record.map_err(|e| row_err(path, line, e.to_string()))?;
        let time = record
            .get(0)
            .ok_or_else(|| row_err(path, line, "missing time"))?;
        let at = parse_utc_timestamp(time)
            .ok_or_else(|| row_err(path, line, format!("bad UTC timestamp {time:?}")))?;
        let raw = record
            .get(1)
            .ok_or_else(|| row_err(path, line, "missing value"))?;
        let v: f64 = raw
            .trim()
            .parse()
            .map_err(|_| row_err(path, line, format!("value {raw:?} is not a number")))?;
        points.push((at, GramsPerKwh::from_kg_per_kwh(v)));
    }
    Ok(points)
}

/// Loads eGRID subregion total output CO2e rates, converted from lb/MWh to g/kWh.
pub fn load_egrid_rates(path: &Path) -> Result<HashMap<String, GramsPerKwh>, IntensityFileError> {
    let mut reader = csv::Reader::from_reader(open(path)?);
    let headers = reader
        .headers()
        .map_err(|e| row_err(path, 1, e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| row_err(path, 1, format!("no column {name}")))
    };
    let (sub, rate) = (col("subregion")?, col("co2e_lb_per_mwh")?);
    let mut rates = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let record = record.map_err(|e| row_err(path, line, e.to_string()))?;
        let name = record.get(sub).unwrap_or_default().to_owned();
        let raw = record.get(rate).unwrap_or_default();
        let v: f64 = raw
            .parse()
            .map_err(|_| row_err(path, line, format!("rate {raw:?} is not a number")))?;
        if !v.is_finite() || v < 0.0 {
            return Err(row_err(
                path,
                line,
                format!("rate {v} is not a non-negative number"),
            ));
        }
        rates.insert(name, GramsPerKwh::from_lb_per_mwh(v));
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use wattprint_core::UnixMillis;

    fn data(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data")
            .join(rel)
    }

    #[test]
    fn timestamps_parse_as_utc_and_reject_other_offsets() {
        assert_eq!(
            parse_utc_timestamp("2023-06-08 00:05:00"),
            Some(UnixMillis(1_686_182_700_000))
        );
        assert_eq!(
            parse_utc_timestamp("2023-06-08T00:05:00Z"),
            Some(UnixMillis(1_686_182_700_000))
        );
        assert_eq!(
            parse_utc_timestamp("2020-07-31 00:00:00+00:00"),
            Some(UnixMillis(1_596_153_600_000))
        );
        assert_eq!(parse_utc_timestamp("2020-07-31 00:00:00-07:00"), None);
        assert_eq!(parse_utc_timestamp("2020-07-31"), None);
        assert_eq!(parse_utc_timestamp("2020-02-30 00:00:00"), None);
        // Multi-byte characters where digits belong are refused, not sliced mid-character.
        for bad in [
            "2023-06-08 00:05:0\u{20ac}",
            "2023-06-08 00:05:\u{20ac}",
            "\u{20ac}023-06-08 00:05:00",
            "2023-06-08\u{a0}00:05:00",
            "2023-06-08 23:59:60",
            "+2023-06-08 00:05:00",
        ] {
            assert_eq!(parse_utc_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_shipped_caiso_north_series_loads_whole() {
        let s = load_marginal(
            &data("moer/watttime2023_caiso-north_actual.csv"),
            MarginalFormat::WattTimeCsv,
            "watttime:CAISO_NORTH",
        )
        .unwrap();
        assert_eq!(s.len(), 8928);
        assert_eq!(
            s.first(),
            parse_utc_timestamp("2023-06-08 00:00:00").unwrap()
        );
        let (_, v) = s.as_of(s.first(), 0).unwrap();
        assert_eq!(v, GramsPerKwh(425.01605069));
    }

    #[test]
    fn sgip_series_convert_kg_to_g_exactly() {
        let s = load_marginal(
            &data("moer/SGIP_CAISO_PGE_2020-08.csv.gz"),
            MarginalFormat::Sgip,
            "sgip:PGE",
        )
        .unwrap();
        assert_eq!(s.len(), 9504);
        let (_, v) = s
            .as_of(parse_utc_timestamp("2020-07-31 00:00:00").unwrap(), 0)
            .unwrap();
        assert_eq!(v, GramsPerKwh(0.310070570749436 * 1000.0));
    }

    #[test]
    fn egrid_rates_convert_pounds_exactly() {
        let r =
            load_egrid_rates(&data("locations/epa_egrid2023_subregion_output_rates.csv")).unwrap();
        assert_eq!(r["CAMX"], GramsPerKwh(429.983 * 0.45359237));
        assert_eq!(r.len(), 27);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "time,X\n2023-06-08 00:00:00,1\n2023-06-08 00:05:00,abc").unwrap();
        let err = load_marginal(&p, MarginalFormat::WattTimeCsv, "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("bad.csv:3: value \"abc\" is not a number"),
            "{err}"
        );
        std::fs::write(&p, "time,X\n2023-06-08 00:00:07,1\n").unwrap();
        let err = load_marginal(&p, MarginalFormat::WattTimeCsv, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not aligned"), "{err}");
    }
}
