//! The ledger against hostile and broken input on the in-process bus, through the real gateway,
//! enricher and SQLite store: overlapping spans under new keys, exact duplicates, un-storable
//! values and records the store refuses are each refused or quarantined with a reason, never
//! counted, and never stall the honest samples beside them.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wattprint_bus::{memory_bus, BusMessage, BusProducer};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::EnergySample;
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, TenantScope, UnixMillis,
};
use wattprint_ingest::enricher::Enricher;
use wattprint_ingest::gateway::{Gateway, GatewayLimits};
use wattprint_ingest::inventory::InventoryIndex;
use wattprint_ingest::quarantine::replay;
use wattprint_proto::v1::SampleBatch;
use wattprint_store::{GpuRecord, InstanceRecord, SqliteStore, Store};

const T0: i64 = 1_800_000_000_000;

fn inventory() -> Vec<InstanceRecord> {
    vec![
        common::instance("acme", "i-1", "R", &[("GPU-1", "host-1")]),
        common::instance("globex", "i-2", "BROKEN", &[("GPU-2", "host-1")]),
    ]
}

fn sample(gpu: &str, instance: &str, seq: u64, start: i64, end: i64, mj: u64) -> EnergySample {
    common::sample("host-1", gpu, instance, seq, (T0 + start, T0 + end), mj)
}

async fn energy(store: &SqliteStore, tenant: &str, instance: &str) -> (u64, i64) {
    let rows = store
        .instance_intervals(
            &TenantScope::from_verified(TenantId::from(tenant)),
            &InstanceId::from(instance),
            UnixMillis(i64::MIN),
            UnixMillis(i64::MAX),
        )
        .await
        .unwrap();
    (
        rows.iter().map(|r| r.energy.0).sum(),
        rows.iter().map(|r| r.covered_ms).sum(),
    )
}

/// The store, an enricher on the in-process bus, and a gateway publishing to it. A region
/// whose PUE is not a number makes the store refuse every sample of `GPU-2`: a record that
/// cannot be stored, next to good ones in the same messages.
async fn pipeline() -> (Arc<SqliteStore>, Gateway, Arc<dyn BusProducer>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_inventory(&inventory()).await.unwrap();
    let index = Arc::new(InventoryIndex::new(&inventory()));
    let (producer, consumer) = memory_bus(16);
    let enricher = Enricher::new(
        store.clone(),
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        index.clone(),
        HashMap::from([(RegionId::from("BROKEN"), f64::NAN)]),
    )
    .with_clock(|| UnixMillis(T0 + 3_600_000))
    .with_batching(8, Duration::from_millis(5));
    tokio::spawn(enricher.run(consumer, std::future::pending::<()>()));
    let producer: Arc<dyn BusProducer> = Arc::new(producer);
    let gateway = Gateway::new(producer.clone(), index, GatewayLimits::default())
        .with_clock(|| UnixMillis(T0 + 3_600_000));
    (store, gateway, producer)
}

