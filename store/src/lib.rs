//! Storage for Wattprint: the [`Store`] trait both the embedded SQLite store and the
//! distributed ClickHouse store implement, and the rows that cross it.
//!
//! Writes are idempotent: a sample is identified by `(gpu, seq)`, and writing it again is
//! counted as a duplicate and changes nothing. Every tenant-facing read takes a
//! [`TenantScope`] and returns only that tenant's rows.

pub mod clickhouse;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use wattprint_core::intensity::JoinedIntensity;
use wattprint_core::sample::EnergySample;
use wattprint_core::{
    Bucket, GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId, TenantScope,
    UnixMillis, WorkloadId,
};

pub use self::clickhouse::ClickHouseStore;
pub use sqlite::SqliteStore;

/// A GPU in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// NVML uuid.
    pub uuid: GpuUuid,
    /// Model name as NVML reports it (the hardware catalog's key).
    pub model: String,
    /// Enforced power limit (samples above 2x are absurd).
    pub power_limit: Milliwatts,
}

/// An instance, its owner, location and GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Owner.
    pub tenant: TenantId,
    /// The instance.
    pub instance: InstanceId,
    /// Grid region whose intensity applies.
    pub region: RegionId,
    /// Zip code of the datacenter, when known.
    pub zip_code: Option<String>,
    /// GPUs attached.
    pub gpus: Vec<GpuRecord>,
}

/// One bucket's share of an enriched sample.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichedShare {
    /// The bucket.
    pub bucket: Bucket,
    /// Energy in the bucket.
    pub energy: Millijoules,
    /// Milliseconds of the bucket covered.
    pub covered_ms: i64,
    /// Intensity joined to the bucket (None: no data, reported as missing).
    pub intensity: Option<JoinedIntensity>,
}

/// A validated sample with everything the enricher added: owner, region, PUE and its
/// per-bucket shares joined with intensity.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichedSample {
    /// The sample as the agent sent it.
    pub sample: EnergySample,
    /// Owner of the sample's instance.
    pub tenant: TenantId,
    /// Region of the instance.
    pub region: RegionId,
    /// Facility overhead of the region (1.0 when not configured).
    pub pue: f64,
    /// Shares per 5-minute bucket; they sum to the sample's energy.
    pub shares: Vec<EnrichedShare>,
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Samples stored for the first time.
    pub inserted: u32,
    /// Samples already stored with identical content (redelivery): nothing changed.
    pub duplicates: u32,
    /// Samples whose `(gpu, seq)` was stored with different content: not applied, quarantined.
    pub conflicts: Vec<(GpuUuid, u64)>,
}

/// A refused sample kept for operators, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// When the gateway refused it.
    pub received_at: UnixMillis,
    /// Host that sent it.
    pub host: HostId,
    /// GPU, if it could be read.
    pub gpu: Option<GpuUuid>,
    /// Sequence number, if it could be read.
    pub seq: Option<u64>,
    /// Why it was refused.
    pub reason: String,
    /// The sample as received (JSON), for inspection and replay.
    pub payload: String,
}

/// A stored raw sample (for charts at the finest resolution).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// The sample.
    pub sample: EnergySample,
}

/// A stored 5-minute interval of one GPU of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalRow {
    /// Instance.
    pub instance: InstanceId,
    /// GPU.
    pub gpu: GpuUuid,
    /// Bucket.
    pub bucket: Bucket,
    /// Energy in the bucket, exact.
    pub energy: Millijoules,
    /// Part of it estimated (power integration) rather than counted.
    pub estimated: Millijoules,
    /// Milliseconds covered by samples.
    pub covered_ms: i64,
    /// Samples that contributed.
    pub samples: u32,
    /// Highest power seen.
    pub power_max: Milliwatts,
    /// Region.
    pub region: RegionId,
    /// Intensity joined (None: missing).
    pub intensity: Option<JoinedIntensity>,
    /// PUE applied.
    pub pue: f64,
}

/// A workload to create: a labelled time range over instances, with a functional unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWorkload {
    /// Human label (e.g. `bert-finetune-run-3`).
    pub label: String,
    /// Instances it ran on (all must belong to the tenant).
    pub instances: Vec<InstanceId>,
    /// Start of the range.
    pub from: UnixMillis,
    /// End of the range (exclusive).
    pub to: UnixMillis,
    /// What R counts (e.g. `training run`, `1k inferences`).
    pub functional_unit: String,
    /// How many of them (R).
    pub functional_units: f64,
}

/// A stored workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Id.
    pub id: WorkloadId,
    /// Owner.
    pub tenant: TenantId,
    /// Definition.
    #[serde(flatten)]
    pub spec: NewWorkload,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// Store errors, with the operation that failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("{op}: {source}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request names something the tenant does not have.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A stored value could not be decoded (schema drift or corruption).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Storage behind ingest and the query API.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts or updates instances and their GPUs (operator action).
    async fn upsert_inventory(&self, instances: &[InstanceRecord]) -> Result<(), StoreError>;

    /// The whole inventory, all tenants (for ingest and operators, never for tenant reads).
    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Writes samples and their interval shares atomically. Idempotent per `(gpu, seq)`.
    async fn write_samples(&self, samples: &[EnrichedSample]) -> Result<WriteOutcome, StoreError>;

    /// Keeps refused samples with their reasons.
    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError>;

    /// Most recent quarantine records, newest first (operator view).
    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError>;

    /// The tenant's instances.
    async fn list_instances(&self, scope: &TenantScope) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Raw samples of one of the tenant's instances whose span overlaps `[from, to)`, by time,
    /// at most `limit`. Unknown or foreign instance: `NotFound`.
    async fn instance_samples(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError>;

    /// 5-minute intervals of one of the tenant's instances with buckets starting in
    /// `[from, to)`, by bucket then GPU. Unknown or foreign instance: `NotFound`.
    async fn instance_intervals(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError>;

    /// Creates a workload. Every instance must belong to the tenant (`NotFound` otherwise).
    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError>;

    /// The tenant's workloads, newest first.
    async fn list_workloads(&self, scope: &TenantScope) -> Result<Vec<Workload>, StoreError>;

    /// One of the tenant's workloads; `None` if absent or another tenant's.
    async fn get_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
    ) -> Result<Option<Workload>, StoreError>;
}
