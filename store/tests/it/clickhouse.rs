//! Behaviour of the ClickHouse store against a real server: the shared conformance suite, and
//! what only ClickHouse has (migrations on the server, duplicates collapsed by `FINAL`, a crash
//! between the shares and samples inserts, racing writers).
//!
//! The server comes from `WPTEST_CLICKHOUSE_URL` (`source scripts/servers.sh start`), and for
//! the suite's second copy, `clickhouse_modern`, from `WPTEST_CLICKHOUSE_MODERN_URL`. Each
//! test works in a database of its own, `wp_test_<random hex>`, dropped at the end. Without the
//! variable the tests say so and pass, unless `CI` or `WPTEST_REQUIRE_SERVERS` is set.

// Helpers here are not `#[test]` functions, so clippy's test exemption does not reach them.
#![allow(clippy::unwrap_used)]

use crate::conformance;

use conformance::{
    assert_summary, assert_totals_match, enrich, expected_summary, instance, intervals, sample,
    seed, total, usage_batch, usage_run, T0,
};
use rand::seq::SliceRandom;
use std::future::Future;
use std::sync::Arc;
use wattprint_core::intensity::IntensityKind;
use wattprint_core::{GramsPerKwh, InstanceId, RegionId, TenantId, UnixMillis, BUCKET_MS};
use wattprint_store::clickhouse::SummaryPath;
use wattprint_store::{ClickHouseStore, EnrichedSample, Store, StoreError, TenantSummary};

/// True in the copy of this suite that runs against a modern server (see `main.rs`).
const MODERN_SUITE: bool = module_path!().len() > "it::clickhouse".len();

/// The variable naming the server this copy of the suite tests.
const URL_VARIABLE: &str = if MODERN_SUITE {
    "WPTEST_CLICKHOUSE_MODERN_URL"
} else {
    "WPTEST_CLICKHOUSE_URL"
};

/// The server to test against, or None (after saying so) when the test should not run.
fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some();
            assert!(
                !required,
                "{URL_VARIABLE} is not set, and CI/WPTEST_REQUIRE_SERVERS requires the real \
                 ClickHouse server: it is set by scripts/test-all.sh \
                 (or run `source scripts/servers.sh start`)"
            );
            eprintln!(
                "{}::{test} was NOT run: {URL_VARIABLE} is not set \
                 (source scripts/servers.sh start)",
                module_path!()
            );
            None
        }
    }
}

fn raw_client(url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_compression(clickhouse::Compression::None)
        .with_validation(false)
}

/// Databases of one test, dropped when it ends, whether it passed or panicked.
struct Databases {
    url: String,
    names: Vec<String>,
}

impl Databases {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            names: Vec::new(),
        }
    }

    /// A fresh database name (created by the store's `connect`).
    fn fresh(&mut self) -> String {
        let name = format!("wp_test_{:016x}", rand::random::<u64>());
        self.names.push(name.clone());
        name
    }

    async fn drop_all(&self) {
        let client = raw_client(&self.url);
        for name in &self.names {
            client
                .query("DROP DATABASE IF EXISTS ?")
                .bind(clickhouse::sql::Identifier(name))
                .execute()
                .await
                .unwrap();
        }
    }
}

/// Runs `test` with the server URL and a [`Databases`], on its own task so that a panic still
/// lets the databases be dropped; then re-raises the panic.
async fn with_server<F, Fut>(name: &str, test: F)
where
    F: FnOnce(String, Arc<tokio::sync::Mutex<Databases>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = server_url(name) else {
        return;
    };
    let dbs = Arc::new(tokio::sync::Mutex::new(Databases::new(&url)));
    let outcome = tokio::spawn(test(url, Arc::clone(&dbs))).await;
    dbs.lock().await.drop_all().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Connects a store to a fresh database of the test.
async fn fresh_store(url: &str, dbs: &tokio::sync::Mutex<Databases>) -> (ClickHouseStore, String) {
    let db = dbs.lock().await.fresh();
    let store = ClickHouseStore::connect(url, &db).await.unwrap();
    assert!(
        store.is_modern() || !MODERN_SUITE,
        "{URL_VARIABLE} names ClickHouse {}, not a modern server",
        store.server_version()
    );
    (store, db)
}

/// Runs a conformance behaviour on a store in a fresh database.
async fn fresh_database<F, Fut>(name: &str, behaviour: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_server(name, |url, dbs| async move {
        let (store, _) = fresh_store(&url, &dbs).await;
        behaviour(Arc::new(store)).await;
    })
    .await;
}

conformance_tests!(fresh_database);

async fn migration_rows(url: &str, db: &str) -> Vec<(u32, i64)> {
    raw_client(url)
        .with_database(db)
        .query("SELECT version, applied_at_ms FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .unwrap()
}

#[tokio::test]
async fn reconnecting_applies_no_migration_twice_and_keeps_data() {
    with_server(
        "reconnecting_applies_no_migration_twice_and_keeps_data",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            assert!(!store.server_version().is_empty());
            assert_eq!(
                store.is_modern(),
                wattprint_store::clickhouse::supports_modern(store.server_version())
            );
            seed(&store).await;
            let s = enrich(
                sample("GPU-A1", "i-a", 1, T0, T0 + BUCKET_MS + 10, 123_457),
                "acme",
            );
            store.write_samples(std::slice::from_ref(&s)).await.unwrap();
            let applied = migration_rows(&url, &db).await;
            assert_eq!(
                applied.iter().map(|r| r.0).collect::<Vec<_>>(),
                (1..=12).collect::<Vec<u32>>()
            );

            for _ in 0..2 {
                let again = ClickHouseStore::connect(&url, &db).await.unwrap();
                assert_eq!(
                    migration_rows(&url, &db).await,
                    applied,
                    "migrations re-applied"
                );
                let rows = intervals(&again, "acme", "i-a").await;
                assert_eq!((rows.len(), total(&rows)), (2, 123_457));
                // Redelivery after a restart is still recognised.
                let out = again.write_samples(std::slice::from_ref(&s)).await.unwrap();
                assert_eq!((out.inserted, out.duplicates), (0, 1));
            }

            // A crash after version 12 added its columns, before its row was written:
            // connecting again re-runs it, the columns already there, and goes on.
            let client = raw_client(&url).with_database(&db);
            for sql in [
                "DROP TABLE schema_migrations",
                "CREATE TABLE schema_migrations (version UInt32, applied_at_ms Int64) \
                 ENGINE = MergeTree ORDER BY version",
                "INSERT INTO schema_migrations SELECT toUInt32(number + 1), toInt64(0) \
                 FROM system.numbers LIMIT 11",
            ] {
                client.query(sql).execute().await.unwrap();
            }
            let again = ClickHouseStore::connect(&url, &db).await.unwrap();
            let versions: Vec<u32> = migration_rows(&url, &db)
                .await
                .iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(versions, (1..=12).collect::<Vec<u32>>());
            let rows = intervals(&again, "acme", "i-a").await;
            assert_eq!((rows.len(), total(&rows)), (2, 123_457));

            // A database migrated by a newer build is refused, not downgraded.
            raw_client(&url)
                .with_database(&db)
                .query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (999, 0)")
                .execute()
                .await
                .unwrap();
            let err = ClickHouseStore::connect(&url, &db).await.unwrap_err();
            assert!(err.to_string().contains("newer than this build"), "{err}");
        },
    )
    .await;
}

#[tokio::test]
async fn bad_database_names_and_unreachable_servers_are_errors() {
    with_server(
        "bad_database_names_and_unreachable_servers_are_errors",
        |url, _| async move {
            for bad in ["", "a-b", "x`; DROP DATABASE default; --"] {
                let err = ClickHouseStore::connect(&url, bad).await.unwrap_err();
                assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err:?}");
            }
            // Nothing listens on port 9 (discard) here.
            let err = ClickHouseStore::connect("http://127.0.0.1:9", "wp_unreachable")
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Backend {
                        op: "connecting to ClickHouse",
                        ..
                    }
                ),
                "{err:?}"
            );
        },
    )
    .await;
}