#[tokio::test]
async fn hostile_samples_change_no_total_and_honest_ones_keep_arriving() {
    let (store, gateway, producer) = pipeline().await;
    let honest: Vec<EnergySample> = (0..10)
        .map(|i| {
            sample(
                "GPU-1",
                "i-1",
                100 + i,
                i as i64 * 1000,
                (i as i64 + 1) * 1000,
                250_000 + i,
            )
        })
        .collect();
    let honest_mj: u64 = honest.iter().map(|s| s.energy.0).sum();
    // Published straight to the bus, as an enricher would read them after any gateway.
    producer
        .publish(BusMessage::Samples(honest.clone()))
        .await
        .unwrap();
    assert_eq!(energy(&store, "acme", "i-1").await, (honest_mj, 10_000));

    // The same time again under new seqs (a fixed-start replay restarted), shifted by half a
    // sample, one long span over all of it, exact duplicates, and the GPU of a tenant whose
    // records the store refuses — mixed with one new honest sample in every message.
    let mut more_honest_mj = 0;
    let hostile: Vec<Vec<EnergySample>> = vec![
        honest
            .iter()
            .map(|s| EnergySample {
                seq: s.seq + 1000,
                ..s.clone()
            })
            .collect(),
        honest
            .iter()
            .map(|s| EnergySample {
                seq: s.seq + 2000,
                start: UnixMillis(s.start.0 + 500),
                end: UnixMillis(s.end.0 + 500),
                ..s.clone()
            })
            .take(9)
            .collect(),
        vec![sample("GPU-1", "i-1", 3000, -1000, 11_000, 3_000_000)],
        honest.clone(),
        vec![sample("GPU-2", "i-2", 1, 0, 1000, 100_000)],
    ];
    for (next_honest, mut message) in (110u64..).zip(hostile) {
        let s = sample(
            "GPU-1",
            "i-1",
            next_honest,
            (next_honest as i64 - 100) * 1000,
            (next_honest as i64 - 99) * 1000,
            260_000,
        );
        more_honest_mj += s.energy.0;
        message.push(s);
        // Every message is committed: nothing is failed back to loop on the bus.
        producer
            .publish(BusMessage::Samples(message))
            .await
            .unwrap();
    }
    assert_eq!(
        energy(&store, "acme", "i-1").await,
        (honest_mj + more_honest_mj, 15_000)
    );
    assert_eq!(energy(&store, "globex", "i-2").await, (0, 0));

    // Every refused sample is held with its reason: 10 + 9 + 1 overlaps, 1 un-storable.
    let held = store.quarantine(100).await.unwrap();
    let overlaps = held
        .iter()
        .filter(|q| q.reason.contains("overlaps stored energy"))
        .count();
    assert_eq!(overlaps, 20, "{held:#?}");
    let broken: Vec<_> = held.iter().filter(|q| q.reason.contains("PUE")).collect();
    assert_eq!(broken.len(), 1, "{held:#?}");
    // The held payload is the sample itself, as JSON: replayable, not debug text.
    let back: EnergySample = serde_json::from_str(&broken[0].payload).unwrap();
    assert_eq!(back, sample("GPU-2", "i-2", 1, 0, 1000, 100_000));

    // Values no store can hold are refused by the gateway, in the ack, before anything is
    // acked: they never reach the bus to stall it.
    let mut wire = wattprint_proto::sample_to_wire(&sample("GPU-1", "i-1", 0, 20_000, 21_000, 1));
    wire.seq = u64::MAX;
    let mut memory = wattprint_proto::sample_to_wire(&sample("GPU-1", "i-1", 7, 20_000, 21_000, 1));
    memory.mem_used_bytes = u64::MAX;
    let ack = gateway
        .handle(SampleBatch {
            host_id: "host-1".into(),
            batch_seq: 1,
            samples: vec![wire, memory],
        })
        .await
        .unwrap();
    assert_eq!(ack.accepted, 0);
    assert!(ack
        .rejected
        .iter()
        .all(|r| r.reason.contains("exceeds the storable maximum")));
    assert_eq!(
        energy(&store, "acme", "i-1").await,
        (honest_mj + more_honest_mj, 15_000)
    );
}

/// One step of a random interleaving.
#[derive(Debug, Clone)]
enum Step {
    /// Honest sample `k` of GPU `g` from its own host (again if already sent).
    Honest { g: usize, k: usize },
    /// A replay of honest sample `k` under a new seq: same span, same counter energy.
    Replayed { g: usize, k: usize },
    /// Energy for GPU `g` over a random span, sent by a host that does not hold it: `from`
    /// 0 is the other GPU's host (another tenant's), 1 a host that holds no GPU.
    Forged {
        g: usize,
        from: usize,
        start: i64,
        len: i64,
        mj: u64,
    },
}

