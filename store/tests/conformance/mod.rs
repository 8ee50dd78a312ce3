//! Behaviour every [`Store`] must have, written once against the trait and run against each
//! implementation by `conformance_tests!` (see `tests/sqlite.rs`, `tests/clickhouse.rs`).
//!
//! Each behaviour gets a fresh, empty store and seeds what it needs.

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
    NewWorkload, QuarantineRecord, RefusalKind, Store, StoreError, TenantSummary, UsageTotals,
    WorkloadUpdate,
};

mod intensity;
pub use intensity::{
    restatement_changes_emissions_by_exactly_e_times_delta_i,
    the_ledger_is_idempotent_keeps_revisions_and_filters,
};

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
            tenants_cannot_see_each_others_data,
            samples_of_an_instance_that_moved_tenants_stay_with_the_old_owner,
            workloads_are_validated_stored_and_listed_newest_first,
            workload_instances_keep_their_order,
            workloads_open_close_and_relabel,
            inventory_upserts_move_gpus_and_list_sorted,
            quarantine_is_newest_first_holds_a_redelivery_once_and_keeps_any_sequence_number,
            random_batches_in_random_order_match_the_accumulator,
            tenant_summary_sums_every_interval_exactly,
            tenant_summary_counts_buckets_starting_in_the_range,
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

pub async fn shares_across_two_buckets_land_in_two_exact_intervals(store: &dyn Store) {
    seed(store).await;
    // 1 s across the edge at T0 + 5 min: 250 ms before, 750 ms after; 1001 mJ does not divide.
    let edge = T0 + BUCKET_MS;
    let a = sample("GPU-A1", "i-a", 1, edge - 250, edge + 750, 1001);
    // A second sample entirely in the first bucket, with a higher power reading.
    let mut b = sample("GPU-A1", "i-a", 2, edge - 2000, edge - 1000, 500);
    b.power = Milliwatts(650_000);
    let out = store
        .write_samples(&[enrich(a, "acme"), enrich(b, "acme")])
        .await
        .unwrap();
    assert_eq!(
        (out.inserted, out.duplicates, out.conflicts.len()),
        (2, 0, 0)
    );

    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(rows.len(), 2);
    let (first, second) = (&rows[0], &rows[1]);
    assert_eq!(first.bucket.start(), UnixMillis(T0));
    assert_eq!(second.bucket.start(), UnixMillis(edge));
    // floor(1001 * 250 / 1000) = 250 before the edge, 751 after; plus 500 from `b`.
    assert_eq!(first.energy, Millijoules(250 + 500));
    assert_eq!(second.energy, Millijoules(751));
    assert_eq!(total(&rows), 1001 + 500);
    assert_eq!((first.covered_ms, second.covered_ms), (250 + 1000, 750));
    assert_eq!((first.samples, second.samples), (2, 1));
    assert_eq!(first.power_max, Milliwatts(650_000));
    assert_eq!(second.power_max, Milliwatts(310_000));
    assert_eq!(first.estimated, Millijoules(0));
    assert_eq!(first.region, RegionId::from("CAISO_NORTH"));
    assert_eq!(first.pue, 1.2);
    assert_eq!(first.intensity, Some(intensity_for(first.bucket)));
    assert_eq!(second.intensity, Some(intensity_for(second.bucket)));
    assert_eq!(first.gpu, GpuUuid::from("GPU-A1"));
    assert_eq!(first.instance, InstanceId::from("i-a"));

    // The range is on bucket start, half-open.
    let only_second = store
        .instance_intervals(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(edge),
            UnixMillis(edge + 1),
        )
        .await
        .unwrap();
    assert_eq!(only_second, vec![second.clone()]);
    let none = store
        .instance_intervals(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(T0 + 1),
            UnixMillis(edge),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Samples arrive here in sequence order, where both stores agree: the embedded store keeps
/// the first join written, the ClickHouse store the join of the lowest sequence number.
pub async fn intensity_round_trips_and_missing_stays_missing(store: &dyn Store) {
    seed(store).await;
    let mut with = enrich(sample("GPU-A1", "i-a", 1, T0 + 1000, T0 + 2000, 10), "acme");
    with.shares[0].intensity = Some(JoinedIntensity {
        value: GramsPerKwh(412.25),
        kind: IntensityKind::FallbackAverage,
        source: "egrid2023:CAMX".into(),
        point_at: UnixMillis(T0 - 7 * BUCKET_MS),
        replayed: true,
    });
    let mut without = enrich(sample("GPU-A2", "i-a", 1, T0 + 1000, T0 + 2000, 10), "acme");
    without.shares[0].intensity = None;
    store.write_samples(&[with.clone(), without]).await.unwrap();
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(rows.len(), 2);
    // By bucket then GPU.
    assert_eq!(rows[0].gpu, GpuUuid::from("GPU-A1"));
    assert_eq!(rows[0].intensity, with.shares[0].intensity);
    assert_eq!(rows[1].intensity, None);

    // A later sample in the joined bucket keeps the first join.
    let mut later = enrich(sample("GPU-A1", "i-a", 2, T0 + 2000, T0 + 3000, 10), "acme");
    later.shares[0].intensity.as_mut().unwrap().value = GramsPerKwh(1.0);
    store.write_samples(&[later]).await.unwrap();
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(rows[0].intensity, with.shares[0].intensity);
    assert_eq!(rows[0].energy, Millijoules(20));

    // An interval first written without intensity takes the first join that arrives.
    let filled = enrich(sample("GPU-A2", "i-a", 2, T0 + 2000, T0 + 3000, 10), "acme");
    store
        .write_samples(std::slice::from_ref(&filled))
        .await
        .unwrap();
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(rows[1].gpu, GpuUuid::from("GPU-A2"));
    assert_eq!(rows[1].intensity, filled.shares[0].intensity);
    assert_eq!(rows[1].energy, Millijoules(20));
}

pub async fn power_integrated_energy_is_counted_as_estimated(store: &dyn Store) {
    seed(store).await;
    let mut s = sample("GPU-A1", "i-a", 1, T0, T0 + 1000, 300);
    s.energy_source = EnergySource::PowerIntegration;
    let c = sample("GPU-A1", "i-a", 2, T0 + 1000, T0 + 2000, 200);
    store
        .write_samples(&[enrich(s, "acme"), enrich(c, "acme")])
        .await
        .unwrap();
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(
        (rows[0].energy, rows[0].estimated),
        (Millijoules(500), Millijoules(300))
    );
}

pub async fn redelivering_a_batch_changes_nothing(store: &dyn Store) {
    seed(store).await;
    let batch: Vec<_> = (0..10)
        .map(|i| {
            let start = T0 + i * 60_000 + 30_000; // several cross bucket edges
            enrich(
                sample(
                    "GPU-A1",
                    "i-a",
                    i as u64,
                    start,
                    start + 60_000,
                    1_000 + i as u64,
                ),
                "acme",
            )
        })
        .collect();
    let first = store.write_samples(&batch).await.unwrap();
    assert_eq!((first.inserted, first.duplicates), (10, 0));
    let before = intervals(store, "acme", "i-a").await;
    for _ in 0..3 {
        let again = store.write_samples(&batch).await.unwrap();
        assert_eq!(
            (again.inserted, again.duplicates, again.conflicts.len()),
            (0, 10, 0)
        );
    }
    let after = intervals(store, "acme", "i-a").await;
    assert_eq!(before, after);
    assert_eq!(total(&after), (0..10).map(|i| 1_000 + i).sum::<u64>());

    // Redelivery mixed with new samples in one batch: only the new one counts.
    let mut mixed = batch[..3].to_vec();
    mixed.push(enrich(
        sample("GPU-A1", "i-a", 99, T0, T0 + 1000, 7),
        "acme",
    ));
    let out = store.write_samples(&mixed).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (1, 3));
    assert_eq!(
        total(&intervals(store, "acme", "i-a").await),
        total(&after) + 7
    );
}

pub async fn a_key_repeated_within_a_batch_counts_once(store: &dyn Store) {
    seed(store).await;
    let s = enrich(sample("GPU-A1", "i-a", 1, T0, T0 + 1000, 100), "acme");
    let mut changed = s.clone();
    changed.sample.temp_c = 77;
    let out = store
        .write_samples(&[s.clone(), s.clone(), changed])
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    assert_eq!(out.duplicates, 1);
    assert_eq!(out.conflicts, vec![(GpuUuid::from("GPU-A1"), 1)]);
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!((total(&rows), rows[0].samples), (100, 1));
    let stored = store
        .instance_samples(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(T0),
            UnixMillis(T0 + 1),
            10,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sample, s.sample);
}

pub async fn a_conflicting_redelivery_is_reported_and_not_applied(store: &dyn Store) {
    seed(store).await;
    let original = enrich(sample("GPU-A1", "i-a", 5, T0, T0 + 1000, 100), "acme");
    store
        .write_samples(std::slice::from_ref(&original))
        .await
        .unwrap();
    let before = intervals(store, "acme", "i-a").await;

    let mut changed = original.clone();
    changed.sample.energy = Millijoules(999);
    changed.shares[0].energy = Millijoules(999);
    let mut other_field = original.clone();
    other_field.sample.temp_c = 51;
    // The same (GPU, seq) claimed by another instance, of another tenant.
    let mut elsewhere = original.clone();
    elsewhere.sample.instance = InstanceId::from("i-b");
    elsewhere.tenant = TenantId::from("globex");
    let out = store
        .write_samples(&[changed, other_field, elsewhere])
        .await
        .unwrap();
    assert_eq!(out.inserted, 0);
    assert_eq!(out.duplicates, 0);
    assert_eq!(out.conflicts, vec![(GpuUuid::from("GPU-A1"), 5); 3]);
    assert_eq!(intervals(store, "acme", "i-a").await, before);
    assert!(intervals(store, "globex", "i-b").await.is_empty());
    // The stored sample is the original.
    let samples = store
        .instance_samples(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(T0),
            UnixMillis(T0 + 1),
            10,
        )
        .await
        .unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].sample, original.sample);
}

