//! Tenant summaries (read from rollups where a store has them): every interval counted
//! exactly once, only the tenant's, and the helpers that compute the expected summary.

use super::*;

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

async fn all_samples(store: &dyn Store) -> Vec<wattprint_store::SampleRow> {
    store
        .instance_samples(
            &scope("acme"),
            &InstanceId::from("i-a"),
            UnixMillis(i64::MIN / 2),
            UnixMillis(i64::MAX / 2),
            100_000,
        )
        .await
        .unwrap()
}

/// Raw samples aging out change no total: the summary and the intervals stay as they were,
/// only the raw samples before the cut are gone.
pub async fn pruning_raw_samples_changes_no_total(store: &dyn Store) {
    seed(store).await;
    let batch = usage_batch();
    store.write_samples(&batch).await.unwrap();
    let before = summary(store, "acme").await;
    let rows = intervals(store, "acme", "i-a").await;
    let all = all_samples(store).await;
    assert!(all.len() > 10);
    // Cut in the middle of the stored time.
    let mut ends: Vec<i64> = all.iter().map(|r| r.sample.end.0).collect();
    ends.sort_unstable();
    let cut = ends[ends.len() / 2];
    let due = ends.iter().filter(|e| **e < cut).count() as u64;
    // A retention whose cutoff is `cut` at a `now` no earlier than the wall clock: a modern
    // ClickHouse's TTL of it (counted from its own clock) then removes only samples due.
    let day = 86_400_000;
    let wall = wattprint_core::UnixMillis::now().0;
    let rules = SampleRetention {
        days: u32::try_from((wall - cut).div_euclid(day) + 1).unwrap(),
    };
    let now = UnixMillis(cut + i64::from(rules.days) * day);
    assert_eq!(rules.cutoff(now), UnixMillis(cut));
    let pruned = store.prune_samples(&rules, now).await.unwrap();
    // (Other instances of the batch lose theirs too.)
    assert!(pruned >= due && due > 0, "{pruned} < {due}");
    // ClickHouse deletes in the background: wait for it, a few seconds at most.
    let mut left = all_samples(store).await;
    for _ in 0..100 {
        if left.len() as u64 == all.len() as u64 - due {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = all_samples(store).await;
    }
    assert_eq!(left.len() as u64, all.len() as u64 - due);
    assert!(left.iter().all(|r| r.sample.end.0 >= cut));
    assert_summary(
        &summary(store, "acme").await,
        &expected_summary(&batch, "acme", i64::MIN, i64::MAX),
    );
    // Integers exactly; float sums to rounding (ClickHouse adds in any order).
    assert_totals_match(&summary(store, "acme").await.totals, &before.totals, "acme");
    assert_eq!(intervals(store, "acme", "i-a").await, rows);
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
