//! The distributed ClickHouse [`Store`], over ClickHouse's HTTP interface.
//!
//! # Exactly-once without transactions
//!
//! ClickHouse has no transactions and no unique keys, so exactly-once accounting rests on
//! deterministic keys and on collapsing duplicates at read time:
//!
//! - `samples` and `shares` are `ReplacingMergeTree`s keyed by `(instance, GPU, seq)` and
//!   `(instance, bucket, GPU, seq)`: only what the agent sent, never the tenant the enricher
//!   looked up, so a redelivery lands under the same keys whoever owns the instance now. Every
//!   read uses `FINAL`, so a row inserted twice under its key counts once, before and after
//!   background merges.
//! - [`Store::write_samples`] first reads what is stored under the batch's keys (indexed
//!   lookups): a sample under its `(instance, GPU, seq)` that is identical is a duplicate (not
//!   re-inserted), a different one a conflict (not inserted); `sample_keys`, keyed by
//!   `(GPU, seq)`, also finds a `(GPU, seq)` stored under another instance (a conflict too, as
//!   in the embedded store). Only new samples are written: shares **first**, then samples, then
//!   the `(GPU, seq)` markers; see `ClickHouseStore::write_new_samples` for why that order
//!   makes a crash between the inserts harmless.
//! - One writer never inserts a row with different content under an existing key: a share
//!   already stored under its key (from a crashed earlier attempt) is kept, not replaced. Two
//!   writers racing on the same sample (a consumer-group rebalance) may both insert it; their
//!   rows are identical, or differ only in what enrichment joined, and `FINAL` keeps one.
//!   Racing writers of *different* content for one `(GPU, seq)` (a broken agent, at the same
//!   moment) can both pass the check: there is no lock to prevent it.
//!
//! Interval rows are not stored: [`Store::instance_intervals`] aggregates `shares FINAL` per
//! `(instance, GPU, bucket)`, so the result does not depend on arrival order or on redelivery.
//!
//! # Rollups
//!
//! [`Store::tenant_summary`] reads hourly rollups (`rollup_hourly`) for whole hours whose
//! rollup is fresh and 5-minute data for the rest. Rollups are recomputed from `shares FINAL`
//! (never by a materialized view, which would add redelivered copies), stamped with the
//! hour's write count, and used only while no write has touched the hour since; see
//! `clickhouse/rollups.rs` for why no hour can be counted twice.
//!
//! # Inventory
//!
//! `instances` and `gpus` are `ReplacingMergeTree(version)`s keyed by instance id and GPU uuid:
//! an update inserts a newer version, a GPU taken off an instance gets an `attached = 0`
//! tombstone, and reads take the newest version (`FINAL`) and then filter. Filters on non-key
//! columns must run after `FINAL` collapses versions, so the client turns off the automatic move
//! of `WHERE` conditions into `PREWHERE` (which runs before it on old servers).
//!
//! Every tenant-facing query filters on the tenant of its [`TenantScope`], and every value from
//! a caller is bound with the client's `?` binding, never formatted into SQL.

mod intensity;
mod rollups;
mod rows;
mod schema;
mod workloads;

pub use rollups::SummaryPath;
pub use schema::supports_modern;

use crate::checks::{check_enriched, check_inventory};
use crate::{
    EnrichedSample, GpuRecord, InstanceRecord, IntervalRow, LedgerQuery, LedgerWrite, NewWorkload,
    QuarantineRecord, RefusedSample, RegionCoverage, RestateOutcome, Restatement, RollupRefresh,
    SampleRow, Store, StoreError, TenantSummary, Workload, WorkloadUpdate, WriteOutcome,
};
use ::clickhouse::sql::Identifier;
use ::clickhouse::{Client, Compression, RowOwned, RowRead, RowWrite};
use async_trait::async_trait;
use rows::{
    AggregatedInterval, GpuSpan, RollupMark, SampleKey, ShareKey, StoredGpu, StoredGpuHost,
    StoredInstance, StoredQuarantine, StoredSample, StoredShare, INTERVAL_SELECT,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use wattprint_core::intensity::{IntensityJoin, IntensityPoint};
use wattprint_core::sample::{EnergySample, MAX_SAMPLE_SPAN_MS};
use wattprint_core::timeline::{GpuTimeline, Placement};
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, TenantScope, UnixMillis,
    WorkloadId,
};

