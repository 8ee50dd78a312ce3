//! The records on the topics: samples as protobuf `SampleBatch` per GPU, dead letters as
//! protobuf `DeadLetter`. Decoding never fails: what cannot be read becomes a dead letter.

use crate::{BusMessage, DeadLetter, DeadLetterPayload};
use prost::Message as _;
use std::collections::HashMap;
use wattprint_core::sample::EnergySample;
use wattprint_core::{GpuUuid, HostId, UnixMillis};
use wattprint_proto::v1::SampleBatch;

/// One record to produce: its key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    /// Partitioning key (GPU uuid, or host).
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// Splits samples per GPU (in order of first appearance, each GPU's samples in their order)
/// into `SampleBatch` records keyed by GPU uuid, at most `max_per_record` samples each.
pub fn encode_samples(samples: &[EnergySample], max_per_record: usize) -> Vec<EncodedRecord> {
    let mut groups: Vec<(&HostId, &GpuUuid, Vec<&EnergySample>)> = Vec::new();
    let mut index: HashMap<(&HostId, &GpuUuid), usize> = HashMap::new();
    for s in samples {
        let i = *index.entry((&s.host, &s.gpu)).or_insert_with(|| {
            groups.push((&s.host, &s.gpu, Vec::new()));
            groups.len() - 1
        });
        groups[i].2.push(s);
    }
    let mut records = Vec::with_capacity(groups.len());
    for (host, gpu, samples) in groups {
        for chunk in samples.chunks(max_per_record.max(1)) {
            let batch = SampleBatch {
                host_id: host.as_str().to_owned(),
                batch_seq: 0,
                samples: chunk
                    .iter()
                    .map(|s| wattprint_proto::sample_to_wire(s))
                    .collect(),
            };
            records.push(EncodedRecord {
                key: gpu.as_str().to_owned(),
                value: batch.encode_to_vec(),
            });
        }
    }
    records
}

/// One protobuf `DeadLetter` record per dead letter, keyed by GPU uuid (or host when there is
/// none).
pub fn encode_dead_letters(letters: &[DeadLetter]) -> Vec<EncodedRecord> {
    letters
        .iter()
        .map(|d| EncodedRecord {
            key: d.key().to_owned(),
            value: wattprint_proto::v1::DeadLetter::from(d).encode_to_vec(),
        })
        .collect()
}

/// Where a record came from, for quarantine reasons and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOrigin {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, if any and UTF-8.
    pub key: Option<String>,
}

impl std::fmt::Display for RecordOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

pub(crate) fn undecodable(origin: &RecordOrigin, value: Option<&[u8]>, error: &str) -> DeadLetter {
    tracing::error!(
        topic = %origin.topic,
        partition = origin.partition,
        offset = origin.offset,
        %error,
        "undecodable record quarantined"
    );
    DeadLetter {
        received_at: UnixMillis::now(),
        host: HostId::new("unknown"),
        gpu: origin
            .key
            .as_ref()
            .filter(|k| !k.is_empty() && k.len() <= wattprint_proto::MAX_ID_LEN)
            .map(|k| GpuUuid::new(k.clone())),
        seq: None,
        reason: format!("undecodable record on {origin}: {error}"),
        payload: DeadLetterPayload::Raw(value.map(<[u8]>::to_vec).unwrap_or_default()),
    }
}

