//! The store's integration tests, one binary: the conformance suite run on SQLite and on
//! ClickHouse, and what each backend has of its own.

#[macro_use]
mod conformance;
mod clickhouse;
mod secure_clickhouse;
mod sqlite;
