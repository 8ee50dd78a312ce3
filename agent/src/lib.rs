//! The Wattprint agent: reads every GPU of a host (NVML, or a replayed trace), turns energy
//! counter readings into self-contained samples attributed to instances, and streams them to
//! the ingest gateway over gRPC with acks, resending whatever was not acked after a reconnect.
//!
//! ```text
//! sensor ──(blocking thread: read, CounterChain)──▶ samples ──▶ batches ──gRPC──▶ gateway
//!                                                      ▲          │ fsync first
//!                                  backpressure (no spool)        ▼
//!                                                          spool (optional, on disk)
//! ```
//!
//! With [`AgentConfig::spool_dir`] set, every batch is made durable in the [`spool`] before it
//! is sent, and a restarted agent resends whatever the previous run had not got acked.
//!
//! Spans are measured on the monotonic clock and stamped with the wall clock; wall-clock
//! steps, stalls and restarts lose no energy the counter measured ([`clock`],
//! [`clock_state`]), and samples the gateway refuses for their time are retried ([`stream`]).

pub mod attribution;
pub mod clock;
pub mod clock_state;
pub mod config;
pub mod metadata;
pub mod metrics;
pub mod nvml;
pub mod replay;
pub mod resolver;
pub mod sampler;
pub mod sensor;
pub mod spool;
pub mod stream;
pub mod tls;

use attribution::AttributionMode;
use sampler::{attributed_gpus, sampling_loop, Cadence, SamplerStats};
use sensor::GpuSensor;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tracing::Instrument;
use wattprint_core::HostId;

/// How the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// This host's id, stamped on every batch.
    pub host_id: HostId,
    /// The ingest gateway, e.g. `http://127.0.0.1:50051`.
    pub gateway_url: String,
    /// How often each GPU's energy counter is read (default 1 s); each read makes a sample.
    /// Ignored by unpaced sensors (replay as fast as possible).
    pub energy_interval: Duration,
    /// How often each GPU's gauges (power, utilisation, temperature, SM clock) are read
    /// between energy reads (default 100 ms: H100 power changes every 100 ms). Each sample
    /// then carries its span's highest power and temperature and mean utilisation and clock.
    /// `None`, or not shorter than `energy_interval`: gauges are read with the energy only.
    pub gauge_interval: Option<Duration>,
    /// A batch is sent when it holds this many samples (default 256) …
    pub batch_max_samples: usize,
    /// … or this long after its first sample (default 1 s).
    pub batch_max_wait: Duration,
    /// At most this many batches wait for acks in memory (default 1024). Without a spool,
    /// sampling waits when it is full (backpressure) and nothing is dropped; with a spool,
    /// further batches wait on disk and sampling goes on.
    pub max_unacked_batches: usize,
    /// Longest delay between reconnect attempts (default 10 s).
    pub reconnect_backoff_max: Duration,
    /// Directory of the durable spool (default `None`). When set, batches are written and
    /// fsynced there before they are sent, survive kill -9 and reboots, and are resent by the
    /// next run; `max_unacked_batches` then bounds only the batches held in memory, and
    /// sampling never waits for acks (the spool's size bound applies instead). `None` keeps
    /// unacked batches in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may use on disk (default [`spool::DEFAULT_SPOOL_MAX_BYTES`],
    /// 256 MiB, at least [`spool::MIN_SPOOL_MAX_BYTES`]). When full, the oldest unacked
    /// batches are dropped and counted in [`AgentReport::samples_dropped`].
    pub spool_max_bytes: u64,
    /// How long samples the gateway refused for their time wait before they are sent again
    /// (default 30 s; see [`stream`]).
    pub time_refusal_retry: Duration,
    /// TLS to the gateway with a client certificate (default `None`: plaintext, for the
    /// embedded mode and localhost dev). Set exactly when `gateway_url` is `https://`.
    pub tls: Option<tls::AgentTlsFiles>,
    /// The host token sent on every stream (default `None`: none is sent, and a gateway with a
    /// host registry refuses the stream).
    pub host_token: Option<tls::HostToken>,
}

impl AgentConfig {
    /// The defaults for `host_id` streaming to `gateway_url`.
    pub fn new(host_id: HostId, gateway_url: impl Into<String>) -> Self {
        Self {
            host_id,
            gateway_url: gateway_url.into(),
            energy_interval: Duration::from_secs(1),
            gauge_interval: Some(Duration::from_millis(100)),
            batch_max_samples: 256,
            batch_max_wait: Duration::from_secs(1),
            max_unacked_batches: 1024,
            reconnect_backoff_max: Duration::from_secs(10),
            spool_dir: None,
            spool_max_bytes: spool::DEFAULT_SPOOL_MAX_BYTES,
            time_refusal_retry: Duration::from_secs(30),
            tls: None,
            host_token: None,
        }
    }

