//! The durable spool: sealed batches on disk until the gateway acks them, so that a kill -9 or
//! a host reboot loses no sealed batch.
//!
//! # Layout
//!
//! A spool is a directory holding a `LOCK` file (an advisory lock: one agent per spool) and
//! append-only segment files `seg-<first batch_seq, 20 digits>.log`. The newest segment is the
//! active one; records are only ever appended to it. A segment is sealed (a new one started)
//! when the next record would take it past the segment size (4 MiB, or an eighth of the spool
//! for small spools).
//!
//! # Records
//!
//! ```text
//! ┌──────────────┬─────────┬───────────────┬─────────────────────┐
//! │ len: u32 LE  │ kind: u8│ crc: u32 LE   │ payload (len bytes) │
//! └──────────────┴─────────┴───────────────┴─────────────────────┘
//! crc = CRC32(len bytes ‖ kind ‖ payload)
//! kind 1 = batch: payload is the protobuf `SampleBatch`
//! kind 2 = ack:   payload is the acked batch_seq, u64 LE
//! ```
//!
//! A batch record is written and `fsync`ed **before** the batch is sent. An ack record is
//! written when its ack arrives but not fsynced by itself: it reaches the disk with the next
//! batch's fsync, or at rotation or shutdown. Losing an ack record (power loss) only means the
//! batch is sent again after the restart, which is safe: samples are deduplicated downstream by
//! `(gpu_uuid, seq)`.
//!
//! # Recovery
//!
//! [`Spool::open`] reads every segment in order: a batch record adds the batch to the unacked
//! set, an ack record removes it. What is left is replayed, in `batch_seq` order, before any
//! new batch. `batch_seq` continues after the highest one seen (records and segment names), so
//! acks of the new run never match a batch of an older one. Damage is reported, never fatal:
//!
//! - a torn tail (a partial record at the end of a segment, or a last record whose CRC does not
//!   match: the write that a crash cut short) is truncated away with a warning;
//! - a record in the middle of a segment whose CRC does not match (or that does not decode) is
//!   skipped and counted; a header that cannot be valid (unknown kind, absurd length) leaves no
//!   way to find the next record, so the rest of that segment is truncated and counted.
//!
//! # Deleting and the size bound: drop-oldest
//!
//! A sealed segment is deleted once it and every older segment hold no unacked batch (only a
//! prefix is deleted, so an ack record is never deleted while its batch may still be on disk).
//!
//! The spool holds at most `max_bytes` (default 256 MiB). When appending a batch would go past
//! it, the policy is **drop-oldest**: whole segments are deleted, oldest first, unacked batches
//! included, until the new batch fits. The newest data is kept because a long outage is most
//! useful to recover from its end backwards, and because sampling never has to wait for the
//! disk. Every drop is counted ([`Dropped`], `AgentReport::samples_dropped`) and logged with
//! the number of batches and samples and their time range. A single batch larger than the
//! whole spool is still written (after dropping everything else).

use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use wattprint_proto::v1::SampleBatch;

/// Default bound of a spool on disk: 256 MiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Smallest accepted spool bound: 4 KiB.
pub const MIN_SPOOL_MAX_BYTES: u64 = 4 * 1024;

/// Largest segment size: 4 MiB.
pub const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes of a record header: length, kind, CRC.
pub const HEADER_BYTES: u64 = 9;

/// How long [`Spool::open`] waits for another agent (or a dying previous instance) to release
/// the spool's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A payload longer than this cannot be a record of ours: the header is damaged.
const MAX_PAYLOAD_BYTES: u32 = 256 * 1024 * 1024;
const KIND_BATCH: u8 = 1;
const KIND_ACK: u8 = 2;
const LOCK_FILE: &str = "LOCK";
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".log";

