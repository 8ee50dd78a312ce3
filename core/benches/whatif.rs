//! Carbon-aware counterfactuals on the real CAISO_NORTH 5-minute marginal series (looped to the
//! length needed): Flexible Start over a 30-day window, and exact Pause and Resume with the
//! paper's 2× deadline. Profiles are a GPU alternating between busy and lighter phases.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use wattprint_core::whatif::{flexible_start, pause_and_resume};
use wattprint_core::{GramsPerKwh, Millijoules};

/// Slots per day.
const DAY: usize = 288;

fn caiso(len: usize) -> Vec<GramsPerKwh> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/moer/watttime2023_caiso-north_actual.csv"
    );
    let mut reader = csv::Reader::from_path(path).expect("series");
    let one: Vec<GramsPerKwh> = reader
        .records()
        .map(|r| GramsPerKwh(r.expect("row")[1].parse().expect("value")))
        .collect();
    one.iter().copied().cycle().take(len).collect()
}

/// `slots` of energy between 300 W and 700 W per 5 minutes, varying slot to slot.
fn profile(slots: usize) -> Vec<Millijoules> {
    (0..slots)
        .map(|i| Millijoules((300 + (i as u64 * 37) % 400) * 300 * 1000))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("whatif");

    for (name, n, w) in [
        ("flexible_start_1d_profile_30d_window", DAY, 30 * DAY),
        ("flexible_start_30d_profile_30d_window", 30 * DAY, 30 * DAY),
    ] {
        let p = profile(n);
        let intensity = caiso(n + w);
        // Multiply-adds per call.
        group.throughput(Throughput::Elements((n * (w + 1)) as u64));
        if n * w > 10_000_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new(name, n * (w + 1)), &p, |b, p| {
            b.iter(|| black_box(flexible_start(p, &intensity, w).expect("ok").best))
        });
    }

    group.sample_size(100);
    for (name, n) in [
        ("pause_resume_1d_profile_x2", DAY),
        ("pause_resume_30d_profile_x2", 30 * DAY),
    ] {
        let p = profile(n);
        let intensity = caiso(2 * n);
        // DP cells per call.
        group.throughput(Throughput::Elements((n * (n + 1)) as u64));
        if n > DAY {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new(name, n * (n + 1)), &p, |b, p| {
            b.iter(|| black_box(pause_and_resume(p, &intensity, 2.0).expect("ok").emissions))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
