//! The Electricity Maps client against a local server answering in Electricity Maps API v3's
//! documented formats, serving the real US-CAL-CISO June 2023 hours shipped in
//! `data/grid-average/`.

use crate::common::{self, em_time, utc, EmHour};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wattprint_core::intensity::{PointKind, Signal};
use wattprint_core::{RegionId, UnixMillis};
use wattprint_intensity::electricitymaps::{ElectricityMapsClient, ElectricityMapsConfig};
use wattprint_intensity::{FetchRequest, Provider, ProviderError};

const TOKEN: &str = "em-test-token";
const ZONE: &str = "US-CAL-CISO";
const HOUR_MS: i64 = 3_600_000;

type Edit = Arc<dyn Fn(&mut Value) + Send + Sync>;

fn edit(f: impl Fn(&mut Value) + Send + Sync + 'static) -> Option<Edit> {
    Some(Arc::new(f))
}

#[derive(Default)]
struct Knobs {
    fail_status: Option<u16>,
    throttle: usize,
    edit: Option<Edit>,
    missing: Vec<UnixMillis>,
}

struct ElectricityMaps {
    hours: Vec<EmHour>,
    /// Shift applied to the hours `history` serves, so they are the last 24 hours.
    history_shift_ms: i64,
    /// End of what `history` serves (the hour the server started in).
    history_end: UnixMillis,
    knobs: Mutex<Knobs>,
    log: Mutex<Vec<(String, HashMap<String, String>)>>,
}

type Shared = Arc<ElectricityMaps>;

impl ElectricityMaps {
    fn requests(&self, path: &str) -> Vec<HashMap<String, String>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, q)| q.clone())
            .collect()
    }

    fn gate(
        &self,
        path: &str,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Option<Response> {
        self.log.lock().unwrap().push((path.to_owned(), q.clone()));
        if headers.get("auth-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    r#"{"message":"Invalid authentication credentials"}"#,
                )
                    .into_response(),
            );
        }
        let knobs = &mut *self.knobs.lock().unwrap();
        if knobs.throttle > 0 {
            knobs.throttle -= 1;
            return Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "slow down",
                )
                    .into_response(),
            );
        }
        if let Some(s) = knobs.fail_status {
            return Some((StatusCode::from_u16(s).unwrap(), "upstream error").into_response());
        }
        if q.get("zone").map(String::as_str) != Some(ZONE) {
            return Some(
                (StatusCode::NOT_FOUND, r#"{"message":"zone not found"}"#).into_response(),
            );
        }
        None
    }

    fn respond(&self, mut body: Value) -> Response {
        if let Some(edit) = &self.knobs.lock().unwrap().edit {
            edit(&mut body);
        }
        axum::Json(body).into_response()
    }

    fn item(&self, h: &EmHour, at: UnixMillis) -> Option<Value> {
        if self.knobs.lock().unwrap().missing.contains(&at) {
            return None;
        }
        Some(json!({
            "zone": ZONE,
            "carbonIntensity": h.lifecycle,
            "datetime": em_time(at),
            "updatedAt": "2023-07-01T02:13:54.000Z",
            "createdAt": "2023-06-28T01:02:03.000Z",
            "emissionFactorType": "lifecycle",
            "isEstimated": h.estimated,
            "estimationMethod": if h.estimated { json!(h.method) } else { Value::Null },
        }))
    }
}

async fn past_range(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.gate("/v3/carbon-intensity/past-range", &headers, &q) {
        return r;
    }
    let (Some(start), Some(end)) = (
        q.get("start").and_then(|t| common::parse_query_time(t)),
        q.get("end").and_then(|t| common::parse_query_time(t)),
    ) else {
        return (StatusCode::BAD_REQUEST, "start and end required").into_response();
    };
    if end.0 - start.0 > 240 * HOUR_MS {
        return (
            StatusCode::BAD_REQUEST,
            "range limited to 10 days for hourly data",
        )
            .into_response();
    }
    // Inclusive of `end`, the stricter reading for the client.
    let data: Vec<Value> = s
        .hours
        .iter()
        .filter(|h| h.at >= start && h.at <= end)
        .filter_map(|h| s.item(h, h.at))
        .collect();
    s.respond(json!({"zone": ZONE, "data": data}))
}

