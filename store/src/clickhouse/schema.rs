//! The ClickHouse schema and its versioned migrations.
//!
//! `schema_migrations` (a plain MergeTree) records every applied version. At connect, every
//! migration newer than the database's highest version is applied statement by statement, and
//! then its version row is inserted. ClickHouse has no transactions, so every statement must be
//! idempotent (`CREATE TABLE IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`): a crash halfway through
//! a migration, or two processes connecting at once, re-run it harmlessly. Migrations are
//! append-only: never edit one that has shipped; add a new one.
//!
//! The statements are in the dialect both Debian's ClickHouse 18.16 (the test server) and
//! ClickHouse ≥ 23.8 (production) accept. Extras only modern servers know (`LowCardinality`,
//! column codecs) are switched on by [`supports_modern`]; they change storage, never the values
//! or their wire encoding, so the same row types read and write both.

use super::{ch_err, now_ms};
use crate::StoreError;
use ::clickhouse::{Client, Row};
use serde::Serialize;

/// Oldest server version whose dialect the modern extras need.
const MODERN: (u32, u32) = (23, 8);

/// True when a server reporting `version` (as `SELECT version()` does, e.g. `23.8.2.7` or
/// `18.16.1`) is at least 23.8, so the schema may use `LowCardinality` and column codecs.
/// An unparsable version is treated as old: the plain dialect works everywhere.
pub fn supports_modern(version: &str) -> bool {
    let mut parts = version.trim().split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= MODERN,
        _ => false,
    }
}

/// Column types that differ between the old and the modern dialect.
struct Dialect {
    /// Strings with few distinct values (tenant, region, host, enum names).
    few: &'static str,
    /// Codec clause for monotonic-ish integers (times, sequence numbers).
    delta: &'static str,
    /// Codec clause for other large columns.
    zstd: &'static str,
}

impl Dialect {
    fn new(modern: bool) -> Self {
        if modern {
            Self {
                few: "LowCardinality(String)",
                delta: " CODEC(Delta, ZSTD(1))",
                zstd: " CODEC(ZSTD(1))",
            }
        } else {
            Self {
                few: "String",
                delta: "",
                zstd: "",
            }
        }
    }
}

/// Month partition of a millisecond column, in UTC (18.16 has no DateTime64).
fn month_of(column: &str) -> String {
    format!("toYYYYMM(toDateTime(intDiv({column}, 1000), 'UTC'))")
}