/// Rows stored twice under their keys (a retried insert, a second writer) count once: reads
/// collapse them with `FINAL`, before any background merge.
#[tokio::test]
async fn rows_stored_twice_are_counted_once() {
    with_server(
        "rows_stored_twice_are_counted_once",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let batch: Vec<_> = (0..20)
                .map(|i| {
                    let start = T0 + i * 45_000;
                    enrich(
                        sample(
                            "GPU-A1",
                            "i-a",
                            i as u64,
                            start,
                            start + 45_000,
                            10_000 + i as u64,
                        ),
                        "acme",
                    )
                })
                .collect();
            store.write_samples(&batch).await.unwrap();
            let before = intervals(&store, "acme", "i-a").await;
            let raw = raw_client(&url).with_database(&db);
            for table in ["shares", "samples"] {
                // Copies must stay apart until read, as on a busy server: modern servers
                // merge new parts within moments, and collapse the keys of one inserted block
                // (`optimize_on_insert`, unknown to 18.16).
                raw.query(&format!("SYSTEM STOP MERGES {table}"))
                    .execute()
                    .await
                    .unwrap();
                for _ in 0..2 {
                    let copy = raw.query(&format!("INSERT INTO {table} SELECT * FROM {table}"));
                    let copy = if store.is_modern() {
                        copy.with_option("optimize_on_insert", "0")
                    } else {
                        copy
                    };
                    copy.execute().await.unwrap();
                }
                let stored: u64 = raw
                    .query(&format!("SELECT count() FROM {table}"))
                    .fetch_one()
                    .await
                    .unwrap();
                let distinct: u64 = raw
                    .query(&format!("SELECT count() FROM {table} FINAL"))
                    .fetch_one()
                    .await
                    .unwrap();
                assert_eq!(stored, 4 * distinct, "{table}: the copies were not stored");
            }
            assert_eq!(intervals(&store, "acme", "i-a").await, before);
            let samples = store
                .instance_samples(
                    &conformance::scope("acme"),
                    &wattprint_core::InstanceId::from("i-a"),
                    wattprint_core::UnixMillis(i64::MIN),
                    wattprint_core::UnixMillis(i64::MAX),
                    1000,
                )
                .await
                .unwrap();
            assert_eq!(samples.len(), batch.len());
            // The edge reads of a workload, too: windows cutting samples see each once.
            let a = wattprint_core::InstanceId::from("i-a");
            let (from, to) = (UnixMillis(T0 + 100_000), UnixMillis(T0 + 400_000));
            let windows = [
                (a.clone(), from, to),
                (a.clone(), to, UnixMillis(T0 + 500_000)),
            ];
            let edge = store
                .windows_samples(&conformance::scope("acme"), &windows, 1000)
                .await
                .unwrap();
            let want: Vec<u64> = batch
                .iter()
                .map(|es| &es.sample)
                .filter(|s| s.start < UnixMillis(T0 + 500_000) && s.end > from)
                .map(|s| s.seq)
                .collect();
            assert_eq!(want, (2..=11).collect::<Vec<u64>>());
            let got: Vec<u64> = edge.iter().map(|r| r.sample.seq).collect();
            assert_eq!(got, want);
            let hours = [(UnixMillis(T0), UnixMillis(T0 + 2 * BUCKET_MS))];
            let rows = store
                .instances_intervals(&conformance::scope("acme"), &[a], &hours)
                .await
                .unwrap();
            assert_eq!(rows, before[..rows.len()].to_vec());
            assert_eq!(rows.len(), 2);
            let out = store.write_samples(&batch).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (0, batch.len() as u32));
        },
    )
    .await;
}

/// Copies of a share that differ count as the one inserted last, as `FINAL` has it, whether
/// the intervals are read for named instances (the shares as stored, aggregated in the
/// process, differing buckets with `FINAL`) or for the whole tenant (`FINAL` on the server);
/// identical copies count once on both paths.
#[tokio::test]
async fn differing_copies_count_as_the_last_inserted_on_both_read_paths() {
    with_server(
        "differing_copies_count_as_the_last_inserted_on_both_read_paths",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            // 4 buckets of GPU-A1 and GPU-A2, 60 s samples.
            let batch: Vec<_> = (0..40u64)
                .map(|i| {
                    let gpu = if i % 2 == 0 { "GPU-A1" } else { "GPU-A2" };
                    let start = T0 + (i / 2) as i64 * 60_000;
                    enrich(
                        sample(gpu, "i-a", i, start, start + 60_000, 5_000 + i),
                        "acme",
                    )
                })
                .collect();
            store.write_samples(&batch).await.unwrap();
            let before = intervals(&store, "acme", "i-a").await;
            assert_eq!(before.len(), 8);
            let raw = raw_client(&url).with_database(&db);
            let copy = |set: &str, bucket: i64| {
                let columns = "tenant, instance_id, bucket_ms, gpu_uuid, seq, energy_mj, \
                    estimated_mj, covered_ms, power_max_mw, region, has_intensity, \
                    intensity_value, intensity_kind, intensity_source, intensity_point_ms, \
                    intensity_replayed, pue";
                let select = columns.replace(set.split(" AS ").nth(1).unwrap(), set);
                format!(
                    "INSERT INTO shares ({columns}) SELECT {select} FROM shares \
                     WHERE bucket_ms = {bucket}"
                )
            };
            // Every share stored twice, identically; then bucket 1's shares restated to
            // 777 g/kWh and bucket 2's moved to globex, each by a copy inserted last.
            raw.query("INSERT INTO shares SELECT * FROM shares")
                .execute()
                .await
                .unwrap();
            for sql in [
                copy("toFloat64(777) AS intensity_value", T0 + BUCKET_MS),
                copy("'globex' AS tenant", T0 + 2 * BUCKET_MS),
            ] {
                raw.query(&sql).execute().await.unwrap();
            }
            let mut want: Vec<_> = before
                .iter()
                .filter(|r| r.bucket.start().0 != T0 + 2 * BUCKET_MS)
                .cloned()
                .collect();
            for r in want
                .iter_mut()
                .filter(|r| r.bucket.start().0 == T0 + BUCKET_MS)
            {
                r.intensity.as_mut().unwrap().value = GramsPerKwh(777.0);
            }
            assert_eq!(want.len(), 6);
            let named = intervals(&store, "acme", "i-a").await;
            assert_eq!(named, want);
            let tenant_wide = |tenant: &'static str| {
                let store = store.clone();
                async move {
                    store
                        .tenant_intervals(
                            &conformance::scope(tenant),
                            UnixMillis(i64::MIN),
                            UnixMillis(i64::MAX),
                        )
                        .await
                        .unwrap()
                }
            };
            assert_eq!(tenant_wide("acme").await, want);
            // Energy to the mJ: what the batch put in buckets 0, 1 and 3.
            let kept: u64 = batch
                .iter()
                .map(|es| &es.sample)
                .filter(|s| (s.start.0 - T0) / BUCKET_MS != 2)
                .map(|s| s.energy.0)
                .sum();
            assert_eq!(total(&named), kept);
            // The moved bucket is globex's now, whole.
            let globex = tenant_wide("globex").await;
            let moved: Vec<_> = before
                .iter()
                .filter(|r| r.bucket.start().0 == T0 + 2 * BUCKET_MS)
                .cloned()
                .collect();
            assert_eq!(globex, moved);
        },
    )
    .await;
}

