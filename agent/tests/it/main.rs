//! The agent's integration tests, one binary (each module one area): replayed and fake NVML,
//! attribution, spool, streaming to a real gateway, TLS, kill and restart.

mod attribution;
mod clocks;
mod common;
mod gateway_tls;
mod kill;
mod libvirt;
mod metadata;
mod nvml;
mod replay;
mod resolver;
mod spool;
mod streaming;
mod tls;
