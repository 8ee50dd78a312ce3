//! Ingest: the gateway (gRPC sample stream → validated batches on the bus) and the enricher
//! (bus → 5-minute intervals joined with grid intensity → store).

pub mod config;
pub mod conn_limit;
pub mod enricher;
pub mod gateway;
pub mod hosts;
pub mod intensity_poll;
pub mod inventory;
pub mod log_throttle;
mod metrics;
pub mod quarantine;

pub use enricher::Enricher;
pub use gateway::{Gateway, GatewayLimits};
pub use inventory::InventoryIndex;
