//! Reading a trace CSV (`data/h100-trace/` columns) into rows, with errors that name the file
//! and line of a bad row.

use crate::sensor::SensorError;
use std::path::Path;

/// One parsed trace row.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) t_ms: i64,
    pub(super) power: u32,
    pub(super) counter: u64,
    pub(super) util_gpu_pct: u32,
    pub(super) sm_clock_mhz: u32,
    pub(super) temp_c: u32,
    pub(super) mem_used_bytes: u64,
}

const REQUIRED_COLUMNS: [&str; 7] = [
    "unix_s",
    "power_mW",
    "energy_counter_mJ",
    "util_gpu_pct",
    "sm_clock_mhz",
    "temp_c",
    "mem_used_bytes",
];

pub(super) fn parse_trace(path: &Path) -> Result<Vec<Row>, SensorError> {
    let io = |source| SensorError::TraceIo {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let row_err = |line: u64, message: String| SensorError::TraceRow {
        path: path.to_owned(),
        line,
        message,
    };
    let headers = reader
        .headers()
        .map_err(|e| row_err(1, format!("bad header: {e}")))?
        .clone();
    let mut index = [0usize; 7];
    for (slot, name) in index.iter_mut().zip(REQUIRED_COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                row_err(
                    1,
                    format!(
                        "header has no `{name}` column (found: {})",
                        headers.iter().collect::<Vec<_>>().join(",")
                    ),
                )
            })?;
    }
    let mut rows: Vec<Row> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            row_err(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |col: usize| -> Result<&str, SensorError> {
            let name = REQUIRED_COLUMNS[col];
            record
                .get(index[col])
                .map(str::trim)
                .ok_or_else(|| row_err(line, format!("missing column `{name}`")))
        };
        fn int<T: std::str::FromStr>(
            name: &str,
            value: &str,
            line: u64,
            err: &dyn Fn(u64, String) -> SensorError,
        ) -> Result<T, SensorError> {
            value.parse().map_err(|_| {
                err(
                    line,
                    format!("column `{name}`: {value:?} is not a non-negative integer"),
                )
            })
        }
        let unix_s_text = field(0)?;
        let unix_s: f64 = unix_s_text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                row_err(
                    line,
                    format!("column `unix_s`: {unix_s_text:?} is not a number"),
                )
            })?;
        let row = Row {
            t_ms: (unix_s * 1000.0).round() as i64,
            power: int("power_mW", field(1)?, line, &row_err)?,
            counter: int("energy_counter_mJ", field(2)?, line, &row_err)?,
            util_gpu_pct: int("util_gpu_pct", field(3)?, line, &row_err)?,
            sm_clock_mhz: int("sm_clock_mhz", field(4)?, line, &row_err)?,
            temp_c: int("temp_c", field(5)?, line, &row_err)?,
            mem_used_bytes: int("mem_used_bytes", field(6)?, line, &row_err)?,
        };
        if let Some(prev) = rows.last() {
            if row.t_ms <= prev.t_ms {
                return Err(row_err(
                    line,
                    format!(
                        "time {} ms is not after the previous row's {} ms (rows must be in time order)",
                        row.t_ms, prev.t_ms
                    ),
                ));
            }
        }
        rows.push(row);
    }
    if rows.len() < 2 {
        return Err(SensorError::Trace {
            path: path.to_owned(),
            message: format!("needs at least 2 rows to replay, has {}", rows.len()),
        });
    }
    Ok(rows)
}
