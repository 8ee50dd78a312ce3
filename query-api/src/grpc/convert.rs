//! The REST views in their gRPC form: one [`IntoProto`] impl per view, field for field.
//!
//! Why here: the views live in `wattprint-api-types` and the messages in `wattprint-proto`, so
//! neither may implement `From` for the other; this trait is the adapter's own. Invariant: a
//! gRPC answer carries exactly the REST answer's values (absent optionals stay absent, an
//! absent zip code is `""`); the tests below pin each conversion to fixed expected messages.

use wattprint_api_types::{
    AggregatePoint, InstanceView, IntensityKinds, IntensityView, RawPoint, RestatementsView,
    Series, SeriesPoints, TenantSummaryView, UsageView, WhatIfView, WorkloadDetail, WorkloadView,
};
use wattprint_proto::v1 as pb;
use wattprint_proto::v1::{
    FlexibleStart, Instance, JoinedIntensity, ListRestatementsResponse, PauseResume, Restatement,
    RestatementTotals, WorkRun, WorkloadFootprint, WorkloadWhatIf,
};

/// Converts a view into its gRPC message (a local `From`: both types are other crates').
pub trait IntoProto<T> {
    /// The message carrying this view's values.
    fn into_proto(self) -> T;
}

/// The wire form of core's provenance (same field names as the REST JSON).
fn provenance(p: &wattprint_core::sci::FootprintProvenance) -> pb::FootprintProvenance {
    pb::FootprintProvenance {
        energy_measured_share: p.energy_measured_share,
        intervals_actual: p.intervals_actual,
        intervals_forecast: p.intervals_forecast,
        intervals_fallback: p.intervals_fallback,
        intervals_missing_intensity: p.intervals_missing_intensity,
        energy_without_intensity_mj: p.energy_without_intensity_mj,
        intervals_replayed_intensity: p.intervals_replayed_intensity,
    }
}

impl IntoProto<Instance> for InstanceView {
    fn into_proto(self) -> Instance {
        let v = self;
        Instance {
            instance_id: v.instance_id,
            region: v.region,
            zip_code: v.zip_code.unwrap_or_default(),
            gpu_uuids: v.gpus.iter().map(|g| g.uuid.clone()).collect(),
            gpus: v
                .gpus
                .into_iter()
                .map(|g| pb::Gpu {
                    uuid: g.uuid,
                    model: g.model,
                    power_limit_w: g.power_limit_w,
                })
                .collect(),
        }
    }
}

impl IntoProto<pb::Workload> for WorkloadView {
    fn into_proto(self) -> pb::Workload {
        let v = self;
        pb::Workload {
            id: v.id,
            label: v.label,
            instance_ids: v.instance_ids,
            from: v.from,
            to: v.to,
            status: v.status,
            labels: v.labels.into_iter().collect(),
            functional_unit: v.functional_unit,
            functional_units: v.functional_units,
            created_at: v.created_at,
        }
    }
}

impl IntoProto<WorkloadFootprint> for WorkloadDetail {
    fn into_proto(self) -> WorkloadFootprint {
        let d = self;
        let view = d.footprint;
        let f = &view.footprint;
        WorkloadFootprint {
            workload_id: d.workload.id.clone(),
            it_energy_mj: f.it_energy_mj,
            it_energy_kwh: f.it_energy_kwh,
            facility_energy_kwh: f.facility_energy_kwh,
            operational_co2e_g: f.operational_co2e_g,
            embodied_co2e_g: f.embodied_co2e_g,
            sci_g_per_unit: f.sci_g_per_unit,
            functional_unit: view.functional_unit,
            functional_units: f.functional_units,
            operational_it_co2e_g: f.operational_it_co2e_g,
            total_co2e_g: f.total_co2e_g,
            provenance: Some(provenance(&f.provenance)),
            coverage: Some(pb::Coverage {
                expected_gpu_ms: view.coverage.expected_gpu_ms,
                covered_gpu_ms: view.coverage.covered_gpu_ms,
            }),
            embodied: Some(pb::EmbodiedInputs {
                gpus: view.embodied.gpus as u64,
                unknown_models: view.embodied.unknown_models,
            }),
            missing_instances: view.missing_instances,
            average: view.average.map(|a| pb::AverageEmissions {
                operational_it_co2e_g: a.operational_it_co2e_g,
                operational_co2e_g: a.operational_co2e_g,
                total_co2e_g: a.total_co2e_g,
                sci_g_per_unit: a.sci_g_per_unit,
                intensity_g_per_kwh: a.intensity_g_per_kwh,
                energy_without_intensity_mj: a.energy_without_intensity_mj,
                intensity_sources: a.intensity_sources,
            }),
            workload: Some(d.workload.into_proto()),
        }
    }
}

