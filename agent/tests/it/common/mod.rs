//! Shared test helpers: the real trace read independently of the agent, small hand-written
//! traces, and an in-test gRPC gateway that records what it receives.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a panic is a test failure

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use wattprint_proto::v1::ingest_server::{Ingest, IngestServer};
use wattprint_proto::v1::{BatchAck, Rejection, Sample, SampleBatch};

/// The project's copy of the real H100 trace.
pub const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/h100-trace/h100_power_trace_50ms.csv"
);

/// One row of the trace, read without the agent's parser.
#[derive(Debug, Clone)]
pub struct TraceRow {
    pub t_ms: i64,
    pub phase: String,
    pub power_mw: u32,
    pub counter_mj: u64,
}

pub fn read_trace(path: &Path) -> Vec<TraceRow> {
    let mut r = csv::Reader::from_path(path).expect("open trace");
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let (t, ph, p, c) = (
        col("unix_s"),
        col("phase"),
        col("power_mW"),
        col("energy_counter_mJ"),
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            TraceRow {
                t_ms: (rec[t].parse::<f64>().unwrap() * 1000.0).round() as i64,
                phase: rec[ph].to_owned(),
                power_mw: rec[p].parse().unwrap(),
                counter_mj: rec[c].parse().unwrap(),
            }
        })
        .collect()
}

/// Writes a small trace: `(seconds offset, power mW, counter mJ)` rows, phase "test".
pub fn write_trace(dir: &Path, name: &str, rows: &[(f64, u32, u64)]) -> PathBuf {
    let mut s = String::from(
        "unix_s,phase,power_mW,power_avg_field_mW,power_instant_field_mW,energy_counter_mJ,\
         util_gpu_pct,util_mem_pct,sm_clock_mhz,temp_c,mem_used_bytes\n",
    );
    for (t, p, c) in rows {
        s.push_str(&format!(
            "{:.4},test,{p},{p},{p},{c},50,10,1980,40,1000\n",
            1_795_390_821.0 + t
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, s).unwrap();
    path
}

/// How the test gateway answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Ack every batch, accepting every sample.
    AckAll,
    /// On the first stream only: receive `receive` batches, ack the first `ack` of them, then
    /// fail the stream without acking the rest. Later streams ack everything.
    FailFirstStream { receive: usize, ack: usize },
    /// Ack every batch after a delay.
    SlowAck(Duration),
    /// Reject every sample whose low seq bits are divisible by `every`.
    RejectEvery(u64),
    /// Receive and record every batch, never ack any.
    NeverAck,
}

/// What the gateway saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Batch seqs received, per stream (in arrival order).
    pub batches_per_stream: Vec<Vec<u64>>,
    /// Batch seqs acked, per stream.
    pub acked_per_stream: Vec<Vec<u64>>,
    /// Every sample received, in order (duplicates included).
    pub samples: Vec<Sample>,
    /// Highest number of received-but-unacked batches at any time on one stream.
    pub max_outstanding: usize,
    /// Host ids seen on batches.
    pub hosts: Vec<String>,
}

impl Seen {
    /// Samples deduplicated by (gpu, seq); panics if a duplicate differs.
    pub fn dedup(&self) -> BTreeMap<(String, u64), Sample> {
        let mut m = BTreeMap::new();
        for s in &self.samples {
            if let Some(prev) = m.insert((s.gpu_uuid.clone(), s.seq), s.clone()) {
                assert_eq!(
                    &prev, s,
                    "a resent sample must be identical to the first copy"
                );
            }
        }
        m
    }
}

