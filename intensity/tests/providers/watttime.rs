//! The WattTime client against a local server answering in WattTime API v3's documented formats
//! (https://docs.watttime.org), serving the real CAISO_NORTH MOER shipped in `data/moer/`
//! converted back to the API's lbs/MWh.

use crate::common::{self, utc, wt_time};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wattprint_core::intensity::{PointKind, Signal};
use wattprint_core::{GramsPerKwh, RegionId, UnixMillis};
use wattprint_intensity::files::FileProvider;
use wattprint_intensity::watttime::{WattTimeClient, WattTimeConfig};
use wattprint_intensity::{FetchRequest, Provider, ProviderError, RateLimit, RetryPolicy};

const USER: &str = "wattprint";
const PASSWORD: &str = "correct horse";
const REGION: &str = "CAISO_NORTH";
const MODEL: &str = "2023-03-01";
const PERIOD_S: i64 = 300;
const G_PER_LB_MWH: f64 = 0.453_592_37;

type Mangle = Arc<dyn Fn(&mut Value) + Send + Sync>;

fn mangle(f: impl Fn(&mut Value) + Send + Sync + 'static) -> Option<Mangle> {
    Some(Arc::new(f))
}

/// How the server misbehaves; tests set it between calls.
#[derive(Default)]
struct Knobs {
    /// The next N data requests answer 429.
    throttle: usize,
    /// `Retry-After` of those 429s.
    retry_after: Option<String>,
    /// Data requests answer this status.
    fail_status: Option<u16>,
    /// No token is accepted (not even new ones).
    refuse_all_tokens: bool,
    /// Edits every data answer before it is sent (`"__NaN__"` strings become bare NaN).
    mangle: Option<Mangle>,
    /// Sent instead of every data answer.
    raw_body: Option<String>,
    /// Point times not served.
    missing: Vec<UnixMillis>,
}

struct WattTime {
    /// (time, lbs/MWh) converted from the shipped g/kWh.
    actuals: Vec<(UnixMillis, f64)>,
    /// (generated at, [(time, lbs/MWh)]).
    forecasts: Vec<(UnixMillis, Vec<(UnixMillis, f64)>)>,
    knobs: Mutex<Knobs>,
    token: Mutex<Option<String>>,
    logins: AtomicUsize,
    /// (path, query, arrival) of every request but logins.
    log: Mutex<Vec<Logged>>,
}

type Shared = Arc<WattTime>;

/// A request as the server saw it: path, query, arrival.
type Logged = (String, HashMap<String, String>, Instant);

impl WattTime {
    fn requests(&self, path: &str) -> Vec<HashMap<String, String>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, q, _)| q.clone())
            .collect()
    }

    fn expire_token(&self) {
        *self.token.lock().unwrap() = None;
    }

    /// Logs the request and answers it here if auth or a knob says so.
    fn gate(
        &self,
        path: &str,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Option<Response> {
        self.log
            .lock()
            .unwrap()
            .push((path.to_owned(), q.clone(), Instant::now()));
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = self.token.lock().unwrap().clone();
        let knobs = &mut *self.knobs.lock().unwrap();
        if knobs.refuse_all_tokens || bearer.is_none() || bearer != valid.as_deref() {
            return Some((StatusCode::UNAUTHORIZED, "Unauthorized").into_response());
        }
        if knobs.throttle > 0 {
            knobs.throttle -= 1;
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            if let Some(s) = &knobs.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, s.parse().unwrap());
            }
            return Some(resp);
        }
        if let Some(status) = knobs.fail_status {
            return Some((StatusCode::from_u16(status).unwrap(), "server error").into_response());
        }
        if q.get("signal_type").map(String::as_str) != Some("co2_moer") {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    "your plan has no access to this signal",
                )
                    .into_response(),
            );
        }
        if q.get("region").map(String::as_str) != Some(REGION) {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    "your plan has no access to this region",
                )
                    .into_response(),
            );
        }
        None
    }

    fn respond(&self, mut body: Value) -> Response {
        let knobs = self.knobs.lock().unwrap();
        if let Some(raw) = &knobs.raw_body {
            return ([(header::CONTENT_TYPE, "application/json")], raw.clone()).into_response();
        }
        if let Some(m) = &knobs.mangle {
            m(&mut body);
        }
        let text = body.to_string().replace("\"__NaN__\"", "NaN");
        ([(header::CONTENT_TYPE, "application/json")], text).into_response()
    }

    fn served(&self, t: UnixMillis) -> bool {
        !self.knobs.lock().unwrap().missing.contains(&t)
    }
}

