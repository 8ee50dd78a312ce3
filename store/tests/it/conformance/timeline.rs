//! One GPU, one timeline: overlapping energy is refused, and an instance's samples read
//! back by time, also several instances' windows at once.

use super::*;

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

/// The reads of several instances and windows at once (a workload's ragged ends): every
/// sample of a window's instance overlapping it, once however many windows it overlaps, by
/// instance then time, up to the limit; the intervals of the instances in the ranges; a
/// foreign or unknown instance among them is `NotFound`. Expected from the written batch.
pub async fn batched_edge_reads_match_the_samples_written(store: &dyn Store) {
    seed(store).await;
    store
        .upsert_inventory(&[instance("acme", "i-c", &["GPU-C1"])])
        .await
        .unwrap();
    // 70 s samples on three GPUs of two instances, cutting bucket edges.
    let mut batch = Vec::new();
    for (gpu, inst, offset) in [
        ("GPU-A1", "i-a", 0),
        ("GPU-A2", "i-a", 13_000),
        ("GPU-C1", "i-c", 29_000),
    ] {
        for seq in 0..30u64 {
            let start = T0 + offset + seq as i64 * 70_000;
            let s = sample(gpu, inst, seq, start, start + 70_000, 1_000 + seq * 7);
            batch.push(enrich(s, "acme"));
        }
    }
    assert_eq!(store.write_samples(&batch).await.unwrap().inserted, 90);
    // Delivered again: nothing changes.
    assert_eq!(store.write_samples(&batch).await.unwrap().duplicates, 90);
    let acme = scope("acme");
    let (a, c) = (InstanceId::from("i-a"), InstanceId::from("i-c"));
    let at = |ms: i64| UnixMillis(T0 + ms);
    let windows = vec![
        (a.clone(), at(100_000), at(300_000)),
        // Overlaps the first: the samples of both come once.
        (a.clone(), at(250_000), at(420_000)),
        (c.clone(), at(1_234_567), at(1_500_000)),
        (c.clone(), at(2_000_000), at(2_000_001)),
    ];
    let mut want: Vec<EnergySample> = batch
        .iter()
        .map(|es| es.sample.clone())
        .filter(|s| {
            windows
                .iter()
                .any(|(i, from, to)| s.instance == *i && s.start < *to && s.end > *from)
        })
        .collect();
    want.sort_by_key(|s| (s.instance.clone(), s.start, s.end, s.gpu.clone(), s.seq));
    // 4 + 3 samples of GPU-A1 (2 shared), 4 + 3 of GPU-A2 (2 shared), 5 + 1 of GPU-C1.
    assert_eq!(want.len(), 5 + 5 + 6);
    for limit in [1000, 4] {
        let rows = store.windows_samples(&acme, &windows, limit).await.unwrap();
        let got: Vec<EnergySample> = rows.into_iter().map(|r| r.sample).collect();
        assert_eq!(got, want[..want.len().min(limit as usize)].to_vec());
    }

    // Intervals: buckets 1 and 4..=5 of both instances, by instance, bucket, GPU.
    let ranges = [
        (at(4 * BUCKET_MS), at(6 * BUCKET_MS)),
        (at(BUCKET_MS), at(2 * BUCKET_MS)),
    ];
    let got = store
        .instances_intervals(&acme, &[c.clone(), a.clone()], &ranges)
        .await
        .unwrap();
    let mut by_hand: BTreeMap<(InstanceId, i64, GpuUuid), (u64, i64, u32)> = BTreeMap::new();
    for es in &batch {
        for sh in &es.shares {
            let b = sh.bucket.start();
            if ranges.iter().any(|(from, to)| b >= *from && b < *to) {
                let key = (es.sample.instance.clone(), b.0, es.sample.gpu.clone());
                let e = by_hand.entry(key).or_default();
                *e = (e.0 + sh.energy.0, e.1 + sh.covered_ms, e.2 + 1);
            }
        }
    }
    let got: Vec<_> = got
        .into_iter()
        .map(|r| {
            let key = (r.instance, r.bucket.start().0, r.gpu);
            (key, (r.energy.0, r.covered_ms, r.samples))
        })
        .collect();
    assert_eq!(got, by_hand.into_iter().collect::<Vec<_>>());
    assert_eq!(got.len(), 3 * 3);

    // Another tenant's instance, or an unknown one, anywhere in the list: not found.
    let b = InstanceId::from("i-b");
    let ghost = InstanceId::from("i-ghost");
    for other in [b, ghost] {
        let mut w = windows.clone();
        w.push((other.clone(), at(0), at(BUCKET_MS)));
        let err = store.windows_samples(&acme, &w, 10).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        let err = store
            .instances_intervals(&acme, &[a.clone(), other], &ranges)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }
    // Nor does the owner's read see another tenant's samples under a window of its own.
    let globex = store
        .windows_samples(&scope("globex"), &[(a, at(0), at(BUCKET_MS))], 10)
        .await
        .unwrap_err();
    assert!(matches!(globex, StoreError::NotFound(_)), "{globex:?}");
}
