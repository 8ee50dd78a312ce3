//! Gateway → Kafka → enricher → store against a real Kafka-protocol broker
//! (`WPTEST_KAFKA_BROKERS`, started by `source scripts/servers.sh start`), with topics and a
//! group of the test's own. The bus alone is tested in `bus/tests/kafka.rs`.
//!
//! Without the variable the test prints that it did not run and passes, unless `CI` or
//! `WPTEST_REQUIRE_SERVERS` is set: then it fails.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wattprint_bus::testing::{fresh_group, fresh_topics};
use wattprint_bus::{KafkaConsumer, KafkaProducer};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, TenantId, TenantScope, UnixMillis,
};
use wattprint_ingest::{Enricher, Gateway, GatewayLimits, InventoryIndex};
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{Sample, SampleBatch};
use wattprint_store::{InstanceRecord, SqliteStore, Store};
// ---------------------------------------------------------------------------------------------
// Through the real gateway and enricher
// ---------------------------------------------------------------------------------------------

fn inventory() -> Vec<InstanceRecord> {
    vec![common::instance(
        "t1",
        "i-1",
        "R",
        &[("GPU-1", "host-1"), ("GPU-2", "host-1")],
    )]
}

fn wire(gpu: &str, seq: u64, base: i64) -> Sample {
    let start = base + 1000 * seq as i64;
    wattprint_proto::sample_to_wire(&EnergySample {
        host: HostId::from("host-1"),
        gpu: GpuUuid::from(gpu),
        instance: InstanceId::from("i-1"),
        seq,
        start: UnixMillis(start),
        end: UnixMillis(start + 1000),
        energy: Millijoules(250_000 + seq * 7),
        power: Milliwatts(250_000),
        power_max: Milliwatts(260_000),
        util_gpu_pct: 90,
        mem_used_bytes: 0,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: seq == 0,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    })
}

async fn send(addr: std::net::SocketAddr, batches: Vec<SampleBatch>) -> Vec<u32> {
    let mut client = IngestClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut acks = client
        .stream_samples(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut accepted = Vec::new();
    while let Some(ack) = acks.message().await.unwrap() {
        accepted.push(ack.accepted);
    }
    accepted
}

async fn stored(store: &SqliteStore, from: i64, to: i64) -> (u64, BTreeSet<(String, u64)>) {
    let scope = TenantScope::from_verified(TenantId::from("t1"));
    let instance = InstanceId::from("i-1");
    let energy = store
        .instance_intervals(&scope, &instance, UnixMillis(from), UnixMillis(to))
        .await
        .unwrap()
        .iter()
        .map(|i| i.energy.0)
        .sum();
    let samples = store
        .instance_samples(&scope, &instance, UnixMillis(from), UnixMillis(to), 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sample.gpu.as_str().to_owned(), r.sample.seq))
        .collect();
    (energy, samples)
}

