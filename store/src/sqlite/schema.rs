//! The SQLite schema and its versioned migrations.
//!
//! `schema_migrations` records every applied version. At open, each migration newer than the
//! database's version is applied in its own transaction together with its bookkeeping row, so a
//! crash leaves the database at a whole version. Migrations are append-only: never edit one
//! that has shipped; add a new one.

use super::{db_err, now_ms};
use crate::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// Version 1: inventory, raw samples, 5-minute intervals, workloads and quarantine.
///
/// Energy is integer millijoules, power integer milliwatts, time integer UTC milliseconds.
/// Tables are `STRICT`, so a value of the wrong type (e.g. an integer sum that overflowed into a
/// float) is refused instead of stored.
const V1: &str = r#"
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL,
    region      TEXT NOT NULL,
    zip_code    TEXT
) STRICT;
CREATE INDEX instances_by_tenant ON instances (tenant, instance_id);

CREATE TABLE gpus (
    uuid           TEXT PRIMARY KEY NOT NULL,
    instance_id    TEXT NOT NULL REFERENCES instances (instance_id),
    model          TEXT NOT NULL,
    power_limit_mw INTEGER NOT NULL CHECK (power_limit_mw >= 0)
) STRICT;
CREATE INDEX gpus_by_instance ON gpus (instance_id, uuid);

CREATE TABLE samples (
    gpu_uuid       TEXT NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    tenant         TEXT NOT NULL,
    instance_id    TEXT NOT NULL,
    host           TEXT NOT NULL,
    start_ms       INTEGER NOT NULL,
    end_ms         INTEGER NOT NULL,
    energy_mj      INTEGER NOT NULL CHECK (energy_mj >= 0),
    power_mw       INTEGER NOT NULL,
    power_max_mw   INTEGER NOT NULL,
    util_pct       INTEGER NOT NULL,
    mem_used_bytes INTEGER NOT NULL,
    temp_c         INTEGER NOT NULL,
    sm_clock_mhz   INTEGER NOT NULL,
    chain_start    INTEGER NOT NULL CHECK (chain_start IN (0, 1)),
    energy_source  TEXT NOT NULL,
    attribution    TEXT NOT NULL,
    PRIMARY KEY (gpu_uuid, seq)
) STRICT;
CREATE INDEX samples_by_instance_start ON samples (tenant, instance_id, start_ms);
CREATE INDEX samples_by_instance_end ON samples (tenant, instance_id, end_ms);

CREATE TABLE intervals (
    instance_id         TEXT NOT NULL,
    gpu_uuid            TEXT NOT NULL,
    bucket_ms           INTEGER NOT NULL,
    tenant              TEXT NOT NULL,
    energy_mj           INTEGER NOT NULL CHECK (energy_mj >= 0),
    estimated_mj        INTEGER NOT NULL CHECK (estimated_mj >= 0),
    covered_ms          INTEGER NOT NULL,
    samples             INTEGER NOT NULL,
    power_max_mw        INTEGER NOT NULL,
    region              TEXT NOT NULL,
    intensity_g_per_kwh REAL,
    intensity_kind      TEXT,
    intensity_source    TEXT,
    intensity_point_ms  INTEGER,
    intensity_replayed  INTEGER,
    pue                 REAL NOT NULL,
    PRIMARY KEY (instance_id, gpu_uuid, bucket_ms)
) STRICT;
CREATE INDEX intervals_by_tenant ON intervals (tenant, instance_id, bucket_ms);

CREATE TABLE workloads (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    label            TEXT NOT NULL,
    from_ms          INTEGER NOT NULL,
    to_ms            INTEGER NOT NULL,
    functional_unit  TEXT NOT NULL,
    functional_units REAL NOT NULL,
    created_at_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX workloads_by_tenant ON workloads (tenant, created_at_ms);

CREATE TABLE workload_instances (
    workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    instance_id TEXT NOT NULL REFERENCES instances (instance_id),
    PRIMARY KEY (workload_id, position),
    UNIQUE (workload_id, instance_id)
) STRICT;
CREATE INDEX workload_instances_by_instance ON workload_instances (instance_id);

CREATE TABLE quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    host           TEXT NOT NULL,
    gpu_uuid       TEXT,
    seq            TEXT,
    reason         TEXT NOT NULL,
    payload        TEXT NOT NULL
) STRICT;
CREATE INDEX quarantine_by_time ON quarantine (received_at_ms, id);
"#;