/// Version 1: inventory, raw samples, per-bucket shares, workloads and quarantine.
///
/// Energy is UInt64 millijoules, power UInt32 milliwatts, time Int64 UTC milliseconds.
/// Tables whose rows are written once under a deterministic key are `ReplacingMergeTree`s and
/// every read uses `FINAL`, so a row written twice (a retried insert) is counted once.
/// Inventory tables carry a version column: an update inserts a newer version.
///
/// The keys of `samples` and `shares` are made of what the agent sent (instance, GPU, sequence
/// number, bucket), never of the tenant the enricher looked up: a redelivery enriched after the
/// instance changed owner lands under the same keys. The tenant is a filtered column; instance
/// ids are global, so `instance_id` first serves tenant reads (which always name an instance)
/// and duplicate lookups alike. Looking a sample up by `(gpu, seq)` alone would not use the
/// index of a table ordered by instance first (measured on 18.16: 18% of a 4M-row table read
/// per lookup, against 2 granules for a full key), hence `sample_keys`.
fn v1(modern: bool) -> Vec<String> {
    let Dialect { few, delta, zstd } = Dialect::new(modern);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS instances (
                instance_id String,
                tenant      {few},
                region      {few},
                zip_code    Nullable(String),
                version     UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY instance_id"
        ),
        // `attached = 0` is the tombstone of a GPU taken off its instance.
        format!(
            "CREATE TABLE IF NOT EXISTS gpus (
                uuid           String,
                instance_id    String,
                model          {few},
                power_limit_mw UInt32,
                attached       UInt8,
                version        UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY uuid"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS samples (
                tenant         {few},
                instance_id    String,
                gpu_uuid       String,
                seq            UInt64{delta},
                host           {few},
                start_ms       Int64{delta},
                end_ms         Int64{delta},
                energy_mj      UInt64{zstd},
                power_mw       UInt32{zstd},
                power_max_mw   UInt32{zstd},
                util_pct       UInt32{zstd},
                mem_used_bytes UInt64{zstd},
                temp_c         UInt32{zstd},
                sm_clock_mhz   UInt32{zstd},
                chain_start    UInt8,
                energy_source  {few},
                attribution    {few}
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY {}
            ORDER BY (instance_id, gpu_uuid, seq)",
            month_of("end_ms")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS shares (
                tenant             {few},
                instance_id        String,
                bucket_ms          Int64{delta},
                gpu_uuid           String,
                seq                UInt64{delta},
                energy_mj          UInt64{zstd},
                estimated_mj       UInt64{zstd},
                covered_ms         Int64{zstd},
                power_max_mw       UInt32{zstd},
                region             {few},
                has_intensity      UInt8,
                intensity_value    Float64{zstd},
                intensity_kind     {few},
                intensity_source   {few},
                intensity_point_ms Int64{delta},
                intensity_replayed UInt8,
                pue                Float64
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY {}
            ORDER BY (instance_id, bucket_ms, gpu_uuid, seq)",
            month_of("bucket_ms")
        ),
        // The `(gpu, seq)` index of `samples`: which instance a sample was stored under, so a
        // sample redelivered under another instance is found (a conflict) without scanning.
        "CREATE TABLE IF NOT EXISTS sample_keys (
                gpu_uuid    String,
                seq         UInt64,
                instance_id String
            ) ENGINE = ReplacingMergeTree() ORDER BY (gpu_uuid, seq, instance_id)"
            .to_owned(),
        format!(
            "CREATE TABLE IF NOT EXISTS workloads (
                tenant           {few},
                id               String,
                label            String,
                from_ms          Int64,
                to_ms            Int64,
                functional_unit  String,
                functional_units Float64,
                instances        Array(String),
                created_at_ms    Int64,
                created_ns       Int64
            ) ENGINE = ReplacingMergeTree() ORDER BY (tenant, id)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS quarantine (
                received_at_ms Int64{delta},
                written_ns     Int64{delta},
                position       UInt32,
                host           {few},
                gpu_uuid       Nullable(String),
                seq            Nullable(UInt64),
                reason         String,
                payload        String{zstd}
            ) ENGINE = MergeTree
            PARTITION BY {}
            ORDER BY (received_at_ms, written_ns, position)",
            month_of("received_at_ms")
        ),
    ]
}

/// Version 2: hourly rollups that cannot double count (see `clickhouse/rollups.rs`).
///
/// - `rollup_marks` counts, per `(tenant, instance, hour)`, the writes that added shares to the
///   hour: every write of new samples inserts one row with `writes = 1` per hour it touched,
///   after its shares. A `SummingMergeTree` folds the rows into one per key as it merges, and
///   reads take `sum(writes)`, so the count only ever grows.
/// - `rollup_hourly` holds, per `(tenant, instance, hour, GPU)`, the totals of that GPU's
///   5-minute intervals in the hour, computed from `shares FINAL` (so copies of a share count
///   once), stamped with `writes_seen`: the hour's write count read **before** the shares were.
///   It is a `ReplacingMergeTree(writes_seen)`, read with `FINAL`: one row per key, the one
///   computed from the most writes. A row is used only while its stamp equals the hour's
///   current count; otherwise the hour is read from the 5-minute data.
/// - The last statement marks every hour that already has shares (data written before this
///   version), so those hours read correctly from the start and get rolled up by the first
///   refresh. Running it twice (a crash mid-migration) only adds marks, which makes rollups
///   look stale (recomputed), never wrong.
fn v2(modern: bool) -> Vec<String> {
    let Dialect { few, delta, zstd } = Dialect::new(modern);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS rollup_marks (
                tenant      {few},
                instance_id String,
                hour_ms     Int64{delta},
                writes      UInt64
            ) ENGINE = SummingMergeTree(writes)
            PARTITION BY {}
            ORDER BY (tenant, instance_id, hour_ms)",
            month_of("hour_ms")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS rollup_hourly (
                tenant                   {few},
                instance_id              String,
                hour_ms                  Int64{delta},
                gpu_uuid                 String,
                writes_seen              UInt64,
                gpu_intervals            UInt64{zstd},
                energy_mj                UInt64{zstd},
                energy_float             Float64{zstd},
                estimated_mj             UInt64{zstd},
                covered_ms               Int64{zstd},
                samples                  UInt64{zstd},
                power_max_mw             UInt32{zstd},
                facility_kwh             Float64{zstd},
                it_co2e_g                Float64{zstd},
                facility_co2e_g          Float64{zstd},
                weighted_intensity       Float64{zstd},
                intensity_sum            Float64{zstd},
                energy_with_intensity_mj UInt64{zstd},
                missing_energy_mj        UInt64{zstd},
                intervals_actual         UInt64{zstd},
                intervals_forecast       UInt64{zstd},
                intervals_fallback       UInt64{zstd},
                intervals_missing        UInt64{zstd},
                intervals_replayed       UInt64{zstd},
                intervals_unknown        UInt64{zstd}
            ) ENGINE = ReplacingMergeTree(writes_seen)
            PARTITION BY {}
            ORDER BY (tenant, instance_id, hour_ms, gpu_uuid)",
            month_of("hour_ms")
        ),
        format!(
            "INSERT INTO rollup_marks (tenant, instance_id, hour_ms, writes) \
             SELECT tenant, instance_id, {hour} AS mark_hour, toUInt64(1) FROM shares \
             GROUP BY tenant, instance_id, mark_hour",
            hour = hour_of("bucket_ms")
        ),
    ]
}

