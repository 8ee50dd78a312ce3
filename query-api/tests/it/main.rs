//! The query API's integration tests, one binary: REST and gRPC against a real server on both
//! stores, auth and isolation, OpenAPI, what-ifs, restatements and hostile input.

mod auth;
mod common;
mod connections;
mod corpus;
mod grpc;
mod hostile;
mod isolation;
mod openapi;
mod restatements;
mod security;
mod series;
mod series_rollups;
mod serve;
mod summary;
mod summary_faults;
mod unauthenticated;
mod whatif;
mod workloads;
