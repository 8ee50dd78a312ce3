//! Identifier newtypes, and the tenant scope every tenant-facing read requires.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A tenant of the cloud (the owner of instances and workloads).
    TenantId
);
string_id!(
    /// A VM or bare-metal instance that holds one or more GPUs.
    InstanceId
);
string_id!(
    /// A GPU's NVML uuid (`GPU-…`), stable across reboots.
    GpuUuid
);
string_id!(
    /// The GPU host an agent runs on.
    HostId
);
string_id!(
    /// A grid region with its own intensity series (e.g. `CAISO_NORTH`, `SGIP_CAISO_PGE`).
    RegionId
);
string_id!(
    /// A tenant-labelled workload.
    WorkloadId
);

/// Proof that a request acts for one tenant. Every tenant-facing store read takes one, so no
/// query path can be written without naming the tenant it is confined to.
///
/// Only the query API's token verifier should create one (from a verified claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    /// Scope for a tenant whose identity has been verified (e.g. from a signed token).
    pub fn from_verified(tenant: TenantId) -> Self {
        Self { tenant }
    }

    /// The tenant this scope confines reads to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}
