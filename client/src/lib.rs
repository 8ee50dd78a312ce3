//! Typed async client for the Wattprint tenant query API: one method per endpoint, typed
//! request and response bodies (the server's JSON names), and server refusals as
//! [`Error::Api`] carrying the RFC 7807 problem document.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wattprint_client::Error> {
//! let client = wattprint_client::Client::new("http://127.0.0.1:8080", "<token>")?;
//! for instance in client.all_instances(None).await? {
//!     println!("{} in {}", instance.instance_id, instance.region);
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod client;
mod error;
mod types;

pub use client::{Client, ENV_TOKEN, ENV_URL};
pub use error::{Error, Problem};
pub use types::*;
