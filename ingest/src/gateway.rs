//! The gateway: receives agents' sample streams, validates every sample, publishes valid ones
//! and dead letters to the bus, and acks each batch only once the bus holds it.
//!
//! A bad sample never disturbs good ones in the same batch: it is refused with a reason in the
//! ack and kept in the dead-letter stream. A bus failure ends the stream with `UNAVAILABLE`
//! and no ack, so the agent resends; redelivery is harmless because samples dedup by
//! `(gpu, seq)`.
//!
//! With a [`HostRegistry`] ([`Gateway::with_hosts`]) every stream must prove its host (host
//! token, and the client certificate where the registry names one) before a batch is read,
//! and may only carry batches of that host; see [`crate::hosts`]. [`serve_tls`] serves over
//! TLS, requiring client certificates signed by the configured CA ([`GatewayTlsFiles`]).
//! Production runs both; plaintext without a registry is for the embedded single-process
//! mode and localhost development.

use crate::hosts::HostRegistry;
use crate::inventory::InventoryIndex;
use crate::log_throttle::{LogThrottle, LogVerdict};
use crate::metrics::GATEWAY;
use futures::stream::{FuturesOrdered, StreamExt};
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity};
use tonic::{Code, Request, Response, Status, Streaming};
use wattprint_bus::{BusMessage, BusProducer, DeadLetter, DeadLetterPayload};
use wattprint_core::sample::{
    check_sample, Attribution, EnergySample, SampleLimits, SampleRejection,
};
use wattprint_core::{HostId, InstanceId, UnixMillis};
use wattprint_proto::v1::ingest_server::{Ingest, IngestServer};
use wattprint_proto::v1::{BatchAck, Rejection, Sample, SampleBatch};
use wattprint_runtime::pem::{read_certificates, read_private_key, PemError};

/// tonic's server TLS settings, as [`server_tls_config`] builds them.
pub use tonic::transport::ServerTlsConfig;

/// Limits on what the gateway accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Per-sample limits.
    pub samples: SampleLimits,
    /// Most samples in one batch.
    pub max_batch_samples: usize,
    /// Largest encoded message, bytes.
    pub max_message_bytes: usize,
    /// Most connections served at once (default 4096); more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a new connection may stay silent before it is closed (default 10 s).
    pub first_byte_timeout: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            samples: SampleLimits::default(),
            max_batch_samples: wattprint_core::sample::MAX_BATCH_SAMPLES,
            max_message_bytes: 4 << 20,
            max_connections: 4096,
            first_byte_timeout: Duration::from_secs(10),
        }
    }
}

/// Counts an open agent stream down when the stream's task ends, however it ends.
fn scopeguard_streams() -> impl Drop {
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            GATEWAY.streams.add(-1, &[]);
        }
    }
    Open
}

/// A batch split into what may pass and what is refused.
#[derive(Debug, Default, PartialEq)]
pub struct CheckedBatch {
    /// Valid samples.
    pub accepted: Vec<EnergySample>,
    /// Refusals for the ack.
    pub rejected: Vec<Rejection>,
    /// Refusals for the dead-letter stream.
    pub dead_letters: Vec<DeadLetter>,
}

/// The gateway service.
#[derive(Clone)]
pub struct Gateway {
    producer: Arc<dyn BusProducer>,
    inventory: Arc<InventoryIndex>,
    limits: GatewayLimits,
    clock: fn() -> UnixMillis,
    hosts: Option<Arc<HostRegistry>>,
    rejection_log: Arc<LogThrottle>,
}

/// The gateway's rule for one decoded sample: over the sample's whole span its GPU was
/// attached to the instance it names on the host that sent it (the inventory in time, see
/// [`InventoryIndex::gpu_over`]), and it passes [`check_sample`] at `now`. Replays of held
/// samples ([`crate::quarantine`]) go through the same rule.
pub fn admit(
    inventory: &InventoryIndex,
    limits: &SampleLimits,
    now: UnixMillis,
    s: &EnergySample,
) -> Result<(), SampleRejection> {
    let placement = inventory
        .gpu_over(&s.gpu, s.start, s.end)
        .filter(|p| p.host == s.host && p.instance == s.instance)
        .ok_or_else(|| SampleRejection::NotAttached {
            gpu: s.gpu.clone(),
            instance: s.instance.clone(),
            host: s.host.clone(),
        })?;
    check_sample(s, placement.power_limit, limits, now)
}

