//! The Kafka bus over SASL/SCRAM and TLS against a real broker of the test's own: a tansu
//! process (`WPTEST_TANSU_BIN`) started with `--authentication`, holding SCRAM users.
//!
//! tansu 0.6 takes `--cert`/`--key` but never wraps its connections in TLS (its broker builds
//! the acceptor and drops it, `tansu-broker` `broker.rs`: `let _acceptor = …`), so TLS is
//! tested through a TLS-terminating proxy in front of the broker (rustls, certificates made
//! by rcgen here), advertised to the clients as the broker's address: librdkafka does the
//! real TLS handshake, certificate and host name checks, and SCRAM runs inside the tunnel.
//!
//! Without `WPTEST_TANSU_BIN` the tests print that they did not run and pass, unless `CI` or
//! `WPTEST_REQUIRE_SERVERS` is set: then they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use wattprint_bus::kafka::{
    check_durability, create_topics, DurabilityPolicy, KafkaSecurity, OnWeakDurability,
    SaslCredentials, SaslMechanism, SecurityProtocol,
};
use wattprint_bus::testing::unique;
use wattprint_bus::{BusError, BusMessage, BusProducer, KafkaBusConfig, KafkaBusError};
use wattprint_bus::{KafkaConsumer, KafkaProducer};
use wattprint_core::config::Secret;
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

const USER: &str = "wattprint";
const PASSWORD: &str = "correct horse battery staple";

fn tansu_bin() -> Option<String> {
    match std::env::var("WPTEST_TANSU_BIN") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some();
            assert!(
                !required,
                "WPTEST_TANSU_BIN is not set, but CI / WPTEST_REQUIRE_SERVERS requires the \
                 Kafka security tests: run `source scripts/servers.sh start` first"
            );
            eprintln!("kafka security test NOT RUN: WPTEST_TANSU_BIN is not set");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..150 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("port {port} did not open");
}

/// A tansu broker requiring SASL, with user [`USER`] for both SCRAM mechanisms.
struct AuthBroker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl AuthBroker {
    /// Starts the broker advertising `advertised` (its own address, or a TLS proxy's).
    /// Users can only be created on an open broker, so it first runs without
    /// `--authentication`, creates them and the topics' home, then restarts on the same
    /// storage requiring authentication.
    fn start(bin: &str, advertised_port: Option<u16>) -> AuthBroker {
        let mut b = AuthBroker {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        b.spawn(bin, false, None);
        for mechanism in ["scram256", "scram512"] {
            let status = Command::new(bin)
                .args([
                    "user",
                    "create",
                    "--broker",
                    &b.url(),
                    "--mechanism",
                    mechanism,
                ])
                .args([USER, PASSWORD])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "tansu user create {mechanism} failed");
        }
        b.stop();
        b.spawn(bin, true, advertised_port);
        b
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, bin: &str, authentication: bool, advertised_port: Option<u16>) {
        let advertised = format!("tcp://127.0.0.1:{}", advertised_port.unwrap_or(self.port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["broker", "--listener-url", &self.url()])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "sqlite://tansu.db", "--silent"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log);
        if authentication {
            cmd.arg("--authentication");
        }
        self.child = Some(cmd.spawn().unwrap());
        wait_for_port(self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AuthBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for `127.0.0.1` / `localhost` it signed, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    server_cert: String,
    server_key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wattprint test kafka CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            server_cert: cert.pem(),
            server_key: key.serialize_pem(),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Another CA's certificate: what the broker's certificate does not chain to.
    fn unknown_ca_file(&self) -> PathBuf {
        let other = Pki::new();
        let path = self.dir.path().join("other-ca.pem");
        std::fs::copy(other.ca_file(), &path).unwrap();
        path
    }
}

/// Terminates TLS on `listen` and forwards the plaintext to the broker on `upstream`.
async fn tls_proxy(pki: &Pki, listen: u16, upstream: u16) -> tokio::task::JoinHandle<()> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (unknown CA on the client) just ends the connection.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    })
}

fn sample(seq: u64) -> EnergySample {
    EnergySample {
        host: HostId::from("host-a"),
        gpu: GpuUuid::from("GPU-sec"),
        instance: InstanceId::from("i-1"),
        seq,
        start: UnixMillis(1_800_000_000_000 + 1000 * seq as i64),
        end: UnixMillis(1_800_000_001_000 + 1000 * seq as i64),
        energy: Millijoules(250_000 + seq),
        power: Milliwatts(250_000),
        power_max: Milliwatts(260_000),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: seq == 0,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    }
}

fn config(port: u16, security: KafkaSecurity) -> KafkaBusConfig {
    let id = unique();
    let mut c = KafkaBusConfig::new(format!("127.0.0.1:{port}"))
        .with_topic_prefix(&format!("sec-{id}."))
        .with_group_id(format!("sec-group-{id}"));
    c.security = security;
    c.session_timeout = Duration::from_secs(6);
    c.delivery_timeout = Duration::from_secs(8);
    c
}

fn scram(protocol: SecurityProtocol, mechanism: SaslMechanism, password: &str) -> KafkaSecurity {
    KafkaSecurity {
        protocol,
        sasl: Some(SaslCredentials {
            mechanism,
            username: USER.into(),
            password: Secret::new(password),
        }),
        ..KafkaSecurity::default()
    }
}

/// Creates the topics, publishes three samples and reads them back in a consumer group.
async fn round_trip(config: &KafkaBusConfig) {
    create_topics(config, 2, 1).await.unwrap();
    let producer = KafkaProducer::new(config).unwrap();
    let sent: Vec<EnergySample> = (0..3).map(sample).collect();
    producer
        .publish(BusMessage::Samples(sent.clone()))
        .await
        .unwrap();
    let mut consumer = KafkaConsumer::new(config).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), consumer.next_record())
        .await
        .expect("no record arrived in time")
        .expect("consumer closed");
    assert_eq!(record.delivery.message, BusMessage::Samples(sent));
    record.delivery.commit();
    consumer.shutdown().await;
}

