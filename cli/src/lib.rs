//! The `wattprint` binary's library: configuration, and the assembly of agent, gateway,
//! enricher and query API into one process (`wattprint up`) or separate ones.

pub mod backfill;
pub mod config;
pub mod health;
pub mod intensity;
pub mod inventory;
pub mod loadgen;
pub mod local_cluster;
pub mod quarantine;
pub mod roles;
