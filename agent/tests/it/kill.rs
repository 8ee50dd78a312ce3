//! Power loss, as close as a test gets: the real agent process (`wattprint-agent-harness`,
//! spooling to disk) is SIGKILLed against the real ingest gateway, restarted, and every sample
//! of the real H100 trace is counted at the bus — exactly once after dedup, with the trace's
//! energy to the millijoule. Then a torn tail write (the spool file cut mid-record, as a power
//! cut during the last write leaves it): recovery drops only the torn record, says so, and
//! everything before it arrives exactly once.
//!
//! The spool is read here by an independent reader of its documented record format
//! (`len u32 LE | kind u8 | crc u32 LE | payload`), not by the agent's code.

#![cfg(unix)]
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;
use crate::gateway_tls;

use common::{read_trace, write_trace, TRACE};
use gateway_tls::{RealGateway, Security};
use prost::Message;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wattprint_agent::replay::replay_gpu_uuid;
use wattprint_proto::v1::SampleBatch;

const SEED_A: u64 = 801;
const SEED_B: u64 = 802;
/// The host id `wattprint-agent-harness` reports as.
const HARNESS_HOST: &str = "host-harness";
const HEADER: usize = 9;

/// A record of the spool as found on disk.
struct Record {
    segment: PathBuf,
    offset: usize,
    payload_len: usize,
    batch: Option<SampleBatch>,
}

/// Every complete record of every segment in `dir`, in order (a record still being written
/// when the file is read is left out).
fn read_spool(dir: &Path) -> Vec<Record> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
        })
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let data = std::fs::read(&segment).unwrap();
        let mut pos = 0;
        while pos + HEADER <= data.len() {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = data[pos + 4];
            let end = pos + HEADER + len;
            if end > data.len() {
                break;
            }
            let payload = &data[pos + HEADER..end];
            let mut crc = crc32fast::Hasher::new();
            crc.update(&data[pos..pos + 5]);
            crc.update(payload);
            let stored = u32::from_le_bytes(data[pos + 5..pos + 9].try_into().unwrap());
            if crc.finalize() != stored {
                break;
            }
            out.push(Record {
                segment: segment.clone(),
                offset: pos,
                payload_len: len,
                batch: (kind == 1).then(|| SampleBatch::decode(payload).unwrap()),
            });
            pos = end;
        }
    }
    out
}

/// The low 32 bits of the seqs (the sample's number in its run) of GPU 0 of `seed` that the
/// spool's batch records hold.
fn spooled_numbers(dir: &Path, seed: u64) -> std::collections::BTreeSet<u64> {
    let uuid = replay_gpu_uuid(seed, 0);
    read_spool(dir)
        .iter()
        .filter_map(|r| r.batch.as_ref())
        .flat_map(|b| b.samples.iter())
        .filter(|s| s.gpu_uuid == uuid.as_str())
        .map(|s| wattprint_core::sample::seq_count(s.seq))
        .collect()
}

