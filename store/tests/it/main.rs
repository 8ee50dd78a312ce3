//! The store's integration tests, one binary: the conformance suite run on SQLite and on
//! ClickHouse, and what each backend has of its own.

#[macro_use]
mod conformance;
mod clickhouse;
/// The same suite against ClickHouse ≥ 23.8 (`WPTEST_CLICKHOUSE_MODERN_URL`), where the schema
/// takes its modern extras (`LowCardinality`, codecs, TTL) and the SQL dialect differs.
#[path = "clickhouse.rs"]
#[allow(clippy::duplicate_mod)] // The same tests, on purpose: one copy per server.
mod clickhouse_modern;
mod secure_clickhouse;
mod sqlite;
