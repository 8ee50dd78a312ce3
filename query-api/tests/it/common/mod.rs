//! Shared fixtures: a real in-memory `SqliteStore` seeded with two tenants, the real router,
//! and request helpers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::sci::{EmbodiedSpec, HardwareCatalog};
use wattprint_core::{
    Bucket, GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    UnixMillis,
};
use wattprint_query_api::{mint_token, router, ApiLimits, ApiState, AuthConfig};
use wattprint_store::{
    EnrichedSample, EnrichedShare, GpuRecord, InstanceRecord, SqliteStore, Store,
};

/// 2026-11-23T00:00:00Z, a UTC midnight (so 5-minute, hour and day aligned).
pub const T0: i64 = 1_795_392_000_000;
/// One 5-minute bucket.
pub const B: i64 = 300_000;
/// Millijoules per kWh.
pub const MJ_PER_KWH: f64 = 3_600_000_000.0;

pub const H100: &str = "NVIDIA H100 80GB HBM3";
pub const MYSTERY: &str = "Mystery Accelerator X";
/// Embodied figures of the H100 in the test catalog.
pub const H100_KG: f64 = 1_000.0;
pub const H100_YEARS: f64 = 4.0;
/// PUE of region R1 (tenant A's i-a1).
pub const PUE_R1: f64 = 1.2;

pub fn auth() -> AuthConfig {
    AuthConfig::new(
        "an-hs256-secret-for-tests-only",
        "wattprint-test",
        "wattprint-query-api",
    )
}

pub fn token(tenant: &str) -> String {
    mint_token(&auth(), &TenantId::from(tenant), Duration::from_secs(600)).unwrap()
}

/// A 10-minute dev token with `role`: for `reader`/`admin`, `name` is the tenant; for
/// `operator`, the subject.
pub fn role_token(name: &str, role: wattprint_query_api::Role) -> String {
    wattprint_query_api::mint_role_token(
        &auth(),
        role,
        name,
        std::time::SystemTime::now(),
        Duration::from_secs(600),
    )
    .unwrap()
}

pub fn catalog() -> HardwareCatalog {
    let mut c = HardwareCatalog::default();
    c.models.insert(
        H100.into(),
        EmbodiedSpec {
            embodied_kgco2e: H100_KG,
            lifetime_years: H100_YEARS,
            source: "test".into(),
        },
    );
    c
}

pub struct Harness {
    pub store: Arc<SqliteStore>,
    pub app: Router,
}

/// Intensity of region R1 per bucket index from T0: actual 100, actual 400, fallback 250,
/// then none.
pub fn intensity_r1(bucket: Bucket) -> Option<JoinedIntensity> {
    let i = (bucket.start().0 - T0).div_euclid(B);
    let (v, kind) = match i {
        0 => (100.0, IntensityKind::Actual),
        1 => (400.0, IntensityKind::Actual),
        2 => (250.0, IntensityKind::FallbackAverage),
        _ => return None,
    };
    Some(joined(bucket, v, kind))
}

/// Intensity of region R2: actual 200 in bucket 0, forecast 300 in bucket 1.
pub fn intensity_r2(bucket: Bucket) -> Option<JoinedIntensity> {
    let i = (bucket.start().0 - T0).div_euclid(B);
    let (v, kind) = match i {
        0 => (200.0, IntensityKind::Actual),
        1 => (300.0, IntensityKind::Forecast),
        _ => return None,
    };
    Some(joined(bucket, v, kind))
}

/// Intensity of region RB (tenant B): a flat 999.
pub fn intensity_rb(bucket: Bucket) -> Option<JoinedIntensity> {
    Some(joined(bucket, 999.0, IntensityKind::Actual))
}

