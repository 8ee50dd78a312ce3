//! Helpers for the tests that run the agent against the *real* ingest gateway
//! (`wattprint_ingest::gateway`, in-process, on an in-process bus whose consumer the test
//! plays): a certificate authority made with `rcgen`, the gateway with or without TLS and a
//! host registry, and what reached the bus.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a panic is a test failure

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};
use wattprint_agent::replay::replay_gpu_uuid;
use wattprint_agent::tls::AgentTlsFiles;
use wattprint_bus::{memory_bus, BusConsumer, BusMessage, DeadLetter};
use wattprint_core::sample::EnergySample;
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};
use wattprint_ingest::gateway::{serve_tls, server_tls_config, GatewayTlsFiles};
use wattprint_ingest::hosts::{token_sha256_hex, HostRegistry};
use wattprint_ingest::InventoryIndex;
use wattprint_ingest::{Gateway, GatewayLimits};
use wattprint_store::{GpuRecord, InstanceRecord};

/// A certificate authority for one test.
pub struct Ca {
    /// Its certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IPs), for a client or a server; returns
    /// (certificate PEM, private key PEM).
    pub fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let mut p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The test PKI: CA `ca` signs the gateway (`gateway.test`, `127.0.0.1`) and the agents of
/// `host-a` and `host-b`; an unrelated CA `rogue` signs another certificate for `host-a`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub gateway: GatewayTlsFiles,
    pub host_a: AgentTlsFiles,
    pub host_b: AgentTlsFiles,
    pub rogue_a: AgentTlsFiles,
}

pub const HOST_A: &str = "host-a";
pub const HOST_B: &str = "host-b";
pub const TOKEN_A: &str = "token-a-5f0c1b7e9d2a4c6e8f01";
pub const TOKEN_B: &str = "token-b-0e2d4c6b8a9f1e3d5c70";

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = Ca::new("Wattprint test CA");
        let rogue = Ca::new("Some other CA");
        let ca_path = write(d, "ca.pem", &ca.cert_pem);
        let (gw_cert, gw_key) = ca.issue(&["gateway.test", "127.0.0.1"], false);
        let agent = |ca: &Ca, name: &str, file: &str| {
            let (cert, key) = ca.issue(&[&format!("{name}.agents.test")], true);
            AgentTlsFiles {
                ca: ca_path.clone(),
                cert: write(d, &format!("{file}.pem"), &cert),
                key: write(d, &format!("{file}.key"), &key),
                domain: Some("gateway.test".into()),
            }
        };
        Pki {
            gateway: GatewayTlsFiles {
                cert: write(d, "gateway.pem", &gw_cert),
                key: write(d, "gateway.key", &gw_key),
                client_ca: Some(ca_path.clone()),
            },
            host_a: agent(&ca, HOST_A, "host-a"),
            host_b: agent(&ca, HOST_B, "host-b"),
            rogue_a: agent(&rogue, HOST_A, "rogue-a"),
            ca: ca_path,
            dir,
        }
    }

    /// The registry: both hosts with their token hashes and certificate names.
    pub fn registry(&self) -> HostRegistry {
        let text = format!(
            "version = 1\n\n[[hosts]]\nid = \"{HOST_A}\"\ntoken_sha256 = \"{}\"\n\
             cert_name = \"{HOST_A}.agents.test\"\n\n[[hosts]]\nid = \"{HOST_B}\"\n\
             token_sha256 = \"{}\"\ncert_name = \"{HOST_B}.agents.test\"\n",
            token_sha256_hex(TOKEN_A),
            token_sha256_hex(TOKEN_B)
        );
        let path = write(self.dir.path(), "hosts.toml", &text);
        HostRegistry::load(&path).unwrap()
    }
}

/// Instance `i-0` of tenant `t` holding GPU 0 of every replay seed (700 W H100s), each on
/// the host named beside its seed.
pub fn inventory(seeds: &[(u64, &str)]) -> Vec<InstanceRecord> {
    vec![InstanceRecord {
        tenant: TenantId::from("t"),
        instance: InstanceId::from("i-0"),
        region: RegionId::from("R"),
        zip_code: None,
        gpus: seeds
            .iter()
            .map(|&(s, host)| GpuRecord {
                uuid: replay_gpu_uuid(s, 0),
                model: "NVIDIA H100 80GB HBM3".into(),
                power_limit: Milliwatts(700_000),
                host: HostId::from(host),
            })
            .collect(),
    }]
}

