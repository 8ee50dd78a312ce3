//! Batching samples and streaming them to the gateway, at least once.
//!
//! Samples are cut into batches (at `batch_max_samples`, or `batch_max_wait` after a batch's
//! first sample) numbered by `batch_seq`. Every batch stays in the unacked queue until the
//! gateway's `BatchAck` for it arrives. When the stream fails or closes, the agent reconnects
//! with exponential backoff and resends every unacked batch, in order; the gateway recognises
//! redelivered samples by `(gpu_uuid, seq)`. While the unacked queue is full, no samples are
//! taken from the sampler, which then waits: nothing is dropped.
//!
//! With a [`Spool`], each sealed batch is appended and fsynced to disk *before* it is sent, and
//! its ack is recorded there. The unacked queue in memory is then only a window onto the
//! spool: at most `max_unacked_batches` spooled batches are held in memory; newer ones stay on
//! disk only (the backlog) and are read back, in order, as acks make room. Sampling never
//! waits for acks; the spool's size bound (drop-oldest) limits what an outage can hold. At
//! start, the batches a previous run left unacked are the head of the backlog, so they are
//! resent first, in their original order. If the disk fails, a batch is kept in memory only
//! (logged), and such memory-only batches are bounded by backpressure as without a spool.
//!
//! Samples the gateway refuses for their time (in its future, or too old: a clock skewed on
//! the host or the gateway) are kept and sent again every `time_refusal_retry` until it
//! accepts them ([`Outbox`]); with a spool, the batch they came from stays unacked in the
//! spool until they are spooled again, so a restart meanwhile loses none of them.
//!
//! Every stream carries the host id (`x-wattprint-host-id`) and, when configured, the host
//! token (`authorization: Bearer …`). A gateway that refuses them (`UNAUTHENTICATED`: unknown
//! host or wrong token; `PERMISSION_DENIED`: a client certificate or batch of another host)
//! reports a configuration error, not an outage: the agent logs it as an error, counts it
//! ([`AgentReport::auth_refusals`]), keeps every batch (in the spool, or in memory with
//! backpressure) and retries at the longest backoff, so that it resumes by itself once an
//! operator has fixed the registry, and a restarted agent with fixed settings resends all.

mod auth;
mod outbox;
mod spooler;

pub use auth::{is_auth_refusal, is_tls_refusal, StreamAuth};
pub use outbox::Outbox;

use crate::metrics::AGENT;
use crate::spool::{Recovery, Spool};
use crate::tls::error_chain;
use crate::AgentReport;
use auth::{credentials_refused, refusal_reason};
use futures::future::BoxFuture;
use spooler::{sealed_batch, Spooler};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Streaming};
use tracing::Instrument;
use wattprint_core::sample::EnergySample;
use wattprint_core::HostId;
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{BatchAck, SampleBatch};

/// First reconnect delay; doubled after each failure up to the configured maximum.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// How long the agent waits for outstanding acks after shutdown is requested.
pub const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(5);

/// Settings of the streaming side of the agent.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Host id stamped on every batch.
    pub host_id: HostId,
    /// The gateway, already parsed.
    pub endpoint: Endpoint,
    /// A batch is sealed when it holds this many samples.
    pub batch_max_samples: usize,
    /// … or this long after its first sample.
    pub batch_max_wait: Duration,
    /// At most this many batches wait for acks; then sampling waits.
    pub max_unacked_batches: usize,
    /// Longest delay between reconnect attempts.
    pub reconnect_backoff_max: Duration,
    /// How long to wait for acks after shutdown.
    pub shutdown_ack_wait: Duration,
    /// How long time-refused samples wait before they are sent again.
    pub time_refusal_retry: Duration,
    /// The credentials sent on every stream.
    pub auth: StreamAuth,
    /// The producer fills the unacked queue on purpose (a computed history sent as fast as
    /// acks allow): a full queue is then logged at debug level, not as a warning.
    pub backpressure_expected: bool,
}

