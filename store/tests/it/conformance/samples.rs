//! Writing samples: exact intervals, idempotent redelivery, conflicts and refusals, and
//! random and concurrent batches checked against the accumulator.

use super::*;

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

/// A range long enough to be read as two halves at once (three days) returns exactly what
/// reading it day by day does: every interval once, in order, the one starting at the split
/// included, energy to the mJ; and another tenant still gets `NotFound`.
pub async fn a_long_range_reads_as_its_days_do(store: &dyn Store) {
    seed(store).await;
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    // Each GPU: a 300 s sample every hour for three days (1.5 days in is the split point),
    // energies that differ per sample.
    let mut batch = Vec::new();
    let mut expected_mj = 0;
    for (g, gpu) in ["GPU-A1", "GPU-A2"].into_iter().enumerate() {
        for h in 0..72_i64 {
            let start = T0 + h * HOUR;
            let mj = 90_000_000 + (h as u64) * 1_001 + g as u64 * 7;
            expected_mj += mj;
            batch.push(enrich(
                sample(gpu, "i-a", h as u64 + 1, start, start + BUCKET_MS, mj),
                "acme",
            ));
        }
    }
    store.write_samples(&batch).await.unwrap();
    let i_a = InstanceId::from("i-a");
    let whole = store
        .instance_intervals(
            &scope("acme"),
            &i_a,
            UnixMillis(T0),
            UnixMillis(T0 + 3 * DAY),
        )
        .await
        .unwrap();
    let mut by_day = Vec::new();
    for d in 0..3 {
        let (from, to) = (UnixMillis(T0 + d * DAY), UnixMillis(T0 + (d + 1) * DAY));
        by_day.extend(
            store
                .instance_intervals(&scope("acme"), &i_a, from, to)
                .await
                .unwrap(),
        );
    }
    assert_eq!(whole.len(), 144);
    assert_eq!(whole, by_day);
    assert_eq!(total(&whole), expected_mj);
    let split = UnixMillis(T0 + 36 * HOUR);
    assert_eq!(
        whole.iter().filter(|r| r.bucket.start() == split).count(),
        2
    );
    assert!(whole
        .windows(2)
        .all(|w| (w[0].bucket, &w[0].gpu) < (w[1].bucket, &w[1].gpu)));
    let foreign = store
        .instance_intervals(
            &scope("globex"),
            &i_a,
            UnixMillis(T0),
            UnixMillis(T0 + 3 * DAY),
        )
        .await
        .unwrap_err();
    assert!(not_found_message(foreign).contains("i-a"));
}
