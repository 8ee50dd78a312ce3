//! The real shipped data, and a local HTTP server helper.

use chrono::{DateTime, NaiveDateTime};
use std::net::SocketAddr;
use std::path::PathBuf;
use wattprint_core::UnixMillis;

/// A file under the repository's `data/`.
pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join(rel)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) as the exports write it.
pub fn naive(s: &str) -> UnixMillis {
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    UnixMillis(t.and_utc().timestamp_millis())
}

/// A UTC time.
pub fn utc(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> UnixMillis {
    UnixMillis::from_utc(y, mo, d, h, mi, 0).unwrap()
}

/// WattTime's time format (`2023-06-08T00:00:00+00:00`).
pub fn wt_time(t: UnixMillis) -> String {
    DateTime::from_timestamp_millis(t.0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// Electricity Maps' time format (`2019-05-21T00:00:00.000Z`).
pub fn em_time(t: UnixMillis) -> String {
    DateTime::from_timestamp_millis(t.0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A query time as the clients send it.
pub fn parse_query_time(s: &str) -> Option<UnixMillis> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| UnixMillis(t.timestamp_millis()))
}

/// `data/moer/watttime2023_caiso-north_actual.csv`: (time, MOER g/kWh).
pub fn caiso_north_actuals() -> Vec<(UnixMillis, f64)> {
    let mut r = csv::Reader::from_path(data("moer/watttime2023_caiso-north_actual.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (naive(&rec[0]), rec[1].parse().unwrap())
        })
        .collect()
}

/// The forecast slice: runs (request time, [(forecast time, MOER g/kWh)]) in file order.
pub fn caiso_north_forecasts() -> Vec<(UnixMillis, Vec<(UnixMillis, f64)>)> {
    let mut r = csv::Reader::from_path(data(
        "moer/watttime2023_caiso-north_forecast_2023-06-08_09.csv",
    ))
    .unwrap();
    let mut runs: Vec<(UnixMillis, Vec<(UnixMillis, f64)>)> = Vec::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let issued = naive(&rec[0]);
        let point = (naive(&rec[1]), rec[2].parse().unwrap());
        match runs.last_mut() {
            Some((t, pts)) if *t == issued => pts.push(point),
            _ => runs.push((issued, vec![point])),
        }
    }
    runs
}

/// One hour of the Electricity Maps export.
#[derive(Debug, Clone)]
pub struct EmHour {
    pub at: UnixMillis,
    pub direct: f64,
    pub lifecycle: f64,
    pub estimated: bool,
    pub method: String,
}

/// `data/grid-average/electricitymaps_US-CAL-CISO_2023-06_hourly.csv`.
pub fn us_cal_ciso_june() -> Vec<EmHour> {
    let mut r = csv::Reader::from_path(data(
        "grid-average/electricitymaps_US-CAL-CISO_2023-06_hourly.csv",
    ))
    .unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            EmHour {
                at: naive(&rec[0]),
                direct: rec[4].parse().unwrap(),
                lifecycle: rec[5].parse().unwrap(),
                estimated: &rec[9] == "true",
                method: rec[10].to_owned(),
            }
        })
        .collect()
}

/// Serves `router` on 127.0.0.1 (a free port); returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// A base URL where nothing listens (a port just released).
pub async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Standard base64 (for the basic-auth header the server checks).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc_examples() {
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
