//! The intensity ledger and restatement, for every store, on the real CAISO_NORTH series.

use super::{enrich_in, intervals, sample, scope, seed, summary, T0};
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, IntensityPoint, PointKind, RegionIntensity, Signal,
};
use wattprint_core::{Bucket, GramsPerKwh, RegionId, UnixMillis, BUCKET_MS};
use wattprint_store::{LedgerQuery, RegionCoverage, Store, StoreError};

const REGION: &str = "CAISO_NORTH";

/// WattTime's CAISO_NORTH MOER, 2023-06-08 onwards (g/kWh), shipped in `data/moer/`.
fn caiso_north(n: usize) -> Vec<f64> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/moer/watttime2023_caiso-north_actual.csv"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .take(n)
        .map(|l| l.split(',').nth(1).unwrap().trim().parse().unwrap())
        .collect()
}

/// eGRID 2023 CAMX total output rate, 429.983 lb/MWh, as g/kWh: the static average.
fn camx() -> GramsPerKwh {
    GramsPerKwh::from_lb_per_mwh(429.983)
}

fn point(i: i64, value: f64, kind: PointKind, issued: Option<i64>) -> IntensityPoint {
    IntensityPoint {
        region: RegionId::from(REGION),
        at: UnixMillis(T0 + i * BUCKET_MS),
        duration_ms: BUCKET_MS,
        value: GramsPerKwh(value),
        signal: Signal::Marginal,
        kind,
        issued_at: issued.map(|i| UnixMillis(T0 + i * BUCKET_MS)),
        provider: "watttime:CAISO_NORTH".to_owned(),
        model_version: Some("2023-03-01".to_owned()),
        fetched_at: UnixMillis(T0 + (i + 1) * BUCKET_MS),
    }
}

fn all(region: Option<&str>) -> LedgerQuery {
    LedgerQuery {
        region: region.map(RegionId::from),
        signal: None,
        from: UnixMillis(i64::MIN),
        to: UnixMillis(i64::MAX),
        fetched_since: None,
    }
}

pub async fn the_ledger_is_idempotent_keeps_revisions_and_filters(store: &dyn Store) {
    let moer = caiso_north(288);
    let actuals: Vec<IntensityPoint> = (0..288)
        .map(|i| point(i, moer[i as usize], PointKind::Actual, None))
        .collect();
    // A forecast issued one bucket ahead (persistence of the previous actual).
    let forecasts: Vec<IntensityPoint> = (1..288)
        .map(|i| point(i, moer[i as usize - 1], PointKind::Forecast, Some(i - 1)))
        .collect();
    let first = store.write_intensity(&actuals).await.unwrap();
    assert_eq!((first.new, first.unchanged, first.revised), (288, 0, 0));
    let again = store.write_intensity(&actuals).await.unwrap();
    assert_eq!((again.new, again.unchanged, again.revised), (0, 288, 0));
    let f = store.write_intensity(&forecasts).await.unwrap();
    assert_eq!(f.new, 287);
    let mut revised = actuals[10].clone();
    revised.value = GramsPerKwh(revised.value.0 + 1.5);
    revised.fetched_at = UnixMillis(revised.fetched_at.0 + 1);
    let r = store
        .write_intensity(std::slice::from_ref(&revised))
        .await
        .unwrap();
    assert_eq!((r.new, r.unchanged, r.revised), (0, 0, 1));

    let stored = store.intensity_points(&all(Some(REGION))).await.unwrap();
    assert_eq!(stored.len(), 288 + 287);
    let stored_actuals: Vec<_> = stored
        .iter()
        .filter(|p| p.kind == PointKind::Actual)
        .cloned()
        .collect();
    let mut expected = actuals.clone();
    expected[10] = revised.clone();
    assert_eq!(
        stored_actuals, expected,
        "every field round-trips, revision kept"
    );
    let stored_forecasts: Vec<_> = stored
        .into_iter()
        .filter(|p| p.kind == PointKind::Forecast)
        .collect();
    assert_eq!(stored_forecasts, forecasts);

    // Filters: another region, the other signal, fetched since.
    assert!(store
        .intensity_points(&all(Some("SGIP_CAISO_PGE")))
        .await
        .unwrap()
        .is_empty());
    let average = LedgerQuery {
        signal: Some(Signal::Average),
        ..all(None)
    };
    assert!(store.intensity_points(&average).await.unwrap().is_empty());
    let recent = LedgerQuery {
        fetched_since: Some(UnixMillis(T0 + 280 * BUCKET_MS)),
        from: UnixMillis(T0),
        to: UnixMillis(T0 + 288 * BUCKET_MS),
        ..all(None)
    };
    let got = store.intensity_points(&recent).await.unwrap();
    assert!(!got.is_empty() && got.iter().all(|p| p.fetched_at.0 >= T0 + 280 * BUCKET_MS));
    assert_eq!(
        got.len(),
        9 + 9,
        "points 279..=287 are fetched at 280..=288, both kinds"
    );

    // An invalid point refuses the batch, naming what is wrong; nothing of it is stored.
    let mut bad = point(400, 100.0, PointKind::Actual, None);
    bad.value = GramsPerKwh(f64::NAN);
    let good = point(401, 100.0, PointKind::Actual, None);
    match store.write_intensity(&[good, bad]).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("NaN"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(
        store.intensity_points(&all(None)).await.unwrap().len(),
        288 + 287
    );
}

/// A live (not replayed) join of CAISO_NORTH with the eGRID CAMX rate as the last fallback.
fn live_join() -> IntensityJoin {
    let mut join = IntensityJoin::new(0);
    join.insert(
        RegionId::from(REGION),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((camx(), "egrid2023:CAMX".to_owned())),
        },
    );
    join
}

