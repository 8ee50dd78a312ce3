//! MIG and vGPU attribution on the replayed real H100 trace: every span's shares sum back to
//! the GPU's energy exactly, so the whole trace does too, to the millijoule; shares follow the
//! documented rules; every sample carries its flag; unmapped parts are counted, not invented;
//! and `--check`'s report says what will happen and what cannot.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;

use common::{read_trace, Behaviour, Gateway, TRACE};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wattprint_agent::attribution::{
    check, AttributedGpu, AttributionMode, GpuRule, IdlePolicy, MigRule,
};
use wattprint_agent::replay::{
    replay_gpu_uuid, replay_part_uuid, replay_vm_uuid, MigProfile, Pacing, ReplayConfig,
    ReplayLayout, ReplaySensor, VgpuProfile,
};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sampler::SpanStep;
use wattprint_agent::sensor::{GpuLayout, GpuSensor};
use wattprint_agent::{run, AgentConfig};
use wattprint_core::sample::{Attribution, EnergySample};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

const SEED: u64 = 5;

fn sensor(gpus: u32, layout: ReplayLayout) -> ReplaySensor {
    ReplaySensor::new(ReplayConfig {
        trace_path: TRACE.into(),
        gpus,
        seed: SEED,
        start_at: UnixMillis(1_800_000_000_000),
        pacing: Pacing::AsFastAsPossible,
        loops: Some(1),
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: Milliwatts(700_000),
    })
    .unwrap()
    .with_layout(layout)
    .unwrap()
}

fn mig_layout() -> ReplayLayout {
    ReplayLayout::Mig(
        ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
            .iter()
            .map(|p| MigProfile::parse(p).unwrap())
            .collect(),
    )
}

fn vgpu_layout() -> ReplayLayout {
    ReplayLayout::Vgpu(
        [
            "NVIDIA H100-40C",
            "NVIDIA H100-20C",
            "NVIDIA H100-10C",
            "NVIDIA H100-10C",
        ]
        .iter()
        .map(|p| VgpuProfile::parse(p).unwrap())
        .collect(),
    )
}

/// Maps MIG part `k` of every GPU to instance `i-<gpu>-<k>`, except those in `skip`.
fn mig_resolver(gpus: u32, skip: &[(u32, usize)]) -> InstanceResolver {
    let layout = mig_layout();
    let mut pairs = Vec::new();
    for g in 0..gpus {
        for k in 0..4 {
            if !skip.contains(&(g, k)) {
                pairs.push((
                    replay_part_uuid(SEED, g, k, &layout).unwrap(),
                    InstanceId::new(format!("i-{g}-{k}")),
                ));
            }
        }
    }
    InstanceResolver::from_pairs(pairs)
}

/// One span of a GPU: its energy and the samples it became (with the layout at its end).
struct Span {
    energy: Millijoules,
    span_ms: i64,
    layout: GpuLayout,
    samples: Vec<EnergySample>,
    unattributed: Millijoules,
}

/// Runs GPU `gpu` of `sensor` through an attributed sampler to the end of the trace.
fn attribute(sensor: &mut ReplaySensor, gpu: usize, rule: GpuRule) -> Vec<Span> {
    let info = sensor.gpus()[gpu].clone();
    let mut a = AttributedGpu::new(HostId::from("h"), &info, rule, 3, 5_000);
    let mut spans = Vec::new();
    while let Some(reading) = sensor.read(gpu).unwrap() {
        let layout = sensor.layout(gpu).unwrap();
        let out = a.observe(&reading, Some(&layout));
        match out.step {
            SpanStep::Span { span, .. } => spans.push(Span {
                energy: span.energy,
                span_ms: span.end.since(span.start),
                layout,
                samples: out.samples,
                unattributed: out.unattributed,
            }),
            SpanStep::Started => assert!(spans.is_empty()),
            other => panic!("unexpected {other:?} on the real trace"),
        }
    }
    spans
}

fn trace_energy() -> u64 {
    let rows = read_trace(Path::new(TRACE));
    rows[rows.len() - 1].counter_mj - rows[0].counter_mj
}

/// `share × Σw` is within one `Σw` of `total × w`: the share is the floor of its exact
/// proportion or one more (largest remainder), checked without the library's arithmetic.
fn proportional(share: u64, total: u64, w: u64, sum_w: u64) -> bool {
    let exact = u128::from(total) * u128::from(w);
    let got = u128::from(share) * u128::from(sum_w);
    got + u128::from(sum_w) > exact && got < exact + u128::from(sum_w)
}

