//! Daily and hourly totals of the 5-minute intervals, kept by triggers in the same transaction
//! as the intervals they add up, so a month's summary reads about 30 rows per GPU and an
//! instance's 30-day series at 1 h or 1 d steps about 720.
//!
//! `interval_days` (schema version 9) and `interval_hours` (version 10) hold per
//! `(tenant, instance, period, GPU)` the sums the summary takes over `intervals`
//! ([`super::rows::USAGE_COLUMNS`]; the hours also Σ intensity): every insert, update and
//! delete of an interval adds its new contribution and subtracts its old one. Being part of
//! the writing transaction, a period's row can never disagree with its intervals in integers;
//! float sums (kWh, grams) differ from a fresh sum only by rounding. The one non-additive
//! column, the highest power, is a high-water mark: intervals only ever raise it. A summary
//! reads whole UTC days from here and the ragged edges from `intervals`.

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The summed columns of `interval_days` and each one's contribution of one interval row
/// (`{r}` is `NEW` or `OLD`).
const CONTRIBUTIONS: [(&str, &str); 13] = [
    ("intervals", "1"),
    ("energy_mj", "{r}.energy_mj"),
    ("estimated_mj", "{r}.estimated_mj"),
    ("facility_kwh", "{r}.energy_mj / 3600000000.0 * {r}.pue"),
    ("covered_ms", "{r}.covered_ms"),
    ("samples", "{r}.samples"),
    (
        "it_co2e_g",
        "CASE WHEN {r}.intensity_kind IS NOT NULL \
         THEN {r}.energy_mj * {r}.intensity_g_per_kwh / 3600000000.0 ELSE 0.0 END",
    ),
    (
        "facility_co2e_g",
        "CASE WHEN {r}.intensity_kind IS NOT NULL \
         THEN {r}.energy_mj * {r}.intensity_g_per_kwh / 3600000000.0 * {r}.pue ELSE 0.0 END",
    ),
    (
        "missing_energy_mj",
        "CASE WHEN {r}.intensity_kind IS NULL THEN {r}.energy_mj ELSE 0 END",
    ),
    (
        "n_actual",
        "CASE WHEN {r}.intensity_kind = 'actual' THEN 1 ELSE 0 END",
    ),
    (
        "n_forecast",
        "CASE WHEN {r}.intensity_kind = 'forecast' THEN 1 ELSE 0 END",
    ),
    (
        "n_fallback",
        "CASE WHEN {r}.intensity_kind = 'fallback_average' THEN 1 ELSE 0 END",
    ),
    (
        "n_missing",
        "CASE WHEN {r}.intensity_kind IS NULL THEN 1 ELSE 0 END",
    ),
];

/// The replayed-intensity count, last of the summed columns of `interval_days`.
const REPLAYED: (&str, &str) = (
    "n_replayed",
    "CASE WHEN {r}.intensity_kind IS NOT NULL AND {r}.intensity_replayed = 1 THEN 1 ELSE 0 END",
);

/// Σ I over the intervals with an intensity (the plain mean of a series step without energy),
/// summed in `interval_hours` only.
const INTENSITY_SUM: (&str, &str) = (
    "intensity_sum",
    "CASE WHEN {r}.intensity_kind IS NOT NULL THEN {r}.intensity_g_per_kwh ELSE 0.0 END",
);

/// A table of per `(tenant, instance, period, GPU)` totals kept by triggers on `intervals`.
struct Totals {
    /// The table.
    table: &'static str,
    /// Its period-start column.
    key: &'static str,
    /// The period's length.
    length_ms: i64,
    /// Whether it sums [`INTENSITY_SUM`] too.
    intensity_sum: bool,
    /// Whether its rows are per region too (a key column after the GPU).
    by_region: bool,
}

/// Daily totals (version 9): what a tenant summary reads.
const DAYS: Totals = Totals {
    table: "interval_days",
    key: "day_ms",
    length_ms: DAY_MS,
    intensity_sum: false,
    by_region: false,
};