/// What the bus consumer committed.
#[derive(Debug, Default)]
pub struct Delivered {
    pub samples: Vec<EnergySample>,
    pub dead_letters: Vec<DeadLetter>,
    /// Bus messages committed.
    pub messages: usize,
}

impl Delivered {
    /// One GPU's samples deduplicated by seq, in seq order; panics if two copies differ.
    pub fn dedup(&self, gpu: &GpuUuid) -> Vec<EnergySample> {
        let mut m = std::collections::BTreeMap::new();
        for s in self.samples.iter().filter(|s| &s.gpu == gpu) {
            if let Some(prev) = m.insert(s.seq, s.clone()) {
                assert_eq!(&prev, s, "a redelivered sample must equal the first copy");
            }
        }
        m.into_values().collect()
    }
}

/// The real gateway on 127.0.0.1, publishing to an in-process bus whose consumer commits at
/// most `limit` messages (then stalls, so the gateway stops acking) until the limit is raised.
pub struct RealGateway {
    pub addr: SocketAddr,
    pub delivered: Arc<Mutex<Delivered>>,
    limit: watch::Sender<usize>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// How the gateway is secured.
pub struct Security<'a> {
    pub tls: Option<&'a GatewayTlsFiles>,
    pub hosts: Option<HostRegistry>,
}

impl Security<'_> {
    pub const PLAINTEXT: Security<'static> = Security {
        tls: None,
        hosts: None,
    };
}

/// Where the gateway listens and what clock it checks sample times against.
#[derive(Default)]
pub struct GatewayOptions {
    /// The address (default: a free port on 127.0.0.1).
    pub addr: Option<SocketAddr>,
    /// The gateway's clock (default: the system clock).
    pub clock: Option<fn() -> UnixMillis>,
}

impl RealGateway {
    pub async fn start(seeds: &[(u64, &str)], security: Security<'_>, limit: usize) -> RealGateway {
        Self::start_with(seeds, security, limit, GatewayOptions::default()).await
    }

    pub async fn start_with(
        seeds: &[(u64, &str)],
        security: Security<'_>,
        limit: usize,
        options: GatewayOptions,
    ) -> RealGateway {
        let bind = options
            .addr
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (producer, mut consumer) = memory_bus(1);
        let mut gateway = Gateway::new(
            Arc::new(producer),
            Arc::new(InventoryIndex::new(&inventory(seeds))),
            GatewayLimits::default(),
        );
        if let Some(clock) = options.clock {
            gateway = gateway.with_clock(clock);
        }
        if let Some(hosts) = security.hosts {
            gateway = gateway.with_hosts(Arc::new(hosts));
        }
        let tls = security.tls.map(|f| server_tls_config(f).unwrap());
        let delivered = Arc::new(Mutex::new(Delivered::default()));
        let (limit_tx, mut limit_rx) = watch::channel(limit);
        let sink = Arc::clone(&delivered);
        tokio::spawn(async move {
            loop {
                let committed = sink.lock().unwrap().messages;
                if committed >= *limit_rx.borrow_and_update() {
                    if limit_rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let Some(d) = consumer.next().await else {
                    return;
                };
                {
                    let mut s = sink.lock().unwrap();
                    match &d.message {
                        BusMessage::Samples(v) => s.samples.extend(v.iter().cloned()),
                        BusMessage::DeadLetters(v) => s.dead_letters.extend(v.iter().cloned()),
                    }
                    s.messages += 1;
                }
                d.commit();
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_tls(listener, gateway, tls, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        RealGateway {
            addr,
            delivered,
            limit: limit_tx,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, tls: bool) -> String {
        format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
    }

    /// Lets the bus consumer commit everything from now on.
    pub fn unstall(&self) {
        let _ = self.limit.send(usize::MAX);
    }

    /// Stops accepting and ends the server task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