/// Version 3: open workloads (no end yet; `to_ms` holds `from_ms` until closed) and workload
/// labels (a JSON object of strings).
const V3: &str = r#"
ALTER TABLE workloads ADD COLUMN is_open INTEGER NOT NULL DEFAULT 0 CHECK (is_open IN (0, 1));
ALTER TABLE workloads ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
"#;

/// Version 4: a GPU's samples by time, so a write finds stored energy its span overlaps (one
/// GPU, one timeline) from an index range.
const V4: &str = r#"
CREATE INDEX samples_by_gpu_start ON samples (gpu_uuid, start_ms);
"#;

/// Version 5: the host of every GPU (only that host's agent may report it). GPUs stored before
/// get `''`, which no host matches, until the inventory names their host.
const V5: &str = r#"
ALTER TABLE gpus ADD COLUMN host TEXT NOT NULL DEFAULT '';
"#;

/// Version 6: a refused sample is held once, however often it is redelivered: the copies
/// already held are dropped (the first kept), and a unique index keeps it so.
const V6: &str = r#"
DELETE FROM quarantine WHERE id NOT IN (
    SELECT MIN(id) FROM quarantine
    GROUP BY host, coalesce(gpu_uuid, ''), coalesce(seq, ''), payload
);
CREATE UNIQUE INDEX quarantine_once ON quarantine
    (host, coalesce(gpu_uuid, ''), coalesce(seq, ''), payload);
"#;

/// Version 7: the inventory in time (`crate::placements`): every GPU's placements with the
/// time each took effect, `attached = 0` for a detachment. GPUs placed before are placed since
/// always (`i64::MIN`).
const V7: &str = r#"
CREATE TABLE gpu_placements (
    gpu_uuid       TEXT NOT NULL,
    valid_from_ms  INTEGER NOT NULL,
    attached       INTEGER NOT NULL CHECK (attached IN (0, 1)),
    host           TEXT NOT NULL,
    instance_id    TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    region         TEXT NOT NULL,
    power_limit_mw INTEGER NOT NULL,
    PRIMARY KEY (gpu_uuid, valid_from_ms)
) STRICT;
INSERT INTO gpu_placements
    SELECT g.uuid, -9223372036854775808, 1, g.host, g.instance_id, i.tenant, i.region,
           g.power_limit_mw
    FROM gpus g JOIN instances i ON i.instance_id = g.instance_id;
"#;

/// Version 8: issued monthly statements, one per tenant and month, never updated.
const V8: &str = r#"
CREATE TABLE statements (
    tenant         TEXT NOT NULL,
    period         TEXT NOT NULL,
    issued_at_ms   INTEGER NOT NULL,
    computed_at_ms INTEGER NOT NULL,
    content_sha256 TEXT NOT NULL,
    body           TEXT NOT NULL,
    PRIMARY KEY (tenant, period)
) STRICT;
"#;

/// Version 11: no index of samples by end. Every read by time bounds `start_ms` (a sample
/// spans at most `MAX_SAMPLE_SPAN_MS`), so the start index serves it; the end index only cost
/// every insert a fifth B-tree.
const V11: &str = r#"
DROP INDEX IF EXISTS samples_by_instance_end;
"#;

/// The migrations, in order: entry `i` is version `i + 1`.
pub(crate) static MIGRATIONS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    [V1, super::intensity::V2, V3, V4, V5, V6, V7, V8]
        .into_iter()
        .map(str::to_owned)
        .chain([
            super::days::v9(),
            super::days::v10(),
            V11.to_owned(),
            super::days::v12(),
            super::days::v13(),
        ])
        .collect()
});

