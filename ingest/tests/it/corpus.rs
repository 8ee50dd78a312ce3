//! The bad-input corpus kept in `tests/corpus/`: refused wire samples, time strings no parser
//! may accept, and broken intensity files. Each is answered with a clear error that says
//! what and why; none panics, and none disturbs a good sample sent beside it.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wattprint_bus::{memory_bus, BusMessage};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId, UnixMillis,
};
use wattprint_ingest::gateway::{Gateway, GatewayLimits};
use wattprint_ingest::inventory::InventoryIndex;
use wattprint_intensity::files::{load_marginal, MarginalFormat};
use wattprint_intensity::timefmt::parse_utc_timestamp;
use wattprint_proto::v1::SampleBatch;
use wattprint_store::{GpuRecord, InstanceRecord};

const NOW: i64 = 1_800_000_000_000;

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus")
        .join(rel)
}

/// Non-comment lines of a corpus file, each a JSON value.
fn json_lines(rel: &str) -> Vec<Value> {
    std::fs::read_to_string(corpus(rel))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{rel}: {l}: {e}")))
        .collect()
}

fn gateway() -> (Gateway, wattprint_bus::MemoryConsumer) {
    let inventory = ["i-1", "i-2"].map(|id| InstanceRecord {
        tenant: TenantId::from("t"),
        instance: InstanceId::from(id),
        region: RegionId::from("R"),
        zip_code: None,
        gpus: vec![GpuRecord {
            uuid: GpuUuid::from(if id == "i-1" { "GPU-1" } else { "GPU-2" }),
            model: "H100".into(),
            power_limit: Milliwatts(700_000),
            host: HostId::from("h"),
        }],
    });
    let (producer, consumer) = memory_bus(64);
    let g = Gateway::new(
        Arc::new(producer),
        Arc::new(InventoryIndex::new(&inventory)),
        GatewayLimits::default(),
    )
    .with_clock(|| UnixMillis(NOW));
    (g, consumer)
}

fn valid(seq: u64) -> EnergySample {
    EnergySample {
        host: HostId::from("h"),
        gpu: GpuUuid::from("GPU-1"),
        instance: InstanceId::from("i-1"),
        seq,
        start: UnixMillis(NOW - 2000),
        end: UnixMillis(NOW - 1000),
        energy: Millijoules(300_000),
        power: Milliwatts(300_000),
        power_max: Milliwatts(310_000),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: false,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    }
}

#[tokio::test]
async fn every_corpus_wire_sample_is_refused_with_its_reason_beside_a_good_one() {
    let cases = json_lines("wire_samples.jsonl");
    assert!(cases.len() >= 60, "{}", cases.len());
    let (g, mut consumer) = gateway();
    // Commits everything the gateway publishes, so its publishes return, and keeps the
    // samples.
    let published = tokio::spawn(async move {
        use wattprint_bus::BusConsumer;
        let mut samples = Vec::new();
        while let Some(d) = consumer.next().await {
            if let BusMessage::Samples(s) = &d.message {
                samples.extend(s.iter().cloned());
            }
            d.commit();
        }
        samples
    });
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let mut wire = wattprint_proto::sample_to_wire(&valid(1_000 + i as u64));
        let mut host = "h".to_owned();
        for (key, v) in case["set"].as_object().unwrap() {
            let int = || v.as_i64().unwrap();
            let uint = || v.as_u64().unwrap();
            match key.as_str() {
                "gpu_uuid" => wire.gpu_uuid = v.as_str().unwrap().into(),
                "instance_id" => wire.instance_id = v.as_str().unwrap().into(),
                "host" => host = v.as_str().unwrap().into(),
                "seq" => wire.seq = uint(),
                "energy_mj" => wire.energy_mj = uint(),
                "mem_used_bytes" => wire.mem_used_bytes = uint(),
                "power_mw" => wire.power_mw = u32::try_from(uint()).unwrap(),
                "power_max_mw" => wire.power_max_mw = u32::try_from(uint()).unwrap(),
                "util_gpu_pct" => wire.util_gpu_pct = u32::try_from(uint()).unwrap(),
                "energy_source" => wire.energy_source = i32::try_from(int()).unwrap(),
                "attribution" => wire.attribution = i32::try_from(int()).unwrap(),
                "start_rel" => wire.start_unix_ms = NOW + int(),
                "end_rel" => wire.end_unix_ms = NOW + int(),
                "start_abs" => wire.start_unix_ms = int(),
                "end_abs" => wire.end_unix_ms = int(),
                other => panic!("{name}: unknown field {other}"),
            }
        }
        // The bad sample beside a good one of the same host, in one batch.
        let mut good = valid(i as u64 + 1);
        good.host = HostId::new(host.clone());
        good.start = UnixMillis(NOW - 3_000_000 + 1000 * i as i64);
        good.end = UnixMillis(good.start.0 + 1000);
        let batch = SampleBatch {
            host_id: host.clone(),
            batch_seq: i as u64,
            samples: vec![wire.clone(), wattprint_proto::sample_to_wire(&good)],
        };
        // The good one passes, unless the case is about the host, whose GPU it is not either.
        let good_passes = host == "h";
        let refused = if good_passes { 1 } else { 2 };
        let checked = g.check(&HostId::new(host.clone()), &batch);
        assert_eq!(checked.rejected.len(), refused, "{name}: {checked:?}");
        let reason = &checked.rejected[0].reason;
        assert!(
            reason.contains(expect),
            "{name}: {reason:?} lacks {expect:?}"
        );
        assert_eq!(checked.dead_letters.len(), refused, "{name}");
        assert_eq!(checked.dead_letters[0].reason, *reason, "{name}");
        assert_eq!(checked.accepted.len(), usize::from(good_passes), "{name}");
        // And the whole path answers with an ack, never an error that would make the agent
        // resend the batch forever.
        let ack = g.handle(batch).await.unwrap();
        assert_eq!(ack.rejected.len(), refused, "{name}");
    }
    // Nothing refused ever reached the samples stream: every published sample is a good one.
    drop(g);
    let published = published.await.unwrap();
    assert!(!published.is_empty());
    assert!(published
        .iter()
        .all(|s| s.seq <= cases.len() as u64 && s.energy.0 == 300_000));
}

#[test]
fn no_corpus_time_string_parses() {
    let cases = json_lines("timestamps.txt");
    assert!(cases.len() >= 60, "{}", cases.len());
    for case in cases {
        let s = case.as_str().unwrap();
        assert_eq!(parse_utc_timestamp(s), None, "{s:?}");
    }
    // The accepted forms still parse, to the same instant.
    for ok in [
        "2023-06-08 00:05:00",
        "2023-06-08T00:05:00",
        "2023-06-08T00:05:00Z",
        "2023-06-08 00:05:00+00:00",
        "\u{feff}2023-06-08 00:05:00",
    ] {
        assert_eq!(
            parse_utc_timestamp(ok),
            Some(UnixMillis(1_686_182_700_000)),
            "{ok:?}"
        );
    }
}

#[test]
fn every_corpus_intensity_file_is_refused_naming_the_file() {
    let dir = corpus("intensity");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 25, "{}", files.len());
    for path in files {
        for format in [MarginalFormat::WattTimeCsv, MarginalFormat::Sgip] {
            let err = load_marginal(&path, format, "corpus")
                .err()
                .unwrap_or_else(|| panic!("{} was accepted", path.display()));
            let msg = err.to_string();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(msg.contains(&name), "{name}: {msg}");
        }
    }
}
