//! Behaviour of the ClickHouse store against a real server: the shared conformance suite, and
//! what only ClickHouse has (migrations on the server, duplicates collapsed by `FINAL`, a crash
//! between the shares and samples inserts, racing writers).
//!
//! The server comes from `WPTEST_CLICKHOUSE_URL` (`source scripts/servers.sh start`). Each
//! test works in a database of its own, `wp_test_<random hex>`, dropped at the end. Without the
//! variable the tests say so and pass, unless `CI` or `WPTEST_REQUIRE_SERVERS` is set.

// Helpers here are not `#[test]` functions, so clippy's test exemption does not reach them.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use conformance::{enrich, instance, intervals, sample, seed, total, T0};
use std::future::Future;
use std::sync::Arc;
use wattprint_core::intensity::IntensityKind;
use wattprint_core::{GramsPerKwh, BUCKET_MS};
use wattprint_store::{ClickHouseStore, EnrichedSample, Store, StoreError};

/// The server to test against, or None (after saying so) when the test should not run.
fn server_url(test: &str) -> Option<String> {
    match std::env::var("WPTEST_CLICKHOUSE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some();
            assert!(
                !required,
                "WPTEST_CLICKHOUSE_URL is not set, and CI/WPTEST_REQUIRE_SERVERS requires \
                 the real ClickHouse server: it is set by scripts/test-all.sh \
                 (or run `source scripts/servers.sh start`)"
            );
            eprintln!(
                "clickhouse::{test} was NOT run: WPTEST_CLICKHOUSE_URL is not set \
                 (source scripts/servers.sh start)"
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
    (ClickHouseStore::connect(url, &db).await.unwrap(), db)
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
            assert_eq!(applied.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);

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
                for _ in 0..2 {
                    raw.query(&format!("INSERT INTO {table} SELECT * FROM {table}"))
                        .execute()
                        .await
                        .unwrap();
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
            let out = store.write_samples(&batch).await.unwrap();
            assert_eq!((out.inserted, out.duplicates), (0, batch.len() as u32));
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

            // The crashed store: the same shares, and no samples.
            let (crashed, db) = fresh_store(&url, &dbs).await;
            seed(&crashed).await;
            raw_client(&url)
                .query(&format!(
                    "INSERT INTO {db}.shares SELECT * FROM {ref_db}.shares"
                ))
                .execute()
                .await
                .unwrap();
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
            for table in ["shares", "samples"] {
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
