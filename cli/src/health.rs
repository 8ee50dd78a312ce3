//! Readiness checks and metrics listeners of each role (`docs/metrics.md`, "Endpoints"):
//! store (a cheap read), bus (in-process: always; Kafka: a broker answers on TCP) and
//! intensity (the join knows a region), served at `/readyz` beside `/metrics`.

use crate::config::{BusSettings, Settings};
use crate::roles::Roles;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wattprint_runtime::metrics::Readiness;
use wattprint_runtime::Shutdown;
use wattprint_store::Store;

/// The checks of a process running `roles`: store where the enricher or the API runs, bus
/// where the gateway or the enricher runs, intensity where intervals are joined or served.
pub fn readiness(settings: &Settings, store: &Arc<dyn Store>, roles: Roles) -> Readiness {
    let readiness = Readiness::new();
    let in_process_enricher = roles.gateway && matches!(settings.bus, BusSettings::Memory);
    if roles.query_api || roles.enricher || in_process_enricher {
        check_store(&readiness, store.clone());
    }
    if roles.gateway || roles.enricher {
        check_bus(&readiness, settings);
    }
    if roles.query_api || roles.enricher || in_process_enricher {
        check_intensity(&readiness, settings);
    }
    readiness
}

/// Adds the `store` check: one cheap read.
pub fn check_store(readiness: &Readiness, store: Arc<dyn Store>) {
    readiness.add("store", move || {
        let store = store.clone();
        async move {
            store
                .quarantine(1)
                .await
                .map(|_| ())
                .map_err(|e| format!("store unreachable: {e}"))
        }
    });
}

/// Adds the `bus` check: the in-process bus is always ready; Kafka's first reachable broker.
pub fn check_bus(readiness: &Readiness, settings: &Settings) {
    let brokers: Vec<String> = match &settings.bus {
        BusSettings::Memory => return,
        BusSettings::Kafka { config, .. } => config
            .brokers
            .split(',')
            .map(|b| b.trim().to_owned())
            .collect(),
    };
    readiness.add("bus", move || {
        let brokers = brokers.clone();
        async move {
            for broker in &brokers {
                let connect = tokio::net::TcpStream::connect(broker.as_str());
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                    return Ok(());
                }
            }
            Err(format!("no Kafka broker answers ({})", brokers.join(",")))
        }
    });
}

/// Adds the `intensity` check: the join has its regions loaded.
pub fn check_intensity(readiness: &Readiness, settings: &Settings) {
    let join = settings.intensity.clone();
    readiness.add("intensity", move || {
        let loaded = join.snapshot().regions().next().is_some();
        async move {
            if loaded {
                Ok(())
            } else {
                Err("no intensity region loaded".to_owned())
            }
        }
    });
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` when it is set.
pub async fn listen(
    listen: Option<SocketAddr>,
    readiness: Readiness,
    stop: &Shutdown,
) -> anyhow::Result<Option<SocketAddr>> {
    match listen {
        None => Ok(None),
        Some(addr) => {
            let bound = wattprint_runtime::metrics::serve(addr, readiness, stop.clone())
                .await
                .map_err(|e| anyhow::anyhow!("binding the metrics listener to {addr}: {e}"))?;
            Ok(Some(bound))
        }
    }
}

/// Every minute until `stop`, records each configured region's intensity coverage: the share
/// of the last 24 hours' 5-minute slots with an actual marginal point in the loaded join
/// (`wattprint_intensity_coverage_ratio{signal="marginal"}`), and the time of its newest point
/// per signal and kind (`wattprint_intensity_latest_point_timestamp_seconds`).
pub fn keep_coverage(settings: &Settings, stop: &Shutdown) -> tokio::task::JoinHandle<()> {
    use wattprint_core::intensity::{PointKind, Signal};
    use wattprint_core::{Bucket, UnixMillis};
    use wattprint_runtime::metrics::KeyValue;
    let join = settings.intensity.clone();
    let stopped = stop.wait();
    let gauge = wattprint_runtime::metrics::meter()
        .f64_gauge("wattprint.intensity.coverage")
        .with_unit("1")
        .with_description("Share of the last 24 h's 5-minute slots with an actual point.")
        .build();
    let latest = wattprint_runtime::metrics::meter()
        .f64_gauge("wattprint.intensity.latest_point_timestamp")
        .with_unit("s")
        .with_description("Start of the newest intensity point the join holds.")
        .build();
    tokio::spawn(async move {
        const SLOT_MS: i64 = 300_000;
        tokio::pin!(stopped);
        loop {
            let snapshot = join.snapshot();
            let now = Bucket::containing(UnixMillis::now()).start().0;
            for region in snapshot.regions() {
                let slots = 288;
                let covered = (1..=slots)
                    .filter(|i| {
                        let bucket = Bucket::containing(UnixMillis(now - i * SLOT_MS));
                        snapshot.has_actual(region, bucket)
                    })
                    .count();
                let labels = [
                    KeyValue::new("region", region.as_str().to_owned()),
                    KeyValue::new("signal", "marginal"),
                ];
                gauge.record(covered as f64 / slots as f64, &labels);
                for (signal, kind) in [
                    (Signal::Marginal, PointKind::Actual),
                    (Signal::Marginal, PointKind::Forecast),
                    (Signal::Average, PointKind::Actual),
                ] {
                    if let Some(t) = snapshot.latest(region, signal, kind, UnixMillis::now()) {
                        let labels = [
                            KeyValue::new("region", region.as_str().to_owned()),
                            KeyValue::new("signal", signal.as_str()),
                            KeyValue::new("kind", kind.as_str()),
                        ];
                        latest.record(t.0 as f64 / 1000.0, &labels);
                    }
                }
            }
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    })
}
