//! Intensity from files, for air-gapped operators and tests, served through [`Provider`] like
//! the APIs.
//!
//! Formats:
//! - the ledger's own CSV, header
//!   `region,at,duration_s,value,unit,signal,kind,issued_at,provider,model_version` (any order),
//!   `unit` one of `g_per_kwh`, `kg_per_kwh`, `lb_per_mwh`, times RFC 3339 in UTC, empty
//!   `issued_at`/`model_version` for none; and the same as a JSON array of objects (`null` or
//!   absent for none);
//! - WattTime's CSV exports (as shipped in `data/moer/`): actuals `time,<Region>` and forecasts
//!   `request_time,forecast_time,<Region>`, times `YYYY-MM-DD HH:MM:SS` in UTC, 5-minute MOER in
//!   g/kWh;
//! - Electricity Maps' hourly CSV exports (`Datetime (UTC),Country,Zone Name,Zone Id,Carbon
//!   Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),…,Data Estimated,Data
//!   Estimation Method`).
//!
//! A row that cannot be placed or read as meant (bad time, a non-UTC offset, unknown unit,
//! signal or kind, bad period) stops the import with the file and line, and nothing of that file
//! is kept: the file is not what it claims to be, and guessing would put wrong values in the
//! ledger. A row whose value is missing, not a number or implausible is refused on its own (file,
//! line and reason, returned in [`Fetched::rejected`]) and the rest is imported.

mod series;

pub use series::{load_egrid_rates, load_marginal, IntensityFileError, MarginalFormat};

use crate::ledger::Collector;
use crate::timefmt;
use crate::{FetchRequest, Fetched, Provider, ProviderError};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;
use wattprint_core::intensity::{IntensityPoint, PointKind, Signal};
use wattprint_core::{GramsPerKwh, RegionId, UnixMillis};

/// WattTime exports are 5-minute data.
const WATTTIME_PERIOD_MS: i64 = 300_000;
/// Electricity Maps exports are hourly.
const HOUR_MS: i64 = 3_600_000;
/// The ledger format's columns.
const LEDGER_COLUMNS: [&str; 10] = [
    "region",
    "at",
    "duration_s",
    "value",
    "unit",
    "signal",
    "kind",
    "issued_at",
    "provider",
    "model_version",
];

/// Why a file cannot be imported. Each names the file, and the line (CSV) or record (JSON).
#[derive(Debug, Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// A line of a CSV file, or a JSON syntax error, is not in the format.
    #[error("{}:{line}: {detail}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// A record of a JSON array is not in the format.
    #[error("{}: record {record}: {detail}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// 0-based index in the array.
        record: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Which Electricity Maps column to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmissionFactor {
    /// Life-cycle (LCA) intensity, Electricity Maps' default (`lifecycle`).
    Lifecycle,
    /// Direct (operational) intensity (`direct`).
    Direct,
}

impl EmissionFactor {
    fn as_str(self) -> &'static str {
        match self {
            EmissionFactor::Lifecycle => "lifecycle",
            EmissionFactor::Direct => "direct",
        }
    }

    fn column(self) -> &'static str {
        match self {
            EmissionFactor::Lifecycle => "Carbon Intensity gCO₂eq/kWh (LCA)",
            EmissionFactor::Direct => "Carbon Intensity gCO₂eq/kWh (direct)",
        }
    }
}

/// What one import added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Points kept.
    pub points: usize,
    /// Rows refused (see [`Fetched::rejected`]).
    pub rejected: usize,
}

/// A row refused at import, kept so that fetches covering it report it.
#[derive(Debug, Clone)]
struct Refused {
    region: RegionId,
    signal: Signal,
    kind: PointKind,
    at: UnixMillis,
    duration_ms: i64,
    issued_at: Option<UnixMillis>,
    reason: String,
}

/// Points imported from files. [`Provider::fetch`] returns those of the request's region,
/// signal and kind whose period overlaps the range (actuals) or that were issued in it
/// (forecasts), with the refused rows among them and the gaps. `provider_region` is not used:
/// each point carries the provider it was imported under.
#[derive(Debug, Clone)]
pub struct FileProvider {
    name: String,
    points: Vec<IntensityPoint>,
    refused: Vec<Refused>,
}

/// The rows of one file being imported; added to the provider only if the whole file reads.
struct Batch<'a> {
    path: &'a Path,
    points: Vec<IntensityPoint>,
    refused: Vec<Refused>,
}

