//! Which instance holds which GPU: a mapping file the operator (or the cloud's control plane)
//! writes, matched by GPU uuid or PCI bus id.
//!
//! ```toml
//! [[gpu]]
//! uuid = "GPU-5c8d2a6e-0c8b-4b53-9c1f-0e0f3d7f2a11"   # either uuid …
//! instance = "i-abc"
//!
//! [[gpu]]
//! pci_bus_id = "00000000:00:06.0"                     # … or PCI bus id
//! instance = "i-def"
//!
//! [[gpu]]
//! uuid = "MIG-8a1f6c0e-3c2d-5b7a-9e41-2f0c7d9b1a33"   # a MIG device of a MIG-enabled GPU
//! instance = "i-ghi"
//! ```
//!
//! A MIG-enabled GPU whose own uuid or PCI bus id is mapped stays whole (one instance holds
//! every slice); otherwise its energy is split between its MIG devices, each mapped by its
//! `MIG-…` uuid (see [`crate::attribution`]).

use crate::sensor::GpuInfo;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use thiserror::Error;
use wattprint_core::{GpuUuid, InstanceId};

/// Why a mapping file was refused.
#[derive(Debug, Error)]
pub enum ResolverError {
    /// The file could not be read.
    #[error("cannot read GPU mapping file {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("GPU mapping file {file} is invalid: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// One `[[gpu]]` entry is wrong.
    #[error("GPU mapping file {file}, [[gpu]] entry {entry}: {problem}")]
    Entry {
        /// The file.
        file: String,
        /// 1-based position of the entry among the `[[gpu]]` tables.
        entry: usize,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    gpu: Vec<MappingEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingEntry {
    uuid: Option<String>,
    pci_bus_id: Option<String>,
    instance: String,
}

/// Canonical form of a PCI bus id: `DDDDDDDD:BB:DD.F`, upper-case hex, 8-digit domain. Accepts
/// NVML's form (`00000000:00:06.0`), lspci's (`0000:00:06.0`) and the short `00:06.0`.
pub fn canonical_pci_bus_id(s: &str) -> Option<String> {
    let s = s.trim();
    let (domain, rest) = match s.matches(':').count() {
        2 => s.split_once(':')?,
        1 => ("0", s),
        _ => return None,
    };
    let (bus, devfn) = rest.split_once(':')?;
    let (device, function) = devfn.split_once('.')?;
    let hex = |v: &str, max: u32| {
        (!v.is_empty() && v.len() <= 8)
            .then(|| u32::from_str_radix(v, 16).ok())
            .flatten()
            .filter(|&n| n <= max)
    };
    Some(format!(
        "{:08X}:{:02X}:{:02X}.{:X}",
        hex(domain, u32::MAX)?,
        hex(bus, 0xff)?,
        hex(device, 0x1f)?,
        hex(function, 0x7)?
    ))
}

/// Maps GPUs to the instances that hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceResolver {
    /// Lower-case uuid → instance.
    by_uuid: HashMap<String, InstanceId>,
    /// Canonical PCI bus id → instance.
    by_pci: HashMap<String, InstanceId>,
}

impl InstanceResolver {
    /// A resolver that maps nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A resolver from `(uuid, instance)` pairs (programmatic use, e.g. the embedded demo).
    /// Uuids match case-insensitively; a later pair for the same GPU replaces an earlier one.
    pub fn from_pairs(pairs: Vec<(GpuUuid, InstanceId)>) -> Self {
        let by_uuid = pairs
            .into_iter()
            .map(|(gpu, instance)| (gpu.0.to_lowercase(), instance))
            .collect();
        Self {
            by_uuid,
            by_pci: HashMap::new(),
        }
    }

    /// A resolver from `(PCI bus id, instance)` pairs (libvirt domain XML). Bus ids in any
    /// form [`canonical_pci_bus_id`] reads; the error is the first that is not one.
    pub fn from_pci_pairs(pairs: Vec<(String, InstanceId)>) -> Result<Self, String> {
        let mut by_pci = HashMap::new();
        for (pci, instance) in pairs {
            let key = canonical_pci_bus_id(&pci).ok_or_else(|| pci.clone())?;
            by_pci.insert(key, instance);
        }
        Ok(Self {
            by_uuid: HashMap::new(),
            by_pci,
        })
    }