/// The process died after inserting a batch's shares and before its samples: the redelivery
/// writes the samples, counts no energy twice, and keeps the stored shares even when the
/// re-enriched ones carry a different intensity.
#[tokio::test]
async fn a_crash_between_the_two_inserts_heals_on_redelivery() {
    with_server(
        "a_crash_between_the_two_inserts_heals_on_redelivery",
        |url, dbs| async move {
            let batch: Vec<EnrichedSample> = (0..12)
                .map(|i| {
                    let start = T0 + i * 70_000;
                    enrich(
                        sample(
                            "GPU-A2",
                            "i-a",
                            i as u64,
                            start,
                            start + 70_000,
                            5_000 + i as u64,
                        ),
                        "acme",
                    )
                })
                .collect();
            let want: u64 = batch.iter().map(|s| s.sample.energy.0).sum();
            // Reference: the batch written without trouble.
            let (reference, ref_db) = fresh_store(&url, &dbs).await;
            seed(&reference).await;
            reference.write_samples(&batch).await.unwrap();
            let expected = intervals(&reference, "acme", "i-a").await;
            assert_eq!(total(&expected), want);

            // The crashed store: the spans (written first) and the same shares, no samples.
            let (crashed, db) = fresh_store(&url, &dbs).await;
            seed(&crashed).await;
            for table in ["gpu_spans", "shares"] {
                raw_client(&url)
                    .query(&format!(
                        "INSERT INTO {db}.{table} SELECT * FROM {ref_db}.{table}"
                    ))
                    .execute()
                    .await
                    .unwrap();
            }
            // Before the redelivery the energy already shows (the shares are in), exactly once.
            assert_eq!(total(&intervals(&crashed, "acme", "i-a").await), want);

            // The redelivery was enriched again, meanwhile with newer intensity data.
            let mut redelivered = batch.clone();
            for s in &mut redelivered {
                for sh in &mut s.shares {
                    let i = sh.intensity.as_mut().unwrap();
                    i.value = GramsPerKwh(999.0);
                    i.kind = IntensityKind::Forecast;
                }
            }
            let out = crashed.write_samples(&redelivered).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (batch.len() as u32, 0));
            assert_eq!(intervals(&crashed, "acme", "i-a").await, expected);
            // And now it is complete: the next redelivery is a duplicate.
            let out = crashed.write_samples(&batch).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (0, batch.len() as u32));
            assert_eq!(intervals(&crashed, "acme", "i-a").await, expected);

            // Died after the samples, before their (GPU, seq) markers: the redelivery is a
            // duplicate and writes the markers, so the same (GPU, seq) under another instance
            // is then a conflict.
            let (late, late_db) = fresh_store(&url, &dbs).await;
            seed(&late).await;
            for table in ["gpu_spans", "shares", "samples"] {
                raw_client(&url)
                    .query(&format!(
                        "INSERT INTO {late_db}.{table} SELECT * FROM {ref_db}.{table}"
                    ))
                    .execute()
                    .await
                    .unwrap();
            }
            let mut elsewhere = batch[3].clone();
            elsewhere.sample.instance = wattprint_core::InstanceId::from("i-b");
            elsewhere.tenant = wattprint_core::TenantId::from("globex");
            let out = late.write_samples(&batch).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (0, batch.len() as u32));
            let out = late.write_samples(&[elsewhere]).await.unwrap();
            assert_eq!((out.inserted, out.conflicts.len()), (0, 1));
            assert_eq!(intervals(&late, "acme", "i-a").await, expected);
            assert!(intervals(&late, "globex", "i-b").await.is_empty());
        },
    )
    .await;
}

/// Two consumers own the same partition for a moment (a rebalance) and write the same batches
/// at the same time, through separate connections: both may see the samples as new and insert
/// them, and the totals read are still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_of_the_same_batches_count_everything_once() {
    with_server(
        "racing_writers_of_the_same_batches_count_everything_once",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let other = ClickHouseStore::connect(&url, &db).await.unwrap();
            let (mut want, mut both_inserted) = (0u64, 0u32);
            for round in 0..8u64 {
                let batch: Vec<_> = (0..30u64)
                    .map(|k| {
                        let seq = round * 100 + k;
                        let start = T0 + seq as i64 * 20_000;
                        enrich(
                            sample("GPU-A1", "i-a", seq, start, start + 20_000, 1_000 + seq),
                            "acme",
                        )
                    })
                    .collect();
                want += batch.iter().map(|s| s.sample.energy.0).sum::<u64>();
                let barrier = Arc::new(tokio::sync::Barrier::new(2));
                let run = |s: ClickHouseStore,
                           b: Vec<EnrichedSample>,
                           barrier: Arc<tokio::sync::Barrier>| {
                    tokio::spawn(async move {
                        barrier.wait().await;
                        s.write_samples(&b).await.unwrap()
                    })
                };
                let x = run(store.clone(), batch.clone(), Arc::clone(&barrier));
                let y = run(other.clone(), batch.clone(), barrier);
                let (x, y) = (x.await.unwrap(), y.await.unwrap());
                assert_eq!(x.inserted + x.duplicates, 30);
                assert_eq!(y.inserted + y.duplicates, 30);
                assert!(x.conflicts.is_empty() && y.conflicts.is_empty());
                // Every sample was inserted by at least one writer.
                assert!(x.inserted + y.inserted >= 30);
                both_inserted += x.inserted + y.inserted - 30;
                let rows = intervals(&store, "acme", "i-a").await;
                assert_eq!(total(&rows), want, "round {round}");
                // 20 s spans aligned to 5-minute buckets: one share per sample, each counted once.
                assert_eq!(
                    rows.iter().map(|r| u64::from(r.samples)).sum::<u64>(),
                    (round + 1) * 30,
                    "round {round}"
                );
            }
            eprintln!("samples inserted by both racing writers: {both_inserted}");
            let samples = store
                .instance_samples(
                    &conformance::scope("acme"),
                    &wattprint_core::InstanceId::from("i-a"),
                    wattprint_core::UnixMillis(i64::MIN),
                    wattprint_core::UnixMillis(i64::MAX),
                    10_000,
                )
                .await
                .unwrap();
            assert_eq!(samples.len(), 8 * 30, "a sample is listed twice");
        },
    )
    .await;
}