impl<'a> Batch<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            points: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Keeps `p` if valid, else refuses it with `where_` (e.g. `file:line`).
    fn push(&mut self, p: IntensityPoint, where_: &str) {
        match p.validate() {
            Ok(()) => self.points.push(p),
            Err(e) => {
                let reason = format!("{where_}: {e}");
                self.refuse_point(&p, reason);
            }
        }
    }

    /// Refuses the row that would have been `p` (its value could not be read).
    fn refuse_point(&mut self, p: &IntensityPoint, reason: String) {
        self.refused.push(Refused {
            region: p.region.clone(),
            signal: p.signal,
            kind: p.kind,
            at: p.at,
            duration_ms: p.duration_ms,
            issued_at: p.issued_at,
            reason,
        });
    }

    /// Adds the point, or refuses it when the value could not be read; `where_` says where the
    /// row is (`file:line`, `file: record N`).
    fn push_value(&mut self, mut p: IntensityPoint, value: Result<f64, String>, where_: &str) {
        match value {
            Ok(v) => {
                p.value = GramsPerKwh(v);
                self.push(p, where_);
            }
            Err(e) => {
                let reason = format!("{where_}: {} {} at {}: {e}", p.provider, p.region, p.at);
                self.refuse_point(&p, reason);
            }
        }
    }

    /// `file:line`, for refusals.
    fn at_line(&self, line: u64) -> String {
        format!("{}:{line}", self.path.display())
    }

    fn line_error(&self, line: u64, detail: impl Into<String>) -> FileError {
        FileError::Line {
            path: self.path.to_owned(),
            line,
            detail: detail.into(),
        }
    }
}

impl FileProvider {
    /// An empty provider called `name` (e.g. `files`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            points: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// All points imported so far.
    pub fn points(&self) -> &[IntensityPoint] {
        &self.points
    }

    fn add(&mut self, batch: Batch<'_>) -> Imported {
        let imported = Imported {
            points: batch.points.len(),
            rejected: batch.refused.len(),
        };
        tracing::info!(
            provider = %self.name,
            file = %batch.path.display(),
            points = imported.points,
            rejected = imported.rejected,
            "imported intensity file"
        );
        self.points.extend(batch.points);
        self.refused.extend(batch.refused);
        imported
    }

