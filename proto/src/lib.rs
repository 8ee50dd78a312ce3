//! The `wattprint.v1` wire contract and its boundary: conversions from wire messages to core
//! types, where malformed input is turned into a clear [`SampleRejection`].

use wattprint_core::sample::{Attribution, EnergySample, EnergySource, SampleRejection};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

/// Generated messages and services of package `wattprint.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("wattprint.v1");
}

impl From<EnergySource> for v1::EnergySource {
    fn from(s: EnergySource) -> Self {
        match s {
            EnergySource::Counter => v1::EnergySource::Counter,
            EnergySource::PowerIntegration => v1::EnergySource::PowerIntegration,
            EnergySource::CounterBridged => v1::EnergySource::CounterBridged,
        }
    }
}

impl From<Attribution> for v1::Attribution {
    fn from(a: Attribution) -> Self {
        match a {
            Attribution::Exclusive => v1::Attribution::Exclusive,
            Attribution::ApportionedMig => v1::Attribution::ApportionedMig,
            Attribution::ApportionedVgpu => v1::Attribution::ApportionedVgpu,
            Attribution::GuestReported => v1::Attribution::GuestReported,
        }
    }
}

/// Encodes a core sample for the wire.
pub fn sample_to_wire(s: &EnergySample) -> v1::Sample {
    v1::Sample {
        gpu_uuid: s.gpu.0.clone(),
        instance_id: s.instance.0.clone(),
        seq: s.seq,
        start_unix_ms: s.start.0,
        end_unix_ms: s.end.0,
        energy_mj: s.energy.0,
        power_mw: s.power.0,
        power_max_mw: s.power_max.0,
        util_gpu_pct: s.util_gpu_pct,
        mem_used_bytes: s.mem_used_bytes,
        temp_c: s.temp_c,
        sm_clock_mhz: s.sm_clock_mhz,
        chain_start: s.chain_start,
        energy_source: v1::EnergySource::from(s.energy_source) as i32,
        attribution: v1::Attribution::from(s.attribution) as i32,
    }
}

/// Longest GPU uuid or instance id accepted (NVML uuids are 40 characters).
pub const MAX_ID_LEN: usize = 128;