/// Why a spool operation failed. Every variant names the file or directory concerned.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// A file system call failed.
    #[error("spool: cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "fsync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or a still-running previous instance) holds the spool.
    #[error("spool directory {path} is locked by another agent (waited {waited:?})")]
    Locked {
        /// The spool directory.
        path: PathBuf,
        /// How long the lock was waited for.
        waited: Duration,
    },
    /// A record read back does not match its checksum or does not decode.
    #[error("spool record at {path} offset {offset} is damaged: {reason}")]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Offset of the record's header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The batch is not (or no longer) in the spool.
    #[error("batch {batch_seq} is not in the spool at {path}")]
    NotFound {
        /// The spool directory.
        path: PathBuf,
        /// The batch asked for.
        batch_seq: u64,
    },
    /// A batch too large for one record.
    #[error("batch {batch_seq} ({bytes} bytes) is too large for the spool at {path}")]
    TooLarge {
        /// The spool directory.
        path: PathBuf,
        /// The batch.
        batch_seq: u64,
        /// Its encoded size.
        bytes: usize,
    },
    /// The blocking task running a spool operation failed (panicked).
    #[error("spool at {path}: the I/O task failed: {message}")]
    Worker {
        /// The spool directory.
        path: PathBuf,
        /// The task's failure.
        message: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Size limits of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Most bytes on disk (all segments); see the module doc for the drop-oldest policy.
    pub max_bytes: u64,
    /// A segment is sealed when the next record would take it past this size.
    pub segment_bytes: u64,
}

impl SpoolLimits {
    /// `max_bytes` on disk in segments of an eighth of it, at most [`MAX_SEGMENT_BYTES`].
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(1, MAX_SEGMENT_BYTES),
        }
    }
}

/// What the spool knows about a batch without reading it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// The batch's number.
    pub batch_seq: u64,
    /// Samples in it.
    pub samples: u64,
    /// Earliest sample start, Unix ms (0 for an empty batch).
    pub first_start_ms: i64,
    /// Latest sample end, Unix ms (0 for an empty batch).
    pub last_end_ms: i64,
}

impl BatchMeta {
    fn of(batch: &SampleBatch) -> Self {
        let first_start_ms = batch
            .samples
            .iter()
            .map(|s| s.start_unix_ms)
            .min()
            .unwrap_or(0);
        let last_end_ms = batch
            .samples
            .iter()
            .map(|s| s.end_unix_ms)
            .max()
            .unwrap_or(0);
        Self {
            batch_seq: batch.batch_seq,
            samples: batch.samples.len() as u64,
            first_start_ms,
            last_end_ms,
        }
    }
}

/// Unacked batches dropped because the spool was full (drop-oldest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The dropped batches' numbers, ascending.
    pub batch_seqs: Vec<u64>,
    /// Samples in them.
    pub samples: u64,
    /// Earliest sample start among them, Unix ms.
    pub first_start_ms: Option<i64>,
    /// Latest sample end among them, Unix ms.
    pub last_end_ms: Option<i64>,
}

impl Dropped {
    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.batch_seqs.is_empty()
    }

    fn add(&mut self, m: &BatchMeta) {
        self.batch_seqs.push(m.batch_seq);
        self.samples += m.samples;
        if m.samples > 0 {
            self.first_start_ms = Some(
                self.first_start_ms
                    .map_or(m.first_start_ms, |t| t.min(m.first_start_ms)),
            );
            self.last_end_ms = Some(
                self.last_end_ms
                    .map_or(m.last_end_ms, |t| t.max(m.last_end_ms)),
            );
        }
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files read.
    pub segments: usize,
    /// Batches found unacked (to be replayed).
    pub unacked_batches: usize,
    /// Samples in them.
    pub unacked_samples: u64,
    /// Torn tails truncated (at most one per segment).
    pub torn_tails: u64,
    /// Bytes removed by those truncations.
    pub torn_bytes: u64,
    /// Damaged records in the middle of a segment, skipped.
    pub corrupt_records: u64,
}

impl Recovery {
    /// Torn tails plus corrupt records: any damage at all.
    pub fn damaged_records(&self) -> u64 {
        self.torn_tails + self.corrupt_records
    }
}

#[derive(Debug)]
struct Segment {
    /// From the file name; no batch in the segment has a lower `batch_seq`.
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Unacked batches whose record is in this segment.
    unacked: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    segment: u64,
    offset: u64,
    meta: BatchMeta,
}

/// An open spool. All methods do blocking file I/O: call them from a blocking thread (see
/// [`SharedSpool`]).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Held (with its advisory lock) for as long as the spool is open.
    _lock: File,
    /// Oldest first; the last one is the active segment.
    segments: VecDeque<Segment>,
    /// The active segment, open for appending.
    active: Option<File>,
    /// Unacked batches by `batch_seq`; their records' places.
    unacked: BTreeMap<u64, Entry>,
    next_batch_seq: u64,
    total_bytes: u64,
    /// Ack records written since the last fsync.
    unsynced: bool,
}