/// Hourly totals as version 10 made them: per GPU, all regions together.
const HOURS_V10: Totals = Totals {
    table: "interval_hours",
    key: "hour_ms",
    length_ms: crate::HOUR_MS,
    intensity_sum: true,
    by_region: false,
};

/// Hourly totals (version 12): what a series at whole-hour steps reads, per region so that
/// figures on a region's average intensity can be taken per hour.
const HOURS: Totals = Totals {
    by_region: true,
    ..HOURS_V10
};

fn summed() -> impl Iterator<Item = (&'static str, &'static str)> {
    CONTRIBUTIONS.into_iter().chain([REPLAYED])
}

fn period_of(column: &str, length_ms: i64) -> String {
    format!("({column} - (({column} % {length_ms}) + {length_ms}) % {length_ms})")
}

impl Totals {
    /// The summed columns and each one's contribution of one interval row.
    fn summed(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        summed().chain(self.intensity_sum.then_some(INTENSITY_SUM))
    }

    fn period_of(&self, column: &str) -> String {
        period_of(column, self.length_ms)
    }

    /// The statement adding row `r`'s contribution to its period.
    fn add(&self, r: &str) -> String {
        let names: Vec<&str> = self.summed().map(|(n, _)| n).collect();
        let values: Vec<String> = self.summed().map(|(_, v)| v.replace("{r}", r)).collect();
        let sets: Vec<String> = names
            .iter()
            .map(|n| format!("{n} = {n} + excluded.{n}"))
            .collect();
        let (region, region_value) = if self.by_region {
            (", region", format!(", {r}.region"))
        } else {
            ("", String::new())
        };
        format!(
            "INSERT INTO {table} (tenant, instance_id, {key}, gpu_uuid{region}, power_max_mw, {}) \
             VALUES ({r}.tenant, {r}.instance_id, {period}, {r}.gpu_uuid{region_value}, \
             {r}.power_max_mw, {}) \
             ON CONFLICT (tenant, instance_id, {key}, gpu_uuid{region}) DO UPDATE SET \
             power_max_mw = max(power_max_mw, excluded.power_max_mw), {};",
            names.join(", "),
            values.join(", "),
            sets.join(", "),
            table = self.table,
            key = self.key,
            period = self.period_of(&format!("{r}.bucket_ms")),
        )
    }

    /// The statement taking `OLD`'s contribution off its period.
    fn subtract(&self) -> String {
        let sets: Vec<String> = self
            .summed()
            .map(|(n, v)| format!("{n} = {n} - ({})", v.replace("{r}", "OLD")))
            .collect();
        format!(
            "UPDATE {table} SET {} WHERE tenant = OLD.tenant AND instance_id = OLD.instance_id \
             AND {key} = {} AND gpu_uuid = OLD.gpu_uuid{};",
            sets.join(", "),
            self.period_of("OLD.bucket_ms"),
            if self.by_region {
                " AND region = OLD.region"
            } else {
                ""
            },
            table = self.table,
            key = self.key,
        )
    }

