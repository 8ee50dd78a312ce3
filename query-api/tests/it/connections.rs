//! The server's connection limits on a real TCP port: a connection that trickles (or never
//! sends) its request head is closed after the header read timeout, and connections beyond
//! the cap are not served until one closes.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wattprint_query_api::{ApiLimits, ApiState};
use wattprint_store::Store;

async fn server(h: &Harness, header_read_timeout: Duration, max_connections: usize) -> Server {
    let store: Arc<dyn Store> = h.store.clone();
    let limits = ApiLimits {
        header_read_timeout,
        max_connections,
        ..ApiLimits::default()
    };
    Server::start_state(ApiState::new(store, auth(), catalog(), limits)).await
}

fn addr(s: &Server) -> String {
    s.url("").trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns how long that took.
async fn closed_after(conn: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for 10 s"),
        }
    }
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_after_the_header_read_timeout() {
    let h = harness().await;
    let s = server(&h, Duration::from_millis(600), 64).await;
    // Slowloris: a request head that never ends.
    let mut slow = TcpStream::connect(addr(&s)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    // And one that sends nothing at all.
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    let (a, b) = tokio::join!(closed_after(&mut slow), closed_after(&mut silent));
    for took in [a, b] {
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
    }
    // A complete request on time is answered.
    let mut ok = TcpStream::connect(addr(&s)).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let h = harness().await;
    let s = server(&h, Duration::from_secs(30), 2).await;
    let idle1 = TcpStream::connect(addr(&s)).await.unwrap();
    let _idle2 = TcpStream::connect(addr(&s)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let refused = client.get(s.url("/healthz")).send().await;
    assert!(refused.is_err(), "served beyond the cap: {refused:?}");
    drop(idle1);
    let r = reqwest::Client::new()
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(_idle2);
    s.stop().await;
}