    /// Longest gap between two readings of a GPU that still makes one sample:
    /// 10 × the energy interval, at least 5 s. Longer gaps (a stalled sender, a restart) are
    /// bridged with the counter delta, flagged `counter_bridged` (see [`clock`]).
    pub fn max_gap(&self) -> Duration {
        (self.energy_interval * 10).max(Duration::from_secs(5))
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// Samples sent to the gateway (each counted once, however often it was resent).
    pub samples_sent: u64,
    /// Samples the gateway acked as accepted.
    pub samples_acked: u64,
    /// Samples the gateway rejected for good (each reason is logged).
    pub samples_rejected: u64,
    /// Refusals of samples for their time (a skewed clock on this host or the gateway): the
    /// samples are kept and retried (see [`stream`]); each refusal counts.
    pub samples_time_refused: u64,
    /// Batches sealed again from time-refused samples for a retry.
    pub time_retry_batches: u64,
    /// Batches sent again on a new stream because their ack had not arrived.
    pub batches_resent: u64,
    /// Gauge reads between energy reads (see [`AgentConfig::gauge_interval`]).
    pub gauge_reads: u64,
    /// Energy counters seen going backwards (driver reloads).
    pub counter_resets: u64,
    /// Gaps between readings too long to bridge ([`clock::MAX_BRIDGE_MS`]): the chain
    /// restarted without energy.
    pub gaps: u64,
    /// Gaps longer than [`AgentConfig::max_gap`] (stalls, restarts) bridged with the counter
    /// delta ([`wattprint_core::sample::EnergySource::CounterBridged`]).
    pub gaps_bridged: u64,
    /// Energy sent in bridged spans.
    pub energy_bridged_mj: u64,
    /// Steps of the host's wall clock seen (see [`clock`]).
    pub clock_steps: u64,
    /// Samples of unacked batches dropped because the spool was full (drop-oldest), or
    /// because their spool record could not be read back. Some may have reached the gateway
    /// before they were dropped.
    pub samples_dropped: u64,
    /// Unacked batches found in the spool at start (left by a previous run) and resent.
    pub batches_replayed: u64,
    /// Damaged spool records found at start (torn tails truncated, corrupt records skipped).
    pub spool_damaged_records: u64,
    /// Energy measured on shared GPUs that no instance could be named for (a MIG device not
    /// mapped, a vGPU host GPU with no VM), not sent; see [`attribution`].
    pub energy_unattributed_mj: u64,
    /// Times the gateway refused this agent's credentials (`UNAUTHENTICATED` or
    /// `PERMISSION_DENIED`: unknown host, wrong token, certificate of another host). Nothing
    /// is dropped for it: batches wait (in the spool) and the agent retries.
    pub auth_refusals: u64,
}

/// Why the agent could not run.
#[derive(Debug, Error)]
pub enum AgentError {
    /// A setting is out of range.
    #[error("invalid agent configuration: {0}")]
    InvalidConfig(String),
    /// The gateway URL does not parse.
    #[error("invalid gateway URL {url:?}: {message}")]
    InvalidGatewayUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        message: String,
    },
    /// The attribution maps none of the sensor's GPUs.
    #[error(
        "none of the {gpus} GPU(s) is mapped to an instance; add them to the GPU mapping file \
         (`wattprint agent --check` says why each is not)"
    )]
    NoMappedGpus {
        /// Number of GPUs the sensor has.
        gpus: usize,
    },
    /// The sampling thread panicked.
    #[error("the sampling thread failed: {0}")]
    SamplerFailed(String),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The TLS files or the host token cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Runs the agent until `shutdown` resolves, or (a finite replay) until the sensor is exhausted
