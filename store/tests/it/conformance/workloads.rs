//! Workloads: validation, listing order, open/close/relabel, instance order.

use super::*;

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

pub async fn a_statement_is_issued_once_and_never_changes(store: &dyn Store) {
    let statement = |body: &str, computed_at: i64| wattprint_store::IssuedStatement {
        tenant: TenantId::from("acme"),
        period: "2026-11".into(),
        issued_at: UnixMillis(T0),
        computed_at: UnixMillis(computed_at),
        content_sha256: format!("sha-of-{body}"),
        body: body.into(),
    };
    assert_eq!(
        store
            .issued_statement(&scope("acme"), "2026-11")
            .await
            .unwrap(),
        None
    );
    let first = store
        .issue_statement(&statement("first", T0 + 10))
        .await
        .unwrap();
    assert_eq!(first, statement("first", T0 + 10));
    // Another replica's issue, computed earlier or later, gets the stored one back.
    for (body, at) in [("second", T0 + 20), ("earlier-but-late", T0 + 5)] {
        let again = store.issue_statement(&statement(body, at)).await.unwrap();
        assert_eq!(again, first, "{body}");
    }
    assert_eq!(
        store
            .issued_statement(&scope("acme"), "2026-11")
            .await
            .unwrap(),
        Some(first.clone())
    );
    // Another month is its own; other tenants see none of them.
    let mut december = statement("december", T0 + 30);
    december.period = "2026-12".into();
    store.issue_statement(&december).await.unwrap();
    let periods: Vec<String> = store
        .issued_statements(&scope("acme"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.period)
        .collect();
    assert_eq!(periods, ["2026-12", "2026-11"]);
    assert!(store
        .issued_statements(&scope("globex"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .issued_statement(&scope("globex"), "2026-11")
            .await
            .unwrap(),
        None
    );
    // A period that is not a month is refused before it reaches a table.
    for bad in ["2026-13", "2026-1", "26-11-01", "2026/11"] {
        let mut s = statement("bad", T0);
        s.period = bad.into();
        let e = store.issue_statement(&s).await.unwrap_err();
        assert!(e.to_string().contains("is not YYYY-MM"), "{bad}: {e}");
    }
}
