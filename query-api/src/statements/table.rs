//! A statement as a table: one row per line (`total`, each `instance`, each `workload`, each
//! `adjustment`), every row carrying the statement's id, tenant, period, status, hash and model
//! version, so rows of many statements stack; the total and workload rows also carry the
//! carbon-aware potential's savings, the total and each `market_region` line the market-based
//! emissions. CSV and Parquet both render this one table, so
//! the two can never disagree on a column. The numbers are the JSON's, unconverted.

use wattprint_api_types::{StatementAmounts, StatementView};

use crate::error::ApiError;

/// What a column holds: Parquet's physical type; CSV prints every kind as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// A signed 64-bit integer (mJ, counts).
    Int,
    /// A double (kWh, grams, shares).
    Float,
}

/// One cell; `Null` where the line has no such value (an empty CSV cell).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// No value.
    Null,
}

/// The columns, in order, with their kinds.
pub const COLUMNS: [(&str, Kind); 26] = [
    ("statement_id", Kind::Text),
    ("tenant", Kind::Text),
    ("period", Kind::Text),
    ("status", Kind::Text),
    ("content_sha256", Kind::Text),
    ("line", Kind::Text),
    ("id", Kind::Text),
    ("label", Kind::Text),
    ("it_energy_mj", Kind::Int),
    ("it_energy_kwh", Kind::Float),
    ("estimated_energy_mj", Kind::Int),
    ("facility_energy_kwh", Kind::Float),
    ("marginal_it_co2e_g", Kind::Float),
    ("marginal_co2e_g", Kind::Float),
    ("location_co2e_g", Kind::Float),
    ("embodied_co2e_g", Kind::Float),
    ("sci_g_per_unit", Kind::Float),
    ("functional_unit", Kind::Text),
    ("gpu_intervals", Kind::Int),
    ("covered_gpu_ms", Kind::Int),
    ("energy_measured_share", Kind::Float),
    ("usage_period", Kind::Text),
    ("model_version", Kind::Text),
    ("flexible_start_saving_co2e_g", Kind::Float),
    ("pause_resume_saving_co2e_g", Kind::Float),
    ("market_co2e_g", Kind::Float),
];

fn int(what: &str, v: u64) -> Result<Cell, ApiError> {
    i64::try_from(v).map(Cell::Int).map_err(|_| {
        ApiError::Internal(format!(
            "statement {what} {v} exceeds a signed 64-bit column"
        ))
    })
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

/// Cells `line` to `energy_measured_share` of a line with amounts.
fn amounts_row(
    (line, id, label): (&str, &str, &str),
    a: &StatementAmounts,
    sci: Option<f64>,
    unit: &str,
) -> Result<Vec<Cell>, ApiError> {
    Ok(vec![
        text(line),
        text(id),
        text(label),
        int("energy", a.it_energy_mj)?,
        Cell::Float(a.it_energy_kwh),
        int("estimated energy", a.estimated_energy_mj)?,
        Cell::Float(a.facility_energy_kwh),
        Cell::Float(a.marginal_it_co2e_g),
        Cell::Float(a.marginal_co2e_g),
        a.location_co2e_g.map_or(Cell::Null, Cell::Float),
        Cell::Float(a.embodied_co2e_g),
        sci.map_or(Cell::Null, Cell::Float),
        text(unit),
        int("GPU intervals", a.gpu_intervals)?,
        Cell::Int(a.covered_gpu_ms),
        Cell::Float(a.provenance.energy_measured_share),
    ])
}

/// The rows of `view`, each [`COLUMNS`] long.
pub fn rows(view: &StatementView) -> Result<Vec<Vec<Cell>>, ApiError> {
    let head = [
        text(&view.statement_id),
        text(&view.tenant),
        text(&view.period),
        text(&view.status),
        view.content_sha256.as_deref().map_or(Cell::Null, text),
    ];
    let row = |body: Vec<Cell>, usage_period: &str, savings: [Option<f64>; 2]| -> Vec<Cell> {
        let mut cells = head.to_vec();
        cells.extend(body);
        cells.extend([text(usage_period), text(&view.model_version)]);
        cells.extend(savings.map(|g| g.map_or(Cell::Null, Cell::Float)));
        cells.push(Cell::Null);
        cells
    };
    let float = |g: Option<f64>| g.map_or(Cell::Null, Cell::Float);
    let potential = view.carbon_aware.as_ref();
    let total_savings = potential.map_or([None, None], |p| {
        [
            Some(p.flexible_start_saving_co2e_g),
            Some(p.pause_resume_saving_co2e_g),
        ]
    });
    let mut total = row(
        amounts_row(("total", "", ""), &view.totals, None, "")?,
        &view.period,
        total_savings,
    );
    total[COLUMNS.len() - 1] = float(view.market_based.co2e_g);
    let mut out = vec![total];
    for m in &view.market_based.regions {
        // Facility energy and market-based grams per region; the label says whether the
        // region has instruments.
        let mut body = vec![text("market_region"), text(&m.region), text(&m.status)];
        body.extend(std::iter::repeat_n(Cell::Null, 3));
        body.push(Cell::Float(m.facility_energy_kwh));
        body.extend(std::iter::repeat_n(Cell::Null, 9));
        let mut cells = row(body, &view.period, [None, None]);
        cells[COLUMNS.len() - 1] = float(m.co2e_g);
        out.push(cells);
    }
    for i in &view.instances {
        let body = amounts_row(("instance", &i.instance_id, ""), &i.amounts, None, "")?;
        out.push(row(body, &view.period, [None, None]));
    }
    for w in &view.workloads {
        let body = amounts_row(
            ("workload", &w.workload_id, &w.label),
            &w.amounts,
            Some(w.sci_g_per_unit),
            &w.functional_unit,
        )?;
        let savings = potential
            .and_then(|p| p.workloads.iter().find(|c| c.workload_id == w.workload_id))
            .map_or([None, None], |c| {
                [c.flexible_start_saving_co2e_g, c.pause_resume_saving_co2e_g]
            });
        out.push(row(body, &view.period, savings));
    }
    for adj in &view.adjustments {
        // Only energy, marginal and location-based emissions are corrected; the usage belongs
        // to the month corrected.
        let mut body = vec![
            text("adjustment"),
            text(&adj.period),
            text(&format!("{} ({})", adj.reason, adj.dated)),
            Cell::Int(adj.it_energy_mj),
        ];
        body.extend(std::iter::repeat_n(Cell::Null, 4));
        body.extend([
            Cell::Float(adj.marginal_co2e_g),
            Cell::Float(adj.location_co2e_g),
        ]);
        body.extend(std::iter::repeat_n(Cell::Null, 6));
        out.push(row(body, &adj.period, [None, None]));
    }
    debug_assert!(out.iter().all(|r| r.len() == COLUMNS.len()));
    Ok(out)
}