/// One record found while scanning a segment.
enum Scanned {
    Batch { offset: u64, batch: SampleBatch },
    Ack { batch_seq: u64 },
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering what a previous run left:
    /// torn tails are truncated, damaged records skipped, fully acked segments deleted.
    /// Waits up to [`LOCK_WAIT`] for the directory's lock.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<(Self, Recovery), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock = lock_dir(dir)?;
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut unacked: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut next_batch_seq = 1u64;
        for (first_seq, path) in list_segments(dir)? {
            next_batch_seq = next_batch_seq.max(first_seq.saturating_add(1));
            let (records, bytes) = scan_segment(&path, &mut recovery)?;
            for record in records {
                match record {
                    Scanned::Batch { offset, batch } => {
                        next_batch_seq = next_batch_seq.max(batch.batch_seq.saturating_add(1));
                        let meta = BatchMeta::of(&batch);
                        unacked.insert(
                            meta.batch_seq,
                            Entry {
                                segment: first_seq,
                                offset,
                                meta,
                            },
                        );
                    }
                    Scanned::Ack { batch_seq } => {
                        next_batch_seq = next_batch_seq.max(batch_seq.saturating_add(1));
                        unacked.remove(&batch_seq);
                    }
                }
            }
            segments.push_back(Segment {
                first_seq,
                path,
                bytes,
                unacked: 0,
            });
        }
        for e in unacked.values() {
            if let Some(s) = segments.iter_mut().find(|s| s.first_seq == e.segment) {
                s.unacked += 1;
            }
        }
        recovery.segments = segments.len();
        recovery.unacked_batches = unacked.len();
        recovery.unacked_samples = unacked.values().map(|e| e.meta.samples).sum();
        let active = match segments.back() {
            Some(s) => Some(open_append(&s.path)?),
            None => None,
        };
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let mut spool = Self {
            dir: dir.to_owned(),
            limits,
            _lock: lock,
            segments,
            active,
            unacked,
            next_batch_seq,
            total_bytes,
            unsynced: false,
        };
        spool.delete_acked_prefix()?;
        if recovery.damaged_records() > 0 {
            tracing::warn!(
                dir = %dir.display(),
                torn_tails = recovery.torn_tails,
                torn_bytes = recovery.torn_bytes,
                corrupt_records = recovery.corrupt_records,
                "spool recovered with damage"
            );
        }
        tracing::info!(
            dir = %dir.display(),
            segments = spool.segments.len(),
            bytes = spool.total_bytes,
            unacked_batches = recovery.unacked_batches,
            unacked_samples = recovery.unacked_samples,
            next_batch_seq,
            "spool opened"
        );
        Ok((spool, recovery))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `batch_seq` the next new batch must have (higher than any in the spool's history).
    pub fn next_batch_seq(&self) -> u64 {
        self.next_batch_seq
    }

    /// The unacked batches, oldest first.
    pub fn unacked(&self) -> Vec<BatchMeta> {
        self.unacked.values().map(|e| e.meta).collect()
    }

    /// Bytes on disk (all segments).
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Appends `batch` and fsyncs it; on return it survives a crash. If the spool would go
    /// past its bound, the oldest segments are dropped first (drop-oldest, see the module doc)
    /// and what was dropped is returned. `batch.batch_seq` must not be lower than
    /// [`Spool::next_batch_seq`].
    pub fn append(&mut self, batch: &SampleBatch) -> Result<Dropped, SpoolError> {
        let seq = batch.batch_seq;
        let payload = batch.encode_to_vec();
        if payload.len() > MAX_PAYLOAD_BYTES as usize {
            return Err(SpoolError::TooLarge {
                path: self.dir.clone(),
                batch_seq: seq,
                bytes: payload.len(),
            });
        }
        let record_bytes = HEADER_BYTES + payload.len() as u64;
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes > 0 && s.bytes + record_bytes > self.limits.segment_bytes)
        {
            self.rotate(seq)?;
        }
        let mut dropped = Dropped::default();
        while self.total_bytes + record_bytes > self.limits.max_bytes {
            if self.segments.len() > 1 {
                self.drop_oldest(&mut dropped)?;
            } else if self.segments.back().is_some_and(|s| s.bytes > 0) {
                self.rotate(seq)?;
            } else {
                break; // a batch larger than the whole spool: kept anyway
            }
        }
        if self.segments.is_empty() {
            self.rotate(seq)?;
        }
        let offset = self.write_record(KIND_BATCH, &payload)?;
        let (path, file) = self.active_file()?;
        file.sync_data().map_err(io_err("fsync", &path))?;
        self.unsynced = false;
        let segment = self.segments.back_mut().map_or(0, |s| {
            s.unacked += 1;
            s.first_seq
        });
        let meta = BatchMeta::of(batch);
        self.unacked.insert(
            seq,
            Entry {
                segment,
                offset,
                meta,
            },
        );
        self.next_batch_seq = self.next_batch_seq.max(seq.saturating_add(1));
        if !dropped.is_empty() {
            tracing::warn!(
                dir = %self.dir.display(),
                max_bytes = self.limits.max_bytes,
                batches = dropped.batch_seqs.len(),
                samples = dropped.samples,
                first_batch_seq = dropped.batch_seqs.first().copied(),
                last_batch_seq = dropped.batch_seqs.last().copied(),
                from_unix_ms = dropped.first_start_ms,
                to_unix_ms = dropped.last_end_ms,
                "spool full: dropped the oldest unacked batches"
            );
        }
        Ok(dropped)
    }

