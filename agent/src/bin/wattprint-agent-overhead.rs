//! Overhead benchmark: runs the real agent (sampler, batching, durable spool, gRPC stream) in
//! real time and reports its CPU use (% of one core) and memory (RSS), measured from
//! `/proc/self` over a steady window after a warm-up.
//!
//! ```text
//! wattprint-agent-overhead [--sensor replay|nvml] [--gpus N] [--energy-ms MS] [--gauge-ms MS]
//!                          [--seconds S] [--warmup-seconds S] [--gateway URL] [--no-spool]
//! ```
//!
//! - `--sensor replay` (default): the real H100 trace (`data/h100-trace/`, or `--trace FILE`)
//!   replayed in real time as `--gpus` GPUs (default 8). `--sensor nvml`: every GPU NVML
//!   sees, each mapped to an instance of its own.
//! - `--energy-ms` (default 1000): how often every GPU's energy counter is read (one sample
//!   per GPU per read is streamed); `--gauge-ms` (default 100): how often its power,
//!   utilisation, temperature and clock are read in between (0: with the energy only). The
//!   defaults are the agent's: power at 10 Hz, energy at 1 Hz.
//! - Without `--gateway`, the agent streams to a sink gateway (the real `Ingest` protocol,
//!   acking every batch) that runs in a child process of this binary, so that the figures are
//!   the agent's alone.
//! - The spool is on (in a temporary directory) unless `--no-spool`: every batch is fsynced.
//! - `--metrics ADDR`: the agent's metrics listener on `ADDR` (as `agent.metrics_listen`),
//!   scraped every 15 s from inside this process, so the figures include serving `/metrics`.
//!
//! CPU is `utime + stime` of this process (all threads, including exited ones) over wall time,
//! from `/proc/self/stat`; RSS is `VmRSS` sampled every second, and `VmHWM` the peak, from
//! `/proc/self/status`. Linux only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use wattprint_agent::replay::{Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sensor::GpuSensor;
use wattprint_agent::{run, AgentConfig};
use wattprint_core::{HostId, InstanceId};
use wattprint_proto::v1::ingest_server::{Ingest, IngestServer};
use wattprint_proto::v1::{BatchAck, SampleBatch};

const USAGE: &str = "usage: wattprint-agent-overhead [--sensor replay|nvml] [--gpus N] \
    [--energy-ms MS] [--gauge-ms MS] [--seconds S] [--warmup-seconds S] [--gateway URL] [--trace FILE] \
    [--no-spool] [--metrics ADDR]   |   wattprint-agent-overhead sink";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("sink") {
        sink()
    } else {
        Options::parse(&args).and_then(bench)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wattprint-agent-overhead: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Options {
    nvml: bool,
    gpus: u32,
    energy: Duration,
    gauges: Option<Duration>,
    seconds: u64,
    warmup: u64,
    gateway: Option<String>,
    trace: PathBuf,
    spool: bool,
    metrics: Option<SocketAddr>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Options {
            nvml: false,
            gpus: 8,
            energy: Duration::from_secs(1),
            gauges: Some(Duration::from_millis(100)),
            seconds: 60,
            warmup: 5,
            gateway: None,
            trace: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../data/h100-trace/h100_power_trace_50ms.csv"
            )),
            spool: true,
            metrics: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
            };
            let number = |v: String| {
                v.parse::<u64>()
                    .map_err(|e| format!("{flag} {v:?}: {e}; {USAGE}"))
            };
            match flag.as_str() {
                "--sensor" => {
                    o.nvml = match value()?.as_str() {
                        "replay" => false,
                        "nvml" => true,
                        other => return Err(format!("--sensor {other:?}; {USAGE}")),
                    }
                }
                "--gpus" => o.gpus = u32::try_from(number(value()?)?).map_err(|e| e.to_string())?,
                "--energy-ms" => o.energy = Duration::from_millis(number(value()?)?),
                "--gauge-ms" => {
                    o.gauges = Some(number(value()?)?)
                        .filter(|&ms| ms > 0)
                        .map(Duration::from_millis)
                }
                "--seconds" => o.seconds = number(value()?)?,
                "--warmup-seconds" => o.warmup = number(value()?)?,
                "--gateway" => o.gateway = Some(value()?),
                "--trace" => o.trace = PathBuf::from(value()?),
                "--no-spool" => o.spool = false,
                "--metrics" => {
                    let v = value()?;
                    o.metrics = Some(v.parse().map_err(|e| format!("--metrics {v:?}: {e}"))?);
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}; {USAGE}")),
            }
        }
        if o.gpus == 0 || o.seconds == 0 || o.energy < Duration::from_millis(10) {
            return Err(format!(
                "--gpus and --seconds must be positive, --energy-ms at least 10; {USAGE}"
            ));
        }
        Ok(o)
    }
}