    /// Imports a ledger CSV (header in any order, exactly the ledger's columns).
    pub fn import_ledger_csv(&mut self, path: &Path) -> Result<Imported, FileError> {
        let mut batch = Batch::new(path);
        let (mut reader, columns) = open_csv(path)?;
        for name in columns.keys() {
            if !LEDGER_COLUMNS.contains(&name.as_str()) {
                return Err(batch.line_error(1, format!("unknown column {name:?}")));
            }
        }
        let col = |name: &str| -> Result<usize, FileError> {
            columns.get(name).copied().ok_or_else(|| FileError::Line {
                path: path.to_owned(),
                line: 1,
                detail: format!("column {name:?} missing"),
            })
        };
        let idx: Vec<usize> = LEDGER_COLUMNS
            .iter()
            .map(|c| col(c))
            .collect::<Result<_, _>>()?;
        let fetched_at = UnixMillis::now();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, e))?;
            let line = record.position().map_or(0, csv::Position::line);
            let cell = |i: usize| record.get(idx[i]).unwrap_or("");
            let optional = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let row = LedgerRow {
                region: cell(0).to_owned(),
                at: cell(1).to_owned(),
                duration_s: cell(2).parse().map_err(|_| {
                    batch.line_error(
                        line,
                        format!("duration_s {:?} is not a whole number of seconds", cell(2)),
                    )
                })?,
                value: number_cell(cell(3)),
                unit: cell(4).to_owned(),
                signal: cell(5).to_owned(),
                kind: cell(6).to_owned(),
                issued_at: optional(cell(7)),
                provider: cell(8).to_owned(),
                model_version: optional(cell(9)),
            };
            let (point, value) = row
                .into_point(fetched_at)
                .map_err(|e| batch.line_error(line, e))?;
            batch.push_value(point, value, &batch.at_line(line));
        }
        Ok(self.add(batch))
    }

    /// Imports a ledger JSON file: an array of objects with the ledger's fields.
    pub fn import_ledger_json(&mut self, path: &Path) -> Result<Imported, FileError> {
        let mut batch = Batch::new(path);
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let v = crate::ledger::parse_json(&text)
            .map_err(|e| batch.line_error(e.line() as u64, format!("not JSON: {e}")))?;
        let records = v
            .as_array()
            .ok_or_else(|| batch.line_error(1, "expected a JSON array of point objects"))?;
        let fetched_at = UnixMillis::now();
        for (i, rec) in records.iter().enumerate() {
            let err = |detail: String| FileError::Record {
                path: path.to_owned(),
                record: i,
                detail,
            };
            let row = LedgerRow::from_json(rec).map_err(err)?;
            let (point, value) = row.into_point(fetched_at).map_err(err)?;
            // JSON has no lines worth naming: refusals say the record.
            batch.push_value(point, value, &format!("{}: record {i}", path.display()));
        }
        Ok(self.add(batch))
    }

    /// Imports a WattTime actuals export, `time,<Region>`: 5-minute MOER in g/kWh, marginal
    /// actuals for `region`, provider `watttime:<REGION>`.
    pub fn import_watttime_actual_csv(
        &mut self,
        path: &Path,
        region: &RegionId,
    ) -> Result<Imported, FileError> {
        self.import_watttime_csv(path, region, PointKind::Actual)
    }

    /// Imports a WattTime forecast export, `request_time,forecast_time,<Region>`: each row a
    /// 5-minute MOER forecast in g/kWh made at `request_time`.
    pub fn import_watttime_forecast_csv(
        &mut self,
        path: &Path,
        region: &RegionId,
    ) -> Result<Imported, FileError> {
        self.import_watttime_csv(path, region, PointKind::Forecast)
    }

    fn import_watttime_csv(
        &mut self,
        path: &Path,
        region: &RegionId,
        kind: PointKind,
    ) -> Result<Imported, FileError> {
        let (column, rows) = read_watttime_csv(path, kind)?;
        let provider = format!("watttime:{}", column.to_uppercase());
        let fetched_at = UnixMillis::now();
        let mut batch = Batch::new(path);
        for row in rows {
            let point = IntensityPoint {
                region: region.clone(),
                at: row.at,
                duration_ms: WATTTIME_PERIOD_MS,
                value: GramsPerKwh(f64::NAN),
                signal: Signal::Marginal,
                kind,
                issued_at: row.issued_at,
                provider: provider.clone(),
                model_version: None,
                fetched_at,
            };
            batch.push_value(point, row.value, &batch.at_line(row.line));
        }
        Ok(self.add(batch))
    }

    /// Imports an Electricity Maps hourly export for `region`: the `factor` column as average
    /// actuals, provider `electricitymaps:<Zone Id>`, model version the factor (and
    /// `;estimated:<method>` for estimated hours).
    pub fn import_electricitymaps_csv(
        &mut self,
        path: &Path,
        region: &RegionId,
        factor: EmissionFactor,
    ) -> Result<Imported, FileError> {
        let mut batch = Batch::new(path);
        let (mut reader, columns) = open_csv(path)?;
        let col = |name: &str| {
            columns.get(name).copied().ok_or_else(|| FileError::Line {
                path: path.to_owned(),
                line: 1,
                detail: format!("column {name:?} missing: not an Electricity Maps export"),
            })
        };
        let (time_col, zone_col, value_col, est_col, method_col) = (
            col("Datetime (UTC)")?,
            col("Zone Id")?,
            col(factor.column())?,
            col("Data Estimated")?,
            col("Data Estimation Method")?,
        );
        let fetched_at = UnixMillis::now();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, e))?;
            let line = record.position().map_or(0, csv::Position::line);
            let cell = |i: usize| record.get(i).unwrap_or("");
            let at =
                timefmt::parse_naive_utc(cell(time_col)).map_err(|e| batch.line_error(line, e))?;
            let zone = cell(zone_col);
            if zone.is_empty() {
                return Err(batch.line_error(line, "Zone Id missing"));
            }
            let model_version = match cell(est_col) {
                "false" => factor.as_str().to_owned(),
                "true" => format!(
                    "{};estimated:{}",
                    factor.as_str(),
                    match cell(method_col) {
                        "" => "unknown",
                        m => m,
                    }
                ),
                other => {
                    return Err(batch.line_error(
                        line,
                        format!("Data Estimated {other:?} is neither true nor false"),
                    ))
                }
            };
            let point = IntensityPoint {
                region: region.clone(),
                at,
                duration_ms: HOUR_MS,
                value: GramsPerKwh(f64::NAN),
                signal: Signal::Average,
                kind: PointKind::Actual,
                issued_at: None,
                provider: format!("electricitymaps:{zone}"),
                model_version: Some(model_version),
                fetched_at,
            };
            batch.push_value(point, number_cell(cell(value_col)), &batch.at_line(line));
        }
        Ok(self.add(batch))
    }
}

