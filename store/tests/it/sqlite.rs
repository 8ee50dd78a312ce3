//! Behaviour of the SQLite store through the `Store` trait: the shared conformance suite, and
//! what only a file-backed store has (reopening, migrations on disk).

// Helpers here are not `#[test]` functions, so clippy's test exemption does not reach them.
#![allow(clippy::unwrap_used)]

use crate::conformance;

use conformance::{enrich, instance, intervals, sample, scope, total, workload, T0};
use std::future::Future;
use std::sync::Arc;
use wattprint_core::BUCKET_MS;
use wattprint_store::{SqliteStore, Store};

/// Runs a conformance behaviour on a fresh in-memory store.
async fn in_memory<F, Fut>(_name: &str, behaviour: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    behaviour(Arc::new(SqliteStore::open_in_memory().unwrap())).await;
}

conformance_tests!(in_memory);

/// The same suite on a file, where reads run on read-only connections beside the writer.
mod on_file {
    use super::*;

    async fn on_file<F, Fut>(_name: &str, behaviour: F)
    where
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("wattprint.db")).unwrap();
        behaviour(Arc::new(store)).await;
    }

    conformance_tests!(on_file);
}

#[tokio::test]
async fn reopening_a_file_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wattprint.db");
    let migrations = |path: &std::path::Path| -> Vec<(i64, i64)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT version, applied_at_ms FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .upsert_inventory(&[instance("acme", "i-a", &["GPU-A1"])])
            .await
            .unwrap();
        store
            .write_samples(&[enrich(
                sample("GPU-A1", "i-a", 1, T0, T0 + BUCKET_MS + 10, 123_457),
                "acme",
            )])
            .await
            .unwrap();
        store
            .create_workload(&scope("acme"), &workload("run", &["i-a"]))
            .await
            .unwrap();
    }
    let applied = migrations(&path);
    assert!(!applied.is_empty());
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(migrations(&path), applied, "migrations were re-applied");
    let rows = intervals(&store, "acme", "i-a").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(total(&rows), 123_457);
    assert_eq!(store.list_workloads(&scope("acme")).await.unwrap().len(), 1);
    assert_eq!(
        store.inventory().await.unwrap(),
        vec![instance("acme", "i-a", &["GPU-A1"])]
    );
    // Redelivery after a restart is still recognised.
    let again = enrich(
        sample("GPU-A1", "i-a", 1, T0, T0 + BUCKET_MS + 10, 123_457),
        "acme",
    );
    assert_eq!(store.write_samples(&[again]).await.unwrap().duplicates, 1);
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (999, 0)",
            [],
        )
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_file_is_private_and_written_through() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wattprint.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .upsert_inventory(&[instance("acme", "i-a", &["GPU-A1"])])
        .await
        .unwrap();
    for file in [path.clone(), dir.path().join("wattprint.db-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    // synchronous = FULL (2): an acked write is on disk, not only in the OS cache.
    assert_eq!(store.synchronous_level().await.unwrap(), 2);
}
