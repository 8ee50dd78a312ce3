//! The durable spool: on-disk recovery (order, acks, rotation, torn and corrupt records), and
//! the whole agent against the in-test gateway across a hard abort and a real `kill -9`, with a
//! full spool, and after a clean run.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;

use common::{read_trace, write_trace, Behaviour, Gateway, Seen, TRACE};
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sensor::GpuSensor;
use wattprint_agent::spool::{Spool, SpoolLimits, HEADER_BYTES};
use wattprint_agent::{run, AgentConfig, AgentReport};
use wattprint_core::{HostId, InstanceId, Milliwatts, UnixMillis};
use wattprint_proto::v1::{Sample, SampleBatch};

// ---------------------------------------------------------------------------------------------
// The spool on its own
// ---------------------------------------------------------------------------------------------

/// A batch whose record has the same size for every `seq` below 128 (fixed-width varints).
fn batch(seq: u64, samples: u64) -> SampleBatch {
    SampleBatch {
        host_id: "h".into(),
        batch_seq: seq,
        samples: (0..samples)
            .map(|i| Sample {
                gpu_uuid: "GPU-test".into(),
                instance_id: "i".into(),
                seq: 1_000_000 + seq * 100 + i,
                start_unix_ms: 1_700_000_000_000 + 1_000 * (seq * 100 + i) as i64,
                end_unix_ms: 1_700_000_000_000 + 1_000 * (seq * 100 + i + 1) as i64,
                energy_mj: 1_000 + 7 * seq + i,
                ..Sample::default()
            })
            .collect(),
    }
}

fn record_len(b: &SampleBatch) -> u64 {
    HEADER_BYTES + b.encode_to_vec().len() as u64
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn unacked_seqs(s: &Spool) -> Vec<u64> {
    s.unacked().iter().map(|m| m.batch_seq).collect()
}

#[test]
fn unacked_batches_survive_a_reopen_in_order_and_fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits {
        max_bytes: 1 << 20,
        segment_bytes: 2_000,
    };
    let batches: Vec<SampleBatch> = (1..=40).map(|q| batch(q, 5)).collect();
    let (mut spool, rec) = Spool::open(dir.path(), limits).unwrap();
    assert_eq!((rec.unacked_batches, rec.segments), (0, 0));
    assert_eq!(spool.next_batch_seq(), 1);
    for b in &batches {
        let dropped = spool.append(b).unwrap();
        assert!(dropped.is_empty());
    }
    let files_before = segment_files(dir.path());
    assert!(files_before.len() >= 4, "rotated: {files_before:?}");
    assert_eq!(spool.segments(), files_before.len());
    // Ack the first 15 in a scrambled order, then every third one after that.
    let mut acked: Vec<u64> = (1..=15).rev().collect();
    acked.extend((16..=40).filter(|q| q % 3 == 0));
    for &q in &acked {
        assert!(spool.ack(q).unwrap(), "batch {q} was unacked");
    }
    assert!(!spool.ack(3).unwrap(), "a second ack is a no-op");
    assert!(!spool.ack(999).unwrap());
    let files_after = segment_files(dir.path());
    // The segments holding only batches 1..=15 are gone; the others stay.
    assert!(files_after.len() < files_before.len());
    assert!(!files_after.contains(&files_before[0]));
    assert_eq!(files_after.last(), files_before.last());
    let on_disk: u64 = files_after
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(spool.bytes(), on_disk);
    let expected: Vec<u64> = (16..=40).filter(|q| q % 3 != 0).collect();
    assert_eq!(unacked_seqs(&spool), expected);
    drop(spool);

    let (spool, rec) = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(
        unacked_seqs(&spool),
        expected,
        "exactly the unacked, in order"
    );
    assert_eq!(rec.unacked_batches, expected.len());
    assert_eq!(rec.unacked_samples, 5 * expected.len() as u64);
    assert_eq!(rec.damaged_records(), 0);
    for &q in &expected {
        assert_eq!(spool.read(q).unwrap(), batches[q as usize - 1]);
    }
    assert!(spool.read(16 + 2).is_err(), "acked batches cannot be read");
    assert_eq!(spool.next_batch_seq(), 41);
    drop(spool);

    // Ack the rest: only the active segment stays, and the numbering still continues.
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    for q in expected {
        assert!(spool.ack(q).unwrap());
    }
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(spool);
    let (spool, rec) = Spool::open(dir.path(), limits).unwrap();
    assert_eq!((rec.unacked_batches, spool.next_batch_seq()), (0, 41));
}