/// Version 3: the intensity ledger and the restatement record (see `clickhouse/intensity.rs`).
fn v3(modern: bool) -> Vec<String> {
    let Dialect { few, delta, .. } = Dialect::new(modern);
    super::intensity::v3_tables(few, delta, month_of)
}

/// Version 4: workload labels and closures (see `clickhouse/workloads.rs`).
fn v4(modern: bool) -> Vec<String> {
    super::workloads::v4_tables(Dialect::new(modern).few)
}

/// Version 5: `gpu_spans`, every stored sample's span by GPU and time, so a write finds the
/// stored energy a new span overlaps (one GPU, one timeline) from an index range; filled from
/// the samples already stored. Re-running the fill inserts copies the `ReplacingMergeTree`
/// collapses, and readers tolerate meanwhile.
fn v5() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS gpu_spans (
                gpu_uuid String,
                start_ms Int64,
                end_ms   Int64,
                seq      UInt64
            ) ENGINE = ReplacingMergeTree() ORDER BY (gpu_uuid, start_ms, seq)"
            .to_owned(),
        "INSERT INTO gpu_spans (gpu_uuid, start_ms, end_ms, seq) \
         SELECT gpu_uuid, start_ms, end_ms, seq FROM samples"
            .to_owned(),
    ]
}

/// Version 6: the host of every GPU (only that host's agent may report it), a table of its own
/// since 18.16 has no `ADD COLUMN IF NOT EXISTS`. GPUs stored before have no row and read as
/// host `''`, which no host matches, until the inventory names their host.
fn v6() -> Vec<String> {
    vec!["CREATE TABLE IF NOT EXISTS gpu_hosts (
                uuid    String,
                host    String,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY uuid"
        .to_owned()]
}

/// Version 7: the inventory in time (`crate::placements`): every GPU's placements with the
/// time each took effect, `attached = 0` for a detachment. GPUs placed before are placed since
/// always (`i64::MIN`). 18.16 joins two tables per query, hence the nesting. Edited once a
/// 25.8 server was tested (it could never have applied there): servers since 20.x want every
/// joined subquery named, and keep one left row per key in an `ANY INNER JOIN`, so the
/// instances join (one row per instance, many GPUs per instance) is `ALL`.
fn v7() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS gpu_placements (
                gpu_uuid       String,
                valid_from_ms  Int64,
                attached       UInt8,
                host           String,
                instance_id    String,
                tenant         String,
                region         String,
                power_limit_mw UInt32,
                version        UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY (gpu_uuid, valid_from_ms)"
            .to_owned(),
        "INSERT INTO gpu_placements (gpu_uuid, valid_from_ms, attached, host, instance_id, \
         tenant, region, power_limit_mw, version) \
         SELECT uuid, toInt64(-9223372036854775807) - 1, toUInt8(1), host, instance_id, \
                toString(tenant), toString(region), power_limit_mw, toUInt64(0) \
         FROM ( \
             SELECT uuid, instance_id, power_limit_mw, host \
             FROM (SELECT uuid, instance_id, power_limit_mw FROM gpus FINAL WHERE attached = 1) \
                  AS attached_gpus \
             ANY LEFT JOIN (SELECT uuid, host FROM gpu_hosts FINAL) AS hosts USING uuid \
         ) AS placed ALL INNER JOIN (SELECT instance_id, tenant, region FROM instances FINAL) \
         AS owners USING instance_id"
            .to_owned(),
    ]
}