/// A tenant string that tries to break out of its quotes is a value, not SQL.
#[tokio::test]
async fn tenant_strings_are_bound_not_spliced() {
    with_server(
        "tenant_strings_are_bound_not_spliced",
        |url, dbs| async move {
            let (store, _) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let sly = "x' OR 1 = 1 OR tenant = '";
            assert!(store
                .list_instances(&conformance::scope(sly))
                .await
                .unwrap()
                .is_empty());
            store
                .upsert_inventory(&[instance(sly, "i-q", &["GPU-Q\\'"])])
                .await
                .unwrap();
            assert_eq!(
                store
                    .list_instances(&conformance::scope(sly))
                    .await
                    .unwrap(),
                vec![instance(sly, "i-q", &["GPU-Q\\'"])]
            );
            assert_eq!(
                store
                    .list_instances(&conformance::scope("acme"))
                    .await
                    .unwrap()
                    .len(),
                1
            );
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Rollups

const HOUR: i64 = 3_600_000;

/// The first hour boundary after T0.
fn h0() -> i64 {
    (T0 / HOUR + 1) * HOUR
}

/// The tenant's summary over `[from, to)` read by `path`, as the `Store` would return it.
async fn summary_by(
    store: &ClickHouseStore,
    tenant: &str,
    from: i64,
    to: i64,
    path: SummaryPath,
) -> TenantSummary {
    let rows = store
        .tenant_summary_by(
            &TenantId::from(tenant),
            UnixMillis(from),
            UnixMillis(to),
            path,
        )
        .await
        .unwrap();
    let hours = rows.iter().map(|(_, h)| h).sum();
    TenantSummary::of(rows.into_iter().map(|(s, _)| s).collect(), hours)
}

/// Rollup-backed and raw summaries of `[from, to)` agree (integers exactly, float sums to
/// 1e-9), per instance and in total; returns the rollup-backed one.
async fn assert_rollups_match_raw(
    store: &ClickHouseStore,
    tenant: &str,
    from: i64,
    to: i64,
) -> TenantSummary {
    let auto = summary_by(store, tenant, from, to, SummaryPath::Auto).await;
    let raw = summary_by(store, tenant, from, to, SummaryPath::Raw).await;
    assert_eq!(raw.rollup_instance_hours, 0);
    assert_eq!(auto.instances.len(), raw.instances.len());
    for (a, r) in auto.instances.iter().zip(&raw.instances) {
        assert_eq!((&a.instance, a.gpus), (&r.instance, r.gpus));
        assert_totals_match(&a.totals, &r.totals, a.instance.as_str());
    }
    assert_totals_match(&auto.totals, &raw.totals, "tenant totals");
    auto
}

async fn count(url: &str, db: &str, sql: &str) -> u64 {
    raw_client(url)
        .with_database(db)
        .query(sql)
        .fetch_one()
        .await
        .unwrap()
}

/// Rollups give the same numbers as the 5-minute data they were computed from: after the
/// write path rolled up passed hours, after a refresh, after redeliveries, after rows were
/// stored twice, and after late data made an hour stale.
#[tokio::test]
async fn rollups_equal_raw_data_through_redeliveries_and_late_data() {
    with_server(
        "rollups_equal_raw_data_through_redeliveries_and_late_data",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let mut batch = usage_batch();
            let mut by_time = batch.clone();
            by_time.sort_by_key(|s| (s.sample.end, s.sample.gpu.clone()));
            for chunk in by_time.chunks(40) {
                store.write_samples(chunk).await.unwrap();
            }
            // Ragged on both ends, and whole hours.
            let ranges = [
                (i64::MIN, i64::MAX),
                (h0(), h0() + 2 * HOUR),
                (T0 + 7 * 60_000 + 1, h0() + 2 * HOUR + 13 * 60_000),
                (h0() + 12 * 60_000, h0() + 47 * 60_000),
            ];
            // The write path rolled up the hours the stream moved past.
            let rolled = count(&url, &db, "SELECT count() FROM rollup_hourly FINAL").await;
            assert!(rolled > 0, "nothing rolled up on the write path");
            for (from, to) in ranges {
                let s = assert_rollups_match_raw(&store, "acme", from, to).await;
                assert_summary(&s, &expected_summary(&batch, "acme", from, to));
            }
            let used = summary_by(&store, "acme", i64::MIN, i64::MAX, SummaryPath::Auto)
                .await
                .rollup_instance_hours;
            assert!(used >= 2, "rollups unused: {used}");

            // A refresh rolls up the rest; a second finds nothing to do.
            let first = store
                .refresh_rollups(UnixMillis(T0 - HOUR), UnixMillis(h0() + 5 * HOUR))
                .await
                .unwrap();
            let second = store
                .refresh_rollups(UnixMillis(T0 - HOUR), UnixMillis(h0() + 5 * HOUR))
                .await
                .unwrap();
            assert!(first.recomputed > 0);
            assert_eq!(second.recomputed, 0);
            let all = summary_by(&store, "acme", i64::MIN, i64::MAX, SummaryPath::Auto).await;
            // Data touches 4 hours (10 min before T0 to about 3 h after): all whole ones rolled.
            assert!(
                all.rollup_instance_hours >= 3,
                "{}",
                all.rollup_instance_hours
            );
            let want = expected_summary(&batch, "acme", i64::MIN, i64::MAX);
            for (from, to) in ranges {
                assert_rollups_match_raw(&store, "acme", from, to).await;
                assert_rollups_match_raw(&store, "globex", from, to).await;
            }
            assert_summary(&all, &want);

            // Redelivered whole: duplicates, no new marks, rollups stay fresh and equal.
            let marks = count(&url, &db, "SELECT sum(writes) FROM rollup_marks").await;
            let out = store.write_samples(&batch).await.unwrap();
            assert_eq!((out.inserted, out.duplicates as usize), (0, batch.len()));
            assert_eq!(
                count(&url, &db, "SELECT sum(writes) FROM rollup_marks").await,
                marks
            );
            let again = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_eq!(again.rollup_instance_hours, all.rollup_instance_hours);
            assert_summary(&again, &want);

            // Every row stored twice more (a retried insert, racing writers, a recompute run
            // twice): FINAL collapses them in shares and rollups alike. The shares inserts
            // mark their hours (the view on `shares`), so those read from the 5-minute data
            // until a refresh, with the same numbers either way.
            let raw = raw_client(&url).with_database(&db);
            for table in ["shares", "rollup_hourly"] {
                for _ in 0..2 {
                    raw.query(&format!("INSERT INTO {table} SELECT * FROM {table}"))
                        .execute()
                        .await
                        .unwrap();
                }
            }
            let again = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_summary(&again, &want);
            store
                .refresh_rollups(UnixMillis(T0 - HOUR), UnixMillis(h0() + 5 * HOUR))
                .await
                .unwrap();
            let again = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_eq!(again.rollup_instance_hours, all.rollup_instance_hours);
            assert_summary(&again, &want);

            // Late data in a closed hour (a GPU's spool replayed): that hour is read from the
            // 5-minute data until it is recomputed, and the numbers include it either way.
            let late = usage_run(
                "acme",
                "i-a",
                "GPU-A3",
                1.2,
                0,
                h0() + 60_000,
                50_000,
                20,
                0,
            );
            store.write_samples(&late).await.unwrap();
            batch.extend(late);
            let want = expected_summary(&batch, "acme", i64::MIN, i64::MAX);
            let stale = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_eq!(stale.rollup_instance_hours, all.rollup_instance_hours - 1);
            assert_summary(&stale, &want);
            assert_eq!(stale.instances[0].gpus, 3);
            let refreshed = store
                .refresh_rollups(UnixMillis(T0 - HOUR), UnixMillis(h0() + 5 * HOUR))
                .await
                .unwrap();
            // The late hour, and the day it is in.
            assert_eq!(refreshed.recomputed, 2);
            let fresh = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_eq!(fresh.rollup_instance_hours, all.rollup_instance_hours);
            assert_summary(&fresh, &want);
            // Through the trait too.
            assert_summary(&conformance::summary(&store, "acme").await, &want);
        },
    )
    .await;
}

/// Writers adding late data to closed hours race with refreshes on other connections: the
/// summary never counts an hour twice or misses a stored interval, and ends exactly right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_and_refreshes_never_double_count() {
    with_server(
        "racing_writes_and_refreshes_never_double_count",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            // Four hours of GPU-A1, then GPU-A2 arrives late into the same hours while two
            // refreshers and a reader run.
            let base = usage_run("acme", "i-a", "GPU-A1", 1.2, 0, h0(), 60_000, 240, 0);
            store.write_samples(&base).await.unwrap();
            store
                .refresh_rollups(UnixMillis(h0()), UnixMillis(h0() + 4 * HOUR))
                .await
                .unwrap();
            let late = usage_run("acme", "i-a", "GPU-A2", 1.2, 0, h0(), 30_000, 480, 0);
            let mut written = base.clone();
            written.extend(late.clone());
            let want = expected_summary(&written, "acme", i64::MIN, i64::MAX);
            let lower = expected_summary(&base, "acme", i64::MIN, i64::MAX)["i-a"]
                .1
                .energy;
            let upper = want["i-a"].1.energy;

            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let store = ClickHouseStore::connect(&url, &db).await.unwrap();
                let mut late = late.clone();
                late.shuffle(&mut rand::rng());
                tokio::spawn(async move {
                    for chunk in late.chunks(16) {
                        store.write_samples(chunk).await.unwrap();
                    }
                })
            };
            let mut refreshers = Vec::new();
            for _ in 0..2 {
                let store = ClickHouseStore::connect(&url, &db).await.unwrap();
                let done = Arc::clone(&done);
                refreshers.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        n += store
                            .refresh_rollups(UnixMillis(h0()), UnixMillis(h0() + 4 * HOUR))
                            .await
                            .unwrap()
                            .recomputed;
                    }
                    n
                }));
            }
            // While it runs, every summary lies between what was there and what will be: an
            // hour counted twice would overshoot.
            let mut reads = 0;
            while !writer.is_finished() {
                let s = conformance::summary(&store, "acme").await;
                let e = s.totals.energy;
                assert!(lower <= e && e <= upper, "{lower:?} <= {e:?} <= {upper:?}");
                reads += 1;
            }
            writer.await.unwrap();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut recomputed = 0;
            for r in refreshers {
                recomputed += r.await.unwrap();
            }
            eprintln!("{reads} summaries read and {recomputed} hours recomputed during the race");
            assert_summary(&conformance::summary(&store, "acme").await, &want);
            store
                .refresh_rollups(UnixMillis(h0()), UnixMillis(h0() + 4 * HOUR))
                .await
                .unwrap();
            let s = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_eq!(s.rollup_instance_hours, 4);
            assert_summary(&s, &want);
        },
    )
    .await;
}

