//! Process plumbing shared by every Wattprint service: tracing setup, the shutdown signal, and
//! configuration loading (TOML file + environment overrides). No domain logic.

pub mod config;
pub mod shutdown;
pub mod telemetry;

pub use config::{load_config, ConfigError};
pub use shutdown::Shutdown;
