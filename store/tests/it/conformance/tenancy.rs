//! Tenant isolation: no read shows another tenant's data, and samples stay with the tenant
//! that owned the instance when they were written.

use super::*;

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
    // Its tenant-wide intervals (what a monthly statement reads) keep the energy with acme.
    let tenant_rows = |t: &'static str| async move {
        store
            .tenant_intervals(&scope(t), UnixMillis(0), UnixMillis(i64::MAX))
            .await
            .unwrap()
    };
    let acme_rows = tenant_rows("acme").await;
    assert_eq!(acme_rows.len(), 1);
    assert_eq!(
        (acme_rows[0].instance.as_str(), acme_rows[0].energy),
        ("i-a", Millijoules(100))
    );
    assert!(tenant_rows("globex").await.is_empty());
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
