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

#[cfg(test)]
mod tests {
    //! Each conversion against a message written out by hand: a field dropped, swapped or
    //! mis-defaulted fails here, whatever the REST side computes.

    use std::collections::BTreeMap;

    use wattprint_api_types::{
        AverageEmissionsView, Basis, CoverageView, EmbodiedView, FlexibleStartView, FootprintView,
        GpuView, InstanceUsageView, IntensityView, PauseResumeView, RestatementTotals as Totals,
        RestatementView, RunView, Step, WhatIfView,
    };
    use wattprint_core::sci::{Footprint, FootprintProvenance};

    use super::*;

    fn gpu_view(uuid: &str) -> GpuView {
        GpuView {
            uuid: uuid.into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            power_limit_w: 700.0,
        }
    }

    fn pb_gpu(uuid: &str) -> pb::Gpu {
        pb::Gpu {
            uuid: uuid.into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            power_limit_w: 700.0,
        }
    }

    #[test]
    fn instances_carry_their_gpus_and_an_absent_zip_as_empty() {
        let cases = [
            (
                InstanceView {
                    instance_id: "i-1".into(),
                    region: "CAISO_NORTH".into(),
                    zip_code: Some("94105".into()),
                    gpus: vec![gpu_view("GPU-a"), gpu_view("GPU-b")],
                },
                Instance {
                    instance_id: "i-1".into(),
                    region: "CAISO_NORTH".into(),
                    zip_code: "94105".into(),
                    gpu_uuids: vec!["GPU-a".into(), "GPU-b".into()],
                    gpus: vec![pb_gpu("GPU-a"), pb_gpu("GPU-b")],
                },
            ),
            (
                InstanceView {
                    instance_id: "i-2".into(),
                    region: "PJM".into(),
                    zip_code: None,
                    gpus: vec![],
                },
                Instance {
                    instance_id: "i-2".into(),
                    region: "PJM".into(),
                    zip_code: String::new(),
                    gpu_uuids: vec![],
                    gpus: vec![],
                },
            ),
        ];
        for (view, expected) in cases {
            assert_eq!(view.into_proto(), expected);
        }
    }

    fn workload_view(to: Option<&str>) -> WorkloadView {
        WorkloadView {
            id: "w-1".into(),
            label: "train".into(),
            instance_ids: vec!["i-1".into()],
            from: "2026-11-23T00:00:00.000Z".into(),
            to: to.map(str::to_owned),
            status: if to.is_some() { "closed" } else { "open" }.into(),
            labels: BTreeMap::from([("team".into(), "ml".into())]),
            functional_unit: "training run".into(),
            functional_units: 2.0,
            created_at: "2026-11-23T00:00:01.000Z".into(),
        }
    }

    fn pb_workload(to: Option<&str>) -> pb::Workload {
        pb::Workload {
            id: "w-1".into(),
            label: "train".into(),
            instance_ids: vec!["i-1".into()],
            from: "2026-11-23T00:00:00.000Z".into(),
            to: to.map(str::to_owned),
            status: if to.is_some() { "closed" } else { "open" }.into(),
            labels: [("team".to_owned(), "ml".to_owned())].into_iter().collect(),
            functional_unit: "training run".into(),
            functional_units: 2.0,
            created_at: "2026-11-23T00:00:01.000Z".into(),
        }
    }

    #[test]
    fn workloads_open_and_closed() {
        for to in [None, Some("2026-11-23T01:00:00.000Z")] {
            assert_eq!(workload_view(to).into_proto(), pb_workload(to));
        }
    }

    fn provenance_view() -> FootprintProvenance {
        FootprintProvenance {
            energy_measured_share: 0.75,
            intervals_actual: 10,
            intervals_forecast: 2,
            intervals_fallback: 1,
            intervals_missing_intensity: 3,
            energy_without_intensity_mj: 4_000,
            intervals_replayed_intensity: 5,
        }
    }

    fn pb_provenance() -> pb::FootprintProvenance {
        pb::FootprintProvenance {
            energy_measured_share: 0.75,
            intervals_actual: 10,
            intervals_forecast: 2,
            intervals_fallback: 1,
            intervals_missing_intensity: 3,
            energy_without_intensity_mj: 4_000,
            intervals_replayed_intensity: 5,
        }
    }

    fn aggregate(average: bool) -> AggregatePoint {
        AggregatePoint {
            start: "2026-11-23T00:00:00.000Z".into(),
            end: "2026-11-23T00:05:00.000Z".into(),
            energy_mj: 3_600_000_000,
            energy_kwh: 1.0,
            estimated_energy_mj: 7,
            power_mean_w: average.then_some(12_000.0),
            power_max_w: average.then_some(700.5),
            coverage: 0.5,
            intensity_g_per_kwh: average.then_some(250.0),
            intensity_kinds: IntensityKinds {
                actual: 1,
                forecast: 2,
                fallback_average: 3,
                missing: 4,
                replayed: 5,
            },
            co2e_g: 250.0,
            facility_co2e_g: 300.0,
            co2e_missing_energy_mj: 9,
            average_intensity_g_per_kwh: average.then_some(400.0),
            average_co2e_g: average.then_some(401.0),
            average_facility_co2e_g: average.then_some(481.2),
        }
    }