fn meta(extra: Value) -> Value {
    let mut m = json!({
        "region": REGION,
        "signal_type": "co2_moer",
        "units": "lbs_co2_per_mwh",
        "data_point_period_seconds": PERIOD_S,
        "model": {"date": MODEL, "type": "binned_regression"},
        "warnings": [],
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

fn points(items: &[(UnixMillis, f64)]) -> Vec<Value> {
    items
        .iter()
        .map(|(t, v)| json!({"point_time": wt_time(*t), "value": v}))
        .collect()
}

fn range(q: &HashMap<String, String>) -> Option<(UnixMillis, UnixMillis)> {
    Some((
        common::parse_query_time(q.get("start")?)?,
        common::parse_query_time(q.get("end")?)?,
    ))
}

async fn login(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let expected = format!(
        "Basic {}",
        common::base64(format!("{USER}:{PASSWORD}").as_bytes())
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let n = s.logins.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("token-{n}");
    *s.token.lock().unwrap() = Some(token.clone());
    axum::Json(json!({ "token": token })).into_response()
}

async fn historical(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.gate("/v3/historical", &headers, &q) {
        return r;
    }
    let Some((start, end)) = range(&q) else {
        return (StatusCode::BAD_REQUEST, "start and end required").into_response();
    };
    if end.0 - start.0 > 32 * 86_400_000 {
        return (StatusCode::BAD_REQUEST, "requests are limited to 32 days").into_response();
    }
    // Like the real API, `end` is inclusive.
    let served: Vec<(UnixMillis, f64)> = s
        .actuals
        .iter()
        .filter(|(t, _)| *t >= start && *t <= end && s.served(*t))
        .copied()
        .collect();
    s.respond(json!({"data": points(&served), "meta": meta(json!({}))}))
}

async fn forecast_historical(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.gate("/v3/forecast/historical", &headers, &q) {
        return r;
    }
    let Some((start, end)) = range(&q) else {
        return (StatusCode::BAD_REQUEST, "start and end required").into_response();
    };
    let runs: Vec<Value> = s
        .forecasts
        .iter()
        .filter(|(g, _)| *g >= start && *g <= end)
        .map(|(g, pts)| json!({"generated_at": wt_time(*g), "forecast": points(pts)}))
        .collect();
    s.respond(json!({"data": runs, "meta": meta(json!({"generated_at_period_seconds": 300}))}))
}

async fn forecast(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.gate("/v3/forecast", &headers, &q) {
        return r;
    }
    let Some((generated_at, pts)) = s.forecasts.last() else {
        return (StatusCode::NOT_FOUND, "no forecast").into_response();
    };
    s.respond(json!({
        "data": points(pts),
        "meta": meta(json!({"generated_at": wt_time(*generated_at), "generated_at_period_seconds": 300})),
    }))
}

async fn region_from_loc(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(mut q): Query<HashMap<String, String>>,
) -> Response {
    let lat: f64 = q
        .get("latitude")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let lon: f64 = q
        .get("longitude")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    // The gate checks the region of data requests; this one names none.
    q.insert("region".to_owned(), REGION.to_owned());
    if let Some(r) = s.gate("/v3/region-from-loc", &headers, &q) {
        return r;
    }
    // Northern California, roughly: enough to tell Sacramento from New York.
    if (36.5..=42.0).contains(&lat) && (-124.5..=-119.0).contains(&lon) {
        axum::Json(json!({
            "region": REGION,
            "region_full_name": "California ISO Northern",
            "signal_type": "co2_moer",
        }))
        .into_response()
    } else {
        (StatusCode::NOT_FOUND, "no region covers this location").into_response()
    }
}

/// Starts the emulated API on the real data.
async fn start() -> (String, Shared) {
    let actuals = common::caiso_north_actuals()
        .into_iter()
        .map(|(t, g)| (t, g / G_PER_LB_MWH))
        .collect();
    let forecasts = common::caiso_north_forecasts()
        .into_iter()
        .map(|(g, pts)| {
            (
                g,
                pts.into_iter()
                    .map(|(t, v)| (t, v / G_PER_LB_MWH))
                    .collect(),
            )
        })
        .collect();
    let state = Arc::new(WattTime {
        actuals,
        forecasts,
        knobs: Mutex::new(Knobs::default()),
        token: Mutex::new(None),
        logins: AtomicUsize::new(0),
        log: Mutex::new(Vec::new()),
    });
    let router = Router::new()
        .route("/login", get(login))
        .route("/v3/historical", get(historical))
        .route("/v3/forecast", get(forecast))
        .route("/v3/forecast/historical", get(forecast_historical))
        .route("/v3/region-from-loc", get(region_from_loc))
        .with_state(state.clone());
    (common::serve(router).await, state)
}

fn config(base_url: &str) -> WattTimeConfig {
    let mut c = WattTimeConfig::new(USER, PASSWORD);
    c.base_url = base_url.to_owned();
    c.timeout = Duration::from_secs(10);
    c
}

fn client(base_url: &str) -> WattTimeClient {
    WattTimeClient::new(config(base_url)).unwrap()
}

fn request(kind: PointKind, from: UnixMillis, to: UnixMillis) -> FetchRequest {
    FetchRequest {
        region: RegionId::from("caiso-north"),
        provider_region: REGION.to_owned(),
        signal: Signal::Marginal,
        kind,
        from,
        to,
    }
}

fn actuals(from: UnixMillis, to: UnixMillis) -> FetchRequest {
    request(PointKind::Actual, from, to)
}

#[tokio::test]
async fn history_is_the_shipped_series_converted_exactly() {
    let (url, server) = start().await;
    let shipped = common::caiso_north_actuals();
    let (from, to) = (utc(2023, 6, 8, 0, 0), utc(2023, 7, 9, 0, 0));
    let got = client(&url).fetch(&actuals(from, to)).await.unwrap();

    assert!(got.rejected.is_empty(), "{:?}", got.rejected);
    assert!(got.gaps.is_empty(), "{:?}", got.gaps);
    assert_eq!(got.points.len(), shipped.len());
    for (p, ((t, g), (_, lb))) in got.points.iter().zip(shipped.iter().zip(&server.actuals)) {
        assert_eq!(p.at, *t);
        // Exactly the documented conversion of what the API sent …
        assert_eq!(
            p.value.0.to_bits(),
            GramsPerKwh::from_lb_per_mwh(*lb).0.to_bits()
        );
        // … which is the shipped g/kWh back within 1e-9 relative.
        assert!(
            (p.value.0 - g).abs() <= 1e-9 * g.abs(),
            "{} vs {g}",
            p.value.0
        );
        assert_eq!(p.duration_ms, PERIOD_S * 1000);
        assert_eq!(p.signal, Signal::Marginal);
        assert_eq!(p.kind, PointKind::Actual);
        assert_eq!(p.issued_at, None);
        assert_eq!(p.provider, "watttime:CAISO_NORTH");
        assert_eq!(p.model_version.as_deref(), Some(MODEL));
        assert_eq!(p.region, RegionId::from("caiso-north"));
        assert!(p.validate().is_ok());
    }
    let reqs = server.requests("/v3/historical");
    assert_eq!(reqs.len(), 1, "31 days fit one request");
    assert_eq!(reqs[0]["signal_type"], "co2_moer");
    assert_eq!(reqs[0]["region"], REGION);
    assert_eq!(reqs[0]["start"], "2023-06-08T00:00:00.000Z");
    assert_eq!(server.logins.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn long_ranges_are_split_and_the_missing_start_is_a_gap() {
    let (url, server) = start().await;
    let shipped = common::caiso_north_actuals();
    // 50 days: two requests of at most 32 days; the API has nothing before June 8.
    let (from, to) = (utc(2023, 5, 20, 0, 0), utc(2023, 7, 9, 0, 0));
    let got = client(&url).fetch(&actuals(from, to)).await.unwrap();
    let reqs = server.requests("/v3/historical");
    assert_eq!(reqs.len(), 2);
    assert_eq!(got.points.len(), shipped.len());
    assert_eq!(got.gaps, vec![(from, utc(2023, 6, 8, 0, 0))]);

    // Weekly pieces: the API's inclusive end repeats each edge point, which is kept once.
    let mut cfg = config(&url);
    cfg.historical_span = Duration::from_secs(7 * 86_400);
    let weekly = WattTimeClient::new(cfg).unwrap();
    let before = server.requests("/v3/historical").len();
    let got = weekly
        .fetch(&actuals(utc(2023, 6, 8, 0, 0), to))
        .await
        .unwrap();
    assert_eq!(server.requests("/v3/historical").len() - before, 5);
    assert_eq!(got.points.len(), shipped.len());
    assert!(got.rejected.is_empty() && got.gaps.is_empty());
    assert!(got.points.windows(2).all(|w| w[0].at < w[1].at));
}

#[tokio::test]
async fn missing_points_are_reported_as_gaps_not_filled() {
    let (url, server) = start().await;
    let missing: Vec<UnixMillis> = (0..6)
        .map(|i| UnixMillis(utc(2023, 6, 10, 10, 0).0 + i * 300_000))
        .chain([utc(2023, 6, 11, 0, 0)])
        .collect();
    server.knobs.lock().unwrap().missing = missing;
    let (from, to) = (utc(2023, 6, 10, 0, 0), utc(2023, 6, 12, 0, 0));
    let got = client(&url).fetch(&actuals(from, to)).await.unwrap();
    assert_eq!(
        got.gaps,
        vec![
            (utc(2023, 6, 10, 10, 0), utc(2023, 6, 10, 10, 30)),
            (utc(2023, 6, 11, 0, 0), utc(2023, 6, 11, 0, 5)),
        ]
    );
    assert_eq!(got.points.len(), 2 * 288 - 7);
    assert!(got.rejected.is_empty());
}

#[tokio::test]
async fn historical_forecasts_keep_each_run_with_its_issue_time() {
    let (url, server) = start().await;
    let runs = common::caiso_north_forecasts();
    let (from, to) = (utc(2023, 6, 8, 0, 0), utc(2023, 6, 10, 0, 0));
    let got = client(&url)
        .fetch(&request(PointKind::Forecast, from, to))
        .await
        .unwrap();
    // One request per day of issue times.
    assert_eq!(server.requests("/v3/forecast/historical").len(), 2);
    assert!(got.rejected.is_empty(), "{:?}", got.rejected);
    assert!(got.gaps.is_empty(), "{:?}", got.gaps);
    let expected: Vec<(UnixMillis, UnixMillis, f64)> = runs
        .iter()
        .flat_map(|(g, pts)| pts.iter().map(move |(t, v)| (*g, *t, *v)))
        .collect();
    assert_eq!(got.points.len(), expected.len());
    assert_eq!(got.points.len(), 576 * 13);
    for (p, (issued, at, g)) in got.points.iter().zip(&expected) {
        assert_eq!(p.kind, PointKind::Forecast);
        assert_eq!(p.issued_at, Some(*issued));
        assert_eq!(p.at, *at);
        assert!((p.value.0 - g).abs() <= 1e-9 * g.abs());
        assert_eq!(p.model_version.as_deref(), Some(MODEL));
        assert_eq!(p.duration_ms, 300_000);
    }

    // An hour of issue times: twelve runs.
    let got = client(&url)
        .fetch(&request(
            PointKind::Forecast,
            utc(2023, 6, 8, 12, 0),
            utc(2023, 6, 8, 13, 0),
        ))
        .await
        .unwrap();
    let issued: std::collections::BTreeSet<_> = got.points.iter().map(|p| p.issued_at).collect();
    assert_eq!(issued.len(), 12);
    assert_eq!(issued.first(), Some(&Some(utc(2023, 6, 8, 12, 0))));
}

#[tokio::test]
async fn the_current_forecast_carries_generated_at() {
    let (url, _server) = start().await;
    let (generated_at, pts) = common::caiso_north_forecasts().pop().unwrap();
    let got = client(&url)
        .current_forecast(&request(PointKind::Forecast, generated_at, generated_at))
        .await
        .unwrap();
    assert_eq!(generated_at, utc(2023, 6, 9, 23, 55));
    assert_eq!(got.points.len(), pts.len());
    for (p, (t, g)) in got.points.iter().zip(&pts) {
        assert_eq!(p.issued_at, Some(generated_at));
        assert_eq!(p.at, *t);
        assert!((p.value.0 - g).abs() <= 1e-9 * g.abs());
    }
    assert!(got.gaps.is_empty());
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error() {
    let (url, server) = start().await;
    let mut cfg = config(&url);
    cfg.password = "wrong".to_owned();
    let err = WattTimeClient::new(cfg)
        .unwrap()
        .fetch(&actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0)))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("login"), "{err}");
    assert_eq!(err.provider(), "watttime");
    assert!(server.requests("/v3/historical").is_empty());
}

#[tokio::test]
async fn an_expired_token_logs_in_once_more() {
    let (url, server) = start().await;
    let client = client(&url);
    let day = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    client.fetch(&day).await.unwrap();
    client.fetch(&day).await.unwrap();
    assert_eq!(
        server.logins.load(Ordering::SeqCst),
        1,
        "the token is cached"
    );

    server.expire_token();
    let got = client.fetch(&day).await.unwrap();
    assert_eq!(got.points.len(), 288);
    assert_eq!(server.logins.load(Ordering::SeqCst), 2);

    // A token refused right after login: one more login, then Auth (no loop).
    server.knobs.lock().unwrap().refuse_all_tokens = true;
    server.expire_token();
    let err = client.fetch(&day).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err}");
    assert_eq!(server.logins.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_signal_outside_the_plan_is_refused_as_auth() {
    let (url, server) = start().await;
    let mut req = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    req.signal = Signal::Average;
    let err = client(&url).fetch(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err}");
    assert_eq!(
        server.requests("/v3/historical")[0]["signal_type"],
        "co2_aoer"
    );
}

#[tokio::test]
async fn rate_limited_requests_are_retried_after_retry_after() {
    let (url, server) = start().await;
    let day = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    {
        let mut k = server.knobs.lock().unwrap();
        k.throttle = 2;
        k.retry_after = Some("1".to_owned());
    }
    let t0 = Instant::now();
    let got = client(&url).fetch(&day).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(got.points.len(), 288);
    assert_eq!(server.requests("/v3/historical").len(), 3);
}

#[tokio::test]
async fn persistent_429_is_rate_limited_with_the_providers_wait() {
    let (url, server) = start().await;
    let day = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    {
        let mut k = server.knobs.lock().unwrap();
        k.throttle = usize::MAX;
        k.retry_after = Some("1".to_owned());
    }
    let mut cfg = config(&url);
    cfg.retry = RetryPolicy {
        max_retries: 2,
        ..RetryPolicy::default()
    };
    let err = WattTimeClient::new(cfg)
        .unwrap()
        .fetch(&day)
        .await
        .unwrap_err();
    match err {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(1))
        }
        other => panic!("expected RateLimited, got {other}"),
    }
    assert_eq!(
        server.requests("/v3/historical").len(),
        3,
        "one try and two retries"
    );

    // A wait longer than the client sleeps through is handed to the caller at once.
    server.knobs.lock().unwrap().retry_after = Some("600".to_owned());
    let t0 = Instant::now();
    let err = client(&url).fetch(&day).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, ProviderError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(600)),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_answers_are_errors_that_say_what() {
    let (url, server) = start().await;
    let day = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    let cases: Vec<(Option<&str>, Option<Mangle>, &str)> = vec![
        (Some("<html>maintenance</html>"), None, "not JSON"),
        (Some(r#"{"data": [], "meta": "#), None, "not JSON"),
        (
            None,
            mangle(|v: &mut Value| {
                v["meta"].as_object_mut().unwrap().remove("units");
            }),
            "meta.units",
        ),
        (
            None,
            mangle(|v: &mut Value| v["meta"]["units"] = json!("kg_co2_per_mwh")),
            "unknown units \"kg_co2_per_mwh\"",
        ),
        (
            None,
            mangle(|v: &mut Value| {
                v["meta"]
                    .as_object_mut()
                    .unwrap()
                    .remove("data_point_period_seconds");
            }),
            "data_point_period_seconds",
        ),
        (
            None,
            mangle(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("data");
            }),
            "`data`",
        ),
        (
            None,
            mangle(|v: &mut Value| v["meta"]["region"] = json!("PJM_DC")),
            "PJM_DC",
        ),
    ];
    let client = client(&url);
    for (raw, edit, says) in cases {
        {
            let mut k = server.knobs.lock().unwrap();
            k.raw_body = raw.map(str::to_owned);
            k.mangle = edit;
        }
        let err = client.fetch(&day).await.unwrap_err();
        assert!(matches!(err, ProviderError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}

#[tokio::test]
async fn bad_points_are_refused_with_reasons_and_good_ones_kept() {
    let (url, server) = start().await;
    let day = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    server.knobs.lock().unwrap().mangle = mangle(|v: &mut Value| {
        let data = v["data"].as_array_mut().unwrap();
        data[0]["value"] = json!("__NaN__"); // 00:00, sent as a bare NaN
        data[1]["value"] = json!(-12.5); // 00:05
        data[2]["value"] = json!(99_999.0); // 00:10, 45,000 g/kWh
        data[3]["value"] = Value::Null; // 00:15
        data[4].as_object_mut().unwrap().remove("point_time");
        data[5]["point_time"] = json!("2023-06-08T00:27:00+00:00"); // not on the 5-minute grid
    });
    let got = client(&url).fetch(&day).await.unwrap();
    assert_eq!(got.points.len(), 288 - 6);
    assert_eq!(got.rejected.len(), 6, "{:#?}", got.rejected);
    let said = got.rejected.join("\n");
    for needle in [
        "NaN",
        "-5.6",  // −12.5 lb/MWh in g/kWh
        "45358", // 99,999 lb/MWh in g/kWh
        "value missing",
        "point_time missing",
        "5-minute",
    ] {
        assert!(said.contains(needle), "{needle:?} not in {said}");
    }
    // What was refused or could not be placed is not covered: a gap, never filled in.
    assert_eq!(
        got.gaps,
        vec![(utc(2023, 6, 8, 0, 0), utc(2023, 6, 8, 0, 30))]
    );
}

#[tokio::test]
async fn an_unreachable_or_failing_provider_is_unavailable() {
    let day = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    let err = client(&common::closed_port().await)
        .fetch(&day)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");

    let (url, server) = start().await;
    let client = client(&url);
    for status in [500, 503] {
        server.knobs.lock().unwrap().fail_status = Some(status);
        let err = client.fetch(&day).await.unwrap_err();
        assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
    }
}

#[tokio::test]
async fn region_from_location() {
    let (url, server) = start().await;
    let client = client(&url);
    // Sacramento.
    let loc = client
        .region_from_loc(38.5816, -121.4944, Signal::Marginal)
        .await
        .unwrap();
    assert_eq!(loc.region, "CAISO_NORTH");
    assert_eq!(
        loc.region_full_name.as_deref(),
        Some("California ISO Northern")
    );
    assert_eq!(loc.signal_type, "co2_moer");
    let q = &server.requests("/v3/region-from-loc")[0];
    assert_eq!(q["latitude"], "38.5816");
    assert_eq!(q["longitude"], "-121.4944");
    // New York is not covered by this server: the provider refuses the request.
    let err = client
        .region_from_loc(40.7128, -74.006, Signal::Marginal)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn requests_beyond_the_client_limit_wait_and_clones_share_it() {
    let (url, server) = start().await;
    let window = Duration::from_millis(1500);
    let mut cfg = config(&url);
    cfg.rate_limit = RateLimit {
        max_requests: 3,
        window,
    };
    let a = WattTimeClient::new(cfg).unwrap();
    let b = a.clone();
    let hour = actuals(utc(2023, 6, 8, 0, 0), utc(2023, 6, 8, 1, 0));
    let t0 = Instant::now();
    a.fetch(&hour).await.unwrap(); // login + 1
    b.fetch(&hour).await.unwrap(); // 3: the limit
    assert!(t0.elapsed() < window, "within the limit nothing waits");
    b.fetch(&hour).await.unwrap(); // 4th request in the window: waits
    assert!(t0.elapsed() >= window, "{:?}", t0.elapsed());
    let log = server.log.lock().unwrap();
    let arrivals: Vec<Instant> = log.iter().map(|(_, _, t)| *t).collect();
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals[2] - arrivals[0] >= window - Duration::from_millis(100));
}

#[tokio::test]
async fn the_api_and_the_shipped_export_give_the_same_series() {
    let (url, _server) = start().await;
    let week = actuals(utc(2023, 6, 20, 0, 0), utc(2023, 6, 27, 0, 0));
    let api = client(&url).fetch(&week).await.unwrap();
    let mut files = FileProvider::new("files");
    files
        .import_watttime_actual_csv(
            &common::data("moer/watttime2023_caiso-north_actual.csv"),
            &week.region,
        )
        .unwrap();
    let file = files.fetch(&week).await.unwrap();
    assert_eq!(api.points.len(), 7 * 288);
    assert_eq!(api.points.len(), file.points.len());
    for (a, f) in api.points.iter().zip(&file.points) {
        assert_eq!(
            (
                a.at,
                a.duration_ms,
                a.signal,
                a.kind,
                &a.provider,
                &a.region
            ),
            (
                f.at,
                f.duration_ms,
                f.signal,
                f.kind,
                &f.provider,
                &f.region
            )
        );
        assert!((a.value.0 - f.value.0).abs() <= 1e-9 * f.value.0.abs());
    }
    assert_eq!(api.gaps, file.gaps);
}
