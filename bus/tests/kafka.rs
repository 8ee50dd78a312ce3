//! The Kafka bus against a real Kafka-protocol broker (`WPTEST_KAFKA_BROKERS`, started by
//! `source scripts/servers.sh start`). Every test uses topics and a group of its own. The path
//! through the gateway and the enricher is tested in `ingest/tests/it/kafka.rs`.
//!
//! Without the variable the tests print that they did not run and pass, unless `CI` or
//! `WPTEST_REQUIRE_SERVERS` is set: then they fail.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wattprint_bus::kafka::ConsumedRecord;
use wattprint_bus::testing::fresh_topics;
use wattprint_bus::{
    BusMessage, BusProducer, DeadLetter, DeadLetterPayload, Delivery, KafkaBusConfig,
    KafkaConsumer, KafkaProducer,
};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};
use wattprint_proto::v1::SampleBatch;

fn sample(host: &str, gpu: &str, seq: u64) -> EnergySample {
    EnergySample {
        host: HostId::from(host),
        gpu: GpuUuid::from(gpu),
        instance: InstanceId::from("i-1"),
        seq,
        start: UnixMillis(1_800_000_000_000 + 1000 * seq as i64),
        end: UnixMillis(1_800_000_001_000 + 1000 * seq as i64),
        energy: Millijoules(250_000 + seq),
        power: Milliwatts(250_000),
        power_max: Milliwatts(260_000),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: seq == 0,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    }
}

/// The next record, or a test failure after `within`.
async fn next_record(consumer: &mut KafkaConsumer, within: Duration) -> ConsumedRecord {
    tokio::time::timeout(within, consumer.next_record())
        .await
        .expect("no record arrived in time")
        .expect("consumer closed")
}

/// No record arrives within `within`.
async fn assert_quiet(consumer: &mut KafkaConsumer, within: Duration) {
    if let Ok(Some(r)) = tokio::time::timeout(within, consumer.next_record()).await {
        panic!("unexpected record {:?}: {:?}", r.origin, r.delivery.message);
    }
}

