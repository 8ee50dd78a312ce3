//! The command line's integration tests, one binary: configuration, `wattprint up`, the agent
//! check, environment overrides, intensity commands and the corpus.

mod agent_check;
mod config;
mod corpus;
mod env;
mod intensity;
mod inventory;
mod metrics;
mod up;
