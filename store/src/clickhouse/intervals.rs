//! Reading a tenant's 5-minute intervals: the shares of each `(instance, GPU, bucket)`,
//! collapsed to one per key `(instance, bucket, GPU, seq)` and aggregated
//! ([`AggregatedInterval`]).
//!
//! `FINAL` collapses a key's copies to the one inserted last (a restatement's), but on 18.16 it
//! and the server's string `argMin`s cost about 100 ms for one instance's month. Reads of named
//! instances therefore fetch the shares as stored (no `FINAL`, and every tenant's: the tenant
//! filter applies after the collapse) and aggregate them here. Where each key's copies are
//! identical, those rows are exactly what `FINAL` keeps; the buckets where some key has copies
//! that differ (a restatement not merged yet, racing enrichers) are read again with `FINAL`, as
//! tenant-wide reads always are. Either way: the same rows, in the same order.

use super::rows::{AggregatedInterval, StoredShare, INTERVAL_SELECT};
use super::{placeholders, ClickHouseStore, KEYS_PER_QUERY};
use crate::{IntervalRow, StoreError};
use wattprint_core::{InstanceId, TenantId, UnixMillis, BUCKET_MS};

const OP: &str = "reading intervals";

/// `(instance, from, to)` bucket ranges re-read with `FINAL` per query.
const WINDOWS_PER_QUERY: usize = 200;

impl ClickHouseStore {
    /// The intervals of the tenant's `instances` (all its instances, those given up included,
    /// when None) for buckets in any of the disjoint `ranges`, by instance, bucket, GPU. A
    /// named instance not the tenant's: `NotFound`.
    pub(super) async fn read_intervals(
        &self,
        tenant: &TenantId,
        instances: Option<&[InstanceId]>,
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let Some(instances) = instances else {
            return self.read_tenant_intervals(tenant, ranges).await;
        };
        let mut named = instances.to_vec();
        named.sort_unstable();
        named.dedup();
        // The ownership check runs beside the read; nothing read is returned unless it passes.
        let ((), rows) = tokio::try_join!(
            self.require_instances(tenant, &named, OP),
            self.read_named_intervals(tenant, &named, ranges)
        )?;
        Ok(rows)
    }

    /// Every instance's intervals for `ranges`, aggregated by the server from `shares FINAL`.
    async fn read_tenant_intervals(
        &self,
        tenant: &TenantId,
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let sql = final_intervals_sql(&vec!["(bucket_ms >= ? AND bucket_ms < ?)"; ranges.len()]);
        let mut q = self.client.query(&sql).bind(tenant.as_str());
        for (from, to) in ranges {
            q = q.bind(from.0).bind(to.0);
        }
        decode_all(self.fetch::<AggregatedInterval>(q, OP).await?)
    }

    /// The intervals of `named` (sorted, distinct) for `ranges`, from the shares as stored,
    /// and, for the buckets where copies of a key differ, from `shares FINAL`.
    async fn read_named_intervals(
        &self,
        tenant: &TenantId,
        named: &[InstanceId],
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in named.chunks(KEYS_PER_QUERY).filter(|_| !ranges.is_empty()) {
            let sql = format!(
                // Key columns only, and no `FINAL`: safe to filter before reading the rest.
                "SELECT ?fields FROM shares PREWHERE instance_id IN ({}) AND ({})",
                placeholders(chunk.len(), 1),
                vec!["(bucket_ms >= ? AND bucket_ms < ?)"; ranges.len()].join(" OR ")
            );
            let mut q = self.client.query(&sql);
            for instance in chunk {
                q = q.bind(instance.as_str());
            }
            for (from, to) in ranges {
                q = q.bind(from.0).bind(to.0);
            }
            let mut shares: Vec<StoredShare> = self.fetch(q, OP).await?;
            shares.sort_unstable_by(|a, b| share_order(a).cmp(&share_order(b)));
            let (settled, unsettled) = aggregate_settled(tenant.as_str(), shares);
            let mut rows = decode_all(settled)?;
            if !unsettled.is_empty() {
                rows.extend(self.read_final_windows(tenant, &unsettled).await?);
                rows.sort_by(|a, b| {
                    (&a.instance, a.bucket, &a.gpu).cmp(&(&b.instance, b.bucket, &b.gpu))
                });
            }
            out.extend(rows);
        }
        Ok(out)
    }

