//! Records produced straight onto the samples topic, bypassing the gateway, against a real
//! Kafka-protocol broker (`WPTEST_KAFKA_BROKERS`): the enricher re-validates every record it
//! reads with the gateway's rule, so forged ones are quarantined with their reasons and
//! committed, none is counted, and the honest records beside them are stored.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wattprint_bus::testing::fresh_topics;
use wattprint_bus::{BusMessage, BusProducer, KafkaConsumer, KafkaProducer};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::{EnergySample, MAX_STORABLE};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, TenantId, TenantScope, UnixMillis};
use wattprint_ingest::{Enricher, InventoryIndex};
use wattprint_store::{InstanceRecord, SqliteStore, Store};

/// Tenant t1's instance i-1 holds GPU-1 and GPU-2, both read by host-1's agent.
fn inventory() -> Vec<InstanceRecord> {
    vec![common::instance(
        "t1",
        "i-1",
        "R",
        &[("GPU-1", "host-1"), ("GPU-2", "host-1")],
    )]
}

/// A plausible 1 s sample of host-1 for `gpu` of i-1, starting `start`.
fn honest(gpu: &str, seq: u64, start: i64) -> EnergySample {
    let mut s = common::sample(
        "host-1",
        gpu,
        "i-1",
        seq,
        (start, start + 1000),
        250_000 + seq * 7,
    );
    s.chain_start = seq == 0;
    s
}

/// Forged samples, each with a part of the reason it must be quarantined for.
fn forgeries(base: i64) -> Vec<(EnergySample, &'static str)> {
    let at = |seq: u64| honest("GPU-2", seq, base + 1000 * seq as i64);
    let mut out = Vec::new();
    let mut s = at(100);
    s.host = HostId::from("intruder");
    s.gpu = GpuUuid::from("GPU-1");
    out.push((s, "is not attached to instance"));
    let mut s = at(101);
    s.instance = InstanceId::from("i-other");
    out.push((s, "is not attached to instance"));
    let mut s = at(102);
    s.energy = Millijoules(10_000_000_000);
    out.push((s, "implied mean power"));
    let mut s = at(103);
    s.util_gpu_pct = 250;
    out.push((s, "refused on re-validation by the enricher"));
    let mut s = at(104);
    s.start = UnixMillis(base + 86_400_000);
    s.end = UnixMillis(base + 86_401_000);
    out.push((s, "after the gateway's clock"));
    let mut s = at(105);
    s.mem_used_bytes = MAX_STORABLE + 1;
    out.push((s, "storable maximum"));
    let mut s = at(106);
    s.gpu = GpuUuid::from("GPU-unknown");
    out.push((s, "GPU-unknown is not attached to instance"));
    out
}

/// Bytes that are not a `SampleBatch`, produced with a plain client as an attacker would.
async fn produce_garbage(brokers: &str, topic: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .key("GPU-1")
                .payload(&[0xff_u8, 0xff, 0xff, 0x01, 0x02][..]),
            Duration::from_secs(20),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

async fn stored(store: &SqliteStore) -> (u64, BTreeSet<(String, u64)>) {
    let scope = TenantScope::from_verified(TenantId::from("t1"));
    let instance = InstanceId::from("i-1");
    let (from, to) = (UnixMillis(0), UnixMillis(i64::MAX / 2));
    let energy = store
        .instance_intervals(&scope, &instance, from, to)
        .await
        .unwrap()
        .iter()
        .map(|i| i.energy.0)
        .sum();
    let samples = store
        .instance_samples(&scope, &instance, from, to, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sample.gpu.as_str().to_owned(), r.sample.seq))
        .collect();
    (energy, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_on_the_topic_are_quarantined_and_never_counted() {
    let Some(config) = fresh_topics(2).await else {
        return;
    };
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_inventory(&inventory()).await.unwrap();
    // A minute ago, so that no span is in the future at the enricher's real clock.
    let base = UnixMillis::now().0 - 60_000;

    // Honest records and forged ones, interleaved on the topic by one "anyone" producer.
    let producer = KafkaProducer::new(&config).unwrap();
    let honest_samples: Vec<EnergySample> = (0..4)
        .flat_map(|seq| ["GPU-1", "GPU-2"].map(|g| honest(g, seq, base + 1000 * seq as i64)))
        .collect();
    let forged = forgeries(base);
    for (i, s) in honest_samples.iter().enumerate() {
        producer
            .publish(BusMessage::Samples(vec![s.clone()]))
            .await
            .unwrap();
        if let Some((f, _)) = forged.get(i) {
            producer
                .publish(BusMessage::Samples(vec![f.clone()]))
                .await
                .unwrap();
        }
    }
    produce_garbage(&config.brokers, &config.samples_topic).await;

    let enricher = Enricher::new(
        store.clone(),
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        Arc::new(InventoryIndex::new(&inventory())),
        HashMap::new(),
    )
    .with_batching(64, Duration::from_millis(20));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = KafkaConsumer::new(&config).unwrap();
    let run = tokio::spawn(enricher.run(consumer, async {
        let _ = stopped.await;
    }));

    let expected_quarantine = forged.len() + 1; // and the undecodable record
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let held = store.quarantine(100).await.unwrap().len();
        let (_, have) = stored(&store).await;
        if held >= expected_quarantine && have.len() >= honest_samples.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 90 s: {held} quarantined, {} stored",
            have.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap();

    // Only the honest samples count, to the millijoule.
    let (energy, have) = stored(&store).await;
    let want: BTreeSet<(String, u64)> = honest_samples
        .iter()
        .map(|s| (s.gpu.as_str().to_owned(), s.seq))
        .collect();
    assert_eq!(have, want);
    assert_eq!(
        energy,
        honest_samples.iter().map(|s| s.energy.0).sum::<u64>()
    );
    assert_eq!(report.inserted, honest_samples.len() as u64, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");

    // Every forgery is held once, with its reason.
    let held = store.quarantine(100).await.unwrap();
    assert_eq!(held.len(), expected_quarantine, "{held:#?}");
    for (f, reason) in &forged {
        let record = held
            .iter()
            .find(|q| q.seq == Some(f.seq) && q.gpu.as_ref() == Some(&f.gpu))
            .unwrap_or_else(|| panic!("forgery {} of {} not quarantined", f.seq, f.gpu));
        assert!(
            record.reason.contains(reason),
            "{}: {}",
            f.seq,
            record.reason
        );
    }
    assert!(
        held.iter().any(|q| q.reason.contains("undecodable record")),
        "the undecodable record: {held:#?}"
    );

    // Everything was committed: the group has nothing left to deliver.
    let mut again = KafkaConsumer::new(&config).unwrap();
    let leftover = tokio::time::timeout(Duration::from_secs(15), again.next_record()).await;
    assert!(
        leftover.is_err(),
        "a record was left uncommitted: {:?}",
        leftover.ok().flatten().map(|r| r.origin)
    );
    again.shutdown().await;
}