/// A database written before rollups existed (schema version 1): the migration marks its
/// hours, so summaries count the old data from the start and a refresh rolls it up.
#[tokio::test]
async fn data_from_before_rollups_is_marked_by_the_migration() {
    with_server(
        "data_from_before_rollups_is_marked_by_the_migration",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let batch = usage_batch();
            store.write_samples(&batch).await.unwrap();
            // Back to version 1: no marks, no rollups, version 2 not applied.
            let raw = raw_client(&url).with_database(&db);
            for sql in [
                "DROP TABLE rollup_marks",
                "DROP TABLE rollup_hourly",
                "DROP TABLE schema_migrations",
                "CREATE TABLE schema_migrations (version UInt32, applied_at_ms Int64) \
                 ENGINE = MergeTree ORDER BY version",
                "INSERT INTO schema_migrations VALUES (1, 0)",
            ] {
                raw.query(sql).execute().await.unwrap();
            }
            let store = ClickHouseStore::connect(&url, &db).await.unwrap();
            let want = expected_summary(&batch, "acme", i64::MIN, i64::MAX);
            let s = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert_eq!(s.rollup_instance_hours, 0);
            assert_summary(&s, &want);
            let n = store
                .refresh_rollups(UnixMillis(i64::MIN / 2), UnixMillis(i64::MAX / 2))
                .await
                .unwrap();
            assert!(n.recomputed >= 3);
            let s = assert_rollups_match_raw(&store, "acme", i64::MIN, i64::MAX).await;
            assert!(s.rollup_instance_hours >= 2);
            assert_summary(&s, &want);
        },
    )
    .await;
}

/// Samples stored before the timeline index existed (schema version 4) are found by it after
/// the migration: a new seq over their time is refused.
#[tokio::test]
async fn samples_from_before_the_timeline_index_are_in_it_after_the_migration() {
    with_server(
        "samples_from_before_the_timeline_index_are_in_it_after_the_migration",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let old = enrich(sample("GPU-A1", "i-a", 1, T0, T0 + 60_000, 1_000), "acme");
            store.write_samples(&[old]).await.unwrap();
            let raw = raw_client(&url).with_database(&db);
            for sql in [
                "DROP TABLE gpu_spans",
                "DROP TABLE schema_migrations",
                "CREATE TABLE schema_migrations (version UInt32, applied_at_ms Int64) \
                 ENGINE = MergeTree ORDER BY version",
                "INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0)",
            ] {
                raw.query(sql).execute().await.unwrap();
            }
            let store = ClickHouseStore::connect(&url, &db).await.unwrap();
            let again = enrich(
                sample("GPU-A1", "i-a", 2, T0 + 30_000, T0 + 90_000, 1_000),
                "acme",
            );
            let out = store.write_samples(&[again]).await.unwrap();
            assert_eq!((out.inserted, out.refused.len()), (0, 1), "{out:?}");
            assert_eq!(total(&intervals(&store, "acme", "i-a").await), 1_000);
        },
    )
    .await;
}