/// CPU time and memory of this process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn usage() -> Result<Usage, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc/self/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "unreadable /proc/self/stat".to_owned())
    };
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let kib = |key: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {key} in /proc/self/status"))
    };
    Ok(Usage {
        cpu_ticks: tick(11)? + tick(12)?,
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux where it cannot be asked).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn bench(o: Options) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The sink gateway in a child process (its CPU is not ours).
    let (child, url) = gateway(&o)?;
    let (sensor, resolver) = bench_sensor(&o)?;
    let gpus = sensor.gpus().len();
    let spool_dir = o.spool.then(|| {
        std::env::temp_dir().join(format!("wattprint-overhead-spool-{}", std::process::id()))
    });
    let mut config = AgentConfig::new(HostId::from("overhead-bench"), url.clone());
    config.energy_interval = o.energy;
    config.gauge_interval = o.gauges;
    config.spool_dir = spool_dir.clone();
    let ticks_per_s = clock_ticks();
    let total = Duration::from_secs(o.warmup + o.seconds);
    println!(
        "agent overhead: sensor={} gpus={gpus} energy every {:?}, gauges every {:?} per GPU \
         spool={} gateway={} warm-up {} s, measured {} s",
        if o.nvml { "nvml" } else { "replay" },
        o.energy,
        o.gauges,
        spool_dir
            .as_ref()
            .map_or_else(|| "off".to_owned(), |d| d.display().to_string()),
        if o.gateway.is_some() {
            &url
        } else {
            "sink (child process)"
        },
        o.warmup,
        o.seconds
    );
    let result = runtime.block_on(async {
        if let Some(addr) = o.metrics {
            start_metrics(addr).await?;
        }
        let monitor = tokio::spawn(monitor(Duration::from_secs(o.warmup), total));
        let report = run(config, sensor, resolver, tokio::time::sleep(total))
            .await
            .map_err(|e| e.to_string())?;
        let window = monitor.await.map_err(|e| e.to_string())??;
        Ok::<_, String>((report, window))
    });
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(dir) = &spool_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let (report, w) = result?;
    let cpu_s = w.cpu_ticks as f64 / ticks_per_s as f64;
    let wall_s = w.wall.as_secs_f64();
    let mut rss = w.rss_kib.clone();
    rss.sort_unstable();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let median = rss.get(rss.len() / 2).copied().unwrap_or(0);
    println!(
        "cpu: {:.2} % of one core ({cpu_s:.2} s of CPU over {wall_s:.1} s)",
        100.0 * cpu_s / wall_s
    );
    println!(
        "rss: steady median {:.1} MiB, min {:.1}, max {:.1} (sampled every second); peak VmHWM \
         {:.1} MiB",
        mib(median),
        mib(rss.first().copied().unwrap_or(0)),
        mib(rss.last().copied().unwrap_or(0)),
        mib(w.hwm_kib)
    );
    println!(
        "streamed: {} samples acked ({:.1}/s over the whole run), {} rejected, {} dropped; \
         {} gauge reads ({:.1}/s)",
        report.samples_acked,
        report.samples_acked as f64 / total.as_secs_f64(),
        report.samples_rejected,
        report.samples_dropped,
        report.gauge_reads,
        report.gauge_reads as f64 / total.as_secs_f64()
    );
    println!(
        "{{\"sensor\":\"{}\",\"gpus\":{gpus},\"energy_ms\":{},\"gauge_ms\":{},\
         \"seconds\":{wall_s:.1},\"cpu_percent\":{:.3},\"rss_median_mib\":{:.2},\
         \"rss_max_mib\":{:.2},\"vm_hwm_mib\":{:.2},\"samples_acked\":{},\"gauge_reads\":{}}}",
        if o.nvml { "nvml" } else { "replay" },
        o.energy.as_millis(),
        o.gauges.map_or(0, |g| g.as_millis()),
        100.0 * cpu_s / wall_s,
        mib(median),
        mib(rss.last().copied().unwrap_or(0)),
        mib(w.hwm_kib),
        report.samples_acked,
        report.gauge_reads
    );
    Ok(())
}