/// Version 8: issued monthly statements, one per tenant and month (see
/// `clickhouse/statements.rs` for why the version falls with the computation time).
fn v8() -> Vec<String> {
    vec!["CREATE TABLE IF NOT EXISTS statements (
                tenant         String,
                period         String,
                issued_at_ms   Int64,
                computed_at_ms Int64,
                content_sha256 String,
                body           String,
                version        UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY (tenant, period)"
        .to_owned()]
}

/// Version 9: every insert into `shares` marks the hours it touched, in the same query.
///
/// A materialized view adds one `rollup_marks` row per `(tenant, instance, hour)` of each
/// inserted block, after the block is stored: a mark can no longer be lost between a shares
/// insert and a separate marks insert (a restatement whose marks write failed used to leave
/// rollups stamped fresh over rewritten shares). Marks only need to grow, so the view counting
/// redelivered copies too is harmless (see `clickhouse/rollups.rs`).
fn v9() -> Vec<String> {
    vec![format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS shares_rollup_marks TO rollup_marks AS \
         SELECT tenant, instance_id, {hour} AS hour_ms, toUInt64(count()) AS writes \
         FROM shares GROUP BY tenant, instance_id, hour_ms",
        hour = hour_of("bucket_ms")
    )]
}

/// Version 10: `gpu_frontier`, each GPU's highest stored `seq` and latest span end, kept by a
/// view on `gpu_spans` (so it covers every span, whoever wrote it) and filled from the spans
/// already stored. A write whose samples all lie beyond their GPUs' frontier has nothing
/// stored to compare with and skips the lookups (`clickhouse/frontier.rs`). `max` is
/// idempotent: a span counted by both the view and the fill changes nothing.
fn v10() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS gpu_frontier (
                gpu_uuid String,
                max_seq  AggregateFunction(max, UInt64),
                max_end  AggregateFunction(max, Int64)
            ) ENGINE = AggregatingMergeTree() ORDER BY gpu_uuid"
            .to_owned(),
        "CREATE MATERIALIZED VIEW IF NOT EXISTS gpu_spans_frontier TO gpu_frontier AS \
         SELECT gpu_uuid, maxState(seq) AS max_seq, maxState(end_ms) AS max_end \
         FROM gpu_spans GROUP BY gpu_uuid"
            .to_owned(),
        "INSERT INTO gpu_frontier (gpu_uuid, max_seq, max_end) \
         SELECT gpu_uuid, maxState(seq), maxState(end_ms) FROM gpu_spans GROUP BY gpu_uuid"
            .to_owned(),
    ]
}

/// Version 11: daily rollups beside the hourly ones, so a month reads 30 rows per GPU.
/// `rollup_daily` mirrors `rollup_hourly` per `(tenant, instance, day, GPU)` (plus the hours
/// of the day that have data, one bit each, for the summary's count), stamped with the
/// day's write count from `rollup_marks_daily`, which a view on `shares` keeps like
/// `shares_rollup_marks` keeps the hours (same protocol, see `clickhouse/rollups.rs`). The
/// fill from the hourly marks runs after the view exists: a write seen by both only makes its
/// day look stale once more, never fresh.
fn v11(modern: bool) -> Vec<String> {
    let Dialect { few, delta, zstd } = Dialect::new(modern);
    let totals = ROLLUP_TOTAL_COLUMNS
        .iter()
        .map(|(name, ty)| format!("{name} {ty}{zstd}"))
        .collect::<Vec<_>>()
        .join(",\n                ");
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS rollup_marks_daily (
                tenant      {few},
                instance_id String,
                day_ms      Int64{delta},
                writes      UInt64
            ) ENGINE = SummingMergeTree(writes)
            PARTITION BY {}
            ORDER BY (tenant, day_ms, instance_id)",
            month_of("day_ms")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS rollup_daily (
                tenant      {few},
                instance_id String,
                day_ms      Int64{delta},
                gpu_uuid    String,
                writes_seen UInt64,
                {totals},
                hour_mask   UInt32
            ) ENGINE = ReplacingMergeTree(writes_seen)
            PARTITION BY {}
            ORDER BY (tenant, day_ms, instance_id, gpu_uuid)",
            month_of("day_ms")
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS shares_rollup_marks_daily \
             TO rollup_marks_daily AS \
             SELECT tenant, instance_id, {day} AS day_ms, toUInt64(count()) AS writes \
             FROM shares GROUP BY tenant, instance_id, day_ms",
            day = day_of("bucket_ms")
        ),
        format!(
            "INSERT INTO rollup_marks_daily (tenant, instance_id, day_ms, writes) \
             SELECT tenant, instance_id, {day} AS mark_day, sum(writes) FROM rollup_marks \
             GROUP BY tenant, instance_id, mark_day",
            day = day_of("hour_ms")
        ),
    ]
}

