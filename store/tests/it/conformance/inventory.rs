//! Inventory: an upsert is the whole truth about its instances; GPUs move and lists sort.

use super::*;

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

/// Each GPU's placements as `(valid_from, tenant/instance/host or "detached")`.
async fn history_of(store: &dyn Store, gpu: &str) -> Vec<(i64, String)> {
    store
        .placement_history()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.gpu.as_str() == gpu)
        .map(|v| {
            let at = v.valid_from.0;
            match v.placement {
                Some(p) => (at, format!("{}/{}/{}", p.tenant, p.instance, p.host)),
                None => (at, "detached".to_owned()),
            }
        })
        .collect()
}

pub async fn inventory_history_versions_every_change_at_its_time(store: &dyn Store) {
    let (t1, t2, t3) = (
        UnixMillis(T0),
        UnixMillis(T0 + 60_000),
        UnixMillis(T0 + 120_000),
    );
    let upsert = |records: Vec<InstanceRecord>, at: UnixMillis| async move {
        store.upsert_inventory_at(&records, at).await.unwrap();
    };
    upsert(
        vec![
            instance("acme", "i-a", &["GPU-A1", "GPU-A2"]),
            instance("globex", "i-b", &["GPU-B1"]),
        ],
        t1,
    )
    .await;
    let always = i64::MIN;
    assert_eq!(
        history_of(store, "GPU-A2").await,
        vec![(always, "acme/i-a/host-a".to_owned())],
        "a first placement holds since always"
    );
    // GPU-A2 moves to globex on another host at t2; GPU-A1 is taken off at t3.
    let mut moved = instance("globex", "i-b", &["GPU-A2", "GPU-B1"]);
    moved.gpus[0].host = HostId::from("host-b");
    upsert(
        vec![instance("acme", "i-a", &["GPU-A1"]), moved.clone()],
        t2,
    )
    .await;
    upsert(vec![instance("acme", "i-a", &[])], t3).await;
    // Declaring the same inventory again changes no history.
    upsert(
        vec![instance("acme", "i-a", &[]), moved],
        UnixMillis(t3.0 + 1),
    )
    .await;
    assert_eq!(
        history_of(store, "GPU-A2").await,
        vec![
            (always, "acme/i-a/host-a".to_owned()),
            (t2.0, "globex/i-b/host-b".to_owned())
        ]
    );
    assert_eq!(
        history_of(store, "GPU-A1").await,
        vec![
            (always, "acme/i-a/host-a".to_owned()),
            (t3.0, "detached".to_owned())
        ]
    );
    assert_eq!(
        history_of(store, "GPU-B1").await,
        vec![(always, "globex/i-b/host-a".to_owned())]
    );
    // The newest version of each GPU is the current inventory.
    let current = wattprint_store::placements::placements_of(&store.inventory().await.unwrap());
    let latest =
        wattprint_store::placements::latest_versions(&store.placement_history().await.unwrap());
    for (gpu, placement) in &latest {
        assert_eq!(current.get(gpu), placement.as_ref(), "{gpu}");
    }
    assert_eq!(latest.values().flatten().count(), current.len());
}
