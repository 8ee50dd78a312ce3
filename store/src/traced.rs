//! [`Traced`]: a [`Store`] that opens one tracing span per operation and delegates.
//!
//! The backends carry no tracing of their own: wrapping a store in [`Traced`] gives every
//! operation an `INFO` span named after it (`write_samples`, `restate`, …) with the same fields
//! whichever backend runs underneath, and events a backend logs land inside that span. The
//! decorator only observes: it passes arguments and results through unchanged.

use crate::metrics::timed_write;
use crate::{
    EnrichedSample, GpuHourUsage, InstanceRecord, IntervalRow, IssuedStatement, LedgerQuery,
    LedgerWrite, NewWorkload, PlacementVersion, QuarantinePrune, QuarantineRecord,
    QuarantineRetention, RegionCoverage, RegionHourEnergy, RestateOutcome, Restatement,
    RollupRefresh, SampleRetention, SampleRow, Store, StoreError, TenantSummary, Workload,
    WorkloadUpdate, WriteOutcome,
};
use async_trait::async_trait;
use tracing::field::Empty;
use tracing::{info_span, Instrument};
use wattprint_core::intensity::{IntensityJoin, IntensityPoint};
use wattprint_core::{InstanceId, RegionId, TenantScope, UnixMillis, WorkloadId};