    /// Parses a mapping file's contents (named `<string>` in errors).
    pub fn from_toml_str(text: &str) -> Result<Self, ResolverError> {
        Self::parse(text, "<string>")
    }

    /// Reads and parses a mapping file.
    pub fn from_file(path: &Path) -> Result<Self, ResolverError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ResolverError::Io {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    fn parse(text: &str, file: &str) -> Result<Self, ResolverError> {
        let parsed: MappingFile = toml::from_str(text).map_err(|e| ResolverError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut resolver = Self::default();
        for (i, entry) in parsed.gpu.into_iter().enumerate() {
            let problem = |problem: String| ResolverError::Entry {
                file: file.to_owned(),
                entry: i + 1,
                problem,
            };
            let instance = entry.instance.trim();
            if instance.is_empty() {
                return Err(problem("`instance` is empty".to_owned()));
            }
            let instance = InstanceId::new(instance);
            match (entry.uuid, entry.pci_bus_id) {
                (Some(_), Some(_)) => {
                    return Err(problem(
                        "has both `uuid` and `pci_bus_id`; give exactly one".to_owned(),
                    ))
                }
                (None, None) => {
                    return Err(problem(
                        "has neither `uuid` nor `pci_bus_id`; give one".to_owned(),
                    ))
                }
                (Some(uuid), None) => {
                    let key = uuid.trim().to_lowercase();
                    if key.is_empty() {
                        return Err(problem("`uuid` is empty".to_owned()));
                    }
                    if let Some(previous) = resolver.by_uuid.insert(key, instance) {
                        return Err(problem(format!(
                            "GPU {} is mapped twice (already to instance {previous})",
                            uuid.trim()
                        )));
                    }
                }
                (None, Some(pci)) => {
                    let key = canonical_pci_bus_id(&pci).ok_or_else(|| {
                        problem(format!(
                            "`pci_bus_id` {pci:?} is not a PCI bus id like \"00000000:00:06.0\""
                        ))
                    })?;
                    if let Some(previous) = resolver.by_pci.insert(key, instance) {
                        return Err(problem(format!(
                            "GPU at PCI {} is mapped twice (already to instance {previous})",
                            pci.trim()
                        )));
                    }
                }
            }
        }
        Ok(resolver)
    }

    /// The instance holding `gpu`: by uuid first, then by PCI bus id (both case-insensitive).
    pub fn resolve(&self, gpu: &GpuInfo) -> Option<InstanceId> {
        if let Some(instance) = self.by_uuid.get(&gpu.uuid.0.to_lowercase()) {
            return Some(instance.clone());
        }
        canonical_pci_bus_id(&gpu.pci_bus_id).and_then(|pci| self.by_pci.get(&pci).cloned())
    }

    /// The instance a GPU or MIG device uuid is mapped to (case-insensitive), by uuid only.
    pub fn resolve_uuid(&self, uuid: &GpuUuid) -> Option<InstanceId> {
        self.by_uuid.get(&uuid.0.to_lowercase()).cloned()
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.by_uuid.len() + self.by_pci.len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_bus_ids_are_canonicalised_from_every_common_form() {
        let want = Some("00000000:00:06.0".to_owned());
        assert_eq!(canonical_pci_bus_id("00000000:00:06.0"), want);
        assert_eq!(canonical_pci_bus_id("0000:00:06.0"), want);
        assert_eq!(canonical_pci_bus_id("00:06.0"), want);
        assert_eq!(
            canonical_pci_bus_id("0000:3b:00.0"),
            Some("00000000:3B:00.0".to_owned())
        );
        assert_eq!(canonical_pci_bus_id("bogus"), None);
        assert_eq!(canonical_pci_bus_id("0000:00:40.0"), None); // device > 31
        assert_eq!(canonical_pci_bus_id("0000:00:06.9"), None); // function > 7
    }
}