/// Version 12: the region of each hourly rollup's intervals (`region`, and `regions`, how many
/// they lie in), so figures on a region's average intensity can be taken per hour. Rows
/// computed before keep `regions = 0` (unknown) until their hour is recomputed; readers then
/// take those figures from the 5-minute data. 18.16 has no `ADD COLUMN IF NOT EXISTS`: the
/// runner treats a column that already exists as added ([`is_added_column`]).
fn v12(modern: bool) -> Vec<String> {
    let Dialect { few, .. } = Dialect::new(modern);
    vec![
        format!("ALTER TABLE rollup_hourly ADD COLUMN region {few} DEFAULT ''"),
        "ALTER TABLE rollup_hourly ADD COLUMN regions UInt64 DEFAULT 0".to_owned(),
    ]
}

/// True when `error`, from running `sql`, only says that the column an `ADD COLUMN` adds is
/// already there: a migration re-run after a crash between its statements.
fn is_added_column(sql: &str, error: &str) -> bool {
    sql.starts_with("ALTER TABLE")
        && sql.contains(" ADD COLUMN ")
        && error.contains("already exists")
}

/// The totals columns of `rollup_hourly` and `rollup_daily`, in table order, with their types.
pub(crate) const ROLLUP_TOTAL_COLUMNS: [(&str, &str); 20] = [
    ("gpu_intervals", "UInt64"),
    ("energy_mj", "UInt64"),
    ("energy_float", "Float64"),
    ("estimated_mj", "UInt64"),
    ("covered_ms", "Int64"),
    ("samples", "UInt64"),
    ("power_max_mw", "UInt32"),
    ("facility_kwh", "Float64"),
    ("it_co2e_g", "Float64"),
    ("facility_co2e_g", "Float64"),
    ("weighted_intensity", "Float64"),
    ("intensity_sum", "Float64"),
    ("energy_with_intensity_mj", "UInt64"),
    ("missing_energy_mj", "UInt64"),
    ("intervals_actual", "UInt64"),
    ("intervals_forecast", "UInt64"),
    ("intervals_fallback", "UInt64"),
    ("intervals_missing", "UInt64"),
    ("intervals_replayed", "UInt64"),
    ("intervals_unknown", "UInt64"),
];

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// SQL for the start of the UTC day of a millisecond `column` (floor, also before 1970).
pub(crate) fn day_of(column: &str) -> String {
    format!("({column} - (({column} % {DAY_MS}) + {DAY_MS}) % {DAY_MS})")
}

/// Milliseconds in an hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// SQL for the start of the UTC hour of a millisecond `column` (floor, also before 1970:
/// ClickHouse's `%` keeps the dividend's sign).
pub(crate) fn hour_of(column: &str) -> String {
    format!("({column} - (({column} % {HOUR_MS}) + {HOUR_MS}) % {HOUR_MS})")
}

/// The migrations for a server of the given dialect, in order: entry `i` is version `i + 1`,
/// each a list of statements.
pub(crate) fn migrations(modern: bool) -> Vec<Vec<String>> {
    vec![
        v1(modern),
        v2(modern),
        v3(modern),
        v4(modern),
        v5(),
        v6(),
        v7(),
        v8(),
        v9(),
        v10(),
        v11(modern),
        v12(modern),
    ]
}

#[derive(Row, Serialize)]
struct MigrationRow {
    version: u32,
    applied_at_ms: i64,
}