/// What a batch's keys already have in the store.
#[derive(Default)]
struct Stored {
    /// Samples under the batch's `(instance, gpu, seq)` keys.
    samples: HashMap<SampleKey, Vec<EnergySample>>,
    /// `(gpu, seq)` markers of the batch's keys, under any instance.
    markers: Vec<SampleKey>,
}

/// What a write does with one sample.
enum Verdict {
    New,
    Duplicate,
    Conflict,
}

/// Keys per `IN (…)` list, so a large batch stays far below the server's `max_query_size`.
const KEYS_PER_QUERY: usize = 500;

/// The ClickHouse store. Cheap to clone: clones share the HTTP client and the clock.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    /// Last nanosecond timestamp handed out by [`ClickHouseStore::tick`].
    clock: Arc<AtomicI64>,
    server_version: String,
    modern: bool,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("server_version", &self.server_version)
            .field("modern", &self.modern)
            .finish_non_exhaustive()
    }
}

/// Maps a ClickHouse client error to [`StoreError::Backend`] for `op`.
pub(crate) fn ch_err(op: &'static str) -> impl Fn(::clickhouse::error::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        source: Box::new(e),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Wall-clock time in UTC milliseconds.
pub(crate) fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

/// The one message for an instance that is absent or another tenant's: no existence leak.
/// Identical to the SQLite store's.
fn instance_not_found(instance: &InstanceId) -> StoreError {
    StoreError::NotFound(format!("instance {instance} not found"))
}

/// `n` comma-separated groups of `arity` placeholders: `(?, ?), (?, ?)`. Only placeholders are
/// formatted into SQL; the values are bound.
fn placeholders(n: usize, arity: usize) -> String {
    let group = format!("({})", vec!["?"; arity].join(", "));
    vec![group; n].join(", ")
}

/// A fresh id: `wl_` and 16 random hex digits (reveals nothing about other workloads).
fn new_workload_id() -> WorkloadId {
    WorkloadId(format!("wl_{:016x}", rand::random::<u64>()))
}

/// Database names are identifiers: letters, digits and `_`, not starting with a digit.
fn check_database(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "ClickHouse database name {name:?} must be letters, digits and '_', \
             not starting with a digit"
        )))
    }
}