/// The gateway to stream to: `--gateway`, or a sink gateway started as a child process (the
/// child is returned so that it can be stopped).
fn gateway(o: &Options) -> Result<(Option<Child>, String), String> {
    let mut child = None;
    let url = match &o.gateway {
        Some(url) => url.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut c = Command::new(exe)
                .arg("sink")
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting the sink gateway: {e}"))?;
            let mut line = String::new();
            let out = c.stdout.take().ok_or("sink has no stdout")?;
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                .map_err(|e| e.to_string())?;
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .ok_or_else(|| format!("unexpected sink output {line:?}"))?
                .to_owned();
            child = Some(c);
            format!("http://{addr}")
        }
    };
    Ok((child, url))
}

/// The sensor to measure with (NVML, or the replay trace in real time), every GPU mapped to
/// a bench instance.
/// The agent's metrics listener on `addr`, scraped every 15 s (as Prometheus would).
async fn start_metrics(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    wattprint_runtime::metrics::init("agent", None).map_err(|e| e.to_string())?;
    let stop = wattprint_runtime::Shutdown::new();
    let readiness = wattprint_runtime::metrics::Readiness::new();
    let bound = wattprint_runtime::metrics::serve(addr, readiness, stop)
        .await
        .map_err(|e| e.to_string())?;
    println!("metrics on http://{bound}/metrics, scraped every 15 s");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            if let Ok(mut c) = tokio::net::TcpStream::connect(bound).await {
                let _ = c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
                let mut body = Vec::new();
                let _ = c.read_to_end(&mut body).await;
            }
        }
    });
    Ok(())
}

fn bench_sensor(o: &Options) -> Result<(Box<dyn GpuSensor>, InstanceResolver), String> {
    let (sensor, resolver): (Box<dyn GpuSensor>, InstanceResolver) = if o.nvml {
        let sensor = wattprint_agent::nvml::NvmlSensor::init().map_err(|e| format!("NVML: {e}"))?;
        let pairs = sensor
            .gpus()
            .iter()
            .enumerate()
            .map(|(i, g)| (g.uuid.clone(), InstanceId::new(format!("bench-i-{i}"))))
            .collect();
        (Box::new(sensor), InstanceResolver::from_pairs(pairs))
    } else {
        let mut replay = ReplayConfig::new(o.trace.clone());
        replay.gpus = o.gpus;
        replay.seed = 42;
        replay.pacing = Pacing::RealTime;
        replay.loops = None;
        let sensor = ReplaySensor::new(replay).map_err(|e| e.to_string())?;
        let pairs = sensor
            .gpus()
            .iter()
            .enumerate()
            .map(|(i, g)| (g.uuid.clone(), InstanceId::new(format!("bench-i-{i}"))))
            .collect();
        (Box::new(sensor), InstanceResolver::from_pairs(pairs))
    };
    Ok((sensor, resolver))
}

/// What the monitor measured over the steady window.
struct Window {
    cpu_ticks: u64,
    wall: Duration,
    rss_kib: Vec<u64>,
    hwm_kib: u64,
}

/// Samples `/proc/self` every second; measures from `warmup` to `total` after its start.
async fn monitor(warmup: Duration, total: Duration) -> Result<Window, String> {
    let started = Instant::now();
    tokio::time::sleep(warmup).await;
    let first = usage()?;
    let t0 = Instant::now();
    let mut rss = vec![first.rss_kib];
    let mut last = first;
    // Stop a little before the agent's shutdown so that its final flush is not measured.
    while started.elapsed() + Duration::from_secs(1) < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = usage()?;
        rss.push(last.rss_kib);
    }
    Ok(Window {
        cpu_ticks: last.cpu_ticks - first.cpu_ticks,
        wall: t0.elapsed(),
        rss_kib: rss,
        hwm_kib: last.hwm_kib,
    })
}

/// The sink gateway: speaks the real `Ingest` protocol and acks every batch as accepted.
#[derive(Clone, Default)]
struct Sink {
    samples: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Ingest for Sink {
    type StreamSamplesStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn stream_samples(
        &self,
        request: Request<Streaming<SampleBatch>>,
    ) -> Result<Response<Self::StreamSamplesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let samples = Arc::clone(&self.samples);
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let n = batch.samples.len();
                samples.fetch_add(n as u64, Ordering::Relaxed);
                let ack = BatchAck {
                    batch_seq: batch.batch_seq,
                    accepted: u32::try_from(n).unwrap_or(u32::MAX),
                    rejected: vec![],
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn sink() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {addr}");
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(Sink::default()))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .map_err(|e| e.to_string())
    })
}
