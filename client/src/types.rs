//! Request and response bodies of the query API: the server's own types from
//! `wattprint-api-types`, under the names this client has always used, plus the client's
//! query builders. Sharing the types means the client decodes exactly what the server encodes;
//! decoding tolerates fields an older server omits.

pub use wattprint_api_types::{
    AggregatePoint, Footprint as CoreFootprint, Health, InstanceList, IntensityKinds, RawPoint,
    RestatementTotals, Series, SeriesPoints, Step, WorkloadDetail, WorkloadList,
};
pub use wattprint_api_types::{
    EvidenceEmissions, EvidenceEnergy, EvidenceInstance, EvidenceSources, WorkloadEvidence,
};
pub use wattprint_api_types::{
    StatementAdjustment, StatementAmounts, StatementDay, StatementInstance, StatementList,
    StatementSummary, StatementView as Statement, StatementWorkload,
};

/// The formats a statement is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementFormat {
    /// JSON, byte for byte as issued.
    Json,
    /// One CSV row per line of the statement.
    Csv,
    /// The PDF to file.
    Pdf,
}

impl StatementFormat {
    /// The path suffix that selects it.
    pub fn extension(self) -> &'static str {
        match self {
            StatementFormat::Json => "json",
            StatementFormat::Csv => "csv",
            StatementFormat::Pdf => "pdf",
        }
    }
}
/// The formats of the operator's export of every tenant's statements of a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementExportFormat {
    /// CSV: the statements' CSV rows under one header.
    Csv,
    /// Parquet with the same columns, for data warehouses.
    Parquet,
}

impl StatementExportFormat {
    /// The path suffix that selects it.
    pub fn extension(self) -> &'static str {
        match self {
            StatementExportFormat::Csv => "csv",
            StatementExportFormat::Parquet => "parquet",
        }
    }
}

pub use wattprint_api_types::{
    AverageEmissionsView as AverageEmissions, Basis as WhatIfBasis, CloseRequest,
    CoverageView as Coverage, EmbodiedView as Embodied, FlexibleStartView as FlexibleStart,
    FootprintProvenance as Provenance, FootprintView as Footprint, GpuView as Gpu,
    InstanceUsageView as InstanceUsage, InstanceView as Instance, InstantInput as Timestamp,
    IntensityView as IntensityValue, LabelsRequest, PauseResumeView as PauseResume,
    RestatementView as Restatement, RestatementsView as Restatements, RunView as ScheduleRun,
    StatusFilter as WorkloadStatus, TenantList as OperatorTenantList,
    TenantSummaryView as TenantSummary, TenantView as OperatorTenant, UsageView as Usage,
    WhatIfView as WhatIf, WorkloadRequest as NewWorkload, WorkloadView as Workload,
};

/// Paging of a listing: at most `limit` items after `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items on the page (the server's default when `None`).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Query of `GET /v1/instances/{id}/series`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Start (server default: `to` − 1 h).
    pub from: Option<Timestamp>,
    /// End, exclusive (server default: now).
    pub to: Option<Timestamp>,
    /// Resolution (server default: 5m).
    pub step: Option<Step>,
}

/// Query of `GET /v1/workloads/{id}/whatif`; empty lists take the paper's values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WhatIfQuery {
    /// Flexible Start windows, hours (server default 6, 12, 18, 24).
    pub window_hours: Vec<f64>,
    /// Pause and Resume deadline factors (server default 1.25, 1.5, 1.75, 2).
    pub factors: Vec<f64>,
    /// Intensity basis (server default: actual); on servers that support it.
    pub basis: Option<WhatIfBasis>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn an_empty_raw_series_stays_raw_and_aggregates_decode_by_step() {
        let s: Series = serde_json::from_str(
            r#"{"instance_id":"i","step":"raw","from":"a","to":"b","points":[]}"#,
        )
        .unwrap();
        assert_eq!(s.points, SeriesPoints::Raw(vec![]));
        let s: Series = serde_json::from_str(
            r#"{"instance_id":"i","step":"1h","from":"a","to":"b","points":[{"start":"a","end":"b",
            "energy_mj":7,"energy_kwh":1e-9,"estimated_energy_mj":0,"power_mean_w":null,
            "power_max_w":null,"coverage":0.5,"intensity_g_per_kwh":null,"intensity_kinds":
            {"actual":0,"forecast":0,"fallback_average":0,"missing":1,"replayed":0},"co2e_g":0.0,
            "facility_co2e_g":0.0,"co2e_missing_energy_mj":7}]}"#,
        )
        .unwrap();
        assert_eq!(
            (s.step, s.points.len(), s.points.energy_mj()),
            (Step::Hour, 1, 7)
        );
    }

    #[test]
    fn timestamps_serialize_as_the_api_takes_them() {
        let w = NewWorkload {
            label: "l".into(),
            instance_ids: vec!["i".into()],
            from: 1_700_000_000_000.into(),
            to: Some("2026-11-23T01:00:00Z".into()),
            functional_unit: "run".into(),
            functional_units: 1.0,
            labels: BTreeMap::new(),
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["from"], 1_700_000_000_000i64);
        assert_eq!(v["to"], "2026-11-23T01:00:00Z");
        assert!(v.get("labels").is_none(), "{v}");
        let open = NewWorkload { to: None, ..w };
        assert!(serde_json::to_value(&open).unwrap().get("to").is_none());
        assert_eq!(
            "1700000000000".parse(),
            Ok(Timestamp::UnixMillis(1_700_000_000_000))
        );
        assert_eq!(
            " 2026-11-23T00:00:00Z".parse(),
            Ok(Timestamp::Rfc3339("2026-11-23T00:00:00Z".into()))
        );
        assert_eq!(
            serde_json::to_string(&CloseRequest { end: None }).unwrap(),
            "{}"
        );
    }
}