impl ClickHouseStore {
    /// Connects to the server at `url` (e.g. `http://127.0.0.1:8123`), creates `database` if it
    /// does not exist and applies pending migrations. The schema uses modern extras only when
    /// the server is at least 23.8 (see [`supports_modern`]).
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        const OP: &str = "connecting to ClickHouse";
        check_database(database)?;
        let base = Client::default()
            .with_url(url)
            // lz4-compressed responses come back broken from 18.16; HTTP is local to the DC.
            .with_compression(Compression::None)
            // 18.16 lacks RowBinaryWithNamesAndTypes; row types are checked by the tests.
            .with_validation(false)
            // Conditions on non-key columns must see versions already collapsed by FINAL.
            .with_option("optimize_move_to_prewhere", "0");
        let server_version: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(ch_err(OP))?;
        base.query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(Identifier(database))
            .execute()
            .await
            .map_err(ch_err(OP))?;
        let client = base.with_database(database);
        let modern = supports_modern(&server_version);
        schema::migrate(&client, &schema::migrations(modern)).await?;
        tracing::info!(%server_version, modern, database, "connected to ClickHouse");
        Ok(Self {
            client,
            clock: Arc::new(AtomicI64::new(0)),
            server_version,
            modern,
        })
    }

    /// The server's version, as `SELECT version()` reported it at connect.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Whether the schema uses the modern (≥ 23.8) extras on this server.
    pub fn is_modern(&self) -> bool {
        self.modern
    }

    /// Wall-clock nanoseconds, strictly increasing across calls on this store and its clones.
    fn tick(&self) -> i64 {
        let now = now_ns();
        let mut last = self.clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self
                .clock
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    async fn fetch<T: RowOwned + RowRead>(
        &self,
        query: ::clickhouse::query::Query,
        op: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        query.fetch_all::<T>().await.map_err(ch_err(op))
    }

    /// One `INSERT` of `rows` into `table` (none when `rows` is empty).
    async fn insert<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &[T],
        op: &'static str,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await.map_err(ch_err(op))?;
        for row in rows {
            insert.write(row).await.map_err(ch_err(op))?;
        }
        insert.end().await.map_err(ch_err(op))
    }

    /// `NotFound` for the first of `instances` (in order) that does not exist or is not the
    /// tenant's; the same message either way.
    async fn require_instances(
        &self,
        tenant: &TenantId,
        instances: &[InstanceId],
        op: &'static str,
    ) -> Result<(), StoreError> {
        let mut found = HashSet::new();
        for chunk in instances.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT instance_id FROM instances FINAL \
                 WHERE tenant = ? AND instance_id IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut q = self.client.query(&sql).bind(tenant.as_str());
            for i in chunk {
                q = q.bind(i.as_str());
            }
            found.extend(self.fetch::<String>(q, op).await?);
        }
        match instances.iter().find(|i| !found.contains(i.as_str())) {
            Some(missing) => Err(instance_not_found(missing)),
            None => Ok(()),
        }
    }

    /// Instances (newest versions) with their attached GPUs, by instance id then GPU uuid;
    /// all tenants when `tenant` is None.
    async fn load_instances(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        const OP: &str = "reading instances";
        let (instances, gpus) = match tenant {
            Some(t) => (
                self.client
                    .query(
                        "SELECT ?fields FROM instances FINAL WHERE tenant = ? \
                         ORDER BY instance_id",
                    )
                    .bind(t.as_str()),
                self.client
                    .query(
                        "SELECT ?fields FROM gpus FINAL WHERE attached = 1 AND instance_id IN \
                         (SELECT instance_id FROM instances FINAL WHERE tenant = ?) \
                         ORDER BY instance_id, uuid",
                    )
                    .bind(t.as_str()),
            ),
            None => (
                self.client
                    .query("SELECT ?fields FROM instances FINAL ORDER BY instance_id"),
                self.client.query(
                    "SELECT ?fields FROM gpus FINAL WHERE attached = 1 \
                     ORDER BY instance_id, uuid",
                ),
            ),
        };
        let instances: Vec<StoredInstance> = self.fetch(instances, OP).await?;
        let gpus: Vec<StoredGpu> = self.fetch(gpus, OP).await?;
        let mut hosts = self.gpu_hosts(&gpus, OP).await?;
        let mut by_instance: HashMap<String, Vec<GpuRecord>> = HashMap::new();
        for g in gpus {
            let host = HostId(hosts.remove(&g.uuid).unwrap_or_default());
            by_instance
                .entry(g.instance_id)
                .or_default()
                .push(GpuRecord {
                    uuid: GpuUuid(g.uuid),
                    model: g.model,
                    power_limit: Milliwatts(g.power_limit_mw),
                    host,
                });
        }
        Ok(instances
            .into_iter()
            .map(|i| InstanceRecord {
                gpus: by_instance.remove(&i.instance_id).unwrap_or_default(),
                tenant: TenantId(i.tenant),
                instance: InstanceId(i.instance_id),
                region: RegionId(i.region),
                zip_code: i.zip_code,
            })
            .collect())
    }

    /// The stored samples under the batch's own keys `(instance, gpu, seq)` (an indexed lookup;
    /// `FINAL` collapses copies, more than one per key only if racing writers enriched it
    /// differently), and the instances each batch `(gpu, seq)` is stored under.
    async fn stored_for(
        &self,
        batch: &[EnrichedSample],
        op: &'static str,
    ) -> Result<Stored, StoreError> {
        let mut keys: Vec<SampleKey> = batch.iter().map(|es| SampleKey::of(&es.sample)).collect();
        keys.sort_unstable_by(|a, b| {
            (&a.gpu_uuid, a.seq, &a.instance_id).cmp(&(&b.gpu_uuid, b.seq, &b.instance_id))
        });
        keys.dedup();
        let mut stored = Stored::default();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM samples FINAL WHERE (instance_id, gpu_uuid, seq) IN ({})",
                placeholders(chunk.len(), 3)
            );
            let mut q = self.client.query(&sql);
            for k in chunk {
                q = q
                    .bind(k.instance_id.as_str())
                    .bind(k.gpu_uuid.as_str())
                    .bind(k.seq);
            }
            for row in self.fetch::<StoredSample>(q, op).await? {
                let sample = row.decode()?;
                stored
                    .samples
                    .entry(SampleKey::of(&sample))
                    .or_default()
                    .push(sample);
            }
        }
        let mut gpu_seqs: Vec<(&str, u64)> =
            keys.iter().map(|k| (k.gpu_uuid.as_str(), k.seq)).collect();
        gpu_seqs.dedup();
        for chunk in gpu_seqs.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM sample_keys WHERE (gpu_uuid, seq) IN ({})",
                placeholders(chunk.len(), 2)
            );
            let mut q = self.client.query(&sql);
            for (gpu, seq) in chunk {
                q = q.bind(*gpu).bind(*seq);
            }
            stored.markers.extend(self.fetch::<SampleKey>(q, op).await?);
        }
        Ok(stored)
    }

    /// The stored spans of the batch's GPUs that its samples could overlap: from
    /// [`MAX_SAMPLE_SPAN_MS`] before the earliest start to the latest end, per GPU.
    async fn timelines_for(
        &self,
        batch: &[EnrichedSample],
        op: &'static str,
    ) -> Result<HashMap<String, GpuTimeline>, StoreError> {
        let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for es in batch {
            let s = &es.sample;
            let r = ranges.entry(s.gpu.as_str()).or_insert((s.start.0, s.end.0));
            r.0 = r.0.min(s.start.0);
            r.1 = r.1.max(s.end.0);
        }
        let mut out: HashMap<String, GpuTimeline> = HashMap::new();
        let ranges: Vec<_> = ranges.into_iter().collect();
        for chunk in ranges.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM gpu_spans WHERE {}",
                vec!["(gpu_uuid = ? AND start_ms > ? AND start_ms < ?)"; chunk.len()].join(" OR ")
            );
            let mut q = self.client.query(&sql);
            for (gpu, (from, to)) in chunk {
                q = q
                    .bind(*gpu)
                    .bind(from.saturating_sub(MAX_SAMPLE_SPAN_MS + 1))
                    .bind(*to);
            }
            for span in self.fetch::<GpuSpan>(q, op).await? {
                let key = span.key();
                out.entry(span.gpu_uuid).or_default().insert(key);
            }
        }
        Ok(out)
    }

    /// The newest host of each of `gpus`.
    async fn gpu_hosts(
        &self,
        gpus: &[StoredGpu],
        op: &'static str,
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut out = HashMap::new();
        for chunk in gpus.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM gpu_hosts FINAL WHERE uuid IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = self.client.query(&sql);
            for g in chunk {
                q = q.bind(g.uuid.as_str());
            }
            for row in self.fetch::<StoredGpuHost>(q, op).await? {
                out.insert(row.uuid, row.host);
            }
        }
        Ok(out)
    }

    /// The stored shares under the given keys.
    async fn stored_shares(
        &self,
        keys: &[ShareKey],
        op: &'static str,
    ) -> Result<HashMap<ShareKey, StoredShare>, StoreError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM shares FINAL \
                 WHERE (instance_id, bucket_ms, gpu_uuid, seq) IN ({})",
                placeholders(chunk.len(), 4)
            );
            let mut q = self.client.query(&sql);
            for (instance, bucket, gpu, seq) in chunk {
                q = q
                    .bind(instance.as_str())
                    .bind(*bucket)
                    .bind(gpu.as_str())
                    .bind(*seq);
            }
            for row in self.fetch::<StoredShare>(q, op).await? {
                out.insert(row.key(), row);
            }
        }
        Ok(out)
    }

    /// Writes samples known to be new with their shares, then the `(gpu, seq)` markers of
    /// these and of any stored sample that lacks one.
    ///
    /// Order matters, because the `INSERT`s are not one transaction: **shares first, then
    /// samples, then markers.** A sample row is what makes a later delivery a duplicate that
    /// writes nothing. If the process dies after the shares and before the samples, no sample
    /// row exists, so the redelivery (the bus redelivers whatever was not acknowledged) writes
    /// the sample again: its shares go under the same deterministic keys, where the stored ones
    /// are kept (looked up here and not re-sent; identical rows would collapse under `FINAL`
    /// anyway), and then the sample row is written. The other order would lose energy: a crash
    /// after the samples insert would leave a sample without shares, and every redelivery,
    /// finding the sample, would skip it forever. A single insert spanning several month
    /// partitions can also be cut between partitions; that is the same case (some shares
    /// stored, no sample) and heals the same way. A crash before the markers leaves stored
    /// samples without one; the redelivery finds them as duplicates and writes the markers.
    ///
    /// The rollup marks of the hours the new samples touch go in **after the shares and before
    /// the samples** (see `clickhouse/rollups.rs`): after the shares, so a recompute that
    /// counts a mark has the shares it stands for; before the samples, so a crash between the
    /// two leaves no sample row and the redelivery writes the marks. Returns the
    /// `(tenant, instance, hour)`s marked.
    async fn write_new_samples(
        &self,
        new: &[&EnrichedSample],
        markers: &[SampleKey],
    ) -> Result<BTreeSet<(String, String, i64)>, StoreError> {
        const OP: &str = "writing samples";
        let shares: Vec<StoredShare> = new
            .iter()
            .flat_map(|es| es.shares.iter().map(|sh| StoredShare::encode(es, sh)))
            .collect();
        let keys: Vec<ShareKey> = shares.iter().map(StoredShare::key).collect();
        let stored = self.stored_shares(&keys, OP).await?;
        let mut fresh = Vec::with_capacity(shares.len());
        for share in shares {
            match stored.get(&share.key()) {
                None => fresh.push(share),
                Some(kept) if *kept == share => {}
                Some(_) => tracing::info!(
                    gpu = %share.gpu_uuid,
                    seq = share.seq,
                    bucket = share.bucket_ms,
                    "share of an interrupted earlier write differs (enriched again); \
                     kept the stored one"
                ),
            }
        }
        self.insert("shares", &fresh, OP).await?;
        let touched: BTreeSet<(String, String, i64)> = new
            .iter()
            .flat_map(|es| {
                es.shares.iter().map(|sh| {
                    (
                        es.tenant.0.clone(),
                        es.sample.instance.0.clone(),
                        rollups::floor_hour(sh.bucket.start().0),
                    )
                })
            })
            .collect();
        let marks: Vec<RollupMark> = touched
            .iter()
            .map(|(tenant, instance, hour)| RollupMark {
                tenant: tenant.clone(),
                instance_id: instance.clone(),
                hour_ms: *hour,
                writes: 1,
            })
            .collect();
        self.insert("rollup_marks", &marks, OP).await?;
        let samples: Vec<StoredSample> = new
            .iter()
            .map(|es| StoredSample::encode(es.tenant.as_str(), &es.sample))
            .collect();
        self.insert("samples", &samples, OP).await?;
        self.insert("sample_keys", markers, OP).await?;
        Ok(touched)
    }
}

