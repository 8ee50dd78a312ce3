//! `wattprint agent --check`: how every GPU will be attributed, before any sample is sent.
//!
//! Invariant: problems are collected, not returned as errors, so one run shows all of them.

use super::{idle_policy_name, mig_rule_name, AttributionMode, GpuRule};
use crate::sensor::{GpuInfo, GpuLayout, GpuSensor};
use std::fmt::{self, Write as _};
use wattprint_core::{GpuUuid, InstanceId};

/// What `--check` found for one part (MIG device or vGPU) of a shared GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartCheck {
    /// Its uuid.
    pub uuid: GpuUuid,
    /// `3g.40gb (3 slices, 40960 MiB)`, `NVIDIA H100-20C (20480 MiB), VM …`.
    pub description: String,
    /// The instance its share goes to, or why none.
    pub target: Result<InstanceId, String>,
}

/// What `--check` found for one GPU.
#[derive(Debug, Clone)]
pub struct GpuCheck {
    /// The GPU as the sensor reports it.
    pub info: GpuInfo,
    /// How it will be attributed, or why it cannot be.
    pub rule: Result<GpuRule, String>,
    /// Its parts, for MIG and vGPU GPUs.
    pub parts: Vec<PartCheck>,
    /// Problems that make the check fail.
    pub problems: Vec<String>,
}

/// What `wattprint agent --check` prints: every GPU, how and to whom it will be attributed.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The mode, described.
    pub mode: String,
    /// Every GPU the sensor has.
    pub gpus: Vec<GpuCheck>,
}

impl CheckReport {
    /// Every problem found, one line each; empty when every GPU (and MIG device) resolves.
    pub fn problems(&self) -> Vec<String> {
        self.gpus.iter().flat_map(|g| g.problems.clone()).collect()
    }

    /// Whether every GPU will be attributed.
    pub fn is_ok(&self) -> bool {
        !self.gpus.is_empty() && self.gpus.iter().all(|g| g.problems.is_empty())
    }
}

/// Discovers how every GPU of `sensor` will be attributed under `mode` (reading MIG and vGPU
/// layouts once). Problems — an unmapped GPU or MIG device, a GPU in the wrong mode, a layout
/// that cannot be read — are listed, not returned as errors, so all of them show at once.
pub fn check(sensor: &mut dyn GpuSensor, mode: &AttributionMode) -> CheckReport {
    let infos = sensor.gpus().to_vec();
    let mut gpus = Vec::with_capacity(infos.len());
    for (index, info) in infos.into_iter().enumerate() {
        let rule = mode.rule_for(&info);
        let mut problems = Vec::new();
        let mut parts = Vec::new();
        match &rule {
            Err(why) => problems.push(why.clone()),
            Ok(GpuRule::Exclusive { .. }) => {}
            Ok(rule @ (GpuRule::Mig { .. } | GpuRule::Vgpu { .. })) => match sensor.layout(index) {
                Err(e) => problems.push(format!(
                    "GPU {}: cannot read its partitions: {e}",
                    info.uuid
                )),
                Ok(layout) => {
                    parts = check_parts(&info, rule, &layout, &mut problems);
                }
            },
        }
        gpus.push(GpuCheck {
            info,
            rule,
            parts,
            problems,
        });
    }
    CheckReport {
        mode: mode.to_string(),
        gpus,
    }
}

