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
//! Interval rows are not stored: reads aggregate the shares of each `(instance, GPU, bucket)`
//! as `FINAL` collapses them, so the result does not depend on arrival order or on redelivery
//! (`clickhouse/intervals.rs`: reads of named instances collapse identical copies in the
//! process and use `FINAL` only where copies differ).
//!
//! # Rollups
//!
//! [`Store::tenant_summary`] reads hourly rollups (`rollup_hourly`) for whole hours whose
//! rollup is fresh and 5-minute data for the rest. Rollups are recomputed from `shares FINAL`
//! (never by a materialized view, which would add redelivered copies), stamped with the
//! hour's write count (marked by a view in the same insert as the shares), and used only
//! while no write has touched the hour since; see
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

mod access;
mod daily;
mod day_cache;
mod frontier;
mod intensity;
mod intervals;
mod inventory;
mod placements;
mod quarantine;
mod region_hours;
mod rollups;
mod rows;
mod samples;
mod schema;
mod statements;
mod workloads;

pub use access::{ClickHouseSettings, InsertDurability};
pub use rollups::SummaryPath;
pub use schema::supports_modern;

use crate::checks::check_inventory;
use crate::{
    EnrichedSample, GpuHourUsage, InstanceRecord, IntervalRow, IssuedStatement, LedgerQuery,
    LedgerWrite, NewWorkload, PlacementVersion, QuarantinePrune, QuarantineRecord,
    QuarantineRetention, RegionCoverage, RegionHourEnergy, RestateOutcome, Restatement,
    RollupRefresh, SampleRetention, SampleRow, Store, StoreError, TenantSummary, Workload,
    WorkloadUpdate, WriteOutcome,
};
use ::clickhouse::sql::Identifier;
use ::clickhouse::{Client, Compression, Row, RowOwned, RowRead, RowWrite};
use async_trait::async_trait;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use wattprint_core::intensity::{IntensityJoin, IntensityPoint};
use wattprint_core::{InstanceId, RegionId, TenantScope, UnixMillis, WorkloadId};

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
    /// The retention (days) the quarantine's TTL was last set to by this process (0: not yet).
    quarantine_ttl_days: Arc<AtomicU32>,
    /// The retention (days) the raw samples' TTL was last set to by this process (0: not yet).
    samples_ttl_days: Arc<AtomicU32>,
    /// Whole days of instance intervals and hours already read (`clickhouse/day_cache.rs`).
    day_caches: Arc<day_cache::DayCaches>,
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
    /// Connects to the server at `url` (e.g. `http://127.0.0.1:8123`) without credentials;
    /// see [`ClickHouseStore::connect_with`].
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        Self::connect_with(&ClickHouseSettings::new(url, database)).await
    }

    /// Connects as `settings` say (credentials, TLS, insert durability), creates the database
    /// if it does not exist and applies pending migrations. The schema uses modern extras only
    /// when the server is at least 23.8 (see [`supports_modern`]).
    pub async fn connect_with(settings: &ClickHouseSettings) -> Result<Self, StoreError> {
        const OP: &str = "connecting to ClickHouse";
        let database = settings.database.as_str();
        check_database(database)?;
        let base = access::client(settings)?
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
        access::apply_fsync(&client, &settings.durability, modern, &server_version).await?;
        access::check_quorum(&client, &settings.durability).await?;
        tracing::info!(%server_version, modern, database, "connected to ClickHouse");
        Ok(Self {
            client,
            clock: Arc::new(AtomicI64::new(0)),
            server_version,
            modern,
            quarantine_ttl_days: Arc::new(AtomicU32::new(0)),
            samples_ttl_days: Arc::new(AtomicU32::new(0)),
            day_caches: Arc::default(),
        })
    }

    /// The server's version, as `SELECT version()` reported it at connect.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// This store with a day cache of its own, empty (`clickhouse/day_cache.rs`): what a
    /// freshly started process reads.
    pub fn with_empty_day_cache(&self) -> Self {
        Self {
            day_caches: Arc::default(),
            ..self.clone()
        }
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

    /// Runs a read. A pooled connection that the server (or a proxy) closed while it sat idle,
    /// a restart for instance, fails the first request sent on it; a read is safe to send once
    /// more, on a fresh connection.
    async fn fetch<T: RowOwned + RowRead>(
        &self,
        query: ::clickhouse::query::Query,
        op: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        match query.clone().fetch_all::<T>().await {
            Err(::clickhouse::error::Error::Network(e)) => {
                tracing::debug!(error = %e, op, "ClickHouse read failed on the network; once more");
                query.fetch_all::<T>().await.map_err(ch_err(op))
            }
            other => other.map_err(ch_err(op)),
        }
    }

    /// One `INSERT` of `rows` into `table` (none when `rows` is empty).
    async fn insert<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &[T],
        op: &'static str,
    ) -> Result<(), StoreError> {
        self.insert_values::<T>(table, rows, op).await
    }

    /// Inserts rows of `T` that may borrow their data (`T::Value<'_>`: `T` with the borrow's
    /// lifetime), so a write encodes its rows without copying them.
    async fn insert_values<T: Row + RowWrite>(
        &self,
        table: &str,
        rows: &[T::Value<'_>],
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
}

#[async_trait]
impl Store for ClickHouseStore {
    async fn upsert_inventory_at(
        &self,
        instances: &[InstanceRecord],
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        check_inventory(instances)?;
        self.upsert_instances(instances, at).await
    }

    async fn placement_history(&self) -> Result<Vec<PlacementVersion>, StoreError> {
        self.load_placements().await
    }

    async fn issue_statement(
        &self,
        statement: &IssuedStatement,
    ) -> Result<IssuedStatement, StoreError> {
        crate::statements::check_period(&statement.period)?;
        self.insert_statement(statement).await
    }

    async fn issued_statement(
        &self,
        scope: &TenantScope,
        period: &str,
    ) -> Result<Option<IssuedStatement>, StoreError> {
        crate::statements::check_period(period)?;
        Ok(self
            .load_statements(scope.tenant(), Some(period))
            .await?
            .pop())
    }

    async fn issued_statements(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<IssuedStatement>, StoreError> {
        self.load_statements(scope.tenant(), None).await
    }

    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.load_instances(None).await
    }

    async fn write_samples(&self, samples: &[EnrichedSample]) -> Result<WriteOutcome, StoreError> {
        self.store_samples(samples).await
    }

    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError> {
        self.insert_quarantine(records).await
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.read_quarantine(limit).await
    }

    async fn quarantine_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.count_quarantine().await
    }

    async fn prune_samples(
        &self,
        rules: &SampleRetention,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.prune_old_samples(rules, now).await
    }

    async fn prune_quarantine(
        &self,
        rules: &QuarantineRetention,
        now: UnixMillis,
    ) -> Result<QuarantinePrune, StoreError> {
        self.prune_held(rules, now).await
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
        self.read_window_samples(scope.tenant(), &[(instance.clone(), from, to)], limit)
            .await
    }

    async fn instance_intervals(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        self.read_instance_intervals(scope.tenant(), instance, from, to)
            .await
    }

    async fn instances_intervals(
        &self,
        scope: &TenantScope,
        instances: &[InstanceId],
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        self.read_intervals(scope.tenant(), Some(instances), ranges)
            .await
    }

    async fn windows_samples(
        &self,
        scope: &TenantScope,
        windows: &[(InstanceId, UnixMillis, UnixMillis)],
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        self.read_window_samples(scope.tenant(), windows, limit)
            .await
    }

    /// Fresh hourly rollups, 5-minute data for the stale hours; see `clickhouse/rollups.rs`.
    async fn instance_hourly_usage(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<GpuHourUsage>, StoreError> {
        self.read_instance_hours(scope.tenant(), instance, from, to)
            .await
    }

    async fn tenant_intervals(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        self.read_intervals(scope.tenant(), None, &[(from, to)])
            .await
    }

    async fn prune_restatements(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.prune_old_restatements(before).await
    }

    async fn region_hourly_facility_energy(
        &self,
        regions: &[RegionId],
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionHourEnergy>, StoreError> {
        self.region_hourly_facility_energy_by(regions, (from, to), SummaryPath::Auto)
            .await
    }

    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError> {
        self.insert_workload(scope.tenant(), workload).await
    }

    /// Rollups for the whole hours whose rollup is fresh, 5-minute data for the rest; see
    /// `clickhouse/rollups.rs` for why no hour is counted twice.
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
        Ok(TenantSummary::of(
            rows.into_iter().map(|(s, _)| s).collect(),
            hours,
        ))
    }

    async fn refresh_rollups(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<RollupRefresh, StoreError> {
        let recomputed = self.refresh(from, to).await?;
        Ok(RollupRefresh { recomputed })
    }

    async fn write_intensity(&self, points: &[IntensityPoint]) -> Result<LedgerWrite, StoreError> {
        self.write_points(points).await
    }

    async fn intensity_points(
        &self,
        query: &LedgerQuery,
    ) -> Result<Vec<IntensityPoint>, StoreError> {
        self.read_points(query).await
    }

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