impl IntoProto<pb::IntensityKinds> for IntensityKinds {
    fn into_proto(self) -> pb::IntensityKinds {
        let k = self;
        pb::IntensityKinds {
            actual: k.actual,
            forecast: k.forecast,
            fallback_average: k.fallback_average,
            missing: k.missing,
            replayed: k.replayed,
        }
    }
}

impl IntoProto<pb::AggregatePoint> for AggregatePoint {
    fn into_proto(self) -> pb::AggregatePoint {
        let p = self;
        pb::AggregatePoint {
            start: p.start,
            end: p.end,
            energy_mj: p.energy_mj,
            energy_kwh: p.energy_kwh,
            estimated_energy_mj: p.estimated_energy_mj,
            power_mean_w: p.power_mean_w,
            power_max_w: p.power_max_w,
            coverage: p.coverage,
            intensity_g_per_kwh: p.intensity_g_per_kwh,
            intensity_kinds: Some(p.intensity_kinds.into_proto()),
            co2e_g: p.co2e_g,
            facility_co2e_g: p.facility_co2e_g,
            co2e_missing_energy_mj: p.co2e_missing_energy_mj,
            average_intensity_g_per_kwh: p.average_intensity_g_per_kwh,
            average_co2e_g: p.average_co2e_g,
            average_facility_co2e_g: p.average_facility_co2e_g,
        }
    }
}

impl IntoProto<pb::RawPoint> for RawPoint {
    fn into_proto(self) -> pb::RawPoint {
        let p = self;
        pb::RawPoint {
            start: p.start,
            end: p.end,
            gpu_uuid: p.gpu_uuid,
            energy_mj: p.energy_mj,
            power_w: p.power_w,
            power_max_w: p.power_max_w,
            util_gpu_pct: p.util_gpu_pct,
            temp_c: p.temp_c,
            chain_start: p.chain_start,
            energy_source: p.energy_source,
            attribution: p.attribution,
        }
    }
}

impl IntoProto<pb::InstanceSeries> for Series {
    fn into_proto(self) -> pb::InstanceSeries {
        let s = self;
        let (points, raw_points) = match s.points {
            SeriesPoints::Aggregated(p) => (
                p.into_iter().map(IntoProto::into_proto).collect(),
                Vec::new(),
            ),
            SeriesPoints::Raw(p) => (
                Vec::new(),
                p.into_iter().map(IntoProto::into_proto).collect(),
            ),
        };
        pb::InstanceSeries {
            instance_id: s.instance_id,
            step: s.step.as_str().to_owned(),
            from: s.from,
            to: s.to,
            points,
            raw_points,
        }
    }
}

impl IntoProto<pb::Usage> for UsageView {
    fn into_proto(self) -> pb::Usage {
        let u = self;
        pb::Usage {
            it_energy_mj: u.it_energy_mj,
            it_energy_kwh: u.it_energy_kwh,
            estimated_energy_mj: u.estimated_energy_mj,
            facility_energy_kwh: u.facility_energy_kwh,
            operational_it_co2e_g: u.operational_it_co2e_g,
            operational_co2e_g: u.operational_co2e_g,
            gpu_intervals: u.gpu_intervals,
            covered_gpu_ms: u.covered_gpu_ms,
            power_max_w: u.power_max_w,
            provenance: Some(provenance(&u.provenance)),
        }
    }
}

