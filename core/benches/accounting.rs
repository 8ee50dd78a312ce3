//! Throughput of the core accounting path per sample: validation, 5-minute split, and
//! accumulation into intervals. Samples come from the real H100 trace (1 s spans, as the agent
//! sends by default), replayed as 64 GPUs.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use wattprint_core::accounting::{split_into_buckets, IntervalAccumulator};
use wattprint_core::sample::{check_sample, Attribution, EnergySample, EnergySource, SampleLimits};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

fn trace_samples(gpus: u32) -> Vec<EnergySample> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/h100-trace/h100_power_trace_50ms.csv"
    );
    let mut reader = csv::Reader::from_path(path).expect("trace");
    let rows: Vec<(i64, u64, u32)> = reader
        .records()
        .map(|r| {
            let r = r.expect("row");
            (
                (r[0].parse::<f64>().expect("t") * 1000.0).round() as i64,
                r[5].parse().expect("e"),
                r[2].parse().expect("p"),
            )
        })
        .collect();
    let mut out = Vec::new();
    for g in 0..gpus {
        // 1 s spans: every 20th row of the 50 ms trace.
        for (seq, w) in rows
            .iter()
            .step_by(20)
            .collect::<Vec<_>>()
            .windows(2)
            .enumerate()
        {
            out.push(EnergySample {
                host: HostId::from("bench"),
                gpu: GpuUuid::new(format!("GPU-{g}")),
                instance: InstanceId::new(format!("i-{}", g / 8)),
                seq: seq as u64,
                start: UnixMillis(w[0].0),
                end: UnixMillis(w[1].0),
                energy: Millijoules(w[1].1 - w[0].1),
                power: Milliwatts(w[1].2),
                power_max: Milliwatts(w[1].2),
                util_gpu_pct: 50,
                mem_used_bytes: 0,
                temp_c: 50,
                sm_clock_mhz: 1980,
                chain_start: false,
                energy_source: EnergySource::Counter,
                attribution: Attribution::Exclusive,
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let samples = trace_samples(64);
    let now = samples.iter().map(|s| s.end).max().expect("samples");
    let limits = SampleLimits::default();
    let mut group = c.benchmark_group("accounting");
    group.throughput(Throughput::Elements(samples.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("validate", samples.len()),
        &samples,
        |b, s| {
            b.iter(|| {
                s.iter()
                    .filter(|s| check_sample(s, Milliwatts(700_000), &limits, now).is_ok())
                    .count()
            })
        },
    );
    group.bench_with_input(
        BenchmarkId::new("split", samples.len()),
        &samples,
        |b, s| {
            b.iter(|| {
                s.iter()
                    .map(|s| split_into_buckets(s.start, s.end, s.energy).len())
                    .sum::<usize>()
            })
        },
    );
    group.bench_with_input(
        BenchmarkId::new("validate_split_accumulate", samples.len()),
        &samples,
        |b, s| {
            b.iter(|| {
                let mut acc = IntervalAccumulator::new();
                for s in s {
                    if check_sample(s, Milliwatts(700_000), &limits, now).is_ok() {
                        acc.add(s);
                    }
                }
                black_box(acc.total())
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
