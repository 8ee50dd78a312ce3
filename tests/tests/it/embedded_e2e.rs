//! End to end on the embedded deployment: the real H100 trace replayed by the agent, streamed
//! over gRPC to the gateway, through the in-process bus and the enricher into SQLite, read back
//! through the query API with real tokens. Energy is checked against the trace's own counter to
//! the millijoule, and emissions against a hand computation from the intensity file.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use serde_json::Value;
use std::time::Duration;
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_cli::config::{
    RawConfig, RawGpu, RawInstance, Settings, REPLAY_MODEL, REPLAY_POWER_LIMIT,
};
use wattprint_cli::roles::{self, Backend};
use wattprint_core::{InstanceId, UnixMillis};
use wattprint_tests::api::ApiClient;
use wattprint_tests::{
    now_ms, phase_starts, read_sgip, read_trace, replayed_intensity, split_at_edge, virtual_time,
    wire_sample, BUCKET_MS as BUCKET, MJ_PER_KWH,
};

const PUE: f64 = 1.2;

struct Fixture {
    _dir: tempfile::TempDir,
    settings: Settings,
}

fn gpu(seed: u64) -> RawGpu {
    RawGpu {
        uuid: replay_gpu_uuid(seed, 0).0,
        model: REPLAY_MODEL.into(),
        power_limit_w: REPLAY_POWER_LIMIT.0 / 1000,
    }
}

/// Two tenants: acme (San Jose, PG&E) with two single-GPU instances, globex (Irvine, SCE).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let inst = |tenant: &str, id: &str, zip: &str, seed| RawInstance {
        tenant: tenant.into(),
        id: id.into(),
        zip_code: Some(zip.into()),
        cloud_region: None,
        region: None,
        host: None,
        gpus: vec![gpu(seed)],
    };
    let mut raw = RawConfig {
        data_dir: Some(dir.path().join("data")),
        instances: vec![
            inst("acme", "acme-a", "95112", 1),
            inst("acme", "acme-b", "95112", 2),
            inst("globex", "globex-a", "92618", 3),
        ],
        ..RawConfig::default()
    };
    raw.gateway.listen = Some(([127, 0, 0, 1], 0).into());
    raw.query_api.listen = Some(([127, 0, 0, 1], 0).into());
    Fixture {
        settings: raw.validate().unwrap(),
        _dir: dir,
    }
}

/// Replays the whole trace once, as fast as possible, as GPU 0 of `seed` on `instance`.
async fn replay_once(
    backend: &Backend,
    seed: u64,
    instance: &str,
    start_at: UnixMillis,
    settings: &Settings,
) {
    let sensor = ReplaySensor::new(ReplayConfig {
        trace_path: wattprint_tests::data_dir().join("h100-trace/h100_power_trace_50ms.csv"),
        gpus: 1,
        seed,
        start_at,
        pacing: Pacing::AsFastAsPossible,
        loops: Some(1),
        model: REPLAY_MODEL.into(),
        power_limit: REPLAY_POWER_LIMIT,
    })
    .unwrap();
    let resolver =
        InstanceResolver::from_pairs(vec![(replay_gpu_uuid(seed, 0), InstanceId::from(instance))]);
    let config = roles::agent_config(
        settings,
        format!("http://{}", backend.gateway_addr.unwrap()),
    );
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        wattprint_agent::run(config, Box::new(sensor), resolver, std::future::pending()),
    )
    .await
    .expect("replay finished")
    .unwrap();
    let rows = read_trace().len() as u64;
    assert_eq!(report.samples_acked, rows - 1, "{report:?}");
    assert_eq!(report.samples_rejected, 0, "{report:?}");
}

fn api(backend: &Backend) -> ApiClient {
    ApiClient::new(
        format!("http://{}", backend.api_addr.unwrap()),
        backend.auth.clone(),
    )
}

async fn get(backend: &Backend, tenant: &str, path: &str) -> (u16, Value) {
    api(backend).get(tenant, path).await
}

async fn create_workload(
    backend: &Backend,
    tenant: &str,
    instances: &[&str],
    from: i64,
    to: i64,
) -> (u16, Value) {
    api(backend)
        .create_workload(tenant, instances, from, to)
        .await
}