/// A publish that must fail: its error, as the gateway would see it.
async fn refused_publish(config: &KafkaBusConfig) -> BusError {
    let producer = KafkaProducer::new(config).unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        producer.publish(BusMessage::Samples(vec![sample(0)])),
    )
    .await
    .expect("the publish neither failed nor succeeded")
    .expect_err("a refused client published")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients_produce_consume_and_a_wrong_password_is_refused() {
    let Some(bin) = tansu_bin() else { return };
    let broker = AuthBroker::start(&bin, None);
    for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let c = config(
            broker.port,
            scram(SecurityProtocol::SaslPlaintext, mechanism, PASSWORD),
        );
        round_trip(&c).await;
        let started = std::time::Instant::now();
        let found = check_durability(&c, &DurabilityPolicy::default())
            .await
            .unwrap();
        eprintln!(
            "durability reported by tansu in {:?}: {found:?}",
            started.elapsed()
        );
        assert!(found.iter().all(|t| t.replication == 1), "{found:?}");
    }

    let wrong = config(
        broker.port,
        scram(
            SecurityProtocol::SaslPlaintext,
            SaslMechanism::ScramSha512,
            "not the password",
        ),
    );
    let err = check_durability(&wrong, &DurabilityPolicy::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("wrong password: {text}");
    assert!(
        matches!(err, KafkaBusError::Unreachable { .. }) && text.contains("uthentication"),
        "{text}"
    );
    let err = refused_publish(&wrong).await;
    eprintln!("wrong password, publish: {err}");
    assert!(matches!(err, BusError::Broker(_)), "{err}");

    let anonymous = config(broker.port, KafkaSecurity::default());
    let err = check_durability(&anonymous, &DurabilityPolicy::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaBusError::Unreachable { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_below_the_minimums_refuses_or_warns_as_configured() {
    let Some(bin) = tansu_bin() else { return };
    let broker = AuthBroker::start(&bin, None);
    let c = config(
        broker.port,
        scram(
            SecurityProtocol::SaslPlaintext,
            SaslMechanism::ScramSha256,
            PASSWORD,
        ),
    );
    let production = DurabilityPolicy {
        min_replication: 3,
        min_insync_replicas: 2,
        on_weak: OnWeakDurability::Refuse,
    };
    let missing = check_durability(&c, &production).await.unwrap_err();
    assert!(
        matches!(missing, KafkaBusError::MissingTopic(_)),
        "{missing}"
    );
    create_topics(&c, 2, 1).await.unwrap();
    let err = check_durability(&c, &production).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KafkaBusError::WeakDurability(_)), "{text}");
    assert!(
        text.contains(&format!(
            "topic {} has replication factor 1 but bus.min_replication = 3",
            c.samples_topic
        )),
        "{text}"
    );
    let warn = DurabilityPolicy {
        on_weak: OnWeakDurability::Warn,
        ..production
    };
    assert_eq!(check_durability(&c, &warn).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_sasl_ssl_work_with_the_right_ca_and_an_unknown_ca_is_refused() {
    let Some(bin) = tansu_bin() else { return };
    let pki = Pki::new();
    let proxy_port = free_port();
    let broker = AuthBroker::start(&bin, Some(proxy_port));
    let _proxy = tls_proxy(&pki, proxy_port, broker.port).await;

    let mut sasl_ssl = scram(
        SecurityProtocol::SaslSsl,
        SaslMechanism::ScramSha512,
        PASSWORD,
    );
    sasl_ssl.ca_file = Some(pki.ca_file());
    round_trip(&config(proxy_port, sasl_ssl.clone())).await;

    // PLAIN is allowed over TLS only; tansu 0.6 implements SCRAM and PLAIN.
    let mut plain = scram(SecurityProtocol::SaslSsl, SaslMechanism::Plain, PASSWORD);
    plain.ca_file = Some(pki.ca_file());
    assert_eq!(
        config(proxy_port, plain)
            .validate()
            .map_err(|e| e.to_string()),
        Ok(())
    );

    let unknown_ca = KafkaSecurity {
        ca_file: Some(pki.unknown_ca_file()),
        ..sasl_ssl.clone()
    };
    let err = check_durability(
        &config(proxy_port, unknown_ca.clone()),
        &DurabilityPolicy::default(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    eprintln!("unknown CA: {text}");
    assert!(
        matches!(err, KafkaBusError::Unreachable { .. })
            && text.contains("certificate verify failed"),
        "{text}"
    );
    let err = refused_publish(&config(proxy_port, unknown_ca)).await;
    assert!(matches!(err, BusError::Broker(_)), "{err}");

    // Plaintext to a TLS port fails too (the proxy drops what is not a TLS handshake).
    let plaintext = scram(
        SecurityProtocol::SaslPlaintext,
        SaslMechanism::ScramSha512,
        PASSWORD,
    );
    assert!(
        check_durability(&config(proxy_port, plaintext), &DurabilityPolicy::default())
            .await
            .is_err()
    );
}

#[test]
fn a_tls_file_that_is_not_pem_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let bogus: &Path = &dir.path().join("ca.pem");
    std::fs::write(bogus, "not a certificate").unwrap();
    let c = config(
        9092,
        KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ca_file: Some(bogus.to_owned()),
            ..KafkaSecurity::default()
        },
    );
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("no PEM block"), "{err}");
}
