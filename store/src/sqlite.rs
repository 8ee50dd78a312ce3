//! The embedded SQLite [`Store`]: one file, WAL mode, versioned migrations.
//!
//! One connection behind a mutex serialises access; every call runs on Tokio's blocking pool so
//! async callers are never blocked by SQLite. Energy is stored as exact integer millijoules.
//! Every tenant-facing query filters on the tenant of its [`TenantScope`].

mod days;
mod intensity;
mod inventory;
mod placements;
mod quarantine;
mod rows;
mod samples;
mod schema;
mod statements;
mod workloads;

use crate::checks::{check_inventory, check_workload};
use crate::{
    decide_restatements, EnrichedSample, GpuHourUsage, InstanceRecord, IntervalRow,
    IssuedStatement, LedgerQuery, LedgerWrite, NewWorkload, PlacementVersion, QuarantinePrune,
    QuarantineRecord, QuarantineRetention, RefusedSample, RegionCoverage, RegionHourEnergy,
    RestateOutcome, Restatement, SampleRetention, SampleRow, Store, StoreError, TenantSummary,
    Workload, WorkloadUpdate, WriteOutcome,
};
use async_trait::async_trait;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wattprint_core::intensity::{IntensityJoin, IntensityPoint};
use wattprint_core::{InstanceId, RegionId, TenantScope, UnixMillis, WorkloadId};

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store. Cheap to clone: clones share one writing connection and, for a file,
/// a few read-only ones that tenant reads run on, so a heavy read never waits for ingest
/// (WAL lets readers run beside the writer) nor blocks it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
}

/// Read-only connections a file-backed store opens for tenant reads.
const READERS: usize = 4;

/// How much of the file a read connection maps into memory (SQLite clamps it to its
/// compile-time limit, 2 GiB in the bundled build): pages are then read from the OS page
/// cache in place, without a copy into each connection's own cache (measured only together
/// with other read changes; see docs/measurements/2026-12-07-series-decode-pipelined-gateway.md).
/// The mapping is file-backed: it shows in RSS as shared, reclaimable page cache, not as the
/// process's own memory.
const READER_MMAP_BYTES: i64 = 1 << 40;

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
        let mut store = Self::init(conn, true, sync)?;
        // After the migrations, so readers see the current schema.
        let readers = (0..READERS)
            .map(|_| open_reader(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        store.readers = Arc::new(readers);
        Ok(store)
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
        schema::migrate(&mut conn, &schema::MIGRATIONS)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::default(),
            next_reader: Arc::default(),
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

    /// Runs `f` with the writing connection on the blocking pool, inside the caller's span.
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        blocking(op, move || {
            let mut guard = conn.lock().map_err(|_| poisoned(op))?;
            f(&mut guard)
        })
        .await
    }

    /// Runs the read `f` on a free read-only connection (the writing one for an in-memory
    /// database, which has no other), on the blocking pool, inside the caller's span.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.readers.is_empty() {
            return self.call(op, f).await;
        }
        let readers = Arc::clone(&self.readers);
        let first = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        blocking(op, move || {
            let n = readers.len();
            // A free reader if there is one, else wait for this call's turn.
            let free = (0..n).find_map(|k| readers[(first + k) % n].try_lock().ok());
            let mut guard = match free {
                Some(g) => g,
                None => readers[first % n].lock().map_err(|_| poisoned(op))?,
            };
            f(&mut guard)
        })
        .await
    }
}

/// Runs `f` on the blocking pool inside the caller's tracing span.
async fn blocking<T, F>(op: &'static str, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| StoreError::Backend {
            op,
            source: Box::new(e),
        })?
}

fn poisoned(op: &'static str) -> StoreError {
    StoreError::Backend {
        op,
        source: "the connection mutex is poisoned (an earlier call panicked)".into(),
    }
}