/// Parses a gateway URL into an endpoint with the agent's connection settings.
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Where batches go on an open stream.
type Sender = mpsc::UnboundedSender<SampleBatch>;

type Opened = Result<Box<Streaming<BatchAck>>, Box<tonic::Status>>;

/// The connection to the gateway.
enum Conn {
    /// Not connected; try again at `retry_at`.
    Down { retry_at: Instant },
    /// Opening the HTTP/2 connection.
    Connecting(BoxFuture<'static, Result<Channel, tonic::transport::Error>>),
    /// Connected; the stream call is waiting for the gateway's response headers. Batches
    /// already go out on `tx`.
    Opening {
        tx: mpsc::UnboundedSender<SampleBatch>,
        opened: BoxFuture<'static, Opened>,
    },
    /// Streaming: batches go out on `tx`, acks come in on `acks`.
    Up {
        tx: mpsc::UnboundedSender<SampleBatch>,
        acks: Box<Streaming<BatchAck>>,
    },
}

enum ConnEvent {
    RetryDue,
    Connected(Result<Channel, tonic::transport::Error>),
    Opened(Opened),
    Ack(Result<Option<BatchAck>, tonic::Status>),
}

impl Conn {
    /// Waits for the connection's next event. Cancel-safe: every future it awaits survives
    /// being dropped midway (boxed futures are polled by reference, `message` is cancel-safe).
    async fn next_event(&mut self) -> ConnEvent {
        match self {
            Conn::Down { retry_at } => {
                tokio::time::sleep_until(*retry_at).await;
                ConnEvent::RetryDue
            }
            Conn::Connecting(fut) => ConnEvent::Connected(fut.as_mut().await),
            Conn::Opening { opened, .. } => ConnEvent::Opened(opened.as_mut().await),
            Conn::Up { acks, .. } => ConnEvent::Ack(acks.message().await),
        }
    }