    fn pb_aggregate(average: bool) -> pb::AggregatePoint {
        pb::AggregatePoint {
            start: "2026-11-23T00:00:00.000Z".into(),
            end: "2026-11-23T00:05:00.000Z".into(),
            energy_mj: 3_600_000_000,
            energy_kwh: 1.0,
            estimated_energy_mj: 7,
            power_mean_w: average.then_some(12_000.0),
            power_max_w: average.then_some(700.5),
            coverage: 0.5,
            intensity_g_per_kwh: average.then_some(250.0),
            intensity_kinds: Some(pb::IntensityKinds {
                actual: 1,
                forecast: 2,
                fallback_average: 3,
                missing: 4,
                replayed: 5,
            }),
            co2e_g: 250.0,
            facility_co2e_g: 300.0,
            co2e_missing_energy_mj: 9,
            average_intensity_g_per_kwh: average.then_some(400.0),
            average_co2e_g: average.then_some(401.0),
            average_facility_co2e_g: average.then_some(481.2),
        }
    }

    fn raw() -> RawPoint {
        RawPoint {
            start: "2026-11-23T00:00:00.000Z".into(),
            end: "2026-11-23T00:00:01.000Z".into(),
            gpu_uuid: "GPU-a".into(),
            energy_mj: 400_000,
            power_w: 400.0,
            power_max_w: 410.0,
            util_gpu_pct: 97,
            temp_c: 61,
            chain_start: true,
            energy_source: "counter".into(),
            attribution: "exclusive".into(),
        }
    }

    fn pb_raw() -> pb::RawPoint {
        pb::RawPoint {
            start: "2026-11-23T00:00:00.000Z".into(),
            end: "2026-11-23T00:00:01.000Z".into(),
            gpu_uuid: "GPU-a".into(),
            energy_mj: 400_000,
            power_w: 400.0,
            power_max_w: 410.0,
            util_gpu_pct: 97,
            temp_c: 61,
            chain_start: true,
            energy_source: "counter".into(),
            attribution: "exclusive".into(),
        }
    }

    #[test]
    fn series_put_aggregated_and_raw_points_in_their_own_fields() {
        let series = |step, points| Series {
            instance_id: "i-1".into(),
            step,
            from: "a".into(),
            to: "b".into(),
            points,
        };
        let pb_series = |step: &str, points, raw_points| pb::InstanceSeries {
            instance_id: "i-1".into(),
            step: step.into(),
            from: "a".into(),
            to: "b".into(),
            points,
            raw_points,
        };
        let cases = [
            (
                series(
                    Step::Hour,
                    SeriesPoints::Aggregated(vec![aggregate(true), aggregate(false)]),
                ),
                pb_series("1h", vec![pb_aggregate(true), pb_aggregate(false)], vec![]),
            ),
            (
                series(Step::Raw, SeriesPoints::Raw(vec![raw()])),
                pb_series("raw", vec![], vec![pb_raw()]),
            ),
            (
                series(Step::FiveMinutes, SeriesPoints::Aggregated(vec![])),
                pb_series("5m", vec![], vec![]),
            ),
        ];
        for (view, expected) in cases {
            assert_eq!(view.into_proto(), expected);
        }
    }

    fn usage(power_max_w: Option<f64>) -> UsageView {
        UsageView {
            it_energy_mj: 7_200_000_000,
            it_energy_kwh: 2.0,
            estimated_energy_mj: 11,
            facility_energy_kwh: 2.4,
            operational_it_co2e_g: 500.0,
            operational_co2e_g: 600.0,
            gpu_intervals: 24,
            covered_gpu_ms: 7_200_000,
            power_max_w,
            provenance: provenance_view(),
        }
    }

    fn pb_usage(power_max_w: Option<f64>) -> pb::Usage {
        pb::Usage {
            it_energy_mj: 7_200_000_000,
            it_energy_kwh: 2.0,
            estimated_energy_mj: 11,
            facility_energy_kwh: 2.4,
            operational_it_co2e_g: 500.0,
            operational_co2e_g: 600.0,
            gpu_intervals: 24,
            covered_gpu_ms: 7_200_000,
            power_max_w,
            provenance: Some(pb_provenance()),
        }
    }

