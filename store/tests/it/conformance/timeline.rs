//! One GPU, one timeline: overlapping energy is refused, and an instance's samples read
//! back by time.

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