    fn sender(&self) -> Option<&mpsc::UnboundedSender<SampleBatch>> {
        match self {
            Conn::Opening { tx, .. } | Conn::Up { tx, .. } => Some(tx),
            _ => None,
        }
    }
}

/// Streams samples from `samples` to the gateway until the channel closes and every batch is
/// acked, or until `shutdown` resolves (then: `on_shutdown` is called to stop sampling, the
/// remaining samples and the partial batch are flushed, and acks are awaited for at most
/// `shutdown_ack_wait`). With `spool` (opened, with what its recovery found), batches are made
/// durable before they are sent and the spool's unacked batches are resent first. Returns the
/// streaming counts.
pub async fn stream_samples(
    config: StreamConfig,
    spool: Option<(Spool, Recovery)>,
    mut samples: mpsc::Receiver<EnergySample>,
    shutdown: impl Future<Output = ()> + Send,
    on_shutdown: impl FnOnce() + Send,
) -> AgentReport {
    let span =
        tracing::info_span!("stream", host = %config.host_id, gateway = %config.endpoint.uri());
    async move {
        let mut outbox = Outbox::new(&config.host_id, config.batch_max_samples);
        let max_unacked = config.max_unacked_batches.max(1);
        let mut backoff = INITIAL_BACKOFF.min(config.reconnect_backoff_max);
        let mut conn = connect(&config.endpoint);
        let mut spooler = spool.map(|(spool, recovery)| Spooler::start(spool, &recovery, &mut outbox));
        if let Some(sp) = spooler.as_mut() {
            sp.refill(&mut outbox, conn.sender().cloned(), max_unacked).await;
        }
        let mut sampler_done = false;
        let mut on_shutdown = Some(on_shutdown);
        let mut deadline: Option<Instant> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backpressure_logged = false;
        let mut retry_at: Option<Instant> = None;
        loop {
            let backlog = spooler.as_ref().map_or(0, |sp| sp.backlog.len());
            let waiting = outbox.time_refused();
            if sampler_done && outbox.open_samples() == 0 && outbox.unacked() == 0 && backlog == 0 && waiting == 0 {
                tracing::info!("every sample is acked");
                break;
            }
            // Only batches that are not in the spool hold sampling back.
            let room = outbox.memory_only() < max_unacked;
            if !room && !backpressure_logged {
                if config.backpressure_expected {
                    tracing::debug!(unacked_batches = outbox.unacked(), "unacked queue full; sending waits");
                } else {
                    tracing::warn!(unacked_batches = outbox.unacked(), "unacked queue full; sampling waits");
                }
                backpressure_logged = true;
            } else if room {
                backpressure_logged = false;
            }
            let seal_at = outbox.seal_due(config.batch_max_wait).filter(|_| room);
            if waiting > 0 && retry_at.is_none() {
                retry_at = Some(Instant::now() + config.time_refusal_retry);
            }
            tokio::select! {
                () = &mut shutdown, if deadline.is_none() => {
                    tracing::info!("shutdown requested: stopping sampling, flushing");
                    if let Some(stop) = on_shutdown.take() {
                        stop();
                    }
                    deadline = Some(Instant::now() + config.shutdown_ack_wait);
                }
                () = sleep_until_opt(deadline) => {
                    tracing::warn!(
                        unacked_batches = outbox.unacked() + backlog,
                        unacked_samples = outbox.unacked_samples() + outbox.open_samples(),
                        time_refused_waiting = outbox.time_refused(),
                        spooled = spooler.is_some(),
                        "shutdown: gave up waiting for acks"
                    );
                    break;
                }
                event = conn.next_event() => {
                    on_conn_event(event, &mut conn, &mut outbox, spooler.as_mut(), &mut backoff, &config, backlog).await;
                }
                sample = samples.recv(), if room && !sampler_done => {
                    let sealed = match sample {
                        Some(sample) => outbox.push(&sample),
                        None => {
                            tracing::debug!("sampling has ended; flushing the partial batch");
                            sampler_done = true;
                            outbox.seal()
                        }
                    };
                    if let Some(batch_seq) = sealed {
                        sealed_batch(conn.sender().cloned(), &mut outbox, spooler.as_mut(), batch_seq, max_unacked).await;
                    }
                }
                () = sleep_until_opt(retry_at.filter(|_| room)) => {
                    retry_at = None;
                    retry_time_refused(conn.sender().cloned(), &mut outbox, spooler.as_mut(), max_unacked).await;
                }
                () = sleep_until_opt(seal_at) => {
                    if let Some(batch_seq) = outbox.seal() {
                        sealed_batch(conn.sender().cloned(), &mut outbox, spooler.as_mut(), batch_seq, max_unacked).await;
                    }
                }
            }
        }
        if let Some(sp) = spooler {
            if let Err(e) = sp.spool.call(|s| s.sync()).await {
                tracing::warn!(error = %e, "cannot fsync the spool's last acks; those batches will be resent");
            }
        }
        outbox.report().clone()
    }
    .instrument(span)
    .await
}

/// Handles one event of the connection: reconnects, opens the stream, applies acks (and
/// records them in the spool, refilling the window), backs off on failures.
async fn on_conn_event(
    event: ConnEvent,
    conn: &mut Conn,
    outbox: &mut Outbox,
    spooler: Option<&mut Spooler>,
    backoff: &mut Duration,
    config: &StreamConfig,
    backlog: usize,
) {
    let max_unacked = config.max_unacked_batches.max(1);
    match event {
        ConnEvent::RetryDue => *conn = connect(&config.endpoint),
        ConnEvent::Connected(Ok(channel)) => {
            *conn = open(channel, outbox, &config.auth);
        }
        ConnEvent::Connected(Err(e)) if is_tls_refusal(&error_chain(&e)) => {
            *conn = refused(
                None,
                &error_chain(&e),
                outbox,
                backoff,
                config.reconnect_backoff_max,
                backlog,
            );
        }
        ConnEvent::Connected(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), retry_in = ?backoff, "cannot connect to gateway");
            AGENT.stream_error(error_kind(&error_chain(&e), "connect"));
            *conn = down(backoff, config.reconnect_backoff_max);
        }
        ConnEvent::Opened(Ok(response)) => {
            if let Conn::Opening { tx, .. } = std::mem::replace(
                conn,
                Conn::Down {
                    retry_at: Instant::now(),
                },
            ) {
                tracing::info!(
                    unacked_batches = outbox.unacked(),
                    backlog,
                    "stream to gateway open"
                );
                *conn = Conn::Up { tx, acks: response };
                AGENT.set_connected(true);
            }
        }
        ConnEvent::Opened(Err(status)) if credentials_refused(&status) => {
            *conn = refused(
                Some(status.code()),
                &refusal_reason(&status),
                outbox,
                backoff,
                config.reconnect_backoff_max,
                backlog,
            );
        }
        ConnEvent::Opened(Err(status)) => {
            tracing::warn!(code = ?status.code(), message = %status.message(), error = %error_chain(&status), retry_in = ?backoff, "gateway refused the stream");
            AGENT.stream_error(error_kind(&error_chain(&status), "reset"));
            *conn = down(backoff, config.reconnect_backoff_max);
        }
        ConnEvent::Ack(Ok(Some(ack))) => {
            if outbox.ack(&ack) {
                *backoff = INITIAL_BACKOFF.min(config.reconnect_backoff_max);
                if let Some(sp) = spooler {
                    if !outbox.spool_ack_deferred(ack.batch_seq) {
                        sp.acked(ack.batch_seq).await;
                    }
                    sp.refill(outbox, conn.sender().cloned(), max_unacked).await;
                }
            }
        }
        ConnEvent::Ack(Ok(None)) => {
            tracing::warn!(unacked_batches = outbox.unacked(), retry_in = ?backoff, "gateway closed the stream");
            AGENT.stream_error("reset");
            AGENT.set_connected(false);
            *conn = down(backoff, config.reconnect_backoff_max);
        }
        ConnEvent::Ack(Err(status)) if credentials_refused(&status) => {
            *conn = refused(
                Some(status.code()),
                &refusal_reason(&status),
                outbox,
                backoff,
                config.reconnect_backoff_max,
                backlog,
            );
        }
        ConnEvent::Ack(Err(status)) => {
            tracing::warn!(code = ?status.code(), message = %status.message(), error = %error_chain(&status), unacked_batches = outbox.unacked(), retry_in = ?backoff, "stream to gateway failed");
            AGENT.stream_error(error_kind(&error_chain(&status), "reset"));
            AGENT.set_connected(false);
            *conn = down(backoff, config.reconnect_backoff_max);
        }
    }
}