/// Whole days are read from daily rollups once refreshed, and the numbers stay those of the
/// 5-minute data: through a redelivery after the rollups were built, a racing writer's copy of
/// stored rows, and late data in a day already rolled up (that day reads from the finer tiers
/// until the next refresh).
#[tokio::test]
async fn daily_rollups_serve_whole_days_and_never_change_a_total() {
    with_server(
        "daily_rollups_serve_whole_days_and_never_change_a_total",
        |url, dbs| async move {
            const DAY: i64 = 86_400_000;
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            // Three days and a bit of one instance's GPU at 5-minute samples, from mid-day.
            let start = (T0 / DAY + 1) * DAY - 7 * HOUR - 11 * 60_000;
            let mut batch = usage_run("acme", "i-a", "GPU-A1", 1.2, 0, start, 300_000, 900, 7);
            for chunk in batch.chunks(200) {
                store.write_samples(chunk).await.unwrap();
            }
            let end = batch.last().unwrap().sample.end.0;
            store
                .refresh_rollups(UnixMillis(start), UnixMillis(end))
                .await
                .unwrap();
            let days = count(&url, &db, "SELECT count() FROM rollup_daily FINAL").await;
            assert!(days >= 2, "{days} daily rows");
            let (from, to) = (start - DAY, end + DAY);
            let want = expected_summary(&batch, "acme", from, to);
            let all = assert_rollups_match_raw(&store, "acme", from, to).await;
            assert_summary(&all, &want);
            // Every hour with data is read from a rollup, a daily one for whole days.
            let hours_with_data = batch
                .iter()
                .map(|s| s.sample.start.0.div_euclid(HOUR))
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64;
            assert!(all.rollup_instance_hours >= hours_with_data - 2);
            assert!(all.rollup_instance_hours <= hours_with_data);

            // A redelivery after the rollups were built: duplicates, nothing changes.
            let out = store.write_samples(&batch[300..500]).await.unwrap();
            assert_eq!(out.duplicates, 200);
            let again = assert_rollups_match_raw(&store, "acme", from, to).await;
            assert_summary(&again, &want);
            assert_eq!(again.rollup_instance_hours, all.rollup_instance_hours);

            // A racing writer stored some shares a second time: their days turn stale (the
            // view marks the insert), the copies collapse, the totals stay.
            raw_client(&url)
                .query(&format!(
                    "INSERT INTO {db}.shares SELECT * FROM {db}.shares WHERE seq >= 300 AND seq < 320"
                ))
                .execute()
                .await
                .unwrap();
            let racing = assert_rollups_match_raw(&store, "acme", from, to).await;
            assert_summary(&racing, &want);
            assert!(racing.rollup_instance_hours < all.rollup_instance_hours);

            // Late data of a GPU added to the middle day: exact before and after the refresh.
            let mid = (start / DAY + 2) * DAY + 5 * HOUR;
            let late = usage_run("acme", "i-a", "GPU-A2", 1.2, 0, mid, 300_000, 24, 0);
            store.write_samples(&late).await.unwrap();
            batch.extend(late);
            let want = expected_summary(&batch, "acme", from, to);
            assert_summary(&assert_rollups_match_raw(&store, "acme", from, to).await, &want);
            let refreshed = store
                .refresh_rollups(UnixMillis(start), UnixMillis(end))
                .await
                .unwrap();
            assert!(refreshed.recomputed >= 2, "{refreshed:?}");
            let fresh = assert_rollups_match_raw(&store, "acme", from, to).await;
            assert_summary(&fresh, &want);
            assert!(fresh.rollup_instance_hours >= all.rollup_instance_hours);
            // A range cut mid-day reads the cut day from the finer tiers, still exact.
            let (cut_from, cut_to) = (start + 5 * HOUR + 17 * 60_000, mid + 3 * HOUR);
            let cut = assert_rollups_match_raw(&store, "acme", cut_from, cut_to).await;
            assert_summary(&cut, &expected_summary(&batch, "acme", cut_from, cut_to));
        },
    )
    .await;
}

/// Each writer finds what the other wrote of a GPU: the frontier that lets a write skip its
/// lookups is read from the store, not remembered by the process. Redelivered samples are
/// duplicates, a new seq over stored time is refused, and only a sample beyond both is new.
#[tokio::test]
async fn a_second_writer_decides_against_what_the_first_stored() {
    with_server(
        "a_second_writer_decides_against_what_the_first_stored",
        |url, dbs| async move {
            let (first, db) = fresh_store(&url, &dbs).await;
            seed(&first).await;
            let batch = usage_run("acme", "i-a", "GPU-A1", 1.2, 0, T0, 60_000, 30, 0);
            let want = batch.iter().map(|s| s.sample.energy.0).sum::<u64>();
            assert_eq!(first.write_samples(&batch).await.unwrap().inserted, 30);
            let end = batch.last().unwrap().sample.end.0;
            let seq = batch.last().unwrap().sample.seq;

            let second = ClickHouseStore::connect(&url, &db).await.unwrap();
            let out = second.write_samples(&batch).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (0, 30), "{out:?}");
            let over = enrich(
                sample("GPU-A1", "i-a", seq + 1, end - 30_000, end + 30_000, 1_000),
                "acme",
            );
            let out = second.write_samples(&[over]).await.unwrap();
            assert_eq!((out.inserted, out.refused.len()), (0, 1), "{out:?}");
            let after = enrich(
                sample("GPU-A1", "i-a", seq + 1, end, end + 60_000, 1_000),
                "acme",
            );
            assert_eq!(
                second
                    .write_samples(std::slice::from_ref(&after))
                    .await
                    .unwrap()
                    .inserted,
                1
            );
            // And the first, which saw the GPU before the second wrote, finds it stored.
            let out = first.write_samples(&[after]).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (0, 1), "{out:?}");
            assert_eq!(total(&intervals(&first, "acme", "i-a").await), want + 1_000);
        },
    )
    .await;
}

/// The SQL hour of a bucket is the floor, before 1970 too, as in Rust.
#[tokio::test]
async fn summaries_align_hours_before_1970_too() {
    with_server(
        "summaries_align_hours_before_1970_too",
        |url, dbs| async move {
            let (store, _) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            let start = -3 * HOUR - 7 * 60_000;
            let batch = usage_run("acme", "i-a", "GPU-A1", 1.2, 0, start, 90_000, 200, 0);
            store.write_samples(&batch).await.unwrap();
            store
                .refresh_rollups(UnixMillis(-10 * HOUR), UnixMillis(10 * HOUR))
                .await
                .unwrap();
            for (from, to) in [(i64::MIN, i64::MAX), (-2 * HOUR - 1, HOUR + 1)] {
                let s = assert_rollups_match_raw(&store, "acme", from, to).await;
                assert_summary(&s, &expected_summary(&batch, "acme", from, to));
            }
            let s = summary_by(&store, "acme", -2 * HOUR, HOUR, SummaryPath::Auto).await;
            assert_eq!(s.rollup_instance_hours, 3);
        },
    )
    .await;
}