fn check_parts(
    info: &GpuInfo,
    rule: &GpuRule,
    layout: &GpuLayout,
    problems: &mut Vec<String>,
) -> Vec<PartCheck> {
    match (rule, layout) {
        (GpuRule::Mig { resolver, .. }, GpuLayout::Mig(parts)) => {
            if parts.is_empty() {
                problems.push(format!(
                    "GPU {}: MIG is on but no GPU instance exists; its energy cannot be attributed",
                    info.uuid
                ));
            }
            parts
                .iter()
                .map(|p| {
                    let target = resolver.resolve_uuid(&p.uuid).ok_or_else(|| {
                        let why = format!(
                            "MIG device {} ({}) of GPU {} is not mapped: add a [[gpu]] entry \
                             with uuid = \"{}\"",
                            p.uuid, p.profile, info.uuid, p.uuid
                        );
                        problems.push(why.clone());
                        why
                    });
                    PartCheck {
                        uuid: p.uuid.clone(),
                        description: format!(
                            "{} ({} slice{}, {} MiB){}",
                            p.profile,
                            p.compute_slices,
                            if p.compute_slices == 1 { "" } else { "s" },
                            p.memory_mib,
                            if p.util_pct.is_some() {
                                ""
                            } else {
                                ", utilisation not reported"
                            }
                        ),
                        target,
                    }
                })
                .collect()
        }
        (GpuRule::Vgpu { .. }, GpuLayout::Vgpu(parts)) => parts
            .iter()
            .map(|p| PartCheck {
                uuid: p.uuid.clone(),
                description: format!(
                    "{} ({} MiB) in VM {}{}",
                    p.profile,
                    p.framebuffer_mib,
                    p.vm_id,
                    if p.util_pct.is_some() {
                        ""
                    } else {
                        ", utilisation not reported"
                    }
                ),
                target: Ok(InstanceId::new(p.vm_id.clone())),
            })
            .collect(),
        (_, other) => {
            problems.push(format!(
                "GPU {}: expected a {} layout, the sensor reports {}",
                info.uuid,
                if matches!(rule, GpuRule::Mig { .. }) {
                    "MIG"
                } else {
                    "vGPU"
                },
                match other {
                    GpuLayout::Whole => "a whole GPU",
                    GpuLayout::Mig(_) => "MIG instances",
                    GpuLayout::Vgpu(_) => "vGPUs",
                }
            ));
            Vec::new()
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "attribution: {}", self.mode)?;
        writeln!(f, "{} GPU(s) discovered", self.gpus.len())?;
        for (i, g) in self.gpus.iter().enumerate() {
            let info = &g.info;
            writeln!(
                f,
                "GPU {i}: {}  PCI {}  {}  power limit {} W",
                info.uuid,
                info.pci_bus_id,
                info.model,
                info.power_limit.0 as f64 / 1000.0
            )?;
            writeln!(
                f,
                "  MIG {}, virtualization {}, energy {}",
                info.mig_mode.as_str(),
                info.virtualization.as_str(),
                if info.energy_counter {
                    "from the counter (exact)"
                } else {
                    "integrated from power (no counter: estimated)"
                }
            )?;
            let mut line = String::new();
            match &g.rule {
                Ok(GpuRule::Exclusive { instance, origin }) => {
                    let _ = write!(line, "exclusive → instance {instance} ({origin})");
                }
                Ok(GpuRule::Mig { rule, .. }) => {
                    let _ = write!(
                        line,
                        "apportioned-mig {} between {} MIG device(s):",
                        mig_rule_name(*rule),
                        g.parts.len()
                    );
                }
                Ok(GpuRule::Vgpu {
                    idle_policy,
                    idle_power,
                }) => {
                    let _ = write!(
                        line,
                        "apportioned-vgpu between {} vGPU(s): idle floor {} shared {}, the rest \
                         by utilisation:",
                        g.parts.len(),
                        idle_power.map_or_else(
                            || "(lowest power seen)".to_owned(),
                            |p| format!("{} W", p.0 as f64 / 1000.0)
                        ),
                        idle_policy_name(*idle_policy)
                    );
                }
                Err(why) => {
                    let _ = write!(line, "NOT ATTRIBUTED: {why}");
                }
            }
            writeln!(f, "  → {line}")?;
            for p in &g.parts {
                match &p.target {
                    Ok(instance) => {
                        writeln!(f, "    {} {} → instance {instance}", p.uuid, p.description)?
                    }
                    Err(_) => writeln!(f, "    {} {} → NOT MAPPED", p.uuid, p.description)?,
                }
            }
        }
        let problems = self.problems();
        if self.gpus.is_empty() {
            writeln!(f, "check failed: the sensor has no GPU")?;
        } else if problems.is_empty() {
            writeln!(f, "check passed: every GPU is attributed")?;
        } else {
            writeln!(f, "check failed: {} problem(s)", problems.len())?;
            for p in problems {
                writeln!(f, "  - {p}")?;
            }
        }
        Ok(())
    }
}