/// Seals the time-refused samples into new batches and sends them (spooled first); then the
/// spooled batches they came from can be acked in the spool.
async fn retry_time_refused(
    tx: Option<Sender>,
    outbox: &mut Outbox,
    mut spooler: Option<&mut Spooler>,
    max_unacked: usize,
) {
    let samples = outbox.time_refused();
    let (sealed, deferred) = outbox.requeue_time_refused();
    tracing::info!(
        samples,
        batches = sealed.len(),
        "retrying samples the gateway refused for their time"
    );
    for batch_seq in sealed {
        sealed_batch(
            tx.clone(),
            outbox,
            spooler.as_deref_mut(),
            batch_seq,
            max_unacked,
        )
        .await;
    }
    if let Some(sp) = spooler {
        for batch_seq in deferred {
            sp.acked(batch_seq).await;
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `timeout` when the error says so, else `otherwise` (the stream-error label).
fn error_kind(chain: &str, otherwise: &'static str) -> &'static str {
    if chain.contains("timed out") || chain.contains("deadline") {
        "timeout"
    } else {
        otherwise
    }
}

fn connect(endpoint: &Endpoint) -> Conn {
    let endpoint = endpoint.clone();
    Conn::Connecting(Box::pin(async move { endpoint.connect().await }))
}

/// The gateway refused the agent's credentials (`code`: the gRPC status, `None` for a TLS
/// handshake refusal): log it as the configuration error it is, count it, and retry at the
/// longest backoff. Nothing is dropped.
fn refused(
    code: Option<Code>,
    reason: &str,
    outbox: &mut Outbox,
    backoff: &mut Duration,
    max: Duration,
    backlog: usize,
) -> Conn {
    outbox.report.auth_refusals += 1;
    AGENT.stream_error("auth");
    AGENT.set_connected(false);
    tracing::error!(
        ?code,
        %reason,
        unacked_batches = outbox.unacked() + backlog,
        retry_in = ?max,
        "the gateway refused this agent's credentials: check agent.host_id, the host token, \
         agent.tls and the client certificate against the gateway's host registry and CA; \
         nothing is dropped, batches wait and the agent keeps retrying"
    );
    *backoff = max;
    Conn::Down {
        retry_at: Instant::now() + max,
    }
}

/// Starts the stream on a fresh channel and queues every unacked batch on it, in order.
fn open(channel: Channel, outbox: &mut Outbox, auth: &StreamAuth) -> Conn {
    let (tx, rx) = mpsc::unbounded_channel();
    let resend = outbox.all_for_resend();
    if !resend.is_empty() {
        tracing::info!(
            batches = resend.len(),
            "sending unacked batches on the new stream"
        );
    }
    for batch in resend {
        // The receiver is alive until `opened` is dropped.
        let _ = tx.send(batch);
    }
    let mut client = IngestClient::new(channel);
    let mut requests = Request::new(UnboundedReceiverStream::new(rx));
    auth.apply(requests.metadata_mut());
    Conn::Opening {
        tx,
        opened: Box::pin(async move {
            match client.stream_samples(requests).await {
                Ok(response) => Ok(Box::new(response.into_inner())),
                Err(status) => Err(Box::new(status)),
            }
        }),
    }
}

/// Sends a newly sealed batch if a stream is open; otherwise it waits for the next one.
fn send(tx: Option<&Sender>, outbox: &mut Outbox, batch_seq: u64) {
    if let Some(tx) = tx {
        if let Some(batch) = outbox.take_for_send(batch_seq) {
            // A closed stream shows up as an error on the ack side, which reconnects and
            // resends from the unacked queue.
            let _ = tx.send(batch);
        }
    }
}

fn down(backoff: &mut Duration, max: Duration) -> Conn {
    let retry_at = Instant::now() + *backoff;
    *backoff = (*backoff * 2).min(max);
    Conn::Down { retry_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::sample::{Attribution, EnergySource};
    use wattprint_core::{GpuUuid, InstanceId, Millijoules, Milliwatts, UnixMillis};
    use wattprint_proto::v1::Rejection;

    fn sample(seq: u64) -> EnergySample {
        EnergySample {
            host: HostId::from("h"),
            gpu: GpuUuid::from("GPU-1"),
            instance: InstanceId::from("i"),
            seq,
            start: UnixMillis(0),
            end: UnixMillis(1),
            energy: Millijoules(1),
            power: Milliwatts(1),
            power_max: Milliwatts(1),
            util_gpu_pct: 0,
            mem_used_bytes: 0,
            temp_c: 0,
            sm_clock_mhz: 0,
            chain_start: false,
            energy_source: EnergySource::Counter,
            attribution: Attribution::Exclusive,
        }
    }

    #[tokio::test]
    async fn batches_seal_at_the_size_limit_and_acks_remove_them_in_any_order() {
        let mut o = Outbox::new(&HostId::from("h"), 2);
        assert_eq!(o.push(&sample(1)), None);
        assert_eq!(o.push(&sample(2)), Some(1));
        assert_eq!(o.push(&sample(3)), None);
        assert_eq!(o.seal(), Some(2));
        assert_eq!(o.seal(), None);
        assert_eq!(o.unacked(), 2);
        // Batch 1 is sent, batch 2 is not yet: a new stream resends 1 and sends 2.
        assert!(o.take_for_send(1).is_some());
        let all = o.all_for_resend();
        assert_eq!(
            all.iter().map(|b| b.batch_seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!((o.report().batches_resent, o.report().samples_sent), (1, 3));
        let rejected = vec![Rejection {
            gpu_uuid: "GPU-1".into(),
            seq: 3,
            reason: "bad".into(),
        }];
        assert!(o.ack(&BatchAck {
            batch_seq: 2,
            accepted: 0,
            rejected
        }));
        assert!(!o.ack(&BatchAck {
            batch_seq: 2,
            accepted: 0,
            rejected: vec![]
        }));
        assert!(o.ack(&BatchAck {
            batch_seq: 1,
            accepted: 2,
            rejected: vec![]
        }));
        assert_eq!(o.unacked(), 0);
        assert_eq!(
            (o.report().samples_acked, o.report().samples_rejected),
            (2, 1)
        );
    }

    #[tokio::test]
    async fn time_refusals_are_kept_and_sealed_again_other_refusals_are_final() {
        use wattprint_core::sample::SampleRejection as R;
        let end = UnixMillis(1);
        for time in [
            R::InFuture {
                end,
                ahead_ms: 400_000,
                max_ms: 300_000,
            },
            R::TooOld { end, max_age_ms: 1 },
        ] {
            assert!(outbox::is_time_refusal(&time.to_string()), "{time}");
        }
        for other in [
            R::NonPositiveSpan { start: end, end },
            R::SpanTooLong {
                span_ms: 2,
                max_ms: 1,
            },
            R::EnergyAbsurd {
                implied_mw: 1,
                span_ms: 1,
                limit_mw: 1,
            },
            R::UtilisationAbsurd(101),
            R::NotAttached {
                gpu: GpuUuid::from("g"),
                instance: InstanceId::from("i"),
                host: HostId::from("h"),
            },
            R::Malformed("bad enum".into()),
        ] {
            assert!(!outbox::is_time_refusal(&other.to_string()), "{other}");
        }
        let mut o = Outbox::new(&HostId::from("h"), 10);
        for seq in 1..=3 {
            o.push(&sample(seq));
        }
        assert_eq!(o.seal(), Some(1));
        assert!(o.take_for_send(1).is_some());
        let future = R::InFuture {
            end,
            ahead_ms: 400_000,
            max_ms: 300_000,
        };
        let rejected = vec![
            Rejection {
                gpu_uuid: "GPU-1".into(),
                seq: 1,
                reason: future.to_string(),
            },
            Rejection {
                gpu_uuid: "GPU-1".into(),
                seq: 2,
                reason: "malformed sample: x".into(),
            },
        ];
        assert!(o.ack(&BatchAck {
            batch_seq: 1,
            accepted: 1,
            rejected
        }));
        assert_eq!((o.unacked(), o.time_refused()), (0, 1));
        let r = o.report();
        assert_eq!(
            (r.samples_acked, r.samples_rejected, r.samples_time_refused),
            (1, 1, 1)
        );
        let (sealed, deferred) = o.requeue_time_refused();
        assert_eq!((sealed, deferred), (vec![2], vec![]));
        let again = o.batch(2).expect("retry batch");
        assert_eq!(
            again.samples,
            vec![wattprint_proto::sample_to_wire(&sample(1))]
        );
        assert_eq!((o.time_refused(), o.report().time_retry_batches), (0, 1));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = INITIAL_BACKOFF;
        let max = Duration::from_millis(500);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let _ = down(&mut b, max);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, vec![200, 400, 500, 500, 500]);
    }
}
