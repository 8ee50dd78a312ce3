//! The embedded SQLite [`Store`]: one file, WAL mode, versioned migrations.
//!
//! One connection behind a mutex serialises access; every call runs on Tokio's blocking pool so
//! async callers are never blocked by SQLite. Energy is stored as exact integer millijoules.
//! Every tenant-facing query filters on the tenant of its [`TenantScope`].

mod intensity;
mod rows;
mod schema;

use crate::checks::{apply_workload_update, check_inventory, check_workload};
use crate::{
    decide_restatements, EnrichedSample, GpuRecord, InstanceRecord, InstanceSummary, IntervalRow,
    LedgerQuery, LedgerWrite, NewWorkload, QuarantineRecord, RefusedSample, RegionCoverage,
    RestateOutcome, Restatement, SampleRow, Store, StoreError, TenantSummary, Workload,
    WorkloadUpdate, WriteOutcome,
};
use async_trait::async_trait;
use rows::{
    to_stored, RawInterval, RawSample, RawUsage, INTERVAL_COLUMNS, SAMPLE_COLUMNS, USAGE_COLUMNS,
};
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wattprint_core::intensity::{IntensityJoin, IntensityPoint};
use wattprint_core::sample::{EnergySource, MAX_SAMPLE_SPAN_MS};
use wattprint_core::timeline::{GpuTimeline, SpanKey};
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, TenantScope, UnixMillis,
    WorkloadId,
};

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store. Cheap to clone: clones share one connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

/// How durable an acknowledged write is (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// A write is on disk when it returns: an ack, and the bus offset committed after it,
    /// survive a power cut, not only a crash of the process. The default.
    #[default]
    Full,
    /// WAL appended, synced at checkpoints: survives a process crash; a power cut may lose
    /// the last acknowledged writes (which agents then do not resend).
    Normal,
}

impl SqliteSync {
    fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        }
    }
}

/// Creates `path` empty with mode 0600 unless it exists.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies pending migrations.
    /// The parent directory must exist. A new file is created readable by its owner only
    /// (0600; SQLite gives its WAL the same mode): it holds every tenant's data.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteSync::Full)
    }

    /// [`SqliteStore::open`] with the given durability of writes.
    pub fn open_with(path: &Path, sync: SqliteSync) -> Result<Self, StoreError> {
        create_private(path).map_err(|e| StoreError::Backend {
            op: "creating the database file",
            source: format!("{}: {e}", path.display()).into(),
        })?;
        let conn = Connection::open(path).map_err(|e| StoreError::Backend {
            op: "opening the database",
            source: format!("{}: {e}", path.display()).into(),
        })?;
        Self::init(conn, true, sync)
    }

    /// A private in-memory database (tests, demos). Nothing survives the store.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(db_err("opening the database"))?;
        Self::init(conn, false, SqliteSync::Full)
    }

    fn init(mut conn: Connection, file: bool, sync: SqliteSync) -> Result<Self, StoreError> {
        const OP: &str = "configuring the database";
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err(OP))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db_err(OP))?;
        if file && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; continuing without it");
        }
        conn.pragma_update(None, "synchronous", sync.pragma())
            .map_err(db_err(OP))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err(OP))?;
        schema::migrate(&mut conn, schema::MIGRATIONS)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection's `PRAGMA synchronous` (2 = FULL), for checks at start and tests.
    pub async fn synchronous_level(&self) -> Result<i64, StoreError> {
        self.call("reading the sync level", |conn| {
            conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                .map_err(db_err("reading the sync level"))
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool, inside the caller's tracing span.
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let mut guard = conn.lock().map_err(|_| StoreError::Backend {
                    op,
                    source: "the connection mutex is poisoned (an earlier call panicked)".into(),
                })?;
                f(&mut guard)
            })
        })
        .await
        .map_err(|e| StoreError::Backend {
            op,
            source: Box::new(e),
        })?
    }
}

/// Maps a SQLite error to [`StoreError::Backend`] for `op`.
pub(crate) fn db_err(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        source: Box::new(e),
    }
}