async fn footprint(
    backend: &Backend,
    tenant: &str,
    instances: &[&str],
    from: i64,
    to: i64,
) -> Value {
    api(backend).footprint(tenant, instances, from, to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_energy_and_emissions_are_exact_end_to_end() {
    let f = fixture();
    let store = roles::open_store(&f.settings).await.unwrap();
    let backend = Backend::start(&f.settings, store).await.unwrap();
    let rows = read_trace();
    let pge = read_sgip("SGIP_CAISO_PGE_2020-08.csv.gz");

    // Scenario 1: the whole 190 s trace inside one 5-minute bucket, two hours ago.
    let bucket = (now_ms() - 2 * 3_600_000).div_euclid(BUCKET) * BUCKET;
    let start_a = bucket + 30_000;
    replay_once(&backend, 1, "acme-a", UnixMillis(start_a), &f.settings).await;

    // Per phase: a workload from the phase's first row to the next phase's first row has
    // exactly the counter difference between those rows.
    let phase_starts = phase_starts(&rows);
    assert!(phase_starts.len() >= 6, "trace has its phases");
    for w in phase_starts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let fp = footprint(
            &backend,
            "acme",
            &["acme-a"],
            virtual_time(&rows, a, start_a),
            virtual_time(&rows, b, start_a),
        )
        .await;
        let expected = rows[b].counter_mj - rows[a].counter_mj;
        assert_eq!(
            fp["it_energy_mj"].as_u64().unwrap(),
            expected,
            "phase {}",
            rows[a].phase
        );
    }

    // The whole bucket: energy = counter(last) − counter(first); emissions by hand.
    let fp = footprint(&backend, "acme", &["acme-a"], bucket, bucket + BUCKET).await;
    let energy = rows.last().unwrap().counter_mj - rows[0].counter_mj;
    assert_eq!(fp["it_energy_mj"].as_u64().unwrap(), energy);
    let intensity = replayed_intensity(&pge, bucket);
    let co2e = energy as f64 / MJ_PER_KWH * intensity * PUE;
    let got = fp["operational_co2e_g"].as_f64().unwrap();
    assert!(
        (got - co2e).abs() < 1e-9 * co2e.max(1.0),
        "co2e {got} vs hand {co2e}"
    );
    // SCI = (E·I + M) / R with M = 150 kg × 1000 × 5 min / 5 years for the one GPU, R = 1.
    let embodied = 150_000.0 * BUCKET as f64 / (5.0 * 365.25 * 24.0 * 3600.0 * 1000.0);
    assert!((fp["embodied_co2e_g"].as_f64().unwrap() - embodied).abs() < 1e-9);
    // Relative to E·I + M, not E·I alone: the replayed MOER can be 0 g/kWh (curtailment).
    let sci = co2e + embodied;
    assert!((fp["sci_g_per_unit"].as_f64().unwrap() - sci).abs() <= 1e-9 * sci);

    // Scenario 2: on instance acme-b, the trace straddles a bucket edge 100 s in.
    let edge = bucket - 2 * BUCKET;
    let start_b = edge - 100_000;
    replay_once(&backend, 2, "acme-b", UnixMillis(start_b), &f.settings).await;
    // Hand split: whole spans on each side, and the straddling span in proportion to time.
    let (before, after) = split_at_edge(&rows, start_b, edge);
    let fp = footprint(&backend, "acme", &["acme-b"], edge - BUCKET, edge + BUCKET).await;
    assert_eq!(fp["it_energy_mj"].as_u64().unwrap(), before + after);
    let co2e = (before as f64 * replayed_intensity(&pge, edge - BUCKET)
        + after as f64 * replayed_intensity(&pge, edge))
        / MJ_PER_KWH
        * PUE;
    let got = fp["operational_co2e_g"].as_f64().unwrap();
    assert!(
        (got - co2e).abs() <= 1e-9 * co2e,
        "co2e {got} vs hand {co2e}"
    );

    // The 5-minute series shows the same split and says the intensity was replayed actuals.
    let (status, series) = get(
        &backend,
        "acme",
        &format!(
            "/v1/instances/acme-b/series?from={}&to={}&step=5m",
            edge - BUCKET,
            edge + BUCKET
        ),
    )
    .await;
    assert_eq!(status, 200, "{series}");
    for p in series["points"].as_array().unwrap() {
        assert_eq!(p["intensity_kinds"]["actual"], 1, "{p}");
        assert_eq!(p["intensity_kinds"]["replayed"], 1, "{p}");
    }
    assert_eq!(fp["provenance"]["intervals_replayed_intensity"], 2, "{fp}");
    let energies: Vec<u64> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["energy_mj"].as_u64().unwrap())
        .collect();
    assert_eq!(energies, vec![before, after]);

    // What-ifs of the two-bucket run, on the same replayed PG&E series, by brute force: the
    // facility energy of each slot (rounded to the mJ) started at every offset of a 1 h window.
    let (status, w) =
        create_workload(&backend, "acme", &["acme-b"], edge - BUCKET, edge + BUCKET).await;
    assert_eq!(status, 201, "{w}");
    let (status, whatif) = get(
        &backend,
        "acme",
        &format!(
            "/v1/workloads/{}/whatif?window_hours=1&factor=2",
            w["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 200, "{whatif}");
    assert_eq!(whatif["intensity_replayed"], true);
    let facility = [before, after].map(|e| (e as f64 * PUE).round());
    let at = |d: i64| {
        (facility[0] * replayed_intensity(&pge, edge - BUCKET + d * BUCKET)
            + facility[1] * replayed_intensity(&pge, edge + d * BUCKET))
            / MJ_PER_KWH
    };
    let best = (0..=12).min_by(|&a, &b| at(a).total_cmp(&at(b))).unwrap();
    let fs = &whatif["flexible_start"][0];
    assert_eq!(fs["best_delay_minutes"], best * 5, "{whatif}");
    for (field, want) in [("actual_co2e_g", at(0)), ("best_co2e_g", at(best))] {
        let got = fs[field].as_f64().unwrap();
        assert!(
            // `<=`: where the replayed MOER is 0 g/kWh both are exactly 0.
            (got - want).abs() <= 1e-9 * want.abs(),
            "{field} {got} vs brute force {want}"
        );
    }
    // As run, the what-if's emissions are the footprint's, but for the mJ rounding of PUE.
    assert!((fs["actual_co2e_g"].as_f64().unwrap() - co2e).abs() <= 1e-6 * co2e);

    // Tenant isolation through the whole stack: globex sees none of acme's data.
    let (status, list) = get(&backend, "globex", "/v1/instances").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["globex-a"]);
    for path in [
        format!(
            "/v1/instances/acme-a/series?from={}&to={}&step=5m",
            bucket,
            bucket + BUCKET
        ),
        format!(
            "/v1/instances/acme-a/series?from={}&to={}&step=raw",
            bucket,
            bucket + BUCKET
        ),
    ] {
        assert_eq!(get(&backend, "globex", &path).await.0, 404, "{path}");
    }
    let (_, workloads) = get(&backend, "acme", "/v1/workloads").await;
    // Newest first: the last one created is the what-ifs' two-bucket workload.
    let acme_workload = workloads["workloads"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        workloads["workloads"].as_array().unwrap().len(),
        phase_starts.len() - 1 + 3
    );
    for path in [
        format!("/v1/workloads/{acme_workload}"),
        format!("/v1/workloads/{acme_workload}/whatif"),
    ] {
        assert_eq!(get(&backend, "globex", &path).await.0, 404, "{path}");
    }
    let (_, globex_list) = get(&backend, "globex", "/v1/workloads").await;
    assert_eq!(globex_list["workloads"].as_array().unwrap().len(), 0);
    assert_eq!(
        create_workload(&backend, "globex", &["acme-a"], bucket, bucket + BUCKET)
            .await
            .0,
        404
    );

    // Restart on the same data directory: everything is still there, nothing doubled.
    backend.shutdown().await.unwrap();
    let store = roles::open_store(&f.settings).await.unwrap();
    let backend = Backend::start(&f.settings, store).await.unwrap();
    let (status, body) = get(&backend, "acme", &format!("/v1/workloads/{acme_workload}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["footprint"]["it_energy_mj"].as_u64().unwrap(),
        before + after
    );
    assert_eq!(
        body["footprint"]["operational_co2e_g"].as_f64().unwrap(),
        got
    );
    backend.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_and_bad_samples_neither_double_count_nor_disturb_good_data() {
    use wattprint_proto::v1::ingest_client::IngestClient;
    use wattprint_proto::v1::{Sample, SampleBatch};
    let f = fixture();
    let store = roles::open_store(&f.settings).await.unwrap();
    let backend = Backend::start(&f.settings, store).await.unwrap();
    let g = replay_gpu_uuid(3, 0);
    let bucket = (now_ms() - 3_600_000).div_euclid(BUCKET) * BUCKET;
    let good: Vec<_> = (1..=10)
        .map(|i| {
            wire_sample(
                &g,
                "globex-a",
                i,
                bucket + 1000 * i as i64 + 1000,
                250_000 + i,
            )
        })
        .collect();
    let expected: u64 = good.iter().map(|s| s.energy_mj).sum();
    let mut bad = good.clone();
    bad[0].energy_mj = 5_000_000; // 5 kW on a 700 W GPU
    bad[1].gpu_uuid = "GPU-00000000-0000-0000-0000-000000000000".into(); // unknown
    bad[2].start_unix_ms = now_ms() + 3_599_000; // an hour in the future
    bad[2].end_unix_ms = now_ms() + 3_600_000;
    bad[3].energy_source = 42; // not an enum value
    bad[4].instance_id = "acme-a".into(); // another tenant's instance
    for s in bad.iter_mut().take(5) {
        s.seq += 100;
    }
    // The GPU's own host (the embedded agent's), and a host that holds none of its GPUs
    // sending globex's GPU at a time not yet stored: only the host check can refuse it.
    let host = f.settings.agent.config.host_id.0.clone();
    let intruder: Vec<_> = good
        .iter()
        .map(|s| Sample {
            seq: s.seq + 1000,
            start_unix_ms: s.start_unix_ms + 60_000,
            end_unix_ms: s.end_unix_ms + 60_000,
            ..s.clone()
        })
        .collect();
    // The same time again under new seqs from the right host (a fixed-start replay
    // restarted): accepted by the gateway, refused by the one-timeline rule in the store.
    let replayed: Vec<_> = good
        .iter()
        .map(|s| Sample {
            seq: s.seq + 2000,
            ..s.clone()
        })
        .collect();
    let mut client = IngestClient::connect(format!("http://{}", backend.gateway_addr.unwrap()))
        .await
        .unwrap();
    let batches = vec![
        SampleBatch {
            host_id: host.clone(),
            batch_seq: 1,
            samples: good.clone(),
        },
        SampleBatch {
            host_id: host.clone(),
            batch_seq: 2,
            samples: good.clone(),
        }, // redelivery
        SampleBatch {
            host_id: host.clone(),
            batch_seq: 3,
            samples: bad[..5].to_vec(),
        },
        SampleBatch {
            host_id: host.clone(),
            batch_seq: 4,
            samples: good[..3].to_vec(),
        }, // partial redelivery
        SampleBatch {
            host_id: "intruder-host".into(),
            batch_seq: 5,
            samples: intruder,
        },
        SampleBatch {
            host_id: host.clone(),
            batch_seq: 6,
            samples: replayed,
        },
    ];
    let mut acks = client
        .stream_samples(tokio_stream_iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut got = vec![];
    while let Some(ack) = acks.message().await.unwrap() {
        got.push(ack);
    }
    assert_eq!(
        got.iter().map(|a| a.batch_seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!((got[4].accepted, got[4].rejected.len()), (0, 10));
    assert!(
        got[4].rejected.iter().all(|r| r.reason.ends_with(
            "is not attached to instance globex-a on host intruder-host in the inventory"
        )),
        "{:?}",
        got[4].rejected
    );
    assert_eq!(got[5].accepted, 10);
    assert_eq!(got[2].accepted, 0);
    let reasons: Vec<&str> = got[2].rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons[0].contains("exceeds 2x the GPU's 700000 mW power limit"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].ends_with("in the inventory")
            && reasons[1].contains("is not attached to instance globex-a on host"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("after the gateway's clock"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("energy_source 42"), "{reasons:?}");
    // Another tenant's instance reads exactly like an unknown GPU: nothing names who holds it.
    assert!(
        reasons[4].contains("is not attached to instance acme-a on host")
            && !reasons[4].contains("globex"),
        "{reasons:?}"
    );

    // Energy counted once despite three deliveries.
    let (status, series) = get(
        &backend,
        "globex",
        &format!(
            "/v1/instances/globex-a/series?from={}&to={}&step=5m",
            bucket,
            bucket + BUCKET
        ),
    )
    .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["points"][0]["energy_mj"].as_u64().unwrap(), expected);
    assert!(
        series["points"][0]["coverage"].as_f64().unwrap() <= 1.0,
        "{series}"
    );
    // The bad samples are kept with their reasons for operators: 5 refused by checks, 10 of
    // the intruder, 10 overlapping stored energy.
    let q = backend.store.quarantine(100).await.unwrap();
    assert_eq!(q.len(), 25, "{q:#?}");
    assert_eq!(
        q.iter()
            .filter(|r| r.reason.contains("overlaps stored energy"))
            .count(),
        10
    );
    assert!(q
        .iter()
        .all(|r| !r.reason.is_empty() && !r.payload.is_empty()));
    backend.shutdown().await.unwrap();
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    tokio_stream::iter(items)
}