/// Waits until the store's quarantine holds `n` records.
async fn wait_for_quarantine(store: &SqliteStore, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while store.quarantine(100).await.unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quarantine never got {n} records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the store holds every `(gpu, seq)` of `wanted`.
async fn wait_for(store: &SqliteStore, from: i64, to: i64, wanted: &[(&str, u64)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, have) = stored(store, from, to).await;
        if wanted
            .iter()
            .all(|(g, s)| have.contains(&((*g).to_owned(), *s)))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never got {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn enricher(store: &Arc<SqliteStore>) -> Enricher {
    Enricher::new(
        store.clone(),
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        Arc::new(InventoryIndex::new(&inventory())),
        HashMap::new(),
    )
    .with_batching(64, Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_to_kafka_to_enricher_stores_exact_totals_and_redelivery_counts_once() {
    let Some(config) = fresh_topics(4).await else {
        return;
    };
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_inventory(&inventory()).await.unwrap();

    let (stop_enricher, stopped) = tokio::sync::oneshot::channel::<()>();
    let enricher_task = tokio::spawn(enricher(&store).run(
        KafkaConsumer::new(&config).unwrap(),
        async move {
            let _ = stopped.await;
        },
    ));

    let gateway = Gateway::new(
        Arc::new(KafkaProducer::new(&config).unwrap()),
        Arc::new(InventoryIndex::new(&inventory())),
        GatewayLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway_task = tokio::spawn(wattprint_ingest::gateway::serve(
        listener,
        gateway,
        async move {
            let _ = gateway_stopped.await;
        },
    ));

    // 4 batches x 2 GPUs x 25 samples, from 30 minutes ago; one unknown GPU in the first batch.
    let base = UnixMillis::now().0 - 1_800_000;
    let (from, to) = (base - 3_600_000, base + 3_600_000);
    let mut batches = Vec::new();
    let mut expected_energy = 0u64;
    for b in 0..4u64 {
        let mut samples = Vec::new();
        for i in 0..25 {
            for gpu in ["GPU-1", "GPU-2"] {
                let s = wire(gpu, b * 25 + i, base);
                expected_energy += s.energy_mj;
                samples.push(s);
            }
        }
        if b == 0 {
            samples.push(wire("GPU-9", 1, base));
        }
        batches.push(SampleBatch {
            host_id: "host-1".into(),
            batch_seq: b + 1,
            samples,
        });
    }
    assert_eq!(send(addr, batches.clone()).await, vec![50; 4]);
    // The agent lost two acks and resends those batches.
    assert_eq!(send(addr, batches[..2].to_vec()).await, vec![50; 2]);
    // Markers behind the resends on both GPUs' partitions: once they are stored, so is
    // everything before them.
    let marker = |seq| SampleBatch {
        host_id: "host-1".into(),
        batch_seq: 99,
        samples: vec![wire("GPU-1", seq, base), wire("GPU-2", seq, base)],
    };
    assert_eq!(send(addr, vec![marker(1000)]).await, vec![2]);
    expected_energy += 2 * (250_000 + 1000 * 7);
    // And a marker behind the resent refusal on GPU-9's dead-letter partition: another
    // refused sample. The redelivered refusal is held once, so two records, not three.
    let refused_marker = SampleBatch {
        host_id: "host-1".into(),
        batch_seq: 98,
        samples: vec![wire("GPU-9", 2, base)],
    };
    assert_eq!(send(addr, vec![refused_marker]).await, vec![0]);
    wait_for(&store, from, to, &[("GPU-1", 1000), ("GPU-2", 1000)]).await;
    wait_for_quarantine(&store, 2).await;

    let (energy, samples) = stored(&store, from, to).await;
    assert_eq!(samples.len(), 202);
    assert_eq!(
        energy, expected_energy,
        "energy must be exact, counted once"
    );
    stop_enricher.send(()).unwrap();
    let report = enricher_task.await.unwrap();
    assert_eq!(report.inserted, 202, "{report:?}");
    assert_eq!(report.duplicates, 100, "{report:?}");
    assert_eq!(report.quarantined, 3, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    let quarantine = store.quarantine(10).await.unwrap();
    assert_eq!(quarantine.len(), 2, "{quarantine:#?}");
    let mut seqs: Vec<_> = quarantine.iter().filter_map(|q| q.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2]);
    assert!(quarantine.iter().all(|q| q
        .reason
        .starts_with("GPU GPU-9 is not attached to instance")));

    // The same group resumes after what was committed: nothing is processed twice.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let again = tokio::spawn(enricher(&store).run(
        KafkaConsumer::new(&config).unwrap(),
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(send(addr, vec![marker(1001)]).await, vec![2]);
    expected_energy += 2 * (250_000 + 1001 * 7);
    wait_for(&store, from, to, &[("GPU-1", 1001), ("GPU-2", 1001)]).await;
    stop.send(()).unwrap();
    let report = again.await.unwrap();
    assert_eq!((report.inserted, report.duplicates), (2, 0), "{report:?}");

    // A whole redelivery (a new group reads everything from the start): totals do not move.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replay = tokio::spawn(enricher(&store).run(
        KafkaConsumer::new(&fresh_group(&config)).unwrap(),
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(send(addr, vec![marker(1002)]).await, vec![2]);
    expected_energy += 2 * (250_000 + 1002 * 7);
    wait_for(&store, from, to, &[("GPU-1", 1002), ("GPU-2", 1002)]).await;
    // The dead letters are redelivered too, and held once each: a new refusal behind them on
    // GPU-9's partition is the only record added.
    let refused_marker = SampleBatch {
        host_id: "host-1".into(),
        batch_seq: 97,
        samples: vec![wire("GPU-9", 3, base)],
    };
    assert_eq!(send(addr, vec![refused_marker]).await, vec![0]);
    wait_for_quarantine(&store, 3).await;
    stop.send(()).unwrap();
    let report = replay.await.unwrap();
    assert_eq!(report.inserted, 2, "{report:?}");
    assert_eq!(report.duplicates, 304, "{report:?}");
    assert_eq!(report.quarantined, 4, "{report:?}");
    let (energy, samples) = stored(&store, from, to).await;
    assert_eq!(samples.len(), 206);
    assert_eq!(energy, expected_energy);
    assert_eq!(store.quarantine(10).await.unwrap().len(), 3);

    stop_gateway.send(()).unwrap();
    gateway_task.await.unwrap().unwrap();
}