fn checked_id(field: &str, value: &str) -> Result<(), SampleRejection> {
    if value.is_empty() {
        return Err(SampleRejection::Malformed(format!("{field} is empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(SampleRejection::Malformed(format!(
            "{field} is {} bytes, longer than {MAX_ID_LEN}",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(SampleRejection::Malformed(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// Decodes a wire sample from `host`; unknown enums, empty ids and the like are rejected.
pub fn sample_from_wire(host: &HostId, s: &v1::Sample) -> Result<EnergySample, SampleRejection> {
    checked_id("gpu_uuid", &s.gpu_uuid)?;
    checked_id("instance_id", &s.instance_id)?;
    let energy_source = match v1::EnergySource::try_from(s.energy_source) {
        Ok(v1::EnergySource::Counter) => EnergySource::Counter,
        Ok(v1::EnergySource::PowerIntegration) => EnergySource::PowerIntegration,
        Ok(v1::EnergySource::CounterBridged) => EnergySource::CounterBridged,
        _ => {
            return Err(SampleRejection::Malformed(format!(
                "energy_source {} is not a known value",
                s.energy_source
            )))
        }
    };
    let attribution = match v1::Attribution::try_from(s.attribution) {
        Ok(v1::Attribution::Exclusive) => Attribution::Exclusive,
        Ok(v1::Attribution::ApportionedMig) => Attribution::ApportionedMig,
        Ok(v1::Attribution::ApportionedVgpu) => Attribution::ApportionedVgpu,
        Ok(v1::Attribution::GuestReported) => Attribution::GuestReported,
        _ => {
            return Err(SampleRejection::Malformed(format!(
                "attribution {} is not a known value",
                s.attribution
            )))
        }
    };
    Ok(EnergySample {
        host: host.clone(),
        gpu: GpuUuid::new(s.gpu_uuid.clone()),
        instance: InstanceId::new(s.instance_id.clone()),
        seq: s.seq,
        start: UnixMillis(s.start_unix_ms),
        end: UnixMillis(s.end_unix_ms),
        energy: Millijoules(s.energy_mj),
        power: Milliwatts(s.power_mw),
        power_max: Milliwatts(s.power_max_mw),
        util_gpu_pct: s.util_gpu_pct,
        mem_used_bytes: s.mem_used_bytes,
        temp_c: s.temp_c,
        sm_clock_mhz: s.sm_clock_mhz,
        chain_start: s.chain_start,
        energy_source,
        attribution,
    })
}

/// A wire sample as JSON, field names as in `ingest.proto`: the readable form kept in the
/// quarantine, which [`sample_from_json`] reads back for replay.
pub fn sample_to_json(s: &v1::Sample) -> String {
    serde_json::json!({
        "gpu_uuid": s.gpu_uuid, "instance_id": s.instance_id, "seq": s.seq,
        "start_unix_ms": s.start_unix_ms, "end_unix_ms": s.end_unix_ms, "energy_mj": s.energy_mj,
        "power_mw": s.power_mw, "power_max_mw": s.power_max_mw, "util_gpu_pct": s.util_gpu_pct,
        "mem_used_bytes": s.mem_used_bytes, "temp_c": s.temp_c, "sm_clock_mhz": s.sm_clock_mhz,
        "chain_start": s.chain_start, "energy_source": s.energy_source, "attribution": s.attribution,
    })
    .to_string()
}

/// The wire sample [`sample_to_json`] wrote, or `None` when `json` is not one (every field
/// present, in range).
pub fn sample_from_json(json: &str) -> Option<v1::Sample> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let text = |k: &str| v.get(k)?.as_str().map(str::to_owned);
    let uint = |k: &str| v.get(k)?.as_u64();
    let int = |k: &str| v.get(k)?.as_i64();
    let small = |k: &str| uint(k).and_then(|n| u32::try_from(n).ok());
    Some(v1::Sample {
        gpu_uuid: text("gpu_uuid")?,
        instance_id: text("instance_id")?,
        seq: uint("seq")?,
        start_unix_ms: int("start_unix_ms")?,
        end_unix_ms: int("end_unix_ms")?,
        energy_mj: uint("energy_mj")?,
        power_mw: small("power_mw")?,
        power_max_mw: small("power_max_mw")?,
        util_gpu_pct: small("util_gpu_pct")?,
        mem_used_bytes: uint("mem_used_bytes")?,
        temp_c: small("temp_c")?,
        sm_clock_mhz: small("sm_clock_mhz")?,
        chain_start: v.get("chain_start")?.as_bool()?,
        energy_source: i32::try_from(int("energy_source")?).ok()?,
        attribution: i32::try_from(int("attribution")?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn wire() -> v1::Sample {
        v1::Sample {
            gpu_uuid: "GPU-1".into(),
            instance_id: "i-1".into(),
            seq: 7,
            start_unix_ms: 1000,
            end_unix_ms: 2000,
            energy_mj: 123_456,
            power_mw: 123_000,
            power_max_mw: 124_000,
            util_gpu_pct: 50,
            mem_used_bytes: 42,
            temp_c: 40,
            sm_clock_mhz: 1980,
            chain_start: true,
            energy_source: v1::EnergySource::Counter as i32,
            attribution: v1::Attribution::Exclusive as i32,
        }
    }

    #[test]
    fn a_sample_survives_the_round_trip_through_bytes() {
        let host = HostId::from("h");
        let core = sample_from_wire(&host, &wire()).unwrap();
        let bytes = sample_to_wire(&core).encode_to_vec();
        let back = sample_from_wire(&host, &v1::Sample::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(core, back);
        assert_eq!(back.energy, Millijoules(123_456));
    }

    #[test]
    fn malformed_fields_are_rejected_with_the_field_named() {
        let host = HostId::from("h");
        let mut w = wire();
        w.energy_source = 0;
        assert_eq!(
            sample_from_wire(&host, &w).unwrap_err().to_string(),
            "malformed sample: energy_source 0 is not a known value"
        );
        let mut w = wire();
        w.attribution = 99;
        assert!(sample_from_wire(&host, &w).is_err());
        let mut w = wire();
        w.gpu_uuid = String::new();
        assert_eq!(
            sample_from_wire(&host, &w).unwrap_err().to_string(),
            "malformed sample: gpu_uuid is empty"
        );
        let mut w = wire();
        w.instance_id = "x".repeat(500);
        assert!(sample_from_wire(&host, &w).is_err());
    }

    #[test]
    fn a_wire_sample_round_trips_through_json() {
        let wire = v1::Sample {
            gpu_uuid: "GPU-A".into(),
            instance_id: "i-1".into(),
            seq: u64::MAX,
            start_unix_ms: -5,
            end_unix_ms: 7,
            energy_mj: 1 << 60,
            power_mw: u32::MAX,
            energy_source: 99,
            ..v1::Sample::default()
        };
        assert_eq!(sample_from_json(&sample_to_json(&wire)), Some(wire));
        assert_eq!(sample_from_json("{}"), None);
        assert_eq!(sample_from_json(r#"{"batch_seq": 1, "samples": 2}"#), None);
    }
}