#[async_trait]
impl Store for ClickHouseStore {
    /// Each record is the whole truth about its instance: GPUs it no longer lists are detached
    /// (tombstoned), and a GPU listed under a different instance than before moves.
    #[tracing::instrument(skip_all, fields(instances = instances.len()))]
    async fn upsert_inventory(&self, instances: &[InstanceRecord]) -> Result<(), StoreError> {
        const OP: &str = "upserting inventory";
        check_inventory(instances)?;
        if instances.is_empty() {
            return Ok(());
        }
        // GPUs now attached to the instances being re-declared.
        let mut attached: Vec<StoredGpu> = Vec::new();
        for chunk in instances.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM gpus FINAL WHERE attached = 1 AND instance_id IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut q = self.client.query(&sql);
            for rec in chunk {
                q = q.bind(rec.instance.as_str());
            }
            attached.extend(self.fetch::<StoredGpu>(q, OP).await?);
        }
        // The new version must beat every stored one, even one written by a host whose clock
        // runs ahead of ours; otherwise the update would silently lose.
        let stored_max: u64 = self
            .client
            .query(
                "SELECT greatest((SELECT max(version) FROM instances), \
                 (SELECT max(version) FROM gpus))",
            )
            .fetch_one()
            .await
            .map_err(ch_err(OP))?;
        let version = u64::try_from(self.tick())
            .unwrap_or(0)
            .max(stored_max.saturating_add(1));