const HOSTS: [&str; 3] = ["host-1", "host-2", "host-9"];
const GPUS: [(&str, &str, &str); 2] = [("GPU-1", "i-1", "acme"), ("GPU-2", "i-2", "globex")];

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let step = prop_oneof![
        4 => (0usize..2, 0usize..12).prop_map(|(g, k)| Step::Honest { g, k }),
        2 => (0usize..2, 0usize..12).prop_map(|(g, k)| Step::Replayed { g, k }),
        2 => (0usize..2, 0usize..2, 0i64..12_000, 1i64..4_000, 0u64..2_000_000).prop_map(
            |(g, from, start, len, mj)| Step::Forged { g, from, start, len, mj }
        ),
    ];
    proptest::collection::vec(step, 1..60)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever the interleaving of honest, duplicated, reordered, replayed, overlapping and
    /// forged samples: per GPU every stored sample carries exactly the counter's difference
    /// over its span, no two stored spans overlap (coverage ≤ 1), and each tenant's total is
    /// the counter difference over the time it covers.
    #[test]
    fn random_interleavings_keep_one_honest_timeline_per_gpu(
        steps in steps(),
        rates in proptest::collection::vec(100_000u64..700_000, 24),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let store = Arc::new(SqliteStore::open_in_memory().unwrap());
            let mut inv = inventory();
            inv[1].region = RegionId::from("R");
            inv[0].gpus[0].host = HostId::from(HOSTS[0]);
            inv[1].gpus[0].host = HostId::from(HOSTS[1]);
            store.upsert_inventory(&inv).await.unwrap();
            let index = Arc::new(InventoryIndex::new(&inv));
            let (producer, _consumer) = memory_bus(1);
            let gateway = Gateway::new(Arc::new(producer), index.clone(), GatewayLimits::default())
                .with_clock(|| UnixMillis(T0 + 3_600_000));
            let enricher = Enricher::new(
                store.clone(),
                Arc::new(IntensityJoin::new(15 * 60 * 1000)),
                index,
                HashMap::new(),
            )
            .with_clock(|| UnixMillis(T0 + 3_600_000));
            // The counter of GPU g at the end of its honest sample k: samples are 1 s long.
            let counter = |g: usize, k: usize| -> u64 {
                (0..k).map(|j| rates[g * 12 + j]).sum()
            };
            let honest = |g: usize, k: usize, seq: u64| {
                let (gpu, inst, _) = GPUS[g];
                let mut s = sample(gpu, inst, seq, k as i64 * 1000, (k as i64 + 1) * 1000, rates[g * 12 + k]);
                s.host = HostId::from(HOSTS[g]);
                s
            };
            let mut next_seq = 10_000;
            for step in &steps {
                let (host, s) = match *step {
                    Step::Honest { g, k } => (HOSTS[g], honest(g, k, 1 + k as u64)),
                    Step::Replayed { g, k } => {
                        next_seq += 1;
                        (HOSTS[g], honest(g, k, next_seq))
                    }
                    Step::Forged { g, from, start, len, mj } => {
                        next_seq += 1;
                        let (gpu, inst, _) = GPUS[g];
                        let host = [HOSTS[1 - g], HOSTS[2]][from];
                        let mut s = sample(gpu, inst, next_seq, start, start + len, mj);
                        s.host = HostId::from(host);
                        (host, s)
                    }
                };
                let batch = SampleBatch {
                    host_id: host.into(),
                    batch_seq: 1,
                    samples: vec![wattprint_proto::sample_to_wire(&s)],
                };
                let checked = gateway.check(&HostId::from(host), &batch);
                let mut report = Default::default();
                enricher
                    .process(&BusMessage::Samples(checked.accepted), &mut report)
                    .await
                    .unwrap();
            }
            for (g, (_, inst, tenant)) in GPUS.iter().enumerate() {
                let scope = TenantScope::from_verified(TenantId::from(*tenant));
                let stored = store
                    .instance_samples(&scope, &InstanceId::from(*inst), UnixMillis(i64::MIN / 2), UnixMillis(i64::MAX / 2), 10_000)
                    .await
                    .unwrap();
                let mut covered = 0;
                let mut total = 0;
                for (i, row) in stored.iter().enumerate() {
                    let s = &row.sample;
                    // Only the GPU's own host's samples are stored, on the counter's 1 s grid,
                    // each with exactly the counter's difference over its span.
                    assert_eq!(s.host.as_str(), HOSTS[g], "{s:?}");
                    assert_eq!((s.start.0 - T0) % 1000, 0, "{s:?}");
                    let k = ((s.start.0 - T0) / 1000) as usize;
                    assert_eq!(s.end.0 - s.start.0, 1000, "{s:?}");
                    assert_eq!(s.energy.0, counter(g, k + 1) - counter(g, k), "{s:?}");
                    for other in &stored[i + 1..] {
                        let o = &other.sample;
                        assert!(o.start >= s.end || o.end <= s.start, "{s:?} overlaps {o:?}");
                    }
                    covered += s.end.0 - s.start.0;
                    total += s.energy.0;
                }
                let (energy_mj, covered_ms) = energy(&store, tenant, inst).await;
                assert_eq!((energy_mj, covered_ms), (total, covered));
            }
        });
    }
}