pub async fn restatement_changes_emissions_by_exactly_e_times_delta_i(store: &dyn Store) {
    seed(store).await;
    let moer = caiso_north(8);
    // Buckets 0..6 first get a forecast (the previous bucket's actual, issued a bucket
    // ahead); buckets 6 and 7 nothing marginal: the flagged average.
    let mut join = live_join();
    for i in 0..6 {
        let prev = if i == 0 {
            moer[0]
        } else {
            moer[i as usize - 1]
        };
        join.record(&point(i, prev, PointKind::Forecast, Some(i - 1)))
            .unwrap();
    }
    // 40 min of 10 s samples on three GPUs of two tenants, joined as the enricher would.
    let mut batch = Vec::new();
    for (gpu, inst, tenant, mj) in [
        ("GPU-A1", "i-a", "acme", 3_100_007),
        ("GPU-A2", "i-a", "acme", 2_900_003),
        ("GPU-B1", "i-b", "globex", 1_234_567),
    ] {
        for k in 0..240u64 {
            let start = T0 + k as i64 * 10_000 + 3_000;
            let s = sample(gpu, inst, k, start, start + 10_000, mj + k);
            batch.push(enrich_in(s, tenant, REGION, &|b: Bucket| {
                join.lookup(&RegionId::from(REGION), b)
            }));
        }
    }
    store.write_samples(&batch).await.unwrap();
    let window = (UnixMillis(T0), UnixMillis(T0 + 9 * BUCKET_MS));
    store
        .refresh_rollups(window.0, UnixMillis(T0 + 3_600_000))
        .await
        .unwrap();
    let before_acme = summary(store, "acme").await.totals;
    let before_globex = summary(store, "globex").await.totals;
    let coverage = store.intensity_coverage(window.0, window.1).await.unwrap();
    assert_eq!(
        coverage,
        vec![RegionCoverage {
            region: RegionId::from(REGION),
            actual: 0,
            nearest_actual: 0,
            forecast: 3 * 6,
            fallback: 3 * 3, // buckets 6, 7 and 8 (the last sample ends 3 s into bucket 8)
            missing: 0,
            replayed: 0,
        }]
    );
    let mut old = intervals(store, "acme", "i-a").await;
    old.extend(intervals(store, "globex", "i-b").await);

    // The actuals arrive (bucket 8 stays without one: its average is kept).
    for i in 0..8 {
        join.record(&point(i, moer[i as usize], PointKind::Actual, None))
            .unwrap();
    }
    let outcome = store
        .restate(&RegionId::from(REGION), window.0, window.1, &join)
        .await
        .unwrap();
    assert_eq!(outcome.intervals, 3 * 8);

    // By hand: per interval, E × (I_actual − I_before), E in kWh.
    let kwh = |mj: u64| mj as f64 / 3.6e9;
    let mut expected_delta = 0.0;
    for row in &old {
        let i = (row.bucket.start().0 - T0) / BUCKET_MS;
        let before = row.intensity.as_ref().unwrap();
        if i < 8 {
            let expected_before = if i < 6 {
                if i == 0 {
                    moer[0]
                } else {
                    moer[i as usize - 1]
                }
            } else {
                camx().0
            };
            assert_eq!(before.value.0, expected_before);
            expected_delta += kwh(row.energy.0) * (moer[i as usize] - before.value.0);
        }
    }
    assert!(
        (outcome.it_co2e_delta.0 - expected_delta).abs() <= 1e-9 * expected_delta.abs().max(1.0),
        "{} vs {expected_delta}",
        outcome.it_co2e_delta.0
    );

    // Every read sees the new values; the totals reconcile with the restatements.
    let after_acme = summary(store, "acme").await.totals;
    let after_globex = summary(store, "globex").await.totals;
    let acme_records = store
        .restatements(&scope("acme"), window.0, window.1)
        .await
        .unwrap();
    let globex_records = store
        .restatements(&scope("globex"), window.0, window.1)
        .await
        .unwrap();
    assert_eq!((acme_records.len(), globex_records.len()), (16, 8));
    assert!(acme_records
        .iter()
        .all(|r| r.tenant.as_str() == "acme" && r.instance.as_str() == "i-a"));
    assert!(globex_records
        .iter()
        .all(|r| r.tenant.as_str() == "globex" && r.instance.as_str() == "i-b"));
    for (records, before, after) in [
        (&acme_records, &before_acme, &after_acme),
        (&globex_records, &before_globex, &after_globex),
    ] {
        let delta: f64 = records.iter().map(|r| r.it_co2e_delta().0).sum();
        let moved = after.it_co2e.0 - before.it_co2e.0;
        assert!(
            (moved - delta).abs() <= 1e-9 * delta.abs().max(1.0),
            "{moved} vs {delta}"
        );
        let facility: f64 = records.iter().map(|r| r.facility_co2e_delta().0).sum();
        let moved = after.facility_co2e.0 - before.facility_co2e.0;
        assert!((moved - facility).abs() <= 1e-9 * facility.abs().max(1.0));
        assert_eq!(after.energy, before.energy, "energy never changes");
        for r in records {
            let i = (r.bucket.start().0 - T0) / BUCKET_MS;
            assert_eq!(r.current.value.0, moer[i as usize]);
            assert_eq!(r.current.kind, IntensityKind::Actual);
            let want = if i < 6 {
                IntensityKind::Forecast
            } else {
                IntensityKind::FallbackAverage
            };
            assert_eq!(r.previous.as_ref().unwrap().kind, want);
            assert!(r.reason.starts_with("actual "), "{}", r.reason);
        }
    }
    for (t, inst) in [("acme", "i-a"), ("globex", "i-b")] {
        for row in intervals(store, t, inst).await {
            let i = (row.bucket.start().0 - T0) / BUCKET_MS;
            let j = row.intensity.unwrap();
            if i < 8 {
                assert_eq!(
                    (j.kind, j.value.0, j.point_at),
                    (IntensityKind::Actual, moer[i as usize], row.bucket.start())
                );
            } else {
                assert_eq!(j.kind, IntensityKind::FallbackAverage);
            }
        }
    }

    // Running it again restates nothing and records nothing more.
    let again = store
        .restate(&RegionId::from(REGION), window.0, window.1, &join)
        .await
        .unwrap();
    assert_eq!(again.intervals, 0);
    assert_eq!(
        store
            .restatements(&scope("acme"), window.0, window.1)
            .await
            .unwrap()
            .len(),
        16
    );
    // A tenant with no instances sees no restatements at all.
    assert!(store
        .restatements(&scope("initech"), window.0, window.1)
        .await
        .unwrap()
        .is_empty());
    let coverage = store.intensity_coverage(window.0, window.1).await.unwrap();
    assert_eq!(
        (
            coverage[0].actual,
            coverage[0].fallback,
            coverage[0].forecast
        ),
        (24, 3, 0)
    );

    // Retention: the records of the first four buckets go, the intervals keep their restated
    // intensity, so no total changes; the later records stay.
    let cut = UnixMillis(T0 + 4 * BUCKET_MS);
    let records = |tenant: &'static str| async move {
        store
            .restatements(&scope(tenant), window.0, window.1)
            .await
            .unwrap()
    };
    let due = [records("acme").await, records("globex").await]
        .iter()
        .flatten()
        .filter(|r| r.bucket.start() < cut)
        .count() as u64;
    assert_eq!(due, 3 * 4);
    assert_eq!(store.prune_restatements(cut).await.unwrap(), due);
    // ClickHouse deletes in the background: wait for it, a few seconds at most.
    let mut left = records("acme").await;
    for _ in 0..100 {
        if left.len() == 16 - 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = records("acme").await;
    }
    assert_eq!(left.len(), 16 - 8);
    assert!(left.iter().all(|r| r.bucket.start() >= cut), "{left:?}");
    assert_eq!(records("globex").await.len(), 8 - 4);
    assert_eq!(summary(store, "acme").await.totals, after_acme);
    assert_eq!(summary(store, "globex").await.totals, after_globex);
    assert_eq!(store.prune_restatements(cut).await.unwrap(), 0);
}