/// Applies every migration of `migrations` newer than the database's highest version.
pub(crate) async fn migrate(client: &Client, migrations: &[Vec<String>]) -> Result<(), StoreError> {
    const OP: &str = "applying schema migrations";
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version       UInt32,
                applied_at_ms Int64
            ) ENGINE = MergeTree ORDER BY version",
        )
        .execute()
        .await
        .map_err(ch_err(OP))?;
    let current: u32 = client
        .query("SELECT max(version) FROM schema_migrations")
        .fetch_one()
        .await
        .map_err(ch_err(OP))?;
    let known = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
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
    for (version, statements) in (1u32..).zip(migrations).skip_while(|(v, _)| *v <= current) {
        for sql in statements {
            // Statements are constants of this build: no `?` binding in them, so escape any.
            match client.query(&sql.replace('?', "??")).execute().await {
                Ok(()) => {}
                Err(e) if is_added_column(sql, &e.to_string()) => {
                    tracing::info!(version, %sql, "column already added by an earlier run");
                }
                Err(e) => {
                    return Err(StoreError::Backend {
                        op: OP,
                        source: format!("migration {version}: {e}").into(),
                    })
                }
            }
        }
        let mut insert = client
            .insert::<MigrationRow>("schema_migrations")
            .await
            .map_err(ch_err(OP))?;
        insert
            .write(&MigrationRow {
                version,
                applied_at_ms: now_ms(),
            })
            .await
            .map_err(ch_err(OP))?;
        insert.end().await.map_err(ch_err(OP))?;
        tracing::info!(version, "applied ClickHouse schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_means_at_least_23_8() {
        for (v, modern) in [
            ("18.16.1", false),
            ("23.7.9.1", false),
            ("23.8", true),
            ("23.8.2.7", true),
            ("24.1.1", true),
            ("100.0", true),
            ("", false),
            ("garbage", false),
            ("23", false),
        ] {
            assert_eq!(supports_modern(v), modern, "{v}");
        }
    }

    #[test]
    fn only_the_modern_dialect_uses_modern_types() {
        let old = migrations(false).concat().join("\n");
        let new = migrations(true).concat().join("\n");
        for extra in ["LowCardinality", "CODEC"] {
            assert!(!old.contains(extra), "{extra} in the 18.16 schema");
            assert!(
                new.contains(extra),
                "{extra} missing from the modern schema"
            );
        }
        // Same tables, same columns, in the same order.
        let names = |s: &str| {
            s.lines()
                .filter(|l| !l.contains("ENGINE"))
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&old), names(&new));
    }

    #[test]
    fn every_statement_is_idempotent() {
        for m in [false, true] {
            for sql in migrations(m).concat() {
                // The inserts only add rollup marks (repeated, rollups look stale and are
                // recomputed, never wrong) or spans (repeated, identical rows that the
                // `ReplacingMergeTree` collapses and the timeline reads as one) or placements
                // since always (repeated, version 0 rows that any upserted row outranks) or
                // frontiers (repeated, `max` of the same spans).
                assert!(
                    sql.starts_with("CREATE TABLE IF NOT EXISTS")
                        || sql.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS")
                        || sql.starts_with("INSERT INTO rollup_marks ")
                        || sql.starts_with("INSERT INTO gpu_spans ")
                        || sql.starts_with("INSERT INTO gpu_placements ")
                        || sql.starts_with("INSERT INTO gpu_frontier ")
                        || sql.starts_with("INSERT INTO rollup_marks_daily ")
                        || is_added_column(&sql, "column already exists"),
                    "{sql}"
                );
            }
        }
    }

    #[test]
    fn hours_floor_like_div_euclid() {
        // The SQL expression is checked against the server in tests/clickhouse.rs; here its
        // arithmetic, mirrored in Rust with C-style `%` as ClickHouse has it.
        let floor = |t: i64| t - ((t % HOUR_MS) + HOUR_MS) % HOUR_MS;
        for t in [
            0,
            1,
            HOUR_MS - 1,
            HOUR_MS,
            -1,
            -HOUR_MS,
            -HOUR_MS - 1,
            1_795_392_123_456,
        ] {
            assert_eq!(floor(t), t.div_euclid(HOUR_MS) * HOUR_MS, "{t}");
        }
        assert_eq!(hour_of("x"), "(x - ((x % 3600000) + 3600000) % 3600000)");
    }
}