impl Gateway {
    /// A gateway publishing to `producer`, validating against `inventory`.
    pub fn new(
        producer: Arc<dyn BusProducer>,
        inventory: Arc<InventoryIndex>,
        limits: GatewayLimits,
    ) -> Self {
        Self {
            producer,
            inventory,
            limits,
            clock: UnixMillis::now,
            hosts: None,
            rejection_log: Arc::new(LogThrottle::default()),
        }
    }

    /// Accepts only streams that prove a host of `hosts` (see [`crate::hosts`]).
    pub fn with_hosts(mut self, hosts: Arc<HostRegistry>) -> Self {
        self.hosts = Some(hosts);
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: fn() -> UnixMillis) -> Self {
        self.clock = clock;
        self
    }

    /// Validates every sample of a batch independently.
    pub fn check(&self, host: &HostId, batch: &SampleBatch) -> CheckedBatch {
        self.check_as(host, None, batch)
    }

    /// [`Gateway::check`] for a stream whose credential is bound to `bound` (an `in_guest`
    /// agent, see [`crate::hosts`]): samples naming another instance are refused as not
    /// attached, and the ones accepted are marked [`Attribution::GuestReported`].
    pub fn check_as(
        &self,
        host: &HostId,
        bound: Option<&InstanceId>,
        batch: &SampleBatch,
    ) -> CheckedBatch {
        let now = (self.clock)();
        let mut out = CheckedBatch::default();
        let mut seen = HashSet::new();
        for wire in &batch.samples {
            let verdict = wattprint_proto::sample_from_wire(host, wire).and_then(|mut s| {
                if let Some(instance) = bound {
                    if s.instance != *instance {
                        return Err(SampleRejection::NotAttached {
                            gpu: s.gpu.clone(),
                            instance: s.instance.clone(),
                            host: s.host.clone(),
                        });
                    }
                    s.attribution = Attribution::GuestReported;
                }
                admit(&self.inventory, &self.limits.samples, now, &s)?;
                if !seen.insert((s.gpu.clone(), s.seq)) {
                    return Err(SampleRejection::DuplicateInBatch {
                        gpu: s.gpu.clone(),
                        seq: s.seq,
                    });
                }
                Ok(s)
            });
            match verdict {
                Ok(s) => out.accepted.push(s),
                Err(reason) => {
                    self.log_rejection(host, now, wire, &reason);
                    GATEWAY.rejected(&reason.to_string());
                    out.rejected.push(Rejection {
                        gpu_uuid: wire.gpu_uuid.clone(),
                        seq: wire.seq,
                        reason: reason.to_string(),
                    });
                    out.dead_letters.push(DeadLetter {
                        received_at: now,
                        host: host.clone(),
                        gpu: (!wire.gpu_uuid.is_empty())
                            .then(|| wattprint_core::GpuUuid::new(wire.gpu_uuid.clone())),
                        seq: Some(wire.seq),
                        reason: reason.to_string(),
                        payload: DeadLetterPayload::Text(wattprint_proto::sample_to_json(wire)),
                    });
                }
            }
        }
        out
    }

    /// Logs a refused sample within the host's log budget ([`LogThrottle`]).
    fn log_rejection(
        &self,
        host: &HostId,
        now: UnixMillis,
        wire: &Sample,
        reason: &SampleRejection,
    ) {
        match self.rejection_log.admit(host, now) {
            LogVerdict::Suppress => return,
            LogVerdict::LogAfterSuppressed(n) => tracing::warn!(
                host = %host,
                not_logged = n,
                per_window = self.rejection_log.per_window(),
                "rejections of this host over its log budget were counted, not logged"
            ),
            LogVerdict::Log => {}
        }
        tracing::warn!(host = %host, gpu = %wire.gpu_uuid, seq = wire.seq, %reason, "sample rejected");
    }

    /// Handles one batch: check, publish, ack. An error ends the stream (the agent resends).
    #[tracing::instrument(skip_all, fields(host = %batch.host_id, batch_seq = batch.batch_seq, samples = batch.samples.len()))]
    pub async fn handle(&self, batch: SampleBatch) -> Result<BatchAck, Status> {
        self.handle_as(batch, None).await
    }

    /// [`Gateway::handle`] for a stream whose credential is bound to `bound` (see
    /// [`Gateway::check_as`]).
    pub async fn handle_as(
        &self,
        batch: SampleBatch,
        bound: Option<&InstanceId>,
    ) -> Result<BatchAck, Status> {
        self.start_as(batch, bound).await.await
    }

