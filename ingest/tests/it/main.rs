//! Ingest's integration tests, one binary: the gateway's corpus and TLS, the intensity join and
//! poller, the ledger's adversarial and property tests, a flood of unknown GPUs on both buses,
//! and gateway → Kafka → enricher.

mod common;
mod corpus;
mod flood;
mod forged;
mod gateway_limits;
mod gateway_tls;
mod guest_credentials;
mod intensity_join;
mod intensity_poll;
mod inventory_in_time;
mod kafka;
mod ledger;
