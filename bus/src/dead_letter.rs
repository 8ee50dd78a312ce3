//! The dead-letter record: what the bus carries about a refusal, independent of how a store
//! keeps it. On Kafka it travels as protobuf `wattprint.v1.DeadLetter`, with undecodable bytes
//! kept as received.

use std::fmt::Write as _;
use wattprint_core::{GpuUuid, HostId, UnixMillis};

/// Most bytes of an undecodable payload shown (hex) by [`DeadLetterPayload::to_text`].
pub const MAX_SHOWN_BYTES: usize = 16 * 1024;

/// A refused sample or message: who sent it, why it was refused, what was received.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// When it was refused.
    pub received_at: UnixMillis,
    /// Host that sent it (`unknown` when it could not be read).
    pub host: HostId,
    /// GPU, when it could be read.
    pub gpu: Option<GpuUuid>,
    /// Sequence number, when it could be read.
    pub seq: Option<u64>,
    /// Why it was refused.
    pub reason: String,
    /// What was received.
    pub payload: DeadLetterPayload,
}

/// What a dead letter holds of the refused input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterPayload {
    /// A readable form: the sample as JSON (replayable), a summary of a refused message, or
    /// nothing (empty) when nothing could be read.
    Text(String),
    /// Bytes that could not be decoded, as received.
    Raw(Vec<u8>),
}

impl DeadLetterPayload {
    /// The payload as text for people and the quarantine: text as it is, raw bytes as hex (at
    /// most [`MAX_SHOWN_BYTES`] of them, then the total length).
    pub fn to_text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Raw(bytes) => hex(bytes),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
    let mut out = String::with_capacity(shown.len() * 2 + 32);
    for b in shown {
        let _ = write!(out, "{b:02x}");
    }
    if shown.len() < bytes.len() {
        let _ = write!(out, "… ({} bytes in all)", bytes.len());
    }
    out
}

impl DeadLetter {
    /// The partitioning key: the GPU uuid, or the host when there is none.
    pub fn key(&self) -> &str {
        self.gpu
            .as_ref()
            .map_or_else(|| self.host.as_str(), GpuUuid::as_str)
    }
}

impl From<&DeadLetter> for wattprint_proto::v1::DeadLetter {
    fn from(d: &DeadLetter) -> Self {
        use wattprint_proto::v1::dead_letter::Payload;
        Self {
            received_at_unix_ms: d.received_at.0,
            host_id: d.host.as_str().to_owned(),
            gpu_uuid: d.gpu.as_ref().map(|g| g.as_str().to_owned()),
            seq: d.seq,
            reason: d.reason.clone(),
            payload: Some(match &d.payload {
                DeadLetterPayload::Text(t) => Payload::Text(t.clone()),
                DeadLetterPayload::Raw(b) => Payload::Raw(b.clone()),
            }),
        }
    }
}

impl From<wattprint_proto::v1::DeadLetter> for DeadLetter {
    fn from(d: wattprint_proto::v1::DeadLetter) -> Self {
        use wattprint_proto::v1::dead_letter::Payload;
        Self {
            received_at: UnixMillis(d.received_at_unix_ms),
            host: HostId::new(d.host_id),
            gpu: d.gpu_uuid.map(GpuUuid::new),
            seq: d.seq,
            reason: d.reason,
            payload: match d.payload {
                Some(Payload::Raw(b)) => DeadLetterPayload::Raw(b),
                Some(Payload::Text(t)) => DeadLetterPayload::Text(t),
                None => DeadLetterPayload::Text(String::new()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_payloads_show_as_hex_capped_with_the_length() {
        assert_eq!(DeadLetterPayload::Raw(vec![0xff, 0x01]).to_text(), "ff01");
        let long = DeadLetterPayload::Raw(vec![0xab; MAX_SHOWN_BYTES + 3]).to_text();
        assert!(long.ends_with(&format!("… ({} bytes in all)", MAX_SHOWN_BYTES + 3)));
        assert_eq!(long.matches("ab").count(), MAX_SHOWN_BYTES);
        assert_eq!(DeadLetterPayload::Text("{}".into()).to_text(), "{}");
    }
}