/// One data row of a WattTime CSV export.
pub(crate) struct WattTimeRow {
    /// 1-based line in the file.
    pub(crate) line: u64,
    /// Start of the 5-minute period (`time`, or `forecast_time` of a forecast).
    pub(crate) at: UnixMillis,
    /// When a forecast was made (`request_time`); `None` for actuals.
    pub(crate) issued_at: Option<UnixMillis>,
    /// The MOER in g/kWh, or why the cell is not one.
    pub(crate) value: Result<f64, String>,
}

/// The one reader of WattTime's CSV exports: actuals `time,<Region>`, forecasts
/// `request_time,forecast_time,<Region>`, times `YYYY-MM-DD HH:MM:SS` in UTC (a `T` and a `Z`
/// or `+00:00` are read too). Returns the region column's name and the rows; a header not in
/// the format or a time that cannot be read is an error naming the file and line, a value cell
/// that is not a number is left to the caller (in [`WattTimeRow::value`]).
pub(crate) fn read_watttime_csv(
    path: &Path,
    kind: PointKind,
) -> Result<(String, Vec<WattTimeRow>), FileError> {
    let line_error = |line: u64, detail: String| FileError::Line {
        path: path.to_owned(),
        line,
        detail,
    };
    let (mut reader, _) = open_csv(path)?;
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let names: Vec<&str> = headers
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}'))
        .collect();
    let expected: &[&str] = match kind {
        PointKind::Actual => &["time"],
        PointKind::Forecast => &["request_time", "forecast_time"],
    };
    let n = expected.len();
    if names.len() != n + 1 || names[..n] != *expected || names[n].is_empty() {
        return Err(line_error(
            1,
            format!(
                "header {names:?} is not a WattTime export (expected {}<Region>)",
                expected.iter().map(|c| format!("{c},")).collect::<String>()
            ),
        ));
    }
    let column = names[n].to_owned();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |i: usize| record.get(i).unwrap_or("");
        let time = |i: usize| {
            timefmt::parse_utc_timestamp(cell(i))
                .map_or_else(|| timefmt::parse_naive_utc(cell(i)), Ok)
                .map_err(|e| line_error(line, e))
        };
        let (at, issued_at) = match kind {
            PointKind::Actual => (time(0)?, None),
            PointKind::Forecast => (time(1)?, Some(time(0)?)),
        };
        rows.push(WattTimeRow {
            line,
            at,
            issued_at,
            value: number_cell(cell(n)),
        });
    }
    Ok((column, rows))
}

/// A value cell: a number, else the reason it is refused.
fn number_cell(s: &str) -> Result<f64, String> {
    match s.trim() {
        "" => Err("value missing".to_owned()),
        t => t
            .parse::<f64>()
            .map_err(|_| format!("value {s:?} is not a number")),
    }
}

/// A CSV reader over a plain or gzip file.
type CsvReader = csv::Reader<Box<dyn Read>>;

/// Opens a CSV file (gzip when it ends in `.gz`); returns the reader and its header's column
/// indexes (a UTF-8 BOM on the first name is ignored).
fn open_csv(path: &Path) -> Result<(CsvReader, HashMap<String, usize>), FileError> {
    let file = File::open(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let input: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let headers = reader.headers().map_err(|e| csv_error(path, e))?;
    let columns = headers
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim_start_matches('\u{feff}').to_owned(), i))
        .collect();
    Ok((reader, columns))
}

fn csv_error(path: &Path, e: csv::Error) -> FileError {
    match e.kind() {
        csv::ErrorKind::Io(_) => FileError::Line {
            path: path.to_owned(),
            line: e.position().map_or(0, csv::Position::line),
            detail: e.to_string(),
        },
        _ => FileError::Line {
            path: path.to_owned(),
            line: e.position().map_or(0, csv::Position::line),
            detail: format!("not valid CSV: {e}"),
        },
    }
}

/// One row of the ledger format, as read.
struct LedgerRow {
    region: String,
    at: String,
    duration_s: i64,
    value: Result<f64, String>,
    unit: String,
    signal: String,
    kind: String,
    issued_at: Option<String>,
    provider: String,
    model_version: Option<String>,
}

