//! `/metrics` of a running `wattprint up`, parsed strictly as Prometheus text: the counters
//! move with the traffic (every sample the agent had acked is a sample stored, the GPUs'
//! `hw_energy_joules_total` is the energy the API reports) and refusals are counted by reason.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::up::{get, interrupt_and_wait, start_with, Up};
use std::time::Duration;
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{Attribution, EnergySource, Sample, SampleBatch};
use wattprint_runtime::metrics::parse::{parse_text, value, Sample as Series};

async fn scrape(up: &Up) -> Vec<Series> {
    let response = reqwest::get(format!("{}/metrics", up.api)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_text(&response.text().await.unwrap()).unwrap()
}

/// Scrapes until the agent's acked count and the stored rows have stopped moving.
async fn settled(up: &Up) -> Vec<Series> {
    let mut last = (-1.0, -1.0);
    let mut stable = 0;
    for _ in 0..300 {
        let m = scrape(up).await;
        let now = (
            value(&m, "wattprint_agent_samples_acked_total", &[]),
            value(
                &m,
                "wattprint_store_rows_written_total",
                &[("table", "samples")],
            ),
        );
        stable = if now == last && now.0 > 0.0 {
            stable + 1
        } else {
            0
        };
        last = now;
        if stable == 15 {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replay never settled: {last:?}");
}

#[tokio::test]
async fn up_metrics_move_with_traffic_and_count_refusals_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start_at = (now - 3_600_000).div_euclid(300_000) * 300_000;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("metrics.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\n[agent.replay]\ngpus = 1\ninstances = 1\nloops = 1\n\
             unpaced = true\nstart_at_ms = {start_at}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let up = start_with(&data, Some(&config));
    let m = settled(&up).await;

    let acked = value(&m, "wattprint_agent_samples_acked_total", &[]);
    let sent = value(&m, "wattprint_agent_samples_sent_total", &[]);
    let read = value(&m, "wattprint_agent_samples_read_total", &[]);
    let accepted = value(&m, "wattprint_gateway_samples_accepted_total", &[]);
    let stored = value(
        &m,
        "wattprint_store_rows_written_total",
        &[("table", "samples")],
    );
    assert!(acked > 100.0, "{acked}");
    assert_eq!(acked, stored, "samples acked = samples stored");
    assert_eq!(acked, accepted);
    assert_eq!(sent, read, "no resends on a healthy link");
    assert_eq!(acked, read);
    assert_eq!(
        value(
            &m,
            "wattprint_gateway_batches_total",
            &[("outcome", "acked")]
        ),
        value(&m, "wattprint_gateway_batch_duration_seconds_count", &[])
    );
    assert_eq!(value(&m, "wattprint_build_info", &[("process", "up")]), 1.0);
    assert_eq!(value(&m, "wattprint_agent_spool_bytes", &[]), 0.0);

    // The energy the GPU reported (provider-side hw.energy) is the energy the API serves.
    let acme = up.tokens[0].1.clone();
    let (_, list) = get(&format!("{}/v1/instances", up.api), &acme).await;
    let instance = list["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!(
        "{}/v1/instances/{instance}/series?from={}&to={}&step=5m",
        up.api,
        start_at - 300_000,
        now + 60_000
    );
    let (status, body) = get(&url, &acme).await;
    assert_eq!(status, 200, "{body}");
    let api_mj: u64 = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["energy_mj"].as_u64().unwrap())
        .sum();
    let hw_j = value(&m, "hw_energy_joules_total", &[("hw_type", "gpu")]);
    assert!(
        (hw_j * 1000.0 - api_mj as f64).abs() < 1.0,
        "hw_energy {hw_j} J vs API {api_mj} mJ"
    );
    assert!(m.iter().any(|s| s.name == "hw_power_watts"));
    // Intensity coverage per configured region (the demo's three).
    let regions = m
        .iter()
        .filter(|s| s.name == "wattprint_intensity_coverage_ratio")
        .filter(|s| (0.0..=1.0).contains(&s.value))
        .count();
    assert_eq!(regions, 3);

    // Refused samples are counted by reason, at the gateway and in the API's counters.
    let before = value(&m, "wattprint_gateway_samples_rejected_total", &[]);
    let mut client = IngestClient::connect(up.gateway.replace("grpc://", "http://"))
        .await
        .unwrap();
    let bad = |seq: u64, known_enums: bool, start: i64, end: i64| Sample {
        gpu_uuid: "GPU-unknown".to_owned(),
        instance_id: "nobody".to_owned(),
        seq,
        start_unix_ms: start,
        end_unix_ms: end,
        energy_mj: 1000,
        power_mw: 100_000,
        power_max_mw: 100_000,
        // Unset (0) enums make the sample malformed.
        energy_source: i32::from(known_enums) * EnergySource::Counter as i32,
        attribution: i32::from(known_enums) * Attribution::Exclusive as i32,
        ..Sample::default()
    };
    let batch = SampleBatch {
        host_id: "metrics-test-host".to_owned(),
        batch_seq: 1,
        samples: vec![
            bad(1, false, now - 2000, now - 1000),
            bad(2, true, now - 2000, now - 1000),
            bad(3, true, now + 3_600_000, now + 3_601_000),
        ],
    };
    let mut acks = client
        .stream_samples(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.rejected.len()), (0, 3), "{ack:?}");
    // Close the stream: the gateway's graceful stop waits for open agent streams.
    drop((acks, client));
    let (status, _) = get(&format!("{}/v1/instances", up.api), "not-a-token").await;
    assert_eq!(status, 401);

    let m = scrape(&up).await;
    assert_eq!(
        value(&m, "wattprint_gateway_samples_rejected_total", &[]) - before,
        3.0
    );
    let rejected = |reason| {
        let name = "wattprint_gateway_samples_rejected_total";
        value(&m, name, &[("reason", reason)])
    };
    assert_eq!(rejected("malformed"), 1.0);
    assert!(rejected("not-attached") >= 1.0);
    assert_eq!(rejected("not-attached") + rejected("future"), 2.0);
    // The dead letters reach the quarantine, counted by the same reasons.
    let mut quarantined = 0.0;
    for _ in 0..50 {
        let m = scrape(&up).await;
        quarantined = value(&m, "wattprint_quarantine_added_total", &[]);
        if quarantined >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(quarantined, 3.0);
    assert!(
        value(
            &m,
            "wattprint_api_auth_refusals_total",
            &[("reason", "malformed")]
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "wattprint_api_requests_total",
            &[("route", "/v1/instances/{id}/series"), ("status", "200")]
        ) >= 1.0
    );
    catalogued(&m);
    let ready = reqwest::get(format!("{}/readyz", up.api)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    interrupt_and_wait(up);
}

/// Every family the scrape holds is in `docs/metrics.md`'s tables, with the same type, and
/// uses only the labels the catalogue allows for it.
fn catalogued(m: &[Series]) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .unwrap();
    let mut catalogue = std::collections::BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 4
            && cells[1].starts_with('`')
            && ["counter", "gauge", "histogram"].contains(&cells[2])
        {
            let name = cells[1].trim_matches('`').to_owned();
            catalogue.insert(name, (cells[2].to_owned(), cells[3].to_owned()));
        }
    }
    assert!(catalogue.len() >= 50, "{}", catalogue.len());
    for s in m {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| {
                s.name
                    .strip_suffix(x)
                    .filter(|f| catalogue.contains_key(*f))
            })
            .unwrap_or(&s.name);
        let (kind, labels) = catalogue
            .get(family)
            .unwrap_or_else(|| panic!("{} is not in docs/metrics.md", s.name));
        if family != s.name {
            assert_eq!(kind, "histogram", "{}", s.name);
        }
        for label in s.labels.keys().filter(|l| *l != "le") {
            assert!(
                labels.contains(&format!("`{label}`")),
                "{}: label {label} is not catalogued ({labels})",
                s.name
            );
        }
    }
}