/// Waits until the spool holds every one of the trace's `n` samples.
fn wait_until_spooled(dir: &Path, seed: u64, n: usize, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let have = spooled_numbers(dir, seed);
        if have.len() == n {
            assert_eq!(have.last(), Some(&(n as u64)));
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the agent exited");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "only {} of {n} samples spooled",
            have.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn harness(url: &str, spool: &Path, trace: &Path, seed: u64, piped: bool) -> Child {
    let out = || {
        if piped {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    Command::new(env!("CARGO_BIN_EXE_wattprint-agent-harness"))
        .args([url, spool.to_str().unwrap(), trace.to_str().unwrap()])
        .args([seed.to_string(), "10".into()])
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap()
}

fn kill9(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed, not exited: {status:?}");
}

async fn finish(child: Child) -> String {
    let output: Output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the restarted agent finished")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A 2-second trace of 20 samples for the restarted agent's own GPU.
fn small_trace(dir: &Path) -> PathBuf {
    let rows: Vec<(f64, u32, u64)> = (0..21)
        .map(|i| (i as f64 * 0.1, 100_000, 10 * i as u64))
        .collect();
    write_trace(dir, "small.csv", &rows)
}

/// The energy of sample number `k` of the trace: the counter's step from row k−1 to row k.
fn sample_energy(rows: &[common::TraceRow], k: u64) -> u64 {
    rows[k as usize].counter_mj - rows[k as usize - 1].counter_mj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_the_gateway_stalls_delivers_the_whole_trace_exactly_once() {
    let rows = read_trace(Path::new(TRACE));
    let n = rows.len() - 1;
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The bus takes 3 messages, then stalls: the gateway stops acking mid-stream.
    let gw = RealGateway::start(
        &[(SEED_A, HARNESS_HOST), (SEED_B, HARNESS_HOST)],
        Security::PLAINTEXT,
        3,
    )
    .await;
    let mut child = harness(
        &gw.url(false),
        spool.path(),
        Path::new(TRACE),
        SEED_A,
        false,
    );
    wait_until_spooled(spool.path(), SEED_A, n, &mut child);
    kill9(child);
    let before = gw.delivered.lock().unwrap().samples.len();
    assert!(
        before < n,
        "the gateway took {before} of {n} before the kill"
    );

    // The gateway catches up; the agent restarts on the same spool with a GPU of its own.
    gw.unstall();
    let stdout = finish(harness(
        &gw.url(false),
        spool.path(),
        &small_trace(dir.path()),
        SEED_B,
        true,
    ))
    .await;
    let d = std::mem::take(&mut *gw.delivered.lock().unwrap());
    let got = d.dedup(&replay_gpu_uuid(SEED_A, 0));
    let copies = d
        .samples
        .iter()
        .filter(|s| s.gpu == replay_gpu_uuid(SEED_A, 0))
        .count();
    eprintln!(
        "killed with {before} of {n} samples at the bus; after the restart {copies} copies \
         reached it, {} distinct: {stdout}",
        got.len()
    );
    let numbers: Vec<u64> = got
        .iter()
        .map(|s| wattprint_core::sample::seq_count(s.seq))
        .collect();
    assert_eq!(numbers, (1..=n as u64).collect::<Vec<_>>(), "every sample");
    assert_eq!(
        got.iter().map(|s| s.energy.0).sum::<u64>(),
        rows[n].counter_mj - rows[0].counter_mj,
        "the trace's energy to the millijoule"
    );
    assert_eq!(d.dedup(&replay_gpu_uuid(SEED_B, 0)).len(), 20);
    assert!(!stdout.contains("batches_replayed: 0,"), "{stdout}");
    assert!(stdout.contains("spool_damaged_records: 0"), "{stdout}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_spool_tail_loses_only_the_torn_batch_and_is_reported() {
    let rows = read_trace(Path::new(TRACE));
    let n = rows.len() - 1;
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The gateway is down: nothing leaves the host, everything is spooled.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut child = harness(&down, spool.path(), Path::new(TRACE), SEED_A, false);
    wait_until_spooled(spool.path(), SEED_A, n, &mut child);
    kill9(child);

    // Cut the last record in half, as a power cut during its write would.
    let records = read_spool(spool.path());
    assert!(
        records.iter().all(|r| r.batch.is_some()),
        "no acks: never connected"
    );
    let last = records.last().unwrap();
    let torn: Vec<u64> = last
        .batch
        .as_ref()
        .unwrap()
        .samples
        .iter()
        .map(|s| wattprint_core::sample::seq_count(s.seq))
        .collect();
    let cut = last.offset + HEADER + last.payload_len / 2;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.segment)
        .unwrap();
    file.set_len(cut as u64).unwrap();
    drop(file);
    assert_eq!(
        torn,
        ((n - torn.len() + 1) as u64..=n as u64).collect::<Vec<_>>(),
        "the last batch holds the last samples"
    );

    let gw = RealGateway::start(
        &[(SEED_A, HARNESS_HOST), (SEED_B, HARNESS_HOST)],
        Security::PLAINTEXT,
        usize::MAX,
    )
    .await;
    let stdout = finish(harness(
        &gw.url(false),
        spool.path(),
        &small_trace(dir.path()),
        SEED_B,
        true,
    ))
    .await;
    eprintln!("torn: samples {torn:?} of {n}; restart: {stdout}");
    assert!(stdout.contains("spool_damaged_records: 1"), "{stdout}");
    assert!(
        stdout.contains(&format!("batches_replayed: {},", records.len() - 1)),
        "{stdout}"
    );
    let d = std::mem::take(&mut *gw.delivered.lock().unwrap());
    let got = d.dedup(&replay_gpu_uuid(SEED_A, 0));
    let copies = d
        .samples
        .iter()
        .filter(|s| s.gpu == replay_gpu_uuid(SEED_A, 0))
        .count();
    let kept = n - torn.len();
    assert_eq!(
        (got.len(), copies),
        (kept, kept),
        "each once, nothing sent twice"
    );
    let numbers: Vec<u64> = got
        .iter()
        .map(|s| wattprint_core::sample::seq_count(s.seq))
        .collect();
    assert_eq!(numbers, (1..=kept as u64).collect::<Vec<_>>());
    let torn_energy: u64 = torn.iter().map(|&k| sample_energy(&rows, k)).sum();
    assert_eq!(
        got.iter().map(|s| s.energy.0).sum::<u64>(),
        rows[n].counter_mj - rows[0].counter_mj - torn_energy,
        "the trace's energy less exactly the torn batch's"
    );
    gw.stop().await;
}
