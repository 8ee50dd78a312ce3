//! The quarantine: newest first, a redelivered refusal held once, any sequence number kept.

use super::*;

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

/// The quarantine after `rules` pruned it, once what was deleted is gone (ClickHouse deletes
/// by mutation, which completes shortly after it is issued).
async fn quarantine_once_settled(
    store: &dyn Store,
    want: &[QuarantineRecord],
) -> Vec<QuarantineRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = store.quarantine(100).await.unwrap();
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn quarantine_keeps_what_is_within_its_retention_and_cap(store: &dyn Store) {
    const DAY: i64 = 86_400_000;
    let rec = |host: &str, day: i64, seq: u64| QuarantineRecord {
        received_at: UnixMillis(T0 + day * DAY),
        host: HostId::from(host),
        gpu: Some(GpuUuid::from(format!("GPU-{host}").as_str())),
        seq: Some(seq),
        reason: format!("refused on day {day}"),
        payload: format!("{{\"host\":\"{host}\",\"seq\":{seq}}}"),
    };
    let a = [1, 5, 20, 35, 39].map(|d| rec("host-a", d, d as u64));
    let b = [9, 11, 30].map(|d| rec("host-b", d, d as u64));
    store.write_quarantine(&a).await.unwrap();
    store.write_quarantine(&b).await.unwrap();
    // A redelivered refusal: one record, whatever the store keeps of its copies.
    store.write_quarantine(&a[4..]).await.unwrap();
    let now = UnixMillis(T0 + 40 * DAY);
    let month = QuarantineRetention {
        days: 30,
        max_per_host: None,
    };
    let newest_first = |mut v: Vec<QuarantineRecord>| {
        v.sort_by_key(|r| std::cmp::Reverse(r.received_at));
        v
    };

    // Received before day 10 (40 - 30): gone; the rest kept whole, replayable as stored.
    let pruned = store.prune_quarantine(&month, now).await.unwrap();
    assert_eq!((pruned.expired, pruned.over_cap), (3, 0));
    let kept = newest_first(vec![
        a[2].clone(),
        a[3].clone(),
        a[4].clone(),
        b[1].clone(),
        b[2].clone(),
    ]);
    assert_eq!(quarantine_once_settled(store, &kept).await, kept);
    let again = store.prune_quarantine(&month, now).await.unwrap();
    assert_eq!(
        (again.expired, again.over_cap),
        (0, 0),
        "nothing more is due"
    );

    // A cap of 2 per host: host-a's oldest kept record goes, host-b is within it.
    let capped = QuarantineRetention {
        max_per_host: Some(2),
        ..month
    };
    let pruned = store.prune_quarantine(&capped, now).await.unwrap();
    assert_eq!((pruned.expired, pruned.over_cap), (0, 1));
    let kept = newest_first(vec![a[3].clone(), a[4].clone(), b[1].clone(), b[2].clone()]);
    assert_eq!(quarantine_once_settled(store, &kept).await, kept);

    // Refusals arriving later are held as before.
    let late = rec("host-b", 40, 40);
    store
        .write_quarantine(std::slice::from_ref(&late))
        .await
        .unwrap();
    assert_eq!(store.quarantine(1).await.unwrap(), vec![late]);
}

/// The quarantine counted by refusal kind, as `refusal_kind` names each reason; a
/// redelivered refusal counts once, as reads see it.
pub async fn quarantine_counts_by_refusal_kind_once_per_record(store: &dyn Store) {
    assert!(store.quarantine_counts().await.unwrap().is_empty());
    let rec = |seq: u64, reason: &str| QuarantineRecord {
        received_at: UnixMillis(T0 + seq as i64),
        host: HostId::from("host-a"),
        gpu: Some(GpuUuid::from("GPU-A1")),
        seq: Some(seq),
        reason: reason.into(),
        payload: format!("{{\"seq\":{seq}}}"),
    };
    let reasons = [
        "sample 1 of GPU GPU-A1 overlaps stored energy of its GPU",
        "malformed sample: energy_source unset",
        "sample ends 3600000 ms after the gateway's clock",
        "GPU GPU-A1 is not attached to instance i-1",
        "MALFORMED, in capitals only: case matters",
        "something else entirely",
        "malformed again",
    ];
    let recs: Vec<QuarantineRecord> = (1u64..)
        .zip(reasons)
        .map(|(seq, reason)| rec(seq, reason))
        .collect();
    store.write_quarantine(&recs).await.unwrap();
    // A redelivery of the first record is not another record.
    store.write_quarantine(&recs[..1]).await.unwrap();
    let want: std::collections::BTreeMap<String, u64> = [
        ("future", 1),
        ("malformed", 2),
        ("not-attached", 1),
        ("other", 2),
        ("overlap", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    let expected: std::collections::BTreeMap<String, u64> =
        reasons.iter().fold(Default::default(), |mut m, r| {
            *m.entry(wattprint_core::sample::refusal_kind(r).to_owned())
                .or_default() += 1;
            m
        });
    assert_eq!(
        expected, want,
        "the test's own expectation follows refusal_kind"
    );
    assert_eq!(store.quarantine_counts().await.unwrap(), want);
}