/// A store whose every operation runs inside a tracing span. Construct with [`Traced::new`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S: Store> Traced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped store (its operations called directly are not traced).
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: Store> Store for Traced<S> {
    async fn upsert_inventory_at(
        &self,
        instances: &[InstanceRecord],
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let span = info_span!("upsert_inventory", instances = instances.len(), at = at.0);
        let write = self.inner.upsert_inventory_at(instances, at);
        timed_write("inventory", instances.len(), write.instrument(span)).await
    }

    async fn issue_statement(
        &self,
        statement: &IssuedStatement,
    ) -> Result<IssuedStatement, StoreError> {
        let span =
            info_span!("issue_statement", tenant = %statement.tenant, period = %statement.period);
        self.inner.issue_statement(statement).instrument(span).await
    }

    async fn issued_statement(
        &self,
        scope: &TenantScope,
        period: &str,
    ) -> Result<Option<IssuedStatement>, StoreError> {
        let span = info_span!("issued_statement", tenant = %scope.tenant(), period);
        self.inner
            .issued_statement(scope, period)
            .instrument(span)
            .await
    }

    async fn issued_statements(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<IssuedStatement>, StoreError> {
        let span = info_span!("issued_statements", tenant = %scope.tenant());
        self.inner.issued_statements(scope).instrument(span).await
    }

    async fn placement_history(&self) -> Result<Vec<PlacementVersion>, StoreError> {
        self.inner
            .placement_history()
            .instrument(info_span!("placement_history"))
            .await
    }

    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.inner
            .inventory()
            .instrument(info_span!("inventory"))
            .await
    }

    async fn write_samples(&self, samples: &[EnrichedSample]) -> Result<WriteOutcome, StoreError> {
        let span = info_span!(
            "write_samples",
            samples = samples.len(),
            inserted = Empty,
            duplicates = Empty,
            conflicts = Empty,
        );
        let write = self.inner.write_samples(samples).instrument(span.clone());
        let outcome = timed_write("samples", samples.len(), write).await?;
        span.record("inserted", outcome.inserted);
        span.record("duplicates", outcome.duplicates);
        span.record("conflicts", outcome.conflicts.len());
        Ok(outcome)
    }

    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError> {
        let span = info_span!("write_quarantine", records = records.len());
        let write = self.inner.write_quarantine(records).instrument(span);
        timed_write("quarantine", records.len(), write).await
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError> {
        let span = info_span!("quarantine", limit);
        self.inner.quarantine(limit).instrument(span).await
    }

    async fn quarantine_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let span = info_span!("quarantine_counts");
        self.inner.quarantine_counts().instrument(span).await
    }

    async fn prune_samples(
        &self,
        rules: &SampleRetention,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let span = info_span!("prune_samples", days = rules.days, deleted = Empty);
        let deleted = self
            .inner
            .prune_samples(rules, now)
            .instrument(span.clone())
            .await?;
        span.record("deleted", deleted);
        Ok(deleted)
    }

    async fn prune_quarantine(
        &self,
        rules: &QuarantineRetention,
        now: UnixMillis,
    ) -> Result<QuarantinePrune, StoreError> {
        let span = info_span!(
            "prune_quarantine",
            days = rules.days,
            expired = Empty,
            over_cap = Empty
        );
        let pruned = self
            .inner
            .prune_quarantine(rules, now)
            .instrument(span.clone())
            .await?;
        span.record("expired", pruned.expired);
        span.record("over_cap", pruned.over_cap);
        Ok(pruned)
    }

    async fn list_instances(&self, scope: &TenantScope) -> Result<Vec<InstanceRecord>, StoreError> {
        let span = info_span!("list_instances");
        self.inner.list_instances(scope).instrument(span).await
    }

    async fn instance_samples(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let span = info_span!("instance_samples", instance = %instance);
        self.inner
            .instance_samples(scope, instance, from, to, limit)
            .instrument(span)
            .await
    }

    async fn instance_intervals(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let span = info_span!("instance_intervals", instance = %instance);
        self.inner
            .instance_intervals(scope, instance, from, to)
            .instrument(span)
            .await
    }

    async fn instances_intervals(
        &self,
        scope: &TenantScope,
        instances: &[InstanceId],
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let span = info_span!(
            "instances_intervals",
            instances = instances.len(),
            ranges = ranges.len()
        );
        self.inner
            .instances_intervals(scope, instances, ranges)
            .instrument(span)
            .await
    }

    async fn windows_samples(
        &self,
        scope: &TenantScope,
        windows: &[(InstanceId, UnixMillis, UnixMillis)],
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let span = info_span!("windows_samples", windows = windows.len());
        self.inner
            .windows_samples(scope, windows, limit)
            .instrument(span)
            .await
    }

    async fn instance_hourly_usage(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<GpuHourUsage>, StoreError> {
        let span = info_span!("instance_hourly_usage", instance = %instance, rows = Empty);
        let rows = self
            .inner
            .instance_hourly_usage(scope, instance, from, to)
            .instrument(span.clone())
            .await?;
        span.record("rows", rows.len());
        Ok(rows)
    }

    async fn tenant_intervals(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let span = info_span!("tenant_intervals", tenant = %scope.tenant(), rows = Empty);
        let rows = self
            .inner
            .tenant_intervals(scope, from, to)
            .instrument(span.clone())
            .await?;
        span.record("rows", rows.len());
        Ok(rows)
    }

    async fn prune_restatements(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let span = info_span!("prune_restatements", before = before.0, due = Empty);
        let due = self
            .inner
            .prune_restatements(before)
            .instrument(span.clone())
            .await?;
        span.record("due", due);
        Ok(due)
    }

    async fn region_hourly_facility_energy(
        &self,
        regions: &[RegionId],
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionHourEnergy>, StoreError> {
        let span = info_span!(
            "region_hourly_facility_energy",
            regions = regions.len(),
            rows = Empty
        );
        let rows = self
            .inner
            .region_hourly_facility_energy(regions, from, to)
            .instrument(span.clone())
            .await?;
        span.record("rows", rows.len());
        Ok(rows)
    }

    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError> {
        let span = info_span!("create_workload", instances = workload.instances.len());
        self.inner
            .create_workload(scope, workload)
            .instrument(span)
            .await
    }

    async fn tenant_summary(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TenantSummary, StoreError> {
        let span = info_span!("tenant_summary", rollup_hours = Empty);
        let summary = self
            .inner
            .tenant_summary(scope, from, to)
            .instrument(span.clone())
            .await?;
        span.record("rollup_hours", summary.rollup_instance_hours);
        Ok(summary)
    }

    async fn refresh_rollups(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<RollupRefresh, StoreError> {
        let span = info_span!("refresh_rollups", recomputed = Empty);
        let refresh = self
            .inner
            .refresh_rollups(from, to)
            .instrument(span.clone())
            .await?;
        span.record("recomputed", refresh.recomputed);
        Ok(refresh)
    }

    async fn write_intensity(&self, points: &[IntensityPoint]) -> Result<LedgerWrite, StoreError> {
        let span = info_span!("write_intensity", points = points.len());
        let write = self.inner.write_intensity(points).instrument(span);
        timed_write("intensity_ledger", points.len(), write).await
    }

    async fn intensity_points(
        &self,
        query: &LedgerQuery,
    ) -> Result<Vec<IntensityPoint>, StoreError> {
        let span = info_span!("intensity_points");
        self.inner.intensity_points(query).instrument(span).await
    }

    async fn restate(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
        join: &IntensityJoin,
    ) -> Result<RestateOutcome, StoreError> {
        let span = info_span!("restate", region = %region);
        self.inner
            .restate(region, from, to, join)
            .instrument(span)
            .await
    }

    async fn restatements(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Restatement>, StoreError> {
        let span = info_span!("restatements");
        self.inner
            .restatements(scope, from, to)
            .instrument(span)
            .await
    }

    async fn intensity_coverage(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionCoverage>, StoreError> {
        let span = info_span!("intensity_coverage");
        self.inner
            .intensity_coverage(from, to)
            .instrument(span)
            .await
    }

    async fn list_workloads(&self, scope: &TenantScope) -> Result<Vec<Workload>, StoreError> {
        let span = info_span!("list_workloads");
        self.inner.list_workloads(scope).instrument(span).await
    }

    async fn get_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
    ) -> Result<Option<Workload>, StoreError> {
        let span = info_span!("get_workload", workload = %id);
        self.inner.get_workload(scope, id).instrument(span).await
    }

    async fn update_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
        update: &WorkloadUpdate,
    ) -> Result<Workload, StoreError> {
        let span = info_span!("update_workload", workload = %id);
        self.inner
            .update_workload(scope, id, update)
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuRecord, SqliteStore};
    use wattprint_core::{GpuUuid, HostId, Milliwatts, TenantId};

    #[tokio::test]
    async fn passes_calls_and_results_through() {
        let store = Traced::new(SqliteStore::open_in_memory().unwrap());
        let record = InstanceRecord {
            tenant: TenantId::from("acme"),
            instance: InstanceId::from("i-a"),
            region: RegionId::from("R"),
            zip_code: None,
            gpus: vec![GpuRecord {
                uuid: GpuUuid::from("GPU-1"),
                model: "m".into(),
                power_limit: Milliwatts(700_000),
                host: HostId::from("h"),
            }],
        };
        store
            .upsert_inventory(std::slice::from_ref(&record))
            .await
            .unwrap();
        assert_eq!(store.inventory().await.unwrap(), vec![record.clone()]);
        assert_eq!(store.inner().inventory().await.unwrap(), vec![record]);
        let err = store
            .instance_samples(
                &TenantScope::from_verified(TenantId::from("other")),
                &InstanceId::from("i-a"),
                UnixMillis(0),
                UnixMillis(1),
                10,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }
}
