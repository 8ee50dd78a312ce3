//! Behaviour every [`Store`] must have, written once against the trait and run against each
//! implementation by `conformance_tests!` (see `tests/sqlite.rs`, `tests/clickhouse.rs`).
//!
//! Each behaviour gets a fresh, empty store and seeds what it needs. Behaviours live in one
//! module per area (samples, timeline, tenancy, workloads, inventory, quarantine, summaries,
//! intensity); this file holds the shared helpers and the list the macro runs. The imports
//! below are the suite's prelude: each area module takes them with `use super::*`.

// Helpers here are not `#[test]` functions, so clippy's test exemption does not reach them.
#![allow(clippy::unwrap_used, dead_code)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wattprint_core::accounting::{split_into_buckets, IntervalAccumulator};
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource, MAX_SAMPLE_SPAN_MS};
use wattprint_core::{
    Bucket, GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    TenantScope, UnixMillis, WorkloadId, BUCKET_MS,
};
use wattprint_store::{
    EnrichedSample, EnrichedShare, GpuRecord, InstanceRecord, InstanceSummary, IntervalRow,
    NewWorkload, QuarantineRecord, QuarantineRetention, RefusalKind, SampleRetention, Store,
    StoreError, TenantSummary, UsageTotals, WorkloadUpdate,
};

mod intensity;
mod inventory;
mod quarantine;
mod samples;
mod summaries;
mod tenancy;
mod timeline;
mod workloads;

pub use intensity::*;
pub use inventory::*;
pub use quarantine::*;
pub use samples::*;
pub use summaries::*;
pub use tenancy::*;
pub use timeline::*;
pub use workloads::*;

/// Generates one `#[tokio::test]` per behaviour, each running it through `$harness`:
/// `async fn(name: &str, behaviour: impl FnOnce(Arc<dyn Store>) -> impl Future<Output = ()>)`,
/// which makes a fresh store (or skips), runs the behaviour and cleans up.
macro_rules! conformance_tests {
    ($harness:path) => {
        conformance_tests!(@by_ref $harness;
            shares_across_two_buckets_land_in_two_exact_intervals,
            intensity_round_trips_and_missing_stays_missing,
            power_integrated_energy_is_counted_as_estimated,
            redelivering_a_batch_changes_nothing,
            a_key_repeated_within_a_batch_counts_once,
            a_conflicting_redelivery_is_reported_and_not_applied,
            unstorable_values_are_refused_one_by_one,
            one_gpu_has_one_timeline,
            instance_samples_overlap_the_range_in_time_order_up_to_the_limit,
            a_long_range_reads_as_its_days_do,
            batched_edge_reads_match_the_samples_written,
            tenants_cannot_see_each_others_data,
            samples_of_an_instance_that_moved_tenants_stay_with_the_old_owner,
            workloads_are_validated_stored_and_listed_newest_first,
            workload_instances_keep_their_order,
            workloads_open_close_and_relabel,
            a_statement_is_issued_once_and_never_changes,
            inventory_upserts_move_gpus_and_list_sorted,
            inventory_history_versions_every_change_at_its_time,
            quarantine_is_newest_first_holds_a_redelivery_once_and_keeps_any_sequence_number,
            quarantine_keeps_what_is_within_its_retention_and_cap,
            quarantine_counts_by_refusal_kind_once_per_record,
            random_batches_in_random_order_match_the_accumulator,
            tenant_summary_sums_every_interval_exactly,
            tenant_summary_counts_buckets_starting_in_the_range,
            pruning_raw_samples_changes_no_total,
            tenant_summaries_never_show_another_tenants_usage,
            redeliveries_never_double_count_in_a_summary,
            a_summary_keeps_the_usage_of_an_instance_given_up,
            the_ledger_is_idempotent_keeps_revisions_and_filters,
            restatement_changes_emissions_by_exactly_e_times_delta_i,
        );
        conformance_tests!(@by_arc $harness;
            concurrent_writers_through_clones_lose_nothing,
        );
    };
    (@by_ref $harness:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $harness(stringify!($name), |store: std::sync::Arc<dyn wattprint_store::Store>| async move {
                    conformance::$name(&*store).await
                })
                .await;
            }
        )*
    };
    (@by_arc $harness:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $harness(stringify!($name), conformance::$name).await;
            }
        )*
    };
}