#[derive(Clone)]
pub struct TestGateway {
    pub seen: Arc<Mutex<Seen>>,
    behaviour: Behaviour,
    streams: Arc<AtomicUsize>,
    killed: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Ingest for TestGateway {
    type StreamSamplesStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn stream_samples(
        &self,
        request: Request<Streaming<SampleBatch>>,
    ) -> Result<Response<Self::StreamSamplesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4096);
        let stream_no = self.streams.fetch_add(1, Ordering::SeqCst);
        let seen = Arc::clone(&self.seen);
        let idx = {
            let mut s = seen.lock().unwrap();
            s.batches_per_stream.push(Vec::new());
            s.acked_per_stream.push(Vec::new());
            s.batches_per_stream.len() - 1
        };
        let behaviour = self.behaviour;
        let mut killed = self.killed.clone();
        // Batches received but not yet acked on this stream.
        let outstanding = Arc::new(AtomicUsize::new(0));
        // Slow acks come from their own task, so the reader keeps reading meanwhile.
        let slow_acker = match behaviour {
            Behaviour::SlowAck(delay) => {
                let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<BatchAck>();
                let (tx, seen, outstanding) =
                    (tx.clone(), Arc::clone(&seen), Arc::clone(&outstanding));
                tokio::spawn(async move {
                    while let Some(ack) = ack_rx.recv().await {
                        tokio::time::sleep(delay).await;
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                        seen.lock().unwrap().acked_per_stream[idx].push(ack.batch_seq);
                        if tx.send(Ok(ack)).await.is_err() {
                            return;
                        }
                    }
                });
                Some(ack_tx)
            }
            _ => None,
        };
        tokio::spawn(async move {
            let mut received = 0usize;
            loop {
                let batch = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(batch)) => batch,
                        _ => return,
                    },
                    _ = killed.changed() => {
                        let _ = tx.send(Err(Status::unavailable("test gateway killed"))).await;
                        return;
                    }
                };
                received += 1;
                let now_outstanding = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                {
                    let mut s = seen.lock().unwrap();
                    s.batches_per_stream[idx].push(batch.batch_seq);
                    s.samples.extend(batch.samples.iter().cloned());
                    s.hosts.push(batch.host_id.clone());
                    s.max_outstanding = s.max_outstanding.max(now_outstanding);
                }
                let mut ack = BatchAck {
                    batch_seq: batch.batch_seq,
                    accepted: batch.samples.len() as u32,
                    rejected: vec![],
                };
                match behaviour {
                    Behaviour::AckAll => {}
                    Behaviour::NeverAck => continue,
                    Behaviour::SlowAck(_) => {
                        if let Some(acker) = &slow_acker {
                            let _ = acker.send(ack);
                        }
                        continue;
                    }
                    Behaviour::RejectEvery(every) => {
                        ack.rejected = batch
                            .samples
                            .iter()
                            .filter(|s| {
                                wattprint_core::sample::seq_count(s.seq).is_multiple_of(every)
                            })
                            .map(|s| Rejection {
                                gpu_uuid: s.gpu_uuid.clone(),
                                seq: s.seq,
                                reason: "test gateway rejects it".into(),
                            })
                            .collect();
                        ack.accepted -= ack.rejected.len() as u32;
                    }
                    Behaviour::FailFirstStream {
                        receive,
                        ack: ack_n,
                    } if stream_no == 0 => {
                        if received > ack_n {
                            if received == receive {
                                let _ = tx
                                    .send(Err(Status::unavailable("test gateway drops the stream")))
                                    .await;
                                return;
                            }
                            continue;
                        }
                    }
                    Behaviour::FailFirstStream { .. } => {}
                }
                outstanding.fetch_sub(1, Ordering::SeqCst);
                seen.lock().unwrap().acked_per_stream[idx].push(batch.batch_seq);
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running test gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    stop: Option<oneshot::Sender<()>>,
    kill: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(behaviour: Behaviour) -> Gateway {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour, Arc::default()).await
    }

    /// Starts on `addr`, recording into `seen` (pass a previous gateway's to keep one record).
    pub async fn start_on(
        addr: SocketAddr,
        behaviour: Behaviour,
        seen: Arc<Mutex<Seen>>,
    ) -> Gateway {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind test gateway");
        let addr = listener.local_addr().unwrap();
        let (kill, killed) = watch::channel(false);
        let svc = TestGateway {
            seen: Arc::clone(&seen),
            behaviour,
            streams: Arc::default(),
            killed,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(IngestServer::new(svc))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Gateway {
            addr,
            seen,
            stop: Some(stop),
            kill,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails every open stream and stops accepting connections (the listener closes).
    pub async fn kill(mut self) {
        let _ = self.kill.send(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}