    /// Checks `batch` and hands it to the bus; what it returns resolves to the batch's ack
    /// once the bus holds it (or to the error that ends the stream). Batches started one
    /// after another reach the bus in that order, so a stream may start its next batch
    /// before this one's ack.
    pub async fn start_as(&self, batch: SampleBatch, bound: Option<&InstanceId>) -> PendingAck {
        let start = std::time::Instant::now();
        let started = self.start_checked(batch, bound).await;
        Box::pin(async move {
            let result = match started {
                Ok(pending) => pending.await,
                Err(status) => Err(status),
            };
            GATEWAY.batch(match &result {
                Ok(_) => "acked",
                Err(s) if s.code() == Code::InvalidArgument => "refused",
                Err(_) => "failed",
            });
            GATEWAY
                .batch_duration
                .record(start.elapsed().as_secs_f64(), &[]);
            result
        })
    }

    async fn start_checked(
        &self,
        batch: SampleBatch,
        bound: Option<&InstanceId>,
    ) -> Result<PendingAck, Status> {
        let summary = || {
            serde_json::json!({"batch_seq": batch.batch_seq, "samples": batch.samples.len()})
                .to_string()
        };
        if batch.host_id.is_empty() || batch.host_id.len() > wattprint_proto::MAX_ID_LEN {
            let reason = "batch host_id must be 1 to 128 bytes";
            self.dead_letter_message(&batch.host_id, reason, summary())
                .await;
            return Err(Status::invalid_argument(reason));
        }
        if batch.samples.len() > self.limits.max_batch_samples {
            let reason = format!(
                "batch {} has {} samples, more than the limit of {}; send smaller batches",
                batch.batch_seq,
                batch.samples.len(),
                self.limits.max_batch_samples
            );
            self.dead_letter_message(&batch.host_id, &reason, summary())
                .await;
            return Err(Status::invalid_argument(reason));
        }
        let host = HostId::new(batch.host_id.clone());
        let checked = self.check_as(&host, bound, &batch);
        let accepted = checked.accepted.len() as u32;
        let samples = if checked.accepted.is_empty() {
            None
        } else {
            Some(
                self.producer
                    .enqueue(BusMessage::Samples(checked.accepted))
                    .await
                    .map_err(samples_not_persisted)?,
            )
        };
        let ack = BatchAck {
            batch_seq: batch.batch_seq,
            accepted,
            rejected: checked.rejected,
        };
        let dead_letters = checked.dead_letters;
        let producer = Arc::clone(&self.producer);
        Ok(Box::pin(async move {
            if let Some(persisting) = samples {
                persisting.await.map_err(samples_not_persisted)?;
                GATEWAY.accepted.add(u64::from(accepted), &[]);
            }
            // Only once the samples are held: a batch the agent must resend has published
            // no dead letters yet.
            if !dead_letters.is_empty() {
                producer
                    .publish(BusMessage::DeadLetters(dead_letters))
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!("dead letters not persisted, resend: {e}"))
                    })?;
            }
            Ok(ack)
        }))
    }

    /// Turns a stream error into the status the agent gets. A message that could not be
    /// decoded (malformed protobuf, over the size limit) is dead-lettered and answered with
    /// `InvalidArgument` / `ResourceExhausted` saying what was wrong; a stream the agent closed
    /// or reset is only logged.
    async fn refuse_unreadable(&self, status: Status, host: &str, peer: &str) -> Status {
        let code = match status.code() {
            Code::Internal | Code::InvalidArgument => Code::InvalidArgument,
            Code::OutOfRange | Code::ResourceExhausted => Code::ResourceExhausted,
            _ => {
                tracing::info!(%status, %peer, "agent stream ended with an error");
                return status;
            }
        };
        let reason = format!(
            "unreadable SampleBatch from {peer} (limit {} bytes): {}",
            self.limits.max_message_bytes,
            status.message()
        );
        tracing::warn!(%host, %reason, "message refused");
        self.dead_letter_message(host, &reason, String::new()).await;
        Status::new(code, reason)
    }

    /// Publishes one dead-letter record for a whole message refused before its samples could
    /// be read (undecodable, oversized, no host), so operators find it beside refused samples.
    /// Best effort: the sender gets a gRPC status either way.
    async fn dead_letter_message(&self, host: &str, reason: &str, payload: String) {
        let host = if host.is_empty() { "unknown" } else { host };
        let host: String = host.chars().take(wattprint_proto::MAX_ID_LEN).collect();
        let record = DeadLetter {
            received_at: (self.clock)(),
            host: HostId::new(host),
            gpu: None,
            seq: None,
            reason: reason.to_owned(),
            payload: DeadLetterPayload::Text(payload),
        };
        if let Err(e) = self
            .producer
            .publish(BusMessage::DeadLetters(vec![record]))
            .await
        {
            tracing::warn!(error = %e, %reason, "dead letter of a refused message not persisted");
        }
    }

    /// The tonic service, with the message-size limit applied.
    pub fn into_service(self) -> IngestServer<Gateway> {
        let max = self.limits.max_message_bytes;
        IngestServer::new(self).max_decoding_message_size(max)
    }
}

