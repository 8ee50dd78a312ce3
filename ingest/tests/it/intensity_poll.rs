//! The poller end to end on the real CAISO_NORTH data: intervals enriched while only
//! WattTime's forecasts were known are restated when the poll brings the actuals, by exactly
//! E × ΔI each; a provider that is down is reported and changes nothing; polling again is a
//! no-op. Providers: the file provider over the shipped exports (the air-gapped path) and the
//! real WattTime client pointed at a closed port.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, PointKind, RegionIntensity, SharedJoin, Signal,
};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    TenantScope, UnixMillis,
};
use wattprint_ingest::intensity_poll::{IntensityPoller, PollWindows, PolledSource};
use wattprint_ingest::{Enricher, InventoryIndex};
use wattprint_intensity::files::FileProvider;
use wattprint_intensity::watttime::{WattTimeClient, WattTimeConfig};
use wattprint_intensity::Provider;
use wattprint_store::{GpuRecord, InstanceRecord, SqliteStore, Store};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(rel)
}

fn instance(tenant: &str, id: &str, gpu: &str, region: &str) -> InstanceRecord {
    InstanceRecord {
        tenant: TenantId::from(tenant),
        instance: InstanceId::from(id),
        region: RegionId::from(region),
        zip_code: None,
        gpus: vec![GpuRecord {
            uuid: GpuUuid::from(gpu),
            model: "NVIDIA H100 80GB HBM3".into(),
            power_limit: Milliwatts(700_000),
            host: HostId::from("host-a"),
        }],
    }
}

/// 10 s samples of ~350 W from `start` for `n` samples.
fn samples(gpu: &str, inst: &str, start: i64, n: u64) -> Vec<EnergySample> {
    (0..n)
        .map(|k| EnergySample {
            host: HostId::from("host-a"),
            gpu: GpuUuid::from(gpu),
            instance: InstanceId::from(inst),
            seq: k,
            start: UnixMillis(start + k as i64 * 10_000),
            end: UnixMillis(start + (k as i64 + 1) * 10_000),
            energy: Millijoules(3_500_000 + k * 7),
            power: Milliwatts(350_000),
            power_max: Milliwatts(360_000),
            util_gpu_pct: 90,
            mem_used_bytes: 1 << 30,
            temp_c: 50,
            sm_clock_mhz: 1980,
            chain_start: k == 0,
            energy_source: EnergySource::Counter,
            attribution: Attribution::Exclusive,
        })
        .collect()
}

