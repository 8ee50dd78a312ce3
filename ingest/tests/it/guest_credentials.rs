//! An `in_guest` agent's credential, bound to its one instance, over a real gRPC stream to the
//! real gateway (host registry, in-process bus, enricher, SQLite): it can report its own
//! instance only, and what it reports is stored as `guest_reported` whatever it claimed.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use wattprint_bus::{memory_bus, BusProducer};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::{Attribution, EnergySample};
use wattprint_core::{InstanceId, TenantId, TenantScope, UnixMillis};
use wattprint_ingest::enricher::Enricher;
use wattprint_ingest::gateway::{Gateway, GatewayLimits};
use wattprint_ingest::hosts::{token_sha256_hex, HostRegistry, HOST_ID_HEADER};
use wattprint_ingest::inventory::InventoryIndex;
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{BatchAck, SampleBatch};
use wattprint_store::{InstanceRecord, SqliteStore, Store};

const TOKEN: &str = "guest-token-0123456789abcdef0123";
const GUEST: &str = "guest-vm-7";

/// The guest VM `i-guest` holds GPU-1 by passthrough; the inventory also (wrongly, or by a
/// move the guest should not be able to exploit) lists GPU-2 of another tenant's `i-other`
/// under the same host id.
fn inventory() -> Vec<InstanceRecord> {
    vec![
        common::instance("acme", "i-guest", "CAISO_NORTH", &[("GPU-1", GUEST)]),
        common::instance("globex", "i-other", "CAISO_NORTH", &[("GPU-2", GUEST)]),
    ]
}

fn sample(gpu: &str, instance: &str, seq: u64) -> EnergySample {
    // What the guest claims (exclusive attribution); the gateway decides.
    let start = UnixMillis::now().0 - 60_000 + seq as i64 * 1000;
    common::sample(
        GUEST,
        gpu,
        instance,
        seq,
        (start, start + 1000),
        200_000 + seq,
    )
}

async fn stream(addr: std::net::SocketAddr, samples: &[EnergySample]) -> BatchAck {
    let mut client = IngestClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let batch = SampleBatch {
        host_id: GUEST.into(),
        batch_seq: 1,
        samples: samples
            .iter()
            .map(wattprint_proto::sample_to_wire)
            .collect(),
    };
    let mut request = tonic::Request::new(tokio_stream::iter(vec![batch]));
    let m = request.metadata_mut();
    m.insert(HOST_ID_HEADER, MetadataValue::from_static(GUEST));
    m.insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap(),
    );
    let mut acks = client.stream_samples(request).await.unwrap().into_inner();
    acks.message().await.unwrap().unwrap()
}

#[tokio::test]
async fn a_guest_credential_reports_its_own_instance_only_marked_guest_reported() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_inventory(&inventory()).await.unwrap();
    let index = Arc::new(InventoryIndex::new(&inventory()));
    let (producer, consumer) = memory_bus(16);
    let enricher = Enricher::new(
        store.clone(),
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        index.clone(),
        HashMap::new(),
    );
    tokio::spawn(enricher.run(consumer, std::future::pending::<()>()));
    let registry = HostRegistry::from_toml(&format!(
        "version = 1\n[[hosts]]\nid = \"{GUEST}\"\ntoken_sha256 = \"{}\"\ninstance = \"i-guest\"\n",
        token_sha256_hex(TOKEN)
    ))
    .unwrap();
    let producer: Arc<dyn BusProducer> = Arc::new(producer);
    let gateway =
        Gateway::new(producer, index, GatewayLimits::default()).with_hosts(Arc::new(registry));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(wattprint_ingest::gateway::serve(
        listener,
        gateway,
        std::future::pending(),
    ));

    let own = sample("GPU-1", "i-guest", 1);
    let foreign = sample("GPU-2", "i-other", 2);
    let ack = stream(addr, &[own.clone(), foreign]).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
    assert_eq!(ack.rejected.len(), 1);
    assert_eq!(ack.rejected[0].gpu_uuid, "GPU-2");
    assert!(
        ack.rejected[0]
            .reason
            .contains("GPU-2 is not attached to instance i-other on host guest-vm-7"),
        "{:?}",
        ack.rejected
    );

    let read = |tenant: &'static str, instance: &'static str| {
        let store = store.clone();
        async move {
            store
                .instance_samples(
                    &TenantScope::from_verified(TenantId::from(tenant)),
                    &InstanceId::from(instance),
                    UnixMillis(i64::MIN),
                    UnixMillis(i64::MAX),
                    100,
                )
                .await
                .unwrap()
        }
    };
    let stored = read("acme", "i-guest").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sample.energy, own.energy);
    assert_eq!(stored[0].sample.attribution, Attribution::GuestReported);
    assert!(read("globex", "i-other").await.is_empty());
}