    #[test]
    fn summaries_keep_totals_and_each_instance() {
        let view = TenantSummaryView {
            from: "2026-11-01T00:00:00.000Z".into(),
            to: "2026-12-01T00:00:00.000Z".into(),
            totals: usage(Some(700.0)),
            instances: vec![InstanceUsageView {
                instance_id: "i-1".into(),
                gpus: 8,
                usage: usage(None),
            }],
        };
        let expected = pb::TenantSummary {
            from: "2026-11-01T00:00:00.000Z".into(),
            to: "2026-12-01T00:00:00.000Z".into(),
            totals: Some(pb_usage(Some(700.0))),
            instances: vec![pb::InstanceUsage {
                instance_id: "i-1".into(),
                gpus: 8,
                usage: Some(pb_usage(None)),
            }],
        };
        assert_eq!(view.into_proto(), expected);
    }

    #[test]
    fn footprints_flatten_core_fields_and_keep_the_average() {
        let detail = |average: Option<AverageEmissionsView>| WorkloadDetail {
            workload: workload_view(None),
            footprint: FootprintView {
                footprint: Footprint {
                    it_energy_mj: 3_600_000_000,
                    it_energy_kwh: 1.0,
                    facility_energy_kwh: 1.2,
                    operational_it_co2e_g: 250.0,
                    operational_co2e_g: 300.0,
                    embodied_co2e_g: 20.0,
                    total_co2e_g: 320.0,
                    functional_units: 2.0,
                    sci_g_per_unit: 160.0,
                    provenance: provenance_view(),
                },
                functional_unit: "training run".into(),
                coverage: CoverageView {
                    expected_gpu_ms: 3_600_000,
                    covered_gpu_ms: 3_500_000,
                },
                embodied: EmbodiedView {
                    gpus: 8,
                    unknown_models: vec!["Tesla X".into()],
                },
                missing_instances: vec!["i-gone".into()],
                average,
            },
        };
        let expected = |average: Option<pb::AverageEmissions>| WorkloadFootprint {
            workload_id: "w-1".into(),
            it_energy_mj: 3_600_000_000,
            it_energy_kwh: 1.0,
            facility_energy_kwh: 1.2,
            operational_co2e_g: 300.0,
            embodied_co2e_g: 20.0,
            sci_g_per_unit: 160.0,
            functional_unit: "training run".into(),
            functional_units: 2.0,
            operational_it_co2e_g: 250.0,
            total_co2e_g: 320.0,
            provenance: Some(pb_provenance()),
            coverage: Some(pb::Coverage {
                expected_gpu_ms: 3_600_000,
                covered_gpu_ms: 3_500_000,
            }),
            embodied: Some(pb::EmbodiedInputs {
                gpus: 8,
                unknown_models: vec!["Tesla X".into()],
            }),
            missing_instances: vec!["i-gone".into()],
            average,
            workload: Some(pb_workload(None)),
        };
        let average = AverageEmissionsView {
            operational_it_co2e_g: 400.0,
            operational_co2e_g: 480.0,
            total_co2e_g: 500.0,
            sci_g_per_unit: 250.0,
            intensity_g_per_kwh: Some(400.0),
            energy_without_intensity_mj: 3,
            intensity_sources: vec!["egrid2023:CAMX".into()],
        };
        let pb_average = pb::AverageEmissions {
            operational_it_co2e_g: 400.0,
            operational_co2e_g: 480.0,
            total_co2e_g: 500.0,
            sci_g_per_unit: 250.0,
            intensity_g_per_kwh: Some(400.0),
            energy_without_intensity_mj: 3,
            intensity_sources: vec!["egrid2023:CAMX".into()],
        };
        let cases = [
            (detail(None), expected(None)),
            (detail(Some(average)), expected(Some(pb_average))),
        ];
        for (view, expected) in cases {
            assert_eq!(view.into_proto(), expected);
        }
    }