pub async fn unstorable_values_are_refused_one_by_one(store: &dyn Store) {
    seed(store).await;
    // Each sample in its own second, so only its values can be wrong with it.
    let at = |seq: u64, mj: u64| {
        let start = T0 + (seq as i64) * 1000;
        enrich(
            sample("GPU-A1", "i-a", seq, start, start + 1000, mj),
            "acme",
        )
    };
    let ok = at(1, 100);
    let huge = at(2, i64::MAX as u64 + 1);
    let big_seq = {
        let mut s = at(3, 1);
        s.sample.seq = u64::MAX;
        s
    };
    let mut bad_shares = at(4, 100);
    bad_shares.shares[0].energy = Millijoules(99);
    let mut nan = at(5, 100);
    nan.shares[0].intensity.as_mut().unwrap().value = GramsPerKwh(f64::NAN);
    // Longer than any sample may be: reads look back only that far.
    let long = enrich(
        sample(
            "GPU-A1",
            "i-a",
            7,
            T0 + 100_000,
            T0 + 100_000 + MAX_SAMPLE_SPAN_MS + 1,
            100,
        ),
        "acme",
    );
    let mut bad_pue = at(6, 100);
    bad_pue.pue = 0.0;
    let also_ok = at(8, 200);
    let out = store
        .write_samples(&[
            ok.clone(),
            huge,
            big_seq,
            bad_shares,
            nan,
            long,
            bad_pue,
            also_ok,
        ])
        .await
        .unwrap();
    assert_eq!(out.inserted, 2, "{out:?}");
    let reasons: Vec<(u64, RefusalKind, &str)> = out
        .refused
        .iter()
        .map(|r| (r.seq, r.kind, r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    for (seq, needle) in [
        (2, "energy (mJ)"),
        (u64::MAX, "sequence number"),
        (4, "shares"),
        (5, "intensity"),
        (7, "span of 900001 ms"),
        (6, "PUE"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(s, k, r)| *s == seq && *k == RefusalKind::Invalid && r.contains(needle)),
            "seq {seq}: {needle} not in {reasons:?}"
        );
    }
    // Only the valid samples were written, exactly.
    assert_eq!(total(&intervals(store, "acme", "i-a").await), 300);
    // The largest storable energy is accepted exactly.
    let max = at(9, i64::MAX as u64 - 300);
    assert!(store
        .write_samples(&[max])
        .await
        .unwrap()
        .refused
        .is_empty());
    assert_eq!(
        total(&intervals(store, "acme", "i-a").await),
        i64::MAX as u64
    );
}

pub async fn one_gpu_has_one_timeline(store: &dyn Store) {
    seed(store).await;
    let s = |seq: u64, from: i64, to: i64, mj: u64| {
        enrich(sample("GPU-A1", "i-a", seq, T0 + from, T0 + to, mj), "acme")
    };
    let first = vec![
        s(1, 0, 1000, 100),
        s(2, 1000, 2000, 100),
        s(3, 2000, 3000, 100),
    ];
    assert_eq!(store.write_samples(&first).await.unwrap().inserted, 3);
    // The same time again under new seqs (a backfill run twice, a clock stepped back), across
    // an edge, inside, around, or overlapping a sample earlier in the same batch: all refused,
    // while a sample that only touches stored ones is written.
    let hostile = vec![
        s(11, 0, 1000, 100),
        s(12, 2500, 3500, 100),
        s(13, 1100, 1200, 10),
        s(14, -500, 3500, 400),
        s(15, 3000, 4000, 100),
        s(16, 3999, 4500, 50),
    ];
    let out = store.write_samples(&hostile).await.unwrap();
    assert_eq!(out.inserted, 1, "{out:?}");
    let refused: Vec<u64> = out.refused.iter().map(|r| r.seq).collect();
    assert_eq!(refused, vec![11, 12, 13, 14, 16]);
    assert!(out
        .refused
        .iter()
        .all(|r| r.kind == RefusalKind::Overlap && r.reason.contains("overlaps stored energy")));
    // Redelivering the stored ones is a duplicate, not an overlap.
    let again = store.write_samples(&first).await.unwrap();
    assert_eq!((again.duplicates, again.refused.len()), (3, 0));
    // Under another instance the GPU is still the same GPU.
    let other = enrich(sample("GPU-A1", "i-b", 21, T0 + 500, T0 + 600, 5), "acme");
    assert_eq!(
        store.write_samples(&[other]).await.unwrap().refused.len(),
        1
    );
    // Another GPU's timeline is its own.
    let gpu2 = enrich(sample("GPU-A2", "i-a", 11, T0, T0 + 1000, 7), "acme");
    assert_eq!(store.write_samples(&[gpu2]).await.unwrap().inserted, 1);
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(total(&rows), 407);
    let covered: i64 = rows.iter().map(|r| r.covered_ms).sum();
    assert_eq!(covered, 5000);
}

pub async fn instance_samples_overlap_the_range_in_time_order_up_to_the_limit(store: &dyn Store) {
    seed(store).await;
    let batch: Vec<_> = [
        (3, 3000, 4000),
        (1, 1000, 2000),
        (2, 2000, 3000),
        (4, 4000, 5000),
    ]
    .into_iter()
    .map(|(seq, s, e)| enrich(sample("GPU-A1", "i-a", seq, T0 + s, T0 + e, 10), "acme"))
    .collect();
    store.write_samples(&batch).await.unwrap();
    let read = |from: i64, to: i64, limit: u32| async move {
        store
            .instance_samples(
                &scope("acme"),
                &InstanceId::from("i-a"),
                UnixMillis(T0 + from),
                UnixMillis(T0 + to),
                limit,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.sample.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(read(0, 10_000, 100).await, vec![1, 2, 3, 4]);
    // [2500, 3000) overlaps only seq 2 ([2000, 3000]); a span ending at `from` does not count.
    assert_eq!(read(2500, 3000, 100).await, vec![2]);
    assert_eq!(read(3000, 3001, 100).await, vec![3]);
    assert_eq!(read(0, 10_000, 2).await, vec![1, 2]);
    assert_eq!(read(0, 10_000, 0).await, Vec::<u64>::new());
    // The longest span a sample may have is found from its last millisecond.
    let longest = enrich(
        sample(
            "GPU-A1",
            "i-a",
            9,
            T0 + 10_000,
            T0 + 10_000 + MAX_SAMPLE_SPAN_MS,
            10,
        ),
        "acme",
    );
    store.write_samples(&[longest]).await.unwrap();
    let end = 10_000 + MAX_SAMPLE_SPAN_MS;
    assert_eq!(read(end - 1, end + 1, 100).await, vec![9]);
    assert_eq!(read(end, end + 1, 100).await, Vec::<u64>::new());
    // Every field round-trips.
    let all = store
        .instance_samples(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(T0),
            UnixMillis(T0 + 10_000),
            100,
        )
        .await
        .unwrap();
    assert_eq!(all[0].sample, batch[1].sample);
}

pub async fn tenants_cannot_see_each_others_data(store: &dyn Store) {
    seed(store).await;
    store
        .write_samples(&[enrich(
            sample("GPU-A1", "i-a", 1, T0, T0 + 1000, 100),
            "acme",
        )])
        .await
        .unwrap();
    let a_wl = store
        .create_workload(&scope("acme"), &workload("run-1", &["i-a"]))
        .await
        .unwrap();

    let globex = scope("globex");
    let a = InstanceId::from("i-a");
    let ghost = InstanceId::from("i-does-not-exist");
    let (lo, hi) = (UnixMillis(i64::MIN), UnixMillis(i64::MAX));
    // Foreign and unknown instances are indistinguishable.
    let foreign = not_found_message(
        store
            .instance_samples(&globex, &a, lo, hi, 10)
            .await
            .unwrap_err(),
    );
    assert_eq!(foreign, "instance i-a not found");
    let unknown = not_found_message(
        store
            .instance_samples(&globex, &ghost, lo, hi, 10)
            .await
            .unwrap_err(),
    );
    assert_eq!(unknown, "instance i-does-not-exist not found");
    let foreign = not_found_message(
        store
            .instance_intervals(&globex, &a, lo, hi)
            .await
            .unwrap_err(),
    );
    assert_eq!(foreign, "instance i-a not found");
    let unknown = not_found_message(
        store
            .instance_intervals(&globex, &ghost, lo, hi)
            .await
            .unwrap_err(),
    );
    assert_eq!(unknown, "instance i-does-not-exist not found");

    // Workloads: invisible, and none can be made over another tenant's instance.
    assert!(store.list_workloads(&globex).await.unwrap().is_empty());
    assert_eq!(store.get_workload(&globex, &a_wl.id).await.unwrap(), None);
    let err = store
        .create_workload(&globex, &workload("steal", &["i-b", "i-a"]))
        .await
        .unwrap_err();
    assert_eq!(not_found_message(err), "instance i-a not found");
    let err = store
        .create_workload(&globex, &workload("ghost", &["i-does-not-exist"]))
        .await
        .unwrap_err();
    assert_eq!(
        not_found_message(err),
        "instance i-does-not-exist not found"
    );
    assert!(
        store.list_workloads(&globex).await.unwrap().is_empty(),
        "failed create left a row"
    );

    // Instances: each tenant sees its own.
    let b_instances = store.list_instances(&globex).await.unwrap();
    assert_eq!(b_instances, vec![instance("globex", "i-b", &["GPU-B1"])]);

    // The owner sees everything.
    assert_eq!(
        store
            .instance_samples(&scope("acme"), &a, lo, hi, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .instance_intervals(&scope("acme"), &a, lo, hi)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.get_workload(&scope("acme"), &a_wl.id).await.unwrap(),
        Some(a_wl.clone())
    );
    assert_eq!(
        store.list_workloads(&scope("acme")).await.unwrap(),
        vec![a_wl]
    );
}

pub async fn samples_of_an_instance_that_moved_tenants_stay_with_the_old_owner(store: &dyn Store) {
    seed(store).await;
    store
        .write_samples(&[enrich(
            sample("GPU-A1", "i-a", 1, T0, T0 + 1000, 100),
            "acme",
        )])
        .await
        .unwrap();
    store
        .upsert_inventory(&[instance("globex", "i-a", &["GPU-A1"])])
        .await
        .unwrap();
    // The new owner sees the instance but none of the old owner's energy.
    assert!(intervals(store, "globex", "i-a").await.is_empty());
    assert!(store
        .instance_samples(
            &scope("globex"),
            &InstanceId::from("i-a"),
            UnixMillis(0),
            UnixMillis(i64::MAX),
            10
        )
        .await
        .unwrap()
        .is_empty());
    let err = store
        .instance_intervals(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(0),
            UnixMillis(i64::MAX),
        )
        .await
        .unwrap_err();
    assert_eq!(not_found_message(err), "instance i-a not found");
    // The old owner no longer lists it; the new one does, with the GPUs of the new record.
    let acme: Vec<_> = store
        .list_instances(&scope("acme"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance)
        .collect();
    assert!(acme.is_empty(), "{acme:?}");
    assert_eq!(
        store.list_instances(&scope("globex")).await.unwrap(),
        vec![
            instance("globex", "i-a", &["GPU-A1"]),
            instance("globex", "i-b", &["GPU-B1"])
        ]
    );
}

pub async fn workloads_are_validated_stored_and_listed_newest_first(store: &dyn Store) {
    seed(store).await;
    let acme = scope("acme");
    let cases: Vec<(NewWorkload, &str)> = vec![
        (workload("", &["i-a"]), "label"),
        (workload("   ", &["i-a"]), "label"),
        (workload(&"x".repeat(201), &["i-a"]), "label"),
        (workload("ok", &[]), "at least one instance"),
        (workload("ok", &["i-a", "i-a"]), "twice"),
        (
            NewWorkload {
                to: Some(UnixMillis(T0)),
                ..workload("ok", &["i-a"])
            },
            "range",
        ),
        (
            NewWorkload {
                labels: labels(&[("team/ml", "a"), ("-bad", "b")]),
                ..workload("ok", &["i-a"])
            },
            "label key \"-bad\"",
        ),
        (
            NewWorkload {
                labels: (0..65).map(|i| (format!("k{i}"), String::new())).collect(),
                ..workload("ok", &["i-a"])
            },
            "at most 64 labels",
        ),
        (
            NewWorkload {
                functional_units: 0.0,
                ..workload("ok", &["i-a"])
            },
            "functional units",
        ),
        (
            NewWorkload {
                functional_units: f64::NAN,
                ..workload("ok", &["i-a"])
            },
            "functional units",
        ),
        (
            NewWorkload {
                functional_units: f64::INFINITY,
                ..workload("ok", &["i-a"])
            },
            "functional units",
        ),
        (
            NewWorkload {
                functional_unit: String::new(),
                ..workload("ok", &["i-a"])
            },
            "functional unit",
        ),
    ];
    for (w, needle) in cases {
        match store.create_workload(&acme, &w).await {
            Err(StoreError::Invalid(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("{w:?} gave {other:?}"),
        }
    }
    assert!(store.list_workloads(&acme).await.unwrap().is_empty());
    // 200 characters (multi-byte) is accepted; so are quotes and backslashes, verbatim.
    let long = "é".repeat(200);
    let quoted = "it's a \\ 'run' ? `x`";
    let mut created = Vec::new();
    for label in ["first", long.as_str(), quoted, "fourth"] {
        let w = NewWorkload {
            functional_units: 2.5,
            ..workload(label, &["i-a"])
        };
        let stored = store.create_workload(&acme, &w).await.unwrap();
        assert_eq!(stored.spec, w);
        assert_eq!(stored.tenant, TenantId::from("acme"));
        let id = stored.id.as_str();
        assert!(id.len() == 19 && id.starts_with("wl_"), "{id}");
        assert!(id[3..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        created.push(stored);
    }
    let listed = store.list_workloads(&acme).await.unwrap();
    let labels: Vec<_> = listed.iter().map(|w| w.spec.label.as_str()).collect();
    assert_eq!(labels, vec!["fourth", quoted, long.as_str(), "first"]);
    assert_eq!(listed[0], created[3]);
    assert_ne!(created[0].id, created[1].id);
    assert_eq!(
        store.get_workload(&acme, &created[1].id).await.unwrap(),
        Some(created[1].clone())
    );
    assert_eq!(
        store
            .get_workload(&acme, &WorkloadId::from("wl_0000000000000000"))
            .await
            .unwrap(),
        None
    );
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub async fn workloads_open_close_and_relabel(store: &dyn Store) {
    seed(store).await;
    let (acme, globex) = (scope("acme"), scope("globex"));
    let open = NewWorkload {
        to: None,
        labels: labels(&[("team", "research"), ("cost-centre", "42")]),
        ..workload("open run", &["i-a"])
    };
    let created = store.create_workload(&acme, &open).await.unwrap();
    assert_eq!(created.spec, open);
    let id = created.id.clone();
    let read = |s: &TenantScope| {
        let id = id.clone();
        let s = s.clone();
        async move { store.get_workload(&s, &id).await.unwrap() }
    };
    assert_eq!(read(&acme).await, Some(created.clone()));

    // Labels are replaced as a whole; a bad key is refused and changes nothing.
    let relabelled = labels(&[("team", "platform")]);
    let w = store
        .update_workload(&acme, &id, &WorkloadUpdate::Labels(relabelled.clone()))
        .await
        .unwrap();
    assert_eq!(w.spec.labels, relabelled);
    assert_eq!(read(&acme).await.unwrap().spec.labels, relabelled);
    match store
        .update_workload(&acme, &id, &WorkloadUpdate::Labels(labels(&[("a b", "x")])))
        .await
    {
        Err(StoreError::Invalid(m)) => assert!(m.contains("label key \"a b\""), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(read(&acme).await.unwrap().spec.labels, relabelled);

    // Closing: not before the start; then at an end; again at the same end is a no-op; at
    // another end a conflict; labels survive the close and can still change after it.
    match store
        .update_workload(&acme, &id, &WorkloadUpdate::Close(UnixMillis(T0)))
        .await
    {
        Err(StoreError::Invalid(m)) => assert!(m.contains("range is empty"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(read(&acme).await.unwrap().spec.to, None);
    let end = UnixMillis(T0 + 1_800_000);
    let closed = store
        .update_workload(&acme, &id, &WorkloadUpdate::Close(end))
        .await
        .unwrap();
    assert_eq!(closed.spec.to, Some(end));
    assert_eq!(closed.spec.labels, relabelled);
    assert_eq!(
        store
            .update_workload(&acme, &id, &WorkloadUpdate::Close(end))
            .await
            .unwrap(),
        closed
    );
    match store
        .update_workload(&acme, &id, &WorkloadUpdate::Close(UnixMillis(end.0 + 1)))
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(m.contains("already closed"), "{m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let last = labels(&[("team", "platform"), ("reviewed", "yes")]);
    store
        .update_workload(&acme, &id, &WorkloadUpdate::Labels(last.clone()))
        .await
        .unwrap();
    let now = read(&acme).await.unwrap();
    assert_eq!((now.spec.to, &now.spec.labels), (Some(end), &last));
    assert_eq!(store.list_workloads(&acme).await.unwrap(), vec![now]);

    // Another tenant can neither see nor change it.
    assert_eq!(read(&globex).await, None);
    for update in [
        WorkloadUpdate::Labels(BTreeMap::new()),
        WorkloadUpdate::Close(UnixMillis(T0 + 60_000)),
    ] {
        match store.update_workload(&globex, &id, &update).await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(read(&acme).await.unwrap().spec.to, Some(end));
}

pub async fn workload_instances_keep_their_order(store: &dyn Store) {
    seed(store).await;
    store
        .upsert_inventory(&[instance("acme", "i-0", &[]), instance("acme", "i-z", &[])])
        .await
        .unwrap();
    let w = workload("multi", &["i-z", "i-a", "i-0"]);
    let stored = store.create_workload(&scope("acme"), &w).await.unwrap();
    let got = store
        .get_workload(&scope("acme"), &stored.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.spec.instances, w.instances);
}

pub async fn inventory_upserts_move_gpus_and_list_sorted(store: &dyn Store) {
    assert!(store.inventory().await.unwrap().is_empty());
    seed(store).await;
    let inv = store.inventory().await.unwrap();
    assert_eq!(
        inv,
        vec![
            instance("acme", "i-a", &["GPU-A1", "GPU-A2"]),
            instance("globex", "i-b", &["GPU-B1"])
        ]
    );
    // GPU-A2 moves to a new instance `i-0`; i-a is re-declared with GPU-A1 only; region changes.
    let mut a = instance("acme", "i-a", &["GPU-A1"]);
    a.region = RegionId::from("SGIP_CAISO_PGE");
    a.zip_code = None;
    store
        .upsert_inventory(&[instance("acme", "i-0", &["GPU-A2"]), a.clone()])
        .await
        .unwrap();
    let inv = store.inventory().await.unwrap();
    assert_eq!(
        inv,
        vec![
            instance("acme", "i-0", &["GPU-A2"]),
            a.clone(),
            instance("globex", "i-b", &["GPU-B1"])
        ]
    );
    assert_eq!(
        store.list_instances(&scope("acme")).await.unwrap(),
        vec![instance("acme", "i-0", &["GPU-A2"]), a.clone()]
    );
    assert!(store
        .list_instances(&scope("nobody"))
        .await
        .unwrap()
        .is_empty());

    // A GPU moved by re-declaring only its new instance leaves the old one.
    store
        .upsert_inventory(&[instance("globex", "i-b", &["GPU-B1", "GPU-A1"])])
        .await
        .unwrap();
    let mut bare_a = a.clone();
    bare_a.gpus.clear();
    assert_eq!(
        store.inventory().await.unwrap(),
        vec![
            instance("acme", "i-0", &["GPU-A2"]),
            bare_a,
            instance("globex", "i-b", &["GPU-A1", "GPU-B1"])
        ]
    );
    // Detached GPUs can come back, with new details.
    let mut back = instance("acme", "i-a", &["GPU-A1"]);
    back.gpus[0].power_limit = Milliwatts(350_000);
    store
        .upsert_inventory(&[back.clone(), instance("globex", "i-b", &[])])
        .await
        .unwrap();
    assert_eq!(
        store.inventory().await.unwrap(),
        vec![
            instance("acme", "i-0", &["GPU-A2"]),
            back,
            instance("globex", "i-b", &[])
        ]
    );

    // A batch naming a GPU (or an instance) twice is refused whole.
    let err = store
        .upsert_inventory(&[
            instance("acme", "i-x", &["GPU-Q"]),
            instance("acme", "i-y", &["GPU-Q"]),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let err = store
        .upsert_inventory(&[instance("acme", "i-x", &[]), instance("acme", "i-x", &[])])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(store.inventory().await.unwrap().len(), 3);
    // An empty update changes nothing.
    store.upsert_inventory(&[]).await.unwrap();
    assert_eq!(store.inventory().await.unwrap().len(), 3);
}

/// The reasons of the newest ten held records, newest first.
async fn quarantine_reasons(store: &dyn Store) -> Vec<String> {
    store
        .quarantine(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect()
}

pub async fn quarantine_is_newest_first_holds_a_redelivery_once_and_keeps_any_sequence_number(
    store: &dyn Store,
) {
    assert!(store.quarantine(10).await.unwrap().is_empty());
    let rec = |at: i64, seq: Option<u64>, reason: &str| QuarantineRecord {
        received_at: UnixMillis(at),
        host: HostId::from("host-a"),
        gpu: seq.map(|_| GpuUuid::from("GPU-A1")),
        seq,
        reason: reason.into(),
        payload: "{\"seq\":1, \"note\":\"it's\\n\"}".into(),
    };
    let recs = vec![
        rec(T0 + 2, Some(u64::MAX), "b"),
        rec(T0 + 1, None, "a"),
        rec(T0 + 3, Some(7), "c"),
    ];
    store.write_quarantine(&recs).await.unwrap();
    let got = store.quarantine(10).await.unwrap();
    assert_eq!(got, vec![recs[2].clone(), recs[0].clone(), recs[1].clone()]);
    assert_eq!(store.quarantine(1).await.unwrap(), vec![recs[2].clone()]);
    assert!(store.quarantine(0).await.unwrap().is_empty());
    store.write_quarantine(&[]).await.unwrap();

    // Same receive time: the later write, and later in a batch, comes first.
    let tied = vec![rec(T0 + 3, Some(8), "d"), rec(T0 + 3, Some(9), "e")];
    store.write_quarantine(&tied).await.unwrap();
    let tied_later = rec(T0 + 3, Some(10), "f");
    store
        .write_quarantine(std::slice::from_ref(&tied_later))
        .await
        .unwrap();
    assert_eq!(
        quarantine_reasons(store).await,
        vec!["f", "e", "d", "c", "b", "a"]
    );

    // A redelivered refusal (same host, GPU, seq and payload, later, even with a reason that
    // says so differently) is held once: the first copy.
    let again = vec![
        QuarantineRecord {
            received_at: UnixMillis(T0 + 50),
            reason: "c again".into(),
            ..recs[2].clone()
        },
        QuarantineRecord {
            received_at: UnixMillis(T0 + 51),
            ..recs[1].clone()
        },
    ];
    store.write_quarantine(&again).await.unwrap();
    store.write_quarantine(&again).await.unwrap();
    assert_eq!(
        quarantine_reasons(store).await,
        vec!["f", "e", "d", "c", "b", "a"]
    );
    // Another payload under the same key is another record.
    let other = QuarantineRecord {
        received_at: UnixMillis(T0 + 60),
        payload: "{\"seq\":2}".into(),
        ..recs[2].clone()
    };
    store
        .write_quarantine(std::slice::from_ref(&other))
        .await
        .unwrap();
    assert_eq!(store.quarantine(10).await.unwrap()[0], other);
}

pub async fn random_batches_in_random_order_match_the_accumulator(store: &dyn Store) {
    let mut resent = 0;
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        // Every seed on instances and GPUs of its own, so one store serves all.
        let (ia, ib) = (format!("i-a-{seed}"), format!("i-b-{seed}"));
        let (a1, a2, b1) = (
            format!("GPU-A1-{seed}"),
            format!("GPU-A2-{seed}"),
            format!("GPU-B1-{seed}"),
        );
        store
            .upsert_inventory(&[
                instance("acme", &ia, &[&a1, &a2]),
                instance("globex", &ib, &[&b1]),
            ])
            .await
            .unwrap();
        let gpus = [
            (a1.as_str(), ia.as_str(), "acme"),
            (a2.as_str(), ia.as_str(), "acme"),
            (b1.as_str(), ib.as_str(), "globex"),
        ];
        let mut samples = Vec::new();
        for (g, inst, tenant) in gpus {
            // Contiguous spans per GPU, like a counter chain, of random lengths and energies.
            let mut t = T0 + rng.random_range(0..BUCKET_MS);
            for seq in 0..rng.random_range(50..150u64) {
                let span = rng.random_range(1..700_000);
                let mut s = sample(g, inst, seq, t, t + span, rng.random_range(0..500_000_000));
                s.power = Milliwatts(rng.random_range(0..700_000));
                s.power_max = Milliwatts(rng.random_range(0..700_000));
                if rng.random_bool(0.2) {
                    s.energy_source = EnergySource::PowerIntegration;
                }
                samples.push((tenant, s));
                t += span
                    + if rng.random_bool(0.1) {
                        rng.random_range(1..1_000_000)
                    } else {
                        0
                    };
            }
        }
        let mut expected = IntervalAccumulator::new();
        let mut estimated: BTreeMap<(InstanceId, GpuUuid, Bucket), u64> = BTreeMap::new();
        for (_, s) in &samples {
            expected.add(s);
            if s.energy_source == EnergySource::PowerIntegration {
                for sh in split_into_buckets(s.start, s.end, s.energy) {
                    *estimated
                        .entry((s.instance.clone(), s.gpu.clone(), sh.bucket))
                        .or_default() += sh.energy.0;
                }
            }
        }

        let mut order: Vec<_> = samples.iter().map(|(t, s)| enrich(s.clone(), t)).collect();
        order.shuffle(&mut rng);
        let (mut inserted, mut duplicates) = (0, 0);
        let mut rest = order.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(40));
            let (batch, tail) = rest.split_at(n);
            let out = store.write_samples(batch).await.unwrap();
            inserted += out.inserted;
            duplicates += out.duplicates;
            // Sometimes the agent did not get the ack and resends part of the batch.
            if rng.random_bool(0.3) {
                let resend = &batch[..rng.random_range(1..=batch.len())];
                let out = store.write_samples(resend).await.unwrap();
                assert_eq!(out.inserted, 0);
                duplicates += out.duplicates;
                assert_eq!(out.duplicates as usize, resend.len());
            }
            rest = tail;
        }
        assert_eq!(inserted as usize, samples.len(), "seed {seed}");
        resent += duplicates;

        let mut stored = intervals(store, "acme", &ia).await;
        stored.extend(intervals(store, "globex", &ib).await);
        assert_eq!(stored.len(), expected.intervals().len(), "seed {seed}");
        for row in &stored {
            let key = (row.instance.clone(), row.gpu.clone(), row.bucket);
            let want = expected
                .intervals()
                .get(&key)
                .unwrap_or_else(|| panic!("extra {key:?}"));
            assert_eq!(row.energy, want.energy, "seed {seed} {key:?}");
            assert_eq!(row.covered_ms, want.covered_ms, "seed {seed} {key:?}");
            assert_eq!(row.samples, want.samples, "seed {seed} {key:?}");
            assert_eq!(row.power_max, want.power_max, "seed {seed} {key:?}");
            assert_eq!(
                row.estimated.0,
                estimated.get(&key).copied().unwrap_or(0),
                "seed {seed}"
            );
            assert_eq!(
                row.intensity,
                Some(intensity_for(row.bucket)),
                "seed {seed}"
            );
        }
        assert_eq!(Millijoules(total(&stored)), expected.total(), "seed {seed}");
    }
    assert!(resent > 0, "no redelivery was exercised");
}

pub async fn concurrent_writers_through_clones_lose_nothing(store: Arc<dyn Store>) {
    seed(&*store).await;
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for k in 0..25u64 {
                let seq = w * 1000 + k;
                let start = T0 + (seq as i64) * 1000;
                let s = enrich(
                    sample("GPU-A1", "i-a", seq, start, start + 1000, seq + 1),
                    "acme",
                );
                store.write_samples(&[s]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected: u64 = (0..8u64)
        .flat_map(|w| (0..25u64).map(move |k| w * 1000 + k + 1))
        .sum();
    assert_eq!(total(&intervals(&*store, "acme", "i-a").await), expected);
}

// ---------------------------------------------------------------------------------------------
// Tenant summaries

/// Intensity by bucket index from T0, cycling through every provenance: actual, forecast,
/// fallback average, missing, replayed actual; values vary with the bucket.
pub fn varied_intensity(bucket: Bucket) -> Option<JoinedIntensity> {
    let k = (bucket.start().0 - T0).div_euclid(BUCKET_MS);
    let (kind, replayed) = match k.rem_euclid(5) {
        0 => (IntensityKind::Actual, false),
        1 => (IntensityKind::Forecast, false),
        2 => (IntensityKind::FallbackAverage, false),
        3 => return None,
        _ => (IntensityKind::Actual, true),
    };
    Some(JoinedIntensity {
        value: GramsPerKwh(150.0 + k.rem_euclid(11) as f64 * 37.25),
        kind,
        source: "test:summary".into(),
        point_at: bucket.start(),
        replayed,
    })
}

/// What the enricher does, with a given PUE and intensity.
pub fn enrich_with(
    s: EnergySample,
    tenant: &str,
    pue: f64,
    intensity: fn(Bucket) -> Option<JoinedIntensity>,
) -> EnrichedSample {
    let mut es = enrich(s, tenant);
    es.pue = pue;
    for sh in &mut es.shares {
        sh.intensity = intensity(sh.bucket);
    }
    es
}

/// `n` back-to-back samples of `gpu` on `instance` from `start`, `span_ms` each, with energy
/// of a GPU drawing 250–420 W; every `estimated_every`-th is power-integrated (0: none).
#[allow(clippy::too_many_arguments)]
pub fn usage_run(
    tenant: &str,
    instance: &str,
    gpu: &str,
    pue: f64,
    first_seq: u64,
    start: i64,
    span_ms: i64,
    n: u64,
    estimated_every: u64,
) -> Vec<EnrichedSample> {
    (0..n)
        .map(|k| {
            let s0 = start + k as i64 * span_ms;
            let watts = 250 + (k * 37 + first_seq) % 171;
            let mut s = sample(
                gpu,
                instance,
                first_seq + k,
                s0,
                s0 + span_ms,
                watts * span_ms as u64 + k % 7,
            );
            s.power = Milliwatts((watts * 1000) as u32);
            s.power_max = Milliwatts((watts * 1000 + 20_000 + k % 13 * 1000) as u32);
            if estimated_every > 0 && k % estimated_every == 0 {
                s.energy_source = EnergySource::PowerIntegration;
            }
            enrich_with(s, tenant, pue, varied_intensity)
        })
        .collect()
}

/// About three hours of usage from 10 minutes before T0: acme's `i-a` with GPU-A1 (70 s
/// samples) and GPU-A2 (45 s, every third power-integrated), PUE 1.2; globex's `i-b` with
/// GPU-B1 (100 s samples), PUE 1.5. Spans cross bucket and hour edges.
pub fn usage_batch() -> Vec<EnrichedSample> {
    let start = T0 - 10 * 60_000 + 17_000;
    let mut out = usage_run("acme", "i-a", "GPU-A1", 1.2, 0, start, 70_000, 160, 0);
    out.extend(usage_run(
        "acme", "i-a", "GPU-A2", 1.2, 1_000, start, 45_000, 250, 3,
    ));
    out.extend(usage_run(
        "globex", "i-b", "GPU-B1", 1.5, 0, start, 100_000, 110, 0,
    ));
    out
}

/// The summary of `tenant` over buckets starting in `[from, to)` computed by hand from the
/// distinct samples written: shares grouped into intervals, each interval's intensity and PUE
/// from its lowest sequence number, emissions Σ E_i × I_i per interval.
pub fn expected_summary(
    written: &[EnrichedSample],
    tenant: &str,
    from: i64,
    to: i64,
) -> BTreeMap<String, (BTreeSet<String>, UsageTotals)> {
    struct Interval {
        energy: u64,
        estimated: u64,
        covered: i64,
        samples: u64,
        power_max: u32,
        first: (u64, f64, Option<JoinedIntensity>),
        first_with_intensity: Option<(u64, JoinedIntensity)>,
    }
    let mut seen = BTreeSet::new();
    let mut intervals: BTreeMap<(String, String, i64), Interval> = BTreeMap::new();
    for es in written {
        let s = &es.sample;
        if es.tenant.as_str() != tenant || !seen.insert((s.gpu.clone(), s.seq)) {
            continue;
        }
        for sh in &es.shares {
            let b = sh.bucket.start().0;
            if b < from || b >= to {
                continue;
            }
            let key = (s.instance.0.clone(), s.gpu.0.clone(), b);
            let iv = intervals.entry(key).or_insert(Interval {
                energy: 0,
                estimated: 0,
                covered: 0,
                samples: 0,
                power_max: 0,
                first: (u64::MAX, 1.0, None),
                first_with_intensity: None,
            });
            iv.energy += sh.energy.0;
            if s.energy_source == EnergySource::PowerIntegration {
                iv.estimated += sh.energy.0;
            }
            iv.covered += sh.covered_ms;
            iv.samples += 1;
            iv.power_max = iv.power_max.max(s.power_max.max(s.power).0);
            if s.seq < iv.first.0 {
                iv.first = (s.seq, es.pue, sh.intensity.clone());
            }
            if let Some(i) = &sh.intensity {
                if iv
                    .first_with_intensity
                    .as_ref()
                    .is_none_or(|(q, _)| s.seq < *q)
                {
                    iv.first_with_intensity = Some((s.seq, i.clone()));
                }
            }
        }
    }
    let mut out: BTreeMap<String, (BTreeSet<String>, UsageTotals)> = BTreeMap::new();
    for ((instance, gpu, _), iv) in intervals {
        let (gpus, t) = out.entry(instance).or_default();
        gpus.insert(gpu);
        let pue = iv.first.1;
        t.gpu_intervals += 1;
        t.energy.0 += iv.energy;
        t.estimated.0 += iv.estimated;
        t.facility_energy.0 += iv.energy as f64 / 3_600_000_000.0 * pue;
        t.covered_ms += iv.covered;
        t.samples += iv.samples;
        t.power_max = Some(Milliwatts(t.power_max.map_or(0, |p| p.0).max(iv.power_max)));
        match iv.first_with_intensity {
            Some((_, i)) => {
                let co2e = i.value.emissions(Millijoules(iv.energy)).0;
                t.it_co2e.0 += co2e;
                t.facility_co2e.0 += co2e * pue;
                match i.kind {
                    IntensityKind::Actual => t.intervals_actual += 1,
                    IntensityKind::Forecast => t.intervals_forecast += 1,
                    IntensityKind::FallbackAverage => t.intervals_fallback += 1,
                }
                if i.replayed {
                    t.intervals_replayed_intensity += 1;
                }
            }
            None => {
                t.intervals_missing_intensity += 1;
                t.energy_without_intensity.0 += iv.energy;
            }
        }
    }
    out
}

/// Floats agree to a relative 1e-9 (sums of the same terms in another order).
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Integers equal, floats [`close`].
pub fn assert_totals_match(got: &UsageTotals, want: &UsageTotals, what: &str) {
    let ints = |t: &UsageTotals| {
        (
            t.gpu_intervals,
            t.energy,
            t.estimated,
            t.covered_ms,
            t.samples,
            t.power_max,
            t.energy_without_intensity,
            [
                t.intervals_actual,
                t.intervals_forecast,
                t.intervals_fallback,
                t.intervals_missing_intensity,
                t.intervals_replayed_intensity,
            ],
        )
    };
    assert_eq!(ints(got), ints(want), "{what}: integer totals");
    for (name, g, w) in [
        (
            "facility energy",
            got.facility_energy.0,
            want.facility_energy.0,
        ),
        ("IT emissions", got.it_co2e.0, want.it_co2e.0),
        (
            "facility emissions",
            got.facility_co2e.0,
            want.facility_co2e.0,
        ),
    ] {
        assert!(close(g, w), "{what}: {name} {g} != {w}");
    }
}

/// `got` holds exactly the instances of `want`, each with its GPUs and totals, and the tenant
/// totals are their sum.
pub fn assert_summary(
    got: &TenantSummary,
    want: &BTreeMap<String, (BTreeSet<String>, UsageTotals)>,
) {
    let names: Vec<&str> = got.instances.iter().map(|i| i.instance.as_str()).collect();
    let want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(names, want_names, "instances");
    let mut total = UsageTotals::default();
    for InstanceSummary {
        instance,
        gpus,
        totals,
    } in &got.instances
    {
        let (want_gpus, want_totals) = &want[instance.as_str()];
        assert_eq!(*gpus as usize, want_gpus.len(), "{instance}: GPUs");
        assert_totals_match(totals, want_totals, instance.as_str());
        total.add(want_totals);
    }
    assert_totals_match(&got.totals, &total, "tenant totals");
}

/// Summary of everything `tenant` has.
pub async fn summary(store: &dyn Store, tenant: &str) -> TenantSummary {
    store
        .tenant_summary(&scope(tenant), UnixMillis(i64::MIN), UnixMillis(i64::MAX))
        .await
        .unwrap()
}

pub async fn tenant_summary_sums_every_interval_exactly(store: &dyn Store) {
    seed(store).await;
    let batch = usage_batch();
    // Written in arrival-sized batches, in time order, as the enricher would.
    let mut by_time = batch.clone();
    by_time.sort_by_key(|s| (s.sample.end, s.sample.gpu.clone()));
    for chunk in by_time.chunks(37) {
        store.write_samples(chunk).await.unwrap();
    }
    let (from, to) = (i64::MIN, i64::MAX);
    let got = summary(store, "acme").await;
    let want = expected_summary(&batch, "acme", from, to);
    assert_summary(&got, &want);
    // Every provenance is exercised, and the numbers are plausible (~3 h of 2 GPUs).
    let t = &got.totals;
    assert!(t.intervals_actual > 0 && t.intervals_forecast > 0 && t.intervals_fallback > 0);
    assert!(t.intervals_missing_intensity > 0 && t.intervals_replayed_intensity > 0);
    assert!(t.estimated.0 > 0 && t.estimated < t.energy);
    assert!(t.it_co2e.0 > 0.0 && close(t.facility_co2e.0, t.it_co2e.0 * 1.2));
    assert!(close(t.facility_energy.0, t.energy.to_kwh().0 * 1.2));
    // The summary is the sum of the instance's interval rows as the API reads them.
    let rows = intervals(store, "acme", "i-a").await;
    assert_eq!(t.energy.0, total(&rows));
    assert_eq!(t.gpu_intervals, rows.len() as u64);
    let co2e: f64 = rows
        .iter()
        .filter_map(|r| r.intensity.as_ref().map(|i| i.value.emissions(r.energy).0))
        .sum();
    assert!(close(t.it_co2e.0, co2e), "{} != {co2e}", t.it_co2e.0);
    assert_eq!(
        got.instances[0].totals.power_max,
        rows.iter().map(|r| r.power_max).max()
    );
}

pub async fn tenant_summary_counts_buckets_starting_in_the_range(store: &dyn Store) {
    seed(store).await;
    let batch = usage_batch();
    store.write_samples(&batch).await.unwrap();
    let ranges = [
        (T0, T0 + 3_600_000),
        // Not aligned: the bucket starting at T0 is out, the one at T0 + 5 min in.
        (T0 + 1, T0 + 2 * 3_600_000 + 1),
        (T0 + 7 * 60_000, T0 + 97 * 60_000 + 123),
        (T0 - 3_600_000, T0),
        // Empty and reversed ranges hold nothing.
        (T0, T0),
        (T0 + BUCKET_MS, T0),
        // Nothing stored this late.
        (T0 + 100 * 3_600_000, T0 + 101 * 3_600_000),
    ];
    for (from, to) in ranges {
        let got = store
            .tenant_summary(&scope("acme"), UnixMillis(from), UnixMillis(to))
            .await
            .unwrap();
        assert_summary(&got, &expected_summary(&batch, "acme", from, to));
    }
}

pub async fn tenant_summaries_never_show_another_tenants_usage(store: &dyn Store) {
    seed(store).await;
    let batch = usage_batch();
    store.write_samples(&batch).await.unwrap();
    let acme = summary(store, "acme").await;
    let globex = summary(store, "globex").await;
    assert_eq!(acme.instances.len(), 1);
    assert_eq!(acme.instances[0].instance.as_str(), "i-a");
    assert_summary(
        &globex,
        &expected_summary(&batch, "globex", i64::MIN, i64::MAX),
    );
    assert_eq!(globex.instances[0].instance.as_str(), "i-b");
    assert!(close(
        globex.totals.facility_co2e.0,
        globex.totals.it_co2e.0 * 1.5
    ));
    // Both together are everything written: nothing lost, nothing shared.
    let all: u64 = batch.iter().map(|s| s.sample.energy.0).sum();
    assert_eq!(acme.totals.energy.0 + globex.totals.energy.0, all);
    // A tenant with nothing, and names that look like patterns or quotes, see nothing.
    for nobody in [
        "initech",
        "",
        "%",
        "acme%",
        "' OR 1 = 1 OR tenant = '",
        "ACME",
    ] {
        let s = summary(store, nobody).await;
        assert_eq!(s, TenantSummary::default(), "{nobody:?}");
    }
}

pub async fn redeliveries_never_double_count_in_a_summary(store: &dyn Store) {
    seed(store).await;
    let batch = usage_batch();
    let want_acme = expected_summary(&batch, "acme", i64::MIN, i64::MAX);
    let want_globex = expected_summary(&batch, "globex", i64::MIN, i64::MAX);
    let mut by_time = batch.clone();
    by_time.sort_by_key(|s| (s.sample.end, s.sample.gpu.clone()));
    for chunk in by_time.chunks(50) {
        store.write_samples(chunk).await.unwrap();
    }
    assert_summary(&summary(store, "acme").await, &want_acme);
    // Redelivered: whole, shuffled, in other batch sizes, with keys repeated within a batch.
    let mut rng = StdRng::seed_from_u64(7);
    let mut again = batch.clone();
    again.shuffle(&mut rng);
    for chunk in again.chunks(23) {
        let out = store.write_samples(chunk).await.unwrap();
        assert_eq!(out.inserted, 0);
    }
    let mut repeated = batch[..40].to_vec();
    repeated.extend_from_slice(&batch[..40]);
    let out = store.write_samples(&repeated).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (0, 80));
    assert_summary(&summary(store, "acme").await, &want_acme);
    assert_summary(&summary(store, "globex").await, &want_globex);
    // A redelivery enriched again with other intensity is a duplicate: nothing changes.
    let mut reenriched = batch[..10].to_vec();
    for s in &mut reenriched {
        for sh in &mut s.shares {
            sh.intensity = Some(intensity_for(sh.bucket));
        }
    }
    let out = store.write_samples(&reenriched).await.unwrap();
    assert_eq!(out.inserted, 0);
    assert_summary(&summary(store, "acme").await, &want_acme);
}

pub async fn a_summary_keeps_the_usage_of_an_instance_given_up(store: &dyn Store) {
    seed(store).await;
    let before = usage_run("acme", "i-a", "GPU-A1", 1.2, 0, T0, 60_000, 20, 0);
    store.write_samples(&before).await.unwrap();
    store
        .upsert_inventory(&[instance("globex", "i-a", &["GPU-A1"])])
        .await
        .unwrap();
    let after = usage_run(
        "globex",
        "i-a",
        "GPU-A1",
        1.5,
        100,
        T0 + 20 * 60_000,
        60_000,
        20,
        0,
    );
    store.write_samples(&after).await.unwrap();
    // acme used i-a for the first 20 minutes: its bill keeps them though it no longer owns it.
    assert!(store
        .list_instances(&scope("acme"))
        .await
        .unwrap()
        .is_empty());
    assert_summary(
        &summary(store, "acme").await,
        &expected_summary(&before, "acme", i64::MIN, i64::MAX),
    );
    assert_summary(
        &summary(store, "globex").await,
        &expected_summary(&after, "globex", i64::MIN, i64::MAX),
    );
}