#[tokio::test]
async fn held_samples_replay_once_the_cause_is_fixed_and_never_count_twice() {
    let (store, gateway, _producer) = pipeline().await;
    // GPU-3 is installed on host-1 but not yet in the inventory: its samples are refused and
    // held; so is one for GPU-1 that overlaps energy GPU-1 already stored.
    let honest = sample("GPU-1", "i-1", 1, 0, 1000, 250_000);
    let late: Vec<EnergySample> = (1..=3)
        .map(|i| {
            sample(
                "GPU-3",
                "i-1",
                i,
                i as i64 * 1000,
                (i as i64 + 1) * 1000,
                200_000 + i,
            )
        })
        .collect();
    let overlapping = sample("GPU-1", "i-1", 99, 500, 1500, 250_000);
    let ack = gateway
        .handle(SampleBatch {
            host_id: "host-1".into(),
            batch_seq: 1,
            samples: std::iter::once(&honest)
                .chain(&late)
                .chain([&overlapping])
                .map(wattprint_proto::sample_to_wire)
                .collect(),
        })
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.rejected.len()), (2, 3), "{ack:?}");
    let (before_mj, _) = energy(&store, "acme", "i-1").await;
    assert_eq!(before_mj, 250_000);
    let held = store.quarantine(100).await.unwrap();
    assert_eq!(held.len(), 4, "{held:#?}");

    // The operator adds GPU-3 to the instance; replay puts its samples in, once.
    let mut inv = inventory();
    inv[0].gpus.push(GpuRecord {
        uuid: GpuUuid::from("GPU-3"),
        model: "H100".into(),
        power_limit: Milliwatts(700_000),
        host: HostId::from("host-1"),
    });
    store.upsert_inventory(&inv).await.unwrap();
    let index = Arc::new(InventoryIndex::new(&inv));
    let enricher = Enricher::new(
        store.clone(),
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        index.clone(),
        HashMap::new(),
    )
    .with_clock(|| UnixMillis(T0 + 3_600_000));
    let limits = wattprint_core::sample::SampleLimits::default();
    let now = UnixMillis(T0 + 3_600_000);
    let late_mj: u64 = late.iter().map(|s| s.energy.0).sum();
    let first = replay(&enricher, &index, &limits, now, &held)
        .await
        .unwrap();
    assert_eq!(
        (
            first.records,
            first.stored,
            first.duplicates,
            first.refused_by_store
        ),
        (4, 3, 0, 1),
        "{first:?}"
    );
    assert!(first.still_refused.is_empty(), "{first:?}");
    assert_eq!(energy(&store, "acme", "i-1").await.0, before_mj + late_mj);
    // Replaying again (or the records held since) changes nothing.
    let held = store.quarantine(100).await.unwrap();
    let again = replay(&enricher, &index, &limits, now, &held)
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 3), "{again:?}");
    assert_eq!(energy(&store, "acme", "i-1").await.0, before_mj + late_mj);
    // A sample from a host that does not hold the GPU stays refused, with its reason.
    let forged = wattprint_store::QuarantineRecord {
        received_at: now,
        host: HostId::from("host-9"),
        gpu: Some(GpuUuid::from("GPU-3")),
        seq: Some(50),
        reason: "test".into(),
        payload: serde_json::to_string(&EnergySample {
            host: HostId::from("host-9"),
            ..sample("GPU-3", "i-1", 50, 10_000, 11_000, 1)
        })
        .unwrap(),
    };
    let r = replay(&enricher, &index, &limits, now, &[forged])
        .await
        .unwrap();
    assert_eq!(r.stored, 0);
    assert!(
        r.still_refused.keys().all(|k| k.contains("on host host-9")),
        "{r:?}"
    );
}