fn joined(bucket: Bucket, v: f64, kind: IntensityKind) -> JoinedIntensity {
    JoinedIntensity {
        value: GramsPerKwh(v),
        kind,
        source: "test:series".into(),
        point_at: bucket.start(),
        replayed: false,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn enriched(
    tenant: &str,
    instance: &str,
    gpu: &str,
    region: &str,
    pue: f64,
    seq: u64,
    start: i64,
    end: i64,
    mj: u64,
    intensity: impl Fn(Bucket) -> Option<JoinedIntensity>,
) -> EnrichedSample {
    let sample = EnergySample {
        host: HostId::from("host-1"),
        gpu: GpuUuid::from(gpu),
        instance: InstanceId::from(instance),
        seq,
        start: UnixMillis(start),
        end: UnixMillis(end),
        energy: Millijoules(mj),
        power: Milliwatts(300_000 + seq as u32),
        power_max: Milliwatts(350_000 + seq as u32),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: seq == 0,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    };
    let shares = split_into_buckets(sample.start, sample.end, sample.energy)
        .into_iter()
        .map(|s| EnrichedShare {
            bucket: s.bucket,
            energy: s.energy,
            covered_ms: s.covered_ms,
            intensity: intensity(s.bucket),
        })
        .collect();
    EnrichedSample {
        sample,
        tenant: TenantId::from(tenant),
        region: RegionId::from(region),
        pue,
        shares,
    }
}

/// Energy of GPU-a1's sample `k` (spans `[T0 + 30 s + k min, T0 + 90 s + k min]`).
pub fn a1_energy(k: u64) -> u64 {
    18_000_000 + 1_003 * k
}

pub fn gpu(uuid: &str, model: &str) -> GpuRecord {
    GpuRecord {
        uuid: GpuUuid::from(uuid),
        model: model.into(),
        power_limit: Milliwatts(700_000),
        host: HostId::from("host-1"),
    }
}

pub fn instance(
    tenant: &str,
    id: &str,
    region: &str,
    zip: Option<&str>,
    gpus: Vec<GpuRecord>,
) -> InstanceRecord {
    InstanceRecord {
        tenant: TenantId::from(tenant),
        instance: InstanceId::from(id),
        region: RegionId::from(region),
        zip_code: zip.map(str::to_owned),
        gpus,
    }
}

/// Seeds:
/// - tenant `acme`: `i-a1` (region R1, PUE 1.2, GPU-a1 H100) with 15 one-minute samples
///   starting 30 s after T0 (they cross every bucket edge in the middle of a sample);
///   `i-a2` (region R2, GPU-a2 H100 + GPU-a3 of an unknown model): GPU-a2 one sample per
///   bucket exactly on the edges, GPU-a3 one sample over `[T0+100 s, T0+400 s]`.
/// - tenant `globex`: `i-b1` (region RB, GPU-b1) with samples in the same time range.
pub async fn harness_with(limits: ApiLimits) -> Harness {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .upsert_inventory(&[
            instance(
                "acme",
                "i-a1",
                "R1",
                Some("94105"),
                vec![gpu("GPU-a1", H100)],
            ),
            instance(
                "acme",
                "i-a2",
                "R2",
                None,
                vec![gpu("GPU-a2", H100), gpu("GPU-a3", MYSTERY)],
            ),
            instance(
                "globex",
                "i-b1",
                "RB",
                Some("10001"),
                vec![gpu("GPU-b1", H100)],
            ),
        ])
        .await
        .unwrap();
    let mut samples = Vec::new();
    for k in 0..15u64 {
        let start = T0 + 30_000 + 60_000 * k as i64;
        samples.push(enriched(
            "acme",
            "i-a1",
            "GPU-a1",
            "R1",
            PUE_R1,
            k,
            start,
            start + 60_000,
            a1_energy(k),
            intensity_r1,
        ));
    }
    for b in 0..2u64 {
        let start = T0 + B * b as i64;
        samples.push(enriched(
            "acme",
            "i-a2",
            "GPU-a2",
            "R2",
            1.0,
            b,
            start,
            start + B,
            30_000_000 + b,
            intensity_r2,
        ));
    }
    samples.push(enriched(
        "acme",
        "i-a2",
        "GPU-a3",
        "R2",
        1.0,
        0,
        T0 + 100_000,
        T0 + 400_000,
        60_000_003,
        intensity_r2,
    ));
    for k in 0..4u64 {
        let start = T0 + 60_000 * k as i64;
        samples.push(enriched(
            "globex",
            "i-b1",
            "GPU-b1",
            "RB",
            1.0,
            k,
            start,
            start + 60_000,
            5_000_000,
            intensity_rb,
        ));
    }
    let outcome = store.write_samples(&samples).await.unwrap();
    assert_eq!(outcome.inserted as usize, samples.len());
    let dyn_store: Arc<dyn Store> = store.clone();
    let app = router(ApiState::new(dyn_store, auth(), catalog(), limits));
    Harness { store, app }
}

pub async fn harness() -> Harness {
    harness_with(ApiLimits::default()).await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 7807 problem with `status`.
    pub fn assert_problem(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["type"].is_string() && self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

pub async fn get(app: &Router, uri: &str, bearer: Option<&str>) -> Reply {
    let mut req = Request::builder().method(Method::GET).uri(uri);
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

pub async fn post_json(app: &Router, uri: &str, bearer: Option<&str>, body: &Value) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(app, req.body(Body::from(body.to_string())).unwrap()).await
}

/// Creates a workload for `tenant` and returns its id.
pub async fn create_workload(
    app: &Router,
    tenant: &str,
    instances: &[&str],
    from: i64,
    to: i64,
    units: f64,
) -> String {
    let r = post_json(
        app,
        "/v1/workloads",
        Some(&token(tenant)),
        &serde_json::json!({
            "label": "test run",
            "instance_ids": instances,
            "from": from,
            "to": to,
            "functional_unit": "training run",
            "functional_units": units,
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Asserts two floats agree to a relative 1e-12.
pub fn assert_close(got: &Value, want: f64) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{got} is not a number"));
    assert!(
        (g - want).abs() <= 1e-12 * want.abs().max(1.0),
        "got {g}, want {want}"
    );
}

/// A real server on 127.0.0.1:0 over the harness's store.
pub struct Server {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(h: &Harness) -> Self {
        let store: Arc<dyn Store> = h.store.clone();
        Self::start_state(ApiState::new(
            store,
            auth(),
            catalog(),
            ApiLimits::default(),
        ))
        .await
    }

    /// A real server over `state` (e.g. one with intensity sources or a rate limiter).
    pub async fn start_state(state: ApiState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wattprint_query_api::serve(listener, state, async move {
            let _ = stop_rx.await;
        }));
        Self { addr, stop, task }
    }

    pub async fn client(
        &self,
    ) -> wattprint_proto::v1::tenant_query_client::TenantQueryClient<tonic::transport::Channel>
    {
        wattprint_proto::v1::tenant_query_client::TenantQueryClient::connect(format!(
            "http://{}",
            self.addr
        ))
        .await
        .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A file of the repository's `data/` folder.
pub fn data(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(path)
}

/// The H100 trace as consecutive phases: (duration ms, energy mJ from the counter).
pub fn trace_phases() -> Vec<(i64, u64)> {
    let text = std::fs::read_to_string(data("h100-trace/h100_power_trace_50ms.csv")).unwrap();
    let rows: Vec<(i64, String, u64)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let t = (f[0].parse::<f64>().unwrap() * 1000.0).round() as i64;
            (t, f[1].to_owned(), f[5].parse().unwrap())
        })
        .collect();
    let mut phases = Vec::new();
    let mut start = 0;
    for i in 1..rows.len() {
        if rows[i].1 != rows[start].1 || i == rows.len() - 1 {
            phases.push((rows[i].0 - rows[start].0, rows[i].2 - rows[start].2));
            start = i;
        }
    }
    assert!(phases.len() >= 3, "the trace has idle and load phases");
    phases
}

/// The trace's phases from the `skip`th on, looped from `from` as long as they end by `to`:
/// `(seq, start, end, mJ)`.
pub fn trace_spans(skip: usize, from: i64, to: i64) -> Vec<(u64, i64, i64, u64)> {
    let phases = trace_phases();
    let mut out = Vec::new();
    let mut t = from;
    for (seq, &(ms, mj)) in phases.iter().cycle().skip(skip).enumerate() {
        if t + ms > to {
            break;
        }
        out.push((seq as u64, t, t + ms, mj));
        t += ms;
    }
    out
}

/// What an evidence document's `content_sha256` covers, rebuilt from the served bytes the way
/// `docs/statements.md` tells a reader to: `generated_at`'s value blanked to `""` (its first
/// occurrence is the document's own member: it follows `evidence_version`) and the trailing
/// `content_sha256` member set to `null`.
pub fn evidence_hash_input(body: &str) -> String {
    let (head, rest) = body
        .split_once(r#","generated_at":""#)
        .unwrap_or_else(|| panic!("no generated_at in {body}"));
    let (stamp, tail) = rest.split_once('"').unwrap();
    assert!(
        !stamp.is_empty(),
        "generated_at is blank in the served document"
    );
    let unstamped = format!(r#"{head},"generated_at":""{tail}"#);
    let (content, hex) = unstamped
        .rsplit_once(r#","content_sha256":""#)
        .unwrap_or_else(|| panic!("no content_sha256 at the end of {body}"));
    assert_eq!(hex.len(), 64 + r#""}"#.len(), "{hex}");
    format!(r#"{content},"content_sha256":null}}"#)
}

/// SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ClickHouse server, or None (after saying so) when the test should not run.
pub fn clickhouse_url(test: &str) -> Option<String> {
    match std::env::var("WPTEST_CLICKHOUSE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none()
                    && std::env::var_os("WPTEST_REQUIRE_SERVERS").is_none(),
                "WPTEST_CLICKHOUSE_URL is not set, and CI/WPTEST_REQUIRE_SERVERS requires it"
            );
            eprintln!("{test} was NOT run: WPTEST_CLICKHOUSE_URL is not set");
            None
        }
    }
}