/// Every tenant's facility energy per region and hour over `[from, to)` read by `path`, as
/// `(region, hour, kWh)`.
async fn region_hours(
    store: &ClickHouseStore,
    regions: &[&str],
    (from, to): (i64, i64),
    path: SummaryPath,
) -> Vec<(String, i64, f64)> {
    let regions: Vec<RegionId> = regions.iter().map(|r| RegionId::from(*r)).collect();
    store
        .region_hourly_facility_energy_by(&regions, (UnixMillis(from), UnixMillis(to)), path)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.region.0, e.hour.0, e.facility_kwh))
        .collect()
}

fn assert_region_hours_match(got: &[(String, i64, f64)], want: &[(String, i64, f64)], what: &str) {
    let keys = |v: &[(String, i64, f64)]| {
        v.iter()
            .map(|(r, h, _)| (r.clone(), *h))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(got), keys(want), "{what}");
    for ((r, h, g), (_, _, w)) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-9 * w.abs(),
            "{what}: {r} {h}: {g} kWh, want {w}"
        );
    }
}

/// Facility energy per region and hour, served from hourly rollups where they are fresh and
/// in one region, equals the 5-minute data's and a hand computation: every tenant counted,
/// ragged edges, a stale hour, an hour of an instance in two regions; and it does come from
/// the rollups (a tampered rollup row shows).
#[tokio::test]
async fn region_hourly_energy_from_rollups_equals_raw_data() {
    with_server(
        "region_hourly_energy_from_rollups_equals_raw_data",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            // Four hours from h0 of i-a (acme) and i-b (globex), a sample per bucket but one
            // of i-a's second hour, which comes late; the second half of i-a's third hour in
            // PJM.
            let region_of = |inst: &str, start: i64| {
                let moved = h0() + 2 * HOUR + 30 * 60_000..h0() + 3 * HOUR;
                if inst == "i-a" && moved.contains(&start) {
                    "PJM"
                } else {
                    "CAISO_NORTH"
                }
            };
            let one = |gpu: &str, inst: &str, tenant: &str, seq: u64, start: i64, mj: u64| {
                let s = sample(gpu, inst, seq, start, start + BUCKET_MS, mj);
                conformance::enrich_in(s, tenant, region_of(inst, start), &|b| {
                    Some(conformance::intensity_for(b))
                })
            };
            let mut batch = Vec::new();
            for (gpu, inst, tenant) in [("GPU-A1", "i-a", "acme"), ("GPU-B1", "i-b", "globex")] {
                for k in 0..48u64 {
                    let start = h0() + k as i64 * BUCKET_MS;
                    batch.push(one(gpu, inst, tenant, k, start, 1_000_000 + 7_919 * k));
                }
            }
            let late = batch.remove(16);
            store.write_samples(&batch).await.unwrap();
            store
                .refresh_rollups(UnixMillis(h0()), UnixMillis(h0() + 4 * HOUR))
                .await
                .unwrap();
            let rolled = count(&url, &db, "SELECT count() FROM rollup_hourly FINAL").await;
            assert_eq!(rolled, 8, "two instances × four hours rolled up");
            // The late sample: i-a's second hour is stale now, its rollup short of it.
            store
                .write_samples(std::slice::from_ref(&late))
                .await
                .unwrap();
            batch.push(late);

            let by_hand = |regions: &[&str], (from, to): (i64, i64)| {
                let mut sums: std::collections::BTreeMap<(String, i64), f64> = Default::default();
                for es in &batch {
                    let start = es.sample.start.0;
                    if (from..to).contains(&start) && regions.contains(&es.region.as_str()) {
                        let hour = start.div_euclid(HOUR) * HOUR;
                        *sums.entry((es.region.0.clone(), hour)).or_default() +=
                            es.sample.energy.0 as f64 / 3_600_000_000.0 * 1.2;
                    }
                }
                sums.into_iter()
                    .map(|((r, h), k)| (r, h, k))
                    .collect::<Vec<_>>()
            };
            let ranges = [
                (h0(), h0() + 4 * HOUR),
                (h0() + 7 * 60_000, h0() + 4 * HOUR - 13 * 60_000),
                (i64::MIN, i64::MAX),
            ];
            for regions in [&["CAISO_NORTH", "PJM"][..], &["PJM"], &["NOWHERE"]] {
                for range in ranges {
                    let what = format!("{regions:?} over {range:?}");
                    let auto = region_hours(&store, regions, range, SummaryPath::Auto).await;
                    let raw = region_hours(&store, regions, range, SummaryPath::Raw).await;
                    assert_region_hours_match(&auto, &raw, &what);
                    assert_region_hours_match(&auto, &by_hand(regions, range), &what);
                }
            }
            assert_eq!(by_hand(&["CAISO_NORTH", "PJM"], ranges[0]).len(), 5);

            // i-b's first hour doubled in its rollup row only: read from the rollup, it shows.
            let columns = "tenant, instance_id, hour_ms, gpu_uuid, writes_seen, gpu_intervals, \
                energy_mj, energy_float, estimated_mj, covered_ms, samples, power_max_mw, \
                facility_kwh, it_co2e_g, facility_co2e_g, weighted_intensity, intensity_sum, \
                energy_with_intensity_mj, missing_energy_mj, intervals_actual, \
                intervals_forecast, intervals_fallback, intervals_missing, intervals_replayed, \
                intervals_unknown, region, regions";
            let doubled = columns.replace("facility_kwh,", "facility_kwh * 2,");
            raw_client(&url)
                .with_database(&db)
                .query(&format!(
                    "INSERT INTO rollup_hourly ({columns}) SELECT {doubled} \
                     FROM rollup_hourly FINAL WHERE instance_id = 'i-b' AND hour_ms = {}",
                    h0()
                ))
                .execute()
                .await
                .unwrap();
            let caiso = ["CAISO_NORTH"];
            let auto = region_hours(&store, &caiso, ranges[0], SummaryPath::Auto).await;
            let raw = region_hours(&store, &caiso, ranges[0], SummaryPath::Raw).await;
            assert_region_hours_match(&raw, &by_hand(&caiso, ranges[0]), "raw");
            let i_b_first: f64 = batch[47..59]
                .iter()
                .map(|es| es.sample.energy.0 as f64 / 3_600_000_000.0 * 1.2)
                .sum();
            assert_eq!((&auto[0].0, auto[0].1), (&raw[0].0, raw[0].1));
            assert!(
                (auto[0].2 - raw[0].2 - i_b_first).abs() <= 1e-9 * raw[0].2,
                "{auto:?} against {raw:?}"
            );
        },
    )
    .await;
}

/// `SHOW CREATE TABLE table` as the server prints it.
async fn create_statement(url: &str, db: &str, table: &str) -> String {
    raw_client(url)
        .with_database(db)
        .query(&format!("SHOW CREATE TABLE {table}"))
        .fetch_one::<String>()
        .await
        .unwrap()
}