        let listed: HashSet<&str> = instances
            .iter()
            .flat_map(|r| r.gpus.iter().map(|g| g.uuid.as_str()))
            .collect();
        let instance_rows: Vec<StoredInstance> = instances
            .iter()
            .map(|r| StoredInstance {
                instance_id: r.instance.0.clone(),
                tenant: r.tenant.0.clone(),
                region: r.region.0.clone(),
                zip_code: r.zip_code.clone(),
                version,
            })
            .collect();
        let mut gpu_rows: Vec<StoredGpu> = instances
            .iter()
            .flat_map(|r| {
                r.gpus.iter().map(|g| StoredGpu {
                    uuid: g.uuid.0.clone(),
                    instance_id: r.instance.0.clone(),
                    model: g.model.clone(),
                    power_limit_mw: g.power_limit.0,
                    attached: 1,
                    version,
                })
            })
            .collect();
        gpu_rows.extend(
            attached
                .into_iter()
                .filter(|g| !listed.contains(g.uuid.as_str()))
                .map(|g| StoredGpu {
                    attached: 0,
                    version,
                    ..g
                }),
        );
        let host_rows: Vec<StoredGpuHost> = instances
            .iter()
            .flat_map(|r| r.gpus.iter())
            .map(|g| StoredGpuHost {
                uuid: g.uuid.0.clone(),
                host: g.host.0.clone(),
                version,
            })
            .collect();
        self.insert("instances", &instance_rows, OP).await?;
        // Hosts before the GPUs: a GPU is never readable attached with an older host.
        self.insert("gpu_hosts", &host_rows, OP).await?;
        self.insert("gpus", &gpu_rows, OP).await
    }

    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.load_instances(None).await
    }

    #[tracing::instrument(
        skip_all,
        fields(
            samples = samples.len(),
            inserted = tracing::field::Empty,
            duplicates = tracing::field::Empty,
            conflicts = tracing::field::Empty,
        )
    )]
    async fn write_samples(&self, samples: &[EnrichedSample]) -> Result<WriteOutcome, StoreError> {
        const OP: &str = "writing samples";
        let mut outcome = WriteOutcome::default();
        let mut valid = Vec::with_capacity(samples.len());
        for es in samples {
            match check_enriched(es) {
                Ok(()) => valid.push(es.clone()),
                Err(e) => outcome.refused.push(RefusedSample::invalid(&es.sample, e)),
            }
        }
        let samples = &valid[..];
        let mut timelines = self.timelines_for(samples, OP).await?;
        let Stored {
            samples: mut known,
            markers: stored_markers,
        } = self.stored_for(samples, OP).await?;
        // Instances each `(gpu, seq)` is stored (or, earlier in this batch, decided) under.
        let mut owners: HashMap<(&str, u64), HashSet<&str>> = HashMap::new();
        for m in &stored_markers {
            owners
                .entry((m.gpu_uuid.as_str(), m.seq))
                .or_default()
                .insert(m.instance_id.as_str());
        }

        // Decide in batch order, as if written one by one: a key repeated within the batch is
        // compared with its first occurrence, a span with those placed before it.
        let mut new = Vec::new();
        let mut spans = Vec::new();
        let mut markers: Vec<SampleKey> = Vec::new();
        for es in samples {
            let s = &es.sample;
            let key = SampleKey::of(s);
            let under = owners.entry((s.gpu.as_str(), s.seq)).or_default();
            let verdict = match known.get(&key) {
                Some(stored) if stored.contains(s) => Verdict::Duplicate,
                Some(_) => Verdict::Conflict,
                // Stored under another instance: the instance is part of the content.
                None if under.iter().any(|i| *i != s.instance.as_str()) => Verdict::Conflict,
                None => Verdict::New,
            };
            match verdict {
                Verdict::Duplicate => {
                    outcome.duplicates = outcome.duplicates.saturating_add(1);
                    // A crash between the samples and the markers insert left it unmarked.
                    if under.insert(s.instance.as_str()) {
                        markers.push(key);
                    }
                }
                Verdict::Conflict => {
                    tracing::warn!(
                        gpu = %s.gpu,
                        seq = s.seq,
                        "sample redelivered with different content; kept the stored one"
                    );
                    outcome.conflicts.push((s.gpu.clone(), s.seq));
                }
                Verdict::New => {
                    let span = GpuSpan::of(s);
                    let timeline = timelines.entry(s.gpu.0.clone()).or_default();
                    match timeline.claim(&s.gpu, span.key()) {
                        Err(o) => {
                            tracing::warn!(gpu = %s.gpu, seq = s.seq, stored_seq = o.stored_seq, "sample overlaps stored energy of its GPU; refused");
                            outcome.refused.push(RefusedSample::overlap(o));
                            continue;
                        }
                        // Written by an interrupted earlier attempt: its span is there already.
                        Ok(Placement::Itself) => {}
                        Ok(_) => spans.push(span),
                    }
                    under.insert(s.instance.as_str());
                    known.insert(key.clone(), vec![s.clone()]);
                    markers.push(key);
                    new.push(es);
                    outcome.inserted = outcome.inserted.saturating_add(1);
                }
            }
        }
        if !new.is_empty() || !markers.is_empty() {
            // Spans first: a crash after them leaves a span whose sample is not stored yet,
            // which its redelivery finds as itself; never a stored sample without its span.
            self.insert("gpu_spans", &spans, OP).await?;
            let touched = self.write_new_samples(&new, &markers).await?;
            self.roll_up_passed_hours(&touched).await;
        }
        let span = tracing::Span::current();
        span.record("inserted", outcome.inserted);
        span.record("duplicates", outcome.duplicates);
        span.record("conflicts", outcome.conflicts.len());
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(records = records.len()))]
    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError> {
        let written_ns = self.tick();
        let rows: Vec<StoredQuarantine> = (0u32..)
            .zip(records)
            .map(|(pos, r)| StoredQuarantine::encode(r, written_ns, pos))
            .collect();
        self.insert("quarantine", &rows, "writing quarantine").await
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError> {
        let q = self
            .client
            .query(
                // A redelivered refusal is read once, its first copy (as SQLite keeps it).
                "SELECT ?fields FROM (SELECT * FROM quarantine \
                 ORDER BY received_at_ms, written_ns, position \
                 LIMIT 1 BY host, gpu_uuid, seq, payload) \
                 ORDER BY received_at_ms DESC, written_ns DESC, position DESC LIMIT ?",
            )
            .bind(limit);
        let rows: Vec<StoredQuarantine> = self.fetch(q, "reading quarantine").await?;
        Ok(rows.into_iter().map(StoredQuarantine::decode).collect())
    }

    async fn list_instances(&self, scope: &TenantScope) -> Result<Vec<InstanceRecord>, StoreError> {
        self.load_instances(Some(scope.tenant())).await
    }

    async fn instance_samples(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        const OP: &str = "reading samples";
        let tenant = scope.tenant();
        self.require_instances(tenant, std::slice::from_ref(instance), OP)
            .await?;
        let q = self
            .client
            .query(
                "SELECT ?fields FROM samples FINAL \
                 WHERE tenant = ? AND instance_id = ? AND start_ms < ? AND end_ms > ? \
                 ORDER BY start_ms, end_ms, gpu_uuid, seq LIMIT ?",
            )
            .bind(tenant.as_str())
            .bind(instance.as_str())
            .bind(to.0)
            .bind(from.0)
            .bind(limit);
        let rows: Vec<StoredSample> = self.fetch(q, OP).await?;
        rows.into_iter()
            .map(|r| {
                Ok(SampleRow {
                    sample: r.decode()?,
                })
            })
            .collect()
    }

    async fn instance_intervals(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        const OP: &str = "reading intervals";
        let tenant = scope.tenant();
        self.require_instances(tenant, std::slice::from_ref(instance), OP)
            .await?;
        let sql = format!(
            "SELECT {INTERVAL_SELECT} FROM shares FINAL \
             WHERE tenant = ? AND instance_id = ? AND bucket_ms >= ? AND bucket_ms < ? \
             GROUP BY instance_id, gpu_uuid, bucket_ms ORDER BY bucket_ms, gpu_uuid"
        );
        let q = self
            .client
            .query(&sql)
            .bind(tenant.as_str())
            .bind(instance.as_str())
            .bind(from.0)
            .bind(to.0);
        let rows: Vec<AggregatedInterval> = self.fetch(q, OP).await?;
        rows.into_iter().map(AggregatedInterval::decode).collect()
    }

    #[tracing::instrument(skip_all, fields(instances = workload.instances.len()))]
    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError> {
        self.insert_workload(scope.tenant(), workload).await
    }

    /// Rollups for the whole hours whose rollup is fresh, 5-minute data for the rest; see
    /// `clickhouse/rollups.rs` for why no hour is counted twice.
    #[tracing::instrument(skip_all, fields(rollup_hours = tracing::field::Empty))]
    async fn tenant_summary(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TenantSummary, StoreError> {
        let rows = self
            .tenant_summary_by(scope.tenant(), from, to, SummaryPath::Auto)
            .await?;
        let hours = rows.iter().map(|(_, h)| h).sum();
        tracing::Span::current().record("rollup_hours", hours);
        Ok(TenantSummary::of(
            rows.into_iter().map(|(s, _)| s).collect(),
            hours,
        ))
    }

    #[tracing::instrument(skip_all, fields(recomputed = tracing::field::Empty))]
    async fn refresh_rollups(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<RollupRefresh, StoreError> {
        let recomputed = self.refresh(from, to).await?;
        tracing::Span::current().record("recomputed", recomputed);
        Ok(RollupRefresh { recomputed })
    }

    #[tracing::instrument(skip_all, fields(points = points.len()))]
    async fn write_intensity(&self, points: &[IntensityPoint]) -> Result<LedgerWrite, StoreError> {
        self.write_points(points).await
    }

    async fn intensity_points(
        &self,
        query: &LedgerQuery,
    ) -> Result<Vec<IntensityPoint>, StoreError> {
        self.read_points(query).await
    }

    #[tracing::instrument(skip_all, fields(region = %region))]
    async fn restate(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
        join: &IntensityJoin,
    ) -> Result<RestateOutcome, StoreError> {
        self.restate_region(region, from, to, join).await
    }

    async fn restatements(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Restatement>, StoreError> {
        self.read_restatements(scope.tenant(), from, to).await
    }

    async fn intensity_coverage(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionCoverage>, StoreError> {
        self.coverage(from, to).await
    }

    async fn list_workloads(&self, scope: &TenantScope) -> Result<Vec<Workload>, StoreError> {
        self.load_workloads(scope.tenant(), None).await
    }

    async fn get_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
    ) -> Result<Option<Workload>, StoreError> {
        Ok(self
            .load_workloads(scope.tenant(), Some(id))
            .await?
            .into_iter()
            .next())
    }

    #[tracing::instrument(skip_all, fields(workload = %id))]
    async fn update_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
        update: &WorkloadUpdate,
    ) -> Result<Workload, StoreError> {
        self.change_workload(scope.tenant(), id, update).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_grouped() {
        assert_eq!(placeholders(2, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(1, 1), "(?)");
        assert_eq!(placeholders(0, 3), "");
    }

    #[test]
    fn database_names_are_identifiers() {
        for ok in ["wattprint", "wp_test_00ff", "_x", "A1"] {
            assert!(check_database(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "a b", "a`b", "a;DROP", "é"] {
            assert!(
                matches!(check_database(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