/// Applies every migration of `migrations` that the database does not have yet.
///
/// Each runs in an `IMMEDIATE` transaction that re-reads the version first, so two processes
/// opening the same file at once never apply one twice.
pub(crate) fn migrate<S: AsRef<str>>(
    conn: &mut Connection,
    migrations: &[S],
) -> Result<(), StoreError> {
    const OP: &str = "applying schema migrations";
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version       INTEGER PRIMARY KEY NOT NULL,
             applied_at_ms INTEGER NOT NULL
         ) STRICT;",
    )
    .map_err(db_err(OP))?;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err(OP))?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(db_err(OP))?;
        let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
        if current > known {
            return Err(StoreError::Backend {
                op: OP,
                source: format!(
                    "database schema version {current} is newer than this build's {known}; \
                     upgrade Wattprint"
                )
                .into(),
            });
        }
        let Some(sql) = usize::try_from(current)
            .ok()
            .and_then(|i| migrations.get(i))
        else {
            return Ok(());
        };
        let version = current + 1;
        tx.execute_batch(sql.as_ref())
            .map_err(|e| StoreError::Backend {
                op: OP,
                source: format!("migration {version}: {e}").into(),
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            (version, now_ms()),
        )
        .map_err(db_err(OP))?;
        tx.commit().map_err(db_err(OP))?;
        tracing::info!(version, "applied schema migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(conn: &Connection) -> Vec<(i64, i64)> {
        let mut stmt = conn
            .prepare("SELECT version, applied_at_ms FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn only_new_migrations_are_applied() {
        let mut conn = Connection::open_in_memory().unwrap();
        let first = ["CREATE TABLE a (x INTEGER)"];
        migrate(&mut conn, &first).unwrap();
        let before = versions(&conn);
        assert_eq!(before.len(), 1);
        // Re-applying `a` would fail (no IF NOT EXISTS), so success proves it was skipped.
        migrate(&mut conn, &first).unwrap();
        let second = ["CREATE TABLE a (x INTEGER)", "CREATE TABLE b (y INTEGER)"];
        migrate(&mut conn, &second).unwrap();
        let after = versions(&conn);
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], before[0], "version 1 must not be re-recorded");
        conn.execute("INSERT INTO b (y) VALUES (1)", []).unwrap();
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version_intact() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &["CREATE TABLE a (x INTEGER)"]).unwrap();
        let bad = [
            "CREATE TABLE a (x INTEGER)",
            "CREATE TABLE c (z INTEGER); SELECT nonsense(",
        ];
        let err = migrate(&mut conn, &bad).unwrap_err();
        assert!(err.to_string().contains("migration 2"), "{err}");
        assert_eq!(versions(&conn).len(), 1);
        // The half-applied migration was rolled back with its transaction.
        let c_exists: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(c_exists, 0);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &["SELECT 1", "SELECT 2"]).unwrap();
        let err = migrate(&mut conn, &["SELECT 1"]).unwrap_err();
        assert!(err.to_string().contains("newer than this build"), "{err}");
    }

    #[test]
    fn the_inventory_history_starts_with_every_gpu_placed_since_always() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS[..6]).unwrap();
        conn.execute_batch(
            "INSERT INTO instances (instance_id, tenant, region) VALUES ('i-a', 'acme', 'R');
             INSERT INTO gpus (uuid, instance_id, model, power_limit_mw, host)
                 VALUES ('GPU-1', 'i-a', 'H100', 700000, 'h1'), ('GPU-2', 'i-a', 'H100', 1, '');",
        )
        .unwrap();
        migrate(&mut conn, &MIGRATIONS).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT gpu_uuid, valid_from_ms, attached, host, tenant, power_limit_mw \
                 FROM gpu_placements ORDER BY gpu_uuid",
            )
            .unwrap();
        let rows: Vec<(String, i64, i64, String, String, i64)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "GPU-1".into(),
                    i64::MIN,
                    1,
                    "h1".into(),
                    "acme".into(),
                    700_000
                ),
                ("GPU-2".into(), i64::MIN, 1, String::new(), "acme".into(), 1),
            ]
        );
    }

    /// Intervals written before versions 12 and 13 come through both: the same rows, the
    /// hourly totals per region, and totals kept by the triggers made again on the new table.
    #[test]
    fn intervals_and_their_totals_come_through_the_clustered_rebuild() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS[..11]).unwrap();
        let insert = "INSERT INTO intervals (instance_id, gpu_uuid, bucket_ms, tenant, energy_mj, \
             estimated_mj, covered_ms, samples, power_max_mw, region, intensity_g_per_kwh, \
             intensity_kind, pue) VALUES (?1, ?2, ?3, 'acme', ?4, 0, 1000, 1, 5, ?5, 100.0, \
             'actual', 1.5)";
        let rows = [
            ("i-b", "g-2", 600_000, 7, "R"),
            ("i-a", "g-1", 300_000, 11, "R"),
            ("i-a", "g-1", 3_300_000, 13, "S"),
            ("i-a", "g-0", 0, 17, "R"),
        ];
        for r in rows {
            conn.execute(insert, rusqlite::params![r.0, r.1, r.2, r.3, r.4])
                .unwrap();
        }
        let all = |conn: &Connection, sql: &str| -> Vec<(String, String, i64, i64)> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let intervals = "SELECT instance_id, gpu_uuid, bucket_ms, energy_mj FROM intervals \
             ORDER BY instance_id, gpu_uuid, bucket_ms";
        let before = all(&conn, intervals);
        migrate(&mut conn, &MIGRATIONS).unwrap();
        assert_eq!(all(&conn, intervals), before);
        // An interval added after the rebuild reaches the daily and hourly totals.
        conn.execute(insert, rusqlite::params!["i-a", "g-1", 3_000_000, 19, "S"])
            .unwrap();
        let hours = all(
            &conn,
            "SELECT instance_id, gpu_uuid || '@' || region, hour_ms, energy_mj \
             FROM interval_hours ORDER BY instance_id, gpu_uuid, hour_ms, region",
        );
        let s = |v: &str| v.to_owned();
        assert_eq!(
            hours,
            vec![
                (s("i-a"), s("g-0@R"), 0, 17),
                (s("i-a"), s("g-1@R"), 0, 11),
                (s("i-a"), s("g-1@S"), 0, 13 + 19),
                (s("i-b"), s("g-2@R"), 0, 7),
            ]
        );
        let days = all(
            &conn,
            "SELECT instance_id, gpu_uuid, day_ms, energy_mj FROM interval_days \
             ORDER BY instance_id, gpu_uuid",
        );
        assert_eq!(
            days,
            vec![
                (s("i-a"), s("g-0"), 0, 17),
                (s("i-a"), s("g-1"), 0, 11 + 13 + 19),
                (s("i-b"), s("g-2"), 0, 7),
            ]
        );
        // The primary key still refuses a second row for an interval.
        let twice = conn.execute(insert, rusqlite::params!["i-a", "g-1", 300_000, 1, "R"]);
        assert!(twice.is_err(), "{twice:?}");
    }

    #[test]
    fn the_real_schema_applies_cleanly() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS).unwrap();
        assert_eq!(versions(&conn).len(), MIGRATIONS.len());
    }

    /// Without the end index (version 11), reads and pruning by time still take an index
    /// range of the instance's samples, never a scan of the table.
    #[test]
    fn samples_by_time_use_the_start_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS).unwrap();
        for sql in [
            "SELECT * FROM samples WHERE tenant = 'a' AND instance_id = 'i' AND start_ms < 10 \
             AND end_ms > 5 AND start_ms > 5 - 3600000",
            "DELETE FROM samples WHERE tenant = 'a' AND instance_id = 'i' AND start_ms < 10 \
             AND end_ms < 10",
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX samples_by_instance_start"),
                "{sql}: {plan}"
            );
        }
        let end_index: i64 = conn
            .query_row(
                "SELECT count() FROM sqlite_master WHERE name = 'samples_by_instance_end'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(end_index, 0);
    }
}