/// A batch handed to the bus ([`Gateway::start_as`]): resolves to its ack once held.
pub type PendingAck = Pin<Box<dyn Future<Output = Result<BatchAck, Status>> + Send>>;

/// Batches of one stream handed to the bus and not yet acked, at most. The in-process bus
/// then gathers several of them into one store write when the store falls behind (a replay
/// agent sends its whole fleet's second as one batch); acks still go back in order.
const STREAM_BATCHES_IN_FLIGHT: usize = 8;

fn samples_not_persisted(e: wattprint_bus::BusError) -> Status {
    Status::unavailable(format!("samples not persisted, resend: {e}"))
}

/// The ack stream returned to an agent.
pub type AckStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for Gateway {
    type StreamSamplesStream = AckStream;

    async fn stream_samples(
        &self,
        request: Request<Streaming<SampleBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown peer".to_owned(), |a| a.to_string());
        // Credentials first: nothing of a refused stream is read, let alone published.
        let authenticated = match &self.hosts {
            Some(hosts) => {
                let certs = request.peer_certs();
                match hosts.authenticate(request.metadata(), certs.as_deref().map(Vec::as_slice)) {
                    Ok(credential) => Some(credential),
                    Err(status) => {
                        tracing::warn!(%peer, code = ?status.code(), reason = %status.message(), "agent stream refused");
                        GATEWAY.auth_refused(status.message());
                        return Err(status);
                    }
                }
            }
            None => None,
        };
        let mut inbound = request.into_inner();
        let gateway = self.clone();
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(async move {
            GATEWAY.streams.add(1, &[]);
            let _open = scopeguard_streams();
            let mut last_host = String::new();
            // Batches handed to the bus, acked in the order they came.
            let mut pending: FuturesOrdered<PendingAck> = FuturesOrdered::new();
            // Why reading stopped: the agent closed the stream (None) or it failed.
            let mut ended: Option<Option<Status>> = None;
            loop {
                tokio::select! {
                    biased;
                    Some(result) = pending.next(), if !pending.is_empty() => {
                        let failed = result.is_err();
                        if tx.send(result).await.is_err() || failed {
                            return;
                        }
                    }
                    next = inbound.next(), if ended.is_none() && pending.len() < STREAM_BATCHES_IN_FLIGHT => {
                        let batch = match next {
                            Some(Ok(batch)) => batch,
                            None => {
                                ended = Some(None);
                                continue;
                            }
                            Some(Err(status)) => {
                                let status =
                                    gateway.refuse_unreadable(status, &last_host, &peer).await;
                                ended = Some(Some(status));
                                continue;
                            }
                        };
                        last_host.clone_from(&batch.host_id);
                        if let Some(host) = authenticated
                            .as_ref()
                            .map(|c| &c.host)
                            .filter(|h| h.as_str() != batch.host_id)
                        {
                            let status = Status::permission_denied(format!(
                                "batch {} names host {:?} but this stream authenticated as host {:?}",
                                batch.batch_seq,
                                batch.host_id,
                                host.as_str()
                            ));
                            tracing::warn!(%peer, reason = %status.message(), "agent stream refused");
                            GATEWAY.auth_refused(status.message());
                            ended = Some(Some(status));
                            continue;
                        }
                        let bound = authenticated.as_ref().and_then(|c| c.instance.as_ref());
                        pending.push_back(gateway.start_as(batch, bound).await);
                    }
                    else => break,
                }
            }
            // Every batch read before the end is acked first; then the reason, if any.
            if let Some(Some(status)) = ended {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves the gateway on `listener` (plaintext) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_tls(listener, gateway, None, shutdown).await
}

/// Serves the gateway on `listener` until `shutdown` resolves, over TLS when `tls` is given
/// (see [`server_tls_config`]).
pub async fn serve_tls(
    listener: TcpListener,
    gateway: Gateway,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // An agent holds one long-lived stream: a connection needs few streams, and a peer that
    // vanished (a host powered off mid-stream) is found by keepalives and dropped rather than
    // held open forever. Connections are capped, and silent ones closed ([`crate::conn_limit`]).
    let incoming = crate::conn_limit::limited_incoming(
        listener,
        gateway.limits.max_connections,
        gateway.limits.first_byte_timeout,
    );
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .add_service(gateway.into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Most concurrent gRPC streams on one agent connection (an agent uses one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 8;

/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTlsFiles {
    /// PEM certificate chain of the gateway (leaf first).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM bundle of the CA(s) whose client certificates are accepted. When set, every
    /// connection must present one (mTLS); `None` serves TLS without client certificates.
    pub client_ca: Option<PathBuf>,
}

/// Why the gateway's TLS files cannot be used.
#[derive(Debug, Error)]
pub enum GatewayTlsError {
    /// A TLS file cannot be read or does not hold what it should.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The files parse but do not make a TLS configuration (e.g. key and certificate differ).
    #[error("gateway TLS configuration rejected: {0}")]
    Config(String),
}

/// Loads and checks the gateway's TLS files: its identity, and the client CA that makes
/// client certificates required. The configuration is built once here so that a key that
/// does not match its certificate is reported now, not at the first handshake.
pub fn server_tls_config(files: &GatewayTlsFiles) -> Result<ServerTlsConfig, GatewayTlsError> {
    let cert = read_certificates("gateway.tls.cert", &files.cert)?;
    let key = read_private_key("gateway.tls.key", &files.key)?;
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &files.client_ca {
        let ca = read_certificates("gateway.tls.client_ca", ca)?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| GatewayTlsError::Config(error_chain(&e)))?;
    Ok(config)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_bus::{memory_bus, BusConsumer};
    use wattprint_core::{GpuUuid, InstanceId, Milliwatts, RegionId, TenantId};
    use wattprint_proto::v1::{Attribution, EnergySource};
    use wattprint_store::{GpuRecord, InstanceRecord};

    const NOW: i64 = 1_800_000_000_000;

    fn gateway(producer: Arc<dyn BusProducer>) -> Gateway {
        let inv = InventoryIndex::new(&[InstanceRecord {
            tenant: TenantId::from("t"),
            instance: InstanceId::from("i-1"),
            region: RegionId::from("R"),
            zip_code: None,
            gpus: vec![GpuRecord {
                uuid: GpuUuid::from("GPU-1"),
                model: "H100".into(),
                power_limit: Milliwatts(700_000),
                host: HostId::from("h"),
            }],
        }]);
        Gateway::new(producer, Arc::new(inv), GatewayLimits::default())
            .with_clock(|| UnixMillis(NOW))
    }

    fn wire(seq: u64, energy_mj: u64) -> Sample {
        Sample {
            gpu_uuid: "GPU-1".into(),
            instance_id: "i-1".into(),
            seq,
            start_unix_ms: NOW - 2000 + seq as i64,
            end_unix_ms: NOW - 1000 + seq as i64,
            energy_mj,
            power_mw: 300_000,
            power_max_mw: 300_000,
            util_gpu_pct: 50,
            mem_used_bytes: 0,
            temp_c: 40,
            sm_clock_mhz: 1000,
            chain_start: false,
            energy_source: EnergySource::Counter as i32,
            attribution: Attribution::Exclusive as i32,
        }
    }

    /// Batches started one after another reach the bus in that order before any is held,
    /// so a slow consumer gathers them into one write; each ack waits for its own batch.
    #[tokio::test]
    async fn started_batches_queue_in_order_and_ack_once_held() {
        let (p, mut c) = memory_bus(8);
        let g = gateway(Arc::new(p));
        let mut pending = Vec::new();
        for (batch_seq, seq) in [(1, 10), (2, 20), (3, 30)] {
            let batch = SampleBatch {
                host_id: "h".into(),
                batch_seq,
                samples: vec![wire(seq, 300_000)],
            };
            // Handing over does not wait for the consumer (which has not run yet).
            let started = tokio::time::timeout(Duration::from_secs(5), g.start_as(batch, None));
            pending.push(started.await.expect("start_as waited for the consumer"));
        }
        // Nothing is held yet: every ack is still waiting.
        let mut first = pending.remove(0);
        assert!(futures::poll!(&mut first).is_pending());
        let deliveries = c.next_batch(10, Duration::ZERO).await;
        let seqs: Vec<u64> = deliveries
            .iter()
            .map(|d| match &d.message {
                BusMessage::Samples(s) => s[0].seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [10, 20, 30]);
        let mut deliveries = deliveries.into_iter();
        deliveries.next().unwrap().commit();
        assert_eq!(first.await.unwrap().batch_seq, 1);
        let mut second = pending.remove(0);
        assert!(futures::poll!(&mut second).is_pending());
        for d in deliveries {
            d.commit();
        }
        assert_eq!(second.await.unwrap().batch_seq, 2);
        assert_eq!(pending.remove(0).await.unwrap().batch_seq, 3);
    }

    #[tokio::test]
    async fn bad_samples_are_refused_without_disturbing_good_ones() {
        let (p, mut c) = memory_bus(8);
        let g = gateway(Arc::new(p));
        let mut unknown = wire(3, 1);
        unknown.gpu_uuid = "GPU-9".into();
        let mut future = wire(4, 1);
        future.start_unix_ms = NOW + 3_599_000;
        future.end_unix_ms = NOW + 3_600_000;
        let mut wrong_instance = wire(6, 1);
        wrong_instance.instance_id = "i-2".into();
        let batch = SampleBatch {
            host_id: "h".into(),
            batch_seq: 9,
            samples: vec![
                wire(1, 300_000),
                wire(2, 5_000_000),
                unknown,
                future,
                wire(1, 300_000),
                wire(5, 1),
                wrong_instance,
            ],
        };
        let consumer = tokio::spawn(async move {
            let mut got = vec![];
            for _ in 0..2 {
                let d = c.next().await.unwrap();
                got.push(d.message.clone());
                d.commit();
            }
            got
        });
        let ack = g.handle(batch).await.unwrap();
        assert_eq!((ack.batch_seq, ack.accepted), (9, 2));
        let reasons: Vec<_> = ack
            .rejected
            .iter()
            .map(|r| (r.seq, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 5);
        assert!(
            reasons[0].1.starts_with("implied mean power 5000000 mW"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons[1].1,
            "GPU GPU-9 is not attached to instance i-1 on host h in the inventory"
        );
        assert!(reasons[2].1.contains("after the gateway's clock"));
        assert_eq!(
            reasons[3].1,
            "duplicate sequence number 1 for GPU GPU-1 within the batch"
        );
        // The refusal names only what the sender sent, never the GPU's real instance.
        assert_eq!(
            reasons[4].1,
            "GPU GPU-1 is not attached to instance i-2 on host h in the inventory"
        );
        let got = consumer.await.unwrap();
        let BusMessage::Samples(s) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(s.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 5]);
        let BusMessage::DeadLetters(d) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(d.len(), 5);
        assert!(d[1].payload.to_text().contains("\"gpu_uuid\":\"GPU-9\""));
    }

    #[tokio::test]
    async fn oversized_batches_and_bus_failures_are_errors_not_acks() {
        let (p, mut c) = memory_bus(1);
        let g = gateway(Arc::new(p));
        let consumer = tokio::spawn(async move {
            let d = c.next().await.unwrap();
            let message = d.message.clone();
            d.commit();
            (message, c)
        });
        let batch = SampleBatch {
            host_id: "h".into(),
            batch_seq: 1,
            samples: vec![wire(1, 1); 10_001],
        };
        let err = g.handle(batch).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("10001 samples"));
        // The refused batch is dead-lettered as one record, summarised.
        let (message, c) = consumer.await.unwrap();
        let BusMessage::DeadLetters(records) = message else {
            panic!("expected a dead letter, got {message:?}");
        };
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].reason, err.message());
        assert_eq!(
            records[0].payload,
            DeadLetterPayload::Text(r#"{"batch_seq":1,"samples":10001}"#.into())
        );
        drop(c);
        let batch = SampleBatch {
            host_id: "h".into(),
            batch_seq: 2,
            samples: vec![wire(1, 1)],
        };
        assert_eq!(
            g.handle(batch).await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
        let batch = SampleBatch {
            host_id: String::new(),
            batch_seq: 3,
            samples: vec![],
        };
        assert_eq!(
            g.handle(batch).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
