//! A statement as CSV for spreadsheets and data warehouses: one row per line of the statement
//! (`total`, each `instance`, each `workload`, each `adjustment`), every row carrying the
//! statement's id, tenant, period and status, so rows from many statements can be stacked.
//! The numbers are the JSON's, printed with Rust's shortest round-trip float formatting.

use wattprint_api_types::{StatementAmounts, StatementView};

use crate::error::ApiError;

/// The columns, in order.
pub const COLUMNS: [&str; 21] = [
    "statement_id",
    "tenant",
    "period",
    "status",
    "content_sha256",
    "line",
    "id",
    "label",
    "it_energy_mj",
    "it_energy_kwh",
    "estimated_energy_mj",
    "facility_energy_kwh",
    "marginal_it_co2e_g",
    "marginal_co2e_g",
    "location_co2e_g",
    "embodied_co2e_g",
    "sci_g_per_unit",
    "functional_unit",
    "gpu_intervals",
    "covered_gpu_ms",
    "energy_measured_share",
];

fn amounts_cells(a: &StatementAmounts) -> [String; 10] {
    [
        a.it_energy_mj.to_string(),
        a.it_energy_kwh.to_string(),
        a.estimated_energy_mj.to_string(),
        a.facility_energy_kwh.to_string(),
        a.marginal_it_co2e_g.to_string(),
        a.marginal_co2e_g.to_string(),
        a.location_co2e_g
            .map_or_else(String::new, |g| g.to_string()),
        a.embodied_co2e_g.to_string(),
        String::new(),
        String::new(),
    ]
}

/// Renders `view` as CSV with a header row.
pub fn render(view: &StatementView) -> Result<String, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ApiError::Internal(format!("rendering a statement as CSV: {e}"));
    w.write_record(COLUMNS).map_err(fail)?;
    let head = [
        view.statement_id.clone(),
        view.tenant.clone(),
        view.period.clone(),
        view.status.clone(),
        view.content_sha256.clone().unwrap_or_default(),
    ];
    let mut row = |line: &str,
                   id: &str,
                   label: &str,
                   a: &StatementAmounts,
                   sci: Option<f64>,
                   unit: &str|
     -> Result<(), ApiError> {
        let mut cells: Vec<String> = head.to_vec();
        cells.extend([line.to_owned(), id.to_owned(), label.to_owned()]);
        let mut amounts = amounts_cells(a);
        amounts[8] = sci.map_or_else(String::new, |s| s.to_string());
        amounts[9] = unit.to_owned();
        cells.extend(amounts);
        cells.extend([
            a.gpu_intervals.to_string(),
            a.covered_gpu_ms.to_string(),
            a.provenance.energy_measured_share.to_string(),
        ]);
        w.write_record(&cells).map_err(fail)
    };
    row("total", "", "", &view.totals, None, "")?;
    for i in &view.instances {
        row("instance", &i.instance_id, "", &i.amounts, None, "")?;
    }
    for wl in &view.workloads {
        row(
            "workload",
            &wl.workload_id,
            &wl.label,
            &wl.amounts,
            Some(wl.sci_g_per_unit),
            &wl.functional_unit,
        )?;
    }
    for adj in &view.adjustments {
        let mut cells: Vec<String> = head.to_vec();
        cells.extend([
            "adjustment".to_owned(),
            adj.period.clone(),
            format!("{} ({})", adj.reason, adj.dated),
            adj.it_energy_mj.to_string(),
        ]);
        // Only energy, marginal and location-based emissions are corrected.
        cells.extend(std::iter::repeat_n(String::new(), 4));
        cells.extend([
            adj.marginal_co2e_g.to_string(),
            adj.location_co2e_g.to_string(),
        ]);
        cells.extend(std::iter::repeat_n(String::new(), 6));
        w.write_record(&cells).map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("rendering a statement as CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("statement CSV: {e}")))
}
