//! Agent metrics (`docs/metrics.md`, "Agent"): streaming counts, the spool, the sensor's GPUs
//! (`hw.energy`/`hw.power`, provider-side, never tenant-labelled). Recorded where the events
//! happen; exported by the process's registry ([`wattprint_runtime::metrics`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use wattprint_core::sample::EnergySource;

static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Whether a stream to the gateway is open now (the agent's readiness).
pub fn gateway_connected() -> bool {
    CONNECTED.load(Ordering::Relaxed)
}
use wattprint_runtime::metrics::{self, Counter, Gauge, Histogram, KeyValue};

/// The agent's instruments.
pub(crate) struct AgentMetrics {
    read: Counter<u64>,
    pub sent: Counter<u64>,
    pub acked: Counter<u64>,
    rejected: Counter<u64>,
    pub spool_bytes: Gauge<u64>,
    pub spool_oldest_age: Gauge<f64>,
    stream_errors: Counter<u64>,
    pub connected: Gauge<u64>,
    unattributed: Counter<f64>,
    hw_energy: Counter<f64>,
    hw_power: Gauge<f64>,
    sensor_read: Histogram<f64>,
    sensor_errors: Counter<u64>,
}

/// Buckets of the sensor read histogram (seconds): an NVML read takes from ~0.1 ms to a few ms.
const SENSOR_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub(crate) static AGENT: LazyLock<AgentMetrics> = LazyLock::new(|| {
    let m = metrics::meter();
    AgentMetrics {
        read: metrics::counter(
            "wattprint.agent.samples_read",
            "Samples made from sensor readings.",
        ),
        sent: metrics::counter(
            "wattprint.agent.samples_sent",
            "Samples sent to the gateway (a resend counts again).",
        ),
        acked: metrics::counter(
            "wattprint.agent.samples_acked",
            "Samples the gateway acknowledged as stored on the bus.",
        ),
        rejected: metrics::counter(
            "wattprint.agent.samples_rejected",
            "Samples the gateway refused in its ack.",
        ),
        spool_bytes: m
            .u64_gauge("wattprint.agent.spool")
            .with_unit("By")
            .with_description("Bytes of unacknowledged batches in the spool (or memory).")
            .build(),
        spool_oldest_age: m
            .f64_gauge("wattprint.agent.spool_oldest_unacked_age")
            .with_unit("s")
            .with_description("Age of the oldest unacknowledged batch; 0 when none.")
            .build(),
        stream_errors: metrics::counter(
            "wattprint.agent.stream_errors",
            "Gateway streams that failed.",
        ),
        connected: m
            .u64_gauge("wattprint.agent.gateway_connected")
            .with_description("1 while a stream to the gateway is open.")
            .build(),
        unattributed: m
            .f64_counter("wattprint.agent.unattributed_energy")
            .with_unit("J")
            .with_description("Energy no instance could be named for (not sent).")
            .build(),
        hw_energy: m
            .f64_counter("hw.energy")
            .with_unit("J")
            .with_description("The GPU's energy counter since the agent started.")
            .build(),
        hw_power: m
            .f64_gauge("hw.power")
            .with_unit("W")
            .with_description("The GPU's latest power reading.")
            .build(),
        sensor_read: m
            .f64_histogram("wattprint.agent.sensor_read_duration")
            .with_unit("s")
            .with_description("One sensor read of one GPU (NVML or replay).")
            .with_boundaries(SENSOR_BUCKETS.to_vec())
            .build(),
        sensor_errors: metrics::counter(
            "wattprint.agent.sensor_errors",
            "Sensor failures and energy-counter resets.",
        ),
    }
});

impl AgentMetrics {
    /// One sample made from a sensor reading, by energy `source`.
    pub fn samples_read(&self, source: EnergySource) {
        let source = match source {
            EnergySource::Counter => "counter",
            EnergySource::PowerIntegration => "power_integration",
            EnergySource::CounterBridged => "counter_bridged",
        };
        self.read.add(1, &[KeyValue::new("source", source)]);
    }

    /// Energy (mJ) no instance could be named for.
    pub fn unattributed(&self, millijoules: u64) {
        if millijoules > 0 {
            self.unattributed.add(millijoules as f64 / 1000.0, &[]);
        }
    }

    /// One sample refused by the gateway for `reason` (its text).
    pub fn rejected(&self, reason: &str) {
        let kind = wattprint_core::sample::refusal_kind(reason);
        self.rejected.add(1, &[KeyValue::new("reason", kind)]);
    }

    /// A stream to the gateway opened (`true`) or ended.
    pub fn set_connected(&self, up: bool) {
        CONNECTED.store(up, Ordering::Relaxed);
        self.connected.record(u64::from(up), &[]);
    }

    /// One failed stream: `connect`, `auth`, `reset` or `timeout`.
    pub fn stream_error(&self, kind: &'static str) {
        self.stream_errors.add(1, &[KeyValue::new("kind", kind)]);
    }

    /// One sensor read (`reading`: `energy`, the full read, or `gauges`) that took `took`.
    pub fn sensor_read(&self, reading: &'static str, took: std::time::Duration) {
        self.sensor_read
            .record(took.as_secs_f64(), &[KeyValue::new("reading", reading)]);
    }

    /// A failed energy read: `gpu_lost` when the driver says the GPU is gone, else
    /// `read_failed`.
    pub fn sensor_failed(&self, error: &crate::sensor::SensorError) {
        self.sensor_errors
            .add(1, &[KeyValue::new("kind", sensor_error_kind(error))]);
    }

    /// An energy counter went backwards (driver reload, GPU reset).
    pub fn counter_reset(&self) {
        self.sensor_errors
            .add(1, &[KeyValue::new("kind", "counter_reset")]);
    }

    /// A GPU's energy since the last reading and its power now.
    pub fn gpu(&self, uuid: &str, model: &str, energy_j: f64, power_w: f64) {
        let labels = [
            KeyValue::new("hw.id", uuid.to_owned()),
            KeyValue::new("hw.type", "gpu"),
            KeyValue::new("hw.vendor", "NVIDIA"),
            KeyValue::new("hw.model", model.to_owned()),
        ];
        self.hw_energy.add(energy_j, &labels);
        self.hw_power.record(power_w, &labels);
    }
}

/// The `kind` of a failed read: `gpu_lost` for NVML's `GPU_IS_LOST` (its message, as
/// `nvml-wrapper` words it), else `read_failed`.
fn sensor_error_kind(error: &crate::sensor::SensorError) -> &'static str {
    match error {
        crate::sensor::SensorError::Nvml { message, .. }
            if message.contains("fell off the bus") =>
        {
            "gpu_lost"
        }
        _ => "read_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::SensorError;
    use nvml_wrapper::error::NvmlError;

    #[test]
    fn a_lost_gpu_is_told_from_other_read_failures() {
        let nvml = |e: NvmlError| SensorError::Nvml {
            gpu_index: 0,
            call: "total_energy_consumption",
            message: e.to_string(),
        };
        assert_eq!(sensor_error_kind(&nvml(NvmlError::GpuLost)), "gpu_lost");
        assert_eq!(sensor_error_kind(&nvml(NvmlError::Timeout)), "read_failed");
        assert_eq!(
            sensor_error_kind(&SensorError::NvmlUnavailable("no driver".into())),
            "read_failed"
        );
    }
}