/// Ten batches in one segment, then `damage` applied to its file; returns the reopened spool.
fn damaged_spool(
    damage: impl FnOnce(&Path, &[u64]),
) -> (tempfile::TempDir, Spool, wattprint_agent::spool::Recovery) {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits::new(1 << 20);
    let batches: Vec<SampleBatch> = (1..=10).map(|q| batch(q, 4)).collect();
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    for b in &batches {
        spool.append(b).unwrap();
    }
    drop(spool);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    // Offsets of each record.
    let mut offsets = Vec::new();
    let mut at = 0;
    for b in &batches {
        offsets.push(at);
        at += record_len(b);
    }
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), at);
    damage(&files[0], &offsets);
    let (spool, rec) = Spool::open(dir.path(), limits).unwrap();
    // Whatever was recovered reads back intact.
    for q in unacked_seqs(&spool) {
        assert_eq!(spool.read(q).unwrap(), batches[q as usize - 1]);
    }
    (dir, spool, rec)
}

fn flip(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_torn_last_record_is_truncated_and_everything_before_it_recovered() {
    let file_len = std::cell::Cell::new(0);
    let (dir, mut spool, rec) = damaged_spool(|path, _| {
        let len = std::fs::metadata(path).unwrap().len();
        file_len.set(len);
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len - 7).unwrap(); // mid-way through the last record
    });
    assert_eq!(unacked_seqs(&spool), (1..=9).collect::<Vec<_>>());
    assert_eq!((rec.torn_tails, rec.corrupt_records), (1, 0));
    assert_eq!(rec.torn_bytes, record_len(&batch(10, 4)) - 7);
    let files = segment_files(dir.path());
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().len(),
        file_len.get() - record_len(&batch(10, 4)),
        "truncated to the last whole record"
    );
    // The torn batch was never sent (the fsync comes before the send): its number is reused.
    assert_eq!(spool.next_batch_seq(), 10);
    spool.append(&batch(10, 4)).unwrap();
    drop(spool);
    let (spool, rec) = Spool::open(dir.path(), SpoolLimits::new(1 << 20)).unwrap();
    assert_eq!(rec.damaged_records(), 0, "clean after the repair");
    assert_eq!(unacked_seqs(&spool), (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_torn_header_at_the_end_is_truncated() {
    let (_dir, spool, rec) = damaged_spool(|path, offsets| {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(offsets[9] + 4).unwrap(); // only part of the last header
    });
    assert_eq!(unacked_seqs(&spool), (1..=9).collect::<Vec<_>>());
    assert_eq!((rec.torn_tails, rec.torn_bytes), (1, 4));
}

#[test]
fn a_flipped_crc_in_the_last_record_is_a_torn_tail() {
    let (_dir, spool, rec) = damaged_spool(|path, offsets| flip(path, offsets[9] + 6));
    assert_eq!(unacked_seqs(&spool), (1..=9).collect::<Vec<_>>());
    assert_eq!((rec.torn_tails, rec.corrupt_records), (1, 0));
    assert_eq!(rec.torn_bytes, record_len(&batch(10, 4)));
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_counted() {
    let (dir, spool, rec) = damaged_spool(|path, offsets| flip(path, offsets[4] + 20));
    let expected: Vec<u64> = (1..=10).filter(|&q| q != 5).collect();
    assert_eq!(unacked_seqs(&spool), expected);
    assert_eq!((rec.torn_tails, rec.corrupt_records), (0, 1));
    assert_eq!(rec.torn_bytes, 0);
    drop(spool);
    // Nothing was truncated: reopening finds the same damage again, and nothing else.
    let (spool, rec) = Spool::open(dir.path(), SpoolLimits::new(1 << 20)).unwrap();
    assert_eq!(unacked_seqs(&spool), expected);
    assert_eq!(rec.corrupt_records, 1);
}

#[test]
fn a_damaged_header_in_the_middle_loses_the_rest_of_the_segment_only() {
    // kind byte of record 7 becomes unknown: records 7..=10 cannot be found any more.
    let (dir, mut spool, rec) = damaged_spool(|path, offsets| flip(path, offsets[6] + 4));
    assert_eq!(unacked_seqs(&spool), (1..=6).collect::<Vec<_>>());
    assert_eq!(rec.corrupt_records, 1);
    assert!(rec.torn_bytes > 0);
    // Appending continues after the last good record and survives a reopen.
    assert_eq!(spool.next_batch_seq(), 7);
    spool.append(&batch(7, 4)).unwrap();
    drop(spool);
    let (spool, rec) = Spool::open(dir.path(), SpoolLimits::new(1 << 20)).unwrap();
    assert_eq!(rec.damaged_records(), 0);
    assert_eq!(unacked_seqs(&spool), (1..=7).collect::<Vec<_>>());
}

#[test]
fn a_full_spool_drops_whole_oldest_segments_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let one = record_len(&batch(1, 4));
    assert_eq!(one, record_len(&batch(25, 4)), "records of one size");
    let limits = SpoolLimits {
        max_bytes: 10 * one,
        segment_bytes: 2 * one,
    };
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    let mut dropped = Vec::new();
    let mut dropped_samples = 0;
    for q in 1..=25 {
        let d = spool.append(&batch(q, 4)).unwrap();
        dropped_samples += d.samples;
        if let (Some(from), Some(to)) = (d.first_start_ms, d.last_end_ms) {
            assert!(from < to);
        }
        dropped.extend(d.batch_seqs);
        assert!(spool.bytes() <= limits.max_bytes, "bounded");
    }
    // Segments of two records, ten records at most: appending 25 (a new segment) drops the
    // oldest whole segment, 15 and 16. Oldest first: 1..=16 dropped, 17..=25 kept.
    assert_eq!(dropped, (1..=16).collect::<Vec<_>>());
    assert_eq!(dropped_samples, 16 * 4);
    assert_eq!(unacked_seqs(&spool), (17..=25).collect::<Vec<_>>());
    drop(spool);
    let (spool, _) = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(unacked_seqs(&spool), (17..=25).collect::<Vec<_>>());
    assert_eq!(spool.next_batch_seq(), 26);
}

// ---------------------------------------------------------------------------------------------
// The agent with a spool
// ---------------------------------------------------------------------------------------------

const SEED_A: u64 = 501;
const SEED_B: u64 = 502;

fn replay(path: &Path, seed: u64) -> Box<dyn GpuSensor> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Box::new(
        ReplaySensor::new(ReplayConfig {
            trace_path: path.to_owned(),
            gpus: 1,
            seed,
            start_at: UnixMillis(now.as_millis() as i64),
            pacing: Pacing::AsFastAsPossible,
            loops: Some(1),
            model: "NVIDIA H100 80GB HBM3".into(),
            power_limit: Milliwatts(700_000),
        })
        .unwrap(),
    )
}

fn resolver(seed: u64) -> InstanceResolver {
    InstanceResolver::from_pairs(vec![(replay_gpu_uuid(seed, 0), InstanceId::from("i-0"))])
}

fn config(url: String, spool: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(HostId::from("host-spool"), url);
    c.batch_max_samples = 10;
    c.batch_max_wait = Duration::from_millis(100);
    c.reconnect_backoff_max = Duration::from_millis(400);
    c.spool_dir = Some(spool.to_owned());
    c
}

async fn run_to_end(config: AgentConfig, seed: u64, trace: &Path) -> AgentReport {
    tokio::time::timeout(
        Duration::from_secs(60),
        run(
            config,
            replay(trace, seed),
            resolver(seed),
            std::future::pending::<()>(),
        ),
    )
    .await
    .expect("agent finished in time")
    .expect("agent ran")
}

/// One GPU's samples deduplicated by seq (checked identical), in seq order.
fn gpu_samples(seen: &Seen, seed: u64) -> Vec<Sample> {
    let uuid = replay_gpu_uuid(seed, 0);
    seen.dedup()
        .into_iter()
        .filter(|((gpu, _), _)| gpu.as_str() == uuid.as_str())
        .map(|(_, s)| s)
        .collect()
}

/// Every sample of `first` is in `second`; `second` has a gap-free prefix of the trace,
/// `1..=k` in the low seq bits, whose energy is exactly the counter's increase over it.
/// Returns k.
fn check_no_loss(first: &[Sample], second: &[Sample]) -> usize {
    let rows = read_trace(Path::new(TRACE));
    let by_seq: BTreeMap<u64, &Sample> = second.iter().map(|s| (s.seq, s)).collect();
    for s in first {
        assert_eq!(by_seq.get(&s.seq), Some(&s), "sample {} lost", s.seq);
    }
    for (i, s) in second.iter().enumerate() {
        assert_eq!(
            wattprint_core::sample::seq_count(s.seq),
            i as u64 + 1,
            "no holes"
        );
    }
    let k = second.len();
    assert!(k >= first.len() && k < rows.len());
    let total: u64 = second.iter().map(|s| s.energy_mj).sum();
    assert_eq!(
        total,
        rows[k].counter_mj - rows[0].counter_mj,
        "energy of the portion read equals the counter difference"
    );
    k
}

/// Waits until `gw` has received at least `batches` batches.
async fn wait_for_batches(gw: &Gateway, batches: usize) {
    let t0 = Instant::now();
    loop {
        let n: usize = gw
            .seen
            .lock()
            .unwrap()
            .batches_per_stream
            .iter()
            .map(Vec::len)
            .sum();
        if n >= batches {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "only {n} batches");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_aborted_hard_loses_nothing_its_successor_resends_it_all_first() {
    let spool = tempfile::tempdir().unwrap();
    let gw1 = Gateway::start(Behaviour::NeverAck).await;
    let agent = tokio::spawn(run(
        config(gw1.url(), spool.path()),
        replay(Path::new(TRACE), SEED_A),
        resolver(SEED_A),
        std::future::pending::<()>(),
    ));
    wait_for_batches(&gw1, 40).await;
    // No graceful shutdown: the task is dropped at its next await.
    agent.abort();
    assert!(agent.await.unwrap_err().is_cancelled());
    let first = gpu_samples(&gw1.seen.lock().unwrap(), SEED_A);
    let first_batches = gw1.seen.lock().unwrap().batches_per_stream[0].clone();
    gw1.kill().await;

    // The successor: a gateway that acks, the same spool, a different GPU of its own.
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..51)
        .map(|i| (i as f64 * 0.1, 100_000, 10 * i as u64))
        .collect();
    let small = write_trace(dir.path(), "small.csv", &rows);
    let gw2 = Gateway::start(Behaviour::AckAll).await;
    let mut c = config(gw2.url(), spool.path());
    // A small window: most replayed batches wait on disk and are read back as acks come.
    c.max_unacked_batches = 4;
    let report = run_to_end(c, SEED_B, &small).await;
    let seen = gw2.seen.lock().unwrap();
    let second = gpu_samples(&seen, SEED_A);
    let k = check_no_loss(&first, &second);
    eprintln!(
        "aborted run: gateway got {} samples in {} batches; the spool held {k} samples in {} \
         batches, all resent: {report:?}",
        first.len(),
        first_batches.len(),
        report.batches_replayed
    );
    // Replayed first, in their original order, then the new run's batches.
    let replayed = report.batches_replayed as usize;
    assert!(replayed >= first_batches.len());
    let stream = &seen.batches_per_stream[0];
    assert_eq!(&stream[..first_batches.len()], &first_batches[..]);
    assert!(stream.windows(2).all(|w| w[0] < w[1]), "{stream:?}");
    let new_samples = gpu_samples(&seen, SEED_B);
    assert_eq!(new_samples.len(), 50);
    let first_new = seen
        .samples
        .iter()
        .position(|s| s.gpu_uuid == replay_gpu_uuid(SEED_B, 0).as_str())
        .unwrap();
    assert_eq!(first_new, k, "no new sample before the last replayed one");
    assert_eq!(report.batches_resent, report.batches_replayed);
    assert_eq!(report.samples_acked as usize, k + 50);
    assert_eq!((report.samples_sent, report.samples_dropped), (50, 0));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_process_killed_with_sigkill_loses_nothing() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let harness = env!("CARGO_BIN_EXE_wattprint-agent-harness");
    let spool = tempfile::tempdir().unwrap();
    let gw1 = Gateway::start(Behaviour::NeverAck).await;
    let mut child = Command::new(harness)
        .args([&gw1.url(), spool.path().to_str().unwrap(), TRACE])
        .args([SEED_A.to_string(), "10".into()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_batches(&gw1, 40).await;
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed, not exited: {status:?}");
    let first = gpu_samples(&gw1.seen.lock().unwrap(), SEED_A);
    gw1.kill().await;

    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..21)
        .map(|i| (i as f64 * 0.1, 100_000, 10 * i as u64))
        .collect();
    let small = write_trace(dir.path(), "small.csv", &rows);
    let gw2 = Gateway::start(Behaviour::AckAll).await;
    let restarted = Command::new(harness)
        .args([&gw2.url(), spool.path().to_str().unwrap()])
        .args([small.to_str().unwrap(), &SEED_B.to_string(), "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || restarted.wait_with_output()),
    )
    .await
    .expect("the restarted agent finished")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = gw2.seen.lock().unwrap();
    let k = check_no_loss(&first, &gpu_samples(&seen, SEED_A));
    assert_eq!(gpu_samples(&seen, SEED_B).len(), 20);
    eprintln!(
        "killed process: gateway got {} samples; the restart resent {k}: {stdout}",
        first.len()
    );
    assert!(stdout.contains("samples_acked: "), "{stdout}");
    assert!(
        stdout.contains(&format!("samples_acked: {}", k + 20)),
        "{stdout}"
    );
    assert!(!stdout.contains("batches_replayed: 0,"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_batches_counts_them_exactly_and_keeps_the_newest() {
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..601)
        .map(|i| (i as f64 * 0.05, 200_000, 10 * i as u64))
        .collect();
    let trace = write_trace(dir.path(), "t.csv", &rows);
    let gw = Gateway::start(Behaviour::NeverAck).await;
    let mut c = config(gw.url(), spool.path());
    c.spool_max_bytes = 8 * 1024;
    // Most batches are on disk only; drops hit the in-memory window and the backlog.
    c.max_unacked_batches = 3;
    // Sampling ends within the second; then 5 s of waiting for acks that never come.
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            c,
            replay(&trace, SEED_A),
            resolver(SEED_A),
            tokio::time::sleep(Duration::from_secs(1)),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    // Batches dropped before the stream was open were never sent.
    assert!(report.samples_sent <= 600, "{report:?}");
    assert_eq!(report.samples_acked, 0);
    assert!(report.samples_dropped > 0, "{report:?}");
    // What the spool kept: the newest batches, without a hole, up to the very last sample.
    let (kept, _) = Spool::open(spool.path(), SpoolLimits::new(8 * 1024)).unwrap();
    assert!(kept.bytes() <= 8 * 1024);
    let metas = kept.unacked();
    assert!(metas
        .windows(2)
        .all(|w| w[1].batch_seq == w[0].batch_seq + 1));
    let mut kept_samples = Vec::new();
    for m in &metas {
        kept_samples.extend(kept.read(m.batch_seq).unwrap().samples);
    }
    let n = kept_samples.len() as u64;
    assert!(n > 0 && n < 600);
    assert_eq!(report.samples_dropped + n, 600, "dropped exactly the rest");
    for (i, s) in kept_samples.iter().enumerate() {
        assert_eq!(
            wattprint_core::sample::seq_count(s.seq),
            600 - n + i as u64 + 1,
            "the newest"
        );
    }
    // What was sent reached the gateway once.
    let seen = gw.seen.lock().unwrap();
    assert_eq!(seen.samples.len() as u64, report.samples_sent);
    assert_eq!(gpu_samples(&seen, SEED_A).len() as u64, report.samples_sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_batches_are_not_resent_after_a_restart() {
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..101)
        .map(|i| (i as f64 * 0.1, 100_000, 10 * i as u64))
        .collect();
    let trace = write_trace(dir.path(), "t.csv", &rows);
    let gw1 = Gateway::start(Behaviour::AckAll).await;
    let r1 = run_to_end(config(gw1.url(), spool.path()), SEED_A, &trace).await;
    assert_eq!((r1.samples_acked, r1.batches_replayed), (100, 0));
    let last_seq_1 = *gw1.seen.lock().unwrap().batches_per_stream[0]
        .last()
        .unwrap();

    let gw2 = Gateway::start(Behaviour::AckAll).await;
    let r2 = run_to_end(config(gw2.url(), spool.path()), SEED_B, &trace).await;
    assert_eq!(
        (r2.batches_replayed, r2.batches_resent, r2.samples_sent),
        (0, 0, 100),
        "{r2:?}"
    );
    let seen = gw2.seen.lock().unwrap();
    assert!(
        gpu_samples(&seen, SEED_A).is_empty(),
        "nothing of run 1 again"
    );
    assert_eq!(gpu_samples(&seen, SEED_B).len(), 100);
    // Batch numbers continue across the restart.
    assert!(seen.batches_per_stream[0][0] > last_seq_1);
}

#[tokio::test]
async fn a_tiny_spool_bound_is_a_configuration_error() {
    let spool = tempfile::tempdir().unwrap();
    let mut c = config("http://127.0.0.1:1".into(), spool.path());
    c.spool_max_bytes = 100;
    let err = run(
        c,
        replay(Path::new(TRACE), SEED_A),
        resolver(SEED_A),
        async {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("spool_max_bytes"), "{err}");
}