    /// The table (its primary key `primary_key`, `options` after it), its rows for the
    /// intervals already stored, and the triggers that keep it.
    fn migration(&self, primary_key: &str, options: &str) -> String {
        let columns: Vec<String> = self
            .summed()
            .map(|(n, v)| {
                let real = v.contains("3600000000.0") || n == INTENSITY_SUM.0;
                let ty = if real { "REAL" } else { "INTEGER" };
                format!("    {n} {ty} NOT NULL")
            })
            .collect();
        let fill: Vec<String> = self
            .summed()
            .map(|(_, v)| format!("TOTAL({})", v.replace("{r}.", "")))
            .collect();
        let names: Vec<&str> = self.summed().map(|(n, _)| n).collect();
        let (region_column, region) = if self.by_region {
            ("    region       TEXT NOT NULL,\n", ", region")
        } else {
            ("", "")
        };
        format!(
            "CREATE TABLE {table} (
    tenant       TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    {key:<12} INTEGER NOT NULL,
    gpu_uuid     TEXT NOT NULL,
{region_column}    power_max_mw INTEGER NOT NULL,
{columns},
    PRIMARY KEY ({primary_key})
) {options};
INSERT INTO {table} (tenant, instance_id, {key}, gpu_uuid{region}, power_max_mw, {names})
    SELECT tenant, instance_id, {period} AS period, gpu_uuid{region}, MAX(power_max_mw), {fill}
    FROM intervals GROUP BY tenant, instance_id, period, gpu_uuid{region};
{triggers}",
            table = self.table,
            key = self.key,
            columns = columns.join(",\n"),
            names = names.join(", "),
            fill = fill.join(", "),
            period = self.period_of("bucket_ms"),
            triggers = self.triggers(),
        )
    }

    /// The triggers on `intervals` that keep the table.
    fn triggers(&self) -> String {
        format!(
            "CREATE TRIGGER {table}_insert AFTER INSERT ON intervals BEGIN
    {add_new}
END;
CREATE TRIGGER {table}_update AFTER UPDATE ON intervals BEGIN
    {subtract}
    {add_new}
END;
CREATE TRIGGER {table}_delete AFTER DELETE ON intervals BEGIN
    {subtract}
END;
",
            table = self.table,
            add_new = self.add("NEW"),
            subtract = self.subtract(),
        )
    }
}

/// Version 9: `interval_days`, its triggers, and its rows for the intervals already stored;
/// and an index on the intervals by tenant and time, so a summary's ragged edges are a range.
pub(crate) fn v9() -> String {
    format!(
        "{}CREATE INDEX intervals_by_tenant_time ON intervals (tenant, bucket_ms);\n",
        DAYS.migration("tenant, day_ms, instance_id, gpu_uuid", "STRICT")
    )
}

/// Version 10: `interval_hours`, clustered by instance and hour so one instance's month is a
/// contiguous read of about 720 rows per GPU.
pub(crate) fn v10() -> String {
    HOURS_V10.migration(
        "tenant, instance_id, hour_ms, gpu_uuid",
        "STRICT, WITHOUT ROWID",
    )
}

/// Version 12: `interval_hours` rebuilt per region as well (the region after the GPU in the
/// key, so one instance's month stays one contiguous read), so a series or footprint asked
/// for figures on average intensity can read hours too; and indexed by hour and region, so
/// every tenant's energy of a region and month (market-based emissions) is a range. The
/// index gains an entry once per GPU-hour: the triggers' updates change neither column.
pub(crate) fn v12() -> String {
    format!(
        "DROP TRIGGER interval_hours_insert;
DROP TRIGGER interval_hours_update;
DROP TRIGGER interval_hours_delete;
DROP TABLE interval_hours;
{}CREATE INDEX interval_hours_by_hour ON interval_hours (hour_ms, region);
",
        HOURS.migration(
            "tenant, instance_id, hour_ms, gpu_uuid, region",
            "STRICT, WITHOUT ROWID",
        )
    )
}

/// Version 13: `intervals` clustered by instance, bucket and GPU (a `WITHOUT ROWID` table
/// whose primary key is the same three columns as before, in another order), so one
/// instance's month of 5-minute data is one contiguous range instead of a lookup per row
/// scattered over the file. The table is copied, its indexes and the triggers of
/// `interval_days` and `interval_hours` made again; the totals tables are not touched (same
/// rows, so their sums stand).
pub(crate) fn v13() -> String {
    const COLUMNS: &str = "instance_id, gpu_uuid, bucket_ms, tenant, energy_mj, estimated_mj, \
         covered_ms, samples, power_max_mw, region, intensity_g_per_kwh, intensity_kind, \
         intensity_source, intensity_point_ms, intensity_replayed, pue";
    format!(
        "CREATE TABLE intervals_clustered (
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
    PRIMARY KEY (instance_id, bucket_ms, gpu_uuid)
) STRICT, WITHOUT ROWID;
INSERT INTO intervals_clustered ({COLUMNS})
    SELECT {COLUMNS} FROM intervals ORDER BY instance_id, bucket_ms, gpu_uuid;
DROP TABLE intervals;
ALTER TABLE intervals_clustered RENAME TO intervals;
CREATE INDEX intervals_by_tenant ON intervals (tenant, instance_id, bucket_ms);
CREATE INDEX intervals_by_tenant_time ON intervals (tenant, bucket_ms);
{}{}",
        DAYS.triggers(),
        HOURS.triggers(),
    )
}

