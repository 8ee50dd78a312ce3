//! The error every crate's `config.rs` returns: one message naming the offending key
//! (`agent.replay.gpus = 0 must be 1..=4096`). It exists so that each crate can validate its
//! own section of the `wattprint` file without depending on the CLI that composes them; the
//! message is the whole contract, the CLI prefixes it with `config: `.

use thiserror::Error;

/// A configuration value is invalid; the message names the key and the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// An [`InvalidConfig`] with this message.
pub fn invalid(msg: impl Into<String>) -> InvalidConfig {
    InvalidConfig(msg.into())
}