/// Wall-clock time in UTC milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The one message for an instance that is absent or another tenant's: no existence leak.
fn instance_not_found(instance: &InstanceId) -> StoreError {
    StoreError::NotFound(format!("instance {instance} not found"))
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip_all, fields(instances = instances.len()))]
    async fn upsert_inventory(&self, instances: &[InstanceRecord]) -> Result<(), StoreError> {
        check_inventory(instances)?;
        let instances = instances.to_vec();
        self.call("upserting inventory", move |conn| {
            upsert_inventory(conn, &instances)
        })
        .await
    }

    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.call("reading inventory", |conn| load_instances(conn, None))
            .await
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
        let mut refused = Vec::new();
        let mut batch = Vec::with_capacity(samples.len());
        let mut checked = Vec::with_capacity(samples.len());
        for es in samples {
            match check_enriched(es) {
                Ok(c) => {
                    batch.push(es.clone());
                    checked.push(c);
                }
                Err(e) => refused.push(RefusedSample::invalid(&es.sample, e)),
            }
        }
        let mut outcome = self
            .call("writing samples", move |conn| {
                write_samples(conn, &batch, &checked)
            })
            .await?;
        outcome.refused.splice(0..0, refused);
        let span = tracing::Span::current();
        span.record("inserted", outcome.inserted);
        span.record("duplicates", outcome.duplicates);
        span.record("conflicts", outcome.conflicts.len());
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(records = records.len()))]
    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.call("writing quarantine", move |conn| {
            write_quarantine(conn, &records)
        })
        .await
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.call("reading quarantine", move |conn| {
            load_quarantine(conn, limit)
        })
        .await
    }

    async fn list_instances(&self, scope: &TenantScope) -> Result<Vec<InstanceRecord>, StoreError> {
        let tenant = scope.tenant().clone();
        self.call("listing instances", move |conn| {
            load_instances(conn, Some(&tenant))
        })
        .await
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
        let tenant = scope.tenant().clone();
        let instance = instance.clone();
        self.call(OP, move |conn| {
            let tx = conn.transaction().map_err(db_err(OP))?;
            require_instance(&tx, &tenant, &instance, OP)?;
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {SAMPLE_COLUMNS} FROM samples \
                     WHERE tenant = ?1 AND instance_id = ?2 AND start_ms < ?4 AND end_ms > ?3 \
                     AND start_ms > ?3 - {MAX_SAMPLE_SPAN_MS} \
                     ORDER BY start_ms, end_ms, gpu_uuid, seq LIMIT ?5"
                ))
                .map_err(db_err(OP))?;
            let raw = stmt
                .query_map(
                    params![tenant.as_str(), instance.as_str(), from.0, to.0, limit],
                    RawSample::from_row,
                )
                .map_err(db_err(OP))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err(OP))?;
            raw.into_iter()
                .map(|r| {
                    Ok(SampleRow {
                        sample: r.decode()?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn instance_intervals(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        const OP: &str = "reading intervals";
        let tenant = scope.tenant().clone();
        let instance = instance.clone();
        self.call(OP, move |conn| {
            let tx = conn.transaction().map_err(db_err(OP))?;
            require_instance(&tx, &tenant, &instance, OP)?;
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {INTERVAL_COLUMNS} FROM intervals \
                     WHERE tenant = ?1 AND instance_id = ?2 AND bucket_ms >= ?3 AND bucket_ms < ?4 \
                     ORDER BY bucket_ms, gpu_uuid"
                ))
                .map_err(db_err(OP))?;
            let raw = stmt
                .query_map(
                    params![tenant.as_str(), instance.as_str(), from.0, to.0],
                    RawInterval::from_row,
                )
                .map_err(db_err(OP))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err(OP))?;
            raw.into_iter().map(RawInterval::decode).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(instances = workload.instances.len()))]
    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError> {
        check_workload(workload)?;
        let tenant = scope.tenant().clone();
        let spec = workload.clone();
        self.call("creating a workload", move |conn| {
            create_workload(conn, tenant, spec)
        })
        .await
    }

    /// One aggregate over the `intervals` rows of the tenant (already one row per
    /// instance, GPU and bucket, written exactly once per sample): no rollups needed at the
    /// embedded store's scale.
    async fn tenant_summary(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TenantSummary, StoreError> {
        const OP: &str = "summarising a tenant";
        let tenant = scope.tenant().clone();
        self.call(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {USAGE_COLUMNS} FROM intervals \
                     WHERE tenant = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 \
                     GROUP BY instance_id ORDER BY instance_id"
                ))
                .map_err(db_err(OP))?;
            let raw = stmt
                .query_map(params![tenant.as_str(), from.0, to.0], RawUsage::from_row)
                .map_err(db_err(OP))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err(OP))?;
            let instances = raw
                .into_iter()
                .map(RawUsage::decode)
                .collect::<Result<Vec<InstanceSummary>, _>>()?;
            Ok(TenantSummary::of(instances, 0))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(points = points.len()))]
    async fn write_intensity(&self, points: &[IntensityPoint]) -> Result<LedgerWrite, StoreError> {
        let points = points.to_vec();
        self.call("writing intensity points", move |conn| {
            intensity::write_points(conn, &points)
        })
        .await
    }

    async fn intensity_points(
        &self,
        query: &LedgerQuery,
    ) -> Result<Vec<IntensityPoint>, StoreError> {
        let query = query.clone();
        self.call("reading intensity points", move |conn| {
            intensity::read_points(conn, &query)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(region = %region))]
    async fn restate(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
        join: &IntensityJoin,
    ) -> Result<RestateOutcome, StoreError> {
        const OP: &str = "restating intervals";
        let r = region.clone();
        let candidates = self
            .call(OP, move |conn| {
                intensity::restatement_candidates(conn, &r, from, to)
            })
            .await?;
        let decided = decide_restatements(region, join, candidates, UnixMillis(now_ms()));
        if decided.is_empty() {
            return Ok(RestateOutcome::default());
        }
        let applied = self
            .call(OP, move |conn| intensity::apply_restatements(conn, decided))
            .await?;
        Ok(RestateOutcome::of(&applied))
    }

    async fn restatements(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Restatement>, StoreError> {
        let tenant = scope.tenant().clone();
        self.call("reading restatements", move |conn| {
            intensity::read_restatements(conn, &tenant, from, to)
        })
        .await
    }

    async fn intensity_coverage(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionCoverage>, StoreError> {
        self.call("reading intensity coverage", move |conn| {
            intensity::coverage(conn, from, to)
        })
        .await
    }

    async fn list_workloads(&self, scope: &TenantScope) -> Result<Vec<Workload>, StoreError> {
        let tenant = scope.tenant().clone();
        self.call("listing workloads", move |conn| {
            load_workloads(conn, &tenant, None)
        })
        .await
    }

    async fn get_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
    ) -> Result<Option<Workload>, StoreError> {
        let tenant = scope.tenant().clone();
        let id = id.clone();
        self.call("reading a workload", move |conn| {
            Ok(load_workloads(conn, &tenant, Some(&id))?.into_iter().next())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workload = %id))]
    async fn update_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
        update: &WorkloadUpdate,
    ) -> Result<Workload, StoreError> {
        let tenant = scope.tenant().clone();
        let id = id.clone();
        let update = update.clone();
        self.call("updating a workload", move |conn| {
            update_workload(conn, &tenant, &id, &update)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// Each record is the whole truth about its instance: GPUs it no longer lists are detached, and
/// a GPU listed under a different instance than before moves.
fn upsert_inventory(conn: &mut Connection, instances: &[InstanceRecord]) -> Result<(), StoreError> {
    const OP: &str = "upserting inventory";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    {
        let mut put_instance = tx
            .prepare_cached(
                "INSERT INTO instances (instance_id, tenant, region, zip_code) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (instance_id) DO UPDATE SET \
                 tenant = excluded.tenant, region = excluded.region, zip_code = excluded.zip_code",
            )
            .map_err(db_err(OP))?;
        let mut detach = tx
            .prepare_cached("DELETE FROM gpus WHERE instance_id = ?1")
            .map_err(db_err(OP))?;
        let mut put_gpu = tx
            .prepare_cached(
                "INSERT INTO gpus (uuid, instance_id, model, power_limit_mw, host) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (uuid) DO UPDATE SET instance_id = excluded.instance_id, \
                 model = excluded.model, power_limit_mw = excluded.power_limit_mw, \
                 host = excluded.host",
            )
            .map_err(db_err(OP))?;
        for rec in instances {
            put_instance
                .execute(params![
                    rec.instance.as_str(),
                    rec.tenant.as_str(),
                    rec.region.as_str(),
                    rec.zip_code
                ])
                .map_err(db_err(OP))?;
            detach
                .execute([rec.instance.as_str()])
                .map_err(db_err(OP))?;
            for gpu in &rec.gpus {
                put_gpu
                    .execute(params![
                        gpu.uuid.as_str(),
                        rec.instance.as_str(),
                        gpu.model,
                        gpu.power_limit.0,
                        gpu.host.as_str()
                    ])
                    .map_err(db_err(OP))?;
            }
        }
    }
    tx.commit().map_err(db_err(OP))
}

/// Instances with their GPUs, by instance id then GPU uuid; all tenants when `tenant` is None.
fn load_instances(
    conn: &mut Connection,
    tenant: Option<&TenantId>,
) -> Result<Vec<InstanceRecord>, StoreError> {
    const OP: &str = "reading instances";
    const T: &str = "gpus";
    let sql =
        format!(
        "SELECT i.instance_id, i.tenant, i.region, i.zip_code, g.uuid, g.model, g.power_limit_mw, \
         g.host \
         FROM instances i LEFT JOIN gpus g ON g.instance_id = i.instance_id \
         {} ORDER BY i.instance_id, g.uuid",
        if tenant.is_some() { "WHERE i.tenant = ?1" } else { "" }
    );
    type RawRow = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err(OP))?;
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RawRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    };
    let rows = match tenant {
        Some(t) => stmt.query_map([t.as_str()], map),
        None => stmt.query_map([], map),
    }
    .map_err(db_err(OP))?
    .collect::<Result<Vec<_>, _>>()
    .map_err(db_err(OP))?;

    let mut out: Vec<InstanceRecord> = Vec::new();
    for (instance, tenant, region, zip_code, uuid, model, limit, host) in rows {
        if out.last().is_none_or(|last| last.instance.0 != instance) {
            out.push(InstanceRecord {
                tenant: TenantId(tenant),
                instance: InstanceId(instance),
                region: RegionId(region),
                zip_code,
                gpus: Vec::new(),
            });
        }
        let (Some(uuid), Some(model), Some(limit)) = (uuid, model, limit) else {
            continue;
        };
        let gpu = GpuRecord {
            uuid: GpuUuid(uuid),
            model,
            power_limit: Milliwatts(rows::stored_int(T, "power_limit_mw", limit)?),
            host: HostId(host.unwrap_or_default()),
        };
        if let Some(last) = out.last_mut() {
            last.gpus.push(gpu);
        }
    }
    Ok(out)
}

/// `NotFound` unless `instance` exists and belongs to `tenant` (same message either way).
fn require_instance(
    conn: &Connection,
    tenant: &TenantId,
    instance: &InstanceId,
    op: &'static str,
) -> Result<(), StoreError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM instances WHERE tenant = ?1 AND instance_id = ?2")
        .map_err(db_err(op))?
        .exists([tenant.as_str(), instance.as_str()])
        .map_err(db_err(op))?;
    if found {
        Ok(())
    } else {
        Err(instance_not_found(instance))
    }
}

// ---------------------------------------------------------------------------------------------
// Samples and intervals

/// The integer forms of a sample's unsigned values, checked before any write.
struct Checked {
    seq: i64,
    energy_mj: i64,
    mem_used_bytes: i64,
}

/// Validates the sample ([`crate::checks::check_enriched`]) and converts its unsigned values
/// to SQLite's integers.
fn check_enriched(s: &EnrichedSample) -> Result<Checked, StoreError> {
    crate::checks::check_enriched(s)?;
    let sample = &s.sample;
    Ok(Checked {
        seq: to_stored("sequence number", sample.seq)?,
        energy_mj: to_stored("energy (mJ)", sample.energy.0)?,
        mem_used_bytes: to_stored("memory used (bytes)", sample.mem_used_bytes)?,
    })
}

const INSERT_SAMPLE: &str = "INSERT INTO samples (gpu_uuid, seq, tenant, instance_id, host, \
     start_ms, end_ms, energy_mj, power_mw, power_max_mw, util_pct, mem_used_bytes, temp_c, \
     sm_clock_mhz, chain_start, energy_source, attribution) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
     ON CONFLICT (gpu_uuid, seq) DO NOTHING";

/// Adds one share to its interval. Region, PUE and a joined intensity are kept from the first
/// write of the interval; an interval first written without intensity takes the first one that
/// arrives later (all five columns together, so they never mix two joins).
const UPSERT_INTERVAL: &str = "INSERT INTO intervals (instance_id, gpu_uuid, bucket_ms, tenant, \
     energy_mj, estimated_mj, covered_ms, samples, power_max_mw, region, intensity_g_per_kwh, \
     intensity_kind, intensity_source, intensity_point_ms, intensity_replayed, pue) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
     ON CONFLICT (instance_id, gpu_uuid, bucket_ms) DO UPDATE SET \
     energy_mj = energy_mj + excluded.energy_mj, \
     estimated_mj = estimated_mj + excluded.estimated_mj, \
     covered_ms = covered_ms + excluded.covered_ms, \
     samples = samples + 1, \
     power_max_mw = max(power_max_mw, excluded.power_max_mw), \
     intensity_g_per_kwh = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_g_per_kwh ELSE intensity_g_per_kwh END, \
     intensity_source = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_source ELSE intensity_source END, \
     intensity_point_ms = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_point_ms ELSE intensity_point_ms END, \
     intensity_replayed = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_replayed ELSE intensity_replayed END, \
     intensity_kind = coalesce(intensity_kind, excluded.intensity_kind)";

fn write_samples(
    conn: &mut Connection,
    batch: &[EnrichedSample],
    checked: &[Checked],
) -> Result<WriteOutcome, StoreError> {
    const OP: &str = "writing samples";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let mut outcome = WriteOutcome::default();
    {
        let mut insert = tx.prepare_cached(INSERT_SAMPLE).map_err(db_err(OP))?;
        let mut upsert = tx.prepare_cached(UPSERT_INTERVAL).map_err(db_err(OP))?;
        let mut load = tx
            .prepare_cached(&format!(
                "SELECT {SAMPLE_COLUMNS} FROM samples WHERE gpu_uuid = ?1 AND seq = ?2"
            ))
            .map_err(db_err(OP))?;
        // The GPU's stored spans starting before this one ends, latest first. The walk stops
        // at the first that ends by its start (stored spans do not overlap, so none earlier
        // can reach it): a check reads the spans it overlaps plus one, not the whole
        // MAX_SAMPLE_SPAN_MS before it. Its own key is the duplicate/conflict check's.
        let mut before_end = tx
            .prepare_cached(&format!(
                "SELECT seq, start_ms, end_ms FROM samples \
                 WHERE gpu_uuid = ?1 AND start_ms < ?3 AND start_ms > ?2 - {MAX_SAMPLE_SPAN_MS} \
                 ORDER BY start_ms DESC"
            ))
            .map_err(db_err(OP))?;
        for (es, c) in batch.iter().zip(checked) {
            let s = &es.sample;
            let span = SpanKey {
                seq: s.seq,
                start: s.start,
                end: s.end,
            };
            let mut stored = Vec::new();
            let mut rows = before_end
                .query(params![s.gpu.as_str(), s.start.0, s.end.0])
                .map_err(db_err(OP))?;
            while let Some(row) = rows.next().map_err(db_err(OP))? {
                let seq: i64 = row.get(0).map_err(db_err(OP))?;
                let key = SpanKey {
                    seq: seq as u64,
                    start: UnixMillis(row.get(1).map_err(db_err(OP))?),
                    end: UnixMillis(row.get(2).map_err(db_err(OP))?),
                };
                if key.end <= s.start {
                    break;
                }
                if seq != c.seq {
                    stored.push(key);
                }
            }
            drop(rows);
            if let Err(o) = GpuTimeline::new(stored).claim(&s.gpu, span) {
                tracing::warn!(gpu = %s.gpu, seq = s.seq, stored_seq = o.stored_seq, "sample overlaps stored energy of its GPU; refused");
                outcome.refused.push(RefusedSample::overlap(o));
                continue;
            }
            let inserted = insert
                .execute(params![
                    s.gpu.as_str(),
                    c.seq,
                    es.tenant.as_str(),
                    s.instance.as_str(),
                    s.host.as_str(),
                    s.start.0,
                    s.end.0,
                    c.energy_mj,
                    s.power.0,
                    s.power_max.0,
                    s.util_gpu_pct,
                    c.mem_used_bytes,
                    s.temp_c,
                    s.sm_clock_mhz,
                    s.chain_start,
                    s.energy_source.as_str(),
                    s.attribution.as_str(),
                ])
                .map_err(db_err(OP))?;
            if inserted == 1 {
                outcome.inserted = outcome.inserted.saturating_add(1);
                let estimated = s.energy_source == EnergySource::PowerIntegration;
                let power_max = s.power_max.max(s.power).0;
                for share in &es.shares {
                    // Fits: shares sum to the sample's energy, checked to fit in i64.
                    let energy = to_stored("share energy (mJ)", share.energy.0)?;
                    let i = share.intensity.as_ref();
                    upsert
                        .execute(params![
                            s.instance.as_str(),
                            s.gpu.as_str(),
                            share.bucket.start().0,
                            es.tenant.as_str(),
                            energy,
                            if estimated { energy } else { 0 },
                            share.covered_ms,
                            power_max,
                            es.region.as_str(),
                            i.map(|i| i.value.0),
                            i.map(|i| i.kind.as_str()),
                            i.map(|i| i.source.as_str()),
                            i.map(|i| i.point_at.0),
                            i.map(|i| i.replayed),
                            es.pue,
                        ])
                        .map_err(db_err(OP))?;
                }
            } else {
                let stored = load
                    .query_row(params![s.gpu.as_str(), c.seq], RawSample::from_row)
                    .map_err(db_err(OP))?
                    .decode()?;
                if stored == *s {
                    outcome.duplicates = outcome.duplicates.saturating_add(1);
                } else {
                    tracing::warn!(
                        gpu = %s.gpu,
                        seq = s.seq,
                        "sample redelivered with different content; kept the stored one"
                    );
                    outcome.conflicts.push((s.gpu.clone(), s.seq));
                }
            }
        }
    }
    tx.commit().map_err(db_err(OP))?;
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Quarantine

fn write_quarantine(conn: &mut Connection, records: &[QuarantineRecord]) -> Result<(), StoreError> {
    const OP: &str = "writing quarantine";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    {
        let mut stmt = tx
            .prepare_cached(
                // A redelivered refusal is held once: the first copy stays.
                "INSERT OR IGNORE INTO quarantine \
                 (received_at_ms, host, gpu_uuid, seq, reason, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err(OP))?;
        for r in records {
            // Text, so any u64 a refused sample carried is kept exactly.
            let seq = r.seq.map(|s| s.to_string());
            stmt.execute(params![
                r.received_at.0,
                r.host.as_str(),
                r.gpu.as_ref().map(GpuUuid::as_str),
                seq,
                r.reason,
                r.payload
            ])
            .map_err(db_err(OP))?;
        }
    }
    tx.commit().map_err(db_err(OP))
}

fn load_quarantine(conn: &mut Connection, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError> {
    const OP: &str = "reading quarantine";
    type RawRow = (i64, String, Option<String>, Option<String>, String, String);
    let mut stmt = conn
        .prepare_cached(
            "SELECT received_at_ms, host, gpu_uuid, seq, reason, payload FROM quarantine \
             ORDER BY received_at_ms DESC, id DESC LIMIT ?1",
        )
        .map_err(db_err(OP))?;
    let rows = stmt
        .query_map([limit], |r| -> rusqlite::Result<RawRow> {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    rows.into_iter()
        .map(|(at, host, gpu, seq, reason, payload)| {
            let seq = seq
                .map(|s| {
                    s.parse::<u64>().map_err(|_| StoreError::Corrupt {
                        table: "quarantine",
                        detail: format!("seq {s:?} is not an unsigned integer"),
                    })
                })
                .transpose()?;
            Ok(QuarantineRecord {
                received_at: UnixMillis(at),
                host: HostId(host),
                gpu: gpu.map(GpuUuid),
                seq,
                reason,
                payload,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// A fresh id: `wl_` and 16 random hex digits (reveals nothing about other workloads).
fn new_workload_id() -> WorkloadId {
    WorkloadId(format!("wl_{:016x}", rand::random::<u64>()))
}

fn create_workload(
    conn: &mut Connection,
    tenant: TenantId,
    spec: NewWorkload,
) -> Result<Workload, StoreError> {
    const OP: &str = "creating a workload";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    for instance in &spec.instances {
        require_instance(&tx, &tenant, instance, OP)?;
    }
    // 64 random bits make a collision practically impossible; checking costs one lookup.
    let mut id = new_workload_id();
    let mut taken = tx
        .prepare_cached("SELECT 1 FROM workloads WHERE id = ?1")
        .map_err(db_err(OP))?;
    while taken.exists([id.as_str()]).map_err(db_err(OP))? {
        id = new_workload_id();
    }
    drop(taken);
    let created_at = UnixMillis(now_ms());
    tx.execute(
        "INSERT INTO workloads (id, tenant, label, from_ms, to_ms, is_open, labels, \
         functional_unit, functional_units, created_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id.as_str(),
            tenant.as_str(),
            spec.label,
            spec.from.0,
            spec.to.unwrap_or(spec.from).0,
            spec.to.is_none(),
            labels_json(&spec.labels, OP)?,
            spec.functional_unit,
            spec.functional_units,
            created_at.0
        ],
    )
    .map_err(db_err(OP))?;
    {
        let mut link = tx
            .prepare_cached(
                "INSERT INTO workload_instances (workload_id, position, instance_id) \
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(db_err(OP))?;
        for (pos, instance) in spec.instances.iter().enumerate() {
            let pos = i64::try_from(pos).unwrap_or(i64::MAX);
            link.execute(params![id.as_str(), pos, instance.as_str()])
                .map_err(db_err(OP))?;
        }
    }
    tx.commit().map_err(db_err(OP))?;
    Ok(Workload {
        id,
        tenant,
        spec,
        created_at,
    })
}

/// The tenant's workloads newest first, or only `id` when given (empty if it is not theirs).
fn load_workloads(
    conn: &mut Connection,
    tenant: &TenantId,
    id: Option<&WorkloadId>,
) -> Result<Vec<Workload>, StoreError> {
    let tx = conn.transaction().map_err(db_err("reading workloads"))?;
    read_workloads(&tx, tenant, id)
}

/// [`load_workloads`] inside the caller's transaction.
fn read_workloads(
    tx: &Connection,
    tenant: &TenantId,
    id: Option<&WorkloadId>,
) -> Result<Vec<Workload>, StoreError> {
    const OP: &str = "reading workloads";
    let id_filter = if id.is_some() { "AND w.id = ?2" } else { "" };
    let id_param = id.map_or("", WorkloadId::as_str);

    let mut links: HashMap<String, Vec<InstanceId>> = HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT wi.workload_id, wi.instance_id FROM workload_instances wi \
                 JOIN workloads w ON w.id = wi.workload_id \
                 WHERE w.tenant = ?1 {id_filter} ORDER BY wi.workload_id, wi.position"
            ))
            .map_err(db_err(OP))?;
        let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, String)> {
            Ok((r.get(0)?, r.get(1)?))
        };
        let rows = if id.is_some() {
            stmt.query_map([tenant.as_str(), id_param], map)
        } else {
            stmt.query_map([tenant.as_str()], map)
        }
        .map_err(db_err(OP))?;
        for row in rows {
            let (w, i) = row.map_err(db_err(OP))?;
            links.entry(w).or_default().push(InstanceId(i));
        }
    }

    type RawRow = (
        String,
        String,
        String,
        i64,
        i64,
        String,
        f64,
        i64,
        bool,
        String,
    );
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT w.id, w.tenant, w.label, w.from_ms, w.to_ms, w.functional_unit, \
             w.functional_units, w.created_at_ms, w.is_open, w.labels FROM workloads w \
             WHERE w.tenant = ?1 {id_filter} ORDER BY w.created_at_ms DESC, w.rowid DESC"
        ))
        .map_err(db_err(OP))?;
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RawRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ))
    };
    let rows = if id.is_some() {
        stmt.query_map([tenant.as_str(), id_param], map)
    } else {
        stmt.query_map([tenant.as_str()], map)
    }
    .map_err(db_err(OP))?
    .collect::<Result<Vec<_>, _>>()
    .map_err(db_err(OP))?;

    rows.into_iter()
        .map(
            |(id, tenant, label, from, to, unit, units, created, open, labels)| {
                let instances = links.remove(&id).unwrap_or_default();
                let labels = serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt {
                    table: "workloads",
                    detail: format!("workload {id}: labels {labels:?}: {e}"),
                })?;
                if instances.is_empty() {
                    return Err(StoreError::Corrupt {
                        table: "workload_instances",
                        detail: format!("workload {id} has no instances"),
                    });
                }
                Ok(Workload {
                    id: WorkloadId(id),
                    tenant: TenantId(tenant),
                    spec: NewWorkload {
                        label,
                        instances,
                        from: UnixMillis(from),
                        to: (!open).then_some(UnixMillis(to)),
                        functional_unit: unit,
                        functional_units: units,
                        labels,
                    },
                    created_at: UnixMillis(created),
                })
            },
        )
        .collect()
}

fn labels_json(labels: &BTreeMap<String, String>, op: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(labels).map_err(|e| StoreError::Backend {
        op,
        source: Box::new(e),
    })
}

/// Reads the workload, applies the update by the shared rule and writes it back, in one
/// `IMMEDIATE` transaction (two concurrent updates serialise; neither is lost).
fn update_workload(
    conn: &mut Connection,
    tenant: &TenantId,
    id: &WorkloadId,
    update: &WorkloadUpdate,
) -> Result<Workload, StoreError> {
    const OP: &str = "updating a workload";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let workload = read_workloads(&tx, tenant, Some(id))?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::NotFound(format!("workload {id} not found")))?;
    let next = apply_workload_update(&workload, update)?;
    tx.execute(
        "UPDATE workloads SET to_ms = ?3, is_open = ?4, labels = ?5 WHERE tenant = ?1 AND id = ?2",
        params![
            tenant.as_str(),
            id.as_str(),
            next.spec.to.unwrap_or(next.spec.from).0,
            next.spec.to.is_none(),
            labels_json(&next.spec.labels, OP)?,
        ],
    )
    .map_err(db_err(OP))?;
    tx.commit().map_err(db_err(OP))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnrichedShare;
    use wattprint_core::accounting::split_into_buckets;
    use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
    use wattprint_core::sample::{Attribution, EnergySample};
    use wattprint_core::{GramsPerKwh, Millijoules};

    fn scope() -> TenantScope {
        TenantScope::from_verified(TenantId::from("acme"))
    }

    async fn store_with_one_sample() -> SqliteStore {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .upsert_inventory(&[InstanceRecord {
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
            }])
            .await
            .unwrap();
        let sample = EnergySample {
            host: HostId::from("h"),
            gpu: GpuUuid::from("GPU-1"),
            instance: InstanceId::from("i-a"),
            seq: 1,
            start: UnixMillis(0),
            end: UnixMillis(1000),
            energy: Millijoules(10),
            power: Milliwatts(1),
            power_max: Milliwatts(2),
            util_gpu_pct: 3,
            mem_used_bytes: 4,
            temp_c: 5,
            sm_clock_mhz: 6,
            chain_start: true,
            energy_source: EnergySource::Counter,
            attribution: Attribution::ApportionedMig,
        };
        let shares = split_into_buckets(sample.start, sample.end, sample.energy)
            .into_iter()
            .map(|s| EnrichedShare {
                bucket: s.bucket,
                energy: s.energy,
                covered_ms: s.covered_ms,
                intensity: Some(JoinedIntensity {
                    value: GramsPerKwh(1.5),
                    kind: IntensityKind::Forecast,
                    source: "src".into(),
                    point_at: UnixMillis(0),
                    replayed: false,
                }),
            })
            .collect();
        let e = EnrichedSample {
            sample,
            tenant: TenantId::from("acme"),
            region: RegionId::from("R"),
            pue: 1.0,
            shares,
        };
        assert_eq!(store.write_samples(&[e]).await.unwrap().inserted, 1);
        store
    }

    async fn read_intervals(store: &SqliteStore) -> Result<Vec<IntervalRow>, StoreError> {
        store
            .instance_intervals(
                &scope(),
                &InstanceId::from("i-a"),
                UnixMillis(0),
                UnixMillis(1),
            )
            .await
    }

    fn exec(store: &SqliteStore, sql: &str) {
        store.conn.lock().unwrap().execute(sql, []).unwrap();
    }

    #[tokio::test]
    async fn unknown_stored_strings_are_corrupt_not_guessed() {
        let store = store_with_one_sample().await;
        assert_eq!(
            read_intervals(&store).await.unwrap()[0]
                .intensity
                .as_ref()
                .unwrap()
                .kind,
            IntensityKind::Forecast
        );
        exec(
            &store,
            "UPDATE intervals SET intensity_kind = 'marginalish'",
        );
        let err = read_intervals(&store).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { table: "intervals", detail } if detail.contains("marginalish")),
            "{err:?}"
        );
        exec(
            &store,
            "UPDATE intervals SET intensity_kind = 'actual', intensity_source = NULL",
        );
        assert!(matches!(
            read_intervals(&store).await,
            Err(StoreError::Corrupt { .. })
        ));

        exec(&store, "UPDATE samples SET attribution = 'shared'");
        let err = store
            .instance_samples(
                &scope(),
                &InstanceId::from("i-a"),
                UnixMillis(0),
                UnixMillis(1),
                1,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    table: "samples",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn samples_round_trip_every_field() {
        let store = store_with_one_sample().await;
        let rows = store
            .instance_samples(
                &scope(),
                &InstanceId::from("i-a"),
                UnixMillis(0),
                UnixMillis(1),
                1,
            )
            .await
            .unwrap();
        let s = &rows[0].sample;
        assert_eq!(
            (
                s.power.0,
                s.power_max.0,
                s.util_gpu_pct,
                s.mem_used_bytes,
                s.temp_c,
                s.sm_clock_mhz
            ),
            (1, 2, 3, 4, 5, 6)
        );
        assert!(s.chain_start);
        assert_eq!(s.attribution, Attribution::ApportionedMig);
    }

    #[tokio::test]
    async fn a_poisoned_connection_is_an_error_not_a_panic() {
        let store = store_with_one_sample().await;
        let conn = Arc::clone(&store.conn);
        let _ = std::thread::spawn(move || {
            let _guard = conn.lock();
            panic!("poison the mutex");
        })
        .join();
        let err = read_intervals(&store).await.unwrap_err();
        assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
        assert!(err.to_string().contains("poisoned"), "{err}");
    }
}
