//! GPUs passed through to libvirt domains: which domain holds which PCI device, from domain
//! XML files.
//!
//! Point the agent at a directory of domain XML: `/etc/libvirt/qemu` (persistent definitions),
//! `/run/libvirt/qemu` (live state of running domains, `<domstatus>` around `<domain>`), or
//! files saved with `virsh dumpxml NAME > NAME.xml`. Every `*.xml` file is read.
//!
//! - A GPU is a `<hostdev mode='subsystem' type='pci'>` whose `<source><address domain bus
//!   slot function>` is its host PCI address (the `<address>` directly under `<hostdev>` is the
//!   guest's and is ignored). mdev hostdevs (vGPUs) are not GPUs here: see vgpu mode.
//! - The instance id is the domain's `<uuid>`, unless the domain's `<metadata>` holds a
//!   Wattprint element in the namespace [`METADATA_NS`]:
//!   `<wattprint:instance xmlns:wattprint="https://wattprint.dev/xmlns/libvirt/1">i-0abc</wattprint:instance>`
//!   (set with `virsh metadata DOMAIN --uri https://wattprint.dev/xmlns/libvirt/1 --key
//!   wattprint --set '<instance>i-0abc</instance>'`).
//! - A domain is *running* when its XML says so: a live `<domain id='N'>` (N ≥ 0) or a
//!   `<domstatus state='running'|'paused'>`. Persistent definitions do not say; they count as
//!   *defined*. A GPU in two running domains is an error; a GPU in one running domain belongs
//!   to it even if stopped domains also list it; a GPU listed only by several defined domains
//!   is ambiguous (an error asking for live XML).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use wattprint_core::InstanceId;

use crate::resolver::canonical_pci_bus_id;

/// XML namespace of Wattprint's libvirt `<metadata>` element (`<instance>`).
pub const METADATA_NS: &str = "https://wattprint.dev/xmlns/libvirt/1";

/// Why libvirt domain XML was refused. Every message names the file and what is wrong.
#[derive(Debug, Error)]
pub enum LibvirtError {
    /// The directory could not be listed.
    #[error("cannot list libvirt domain XML directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory holds no `*.xml` file.
    #[error(
        "libvirt domain XML directory {} holds no *.xml file (expected /etc/libvirt/qemu, \
         /run/libvirt/qemu or `virsh dumpxml` output)",
        dir.display()
    )]
    NoDomains {
        /// The directory.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read libvirt domain XML {}: {source}", file.display())]
    ReadFile {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not well-formed XML.
    #[error("libvirt domain XML {} is not valid XML: {message}", file.display())]
    Xml {
        /// The file.
        file: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A file's content is not a libvirt domain, or a domain is incomplete.
    #[error("libvirt domain XML {}: {problem}", file.display())]
    Domain {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Two files describe the same domain.
    #[error(
        "libvirt domain {uuid} is described twice, in {} and {}; keep one file per domain",
        first.display(),
        second.display()
    )]
    DuplicateDomain {
        /// The domain uuid.
        uuid: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// One GPU is passed through to two running domains.
    #[error(
        "GPU at PCI {pci} is passed through to two running domains: {first} ({}) and {second} \
         ({}); libvirt would not start both, so one of the files is stale",
        first_file.display(),
        second_file.display()
    )]
    GpuInTwoRunningDomains {
        /// The GPU's PCI bus id.
        pci: String,
        /// One domain's name.
        first: String,
        /// Its file.
        first_file: PathBuf,
        /// The other domain's name.
        second: String,
        /// Its file.
        second_file: PathBuf,
    },
    /// One GPU is listed by several defined domains and none is known to run.
    #[error(
        "GPU at PCI {pci} is passed through to {} defined domains ({}) and none of their XML \
         says it is running; point the agent at live XML (/run/libvirt/qemu, or `virsh dumpxml` \
         of running domains)",
        domains.len(),
        domains.join(", ")
    )]
    AmbiguousGpu {
        /// The GPU's PCI bus id.
        pci: String,
        /// The domains listing it (`name (file)`).
        domains: Vec<String>,
    },
}

/// One libvirt domain with the PCI devices passed through to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The file it was read from.
    pub file: PathBuf,
    /// `<name>`.
    pub name: String,
    /// `<uuid>`, lower-case.
    pub uuid: String,
    /// The instance its GPUs are attributed to: the Wattprint metadata element, else the uuid.
    pub instance: InstanceId,
    /// Whether the XML says the domain is running (live XML); `false` for definitions.
    pub running: bool,
    /// Host PCI bus ids (canonical) of its `<hostdev type='pci'>` devices.
    pub pci_devices: Vec<String>,
}

