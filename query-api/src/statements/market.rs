//! Market-based emissions (GHG Protocol scope 2, hourly matching as its revision proposes):
//! where the provider configured contractual instruments for a region (energy attribute
//! certificates or PPA volumes, kWh per hour in a CSV file), each hour's instruments cover
//! all tenants' facility energy in the region pro rata — a tenant's matched share of an hour
//! is min(1, instruments ÷ every tenant's energy that hour) — so no certificate is counted for
//! two tenants and none beyond the energy it covers. Matched energy carries the instruments'
//! factor, the rest the region's residual mix, or where none is configured each interval's
//! grid average (the GHG Protocol's fallback, named in the statement). Regions without
//! instruments give no number: never a guessed one. Methodology: `docs/statements.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wattprint_api_types::{MarketBased, MarketRegion};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::{RegionId, UnixMillis};
use wattprint_store::IntervalRow;

use super::Sources;
use crate::error::ApiError;

const HOUR_MS: i64 = 3_600_000;

/// One region's contractual instruments.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionInstruments {
    /// CSV file of the hourly volumes: header `hour_start,kwh`, then one row per instrument
    /// and hour (RFC 3339 hour start in UTC; rows of the same hour add up). Read at every
    /// statement, so volumes retired later count from then on without a restart.
    pub instruments: PathBuf,
    /// Emission factor of the instruments, g/kWh (0 for renewable certificates and PPAs).
    pub instrument_g_per_kwh: f64,
    /// Residual mix factor for unmatched energy, g/kWh; `None`: each interval's grid average.
    pub residual_mix_g_per_kwh: Option<f64>,
}

/// The provider's contractual instruments, per region.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketInstruments {
    /// By region.
    pub regions: BTreeMap<RegionId, RegionInstruments>,
}

/// Why an instruments file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InstrumentsError {
    /// The file could not be read.
    #[error("instruments file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A row (or the header) is not what the format says.
    #[error("instruments file {path}, line {line}: {reason}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Hourly volumes of one file: kWh by hour start, and the file's SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyVolumes {
    /// kWh by hour start (ms).
    pub kwh: BTreeMap<i64, f64>,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

impl RegionInstruments {
    /// Reads and checks the whole instruments file.
    pub fn read(&self) -> Result<HourlyVolumes, InstrumentsError> {
        read_volumes(&self.instruments)
    }
}

impl MarketInstruments {
    /// Reads every region's file once, so a broken one fails at startup with its line.
    pub fn check(&self) -> Result<(), InstrumentsError> {
        self.regions.values().try_for_each(|r| r.read().map(drop))
    }
}

fn read_volumes(path: &Path) -> Result<HourlyVolumes, InstrumentsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| InstrumentsError::Read {
        path: shown.clone(),
        source,
    })?;
    let row_err = |line: u64, reason: String| InstrumentsError::Row {
        path: shown.clone(),
        line,
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let header = reader
        .headers()
        .map_err(|e| row_err(1, e.to_string()))?
        .clone();
    if header.iter().collect::<Vec<_>>() != ["hour_start", "kwh"] {
        return Err(row_err(
            1,
            format!(
                "the header must be `hour_start,kwh`, not `{}`",
                header.as_slice()
            ),
        ));
    }
    let mut kwh = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            row_err(line, e.to_string())
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let hour = chrono::DateTime::parse_from_rfc3339(&record[0])
            .map_err(|e| row_err(line, format!("hour_start {:?}: {e}", &record[0])))?
            .timestamp_millis();
        if hour.rem_euclid(HOUR_MS) != 0 {
            return Err(row_err(
                line,
                format!("hour_start {:?} is not the start of an hour", &record[0]),
            ));
        }
        let volume: f64 = record[1]
            .parse()
            .map_err(|e| row_err(line, format!("kwh {:?}: {e}", &record[1])))?;
        if !volume.is_finite() || volume < 0.0 {
            return Err(row_err(
                line,
                format!("kwh {volume} must be a finite number ≥ 0"),
            ));
        }
        *kwh.entry(hour).or_insert(0.0) += volume;
    }
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(HourlyVolumes { kwh, sha256 })
}

/// One region's running totals over the tenant's intervals.
#[derive(Debug, Default)]
struct RegionTally {
    facility_kwh: f64,
    matched_kwh: f64,
    instrument_g: f64,
    residual_g: f64,
    unmatched_without_factor_kwh: f64,
}

