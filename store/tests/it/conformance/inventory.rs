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