/// The domains of a libvirt host and which of them holds each passed-through PCI device.
#[derive(Debug, Clone)]
pub struct LibvirtHost {
    dir: PathBuf,
    domains: Vec<Domain>,
    /// Canonical PCI bus id → index into `domains`.
    by_pci: BTreeMap<String, usize>,
}

impl LibvirtHost {
    /// Reads every `*.xml` file of `dir` (not recursively, in name order).
    pub fn load_dir(dir: &Path) -> Result<Self, LibvirtError> {
        let entries = std::fs::read_dir(dir).map_err(|source| LibvirtError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| LibvirtError::ReadDir {
                dir: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "xml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(LibvirtError::NoDomains {
                dir: dir.to_owned(),
            });
        }
        let mut domains = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| LibvirtError::ReadFile {
                file: file.clone(),
                source,
            })?;
            domains.push(parse_domain(&text, &file)?);
        }
        Self::from_domains(dir, domains)
    }

    /// Builds the PCI → domain assignment from parsed domains (rules in the module docs).
    pub fn from_domains(dir: &Path, domains: Vec<Domain>) -> Result<Self, LibvirtError> {
        let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
        for d in &domains {
            if let Some(first) = seen.insert(&d.uuid, &d.file) {
                return Err(LibvirtError::DuplicateDomain {
                    uuid: d.uuid.clone(),
                    first: first.to_owned(),
                    second: d.file.clone(),
                });
            }
        }
        let mut holders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, d) in domains.iter().enumerate() {
            for pci in &d.pci_devices {
                holders.entry(pci).or_default().push(i);
            }
        }
        let mut by_pci = BTreeMap::new();
        for (pci, list) in holders {
            let running: Vec<usize> = list
                .iter()
                .copied()
                .filter(|&i| domains[i].running)
                .collect();
            let holder = match (running.as_slice(), list.as_slice()) {
                ([a, b, ..], _) => {
                    let (a, b) = (&domains[*a], &domains[*b]);
                    return Err(LibvirtError::GpuInTwoRunningDomains {
                        pci: pci.to_owned(),
                        first: a.name.clone(),
                        first_file: a.file.clone(),
                        second: b.name.clone(),
                        second_file: b.file.clone(),
                    });
                }
                ([one], _) | ([], [one]) => *one,
                ([], _) => {
                    return Err(LibvirtError::AmbiguousGpu {
                        pci: pci.to_owned(),
                        domains: list
                            .iter()
                            .map(|&i| {
                                format!("{} ({})", domains[i].name, domains[i].file.display())
                            })
                            .collect(),
                    })
                }
            };
            by_pci.insert(pci.to_owned(), holder);
        }
        Ok(Self {
            dir: dir.to_owned(),
            domains,
            by_pci,
        })
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every domain read.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// Number of PCI devices assigned to a domain.
    pub fn assigned_devices(&self) -> usize {
        self.by_pci.len()
    }

    /// The domain holding the PCI device `pci_bus_id` (any form), if any.
    pub fn domain_for_pci(&self, pci_bus_id: &str) -> Option<&Domain> {
        let key = canonical_pci_bus_id(pci_bus_id)?;
        self.by_pci.get(&key).map(|&i| &self.domains[i])
    }
}