    #[test]
    fn whatifs_keep_every_result_and_the_basis_name() {
        let view = WhatIfView {
            workload_id: "w-1".into(),
            region: "CAISO_NORTH".into(),
            basis: "in words".into(),
            basis_kind: Basis::Forecast,
            intensity_source: "watttime:CAISO_NORTH".into(),
            intensity_replayed: true,
            first_slot: "s0".into(),
            profile_slots: 12,
            energy_kwh: 1.5,
            intensity_known_until: "k".into(),
            flexible_start: vec![FlexibleStartView {
                window_hours: 6.0,
                actual_co2e_g: 100.0,
                best_start: "b".into(),
                best_delay_minutes: 35,
                best_co2e_g: 80.0,
                worst_start: "w".into(),
                worst_co2e_g: 120.0,
                saving_co2e_g: 20.0,
                saving_pct: 20.0,
                realized_co2e_g: Some(90.0),
                realized_saving_co2e_g: None,
            }],
            pause_resume: vec![PauseResumeView {
                factor: 1.5,
                deadline: "d".into(),
                actual_co2e_g: 100.0,
                co2e_g: 70.0,
                saving_co2e_g: 30.0,
                saving_pct: 30.0,
                paused_minutes: 25,
                schedule: vec![RunView {
                    from: "f".into(),
                    to: "t".into(),
                }],
                realized_co2e_g: None,
                realized_saving_co2e_g: Some(-4.0),
            }],
            unavailable: vec!["flexible start 24 h: no data".into()],
        };
        let expected = WorkloadWhatIf {
            workload_id: "w-1".into(),
            region: "CAISO_NORTH".into(),
            basis: "in words".into(),
            intensity_source: "watttime:CAISO_NORTH".into(),
            intensity_replayed: true,
            first_slot: "s0".into(),
            profile_slots: 12,
            energy_kwh: 1.5,
            intensity_known_until: "k".into(),
            flexible_start: vec![FlexibleStart {
                window_hours: 6.0,
                actual_co2e_g: 100.0,
                best_start: "b".into(),
                best_delay_minutes: 35,
                best_co2e_g: 80.0,
                worst_start: "w".into(),
                worst_co2e_g: 120.0,
                saving_co2e_g: 20.0,
                saving_pct: 20.0,
                realized_co2e_g: Some(90.0),
                realized_saving_co2e_g: None,
            }],
            pause_resume: vec![PauseResume {
                factor: 1.5,
                deadline: "d".into(),
                actual_co2e_g: 100.0,
                co2e_g: 70.0,
                saving_co2e_g: 30.0,
                saving_pct: 30.0,
                paused_minutes: 25,
                schedule: vec![WorkRun {
                    from: "f".into(),
                    to: "t".into(),
                }],
                realized_co2e_g: None,
                realized_saving_co2e_g: Some(-4.0),
            }],
            unavailable: vec!["flexible start 24 h: no data".into()],
            basis_kind: "forecast".into(),
        };
        assert_eq!(view.into_proto(), expected);
        assert_eq!(empty_whatif().into_proto().basis_kind, "actual");
    }

    fn empty_whatif() -> WhatIfView {
        WhatIfView {
            workload_id: String::new(),
            region: String::new(),
            basis: String::new(),
            basis_kind: Basis::Actual,
            intensity_source: String::new(),
            intensity_replayed: false,
            first_slot: String::new(),
            profile_slots: 0,
            energy_kwh: 0.0,
            intensity_known_until: String::new(),
            flexible_start: vec![],
            pause_resume: vec![],
            unavailable: vec![],
        }
    }

    #[test]
    fn restatements_keep_a_missing_previous_intensity_absent() {
        let intensity = |kind: &str, value| IntensityView {
            value_g_per_kwh: value,
            kind: kind.into(),
            source: "src".into(),
            point_at: "p".into(),
            replayed: false,
        };
        let pb_intensity = |kind: &str, value| JoinedIntensity {
            value_g_per_kwh: value,
            kind: kind.into(),
            source: "src".into(),
            point_at: "p".into(),
            replayed: false,
        };
        let restatement = |previous| RestatementView {
            instance: "i-1".into(),
            gpu: "GPU-a".into(),
            bucket_start: "b".into(),
            region: "PJM".into(),
            energy_mj: 3_600_000_000,
            pue: 1.2,
            previous,
            current: intensity("actual", 300.0),
            reason: "actual arrived".into(),
            restated_at: "r".into(),
            it_co2e_delta_g: 50.0,
            facility_co2e_delta_g: 60.0,
        };
        let pb_restatement = |previous| Restatement {
            instance: "i-1".into(),
            gpu: "GPU-a".into(),
            bucket_start: "b".into(),
            region: "PJM".into(),
            energy_mj: 3_600_000_000,
            pue: 1.2,
            previous,
            current: Some(pb_intensity("actual", 300.0)),
            reason: "actual arrived".into(),
            restated_at: "r".into(),
            it_co2e_delta_g: 50.0,
            facility_co2e_delta_g: 60.0,
        };
        let view = RestatementsView {
            from: "f".into(),
            to: "t".into(),
            restatements: vec![
                restatement(Some(intensity("forecast", 250.0))),
                restatement(None),
            ],
            totals: Totals {
                intervals: 2,
                it_co2e_delta_g: 100.0,
                facility_co2e_delta_g: 120.0,
            },
        };
        let expected = ListRestatementsResponse {
            from: "f".into(),
            to: "t".into(),
            restatements: vec![
                pb_restatement(Some(pb_intensity("forecast", 250.0))),
                pb_restatement(None),
            ],
            totals: Some(RestatementTotals {
                intervals: 2,
                it_co2e_delta_g: 100.0,
                facility_co2e_delta_g: 120.0,
            }),
        };
        assert_eq!(view.into_proto(), expected);
    }
}
