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

mod dir;
mod error;
mod record;
mod shared;

pub use error::SpoolError;
pub use shared::SharedSpool;

use dir::{list_segments, lock_dir, open_append, segment_name, sync_dir};
use error::io_err;
use prost::Message;
use record::{
    parse_header, record_crc, scan_segment, Scanned, KIND_ACK, KIND_BATCH, MAX_PAYLOAD_BYTES,
};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
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

#[cfg(test)]
mod tests {
    use super::dir::LOCK_FILE;
    use super::*;
    use std::fs::{OpenOptions, TryLockError};
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
