//! The query API's wire types, once: the REST views (response bodies), request bodies, query
//! parameters and the problem document, with their serde form and OpenAPI schemas.
//!
//! The server (`wattprint-query-api`) renders these and builds its OpenAPI document from their
//! `ToSchema` derives; the Rust client (`wattprint-client`) decodes the same types, so the two
//! cannot drift. Invariant: the serde attributes here *are* the JSON wire format — changing one
//! changes what the server sends (the query API's OpenAPI and REST tests pin it). Deserializing
//! is lenient where an older server may omit a field (`#[serde(default)]`); serializing is not
//! changed by that. Light on purpose: serde, utoipa, chrono and core's value types only.

#![forbid(unsafe_code)]

pub mod evidence;
pub mod inventory;
pub mod operator;
pub mod params;
pub mod problem;
pub mod restatements;
pub mod schema;
pub mod series;
pub mod statements;
pub mod summary;
pub mod time;
pub mod whatif;
pub mod workloads;

pub use evidence::*;
pub use inventory::*;
pub use operator::*;
pub use params::*;
pub use problem::*;
pub use restatements::*;
pub use series::*;
pub use statements::*;
pub use summary::*;
pub use time::{InstantInput, Step};
pub use whatif::*;
pub use workloads::*;

/// Core's footprint types the views flatten in, re-exported for the client.
pub use wattprint_core::sci::{Footprint, FootprintProvenance};