    /// Records that `batch_seq` was acked (or is to be forgotten): it will not be replayed,
    /// and segments holding only acked batches are deleted. Returns false for a batch that is
    /// not in the spool (never spooled, acked already, or dropped). The ack record is not
    /// fsynced here (see the module doc).
    pub fn ack(&mut self, batch_seq: u64) -> Result<bool, SpoolError> {
        let Some(entry) = self.unacked.get(&batch_seq).copied() else {
            return Ok(false);
        };
        self.write_record(KIND_ACK, &batch_seq.to_le_bytes())?;
        self.unsynced = true;
        self.unacked.remove(&batch_seq);
        if let Some(s) = self
            .segments
            .iter_mut()
            .find(|s| s.first_seq == entry.segment)
        {
            s.unacked = s.unacked.saturating_sub(1);
        }
        self.delete_acked_prefix()?;
        Ok(true)
    }

    /// Reads an unacked batch back, checking its CRC.
    pub fn read(&self, batch_seq: u64) -> Result<SampleBatch, SpoolError> {
        let not_found = || SpoolError::NotFound {
            path: self.dir.clone(),
            batch_seq,
        };
        let entry = self.unacked.get(&batch_seq).ok_or_else(not_found)?;
        let segment = self
            .segments
            .iter()
            .find(|s| s.first_seq == entry.segment)
            .ok_or_else(not_found)?;
        let path = &segment.path;
        let mut file = File::open(path).map_err(io_err("open", path))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(io_err("seek", path))?;
        let mut header = [0u8; HEADER_BYTES as usize];
        file.read_exact(&mut header).map_err(io_err("read", path))?;
        let damaged = |reason: String| SpoolError::Damaged {
            path: path.clone(),
            offset: entry.offset,
            reason,
        };
        let (len, kind, crc) = parse_header(&header);
        if kind != KIND_BATCH || len > MAX_PAYLOAD_BYTES {
            return Err(damaged(format!("bad header: kind {kind}, length {len}")));
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact(&mut payload)
            .map_err(io_err("read", path))?;
        if record_crc(len, kind, &payload) != crc {
            return Err(damaged("checksum mismatch".into()));
        }
        let batch = SampleBatch::decode(payload.as_slice())
            .map_err(|e| damaged(format!("does not decode: {e}")))?;
        if batch.batch_seq != batch_seq {
            return Err(damaged(format!(
                "holds batch {} instead of {batch_seq}",
                batch.batch_seq
            )));
        }
        Ok(batch)
    }

    /// Fsyncs ack records written since the last batch (at shutdown).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            let (path, file) = self.active_file()?;
            file.sync_data().map_err(io_err("fsync", &path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn active_file(&mut self) -> Result<(PathBuf, &mut File), SpoolError> {
        let path = self
            .segments
            .back()
            .map_or_else(|| self.dir.clone(), |s| s.path.clone());
        match self.active.as_mut() {
            Some(f) => Ok((path, f)),
            None => Err(SpoolError::Io {
                op: "write to",
                path,
                source: std::io::Error::other("no active segment"),
            }),
        }
    }

    /// Writes one record at the end of the active segment; returns its offset. On failure
    /// the segment is cut back to its previous length, so no partial record stays behind.
    fn write_record(&mut self, kind: u8, payload: &[u8]) -> Result<u64, SpoolError> {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(HEADER_BYTES as usize + payload.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.push(kind);
        buf.extend_from_slice(&record_crc(len, kind, payload).to_le_bytes());
        buf.extend_from_slice(payload);
        let offset = self.segments.back().map_or(0, |s| s.bytes);
        let (path, file) = self.active_file()?;
        if let Err(e) = file.write_all(&buf) {
            let _ = file.set_len(offset);
            return Err(SpoolError::Io {
                op: "append to",
                path,
                source: e,
            });
        }
        if let Some(s) = self.segments.back_mut() {
            s.bytes += buf.len() as u64;
        }
        self.total_bytes += buf.len() as u64;
        Ok(offset)
    }

    /// Seals the active segment (fsyncing its ack records) and starts `seg-<first_seq>.log`.
    fn rotate(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        self.sync()?;
        let path = self.dir.join(segment_name(first_seq));
        let file = open_append(&path)?;
        sync_dir(&self.dir)?;
        let bytes = file.metadata().map_err(io_err("stat", &path))?.len();
        self.total_bytes += bytes;
        self.active = Some(file);
        self.segments.push_back(Segment {
            first_seq,
            path,
            bytes,
            unacked: 0,
        });
        self.delete_acked_prefix()
    }

    /// Drops the oldest (sealed) segment with its unacked batches.
    fn drop_oldest(&mut self, dropped: &mut Dropped) -> Result<(), SpoolError> {
        let Some(segment) = self.segments.pop_front() else {
            return Ok(());
        };
        let seqs: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, e)| e.segment == segment.first_seq)
            .map(|(&q, _)| q)
            .collect();
        for q in seqs {
            if let Some(e) = self.unacked.remove(&q) {
                dropped.add(&e.meta);
            }
        }
        self.remove_segment_file(&segment)
    }

    /// Deletes sealed segments from the oldest on while they hold no unacked batch.
    fn delete_acked_prefix(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.unacked == 0) {
            if let Some(segment) = self.segments.pop_front() {
                self.remove_segment_file(&segment)?;
            }
        }
        Ok(())
    }

    fn remove_segment_file(&mut self, segment: &Segment) -> Result<(), SpoolError> {
        self.total_bytes = self.total_bytes.saturating_sub(segment.bytes);
        match fs::remove_file(&segment.path) {
            Ok(()) => {}
            // Its batches are acked or dropped already; if the file comes back they are
            // replayed once more, which is safe.
            Err(e) => tracing::error!(
                path = %segment.path.display(),
                error = %e,
                "cannot delete a spool segment"
            ),
        }
        sync_dir(&self.dir)
    }
}

/// A [`Spool`] shared with blocking tasks: every operation runs on tokio's blocking pool, so
/// file I/O and fsync never stall the async runtime.
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    dir: PathBuf,
}