/// A read-only connection to the database at `path`.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    const OP: &str = "opening a read connection";
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Backend {
        op: OP,
        source: format!("{}: {e}", path.display()).into(),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err(OP))?;
    conn.pragma_update(None, "query_only", "ON")
        .map_err(db_err(OP))?;
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
        .map_err(db_err(OP))?;
    Ok(conn)
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

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_inventory_at(
        &self,
        instances: &[InstanceRecord],
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        check_inventory(instances)?;
        let instances = instances.to_vec();
        self.call("upserting inventory", move |conn| {
            inventory::upsert_inventory(conn, &instances, at)
        })
        .await
    }

    async fn placement_history(&self) -> Result<Vec<PlacementVersion>, StoreError> {
        self.read("reading the inventory's history", |conn| {
            placements::load_history(conn)
        })
        .await
    }

    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.read("reading inventory", |conn| {
            inventory::load_instances(conn, None)
        })
        .await
    }

    async fn write_samples(&self, samples: &[EnrichedSample]) -> Result<WriteOutcome, StoreError> {
        let mut refused = Vec::new();
        let mut batch = Vec::with_capacity(samples.len());
        let mut checked = Vec::with_capacity(samples.len());
        for es in samples {
            match samples::check_enriched(es) {
                Ok(c) => {
                    batch.push(es.clone());
                    checked.push(c);
                }
                Err(e) => refused.push(RefusedSample::invalid(&es.sample, e)),
            }
        }
        let mut outcome = self
            .call("writing samples", move |conn| {
                samples::write_samples(conn, &batch, &checked)
            })
            .await?;
        outcome.refused.splice(0..0, refused);
        Ok(outcome)
    }

    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.call("writing quarantine", move |conn| {
            quarantine::write_quarantine(conn, &records)
        })
        .await
    }

    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.read("reading quarantine", move |conn| {
            quarantine::load_quarantine(conn, limit)
        })
        .await
    }

    async fn quarantine_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.read("counting quarantine", quarantine::count_quarantine)
            .await
    }

    async fn prune_samples(
        &self,
        rules: &SampleRetention,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let before = rules.cutoff(now);
        // One instance per transaction, so ingest interleaves with a long prune.
        let instances = self
            .read("pruning samples", samples::sample_instances)
            .await?;
        let mut deleted = 0;
        for (tenant, instance) in instances {
            deleted += self
                .call("pruning samples", move |conn| {
                    samples::prune_instance_samples(conn, &tenant, &instance, before)
                })
                .await?;
        }
        Ok(deleted)
    }

    async fn prune_quarantine(
        &self,
        rules: &QuarantineRetention,
        now: UnixMillis,
    ) -> Result<QuarantinePrune, StoreError> {
        let rules = *rules;
        self.call("pruning quarantine", move |conn| {
            quarantine::prune_quarantine(conn, &rules, now)
        })
        .await
    }

    async fn list_instances(&self, scope: &TenantScope) -> Result<Vec<InstanceRecord>, StoreError> {
        let tenant = scope.tenant().clone();
        self.read("listing instances", move |conn| {
            inventory::load_instances(conn, Some(&tenant))
        })
        .await
    }

    async fn issue_statement(
        &self,
        statement: &IssuedStatement,
    ) -> Result<IssuedStatement, StoreError> {
        crate::statements::check_period(&statement.period)?;
        let statement = statement.clone();
        self.call("issuing a statement", move |conn| {
            statements::issue(conn, &statement)
        })
        .await
    }

    async fn issued_statement(
        &self,
        scope: &TenantScope,
        period: &str,
    ) -> Result<Option<IssuedStatement>, StoreError> {
        crate::statements::check_period(period)?;
        let tenant = scope.tenant().clone();
        let period = period.to_owned();
        self.read("reading a statement", move |conn| {
            Ok(statements::load(conn, &tenant, Some(&period))?.pop())
        })
        .await
    }

    async fn issued_statements(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<IssuedStatement>, StoreError> {
        let tenant = scope.tenant().clone();
        self.read("reading statements", move |conn| {
            statements::load(conn, &tenant, None)
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
        let tenant = scope.tenant().clone();
        let instance = instance.clone();
        self.read("reading samples", move |conn| {
            samples::read_samples(conn, &tenant, &instance, from, to, limit)
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
        let read = |(from, to): (UnixMillis, UnixMillis)| {
            let tenant = scope.tenant().clone();
            let instance = instance.clone();
            self.read("reading intervals", move |conn| {
                samples::read_intervals(conn, &tenant, Some(&instance), from, to)
            })
        };
        match crate::halves(from, to) {
            // On two read connections at once.
            Some([first, second]) => {
                let (mut rows, later) = tokio::try_join!(read(first), read(second))?;
                rows.extend(later);
                Ok(rows)
            }
            None => read((from, to)).await,
        }
    }

    /// One read on one connection, instance by instance and range by range.
    async fn instances_intervals(
        &self,
        scope: &TenantScope,
        instances: &[InstanceId],
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let tenant = scope.tenant().clone();
        let mut instances = instances.to_vec();
        instances.sort_unstable();
        instances.dedup();
        let mut ranges = ranges.to_vec();
        ranges.sort_unstable();
        self.read("reading intervals", move |conn| {
            let mut out = Vec::new();
            for instance in &instances {
                for &(from, to) in &ranges {
                    let rows = samples::read_intervals(conn, &tenant, Some(instance), from, to)?;
                    out.extend(rows);
                }
            }
            Ok(out)
        })
        .await
    }

    /// One read on one connection, window by window.
    async fn windows_samples(
        &self,
        scope: &TenantScope,
        windows: &[(InstanceId, UnixMillis, UnixMillis)],
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let tenant = scope.tenant().clone();
        let windows = windows.to_vec();
        self.read("reading samples", move |conn| {
            let mut out = Vec::new();
            for (instance, from, to) in &windows {
                let rows = samples::read_samples(conn, &tenant, instance, *from, *to, limit)?;
                out.extend(rows);
            }
            Ok(crate::in_window_order(out, limit))
        })
        .await
    }

    /// Read from `interval_hours`, which triggers keep with the intervals.
    async fn instance_hourly_usage(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<GpuHourUsage>, StoreError> {
        crate::check_whole_hours(from, to)?;
        let tenant = scope.tenant().clone();
        let instance = instance.clone();
        self.read("reading hourly usage", move |conn| {
            samples::read_hourly_usage(conn, &tenant, &instance, from, to)
        })
        .await
    }

    async fn tenant_intervals(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let tenant = scope.tenant().clone();
        self.read("reading intervals", move |conn| {
            samples::read_intervals(conn, &tenant, None, from, to)
        })
        .await
    }

    async fn prune_restatements(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.call("pruning restatements", move |conn| {
            intensity::prune_restatements(conn, before)
        })
        .await
    }

    async fn region_hourly_facility_energy(
        &self,
        regions: &[RegionId],
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionHourEnergy>, StoreError> {
        let regions = regions.to_vec();
        self.read("reading facility energy per region and hour", move |conn| {
            samples::region_hourly_facility_energy(conn, &regions, from, to)
        })
        .await
    }

    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError> {
        check_workload(workload)?;
        let tenant = scope.tenant().clone();
        let spec = workload.clone();
        self.call("creating a workload", move |conn| {
            workloads::create_workload(conn, tenant, spec)
        })
        .await
    }

    /// One aggregate over the `intervals` rows: no rollups at the embedded store's scale.
    async fn tenant_summary(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TenantSummary, StoreError> {
        let tenant = scope.tenant().clone();
        self.read("summarising a tenant", move |conn| {
            samples::summarise(conn, &tenant, from, to)
        })
        .await
    }

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
        self.read("reading intensity points", move |conn| {
            intensity::read_points(conn, &query)
        })
        .await
    }

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
        self.read("reading restatements", move |conn| {
            intensity::read_restatements(conn, &tenant, from, to)
        })
        .await
    }

    async fn intensity_coverage(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionCoverage>, StoreError> {
        self.read("reading intensity coverage", move |conn| {
            intensity::coverage(conn, from, to)
        })
        .await
    }

    async fn list_workloads(&self, scope: &TenantScope) -> Result<Vec<Workload>, StoreError> {
        let tenant = scope.tenant().clone();
        self.read("listing workloads", move |conn| {
            workloads::load_workloads(conn, &tenant, None)
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
        self.read("reading a workload", move |conn| {
            Ok(workloads::load_workloads(conn, &tenant, Some(&id))?
                .into_iter()
                .next())
        })
        .await
    }

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
            workloads::update_workload(conn, &tenant, &id, &update)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnrichedShare, GpuRecord};
    use wattprint_core::accounting::split_into_buckets;
    use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
    use wattprint_core::sample::EnergySource;
    use wattprint_core::sample::{Attribution, EnergySample};
    use wattprint_core::{GpuUuid, HostId, Milliwatts, TenantId};
    use wattprint_core::{GramsPerKwh, Millijoules};

    fn scope() -> TenantScope {
        TenantScope::from_verified(TenantId::from("acme"))
    }

    /// On a file, tenant reads run on their own connections: they answer while the writing
    /// connection is held (a long ingest transaction), and see what was committed.
    #[tokio::test]
    async fn reads_answer_while_the_writer_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let store = SqliteStore::open(&path).unwrap();
        let summary = |store: SqliteStore| async move {
            store
                .tenant_summary(&scope(), UnixMillis(0), UnixMillis(i64::MAX / 2))
                .await
                .unwrap()
        };
        assert!(summary(store.clone()).await.instances.is_empty());
        store
            .upsert_inventory(&[InstanceRecord {
                tenant: TenantId::from("acme"),
                instance: InstanceId::from("i-a"),
                region: RegionId::from("R"),
                zip_code: None,
                gpus: vec![],
            }])
            .await
            .unwrap();
        // Another thread holds the writing connection until told to let go.
        let writer = Arc::clone(&store.conn);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = writer.lock().unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().ok();
        });
        locked_rx.recv().unwrap();
        let listed = tokio::time::timeout(Duration::from_secs(5), store.list_instances(&scope()))
            .await
            .expect("a read waited for the writer")
            .unwrap();
        assert_eq!(listed.len(), 1);
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        // In memory there is one connection: reads share it (and would wait).
        assert!(SqliteStore::open_in_memory().unwrap().readers.is_empty());
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