fn seqs(message: &BusMessage) -> Vec<u64> {
    match message {
        BusMessage::Samples(s) => s.iter().map(|s| s.seq).collect(),
        BusMessage::DeadLetters(d) => panic!("expected samples, got dead letters {d:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_round_trip_in_per_gpu_order_on_one_partition_per_gpu() {
    let Some(config) = fresh_topics(4).await else {
        return;
    };
    let producer = KafkaProducer::new(&config).unwrap();
    let gpus: Vec<String> = (0..6).map(|g| format!("GPU-{g}")).collect();
    let mut published = Vec::new();
    for round in 0..5u64 {
        // Each message interleaves all GPUs, as a gateway batch from one host does.
        let mut message = Vec::new();
        for i in 0..10 {
            for gpu in &gpus {
                message.push(sample("host-1", gpu, round * 10 + i));
            }
        }
        published.extend(message.clone());
        producer
            .publish(BusMessage::Samples(message))
            .await
            .unwrap();
    }
    let dead = vec![DeadLetter {
        received_at: UnixMillis(1_800_000_000_000),
        host: HostId::from("host-1"),
        gpu: Some(GpuUuid::from("GPU-9")),
        seq: Some(4),
        reason: "GPU GPU-9 is not attached to instance i-1 on host host-1 in the inventory".into(),
        payload: DeadLetterPayload::Text("{\"gpu_uuid\":\"GPU-9\"}".into()),
    }];
    producer
        .publish(BusMessage::DeadLetters(dead.clone()))
        .await
        .unwrap();

    let mut consumer = KafkaConsumer::new(&config).unwrap();
    let mut got: Vec<EnergySample> = Vec::new();
    let mut got_dead = Vec::new();
    let mut partitions: HashMap<String, BTreeSet<i32>> = HashMap::new();
    while got.len() < published.len() || got_dead.is_empty() {
        let r = next_record(&mut consumer, Duration::from_secs(60)).await;
        match &r.delivery.message {
            BusMessage::Samples(s) => {
                assert_eq!(r.origin.topic, config.samples_topic);
                assert!(s
                    .iter()
                    .all(|x| Some(x.gpu.as_str()) == r.origin.key.as_deref()));
                for x in s {
                    partitions
                        .entry(x.gpu.as_str().to_owned())
                        .or_default()
                        .insert(r.origin.partition);
                }
                got.extend(s.iter().cloned());
            }
            BusMessage::DeadLetters(d) => {
                assert_eq!(r.origin.topic, config.dead_letter_topic);
                assert_eq!(r.origin.key.as_deref(), Some("GPU-9"));
                got_dead.extend(d.iter().cloned());
            }
        }
        r.delivery.commit();
    }
    assert_eq!(got_dead, dead);
    // Per-GPU order is kept.
    for gpu in &gpus {
        let order: Vec<u64> = got
            .iter()
            .filter(|s| s.gpu.as_str() == gpu)
            .map(|s| s.seq)
            .collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>(), "{gpu}");
        assert_eq!(
            partitions[gpu].len(),
            1,
            "{gpu} spread over {:?}",
            partitions[gpu]
        );
    }
    // Same samples, field for field.
    let key = |s: &EnergySample| (s.gpu.clone(), s.seq);
    let mut expected = published.clone();
    expected.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expected);
    assert_quiet(&mut consumer, Duration::from_millis(500)).await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_records_come_back_to_the_group_and_committed_ones_do_not() {
    let Some(config) = fresh_topics(2).await else {
        return;
    };
    let producer = KafkaProducer::new(&config).unwrap();
    for seq in 1..=3 {
        producer
            .publish(BusMessage::Samples(vec![sample("h", "GPU-A", seq)]))
            .await
            .unwrap();
    }

    // Consumed but never committed: the group gets them again.
    let mut first = KafkaConsumer::new(&config).unwrap();
    let mut in_hand = Vec::new();
    for _ in 0..3 {
        in_hand.push(next_record(&mut first, Duration::from_secs(60)).await);
    }
    let offsets: Vec<i64> = in_hand.iter().map(|r| r.origin.offset).collect();
    drop(in_hand);
    drop(first);

    let mut second = KafkaConsumer::new(&config).unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let r = next_record(&mut second, Duration::from_secs(60)).await;
        again.push((r.origin.offset, seqs(&r.delivery.message)));
        r.delivery.commit();
    }
    assert_eq!(
        again,
        offsets
            .iter()
            .zip(1..=3)
            .map(|(o, s)| (*o, vec![s]))
            .collect::<Vec<_>>()
    );
    second.shutdown().await;

    // Committed: a new member starts after them.
    producer
        .publish(BusMessage::Samples(vec![sample("h", "GPU-A", 4)]))
        .await
        .unwrap();
    let mut third = KafkaConsumer::new(&config).unwrap();
    let r = next_record(&mut third, Duration::from_secs(60)).await;
    assert_eq!(seqs(&r.delivery.message), vec![4]);
    r.delivery.commit();
    assert_quiet(&mut third, Duration::from_secs(2)).await;
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_is_delivered_again_and_nothing_past_it_is_committed() {
    let Some(config) = fresh_topics(1).await else {
        return;
    };
    let producer = KafkaProducer::new(&config).unwrap();
    for seq in 1..=3 {
        producer
            .publish(BusMessage::Samples(vec![sample("h", "GPU-A", seq)]))
            .await
            .unwrap();
    }
    let mut consumer = KafkaConsumer::new(&config).unwrap();
    let r1 = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(seqs(&r1.delivery.message), vec![1]);
    r1.delivery.commit();
    let r2 = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(seqs(&r2.delivery.message), vec![2]);
    let failed_offset = r2.origin.offset;
    r2.delivery.fail("store unavailable".into());
    let again = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(again.origin.offset, failed_offset);
    assert_eq!(seqs(&again.delivery.message), vec![2]);
    // Failed again, then a later record is committed: still nothing past the failed one.
    again.delivery.fail("still unavailable".into());
    let again = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(again.origin.offset, failed_offset);
    let r3 = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(seqs(&r3.delivery.message), vec![3]);
    r3.delivery.commit();
    consumer.shutdown().await;
    drop(again); // never settled

    // The group resumes at the failed record.
    let mut consumer = KafkaConsumer::new(&config).unwrap();
    let r = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(r.origin.offset, failed_offset);
    assert_eq!(seqs(&r.delivery.message), vec![2]);
    r.delivery.commit();
    let r = next_record(&mut consumer, Duration::from_secs(60)).await;
    assert_eq!(seqs(&r.delivery.message), vec![3]);
    r.delivery.commit();
    assert_quiet(&mut consumer, Duration::from_secs(1)).await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_records_are_quarantined_with_the_decode_error_and_good_ones_still_flow() {
    let Some(config) = fresh_topics(1).await else {
        return;
    };
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .unwrap();
    let garbage: &[u8] = &[0xff, 0xfe, 0x00, 0x42];
    raw.send(
        FutureRecord::to(&config.samples_topic)
            .key("GPU-A")
            .payload(garbage),
        Duration::from_secs(20),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    raw.send(
        FutureRecord::to(&config.dead_letter_topic)
            .key("h")
            .payload("{\"reason\": 42"),
        Duration::from_secs(20),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    // A well-formed record whose second sample has an unknown enum value.
    let mut batch = SampleBatch {
        host_id: "h".into(),
        batch_seq: 0,
        samples: vec![
            wattprint_proto::sample_to_wire(&sample("h", "GPU-A", 1)),
            wattprint_proto::sample_to_wire(&sample("h", "GPU-A", 2)),
        ],
    };
    batch.samples[1].attribution = 77;
    raw.send(
        FutureRecord::to(&config.samples_topic)
            .key("GPU-A")
            .payload(&batch.encode_to_vec()),
        Duration::from_secs(20),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    let producer = KafkaProducer::new(&config).unwrap();
    producer
        .publish(BusMessage::Samples(vec![sample("h", "GPU-A", 3)]))
        .await
        .unwrap();

    let mut consumer = KafkaConsumer::new(&config).unwrap();
    let mut on_samples = Vec::new();
    let mut on_dead = Vec::new();
    while on_samples.len() < 4 || on_dead.is_empty() {
        let r = next_record(&mut consumer, Duration::from_secs(60)).await;
        if r.origin.topic == config.samples_topic {
            on_samples.push((r.origin.offset, r.delivery.message.clone()));
        } else {
            on_dead.push(r.delivery.message.clone());
        }
        r.delivery.commit();
    }
    let BusMessage::DeadLetters(d) = &on_samples[0].1 else {
        panic!("{on_samples:?}")
    };
    assert_eq!(d.len(), 1);
    assert!(
        d[0].reason.starts_with(&format!(
            "undecodable record on {} partition 0 offset {}: not a wattprint.v1.SampleBatch",
            config.samples_topic, on_samples[0].0
        )),
        "{}",
        d[0].reason
    );
    assert_eq!(
        d[0].payload,
        DeadLetterPayload::Raw(vec![0xff, 0xfe, 0x00, 0x42])
    );
    assert_eq!(d[0].gpu, Some(GpuUuid::from("GPU-A")));
    // The half-good record: its good sample flows, its bad one is quarantined.
    assert_eq!(
        on_samples[1].1,
        BusMessage::Samples(vec![sample("h", "GPU-A", 1)])
    );
    assert_eq!(
        on_samples[1].0, on_samples[2].0,
        "both parts come from one record"
    );
    let BusMessage::DeadLetters(d) = &on_samples[2].1 else {
        panic!("{on_samples:?}")
    };
    assert_eq!(d[0].seq, Some(2));
    assert!(d[0].reason.contains("attribution 77"), "{}", d[0].reason);
    assert_eq!(
        on_samples[3].1,
        BusMessage::Samples(vec![sample("h", "GPU-A", 3)])
    );
    let BusMessage::DeadLetters(d) = &on_dead[0] else {
        panic!("{on_dead:?}")
    };
    assert!(
        d[0].reason.contains("not a wattprint.v1.DeadLetter"),
        "{}",
        d[0].reason
    );
    consumer.shutdown().await;
}

/// Consumes with commits until `stop`, recording `(gpu, seq)`s; holds the first `hold`
/// deliveries unsettled until `release` fires, then commits them (possibly after their
/// partitions were revoked).
async fn member(
    config: KafkaBusConfig,
    seen: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    hold: usize,
    release: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut consumer = KafkaConsumer::new(&config).unwrap();
    let mut held = Vec::new();
    loop {
        if held.len() == hold && *release.borrow() {
            for d in held.drain(..) {
                Delivery::commit(d);
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = tokio::time::timeout(Duration::from_millis(200), consumer.next_record()) => {
                let Ok(Some(r)) = r else { continue };
                if let BusMessage::Samples(s) = &r.delivery.message {
                    seen.lock().unwrap().extend(s.iter().map(|x| (x.gpu.as_str().to_owned(), x.seq)));
                }
                if held.len() < hold && !*release.borrow() {
                    held.push(r.delivery);
                } else {
                    r.delivery.commit();
                }
            }
        }
    }
    for d in held {
        d.commit();
    }
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_loses_nothing_and_late_commits_of_revoked_partitions_are_harmless() {
    let Some(config) = fresh_topics(4).await else {
        return;
    };
    let producer = KafkaProducer::new(&config).unwrap();
    let publish = |from: u64| {
        let producer = &producer;
        async move {
            for seq in from..from + 5 {
                let samples = (0..8)
                    .map(|g| sample("h", &format!("GPU-{g}"), seq))
                    .collect();
                producer
                    .publish(BusMessage::Samples(samples))
                    .await
                    .unwrap();
            }
        }
    };
    publish(0).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (release, released) = tokio::sync::watch::channel(false);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The first member holds 3 records unsettled while the second joins and takes partitions.
    let first = tokio::spawn(member(
        config.clone(),
        seen.clone(),
        3,
        released.clone(),
        stopped.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 3 * 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first member got nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = tokio::spawn(member(config.clone(), seen.clone(), 0, released, stopped));
    tokio::time::sleep(Duration::from_secs(3)).await;
    release.send(true).unwrap();
    publish(5).await;
    let all: BTreeSet<(String, u64)> = (0..8)
        .flat_map(|g| (0..10).map(move |s| (format!("GPU-{g}"), s)))
        .collect();
    loop {
        let got: BTreeSet<_> = seen.lock().unwrap().iter().cloned().collect();
        if got == all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing after the rebalance: {:?}",
            all.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let redeliveries of what was settled too late settle too, then stop both members.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(true).unwrap();
    first.await.unwrap();
    second.await.unwrap();

    // Everything was committed in the end: the group's committed offset of every partition is
    // its end, so a new member would start after the last record and nothing is delivered
    // again. (Read from the group coordinator rather than by joining with a new member: tansu
    // may take long to hand partitions to a member joining right after others left.)
    assert_group_committed_to_the_end(&config, 4).await;
}

/// Asserts the group's committed offset of each samples partition equals its high watermark.
async fn assert_group_committed_to_the_end(config: &KafkaBusConfig, partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&config.samples_topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .unwrap();
        let mut records = 0;
        for e in committed.elements() {
            let (_, high) = consumer
                .fetch_watermarks(
                    &config.samples_topic,
                    e.partition(),
                    Duration::from_secs(30),
                )
                .unwrap();
            records += high;
            let expected = if high == 0 {
                Offset::Invalid
            } else {
                Offset::Offset(high)
            };
            assert_eq!(
                e.offset(),
                expected,
                "partition {} not committed to its end",
                e.partition()
            );
        }
        assert_eq!(records, 80, "a record per GPU and seq: 8 GPUs × seqs 0..10");
    })
    .await
    .unwrap();
}