/// The columns of `interval_hours` a series reads, in the order `RawUsage::from_row` reads
/// its first 17 (the GPU in the instance's place, 1 in the GPU count's), then the hour,
/// [`INTENSITY_SUM`] and the region, for tenant `?1`, instance `?2`, hours in `[?3, ?4)`.
pub(crate) fn instance_hours_sql() -> &'static str {
    "SELECT gpu_uuid, 1, intervals, energy_mj, estimated_mj, facility_kwh, covered_ms, samples, \
     power_max_mw, it_co2e_g, facility_co2e_g, missing_energy_mj, n_actual, n_forecast, \
     n_fallback, n_missing, n_replayed, hour_ms, intensity_sum, region FROM interval_hours \
     WHERE tenant = ?1 AND instance_id = ?2 AND hour_ms >= ?3 AND hour_ms < ?4 \
     AND intervals > 0 ORDER BY hour_ms, gpu_uuid, region"
}

/// The per-instance usage over whole days `[?2, ?3)` from `interval_days` and over the rest of
/// `[?4, ?5)` from `intervals`, tenant `?1`, in [`super::rows::USAGE_COLUMNS`]' order.
pub(crate) fn summary_sql() -> String {
    let interval_terms: Vec<String> = summed()
        .map(|(n, v)| format!("{} AS {n}", v.replace("{r}.", "")))
        .collect();
    let names: Vec<&str> = summed().map(|(n, _)| n).collect();
    format!(
        "SELECT instance_id, COUNT(DISTINCT gpu_uuid), SUM(intervals), SUM(energy_mj), \
         SUM(estimated_mj), TOTAL(facility_kwh), SUM(covered_ms), SUM(samples), \
         MAX(power_max_mw), TOTAL(it_co2e_g), TOTAL(facility_co2e_g), SUM(missing_energy_mj), \
         SUM(n_actual), SUM(n_forecast), SUM(n_fallback), SUM(n_missing), SUM(n_replayed) \
         FROM ( \
             SELECT instance_id, gpu_uuid, power_max_mw, {names} FROM interval_days \
             WHERE tenant = ?1 AND day_ms >= ?2 AND day_ms < ?3 AND intervals > 0 \
             UNION ALL \
             SELECT instance_id, gpu_uuid, power_max_mw, {interval_terms} FROM intervals \
             WHERE {first_edge} AND +tenant = ?1 AND bucket_ms >= ?4 AND bucket_ms < ?2 \
             UNION ALL \
             SELECT instance_id, gpu_uuid, power_max_mw, {interval_terms} FROM intervals \
             WHERE {last_edge} AND +tenant = ?1 AND bucket_ms >= ?3 AND bucket_ms < ?5 \
         ) GROUP BY instance_id ORDER BY instance_id",
        names = names.join(", "),
        interval_terms = interval_terms.join(", "),
        first_edge = with_days_in("?4", "?2"),
        last_edge = with_days_in("?3", "?5"),
    )
}

/// A filter keeping the intervals of the tenant's (`?1`) instances with daily totals in the
/// days from `from`'s to before `to` (every interval adds to its day's): an edge is then a
/// range of the clustered primary key per instance, not a lookup per row through a tenant
/// index.
pub(crate) fn with_days_in(from: &str, to: &str) -> String {
    format!(
        "instance_id IN (SELECT DISTINCT instance_id FROM interval_days WHERE tenant = ?1 \
         AND day_ms >= {} AND day_ms < {to})",
        period_of(from, DAY_MS)
    )
}