/// The tenant's market-based emissions over `rows` (its intervals of `[from, to)`).
pub(super) async fn market_based(
    src: Sources<'_>,
    rows: &[IntervalRow],
    (from, to): (UnixMillis, UnixMillis),
) -> Result<MarketBased, ApiError> {
    let used: BTreeSet<&RegionId> = rows.iter().map(|r| &r.region).collect();
    let configured: Vec<(&RegionId, &RegionInstruments)> = src
        .market
        .map(|m| {
            used.iter()
                .filter_map(|r| m.regions.get(*r).map(|i| (*r, i)))
                .collect()
        })
        .unwrap_or_default();
    if configured.is_empty() {
        return Ok(MarketBased {
            status: "not_configured".into(),
            co2e_g: None,
            regions: Vec::new(),
        });
    }
    let regions: Vec<RegionId> = configured.iter().map(|(r, _)| (*r).clone()).collect();
    let everyone = src
        .store
        .region_hourly_facility_energy(&regions, from, to)
        .await
        .map_err(|e| ApiError::from_store(e, || "no energy".into()))?;
    let everyone: HashMap<(&RegionId, i64), f64> = everyone
        .iter()
        .map(|e| ((&e.region, e.hour.0), e.facility_kwh))
        .collect();
    let mut lines = Vec::with_capacity(used.len());
    for region in &used {
        let Some(instruments) = src.market.and_then(|m| m.regions.get(*region)) else {
            lines.push(unconfigured(region, rows));
            continue;
        };
        let volumes = instruments
            .read()
            .map_err(|e| ApiError::Internal(format!("market-based emissions of {region}: {e}")))?;
        let matched_share = |hour: i64| -> f64 {
            let all = everyone.get(&(*region, hour)).copied().unwrap_or(0.0);
            let volume = volumes.kwh.get(&hour).copied().unwrap_or(0.0);
            if all > 0.0 {
                (volume / all).min(1.0)
            } else {
                0.0
            }
        };
        let tally = tally_region(region, rows, instruments, src.join, matched_share);
        let complete = tally.unmatched_without_factor_kwh == 0.0;
        lines.push(MarketRegion {
            region: region.to_string(),
            status: "configured".into(),
            facility_energy_kwh: tally.facility_kwh,
            matched_kwh: Some(tally.matched_kwh),
            instrument_co2e_g: Some(tally.instrument_g),
            residual_co2e_g: Some(tally.residual_g),
            unmatched_without_factor_kwh: Some(tally.unmatched_without_factor_kwh),
            co2e_g: complete.then_some(tally.instrument_g + tally.residual_g),
            residual: Some(match instruments.residual_mix_g_per_kwh {
                Some(g) => format!("residual_mix:{g}"),
                None => "grid_average".into(),
            }),
            instruments_sha256: Some(volumes.sha256),
        });
    }
    let all_configured = configured.len() == used.len();
    let total = lines
        .iter()
        .map(|l| l.co2e_g)
        .sum::<Option<f64>>()
        .filter(|_| all_configured);
    Ok(MarketBased {
        status: if all_configured {
            "configured"
        } else {
            "partial"
        }
        .into(),
        co2e_g: total,
        regions: lines,
    })
}

/// Σ over the region's intervals of facility energy split into matched (instrument factor)
/// and unmatched (residual factor) by the hour's matched share.
fn tally_region(
    region: &RegionId,
    rows: &[IntervalRow],
    instruments: &RegionInstruments,
    join: Option<&IntensityJoin>,
    matched_share: impl Fn(i64) -> f64,
) -> RegionTally {
    let mut t = RegionTally::default();
    for row in rows.iter().filter(|r| &r.region == region) {
        let kwh = row.energy.to_kwh().0 * row.pue;
        let share = matched_share(row.bucket.start().0.div_euclid(HOUR_MS) * HOUR_MS);
        let (matched, unmatched) = (kwh * share, kwh * (1.0 - share));
        t.facility_kwh += kwh;
        t.matched_kwh += matched;
        t.instrument_g += matched * instruments.instrument_g_per_kwh;
        let residual = instruments.residual_mix_g_per_kwh.or_else(|| {
            join.and_then(|j| j.average(region, row.bucket))
                .map(|a| a.value.0)
        });
        match residual {
            Some(g) => t.residual_g += unmatched * g,
            None if unmatched > 0.0 => t.unmatched_without_factor_kwh += unmatched,
            None => {}
        }
    }
    t
}

fn unconfigured(region: &RegionId, rows: &[IntervalRow]) -> MarketRegion {
    MarketRegion {
        region: region.to_string(),
        status: "not_configured".into(),
        facility_energy_kwh: rows
            .iter()
            .filter(|r| &r.region == region)
            .map(|r| r.energy.to_kwh().0 * r.pue)
            .sum(),
        matched_kwh: None,
        instrument_co2e_g: None,
        residual_co2e_g: None,
        unmatched_without_factor_kwh: None,
        co2e_g: None,
        residual: None,
        instruments_sha256: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eac.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn volumes_of_the_same_hour_add_up() {
        let (_d, path) = file(
            "hour_start,kwh\n2026-11-01T00:00:00Z,1.5\n2026-11-01T01:00:00+00:00,2\n\
             2026-11-01T00:00:00Z,0.25\n",
        );
        let v = read_volumes(&path).unwrap();
        let h0 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
        assert_eq!(v.kwh.get(&h0), Some(&1.75));
        assert_eq!(v.kwh.get(&(h0 + HOUR_MS)), Some(&2.0));
        assert_eq!(v.sha256.len(), 64);
    }

    #[test]
    fn bad_files_name_the_line_and_why() {
        for (text, want) in [
            ("hour,kwh\n", "line 1: the header must be `hour_start,kwh`"),
            (
                "hour_start,kwh\n2026-11-01T00:30:00Z,1\n",
                "line 2: hour_start \"2026-11-01T00:30:00Z\" is not the start of an hour",
            ),
            (
                "hour_start,kwh\n2026-11-01T00:00:00Z,-1\n",
                "line 2: kwh -1 must be",
            ),
            (
                "hour_start,kwh\n2026-11-01T00:00:00Z,NaN\n",
                "line 2: kwh NaN must be",
            ),
            (
                "hour_start,kwh\nyesterday,1\n",
                "line 2: hour_start \"yesterday\"",
            ),
            ("hour_start,kwh\n2026-11-01T00:00:00Z,1,2\n", "line 2"),
        ] {
            let (_d, path) = file(text);
            let err = read_volumes(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = read_volumes(Path::new("/nonexistent/eac.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/eac.csv"), "{err}");
    }
}