#[test]
fn mig_shares_sum_back_to_the_gpu_energy_exactly_over_the_whole_trace() {
    for rule in [MigRule::BySliceSize, MigRule::ByUtilisation] {
        let resolver = Arc::new(mig_resolver(2, &[]));
        let mut s = sensor(2, mig_layout());
        let mut per_gpu_total = Vec::new();
        for gpu in 0..2 {
            let spans = attribute(
                &mut s,
                gpu,
                GpuRule::Mig {
                    rule,
                    resolver: Arc::clone(&resolver),
                },
            );
            assert_eq!(spans.len(), read_trace(Path::new(TRACE)).len() - 1);
            let mut total = 0u64;
            let mut per_part: BTreeMap<String, Vec<&EnergySample>> = BTreeMap::new();
            let mut busy_spans = 0;
            for span in &spans {
                let GpuLayout::Mig(parts) = &span.layout else {
                    panic!("MIG layout expected")
                };
                assert_eq!(span.samples.len(), 4);
                assert_eq!(span.unattributed, Millijoules(0));
                let sum: u64 = span.samples.iter().map(|x| x.energy.0).sum();
                assert_eq!(sum, span.energy.0, "a span's shares sum to its energy");
                total += sum;
                let weights: Vec<u64> = parts
                    .iter()
                    .map(|p| match rule {
                        MigRule::BySliceSize => u64::from(p.compute_slices),
                        MigRule::ByUtilisation => {
                            u64::from(p.compute_slices) * u64::from(p.util_pct.unwrap())
                        }
                    })
                    .collect();
                let weights = if weights.iter().all(|&w| w == 0) {
                    parts.iter().map(|p| u64::from(p.compute_slices)).collect()
                } else {
                    busy_spans += 1;
                    weights
                };
                let sum_w: u64 = weights.iter().sum();
                for (k, (x, part)) in span.samples.iter().zip(parts).enumerate() {
                    assert_eq!(x.gpu, part.uuid);
                    assert_eq!(x.instance, InstanceId::new(format!("i-{gpu}-{k}")));
                    assert_eq!(x.attribution, Attribution::ApportionedMig);
                    assert!(
                        proportional(x.energy.0, span.energy.0, weights[k], sum_w),
                        "{rule:?}: share {} of {} with weight {}/{}",
                        x.energy.0,
                        span.energy.0,
                        weights[k],
                        sum_w
                    );
                    assert_eq!(x.util_gpu_pct, u32::from(part.util_pct.unwrap()));
                    per_part.entry(x.gpu.to_string()).or_default().push(x);
                }
                // Power is split by the same weights.
                let power: u64 = span.samples.iter().map(|x| u64::from(x.power.0)).sum();
                assert!(power <= 700_000 * 2);
            }
            if rule == MigRule::ByUtilisation {
                assert!(busy_spans > 1000, "the trace's load drives the split");
            }
            // Each MIG device's stream: contiguous, one chain, seqs 1, 2, 3, …
            for samples in per_part.values() {
                for (i, x) in samples.iter().enumerate() {
                    assert_eq!(x.seq, (3 << 29) + (i as u64 + 1));
                    assert_eq!(x.chain_start, i == 0);
                    if i > 0 {
                        assert_eq!(samples[i - 1].end, x.start);
                    }
                }
            }
            per_gpu_total.push(total);
        }
        // One loop plays every step of the trace once, whatever the start row: each GPU's
        // shares sum to the counter's own delta over the trace.
        assert_eq!(per_gpu_total, [trace_energy(); 2], "{rule:?}");
    }
}

#[test]
fn by_slice_size_gives_a_3g_instance_three_sevenths() {
    let resolver = Arc::new(mig_resolver(1, &[]));
    let mut s = sensor(1, mig_layout());
    let spans = attribute(
        &mut s,
        0,
        GpuRule::Mig {
            rule: MigRule::BySliceSize,
            resolver,
        },
    );
    let totals: Vec<u64> = (0..4)
        .map(|k| spans.iter().map(|s| s.samples[k].energy.0).sum())
        .collect();
    let all = trace_energy();
    eprintln!("by slice size over the trace: {totals:?} mJ of {all} mJ");
    assert_eq!(totals.iter().sum::<u64>(), all);
    // Per span each share is within 1 mJ of its proportion, so over n spans within n mJ.
    let n = spans.len() as u64;
    for (k, slices) in [3u64, 2, 1, 1].into_iter().enumerate() {
        let exact = all * slices / 7;
        assert!(
            totals[k].abs_diff(exact) <= n,
            "part {k}: {} vs {exact}",
            totals[k]
        );
    }
}