async fn history(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.gate("/v3/carbon-intensity/history", &headers, &q) {
        return r;
    }
    let last_day = &s.hours[s.hours.len() - 24..];
    let items: Vec<Value> = last_day
        .iter()
        .filter_map(|h| s.item(h, UnixMillis(h.at.0 + s.history_shift_ms)))
        .collect();
    s.respond(json!({"zone": ZONE, "history": items}))
}

/// The forecast emulation serves the real hours of June 15 as a forecast issued on June 14 at
/// 23:30: the format is the API's, the numbers are real intensities (not a real forecast).
async fn forecast(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = s.gate("/v3/carbon-intensity/forecast", &headers, &q) {
        return r;
    }
    let day: Vec<Value> = s
        .hours
        .iter()
        .filter(|h| h.at >= utc(2023, 6, 15, 0, 0) && h.at < utc(2023, 6, 16, 0, 0))
        .map(|h| json!({"carbonIntensity": h.lifecycle, "datetime": em_time(h.at)}))
        .collect();
    s.respond(json!({"zone": ZONE, "forecast": day, "updatedAt": "2023-06-14T23:30:00.000Z"}))
}

fn floor_hour(t: UnixMillis) -> UnixMillis {
    UnixMillis(t.0.div_euclid(HOUR_MS) * HOUR_MS)
}

fn now() -> UnixMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    UnixMillis(i64::try_from(ms).unwrap())
}

async fn start() -> (String, Shared) {
    let hours = common::us_cal_ciso_june();
    // History: June 30's hours served as the 24 hours before the current hour.
    let history_end = floor_hour(now());
    let shift = history_end.0 - 24 * HOUR_MS - hours[hours.len() - 24].at.0;
    let state = Arc::new(ElectricityMaps {
        hours,
        history_shift_ms: shift,
        history_end,
        knobs: Mutex::new(Knobs::default()),
        log: Mutex::new(Vec::new()),
    });
    let router = Router::new()
        .route("/v3/carbon-intensity/past-range", get(past_range))
        .route("/v3/carbon-intensity/history", get(history))
        .route("/v3/carbon-intensity/forecast", get(forecast))
        .with_state(state.clone());
    (common::serve(router).await, state)
}

fn client(url: &str, token: &str) -> ElectricityMapsClient {
    let mut cfg = ElectricityMapsConfig::new(token);
    cfg.base_url = url.to_owned();
    cfg.timeout = Duration::from_secs(10);
    ElectricityMapsClient::new(cfg).unwrap()
}

fn request(kind: PointKind, from: UnixMillis, to: UnixMillis) -> FetchRequest {
    FetchRequest {
        region: RegionId::from("us-cal-ciso"),
        provider_region: ZONE.to_owned(),
        signal: Signal::Average,
        kind,
        from,
        to,
    }
}

#[tokio::test]
async fn a_month_of_history_comes_in_ten_day_pieces_exactly() {
    let (url, server) = start().await;
    let hours = common::us_cal_ciso_june();
    let (from, to) = (utc(2023, 6, 1, 0, 0), utc(2023, 7, 1, 0, 0));
    let got = client(&url, TOKEN)
        .fetch(&request(PointKind::Actual, from, to))
        .await
        .unwrap();
    assert_eq!(server.requests("/v3/carbon-intensity/past-range").len(), 3);
    assert!(got.rejected.is_empty(), "{:?}", got.rejected);
    assert!(got.gaps.is_empty(), "{:?}", got.gaps);
    assert_eq!(got.points.len(), 720);
    for (p, h) in got.points.iter().zip(&hours) {
        assert_eq!(p.at, h.at);
        assert_eq!(
            p.value.0.to_bits(),
            h.lifecycle.to_bits(),
            "g/kWh as published"
        );
        assert_eq!(p.duration_ms, HOUR_MS);
        assert_eq!(p.signal, Signal::Average);
        assert_eq!(p.kind, PointKind::Actual);
        assert_eq!(p.issued_at, None);
        assert_eq!(p.provider, "electricitymaps:US-CAL-CISO");
        assert_eq!(p.model_version.as_deref(), Some("lifecycle"));
    }
}