impl LedgerRow {
    fn from_json(rec: &Value) -> Result<Self, String> {
        let obj = rec.as_object().ok_or("not a JSON object")?;
        for key in obj.keys() {
            if !LEDGER_COLUMNS.contains(&key.as_str()) {
                return Err(format!("unknown field {key:?}"));
            }
        }
        let text = |k: &str| -> Result<String, String> {
            rec.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("field {k:?} missing or not a string"))
        };
        let optional = |k: &str| -> Result<Option<String>, String> {
            match rec.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("field {k:?} is {other}, not a string")),
            }
        };
        Ok(Self {
            region: text("region")?,
            at: text("at")?,
            duration_s: rec
                .get("duration_s")
                .and_then(Value::as_i64)
                .ok_or("field \"duration_s\" missing or not a whole number of seconds")?,
            value: match crate::ledger::number(rec, "value") {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err("value missing".to_owned()),
                Err(e) => Err(e),
            },
            unit: text("unit")?,
            signal: text("signal")?,
            kind: text("kind")?,
            issued_at: optional("issued_at")?,
            provider: text("provider")?,
            model_version: optional("model_version")?,
        })
    }

    /// The point (value still to be set) and its value in g/kWh or why it is refused; `Err` when
    /// the row cannot be read as meant.
    fn into_point(
        self,
        fetched_at: UnixMillis,
    ) -> Result<(IntensityPoint, Result<f64, String>), String> {
        let to_grams: fn(f64) -> GramsPerKwh = match self.unit.as_str() {
            "g_per_kwh" => GramsPerKwh,
            "kg_per_kwh" => GramsPerKwh::from_kg_per_kwh,
            "lb_per_mwh" => GramsPerKwh::from_lb_per_mwh,
            other => {
                return Err(format!(
                    "unit {other:?} is not one of g_per_kwh, kg_per_kwh, lb_per_mwh"
                ))
            }
        };
        let signal = Signal::parse(&self.signal)
            .ok_or_else(|| format!("signal {:?} is not marginal or average", self.signal))?;
        let kind = PointKind::parse(&self.kind)
            .ok_or_else(|| format!("kind {:?} is not actual or forecast", self.kind))?;
        if self.region.is_empty() {
            return Err("region missing".to_owned());
        }
        if self.provider.is_empty() {
            return Err("provider missing".to_owned());
        }
        let at = timefmt::parse_utc_rfc3339(&self.at).map_err(|e| format!("at: {e}"))?;
        let issued_at = match &self.issued_at {
            Some(s) => Some(timefmt::parse_utc_rfc3339(s).map_err(|e| format!("issued_at: {e}"))?),
            None => None,
        };
        let duration_ms = self
            .duration_s
            .checked_mul(1000)
            .ok_or_else(|| format!("duration_s {} is out of range", self.duration_s))?;
        let point = IntensityPoint {
            region: RegionId::new(self.region),
            at,
            duration_ms,
            value: GramsPerKwh(f64::NAN),
            signal,
            kind,
            issued_at,
            provider: self.provider,
            model_version: self.model_version,
            fetched_at,
        };
        Ok((point, self.value.map(|v| to_grams(v).0)))
    }
}

impl FileProvider {
    fn wanted(
        &self,
        req: &FetchRequest,
        region: &RegionId,
        signal: Signal,
        kind: PointKind,
    ) -> bool {
        *region == req.region && signal == req.signal && kind == req.kind
    }
}

/// Whether a point of `kind` at `[at, at + duration)` issued at `issued_at` falls in the range.
fn in_range(
    req: &FetchRequest,
    at: UnixMillis,
    duration_ms: i64,
    issued_at: Option<UnixMillis>,
) -> bool {
    match req.kind {
        PointKind::Actual => at.0 < req.to.0 && at.0.saturating_add(duration_ms) > req.from.0,
        PointKind::Forecast => issued_at.is_some_and(|t| t >= req.from && t < req.to),
    }
}

#[async_trait]
impl Provider for FileProvider {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(
        name = "intensity_fetch",
        skip_all,
        fields(
            provider = %self.name,
            region = %req.region,
            signal = req.signal.as_str(),
            kind = req.kind.as_str(),
        )
    )]
    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let mut c = Collector::default();
        for r in &self.refused {
            if self.wanted(req, &r.region, r.signal, r.kind)
                && in_range(req, r.at, r.duration_ms, r.issued_at)
            {
                c.reject(r.reason.clone());
            }
        }
        for p in &self.points {
            if self.wanted(req, &p.region, p.signal, p.kind)
                && in_range(req, p.at, p.duration_ms, p.issued_at)
            {
                c.accept(p.clone());
            }
        }
        let fetched = c.finish(req.kind, req.from, req.to);
        tracing::debug!(
            points = fetched.points.len(),
            rejected = fetched.rejected.len(),
            gaps = fetched.gaps.len(),
            "fetched"
        );
        Ok(fetched)
    }
}
