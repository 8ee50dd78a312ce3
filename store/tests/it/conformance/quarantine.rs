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
