//! The inventory in time through the real gateway, enricher and SQLite store: a GPU that moves
//! to another host and tenant is billed to each owner for its own time, late samples included,
//! and inventory changes reach a running gateway without a restart.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wattprint_bus::{memory_bus, BusProducer};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::EnergySample;
use wattprint_core::{InstanceId, TenantId, TenantScope, UnixMillis};
use wattprint_ingest::enricher::Enricher;
use wattprint_ingest::gateway::{Gateway, GatewayLimits};
use wattprint_ingest::inventory::{keep_current, InventoryIndex};
use wattprint_proto::v1::{BatchAck, SampleBatch};
use wattprint_store::{InstanceRecord, SqliteStore, Store};

const T0: i64 = 1_800_000_000_000;
/// When GPU-1 moves from acme's i-1 on host-1 to globex's i-2 on host-2.
const MOVE_AT: i64 = T0 + 10_000;

fn instance(tenant: &str, id: &str, gpus: &[(&str, &str)]) -> InstanceRecord {
    common::instance(tenant, id, "CAISO_NORTH", gpus)
}

fn sample(host: &str, instance: &str, seq: u64, start: i64, end: i64, mj: u64) -> EnergySample {
    common::sample(host, "GPU-1", instance, seq, (T0 + start, T0 + end), mj)
}

async fn send(gateway: &Gateway, host: &str, samples: &[EnergySample]) -> BatchAck {
    gateway
        .handle(SampleBatch {
            host_id: host.into(),
            batch_seq: 1,
            samples: samples
                .iter()
                .map(wattprint_proto::sample_to_wire)
                .collect(),
        })
        .await
        .unwrap()
}

async fn energy_mj(store: &SqliteStore, tenant: &str, instance: &str) -> u64 {
    store
        .instance_intervals(
            &TenantScope::from_verified(TenantId::from(tenant)),
            &InstanceId::from(instance),
            UnixMillis(i64::MIN),
            UnixMillis(i64::MAX),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.energy.0)
        .sum()
}

fn pipeline(store: Arc<SqliteStore>, index: Arc<InventoryIndex>) -> Gateway {
    let (producer, consumer) = memory_bus(16);
    let enricher = Enricher::new(
        store,
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        index.clone(),
        HashMap::new(),
    )
    .with_clock(|| UnixMillis(T0 + 3_600_000));
    tokio::spawn(enricher.run(consumer, std::future::pending::<()>()));
    let producer: Arc<dyn BusProducer> = Arc::new(producer);
    Gateway::new(producer, index, GatewayLimits::default())
        .with_clock(|| UnixMillis(T0 + 3_600_000))
}

#[tokio::test]
async fn a_gpu_that_moves_is_billed_to_each_owner_for_its_own_time() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .upsert_inventory_at(
            &[
                instance("acme", "i-1", &[("GPU-1", "host-1")]),
                instance("globex", "i-2", &[]),
            ],
            UnixMillis(T0),
        )
        .await
        .unwrap();
    store
        .upsert_inventory_at(
            &[
                instance("acme", "i-1", &[]),
                instance("globex", "i-2", &[("GPU-1", "host-2")]),
            ],
            UnixMillis(MOVE_AT),
        )
        .await
        .unwrap();
    // Built after the move: every sample below is enriched under the new inventory.
    let index = Arc::new(InventoryIndex::from_history(
        &store.placement_history().await.unwrap(),
    ));
    let gateway = pipeline(store.clone(), index);

    // The new owner's host reports after the move.
    let after: Vec<_> = (0..5)
        .map(|i| {
            sample(
                "host-2",
                "i-2",
                100 + i,
                10_000 + i as i64 * 1000,
                11_000 + i as i64 * 1000,
                300_000 + i,
            )
        })
        .collect();
    assert_eq!(send(&gateway, "host-2", &after).await.accepted, 5);
    // The old host's spool delivers the time before the move late: still acme's.
    let before: Vec<_> = (0..10)
        .map(|i| {
            sample(
                "host-1",
                "i-1",
                i,
                i as i64 * 1000,
                (i as i64 + 1) * 1000,
                250_000 + i,
            )
        })
        .collect();
    assert_eq!(send(&gateway, "host-1", &before).await.accepted, 10);

    // Refused: the old host after the move, the new host before it, and a span across it.
    let refused = [
        ("host-1", sample("host-1", "i-1", 20, 10_000, 11_000, 1)),
        ("host-2", sample("host-2", "i-2", 21, 5_000, 6_000, 1)),
        ("host-1", sample("host-1", "i-1", 22, 9_500, 10_500, 1)),
        ("host-2", sample("host-2", "i-2", 23, 9_500, 10_500, 1)),
    ];
    for (host, s) in &refused {
        let ack = send(&gateway, host, std::slice::from_ref(s)).await;
        assert_eq!(ack.accepted, 0, "{s:?}");
        assert!(
            ack.rejected[0]
                .reason
                .contains("is not attached to instance"),
            "{:?}",
            ack.rejected
        );
    }

    let sum = |v: &[EnergySample]| v.iter().map(|s| s.energy.0).sum::<u64>();
    assert_eq!(energy_mj(&store, "acme", "i-1").await, sum(&before));
    assert_eq!(energy_mj(&store, "globex", "i-2").await, sum(&after));
    // Neither tenant can read the other's instance: the same not-found either way.
    for (tenant, other) in [("globex", "i-1"), ("acme", "i-2")] {
        let read = store
            .instance_intervals(
                &TenantScope::from_verified(TenantId::from(tenant)),
                &InstanceId::from(other),
                UnixMillis(i64::MIN),
                UnixMillis(i64::MAX),
            )
            .await;
        assert!(read.is_err(), "{tenant} read {other}: {read:?}");
    }
}

#[tokio::test]
async fn inventory_changes_reach_a_running_gateway_without_restart() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .upsert_inventory(&[instance("acme", "i-1", &[])])
        .await
        .unwrap();
    let index = Arc::new(InventoryIndex::from_history(
        &store.placement_history().await.unwrap(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reload = tokio::spawn(keep_current(
        store.clone(),
        index.clone(),
        Duration::from_millis(20),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let gateway = pipeline(store.clone(), index);
    let s = sample("host-1", "i-1", 1, 0, 1000, 250_000);
    let ack = send(&gateway, "host-1", std::slice::from_ref(&s)).await;
    assert_eq!(ack.accepted, 0, "GPU-1 is in no inventory yet");

    // The operator attaches GPU-1 (a brand-new GPU is placed since always): the running
    // gateway accepts its samples once the reload has run, with no restart.
    store
        .upsert_inventory(&[instance("acme", "i-1", &[("GPU-1", "host-1")])])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if send(&gateway, "host-1", std::slice::from_ref(&s))
            .await
            .accepted
            == 1
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(energy_mj(&store, "acme", "i-1").await, 250_000);
    stop_tx.send(()).unwrap();
    reload.await.unwrap();
}
