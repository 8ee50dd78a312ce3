//! End-to-end tests across processes, one binary: the embedded and distributed deployments,
//! their faults, the TLS agent link, the Python SDK and the API fuzzer.

mod agent_link_tls;
mod api_fuzz;
#[path = "../../../client/tests/common/mod.rs"]
mod common;
mod distributed_e2e;
mod distributed_faults;
mod distributed_metrics;
mod embedded_e2e;
mod loadgen;
mod python_sdk;
mod statements;