#[test]
fn an_unmapped_mig_device_s_share_is_counted_not_given_to_the_others() {
    // GPU 0's 2g.20gb instance (part 1) is in no mapping.
    let resolver = Arc::new(mig_resolver(1, &[(0, 1)]));
    let mut s = sensor(1, mig_layout());
    let spans = attribute(
        &mut s,
        0,
        GpuRule::Mig {
            rule: MigRule::BySliceSize,
            resolver,
        },
    );
    let mut sent = 0u64;
    let mut unattributed = 0u64;
    for span in &spans {
        assert_eq!(span.samples.len(), 3);
        let s: u64 = span.samples.iter().map(|x| x.energy.0).sum();
        assert_eq!(s + span.unattributed.0, span.energy.0);
        // The missing share is the 2-slice one: within 1 mJ of 2/7.
        assert!(proportional(span.unattributed.0, span.energy.0, 2, 7));
        sent += s;
        unattributed += span.unattributed.0;
    }
    assert_eq!(sent + unattributed, trace_energy());
    assert!(unattributed > 0);
}

#[test]
fn vgpu_shares_sum_back_exactly_with_the_idle_floor_shared_by_policy() {
    let rows = read_trace(Path::new(TRACE));
    let idle_mw = rows.iter().map(|r| r.power_mw).min().unwrap();
    for policy in [IdlePolicy::Equal, IdlePolicy::ByProfileSize] {
        for idle_power in [Some(Milliwatts(70_000)), None] {
            let mut s = sensor(1, vgpu_layout());
            let spans = attribute(
                &mut s,
                0,
                GpuRule::Vgpu {
                    idle_policy: policy,
                    idle_power,
                },
            );
            let mut total = 0u64;
            let mut all_idle_spans = 0;
            for span in &spans {
                let GpuLayout::Vgpu(parts) = &span.layout else {
                    panic!("vGPU layout expected")
                };
                let sum: u64 = span.samples.iter().map(|x| x.energy.0).sum();
                assert_eq!(sum, span.energy.0);
                total += sum;
                for (x, part) in span.samples.iter().zip(parts) {
                    assert_eq!(x.gpu, part.uuid);
                    assert_eq!(x.instance, InstanceId::new(part.vm_id.clone()));
                    assert_eq!(x.attribution, Attribution::ApportionedVgpu);
                }
                let idle_weights: Vec<u64> = match policy {
                    IdlePolicy::Equal => vec![1; 4],
                    IdlePolicy::ByProfileSize => {
                        parts.iter().map(|p| u64::from(p.framebuffer_mib)).collect()
                    }
                };
                let sum_idle: u64 = idle_weights.iter().sum();
                let utils: Vec<u64> = parts
                    .iter()
                    .map(|p| u64::from(p.util_pct.unwrap()))
                    .collect();
                let sum_util: u64 = utils.iter().sum();
                if sum_util == 0 {
                    // Nobody busy: everything is idle energy, shared by the policy.
                    all_idle_spans += 1;
                    for (x, &w) in span.samples.iter().zip(&idle_weights) {
                        assert!(proportional(x.energy.0, span.energy.0, w, sum_idle));
                    }
                } else if idle_power.is_some() {
                    // Floor = 70 W × span (capped at the energy), the rest by utilisation.
                    let floor = (70_000 * span.span_ms as u64 / 1000).min(span.energy.0);
                    let rest = span.energy.0 - floor;
                    for (k, x) in span.samples.iter().enumerate() {
                        let lo_idle = floor * idle_weights[k] / sum_idle;
                        let lo_rest = rest * utils[k] / sum_util;
                        assert!(
                            x.energy.0 >= lo_idle + lo_rest && x.energy.0 <= lo_idle + lo_rest + 2,
                            "{policy:?}: {} vs {lo_idle} + {lo_rest}",
                            x.energy.0
                        );
                    }
                }
            }
            let per_vm: Vec<u64> = (0..4)
                .map(|k| spans.iter().map(|s| s.samples[k].energy.0).sum())
                .collect();
            eprintln!("vgpu {policy:?} idle {idle_power:?}: {per_vm:?} mJ");
            assert_eq!(total, trace_energy(), "{policy:?} {idle_power:?}");
            assert!(all_idle_spans > 0 && all_idle_spans < spans.len());
        }
    }
    assert!(idle_mw > 60_000, "the trace's lowest power: {idle_mw} mW");
}

#[test]
fn a_vgpu_host_gpu_with_no_vm_leaves_its_energy_unattributed() {
    let mut s = sensor(1, ReplayLayout::Vgpu(vec![]));
    let spans = attribute(
        &mut s,
        0,
        GpuRule::Vgpu {
            idle_policy: IdlePolicy::Equal,
            idle_power: None,
        },
    );
    assert!(spans.iter().all(|s| s.samples.is_empty()));
    let un: u64 = spans.iter().map(|s| s.unattributed.0).sum();
    assert_eq!(un, trace_energy());
}

