//! Wattprint's domain: typed units and ids, self-contained energy samples, exact 5-minute
//! energy accounting, exact apportioning of shared GPUs (MIG, vGPU), the intensity as-of join
//! with provenance, SCI and the carbon-aware what-ifs.
//!
//! No I/O, no async: everything here is a pure function or a plain value, so it is tested
//! without servers and reused unchanged by the agent, ingest, the stores and the query API.

pub mod accounting;
pub mod apportion;
pub mod config;
pub mod ids;
pub mod intensity;
pub mod sample;
pub mod sci;
pub mod time;
pub mod timeline;
pub mod units;
pub mod whatif;

pub use ids::{GpuUuid, HostId, InstanceId, RegionId, TenantId, TenantScope, WorkloadId};
pub use time::{Bucket, UnixMillis, BUCKET_MS};
pub use units::{GramsCo2e, GramsPerKwh, KilowattHours, Millijoules, Milliwatts};
