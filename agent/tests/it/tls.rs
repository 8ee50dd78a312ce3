//! The agent ↔ gateway link secured: the real gateway over mTLS with a host registry, the
//! real agent replaying the H100 trace. Accepted with the right certificate and token;
//! refused (with the status and reason asserted) without a client certificate, with one from
//! another CA, for an unknown host, a wrong token, another host's certificate or batches of
//! another host — and nothing of a refused stream reaches the bus. A rejected agent keeps its
//! spool and, once its configuration is fixed, delivers every sample exactly once.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;
use crate::gateway_tls;

use common::{read_trace, write_trace, TRACE};
use gateway_tls::{error_chain, Pki, RealGateway, Security, HOST_A, HOST_B, TOKEN_A, TOKEN_B};
use std::path::Path;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Code, Request};
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::tls::{client_tls_config, AgentTlsFiles, HostToken};
use wattprint_agent::{run, AgentConfig, AgentError, AgentReport};
use wattprint_core::{HostId, InstanceId, Milliwatts, UnixMillis};
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{Sample, SampleBatch};

const SEED_A: u64 = 701;
const SEED_B: u64 = 702;

fn replay(trace: &Path, seed: u64) -> ReplaySensor {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    ReplaySensor::new(ReplayConfig {
        trace_path: trace.to_owned(),
        gpus: 1,
        seed,
        start_at: UnixMillis(now.as_millis() as i64),
        pacing: Pacing::AsFastAsPossible,
        loops: Some(1),
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: Milliwatts(700_000),
    })
    .unwrap()
}

fn resolver(seed: u64) -> InstanceResolver {
    InstanceResolver::from_pairs(vec![(replay_gpu_uuid(seed, 0), InstanceId::from("i-0"))])
}

fn config(host: &str, url: String, tls: &AgentTlsFiles, token: &str) -> AgentConfig {
    let mut c = AgentConfig::new(HostId::from(host), url);
    c.batch_max_samples = 64;
    c.batch_max_wait = Duration::from_millis(100);
    c.reconnect_backoff_max = Duration::from_millis(300);
    c.tls = Some(tls.clone());
    c.host_token = Some(HostToken::new(token).unwrap());
    c
}

/// Runs the agent on `trace` as GPU 0 of `seed` until it is done, or for `for_at_most`.
async fn run_agent(
    c: AgentConfig,
    trace: &Path,
    seed: u64,
    for_at_most: Duration,
) -> Result<AgentReport, AgentError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        run(
            c,
            Box::new(replay(trace, seed)),
            resolver(seed),
            tokio::time::sleep(for_at_most),
        ),
    )
    .await
    .expect("the agent returned in time")
}

async fn gateway(pki: &Pki) -> RealGateway {
    let security = Security {
        tls: Some(&pki.gateway),
        hosts: Some(pki.registry()),
    };
    RealGateway::start(&[(SEED_A, HOST_A), (SEED_B, HOST_A)], security, usize::MAX).await
}

/// The trace's energy: the counter's increase over it, and its number of samples.
fn trace_energy() -> (u64, usize) {
    let rows = read_trace(Path::new(TRACE));
    (
        rows[rows.len() - 1].counter_mj - rows[0].counter_mj,
        rows.len() - 1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_the_right_certificate_and_token_delivers_every_sample_exactly_once() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let c = config(HOST_A, gw.url(true), &pki.host_a, TOKEN_A);
    let report = run_agent(c, Path::new(TRACE), SEED_A, Duration::from_secs(3600))
        .await
        .unwrap();
    let (energy, samples) = trace_energy();
    let got = gw
        .delivered
        .lock()
        .unwrap()
        .dedup(&replay_gpu_uuid(SEED_A, 0));
    assert_eq!(got.len(), samples);
    assert_eq!(got.iter().map(|s| s.energy.0).sum::<u64>(), energy);
    assert!(got.iter().all(|s| s.host.as_str() == HOST_A));
    assert_eq!(
        (
            report.samples_acked,
            report.auth_refusals,
            report.samples_rejected
        ),
        (samples as u64, 0, 0),
        "{report:?}"
    );
    assert!(gw.delivered.lock().unwrap().dead_letters.is_empty());
    gw.stop().await;
}

/// Opens a stream the way an agent does, with the given TLS files, host id and token, sends
/// `batches`, and returns the first answer: an ack, a refusal, or the connection's failure.
async fn try_stream(
    url: &str,
    tls: &AgentTlsFiles,
    identity: bool,
    host: &str,
    token: Option<&str>,
    batches: Vec<SampleBatch>,
) -> Result<u64, (Option<Code>, String)> {
    let mut cfg = client_tls_config(tls).unwrap();
    if !identity {
        // The same trust and SNI, no client certificate.
        cfg = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(&tls.ca).unwrap(),
            ))
            .domain_name("gateway.test");
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(cfg)
        .unwrap();
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (None, error_chain(&e)))?;
    let mut request = Request::new(tokio_stream::iter(batches));
    request.metadata_mut().insert(
        "x-wattprint-host-id",
        MetadataValue::try_from(host).unwrap(),
    );
    if let Some(t) = token {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    }
    let refused = |s: tonic::Status| {
        (
            Some(s.code()),
            format!("{}: {}", s.message(), error_chain(&s)),
        )
    };
    let mut acks = IngestClient::new(channel)
        .stream_samples(request)
        .await
        .map_err(refused)?
        .into_inner();
    match acks.message().await {
        Ok(Some(ack)) => Ok(ack.batch_seq),
        Ok(None) => Err((None, "stream closed without an ack".into())),
        Err(s) => Err(refused(s)),
    }
}