impl IntoProto<pb::TenantSummary> for TenantSummaryView {
    fn into_proto(self) -> pb::TenantSummary {
        let v = self;
        pb::TenantSummary {
            from: v.from,
            to: v.to,
            totals: Some(v.totals.into_proto()),
            instances: v
                .instances
                .into_iter()
                .map(|i| pb::InstanceUsage {
                    instance_id: i.instance_id,
                    gpus: i.gpus,
                    usage: Some(i.usage.into_proto()),
                })
                .collect(),
        }
    }
}

impl IntoProto<WorkloadWhatIf> for WhatIfView {
    fn into_proto(self) -> WorkloadWhatIf {
        let v = self;
        WorkloadWhatIf {
            workload_id: v.workload_id,
            region: v.region,
            basis: v.basis,
            intensity_source: v.intensity_source,
            intensity_replayed: v.intensity_replayed,
            first_slot: v.first_slot,
            profile_slots: v.profile_slots as u64,
            energy_kwh: v.energy_kwh,
            intensity_known_until: v.intensity_known_until,
            flexible_start: v
                .flexible_start
                .into_iter()
                .map(|f| FlexibleStart {
                    window_hours: f.window_hours,
                    actual_co2e_g: f.actual_co2e_g,
                    best_start: f.best_start,
                    best_delay_minutes: f.best_delay_minutes,
                    best_co2e_g: f.best_co2e_g,
                    worst_start: f.worst_start,
                    worst_co2e_g: f.worst_co2e_g,
                    saving_co2e_g: f.saving_co2e_g,
                    saving_pct: f.saving_pct,
                    realized_co2e_g: f.realized_co2e_g,
                    realized_saving_co2e_g: f.realized_saving_co2e_g,
                })
                .collect(),
            pause_resume: v
                .pause_resume
                .into_iter()
                .map(|p| PauseResume {
                    factor: p.factor,
                    deadline: p.deadline,
                    actual_co2e_g: p.actual_co2e_g,
                    co2e_g: p.co2e_g,
                    saving_co2e_g: p.saving_co2e_g,
                    saving_pct: p.saving_pct,
                    paused_minutes: p.paused_minutes,
                    schedule: p
                        .schedule
                        .into_iter()
                        .map(|r| WorkRun {
                            from: r.from,
                            to: r.to,
                        })
                        .collect(),
                    realized_co2e_g: p.realized_co2e_g,
                    realized_saving_co2e_g: p.realized_saving_co2e_g,
                })
                .collect(),
            unavailable: v.unavailable,
            basis_kind: v.basis_kind.as_str().to_owned(),
        }
    }
}

impl IntoProto<JoinedIntensity> for IntensityView {
    fn into_proto(self) -> JoinedIntensity {
        let v = self;
        JoinedIntensity {
            value_g_per_kwh: v.value_g_per_kwh,
            kind: v.kind,
            source: v.source,
            point_at: v.point_at,
            replayed: v.replayed,
        }
    }
}

impl IntoProto<ListRestatementsResponse> for RestatementsView {
    fn into_proto(self) -> ListRestatementsResponse {
        let v = self;
        ListRestatementsResponse {
            from: v.from,
            to: v.to,
            restatements: v
                .restatements
                .into_iter()
                .map(|r| Restatement {
                    instance: r.instance,
                    gpu: r.gpu,
                    bucket_start: r.bucket_start,
                    region: r.region,
                    energy_mj: r.energy_mj,
                    pue: r.pue,
                    previous: r.previous.map(IntoProto::into_proto),
                    current: Some(r.current.into_proto()),
                    reason: r.reason,
                    restated_at: r.restated_at,
                    it_co2e_delta_g: r.it_co2e_delta_g,
                    facility_co2e_delta_g: r.facility_co2e_delta_g,
                })
                .collect(),
            totals: Some(RestatementTotals {
                intervals: v.totals.intervals,
                it_co2e_delta_g: v.totals.it_co2e_delta_g,
                facility_co2e_delta_g: v.totals.facility_co2e_delta_g,
            }),
        }
    }
}