/// Parses one domain XML document (`<domain>`, or `<domstatus>` around one); `file` names it
/// in errors.
pub fn parse_domain(text: &str, file: &Path) -> Result<Domain, LibvirtError> {
    let problem = |problem: String| LibvirtError::Domain {
        file: file.to_owned(),
        problem,
    };
    let doc = roxmltree::Document::parse(text).map_err(|e| LibvirtError::Xml {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let root = doc.root_element();
    let (domain, status_running) = match root.tag_name().name() {
        "domain" => (root, None),
        "domstatus" => {
            let domain = child(root, "domain")
                .ok_or_else(|| problem("<domstatus> has no <domain> element".to_owned()))?;
            let state = root.attribute("state").unwrap_or("");
            (domain, Some(matches!(state, "running" | "paused")))
        }
        other => {
            return Err(problem(format!(
                "the root element is <{other}>, not <domain> (is this a libvirt domain XML file?)"
            )))
        }
    };
    let name = child(domain, "name")
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| problem("the domain has no <name>".to_owned()))?
        .to_owned();
    let uuid_text = child(domain, "uuid")
        .and_then(|n| n.text())
        .map(str::trim)
        .ok_or_else(|| problem(format!("domain {name} has no <uuid>")))?;
    let uuid = canonical_uuid(uuid_text).ok_or_else(|| {
        problem(format!(
            "domain {name}: <uuid>{uuid_text}</uuid> is not a UUID (32 hex digits, dashes optional)"
        ))
    })?;
    let running = status_running.unwrap_or_else(|| {
        domain
            .attribute("id")
            .and_then(|id| id.trim().parse::<i64>().ok())
            .is_some_and(|id| id >= 0)
    });
    let instance = match metadata_instance(domain) {
        Some(Ok(id)) => InstanceId::new(id),
        Some(Err(why)) => return Err(problem(format!("domain {name}: {why}"))),
        None => InstanceId::new(uuid.clone()),
    };
    let mut pci_devices = Vec::new();
    if let Some(devices) = child(domain, "devices") {
        for (n, hostdev) in devices
            .children()
            .filter(|c| c.has_tag_name("hostdev"))
            .enumerate()
        {
            if hostdev.attribute("mode") != Some("subsystem")
                || hostdev.attribute("type") != Some("pci")
            {
                continue;
            }
            let address = child(hostdev, "source")
                .and_then(|s| child(s, "address"))
                .ok_or_else(|| {
                    problem(format!(
                        "domain {name}: <hostdev> #{} (line {}) has no <source><address>",
                        n + 1,
                        doc.text_pos_at(hostdev.range().start).row
                    ))
                })?;
            let pci = pci_address(address).map_err(|why| {
                problem(format!(
                    "domain {name}: <hostdev> #{} (line {}): {why}",
                    n + 1,
                    doc.text_pos_at(address.range().start).row
                ))
            })?;
            if !pci_devices.contains(&pci) {
                pci_devices.push(pci);
            }
        }
    }
    Ok(Domain {
        file: file.to_owned(),
        name,
        uuid,
        instance,
        running,
        pci_devices,
    })
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children().find(|c| c.has_tag_name(name))
}

/// `4dea22b3-1d52-d8f3-2516-782e98ab3fa0` (or without dashes) → lower-case, dashed.
fn canonical_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The Wattprint `<instance>` element of `<metadata>`, if there is one.
fn metadata_instance(domain: roxmltree::Node<'_, '_>) -> Option<Result<String, String>> {
    let metadata = child(domain, "metadata")?;
    let element = metadata
        .descendants()
        .find(|n| n.is_element() && n.tag_name().namespace() == Some(METADATA_NS))?;
    if element.tag_name().name() != "instance" {
        return Some(Err(format!(
            "<metadata> element <{}> in namespace {METADATA_NS} is not <instance>",
            element.tag_name().name()
        )));
    }
    let id = element.text().map(str::trim).unwrap_or("");
    Some(if id.is_empty() || id.len() > 128 {
        Err(format!(
            "<metadata> <instance> {id:?} must be 1 to 128 characters"
        ))
    } else {
        Ok(id.to_owned())
    })
}

/// `<address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>` → canonical bus id.
fn pci_address(address: roxmltree::Node<'_, '_>) -> Result<String, String> {
    if let Some(kind) = address.attribute("type") {
        if kind != "pci" {
            return Err(format!("source address type {kind:?} is not \"pci\""));
        }
    }
    let field = |name: &str, max: u32, required: bool| -> Result<u32, String> {
        let Some(raw) = address.attribute(name) else {
            return if required {
                Err(format!("source <address> has no {name}= attribute"))
            } else {
                Ok(0)
            };
        };
        let v = raw.trim();
        let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => v.parse::<u32>().ok(),
        };
        parsed
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("source <address> {name}='{raw}' is not a number ≤ {max:#x}"))
    };
    let domain = field("domain", 0xffff, false)?;
    let bus = field("bus", 0xff, true)?;
    let slot = field("slot", 0x1f, true)?;
    let function = field("function", 0x7, true)?;
    canonical_pci_bus_id(&format!("{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"))
        .ok_or_else(|| "source <address> is not a PCI address".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonicalised() {
        assert_eq!(
            canonical_uuid("4DEA22B31D52D8F32516782E98AB3FA0").as_deref(),
            Some("4dea22b3-1d52-d8f3-2516-782e98ab3fa0")
        );
        assert_eq!(canonical_uuid("4dea22b3"), None);
        assert_eq!(canonical_uuid("zzea22b3-1d52-d8f3-2516-782e98ab3fa0"), None);
    }
}