/// A bucket-aligned instant well after the epoch.
pub const T0: i64 = 1_700_000_100_000 - 1_700_000_100_000 % BUCKET_MS;

pub fn scope(t: &str) -> TenantScope {
    TenantScope::from_verified(TenantId::from(t))
}

pub fn sample(gpu: &str, instance: &str, seq: u64, start: i64, end: i64, mj: u64) -> EnergySample {
    EnergySample {
        host: HostId::from("host-a"),
        gpu: GpuUuid::from(gpu),
        instance: InstanceId::from(instance),
        seq,
        start: UnixMillis(start),
        end: UnixMillis(end),
        energy: Millijoules(mj),
        power: Milliwatts(300_000),
        power_max: Milliwatts(310_000),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 50,
        sm_clock_mhz: 1980,
        chain_start: false,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    }
}

pub fn intensity_for(bucket: Bucket) -> JoinedIntensity {
    JoinedIntensity {
        value: GramsPerKwh(200.0 + (bucket.start().0 / BUCKET_MS % 7) as f64),
        kind: IntensityKind::Actual,
        source: "watttime:CAISO_NORTH".into(),
        point_at: bucket.start(),
        replayed: false,
    }
}

/// What the enricher does: split into buckets and join intensity.
pub fn enrich(s: EnergySample, tenant: &str) -> EnrichedSample {
    enrich_in(s, tenant, "CAISO_NORTH", &|b| Some(intensity_for(b)))
}

/// [`enrich`] with the region and the intensity join given.
pub fn enrich_in(
    s: EnergySample,
    tenant: &str,
    region: &str,
    join: &dyn Fn(Bucket) -> Option<JoinedIntensity>,
) -> EnrichedSample {
    let shares = split_into_buckets(s.start, s.end, s.energy)
        .into_iter()
        .map(|sh| EnrichedShare {
            bucket: sh.bucket,
            energy: sh.energy,
            covered_ms: sh.covered_ms,
            intensity: join(sh.bucket),
        })
        .collect();
    EnrichedSample {
        sample: s,
        tenant: TenantId::from(tenant),
        region: RegionId::from(region),
        pue: 1.2,
        shares,
    }
}

pub fn instance(tenant: &str, id: &str, gpus: &[&str]) -> InstanceRecord {
    InstanceRecord {
        tenant: TenantId::from(tenant),
        instance: InstanceId::from(id),
        region: RegionId::from("CAISO_NORTH"),
        zip_code: Some("94016".into()),
        gpus: gpus
            .iter()
            .map(|g| GpuRecord {
                uuid: GpuUuid::from(*g),
                model: "NVIDIA H100 80GB HBM3".into(),
                power_limit: Milliwatts(700_000),
                host: HostId::from("host-a"),
            })
            .collect(),
    }
}

/// Tenant `acme` owns `i-a` (GPU-A1, GPU-A2) and tenant `globex` owns `i-b` (GPU-B1).
pub async fn seed(store: &dyn Store) {
    store
        .upsert_inventory(&[
            instance("acme", "i-a", &["GPU-A1", "GPU-A2"]),
            instance("globex", "i-b", &["GPU-B1"]),
        ])
        .await
        .unwrap();
}

pub async fn intervals(store: &dyn Store, tenant: &str, inst: &str) -> Vec<IntervalRow> {
    store
        .instance_intervals(
            &scope(tenant),
            &InstanceId::from(inst),
            UnixMillis(i64::MIN),
            UnixMillis(i64::MAX),
        )
        .await
        .unwrap()
}

pub fn total(rows: &[IntervalRow]) -> u64 {
    rows.iter().map(|r| r.energy.0).sum()
}

pub fn workload(label: &str, instances: &[&str]) -> NewWorkload {
    NewWorkload {
        label: label.into(),
        instances: instances.iter().map(|i| InstanceId::from(*i)).collect(),
        from: UnixMillis(T0),
        to: Some(UnixMillis(T0 + 3_600_000)),
        functional_unit: "training run".into(),
        functional_units: 1.0,
        labels: BTreeMap::new(),
    }
}

pub fn not_found_message(err: StoreError) -> String {
    match err {
        StoreError::NotFound(m) => m,
        other => panic!("expected NotFound, got {other:?}"),
    }
}