#[tokio::test]
async fn the_last_day_comes_from_history() {
    let (url, server) = start().await;
    let to = server.history_end;
    let from = UnixMillis(to.0 - 6 * HOUR_MS);
    let got = client(&url, TOKEN)
        .fetch(&request(PointKind::Actual, from, to))
        .await
        .unwrap();
    assert_eq!(server.requests("/v3/carbon-intensity/history").len(), 1);
    assert!(server
        .requests("/v3/carbon-intensity/past-range")
        .is_empty());
    assert_eq!(got.points.len(), 6);
    assert!(got.gaps.is_empty(), "{:?}", got.gaps);
    let hours = common::us_cal_ciso_june();
    for (p, h) in got.points.iter().zip(&hours[hours.len() - 6..]) {
        assert_eq!(p.value.0, h.lifecycle);
    }
}

#[tokio::test]
async fn the_forecast_is_issued_at_updated_at() {
    let (url, _server) = start().await;
    let got = client(&url, TOKEN)
        .fetch(&request(
            PointKind::Forecast,
            utc(2023, 6, 14, 0, 0),
            utc(2023, 6, 15, 0, 0),
        ))
        .await
        .unwrap();
    assert_eq!(got.points.len(), 24);
    assert!(got.rejected.is_empty() && got.gaps.is_empty());
    for p in &got.points {
        assert_eq!(p.kind, PointKind::Forecast);
        assert_eq!(p.issued_at, Some(utc(2023, 6, 14, 23, 30)));
        assert_eq!(p.duration_ms, HOUR_MS);
    }
    assert_eq!(got.points[0].at, utc(2023, 6, 15, 0, 0));
}

#[tokio::test]
async fn marginal_is_unsupported_and_nothing_is_sent() {
    let (url, server) = start().await;
    let mut req = request(
        PointKind::Actual,
        utc(2023, 6, 1, 0, 0),
        utc(2023, 6, 2, 0, 0),
    );
    req.signal = Signal::Marginal;
    let err = client(&url, TOKEN).fetch(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    assert!(server.log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_token_is_an_auth_error() {
    let (url, _server) = start().await;
    let err = client(&url, "expired")
        .fetch(&request(
            PointKind::Actual,
            utc(2023, 6, 1, 0, 0),
            utc(2023, 6, 2, 0, 0),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err}");
    assert_eq!(err.provider(), "electricitymaps");
}

#[tokio::test]
async fn throttling_outages_and_bad_answers() {
    let (url, server) = start().await;
    let client = client(&url, TOKEN);
    let day = request(
        PointKind::Actual,
        utc(2023, 6, 1, 0, 0),
        utc(2023, 6, 2, 0, 0),
    );

    server.knobs.lock().unwrap().throttle = 1;
    assert_eq!(client.fetch(&day).await.unwrap().points.len(), 24);

    server.knobs.lock().unwrap().fail_status = Some(503);
    let err = client.fetch(&day).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");
    server.knobs.lock().unwrap().fail_status = None;

    server.knobs.lock().unwrap().edit = edit(|v: &mut Value| {
        v.as_object_mut().unwrap().remove("data");
    });
    let err = client.fetch(&day).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("`data`"), "{err}");

    server.knobs.lock().unwrap().edit = edit(|v: &mut Value| {
        let data = v["data"].as_array_mut().unwrap();
        data[0]["carbonIntensity"] = Value::Null;
        data[1]["carbonIntensity"] = json!(-3);
        data[2]["carbonIntensity"] = json!(12_000);
        data[3]["datetime"] = json!("yesterday");
    });
    let got = client.fetch(&day).await.unwrap();
    assert_eq!(got.points.len(), 20);
    assert_eq!(got.rejected.len(), 4, "{:#?}", got.rejected);
    let said = got.rejected.join("\n");
    for needle in ["carbonIntensity missing", "-3", "12000", "\"yesterday\""] {
        assert!(said.contains(needle), "{needle:?} not in {said}");
    }
    assert_eq!(
        got.gaps,
        vec![(utc(2023, 6, 1, 0, 0), utc(2023, 6, 1, 4, 0))]
    );
}

#[tokio::test]
async fn missing_hours_are_gaps() {
    let (url, server) = start().await;
    server.knobs.lock().unwrap().missing = vec![utc(2023, 6, 3, 5, 0), utc(2023, 6, 3, 6, 0)];
    let got = client(&url, TOKEN)
        .fetch(&request(
            PointKind::Actual,
            utc(2023, 6, 3, 0, 0),
            utc(2023, 6, 4, 0, 0),
        ))
        .await
        .unwrap();
    assert_eq!(got.points.len(), 22);
    assert_eq!(
        got.gaps,
        vec![(utc(2023, 6, 3, 5, 0), utc(2023, 6, 3, 7, 0))]
    );
}
