//! The NVML sensor: a clear error where there is no NVIDIA driver; real readings, and the
//! whole agent streaming real counter deltas, where there is one.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;

use common::{Behaviour, Gateway};
use std::time::Duration;
use wattprint_agent::nvml::NvmlSensor;
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sensor::{GpuSensor, SensorError};
use wattprint_agent::{run, AgentConfig};
use wattprint_core::{HostId, InstanceId};

/// The sensor, or `None` after checking that the error is the clear "unavailable" one.
fn sensor_or_clear_error() -> Option<NvmlSensor> {
    match NvmlSensor::init() {
        Err(SensorError::NvmlUnavailable(message)) => {
            let full = SensorError::NvmlUnavailable(message.clone()).to_string();
            assert!(full.starts_with("NVML is unavailable: "), "{full}");
            assert!(message.contains("libnvidia-ml.so.1"), "{message}");
            assert!(
                message.contains("replay"),
                "points at the alternative: {message}"
            );
            None
        }
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(sensor) => Some(sensor),
    }
}

#[test]
fn nvml_init_fails_clearly_without_a_driver_or_reads_a_real_gpu() {
    let Some(mut sensor) = sensor_or_clear_error() else {
        return;
    };
    assert!(!sensor.gpus().is_empty());
    assert!(!sensor.unpaced());
    for (i, gpu) in sensor.gpus().to_vec().iter().enumerate() {
        assert!(
            gpu.uuid.as_str().starts_with("GPU-") || gpu.uuid.as_str().starts_with("MIG-"),
            "{gpu:?}"
        );
        assert!(gpu.pci_bus_id.contains(':'), "{gpu:?}");
        let a = sensor
            .read(i)
            .unwrap()
            .expect("a real GPU is never exhausted");
        std::thread::sleep(Duration::from_millis(250));
        let b = sensor.read(i).unwrap().unwrap();
        eprintln!("{gpu:?}\n{a:?}\n{b:?}");
        assert!(b.at > a.at);
        assert!(a.power.0 > 0 && a.power_max >= a.power);
        if let (Some(ea), Some(eb)) = (a.energy_counter, b.energy_counter) {
            // The counter ticks every 100 ms: 250 ms at ≥ 20 W is > 0 mJ.
            assert!(eb > ea, "counter advances: {ea:?} → {eb:?}");
            let implied_w = (eb.0 - ea.0) as f64 / b.at.since(a.at) as f64;
            assert!(
                implied_w < 2.0 * gpu.power_limit.to_watts().max(1000.0),
                "{implied_w} W"
            );
        }
    }
    assert!(matches!(
        sensor.read(999),
        Err(SensorError::NoSuchGpu { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_streams_real_counter_deltas_from_nvml() {
    let Some(sensor) = sensor_or_clear_error() else {
        return;
    };
    let gpus = sensor.gpus().to_vec();
    let resolver = InstanceResolver::from_pairs(
        gpus.iter()
            .enumerate()
            .map(|(i, g)| (g.uuid.clone(), InstanceId::new(format!("i-{i}"))))
            .collect(),
    );
    let gw = Gateway::start(Behaviour::AckAll).await;
    let mut config = AgentConfig::new(HostId::from("nvml-host"), gw.url());
    config.energy_interval = Duration::from_millis(200);
    config.batch_max_wait = Duration::from_millis(500);
    let report = run(
        config,
        Box::new(sensor),
        resolver,
        tokio::time::sleep(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    eprintln!("{report:?}");
    assert_eq!(report.samples_acked, report.samples_sent);
    assert_eq!(report.counter_resets, 0);
    let seen = gw.seen.lock().unwrap();
    for (i, g) in gpus.iter().enumerate() {
        let mut s: Vec<_> = seen
            .samples
            .iter()
            .filter(|s| s.gpu_uuid == g.uuid.as_str())
            .collect();
        s.sort_by_key(|s| s.seq);
        // ~15 readings in 3 s at 200 ms.
        assert!(s.len() >= 8, "GPU {i}: {} samples", s.len());
        for w in s.windows(2) {
            assert_eq!(w[0].end_unix_ms, w[1].start_unix_ms, "contiguous spans");
        }
        let energy: u64 = s.iter().map(|s| s.energy_mj).sum();
        let ms = s[s.len() - 1].end_unix_ms - s[0].start_unix_ms;
        let mean_w = energy as f64 / ms as f64;
        eprintln!(
            "GPU {i} {}: {} samples, {energy} mJ over {ms} ms = {mean_w:.1} W",
            g.uuid,
            s.len()
        );
        assert!(
            mean_w > 10.0 && mean_w < 2.0 * g.power_limit.to_watts(),
            "{mean_w} W"
        );
        assert!(s
            .iter()
            .all(|x| x.energy_source == 1 && x.instance_id == format!("i-{i}")));
    }
}