#[tokio::test]
async fn a_poll_restates_forecast_intervals_with_the_actuals_and_reports_a_provider_down() {
    let t0 = UnixMillis::from_utc(2023, 6, 8, 0, 0, 0).unwrap().0;
    let caiso = RegionId::from("CAISO_NORTH");
    let miso = RegionId::from("MISO_MASON_CITY");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let inventory = vec![
        instance("acme", "i-a", "GPU-A1", "CAISO_NORTH"),
        instance("globex", "i-b", "GPU-B1", "CAISO_NORTH"),
    ];
    store.upsert_inventory(&inventory).await.unwrap();

    // The join knows WattTime's forecasts for the day (real export), no actuals yet.
    let mut base = IntensityJoin::new(0);
    for region in [&caiso, &miso] {
        base.insert(
            region.clone(),
            RegionIntensity {
                marginal: None,
                replay: false,
                average: Some((
                    GramsPerKwh::from_lb_per_mwh(429.983),
                    "egrid2023:CAMX".into(),
                )),
            },
        );
    }
    let join = SharedJoin::new(base);
    let mut forecasts = FileProvider::new("file");
    forecasts
        .import_watttime_forecast_csv(
            &data("moer/watttime2023_caiso-north_forecast_2023-06-08_09.csv"),
            &caiso,
        )
        .unwrap();
    assert!(join.record_all(forecasts.points()).rejected.is_empty());

    // One hour of samples on two GPUs, enriched as the enricher does.
    let enricher = Enricher::new(
        store.clone(),
        join.clone(),
        Arc::new(InventoryIndex::new(&inventory)),
        HashMap::new(),
    )
    // The samples' own hour, as the gateway that took them would have seen it.
    .with_clock(|| UnixMillis::from_utc(2023, 6, 8, 2, 0, 0).unwrap_or(UnixMillis(0)));
    let mut batch = samples("GPU-A1", "i-a", t0, 360);
    batch.extend(samples("GPU-B1", "i-b", t0, 360));
    let (enriched, quarantined) = enricher.enrich(&batch);
    assert!(quarantined.is_empty());
    store.write_samples(&enriched).await.unwrap();
    let scope = |t: &str| TenantScope::from_verified(TenantId::from(t));
    let read = |t: &'static str, i: &'static str| {
        let store = store.clone();
        async move {
            store
                .instance_intervals(
                    &scope(t),
                    &InstanceId::from(i),
                    UnixMillis(t0),
                    UnixMillis(t0 + 3_600_000),
                )
                .await
                .unwrap()
        }
    };
    let before = read("acme", "i-a").await;
    assert_eq!(before.len(), 12);
    // Bucket 0 has no forecast issued before it in the export: the flagged average.
    assert_eq!(
        before[0].intensity.as_ref().unwrap().kind,
        IntensityKind::FallbackAverage
    );
    assert!(before[1..]
        .iter()
        .all(|r| r.intensity.as_ref().unwrap().kind == IntensityKind::Forecast));

    // Poll at 02:00: the file provider serves the actuals; WattTime is down.
    let mut actuals = FileProvider::new("file");
    actuals
        .import_watttime_actual_csv(&data("moer/watttime2023_caiso-north_actual.csv"), &caiso)
        .unwrap();
    let mut down = WattTimeConfig::new("user", "password");
    down.base_url = "http://127.0.0.1:1".into();
    down.timeout = Duration::from_secs(2);
    let sources = vec![
        PolledSource {
            region: caiso.clone(),
            provider: Arc::new(actuals) as Arc<dyn Provider>,
            provider_region: "CAISO_NORTH".into(),
            signal: Signal::Marginal,
            forecasts: false,
        },
        PolledSource {
            region: miso.clone(),
            provider: Arc::new(WattTimeClient::new(down).unwrap()),
            provider_region: "MISO_MASON_CITY".into(),
            signal: Signal::Marginal,
            forecasts: true,
        },
    ];
    let poller = IntensityPoller::new(store.clone(), join.clone(), sources, PollWindows::default());
    let now = UnixMillis(t0 + 2 * 3_600_000);
    let report = poller.poll_once(now).await.unwrap();
    assert_eq!(report.new_points, 24, "00:00..02:00 of actuals: {report:?}");
    assert_eq!(report.restated_intervals, 2 * 12);
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(report
        .errors
        .iter()
        .all(|e| e.contains("MISO_MASON_CITY") && e.contains("unavailable")));
    // The window before the series starts is a reported gap, never filled.
    assert!(report.gaps.iter().any(|(r, _, b)| r == &caiso && b.0 == t0));

    // Every interval now has the actual of its bucket; its emissions moved by E × ΔI.
    let expected: Vec<f64> =
        std::fs::read_to_string(data("moer/watttime2023_caiso-north_actual.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .take(12)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
    let after = read("acme", "i-a").await;
    let mut delta = 0.0;
    for ((a, b), want) in after.iter().zip(&before).zip(&expected) {
        let j = a.intensity.as_ref().unwrap();
        assert_eq!(
            (j.kind, j.value.0, j.point_at),
            (IntensityKind::Actual, *want, a.bucket.start())
        );
        delta += a.energy.0 as f64 / 3.6e9 * (want - b.intensity.as_ref().unwrap().value.0);
    }
    let records = store
        .restatements(&scope("acme"), UnixMillis(t0), UnixMillis(t0 + 3_600_000))
        .await
        .unwrap();
    assert_eq!(records.len(), 12);
    let recorded: f64 = records.iter().map(|r| r.it_co2e_delta().0).sum();
    assert!(
        (recorded - delta).abs() <= 1e-9 * delta.abs(),
        "{recorded} vs {delta}"
    );
    // The ledger has the actuals; the forecasts were only in the join (not polled here).
    let ledger = store
        .intensity_points(&wattprint_store::LedgerQuery {
            region: Some(caiso.clone()),
            signal: None,
            from: UnixMillis(i64::MIN),
            to: UnixMillis(i64::MAX),
            fetched_since: None,
        })
        .await
        .unwrap();
    assert_eq!(ledger.len(), 24);
    assert!(ledger.iter().all(|p| p.kind == PointKind::Actual));

    // Polling again: nothing new, nothing restated.
    let again = poller.poll_once(now).await.unwrap();
    assert_eq!((again.new_points, again.restated_intervals), (0, 0));
}
