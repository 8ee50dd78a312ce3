//! `wattprint loadgen`, small: 2 hosts × 8 GPUs for 15 s through the real gateway, broker,
//! enricher and ClickHouse. Correctness only (no timing): what it recorded as sent is a
//! well-formed fleet (per-GPU seq without gaps, contiguous 1 s spans within an H100's power,
//! hosts holding their GPUs), every tenant's energy read from the kept database equals the sum
//! of what was sent to it, to the mJ, and freshness was measured.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use wattprint_core::{TenantScope, UnixMillis};
use wattprint_store::Store as _;
use wattprint_tests::process::wattprint_bin;
use wattprint_tests::test_servers;

/// An H100's power limit, W: no 1 s sample of the trace holds more than that × its span.
const H100_LIMIT_W: u64 = 700;

#[derive(Debug, serde::Deserialize)]
struct SentSample {
    tenant: String,
    instance: String,
    gpu: String,
    seq: u64,
    start_ms: i64,
    end_ms: i64,
    energy_mj: u64,
}

/// The value after `key` on the line starting with `prefix`, up to `until`.
fn field<'a>(out: &'a str, prefix: &str, key: &str, until: char) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"));
    let rest = &line[line
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} in {line:?}"))
        + key.len()..];
    rest.split(until).next().unwrap().trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_load_is_stored_exactly_and_its_freshness_measured() {
    let Some((clickhouse, kafka)) = test_servers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("sent.csv");
    let args = [
        "loadgen",
        "--hosts",
        "2",
        "--duration",
        "15",
        "--tenants",
        "1",
        "--keep",
        "--clickhouse-url",
        &clickhouse,
        "--brokers",
        &kafka,
        "--record",
        record.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(wattprint_bin())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen failed: {}\nstdout:\n{out}\nstderr tail:\n{}",
        output.status,
        &err[err.len().saturating_sub(4000)..]
    );
    let database = field(&out, "kept:", "database ", ',').to_owned();
    let kept_dir = out
        .lines()
        .find(|l| l.starts_with("kept:"))
        .and_then(|l| l.rsplit(", ").next())
        .unwrap()
        .to_owned();

    // What was sent: 16 GPUs, 8 per host, each a gap-free run of contiguous spans.
    let sent: Vec<SentSample> = csv::Reader::from_path(&record)
        .unwrap()
        .deserialize()
        .map(Result::unwrap)
        .collect();
    let mut by_gpu: BTreeMap<&str, Vec<&SentSample>> = BTreeMap::new();
    for s in &sent {
        by_gpu.entry(&s.gpu).or_default().push(s);
    }
    assert_eq!(by_gpu.len(), 16, "2 hosts × 8 GPUs");
    let mut gpus_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (gpu, samples) in &mut by_gpu {
        samples.sort_by_key(|s| s.seq);
        assert!(
            samples.len() >= 14,
            "{gpu}: {} samples in 15 s",
            samples.len()
        );
        let instances: BTreeSet<&str> = samples.iter().map(|s| s.instance.as_str()).collect();
        assert_eq!(instances.len(), 1, "{gpu} stays on one host: {instances:?}");
        gpus_of.entry(&samples[0].instance).or_default().insert(gpu);
        for w in samples.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "{gpu}: seq without gaps");
            assert_eq!(w[1].start_ms, w[0].end_ms, "{gpu}: contiguous spans");
        }
        for s in samples.iter() {
            let span = s.end_ms - s.start_ms;
            assert!((1..=1000).contains(&span), "{gpu}: a {span} ms span");
            assert!(
                s.energy_mj <= H100_LIMIT_W * span as u64,
                "{gpu}: {} mJ in {span} ms is above 700 W",
                s.energy_mj
            );
        }
    }
    for (gpu, samples) in &by_gpu {
        let total: u64 = samples.iter().map(|s| s.energy_mj).sum();
        assert!(total > 0, "{gpu}: an idle H100 still draws power");
    }
    assert_eq!(gpus_of.len(), 2, "{gpus_of:?}");
    assert!(gpus_of.values().all(|g| g.len() == 8), "{gpus_of:?}");

    // Stored: each tenant's summary in the kept database is exactly what was sent to it.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &sent {
        *expected.entry(&s.tenant).or_default() += s.energy_mj;
    }
    assert_eq!(expected.len(), 2, "the probe tenant and one other");
    let from = UnixMillis(sent.iter().map(|s| s.start_ms).min().unwrap() - 3_600_000);
    let to = UnixMillis(sent.iter().map(|s| s.end_ms).max().unwrap() + 3_600_000);
    let store = wattprint_store::ClickHouseStore::connect(&clickhouse, &database)
        .await
        .unwrap();
    for (tenant, want) in &expected {
        let scope = TenantScope::from_verified((*tenant).into());
        let got = store.tenant_summary(&scope, from, to).await.unwrap();
        assert_eq!(got.totals.energy.0, *want, "tenant {tenant}");
    }
    let stranger = TenantScope::from_verified("lg-t1".into());
    let none = store.tenant_summary(&stranger, from, to).await.unwrap();
    assert_eq!(
        none.totals.energy.0, 0,
        "a tenant with no hosts holds nothing"
    );

    // Freshness was measured; the counts agree with the record.
    let n: usize = field(&out, "freshness:", "(n = ", ',').parse().unwrap();
    assert!(n >= 1, "{out}");
    let line = format!(
        "samples: sent {}, acked {}, rejected 0",
        sent.len(),
        sent.len()
    );
    assert!(out.contains(&line), "{line:?} in:\n{out}");

    let prefix = field(&out, "kept:", "topics ", '*');
    let topics = wattprint_bus::KafkaBusConfig::new(kafka.clone()).with_topic_prefix(prefix);
    wattprint_bus::kafka::delete_topics(&topics).await.unwrap();
    let _ = reqwest::Client::new()
        .post(&clickhouse)
        .body(format!("DROP DATABASE IF EXISTS {database}"))
        .send()
        .await;
    let _ = std::fs::remove_dir_all(kept_dir);
}