    /// The intervals of the `(instance, bucket)`s of `buckets` (sorted), from `shares FINAL`.
    async fn read_final_windows(
        &self,
        tenant: &TenantId,
        buckets: &[(String, i64)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let windows = coalesce(buckets);
        tracing::debug!(
            buckets = buckets.len(),
            windows = windows.len(),
            "copies of a share differ: these buckets read with FINAL"
        );
        let mut out = Vec::new();
        for chunk in windows.chunks(WINDOWS_PER_QUERY) {
            let sql = final_intervals_sql(&vec![
                "(instance_id = ? AND bucket_ms >= ? AND bucket_ms < ?)";
                chunk.len()
            ]);
            let mut q = self.client.query(&sql).bind(tenant.as_str());
            for (instance, from, to) in chunk {
                q = q.bind(*instance).bind(*from).bind(*to);
            }
            out.extend(decode_all(self.fetch::<AggregatedInterval>(q, OP).await?)?);
        }
        Ok(out)
    }
}

/// The server's aggregation of the tenant's `shares FINAL` in any of `conditions`.
fn final_intervals_sql(conditions: &[&str]) -> String {
    format!(
        "SELECT {INTERVAL_SELECT} FROM shares FINAL \
         WHERE tenant = ? AND ({}) \
         GROUP BY instance_id, gpu_uuid, bucket_ms \
         ORDER BY instance_id, bucket_ms, gpu_uuid",
        conditions.join(" OR ")
    )
}

fn decode_all(rows: Vec<AggregatedInterval>) -> Result<Vec<IntervalRow>, StoreError> {
    rows.into_iter().map(AggregatedInterval::decode).collect()
}

/// A share's key in the order intervals are returned in: instance, bucket, GPU, then `seq`.
fn share_order(s: &StoredShare) -> (&str, i64, &str, u64) {
    (&s.instance_id, s.bucket_ms, &s.gpu_uuid, s.seq)
}

/// From `shares` sorted by [`share_order`] (copies included, every tenant's): the intervals of
/// `tenant` in the buckets where every key's copies are identical, and the `(instance,
/// bucket)`s, sorted, where some key's copies differ (only `FINAL` knows the one that counts).
fn aggregate_settled(
    tenant: &str,
    mut shares: Vec<StoredShare>,
) -> (Vec<AggregatedInterval>, Vec<(String, i64)>) {
    let mut unsettled: Vec<(String, i64)> = Vec::new();
    for w in shares.windows(2) {
        let bucket = (w[0].instance_id.as_str(), w[0].bucket_ms);
        if share_order(&w[0]) == share_order(&w[1])
            && w[0] != w[1]
            && unsettled.last().map(|(i, b)| (i.as_str(), *b)) != Some(bucket)
        {
            unsettled.push((bucket.0.to_owned(), bucket.1));
        }
    }
    shares.dedup_by(|a, b| a == b);
    shares.retain(|s| {
        s.tenant == tenant
            && (unsettled.is_empty()
                || unsettled
                    .binary_search_by(|(i, b)| {
                        (i.as_str(), *b).cmp(&(s.instance_id.as_str(), s.bucket_ms))
                    })
                    .is_err())
    });
    let mut settled = Vec::with_capacity(shares.len());
    settled.extend(
        shares
            .chunk_by_mut(|a, b| {
                (&a.instance_id, a.bucket_ms, &a.gpu_uuid)
                    == (&b.instance_id, b.bucket_ms, &b.gpu_uuid)
            })
            .filter_map(AggregatedInterval::of_shares),
    );
    (settled, unsettled)
}

/// `(instance, bucket)`s (sorted) as `(instance, from, to)` ranges, neighbours joined.
fn coalesce<S: AsRef<str>>(buckets: &[(S, i64)]) -> Vec<(&str, i64, i64)> {
    let mut out: Vec<(&str, i64, i64)> = Vec::new();
    for (instance, bucket) in buckets {
        let (instance, bucket) = (instance.as_ref(), *bucket);
        match out.last_mut() {
            Some((i, _, to)) if *i == instance && *to == bucket => *to = bucket + BUCKET_MS,
            _ => out.push((instance, bucket, bucket + BUCKET_MS)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A share of `tenant` on `vm-1`, 1 J, no intensity.
    fn share(tenant: &str, bucket_ms: i64, gpu: &str, seq: u64) -> StoredShare {
        StoredShare {
            tenant: tenant.to_owned(),
            instance_id: "vm-1".to_owned(),
            bucket_ms,
            gpu_uuid: gpu.to_owned(),
            seq,
            energy_mj: 1_000,
            estimated_mj: 0,
            covered_ms: 1_000,
            power_max_mw: 100,
            region: "r1".to_owned(),
            has_intensity: 0,
            intensity_value: 0.0,
            intensity_kind: String::new(),
            intensity_source: String::new(),
            intensity_point_ms: 0,
            intensity_replayed: 0,
            pue: 1.0,
        }
    }

    fn with_intensity(mut s: StoredShare, value: f64) -> StoredShare {
        s.has_intensity = 1;
        s.intensity_value = value;
        s.intensity_kind = "actual".to_owned();
        s.intensity_source = "test".to_owned();
        s.intensity_point_ms = s.bucket_ms;
        s
    }

    fn aggregate(mut shares: Vec<StoredShare>) -> (Vec<IntervalRow>, Vec<(String, i64)>) {
        shares.sort_unstable_by(|a, b| share_order(a).cmp(&share_order(b)));
        let (settled, unsettled) = aggregate_settled("t1", shares);
        (decode_all(settled).unwrap(), unsettled)
    }

    #[test]
    fn identical_copies_count_once_and_the_lowest_seq_names_the_interval() {
        let b = 600_000;
        let mut late = share("t1", b, "g1", 9);
        late.energy_mj = 2_500;
        late.power_max_mw = 300;
        late.region = "r9".to_owned();
        late.covered_ms = 500;
        let shares = vec![
            with_intensity(late.clone(), 400.0),
            share("t1", b, "g1", 7),
            with_intensity(late, 400.0),
            share("t1", b, "g1", 7),
            with_intensity(share("t1", b, "g1", 8), 250.0),
        ];
        let (rows, unsettled) = aggregate(shares);
        assert!(unsettled.is_empty());
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        // Seqs 7, 8 and 9 once each: 1 000 + 1 000 + 2 500 mJ.
        assert_eq!(r.energy.0, 4_500);
        assert_eq!((r.samples, r.covered_ms, r.power_max.0), (3, 2_500, 300));
        // Region of seq 7; intensity of seq 8, the lowest that has one.
        assert_eq!(r.region.0, "r1");
        assert_eq!(r.intensity.as_ref().unwrap().value.0, 250.0);
    }

    #[test]
    fn differing_copies_leave_their_bucket_to_final() {
        let (b1, b2, b3) = (0, 300_000, 600_000);
        let shares = vec![
            share("t1", b1, "g1", 1),
            share("t1", b2, "g1", 2),
            with_intensity(share("t1", b2, "g1", 2), 300.0),
            share("t1", b2, "g2", 2),
            share("t1", b3, "g1", 3),
            // A copy under another tenant (the instance changed owner) differs too.
            share("t2", b3, "g2", 3),
            share("t1", b3, "g2", 3),
        ];
        let (rows, unsettled) = aggregate(shares);
        assert_eq!(
            unsettled,
            vec![("vm-1".to_owned(), b2), ("vm-1".to_owned(), b3)]
        );
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].bucket.start().0, rows[0].energy.0), (b1, 1_000));
    }

    #[test]
    fn other_tenants_shares_are_not_counted() {
        let shares = vec![
            share("t2", 0, "g1", 1),
            share("t2", 0, "g1", 1),
            share("t1", 0, "g2", 1),
            share("t2", 300_000, "g1", 2),
        ];
        let (rows, unsettled) = aggregate(shares);
        assert!(unsettled.is_empty());
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.bucket.start().0, r.gpu.0.as_str()))
            .collect();
        assert_eq!(got, vec![(0, "g2")]);
    }

    #[test]
    fn neighbouring_buckets_join_into_one_window() {
        let buckets = [("a", 0), ("a", 300_000), ("a", 900_000), ("b", 1_200_000)];
        assert_eq!(
            coalesce(&buckets),
            vec![
                ("a", 0, 600_000),
                ("a", 900_000, 1_200_000),
                ("b", 1_200_000, 1_500_000)
            ]
        );
    }
}