/// Decodes a samples-topic record into bus messages: the valid samples, and a quarantine
/// message for what could not be decoded (the whole record, or single samples). Never fails.
pub fn decode_samples_record(origin: &RecordOrigin, value: Option<&[u8]>) -> Vec<BusMessage> {
    let Some(bytes) = value else {
        return vec![BusMessage::DeadLetters(vec![undecodable(
            origin,
            None,
            "record has no value",
        )])];
    };
    let batch = match SampleBatch::decode(bytes) {
        Ok(batch) => batch,
        Err(e) => {
            return vec![BusMessage::DeadLetters(vec![undecodable(
                origin,
                Some(bytes),
                &format!("not a wattprint.v1.SampleBatch: {e}"),
            )])]
        }
    };
    if batch.host_id.is_empty() || batch.host_id.len() > wattprint_proto::MAX_ID_LEN {
        return vec![BusMessage::DeadLetters(vec![undecodable(
            origin,
            Some(bytes),
            "SampleBatch host_id must be 1 to 128 bytes",
        )])];
    }
    let host = HostId::new(batch.host_id.clone());
    let mut samples = Vec::with_capacity(batch.samples.len());
    let mut quarantine = Vec::new();
    for wire in &batch.samples {
        match wattprint_proto::sample_from_wire(&host, wire) {
            Ok(s) => samples.push(s),
            Err(reason) => {
                tracing::error!(%origin, gpu = %wire.gpu_uuid, seq = wire.seq, %reason, "undecodable sample quarantined");
                quarantine.push(DeadLetter {
                    received_at: UnixMillis::now(),
                    host: host.clone(),
                    gpu: (!wire.gpu_uuid.is_empty()).then(|| GpuUuid::new(wire.gpu_uuid.clone())),
                    seq: Some(wire.seq),
                    reason: format!("undecodable sample in record on {origin}: {reason}"),
                    payload: DeadLetterPayload::Text(wattprint_proto::sample_to_json(wire)),
                });
            }
        }
    }
    let mut messages = Vec::with_capacity(2);
    if !samples.is_empty() || quarantine.is_empty() {
        messages.push(BusMessage::Samples(samples));
    }
    if !quarantine.is_empty() {
        messages.push(BusMessage::DeadLetters(quarantine));
    }
    messages
}