impl SharedSpool {
    /// Wraps an open spool.
    pub fn new(spool: Spool) -> Self {
        let dir = spool.dir().to_owned();
        Self {
            inner: Arc::new(Mutex::new(spool)),
            dir,
        }
    }

    /// Runs `f` on the spool in a blocking task and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, SpoolError>
    where
        F: FnOnce(&mut Spool) -> Result<R, SpoolError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-written record behind (writes
            // are cut back on failure), so a poisoned lock is still usable.
            let mut spool = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut spool)
        })
        .await
        .map_err(|e| SpoolError::Worker {
            path: self.dir.clone(),
            message: e.to_string(),
        })?
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The segment files in `dir`, by first `batch_seq`.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let seq = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn parse_header(h: &[u8; HEADER_BYTES as usize]) -> (u32, u8, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
    (len, h[4], crc)
}

fn record_crc(len: u32, kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Reads a segment's records, truncating a torn tail (and an unreadable rest) in place.
/// Returns the records and the segment's length afterwards.
fn scan_segment(path: &Path, rec: &mut Recovery) -> Result<(Vec<Scanned>, u64), SpoolError> {
    let data = fs::read(path).map_err(io_err("read", path))?;
    let file_len = data.len() as u64;
    let mut records = Vec::new();
    let mut pos = 0usize;
    // Where valid data ends; everything after it is truncated.
    let mut keep = file_len;
    while pos < data.len() {
        let offset = pos as u64;
        let Some(header) = data
            .get(pos..pos + HEADER_BYTES as usize)
            .and_then(|h| <&[u8; HEADER_BYTES as usize]>::try_from(h).ok())
        else {
            tracing::warn!(path = %path.display(), offset, "spool: torn tail (partial header); truncating");
            rec.torn_tails += 1;
            keep = offset;
            break;
        };
        let (len, kind, crc) = parse_header(header);
        let sane = match kind {
            KIND_BATCH => len <= MAX_PAYLOAD_BYTES,
            KIND_ACK => len == 8,
            _ => false,
        };
        let start = pos + HEADER_BYTES as usize;
        let end = start.saturating_add(len as usize);
        if sane && end > data.len() {
            tracing::warn!(path = %path.display(), offset, "spool: torn tail (partial record); truncating");
            rec.torn_tails += 1;
            keep = offset;
            break;
        }
        if !sane {
            tracing::error!(
                path = %path.display(),
                offset,
                kind,
                len,
                lost_bytes = file_len - offset,
                "spool: damaged record header; the rest of the segment cannot be read and is truncated"
            );
            rec.corrupt_records += 1;
            keep = offset;
            break;
        }
        let payload = &data[start..end];
        let is_last = end == data.len();
        if record_crc(len, kind, payload) != crc {
            if is_last {
                tracing::warn!(path = %path.display(), offset, "spool: torn tail (checksum mismatch in the last record); truncating");
                rec.torn_tails += 1;
                keep = offset;
                break;
            }
            tracing::error!(path = %path.display(), offset, "spool: damaged record (checksum mismatch); skipped");
            rec.corrupt_records += 1;
            pos = end;
            continue;
        }
        match kind {
            KIND_BATCH => match SampleBatch::decode(payload) {
                Ok(batch) => records.push(Scanned::Batch { offset, batch }),
                Err(e) => {
                    tracing::error!(path = %path.display(), offset, error = %e, "spool: batch record does not decode; skipped");
                    rec.corrupt_records += 1;
                }
            },
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(payload);
                records.push(Scanned::Ack {
                    batch_seq: u64::from_le_bytes(b),
                });
            }
        }
        pos = end;
    }
    if keep < file_len {
        rec.torn_bytes += file_len - keep;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        file.set_len(keep).map_err(io_err("truncate", path))?;
        file.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok((records, keep))
}

fn open_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Makes file creations and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Takes the spool's advisory lock, waiting up to [`LOCK_WAIT`] (a previous instance may still
/// be finishing its last write). The lock goes with the process, so a killed agent never
/// leaves it behind.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let began = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if began.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    path: dir.to_owned(),
                    waited: began.elapsed(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_proto::v1::Sample;

    fn batch(seq: u64, samples: u64) -> SampleBatch {
        SampleBatch {
            host_id: "h".into(),
            batch_seq: seq,
            samples: (0..samples)
                .map(|i| Sample {
                    gpu_uuid: "GPU-1".into(),
                    seq: seq * 1000 + i,
                    start_unix_ms: (seq * 1000 + i) as i64,
                    end_unix_ms: (seq * 1000 + i + 1) as i64,
                    ..Sample::default()
                })
                .collect(),
        }
    }

    #[test]
    fn the_record_layout_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::new(1 << 20)).unwrap();
        let b = batch(1, 2);
        s.append(&b).unwrap();
        assert!(s.ack(1).unwrap());
        assert!(!s.ack(1).unwrap());
        let data = fs::read(dir.path().join(segment_name(1))).unwrap();
        let payload = b.encode_to_vec();
        let len = payload.len() as u32;
        assert_eq!(&data[0..4], &len.to_le_bytes());
        assert_eq!(data[4], KIND_BATCH);
        assert_eq!(
            &data[5..9],
            &record_crc(len, KIND_BATCH, &payload).to_le_bytes()
        );
        assert_eq!(&data[9..9 + payload.len()], &payload[..]);
        let ack = &data[9 + payload.len()..];
        assert_eq!(ack.len(), 9 + 8);
        assert_eq!(&ack[0..5], &[8, 0, 0, 0, KIND_ACK]);
        assert_eq!(&ack[9..], &1u64.to_le_bytes());
    }

    #[test]
    fn an_open_spool_holds_its_directory_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, _) = Spool::open(dir.path(), SpoolLimits::new(1 << 20)).unwrap();
        // A separate open file description conflicts even within one process.
        let lock = OpenOptions::new()
            .write(true)
            .open(dir.path().join(LOCK_FILE))
            .unwrap();
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    }
}