#[test]
fn the_check_report_names_every_gpu_part_and_problem() {
    // MIG, one device unmapped.
    let mut s = sensor(1, mig_layout());
    let mode = AttributionMode::Mapping {
        resolver: Arc::new(mig_resolver(1, &[(0, 2)])),
        source: "mapping file /etc/wattprint/gpus.toml".into(),
        mig_rule: MigRule::ByUtilisation,
    };
    let report = check(&mut s, &mode);
    assert!(!report.is_ok());
    let missing = replay_part_uuid(SEED, 0, 2, &mig_layout()).unwrap();
    assert_eq!(
        report.problems(),
        [format!(
            "MIG device {missing} (1g.10gb) of GPU {} is not mapped: add a [[gpu]] entry with \
             uuid = \"{missing}\"",
            replay_gpu_uuid(SEED, 0)
        )]
    );
    let text = report.to_string();
    assert!(text.contains("MIG enabled"), "{text}");
    assert!(
        text.contains("apportioned-mig by slices × utilisation between 4 MIG device(s):"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} 3g.40gb (3 slices, 40960 MiB) → instance i-0-0",
            replay_part_uuid(SEED, 0, 0, &mig_layout()).unwrap()
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "{missing} 1g.10gb (1 slice, 10240 MiB) → NOT MAPPED"
    )));
    // A MIG GPU mapped whole stays exclusive.
    let whole = InstanceResolver::from_pairs(vec![(replay_gpu_uuid(SEED, 0), "i-all".into())]);
    let report = check(&mut s, &AttributionMode::from(whole));
    assert!(report.is_ok(), "{report}");
    assert!(matches!(
        &report.gpus[0].rule,
        Ok(GpuRule::Exclusive { instance, .. }) if instance.as_str() == "i-all"
    ));

    // vGPU: every vGPU to its VM.
    let mut s = sensor(1, vgpu_layout());
    let mode = AttributionMode::Vgpu {
        idle_policy: IdlePolicy::ByProfileSize,
        idle_power: Some(Milliwatts(70_000)),
    };
    let report = check(&mut s, &mode);
    assert!(report.is_ok(), "{report}");
    let text = report.to_string();
    assert!(text.contains("virtualization vGPU host"), "{text}");
    assert!(
        text.contains(&format!(
            "NVIDIA H100-40C (40960 MiB) in VM {vm} → instance {vm}",
            vm = replay_vm_uuid(SEED, 0, 0)
        )),
        "{text}"
    );
    assert!(text.contains("check passed"), "{text}");

    // vGPU mode on a whole GPU; mapping mode with an unmapped GPU.
    let mut s = sensor(1, ReplayLayout::Whole);
    let report = check(&mut s, &mode);
    assert!(report.problems()[0].contains("is not a vGPU host GPU"));
    let report = check(&mut s, &AttributionMode::from(InstanceResolver::empty()));
    assert!(
        report.problems()[0].contains("is not in the GPU mapping: add a [[gpu]] entry"),
        "{:?}",
        report.problems()
    );
}

/// The whole agent on a MIG host: flags on the wire, energy exact per GPU, nothing
/// unattributed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_streams_apportioned_mig_samples_with_their_flag() {
    let gw = Gateway::start(Behaviour::AckAll).await;
    let mode = AttributionMode::Mapping {
        resolver: Arc::new(mig_resolver(2, &[])),
        source: "test mapping".into(),
        mig_rule: MigRule::BySliceSize,
    };
    let report = run(
        AgentConfig::new(HostId::from("mig-host"), gw.url()),
        Box::new(sensor(2, mig_layout())),
        mode,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.samples_acked, report.samples_sent);
    assert_eq!(report.energy_unattributed_mj, 0);
    let seen = gw.seen.lock().unwrap().dedup();
    let n = read_trace(Path::new(TRACE)).len() - 1;
    assert_eq!(seen.len(), 2 * 4 * n);
    assert!(seen.values().all(|s| s.attribution == 2));
    let layout = mig_layout();
    let gpu0_parts: Vec<GpuUuid> = (0..4)
        .map(|k| replay_part_uuid(SEED, 0, k, &layout).unwrap())
        .collect();
    let gpu0: u64 = seen
        .values()
        .filter(|s| gpu0_parts.iter().any(|p| p.as_str() == s.gpu_uuid))
        .map(|s| s.energy_mj)
        .sum();
    assert_eq!(gpu0, trace_energy());
}