/// The whole days `[d1, d2)` inside `[from, to)`, or an empty range at `to` when none.
pub(crate) fn whole_days(from: i64, to: i64) -> (i64, i64) {
    let d1 = from
        .div_euclid(DAY_MS)
        .saturating_add(i64::from(from.rem_euclid(DAY_MS) != 0))
        .saturating_mul(DAY_MS);
    let d2 = to.div_euclid(DAY_MS).saturating_mul(DAY_MS);
    if d1 < d2 {
        (d1, d2)
    } else {
        (to, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_days_are_inside_the_range_or_empty_at_its_end() {
        let d = DAY_MS;
        assert_eq!(whole_days(0, 3 * d), (0, 3 * d));
        assert_eq!(whole_days(1, 3 * d - 1), (d, 2 * d));
        assert_eq!(whole_days(1, 2 * d - 1), (2 * d - 1, 2 * d - 1));
        assert_eq!(whole_days(-d - 1, 0), (-d, 0));
        assert_eq!(whole_days(5, 5), (5, 5));
    }

    /// The summary's rows, each column as text (floats rounded to 1e-6).
    fn rows(conn: &rusqlite::Connection, sql: &str, params: &[i64]) -> Vec<Vec<String>> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&"acme"];
        p.extend(params.iter().map(|v| v as &dyn rusqlite::ToSql));
        stmt.query_map(p.as_slice(), |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Real(f) => format!("{f:.6}"),
                        v => format!("{v:?}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// A summary's ragged edges are ranges of the intervals' clustered primary key per
    /// instance, never a lookup per row through a tenant index.
    #[test]
    fn summary_edges_read_ranges_of_the_primary_key() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn, &super::super::schema::MIGRATIONS).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", summary_sql()))
            .unwrap()
            .query_map(rusqlite::params!["t", 0, 1, 0, 1], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let on_intervals: Vec<&String> =
            plan.iter().filter(|p| p.contains(" intervals ")).collect();
        assert_eq!(on_intervals.len(), 2, "{plan:?}");
        for p in on_intervals {
            assert!(
                p.contains("SEARCH intervals USING PRIMARY KEY (instance_id=? AND bucket_ms>? AND bucket_ms<?)"),
                "{plan:?}"
            );
        }
    }

    /// Random inserts, energy added, intensity set and restated, deletes, then summaries over
    /// random ranges: the daily totals give what a fresh sum over the intervals gives.
    #[test]
    fn daily_totals_equal_a_fresh_sum_through_any_change() {
        use rand::{Rng, SeedableRng};
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn, &super::super::schema::MIGRATIONS).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let bucket = |k: i64| -2 * DAY_MS + k * 300_000;
        let kinds = [
            None,
            Some("actual"),
            Some("forecast"),
            Some("fallback_average"),
        ];
        for _ in 0..3_000 {
            let (inst, gpu) = (rng.random_range(0..3), rng.random_range(0..2));
            let key = (
                format!("i-{inst}"),
                format!("g-{inst}-{gpu}"),
                bucket(rng.random_range(0..2_000)),
            );
            let kind = kinds[rng.random_range(0..4)];
            match rng.random_range(0..10) {
                0..=6 => {
                    conn.execute(
                        "INSERT INTO intervals (instance_id, gpu_uuid, bucket_ms, tenant, energy_mj, \
                         estimated_mj, covered_ms, samples, power_max_mw, region, \
                         intensity_g_per_kwh, intensity_kind, intensity_replayed, pue) \
                         VALUES (?1, ?2, ?3, 'acme', ?4, ?5, 1000, 1, ?6, ?10, ?7, ?8, ?9, 1.25) \
                         ON CONFLICT (instance_id, gpu_uuid, bucket_ms) DO UPDATE SET \
                         energy_mj = energy_mj + excluded.energy_mj, samples = samples + 1, \
                         power_max_mw = max(power_max_mw, excluded.power_max_mw), \
                         intensity_kind = coalesce(intensity_kind, excluded.intensity_kind), \
                         intensity_g_per_kwh = coalesce(intensity_g_per_kwh, excluded.intensity_g_per_kwh)",
                        rusqlite::params![
                            key.0, key.1, key.2,
                            rng.random_range(0..400_000i64),
                            rng.random_range(0..2i64) * 1_000,
                            rng.random_range(50_000..700_000i64),
                            kind.map(|_| rng.random_range(100.0..900.0f64)),
                            kind,
                            rng.random_range(0..2i64),
                            ["r", "s"][rng.random_range(0..2)],
                        ],
                    )
                    .unwrap();
                }
                7 | 8 => {
                    conn.execute(
                        "UPDATE intervals SET intensity_g_per_kwh = ?4, intensity_kind = ?5, \
                         region = ?6 WHERE instance_id = ?1 AND gpu_uuid = ?2 AND bucket_ms = ?3",
                        rusqlite::params![
                            key.0,
                            key.1,
                            key.2,
                            kind.map(|_| 321.5),
                            kind,
                            ["r", "s"][rng.random_range(0..2)],
                        ],
                    )
                    .unwrap();
                }
                _ => {
                    conn.execute(
                        "DELETE FROM intervals WHERE instance_id = ?1 AND gpu_uuid = ?2 \
                         AND bucket_ms = ?3",
                        rusqlite::params![key.0, key.1, key.2],
                    )
                    .unwrap();
                }
            }
        }
        let plain = format!(
            "SELECT {} FROM intervals WHERE tenant = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 \
             GROUP BY instance_id ORDER BY instance_id",
            super::super::rows::USAGE_COLUMNS
        );
        let mut whole_days_read = 0;
        for _ in 0..200 {
            let a = bucket(rng.random_range(-20..2_020)) + rng.random_range(0..300_000);
            let b = a + rng.random_range(0..5 * DAY_MS);
            let (d1, d2) = whole_days(a, b);
            whole_days_read += i32::from(d1 < d2);
            let want = rows(&conn, &plain, &[a, b]);
            assert_eq!(
                rows(&conn, &summary_sql(), &[d1, d2, a, b]),
                want,
                "[{a}, {b})"
            );
        }
        // The hourly totals, row by row (the power high-water mark aside: deletes here can
        // lower a fresh maximum), equal a fresh sum per instance, GPU, hour and region, the
        // region of an interval changing included.
        let names: Vec<&str> = HOURS.summed().map(|(n, _)| n).collect();
        let fresh: Vec<String> = HOURS
            .summed()
            .map(|(_, v)| format!("TOTAL({})", v.replace("{r}.", "")))
            .collect();
        let hours = rows(
            &conn,
            &format!(
                "SELECT instance_id, gpu_uuid, hour_ms, region, {} FROM interval_hours \
                 WHERE tenant = ?1 AND intervals > 0 \
                 ORDER BY instance_id, gpu_uuid, hour_ms, region",
                names.join(", ")
            ),
            &[],
        );
        let want = rows(
            &conn,
            &format!(
                "SELECT instance_id, gpu_uuid, {hour} AS h, region, {} FROM intervals \
                 WHERE tenant = ?1 GROUP BY instance_id, gpu_uuid, h, region \
                 ORDER BY instance_id, gpu_uuid, h, region",
                fresh.join(", "),
                hour = period_of("bucket_ms", crate::HOUR_MS)
            ),
            &[],
        );
        // TOTAL() reads integers as reals: compare the numbers, not their SQL types.
        let as_numbers = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
            rows.into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|v| {
                            let t = v.trim_start_matches("Integer(").trim_end_matches(')');
                            t.parse::<f64>().map_or(v.clone(), |f| format!("{f:.6}"))
                        })
                        .collect()
                })
                .collect()
        };
        assert!(hours.len() > 100, "{} hourly rows", hours.len());
        assert_eq!(as_numbers(hours), as_numbers(want));
        assert!(
            whole_days_read > 50,
            "{whole_days_read} ranges with whole days"
        );
    }
}
