//! The on-disk record format (see the parent module's doc) and the recovery scan of a segment.
//!
//! Invariant: a record is accepted only if its header is sane and its CRC matches; anything
//! else is a torn tail (truncated) or a damaged record (skipped and counted), never an error
//! that keeps the spool from opening.

use super::error::io_err;
use super::{Recovery, SpoolError, HEADER_BYTES};
use prost::Message;
use std::fs::{self, OpenOptions};
use std::path::Path;
use wattprint_proto::v1::SampleBatch;

/// A payload longer than this cannot be a record of ours: the header is damaged.
pub(super) const MAX_PAYLOAD_BYTES: u32 = 256 * 1024 * 1024;
pub(super) const KIND_BATCH: u8 = 1;
pub(super) const KIND_ACK: u8 = 2;

/// One record found while scanning a segment.
pub(super) enum Scanned {
    Batch { offset: u64, batch: SampleBatch },
    Ack { batch_seq: u64 },
}

pub(super) fn parse_header(h: &[u8; HEADER_BYTES as usize]) -> (u32, u8, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
    (len, h[4], crc)
}

pub(super) fn record_crc(len: u32, kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Reads a segment's records, truncating a torn tail (and an unreadable rest) in place.
/// Returns the records and the segment's length afterwards.
pub(super) fn scan_segment(
    path: &Path,
    rec: &mut Recovery,
) -> Result<(Vec<Scanned>, u64), SpoolError> {
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
