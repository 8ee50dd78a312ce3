//! The gateway's connection limits on a real TCP port: a connection that sends nothing is
//! closed after the first-byte timeout, and connections beyond the cap wait until one closes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use wattprint_bus::memory_bus;
use wattprint_ingest::{Gateway, GatewayLimits, InventoryIndex};
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::SampleBatch;

async fn gateway(
    limits: GatewayLimits,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (producer, mut consumer) = memory_bus(16);
    tokio::spawn(async move {
        use wattprint_bus::BusConsumer;
        while consumer.next().await.is_some() {}
    });
    let gateway = Gateway::new(
        Arc::new(producer),
        Arc::new(InventoryIndex::new(&[])),
        limits,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(wattprint_ingest::gateway::serve(
        listener,
        gateway,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// Opens a stream and sends one empty batch; the ack's batch sequence.
async fn one_batch(addr: std::net::SocketAddr) -> u64 {
    let mut client = IngestClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let batch = SampleBatch {
        host_id: "host-1".into(),
        batch_seq: 7,
        samples: vec![],
    };
    let mut acks = client
        .stream_samples(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    acks.message().await.unwrap().unwrap().batch_seq
}

#[tokio::test]
async fn silent_connections_are_closed_and_the_cap_holds_the_rest_back() {
    let limits = GatewayLimits {
        max_connections: 1,
        first_byte_timeout: Duration::from_millis(500),
        ..GatewayLimits::default()
    };
    let (addr, stop) = gateway(limits).await;

    // Silent: closed after the timeout (read sees EOF), well before 5 s.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent connection was held open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // The cap: an agent's open connection holds the only permit; another agent waits.
    let mut agent = IngestClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<SampleBatch>(1);
    let mut acks = agent
        .stream_samples(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(SampleBatch {
        host_id: "host-1".into(),
        batch_seq: 1,
        samples: vec![],
    })
    .await
    .unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().batch_seq, 1);
    let second = tokio::spawn(one_batch(addr));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!second.is_finished(), "served beyond the connection cap");
    drop((tx, acks, agent));
    let seq = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the waiting agent was never served")
        .unwrap();
    assert_eq!(seq, 7);
    let _ = stop.send(());
}