/// and every batch is acked. On shutdown it stops sampling, flushes the partial batch, waits up
/// to [`stream::SHUTDOWN_ACK_WAIT`] for acks and returns. `attribution` is an
/// [`AttributionMode`], or a [`resolver::InstanceResolver`] for whole GPUs by mapping.
pub async fn run(
    config: AgentConfig,
    sensor: Box<dyn GpuSensor>,
    attribution: impl Into<AttributionMode>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<AgentReport, AgentError> {
    let attribution = attribution.into();
    validate(&config, sensor.unpaced())?;
    let stream_config = stream_config(&config, false)?;
    let span = tracing::info_span!("agent", host = %config.host_id);
    async move {
        let resumed = load_clock_state(&config);
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Above the previous run's epoch even if the wall clock went back across the restart:
        // sequence numbers must keep increasing.
        let run_epoch_secs = resumed
            .as_ref()
            .map_or(now_secs, |s| now_secs.max(s.run_epoch_secs + 1));
        let max_gap_ms = i64::try_from(config.max_gap().as_millis())
            .unwrap_or(i64::MAX)
            .saturating_mul(i64::from(sensor.time_scale()));
        let mut gpus = attributed_gpus(
            sensor.as_ref(),
            &attribution,
            &config.host_id,
            run_epoch_secs,
            max_gap_ms,
        );
        if let Some(state) = &resumed {
            resume_chains(&mut gpus, state);
        }
        let state_writer = config.spool_dir.clone().map(|dir| {
            let mut w = clock_state::StateWriter::new(dir, run_epoch_secs);
            if sensor.unpaced() {
                w = w.with_write_every(clock_state::UNPACED_WRITE_EVERY);
            }
            // A GPU not read yet keeps its old position until it is.
            for m in resumed.iter().flat_map(|s| &s.gpus) {
                w.set(&m.gpu, m.end, m.counter);
            }
            w
        });
        if gpus.is_empty() {
            return Err(AgentError::NoMappedGpus {
                gpus: sensor.gpus().len(),
            });
        }
        // Open (and recover) the spool before sampling starts: its unacked batches go first.
        let spool = open_spool(&config).await?;
        tracing::info!(
            gpus = gpus.len(),
            energy_interval = ?config.energy_interval,
            gauge_interval = ?config.gauge_interval,
            unpaced = sensor.unpaced(),
            gateway = %config.gateway_url,
            tls = config.tls.is_some(),
            host_token = config.host_token.is_some(),
            "agent starting"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(config.batch_max_samples.max(16));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stats = Arc::new(SamplerStats::default());
        let sampler_span = tracing::info_span!("sampler");
        let sampler = {
            let stats = Arc::clone(&stats);
            let cadence = Cadence {
                energy: config.energy_interval,
                gauges: config.gauge_interval,
            };
            tokio::task::spawn_blocking(move || {
                let _entered = sampler_span.entered();
                sampling_loop(sensor, gpus, cadence, tx, stop_rx, stats, state_writer);
            })
        };
        let stop = move || drop(stop_tx);
        let mut report = stream::stream_samples(stream_config, spool, rx, shutdown, stop).await;
        // The receiver is gone and the stop sender dropped: the sampler ends within one read.
        match tokio::time::timeout(Duration::from_secs(5), sampler).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(AgentError::SamplerFailed(e.to_string())),
            Err(_) => tracing::warn!("sampling thread did not stop within 5 s; leaving it"),
        }
        report.gauge_reads = stats.gauge_reads.load(Ordering::Relaxed);
        report.counter_resets = stats.counter_resets.load(Ordering::Relaxed);
        report.gaps = stats.gaps.load(Ordering::Relaxed);
        report.gaps_bridged = stats.bridges.load(Ordering::Relaxed);
        report.energy_bridged_mj = stats.bridged_mj.load(Ordering::Relaxed);
        report.clock_steps = stats.clock_steps.load(Ordering::Relaxed);
        report.energy_unattributed_mj = stats.unattributed_mj.load(Ordering::Relaxed);
        tracing::info!(?report, "agent stopped");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// The clock state a previous run left in the spool directory, if any (unreadable: logged,
/// and the agent starts without bridging the downtime).
fn load_clock_state(config: &AgentConfig) -> Option<clock_state::ClockState> {
    let dir = config.spool_dir.as_ref()?;
    match clock_state::ClockState::load(dir) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the clock state; the downtime will not be bridged");
            None
        }
    }
}

/// Resumes each GPU's counter chain where the previous run left it, so that its first reading
/// bridges the downtime.
fn resume_chains(gpus: &mut [sampler::SampledGpu], state: &clock_state::ClockState) {
    for gpu in gpus {
        if let Some(mark) = state.mark(gpu.sampler.gpu()) {
            tracing::info!(
                gpu = %mark.gpu,
                end = %mark.end,
                counter_mj = mark.counter.0,
                "resuming the counter chain of the previous run"
            );
            gpu.sampler.resume(mark.end, mark.counter);
        }
    }
}

/// Rejects settings the agent cannot run with (error messages name the setting).
fn validate(config: &AgentConfig, unpaced: bool) -> Result<(), AgentError> {
    if config.batch_max_samples == 0 {
        return Err(AgentError::InvalidConfig(
            "batch_max_samples must be at least 1".into(),
        ));
    }
    if config.max_unacked_batches == 0 {
        return Err(AgentError::InvalidConfig(
            "max_unacked_batches must be at least 1".into(),
        ));
    }
    if config.energy_interval.is_zero() && !unpaced {
        return Err(AgentError::InvalidConfig(
            "energy_interval must be positive".into(),
        ));
    }
    if config.gauge_interval.is_some_and(|g| g.is_zero()) {
        return Err(AgentError::InvalidConfig(
            "gauge_interval must be positive; leave it unset to read gauges with the energy only"
                .into(),
        ));
    }
    if config.time_refusal_retry.is_zero() {
        return Err(AgentError::InvalidConfig(
            "time_refusal_retry must be positive".into(),
        ));
    }
    if config.reconnect_backoff_max.is_zero() {
        return Err(AgentError::InvalidConfig(
            "reconnect_backoff_max must be positive".into(),
        ));
    }
    if config.spool_dir.is_some() && config.spool_max_bytes < spool::MIN_SPOOL_MAX_BYTES {
        return Err(AgentError::InvalidConfig(format!(
            "spool_max_bytes must be at least {}",
            spool::MIN_SPOOL_MAX_BYTES
        )));
    }
    Ok(())
}

/// The gateway endpoint with the agent's connection settings and, for https://, its TLS
/// settings: plaintext goes with http:// and TLS with https://, nothing else.
/// Streams samples made elsewhere (a replay's computed history) to the gateway with
/// `config`'s endpoint, TLS and host token, batching as the agent does but without a spool or
/// a sampler. Returns once `samples` is closed and every batch is acked, or after `shutdown`
/// (then unacked samples are not kept: the caller sends them again, under the same keys, so
/// the store counts the ones it already holds as duplicates).
pub async fn send_samples(
    config: &AgentConfig,
    samples: tokio::sync::mpsc::Receiver<wattprint_core::sample::EnergySample>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<AgentReport, AgentError> {
    let stream_config = stream_config(config, true)?;
    Ok(stream::stream_samples(stream_config, None, samples, shutdown, || {}).await)
}

/// How `config`'s agent streams: its gateway endpoint, TLS, host token and batching.
/// `backpressure_expected`: the samples come faster than the gateway acks (a computed history),
/// so waiting for acks is normal rather than worth a warning.
fn stream_config(
    config: &AgentConfig,
    backpressure_expected: bool,
) -> Result<stream::StreamConfig, AgentError> {
    Ok(stream::StreamConfig {
        host_id: config.host_id.clone(),
        endpoint: gateway_endpoint(config)?,
        batch_max_samples: config.batch_max_samples,
        batch_max_wait: config.batch_max_wait,
        max_unacked_batches: config.max_unacked_batches,
        reconnect_backoff_max: config.reconnect_backoff_max,
        shutdown_ack_wait: stream::SHUTDOWN_ACK_WAIT,
        time_refusal_retry: config.time_refusal_retry,
        auth: stream::StreamAuth::new(&config.host_id, config.host_token.as_ref())
            .map_err(AgentError::InvalidConfig)?,
        backpressure_expected,
    })
}

fn gateway_endpoint(config: &AgentConfig) -> Result<tonic::transport::Endpoint, AgentError> {
    let endpoint =
        stream::endpoint(&config.gateway_url).map_err(|e| AgentError::InvalidGatewayUrl {
            url: config.gateway_url.clone(),
            message: e.to_string(),
        })?;
    Ok(match (&config.tls, endpoint.uri().scheme_str()) {
        (Some(files), Some("https")) => tls::apply(endpoint, files)?,
        (None, Some("http")) => endpoint,
        (tls, scheme) => {
            let message = match (tls, scheme) {
                (Some(_), _) => "TLS is configured (agent.tls): the gateway URL must be https://",
                (None, Some("https")) => {
                    "an https:// gateway needs agent.tls (CA, client certificate and key); \
                     plaintext is http://"
                }
                _ => "the gateway URL must be http:// (plaintext) or https:// (TLS)",
            };
            return Err(AgentError::InvalidGatewayUrl {
                url: config.gateway_url.clone(),
                message: message.into(),
            });
        }
    })
}

/// Opens (and recovers) the configured spool on a blocking thread; `None` without one.
async fn open_spool(
    config: &AgentConfig,
) -> Result<Option<(spool::Spool, spool::Recovery)>, AgentError> {
    Ok(match config.spool_dir.clone() {
        Some(dir) => {
            let limits = spool::SpoolLimits::new(config.spool_max_bytes);
            let opened =
                tokio::task::spawn_blocking(move || spool::Spool::open(&dir, limits)).await;
            match opened {
                Ok(Ok(opened)) => Some(opened),
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(AgentError::Spool(spool::SpoolError::Worker {
                        path: config.spool_dir.clone().unwrap_or_default(),
                        message: e.to_string(),
                    }))
                }
            }
        }
        None => None,
    })
}
