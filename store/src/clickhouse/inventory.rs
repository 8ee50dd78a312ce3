//! Inventory in ClickHouse: instances, their GPUs and the GPUs' hosts, as versioned rows.
//!
//! `instances`, `gpus` and `gpu_hosts` are `ReplacingMergeTree(version)`s: an upsert inserts
//! a version newer than every stored one, a GPU taken off an instance gets an `attached = 0`
//! tombstone, and reads take the newest version (`FINAL`) before filtering.

use super::rows::{StoredGpu, StoredGpuHost, StoredInstance};
use super::{ch_err, instance_not_found, placeholders, ClickHouseStore, KEYS_PER_QUERY};
use crate::placements::{latest_versions, placement_changes};
use crate::{GpuRecord, InstanceRecord, StoreError};
use std::collections::{HashMap, HashSet};
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};

impl ClickHouseStore {
    /// Each record is the whole truth about its instance: GPUs it no longer lists are detached
    /// (tombstoned), and a GPU listed under a different instance than before moves.
    pub(super) async fn upsert_instances(
        &self,
        instances: &[InstanceRecord],
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        const OP: &str = "upserting inventory";
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
                // Scalar subqueries are Nullable on modern servers (an empty table's max).
                "SELECT toUInt64(greatest(ifNull((SELECT max(version) FROM instances), 0), \
                 ifNull((SELECT max(version) FROM gpus), 0)))",
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
        // The history first: ingest never reads a placement the history lacks.
        let latest = latest_versions(&self.load_placements().await?);
        self.append_placements(&placement_changes(&latest, instances, at), version)
            .await?;
        self.insert("instances", &instance_rows, OP).await?;
        // Hosts before the GPUs: a GPU is never readable attached with an older host.
        self.insert("gpu_hosts", &host_rows, OP).await?;
        self.insert("gpus", &gpu_rows, OP).await
    }

    /// `NotFound` for the first of `instances` (in order) that does not exist or is not the
    /// tenant's; the same message either way.
    pub(super) async fn require_instances(
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
    pub(super) async fn load_instances(
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
}
