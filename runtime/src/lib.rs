//! Process plumbing shared by every Wattprint service: tracing setup, the shutdown signal,
//! configuration loading (TOML file + environment overrides) and PEM files for TLS. No domain
//! logic.

pub mod config;
pub mod metrics;
pub mod pem;
pub mod shutdown;
pub mod telemetry;

pub use config::{load_config, ConfigError};
pub use shutdown::Shutdown;
