//! `/metrics`, `/healthz` and `/readyz` of the distributed processes (gateway, enricher, query
//! API on Kafka + ClickHouse, and a replay agent), parsed strictly as Prometheus text: every
//! sample the agent had acked is accepted by the gateway and stored by the enricher, and a
//! refused sample is counted by reason at the gateway and in the enricher's quarantine.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{Sample, SampleBatch};
use wattprint_runtime::metrics::parse::{parse_text, value, Sample as Series};
use wattprint_tests::cluster::{agent_summary, Cluster, TestInstance};
use wattprint_tests::{now_ms, test_servers};

async fn scrape(base: &str) -> Vec<Series> {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{base}");
    parse_text(&response.text().await.unwrap()).unwrap()
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

/// Polls `base`'s `/metrics` until `check` holds, or fails with the last `what`.
async fn until(base: &str, what: &str, check: impl Fn(&[Series]) -> bool) -> Vec<Series> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = scrape(base).await;
        if check(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{base}: never saw {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_metrics_follow_the_traffic_and_count_refusals_by_reason() {
    let Some((clickhouse, kafka)) = test_servers() else {
        return;
    };
    let instances = [TestInstance {
        tenant: "acme",
        id: "acme-m",
        zip: "95112",
        seed: 11,
        gpus: 1,
    }];
    let mut cluster = Cluster::new("metrics", &clickhouse, &kafka, &instances);
    cluster.start_all();
    let gateway = format!("http://127.0.0.1:{}", cluster.metrics_ports.0);
    let enricher = format!("http://127.0.0.1:{}", cluster.metrics_ports.1);
    let api = format!("http://127.0.0.1:{}", cluster.api_port);
    for base in [&gateway, &enricher] {
        assert_eq!(status(&format!("{base}/healthz")).await, 200, "{base}");
    }
    for base in [&gateway, &enricher, &api] {
        assert_eq!(status(&format!("{base}/readyz")).await, 200, "{base}");
    }
    for (base, process) in [
        (&gateway, "gateway"),
        (&enricher, "enricher"),
        (&api, "query_api"),
    ] {
        let m = scrape(base).await;
        assert_eq!(
            value(&m, "wattprint_build_info", &[("process", process)]),
            1.0
        );
    }

    // A replay agent, ten times real time: its own listener shows it reading and connected.
    let start_at = (now_ms() - 3_600_000).div_euclid(300_000) * 300_000;
    let mut agent = cluster.agent("acme-m", 1, start_at, Some(10));
    let line = agent.wait_for_line("agent metrics on", Duration::from_secs(30));
    let agent_base = line
        .trim_start_matches("agent metrics on ")
        .trim_end_matches("/metrics")
        .to_owned();
    let m = until(&agent_base, "samples read and a GPU's energy", |m| {
        value(
            m,
            "wattprint_agent_samples_read_total",
            &[("source", "counter")],
        ) > 0.0
            && value(m, "hw_energy_joules_total", &[("hw_type", "gpu")]) > 0.0
            && value(
                m,
                "wattprint_agent_sensor_read_duration_seconds_count",
                &[("reading", "energy")],
            ) > 0.0
    })
    .await;
    assert_eq!(value(&m, "wattprint_agent_sensor_errors_total", &[]), 0.0);
    assert!(m.iter().all(|s| !s.labels.contains_key("tenant")));
    assert_eq!(status(&format!("{agent_base}/readyz")).await, 200);
    let summary = agent_summary(&mut agent, Duration::from_secs(120));
    assert!(summary.acked > 50, "{summary:?}");
    let acked = summary.acked as f64;

    // Samples acked = samples accepted by the gateway = sample rows the enricher stored.
    let m = scrape(&gateway).await;
    assert_eq!(
        value(&m, "wattprint_gateway_samples_accepted_total", &[]),
        acked
    );
    assert!(value(&m, "wattprint_gateway_batch_duration_seconds_count", &[]) > 0.0);
    assert!(
        value(
            &m,
            "wattprint_gateway_batches_total",
            &[("outcome", "acked")]
        ) > 0.0
    );
    until(&enricher, "every acked sample stored", |m| {
        value(
            m,
            "wattprint_store_rows_written_total",
            &[("table", "samples")],
        ) >= acked
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = scrape(&enricher).await;
    let stored = value(
        &m,
        "wattprint_store_rows_written_total",
        &[("table", "samples")],
    );
    assert_eq!(stored, acked, "no sample written twice on a healthy run");
    assert!(
        value(
            &m,
            "wattprint_enricher_records_total",
            &[("topic", "samples")]
        ) > 0.0
    );
    // Energy by region and the newest bucket written: within the replay's hour.
    assert!(value(&m, "wattprint_enricher_energy_joules_total", &[]) > 0.0);
    let newest = value(&m, "wattprint_rollup_last_bucket_timestamp_seconds", &[]) * 1000.0;
    assert!(
        newest >= start_at as f64 && newest <= now_ms() as f64,
        "{newest} outside [{start_at}, now]"
    );
    // One member holds every partition of both topics (4 each), and once every record is
    // committed none is behind its high watermark (librdkafka reports every 5 s).
    until(&enricher, "every partition assigned and none behind", |m| {
        let lag: Vec<&Series> = m
            .iter()
            .filter(|s| s.name == "wattprint_enricher_lag_records")
            .collect();
        let assigned = |topic| {
            value(
                m,
                "wattprint_enricher_assigned_partitions",
                &[("topic", topic)],
            )
        };
        assigned("samples") == 4.0
            && assigned("dead_letter") == 4.0
            && lag.len() == 8
            && lag.iter().all(|s| s.value == 0.0)
    })
    .await;

    // A malformed sample: refused at the gateway and quarantined by the enricher, by reason.
    let mut client = IngestClient::connect(format!("http://127.0.0.1:{}", cluster.gateway_port))
        .await
        .unwrap();
    let batch = SampleBatch {
        host_id: "host-acme-m".to_owned(),
        batch_seq: 1,
        samples: vec![Sample {
            gpu_uuid: "GPU-x".to_owned(),
            instance_id: "acme-m".to_owned(),
            seq: 1,
            start_unix_ms: now_ms() - 2000,
            end_unix_ms: now_ms() - 1000,
            ..Sample::default()
        }],
    };
    let mut acks = client
        .stream_samples(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(ack.rejected.len(), 1, "{ack:?}");
    drop((acks, client));
    let m = scrape(&gateway).await;
    let reason = [("reason", "malformed")];
    assert_eq!(
        value(&m, "wattprint_gateway_samples_rejected_total", &reason),
        1.0
    );
    until(&enricher, "the refusal quarantined", |m| {
        value(m, "wattprint_quarantine_added_total", &reason) == 1.0
    })
    .await;
    // The quarantine's size, read back from ClickHouse, holds it under its reason alone.
    until(&enricher, "the quarantine counted by reason", |m| {
        value(m, "wattprint_quarantine_records", &reason) == 1.0
            && value(m, "wattprint_quarantine_records", &[]) == 1.0
    })
    .await;
    // The query API counts its requests by route template.
    let client = cluster.api_client();
    let _ = client
        .series_energy("acme", "acme-m", start_at, now_ms())
        .await;
    let m = scrape(&api).await;
    let series = [("route", "/v1/instances/{id}/series"), ("status", "200")];
    assert!(value(&m, "wattprint_api_requests_total", &series) >= 1.0);
}