/// The schema takes the dialect of the server it is on: `LowCardinality` strings and codecs,
/// fsync of inserted parts and the quarantine's TTL on a modern server; none of them, and a
/// clear refusal of fsync, on 18.16.
#[tokio::test]
async fn the_schema_takes_the_servers_dialect() {
    with_server(
        "the_schema_takes_the_servers_dialect",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            let modern = store.is_modern();
            let shares = create_statement(&url, &db, "shares").await;
            assert_eq!(
                shares.contains("LowCardinality(String)"),
                modern,
                "{shares}"
            );
            assert_eq!(shares.contains("CODEC(Delta"), modern, "{shares}");

            let retention = wattprint_store::QuarantineRetention {
                days: 30,
                max_per_host: None,
            };
            store
                .prune_quarantine(&retention, UnixMillis(T0))
                .await
                .unwrap();
            store
                .prune_samples(
                    &wattprint_store::SampleRetention { days: 40 },
                    UnixMillis::now(),
                )
                .await
                .unwrap();
            for table in ["samples", "gpu_spans"] {
                let created = create_statement(&url, &db, table).await;
                assert_eq!(
                    created.contains("TTL toDateTime(intDiv(end_ms, 1000)) + toIntervalDay(40)"),
                    modern,
                    "{created}"
                );
            }
            let quarantine = create_statement(&url, &db, "quarantine").await;
            assert_eq!(
                quarantine
                    .contains("TTL toDateTime(intDiv(received_at_ms, 1000)) + toIntervalDay(30)"),
                modern,
                "{quarantine}"
            );

            let mut fsync = wattprint_store::clickhouse::ClickHouseSettings::new(&url, &db);
            fsync.durability.fsync_after_insert = Some(true);
            match ClickHouseStore::connect_with(&fsync).await {
                Ok(_) => {
                    assert!(modern, "fsync accepted by {}", store.server_version());
                    let samples = create_statement(&url, &db, "samples").await;
                    assert!(samples.contains("fsync_after_insert = 1"), "{samples}");
                }
                Err(e) => assert!(
                    !modern && e.to_string().contains("needs ClickHouse 23.8 or later"),
                    "{e}"
                ),
            }
        },
    )
    .await;
}

/// The shares' mutations of `db` are all applied.
async fn wait_for_mutations(url: &str, db: &str) {
    for _ in 0..200 {
        let pending = count(
            url,
            db,
            &format!(
                "SELECT count() FROM system.mutations WHERE database = '{db}' AND is_done = 0"
            ),
        )
        .await;
        if pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("mutations of {db} still running");
}

/// Whole days of an instance's intervals and hourly usage are served from memory while nothing
/// is written into them, and read again once something is (a late sample): a store with an
/// empty cache then reads the same rows. Changes made behind the store's back (raw mutations
/// of shares and rollups, which write no count) show that the cache really serves; another
/// tenant still gets `NotFound`.
#[tokio::test]
async fn cached_days_are_read_again_once_written_to() {
    with_server(
        "cached_days_are_read_again_once_written_to",
        |url, dbs| async move {
            let (store, db) = fresh_store(&url, &dbs).await;
            seed(&store).await;
            const DAY: i64 = 86_400_000;
            let d0 = T0 - T0.rem_euclid(DAY) + DAY;
            // A minute's sample every half hour, from 6 h before day 0 to 6 h after day 3.
            let batch: Vec<_> = (0u64..)
                .map(|k| (k, d0 - 6 * HOUR + k as i64 * HOUR / 2))
                .take_while(|(_, start)| *start < d0 + 3 * DAY + 6 * HOUR)
                .map(|(k, start)| {
                    let s = sample("GPU-A1", "i-a", k + 1, start, start + 60_000, 1_000 + k);
                    enrich(s, "acme")
                })
                .collect();
            store.write_samples(&batch).await.unwrap();
            let (from, to) = (
                UnixMillis(d0 - 3 * HOUR),
                UnixMillis(d0 + 3 * DAY + 3 * HOUR),
            );
            let (acme, a) = (conformance::scope("acme"), InstanceId::from("i-a"));
            let read = |s: ClickHouseStore| {
                let (acme, a) = (acme.clone(), a.clone());
                async move { s.instance_intervals(&acme, &a, from, to).await.unwrap() }
            };
            let uncached =
                || async { read(ClickHouseStore::connect(&url, &db).await.unwrap()).await };
            let hours = |s: ClickHouseStore| {
                let (acme, a) = (acme.clone(), a.clone());
                async move { s.instance_hourly_usage(&acme, &a, from, to).await.unwrap() }
            };
            let uncached_hours =
                || async { hours(ClickHouseStore::connect(&url, &db).await.unwrap()).await };

            let first = read(store.clone()).await;
            assert_eq!(first, uncached().await);
            assert_eq!(first.len(), 2 * (3 * 24 + 6));
            assert_eq!(first, read(store.clone()).await, "a second read differs");
            let first_hours = hours(store.clone()).await;
            assert_eq!(first_hours, uncached_hours().await);
            assert_eq!(first_hours.len(), 3 * 24 + 6);
            assert_eq!(first_hours, hours(store.clone()).await);

            // Behind the store's back: day 1's energy changes, its write count does not.
            for (table, time) in [("shares", "bucket_ms"), ("rollup_hourly", "hour_ms")] {
                raw_client(&url)
                    .with_database(&db)
                    .query(&format!(
                        "ALTER TABLE {table} UPDATE energy_mj = energy_mj + 7 \
                         WHERE {time} >= ? AND {time} < ?"
                    ))
                    .bind(d0 + DAY)
                    .bind(d0 + 2 * DAY)
                    .execute()
                    .await
                    .unwrap();
            }
            wait_for_mutations(&url, &db).await;
            let energy = |h: &[wattprint_store::GpuHourUsage]| -> u64 {
                h.iter().map(|h| h.totals.energy.0).sum()
            };
            assert_eq!(
                energy(&uncached_hours().await),
                energy(&first_hours) + 7 * 24,
                "the rollups' mutation did not apply"
            );
            assert_eq!(
                hours(store.clone()).await,
                first_hours,
                "hours not served from memory"
            );
            let tampered = uncached().await;
            assert_eq!(
                total(&tampered),
                total(&first) + 7 * 48,
                "the mutation did not apply"
            );
            assert_eq!(
                read(store.clone()).await,
                first,
                "day 1 was not served from memory"
            );

            // A late sample in day 1, written through the store: the day is read again.
            let late = enrich(
                sample(
                    "GPU-A1",
                    "i-a",
                    10_000,
                    d0 + DAY + 10 * 60_000,
                    d0 + DAY + 11 * 60_000,
                    555,
                ),
                "acme",
            );
            assert_eq!(store.write_samples(&[late]).await.unwrap().inserted, 1);
            let after = read(store.clone()).await;
            assert_eq!(after, uncached().await);
            assert_eq!(total(&after), total(&first) + 7 * 48 + 555);
            let after_hours = hours(store.clone()).await;
            assert_eq!(after_hours, uncached_hours().await);
            assert_ne!(after_hours, first_hours);

            let globex = conformance::scope("globex");
            match store.instance_intervals(&globex, &a, from, to).await {
                Err(StoreError::NotFound(_)) => {}
                other => panic!("another tenant read cached days: {other:?}"),
            }
            match store.instance_hourly_usage(&globex, &a, from, to).await {
                Err(StoreError::NotFound(_)) => {}
                other => panic!("another tenant read cached hours: {other:?}"),
            }
        },
    )
    .await;
}