/// The TLS handshake refused the client: the connection fails before any gRPC status of the
/// gateway. TLS 1.3 sends the server's alert after the client's last handshake message, so
/// the client reads the alert (`alert`) or, when the server has already closed, sees only the
/// connection closing or its own write failing.
fn assert_refused_by_tls(err: &(Option<Code>, String), alert: &str) {
    assert!(
        !matches!(
            err.0,
            Some(Code::Unauthenticated | Code::PermissionDenied | Code::Ok)
        ),
        "{err:?}"
    );
    let transport = [
        alert,
        "connection closed",
        "broken pipe",
        "connection reset",
        // hyper's word for a connection the server closed before the client could use it.
        "connection was not ready",
    ];
    assert!(transport.iter().any(|t| err.1.contains(t)), "{err:?}");
}

/// One valid sample of GPU 0 of `seed`, on instance `i-0`, that ended a second ago.
fn batch(host: &str, seed: u64) -> SampleBatch {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    SampleBatch {
        host_id: host.into(),
        batch_seq: 1,
        samples: vec![Sample {
            gpu_uuid: replay_gpu_uuid(seed, 0).0,
            instance_id: "i-0".into(),
            seq: 1,
            start_unix_ms: now - 2000,
            end_unix_ms: now - 1000,
            energy_mj: 300_000,
            power_mw: 300_000,
            power_max_mw: 300_000,
            chain_start: true,
            energy_source: 1,
            attribution: 1,
            ..Sample::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_every_wrong_credential_and_says_why() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let url = gw.url(true);
    let b = || vec![batch(HOST_A, SEED_A)];

    // The control: right certificate, host and token get an ack.
    let ok = try_stream(&url, &pki.host_a, true, HOST_A, Some(TOKEN_A), b()).await;
    assert_eq!(ok, Ok(1));
    let accepted = gw.delivered.lock().unwrap().samples.len();
    assert_eq!(accepted, 1);

    // TLS itself refuses: no client certificate, or one from another CA.
    let no_cert = try_stream(&url, &pki.host_a, false, HOST_A, Some(TOKEN_A), b())
        .await
        .unwrap_err();
    eprintln!("without a client certificate: {no_cert:?}");
    assert_refused_by_tls(&no_cert, "CertificateRequired");
    let rogue = try_stream(&url, &pki.rogue_a, true, HOST_A, Some(TOKEN_A), b())
        .await
        .unwrap_err();
    eprintln!("with a certificate from another CA: {rogue:?}");
    assert_refused_by_tls(&rogue, "UnknownCA");

    // The host registry refuses, with the reason.
    let cases: [(&AgentTlsFiles, &str, Option<&str>, Code, &str); 5] = [
        (
            &pki.host_a,
            "host-z",
            Some(TOKEN_A),
            Code::Unauthenticated,
            "unknown host \"host-z\": not in the gateway's host registry",
        ),
        (
            &pki.host_a,
            HOST_A,
            Some(TOKEN_B),
            Code::Unauthenticated,
            "wrong host token for host \"host-a\"",
        ),
        (
            &pki.host_a,
            HOST_A,
            None,
            Code::Unauthenticated,
            "host \"host-a\" sent no host token",
        ),
        // host-b's token on host-a's certificate.
        (
            &pki.host_a,
            HOST_B,
            Some(TOKEN_B),
            Code::PermissionDenied,
            "the client certificate is not host \"host-b\"'s: it is issued for \
             [host-a.agents.test], the registry expects host-b.agents.test",
        ),
        (
            &pki.host_b,
            HOST_A,
            Some(TOKEN_A),
            Code::PermissionDenied,
            "it is issued for [host-b.agents.test], the registry expects host-a.agents.test",
        ),
    ];
    for (files, host, token, code, reason) in cases {
        let err = try_stream(&url, files, true, host, token, b())
            .await
            .unwrap_err();
        assert_eq!(err.0, Some(code), "{host} {token:?}: {err:?}");
        assert!(err.1.contains(reason), "{host} {token:?}: {err:?}");
    }
    // Authenticated as host-b, sending a batch of host-a.
    let err = try_stream(&url, &pki.host_b, true, HOST_B, Some(TOKEN_B), b())
        .await
        .unwrap_err();
    assert_eq!(err.0, Some(Code::PermissionDenied), "{err:?}");
    assert!(
        err.1.contains(
            "batch 1 names host \"host-a\" but this stream authenticated as host \"host-b\""
        ),
        "{err:?}"
    );

    // Nothing of the refused streams was published, not even as a dead letter.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = std::mem::take(&mut *gw.delivered.lock().unwrap());
    assert_eq!((d.samples.len(), d.dead_letters.len()), (accepted, 0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_certificate_of_another_ca_delivers_nothing_and_keeps_its_samples() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..41)
        .map(|i| (i as f64 * 0.1, 100_000, 10 * i as u64))
        .collect();
    let small = write_trace(dir.path(), "small.csv", &rows);
    let c = config(HOST_A, gw.url(true), &pki.rogue_a, TOKEN_A);
    let report = run_agent(c, &small, SEED_A, Duration::from_secs(1))
        .await
        .unwrap();
    // Shut down after a second of refused connections (and up to 5 s waiting for acks). (The
    // refusal is counted in `auth_refusals` when the client reads the gateway's TLS alert;
    // TLS 1.3 may show it only as a closed connection, so it is not asserted.)
    assert_eq!(report.samples_acked, 0, "{report:?}");
    assert_eq!(gw.delivered.lock().unwrap().messages, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_agent_keeps_its_spool_and_after_the_fix_delivers_everything_once() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let spool = tempfile::tempdir().unwrap();

    // Run 1: the wrong token. Sampling of the whole trace ends at once, every batch goes to
    // the spool, every stream is refused; shut down after 2 s.
    let mut c = config(HOST_A, gw.url(true), &pki.host_a, TOKEN_B);
    c.spool_dir = Some(spool.path().to_owned());
    let r1 = run_agent(c, Path::new(TRACE), SEED_A, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(r1.auth_refusals >= 1, "{r1:?}");
    assert_eq!((r1.samples_acked, r1.samples_dropped), (0, 0), "{r1:?}");
    assert_eq!(
        gw.delivered.lock().unwrap().messages,
        0,
        "nothing published"
    );

    // Run 2: fixed token, the same spool, a short trace of another GPU of its own.
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..21)
        .map(|i| (i as f64 * 0.1, 100_000, 10 * i as u64))
        .collect();
    let small = write_trace(dir.path(), "small.csv", &rows);
    let mut c = config(HOST_A, gw.url(true), &pki.host_a, TOKEN_A);
    c.spool_dir = Some(spool.path().to_owned());
    let r2 = run_agent(c, &small, SEED_B, Duration::from_secs(3600))
        .await
        .unwrap();
    let (energy, samples) = trace_energy();
    let d = std::mem::take(&mut *gw.delivered.lock().unwrap());
    let got = d.dedup(&replay_gpu_uuid(SEED_A, 0));
    let copies = d
        .samples
        .iter()
        .filter(|s| s.gpu == replay_gpu_uuid(SEED_A, 0))
        .count();
    assert_eq!((got.len(), copies), (samples, samples), "each exactly once");
    assert_eq!(got.iter().map(|s| s.energy.0).sum::<u64>(), energy);
    assert_eq!(d.dedup(&replay_gpu_uuid(SEED_B, 0)).len(), 20);
    assert_eq!(
        (r2.auth_refusals, r2.samples_acked),
        (0, samples as u64 + 20),
        "{r2:?}"
    );
    assert!(r2.batches_replayed > 0, "{r2:?}");
    gw.stop().await;
}

#[tokio::test]
async fn tls_settings_must_match_the_url_and_files_must_hold_pem() {
    let pki = Pki::new();
    let trace = Path::new(TRACE);
    let err = |c: AgentConfig| async move {
        run(
            c,
            Box::new(replay(trace, SEED_A)),
            resolver(SEED_A),
            async {},
        )
        .await
        .unwrap_err()
        .to_string()
    };
    let c = config(HOST_A, "http://127.0.0.1:1".into(), &pki.host_a, TOKEN_A);
    assert!(err(c).await.contains("the gateway URL must be https://"));
    let mut c = config(HOST_A, "https://127.0.0.1:1".into(), &pki.host_a, TOKEN_A);
    c.tls = None;
    assert!(err(c).await.contains("an https:// gateway needs agent.tls"));
    let mut bad = pki.host_a.clone();
    bad.cert = bad.key.clone();
    let c = config(HOST_A, "https://127.0.0.1:1".into(), &bad, TOKEN_A);
    let e = err(c).await;
    assert!(
        e.contains("agent.tls.cert") && e.contains("host-a.key: holds no PEM CERTIFICATE block"),
        "{e}"
    );
    let mut mismatched = pki.host_a.clone();
    mismatched.key = pki.host_b.key.clone();
    let c = config(HOST_A, "https://127.0.0.1:1".into(), &mismatched, TOKEN_A);
    let e = err(c).await;
    eprintln!("mismatched key: {e}");
    assert!(e.contains("agent TLS configuration rejected"), "{e}");
}