/// Decodes a dead-letter-topic record; an undecodable one becomes a dead letter about it.
pub fn decode_dead_letter_record(origin: &RecordOrigin, value: Option<&[u8]>) -> BusMessage {
    let record = match value {
        None => undecodable(origin, None, "record has no value"),
        Some(bytes) => match wattprint_proto::v1::DeadLetter::decode(bytes) {
            Ok(letter) => DeadLetter::from(letter),
            Err(e) => undecodable(
                origin,
                Some(bytes),
                &format!("not a wattprint.v1.DeadLetter: {e}"),
            ),
        },
    };
    BusMessage::DeadLetters(vec![record])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{DEAD_LETTER_TOPIC, SAMPLES_TOPIC};
    use wattprint_core::sample::{Attribution, EnergySource};
    use wattprint_core::{InstanceId, Millijoules, Milliwatts, UnixMillis};

    fn sample(host: &str, gpu: &str, seq: u64) -> EnergySample {
        EnergySample {
            host: HostId::from(host),
            gpu: GpuUuid::from(gpu),
            instance: InstanceId::from("i-1"),
            seq,
            start: UnixMillis(1000 * seq as i64),
            end: UnixMillis(1000 * seq as i64 + 1000),
            energy: Millijoules(300_000 + seq),
            power: Milliwatts(300_000),
            power_max: Milliwatts(310_000),
            util_gpu_pct: 50,
            mem_used_bytes: 1 << 30,
            temp_c: 40,
            sm_clock_mhz: 1980,
            chain_start: seq == 0,
            energy_source: EnergySource::Counter,
            attribution: Attribution::Exclusive,
        }
    }

    fn origin(topic: &str) -> RecordOrigin {
        RecordOrigin {
            topic: topic.into(),
            partition: 2,
            offset: 7,
            key: Some("GPU-A".into()),
        }
    }

    #[test]
    fn samples_are_split_per_gpu_in_order_and_chunked() {
        let samples = vec![
            sample("h", "GPU-A", 1),
            sample("h", "GPU-B", 1),
            sample("h", "GPU-A", 2),
            sample("h", "GPU-A", 3),
            sample("h", "GPU-B", 2),
        ];
        let records = encode_samples(&samples, 2);
        let keys: Vec<_> = records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["GPU-A", "GPU-A", "GPU-B"]);
        let decoded: Vec<Vec<u64>> = records
            .iter()
            .map(|r| {
                let batch = SampleBatch::decode(r.value.as_slice()).unwrap();
                assert_eq!(batch.host_id, "h");
                batch.samples.iter().map(|s| s.seq).collect()
            })
            .collect();
        assert_eq!(decoded, vec![vec![1, 2], vec![3], vec![1, 2]]);
        // Round trip back to the same core samples.
        let back: Vec<EnergySample> = records
            .iter()
            .flat_map(|r| decode_samples_record(&origin(SAMPLES_TOPIC), Some(&r.value)))
            .flat_map(|m| match m {
                BusMessage::Samples(s) => s,
                BusMessage::DeadLetters(d) => panic!("{d:?}"),
            })
            .collect();
        let mut expected = samples.clone();
        expected.sort_by(|a, b| (&a.gpu, a.seq).cmp(&(&b.gpu, b.seq)));
        assert_eq!(back, expected);
    }

    #[test]
    fn garbage_becomes_a_quarantine_record_with_the_decode_error() {
        let o = origin(SAMPLES_TOPIC);
        let got = decode_samples_record(&o, Some(&[0xff, 0xff, 0xff, 0x01]));
        let [BusMessage::DeadLetters(d)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert!(
            d[0].reason.starts_with(
                "undecodable record on wattprint.samples.v1 partition 2 offset 7: not a wattprint.v1.SampleBatch"
            ),
            "{}",
            d[0].reason
        );
        assert_eq!(
            d[0].payload,
            DeadLetterPayload::Raw(vec![0xff, 0xff, 0xff, 0x01])
        );
        assert_eq!(d[0].gpu, Some(GpuUuid::from("GPU-A")));
        let got = decode_samples_record(&o, None);
        assert!(
            matches!(&got[..], [BusMessage::DeadLetters(d)] if d[0].reason.ends_with("record has no value"))
        );
        let got = decode_dead_letter_record(&origin(DEAD_LETTER_TOPIC), Some(b"{not protobuf"));
        let BusMessage::DeadLetters(d) = got else {
            panic!()
        };
        assert!(
            d[0].reason.contains("not a wattprint.v1.DeadLetter"),
            "{}",
            d[0].reason
        );
    }

    #[test]
    fn a_bad_sample_in_a_good_record_is_quarantined_alone() {
        let mut batch = SampleBatch {
            host_id: "h".into(),
            batch_seq: 0,
            samples: vec![
                wattprint_proto::sample_to_wire(&sample("h", "GPU-A", 1)),
                wattprint_proto::sample_to_wire(&sample("h", "GPU-A", 2)),
            ],
        };
        batch.samples[1].energy_source = 99;
        let got = decode_samples_record(&origin(SAMPLES_TOPIC), Some(&batch.encode_to_vec()));
        let [BusMessage::Samples(s), BusMessage::DeadLetters(d)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!(s, &vec![sample("h", "GPU-A", 1)]);
        assert_eq!(d[0].seq, Some(2));
        assert!(d[0].reason.contains("energy_source 99"), "{}", d[0].reason);
    }

    #[test]
    fn dead_letters_round_trip_as_protobuf_keyed_by_gpu_or_host() {
        let letters = vec![
            DeadLetter {
                received_at: UnixMillis(5),
                host: HostId::from("h"),
                gpu: Some(GpuUuid::from("GPU-A")),
                seq: Some(3),
                reason: "why".into(),
                payload: DeadLetterPayload::Text("{}".into()),
            },
            DeadLetter {
                received_at: UnixMillis(6),
                host: HostId::from("h"),
                gpu: None,
                seq: None,
                reason: "no gpu".into(),
                payload: DeadLetterPayload::Raw(vec![0, 0xff]),
            },
        ];
        let encoded = encode_dead_letters(&letters);
        assert_eq!(encoded[0].key, "GPU-A");
        assert_eq!(encoded[1].key, "h");
        let wire = wattprint_proto::v1::DeadLetter::decode(encoded[1].value.as_slice()).unwrap();
        assert_eq!(
            wire.payload,
            Some(wattprint_proto::v1::dead_letter::Payload::Raw(vec![
                0, 0xff
            ]))
        );
        for (e, d) in encoded.iter().zip(&letters) {
            assert_eq!(
                decode_dead_letter_record(&origin(DEAD_LETTER_TOPIC), Some(&e.value)),
                BusMessage::DeadLetters(vec![d.clone()])
            );
        }
    }
}
