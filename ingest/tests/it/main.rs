//! Ingest's integration tests, one binary: the gateway's corpus and TLS, the intensity join and
//! poller, the ledger's adversarial and property tests, and gateway → Kafka → enricher.

mod corpus;
mod forged;
mod gateway_tls;
mod intensity_join;
mod intensity_poll;
mod kafka;
mod ledger;
