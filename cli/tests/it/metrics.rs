//! `/metrics` of a running `wattprint up`, parsed strictly as Prometheus text: the counters
//! move with the traffic (every sample the agent had acked is a sample stored, the GPUs'
//! `hw_energy_joules_total` is the energy the API reports) and refusals are counted by reason.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::up::{get, interrupt_and_wait, start_with, Up};
use std::time::Duration;
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::tenant_query_client::TenantQueryClient;
use wattprint_proto::v1::{Attribution, EnergySource, ListInstancesRequest, Sample, SampleBatch};
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
    let regions: Vec<&str> = m
        .iter()
        .filter(|s| s.name == "wattprint_intensity_coverage_ratio")
        .filter(|s| (0.0..=1.0).contains(&s.value))
        .map(|s| s.labels["region"].as_str())
        .collect();
    assert_eq!(regions.len(), 3);
    // The newest marginal actual of each (replayed) region is the bucket playing now.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let latest: Vec<f64> = m
        .iter()
        .filter(|s| s.name == "wattprint_intensity_latest_point_timestamp_seconds")
        .filter(|s| s.labels["signal"] == "marginal" && s.labels["kind"] == "actual")
        .map(|s| s.value)
        .collect();
    assert_eq!(latest.len(), 3, "{latest:?}");
    assert!(
        latest.iter().all(|t| now_s - 900.0 < *t && *t <= now_s),
        "{latest:?} vs now {now_s}"
    );

    // The enricher's energy and emissions by region are the API's, in configured regions only.
    let by_region = |name: &str| -> Vec<(String, f64)> {
        m.iter()
            .filter(|s| s.name == name)
            .map(|s| (s.labels["region"].clone(), s.value))
            .collect()
    };
    let energy = by_region("wattprint_enricher_energy_joules_total");
    assert!(!energy.is_empty());
    assert!(
        energy.iter().all(|(r, _)| regions.contains(&r.as_str())),
        "{energy:?}"
    );
    let energy_j: f64 = energy.iter().map(|(_, j)| j).sum();
    assert!(
        (energy_j * 1000.0 - api_mj as f64).abs() < 1.0,
        "enricher energy {energy_j} J vs API {api_mj} mJ"
    );
    let points = body["points"].as_array().unwrap();
    let api_g: f64 = points.iter().map(|p| p["co2e_g"].as_f64().unwrap()).sum();
    let emitted_g: f64 = by_region("wattprint_enricher_emissions_grams_total")
        .iter()
        .map(|(_, g)| g)
        .sum();
    assert!(api_g > 0.0);
    assert!(
        (emitted_g - api_g).abs() <= api_g * 1e-9 + 1e-6,
        "enricher emissions {emitted_g} g vs API {api_g} g"
    );
    let intervals: u64 = points
        .iter()
        .map(|p| {
            let k = &p["intensity_kinds"];
            ["actual", "forecast", "fallback_average", "missing"]
                .iter()
                .map(|kind| k[kind].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    let joins: f64 = m
        .iter()
        .filter(|s| s.name == "wattprint_intensity_joins_total")
        .map(|s| s.value)
        .sum();
    assert!(
        intervals > 0 && joins >= intervals as f64,
        "{joins} joins, {intervals} intervals"
    );
    // Rollup freshness: the newest bucket written is the newest step with energy.
    let newest = points
        .iter()
        .filter(|p| p["energy_mj"].as_u64().unwrap() > 0)
        .map(|p| p["start"].as_str().unwrap())
        .max()
        .unwrap();
    let rolled = value(&m, "wattprint_rollup_last_bucket_timestamp_seconds", &[]);
    assert_eq!(
        wattprint_core::UnixMillis((rolled * 1000.0) as i64).to_rfc3339(),
        newest
    );
    // The sensor was timed for every energy read: one per sample, and the chain's first.
    let reads = value(
        &m,
        "wattprint_agent_sensor_read_duration_seconds_count",
        &[("reading", "energy")],
    );
    assert!(reads > read, "{reads} energy reads for {read} samples");
    assert_eq!(value(&m, "wattprint_agent_sensor_errors_total", &[]), 0.0);

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
    let rejected = |reason: &str| {
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
    // The quarantine's size, read from the store, holds the same refusals by reason.
    let mut held = Vec::new();
    for _ in 0..100 {
        let m = scrape(&up).await;
        held = m
            .iter()
            .filter(|s| s.name == "wattprint_quarantine_records")
            .map(|s| (s.labels["reason"].clone(), s.value))
            .collect::<Vec<_>>();
        if held.iter().map(|(_, n)| n).sum::<f64>() >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held.len(), 10, "every reason has a series: {held:?}");
    for (reason, n) in &held {
        assert_eq!(*n, rejected(reason.as_str()), "{reason}: {held:?}");
    }
    // gRPC calls are counted by method and gRPC code: a refused token, then a good one.
    let mut grpc = TenantQueryClient::connect(up.api.clone()).await.unwrap();
    let call = |token: &str| {
        let mut req = tonic::Request::new(ListInstancesRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let refused = grpc.list_instances(call("not-a-token")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    grpc.list_instances(call(&acme)).await.unwrap();
    drop(grpc);
    let method = ("route", "/wattprint.v1.TenantQuery/ListInstances");
    let mut codes = (0.0, 0.0);
    for _ in 0..50 {
        let m = scrape(&up).await;
        let name = "wattprint_api_grpc_requests_total";
        codes = (
            value(&m, name, &[method, ("code", "unauthenticated")]),
            value(&m, name, &[method, ("code", "ok")]),
        );
        if codes.1 > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(codes, (1.0, 1.0));
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
    catalogued(&scrape(&up).await);
    let ready = reqwest::get(format!("{}/readyz", up.api)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // Live: the enricher's loop turns (it beats while idle too).
    let live = reqwest::get(format!("{}/healthz", up.api)).await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
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
