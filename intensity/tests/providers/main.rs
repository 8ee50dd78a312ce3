//! The providers against local HTTP servers answering in their documented formats (the real
//! APIs cannot be reached from the test machines), and the file provider, all on the real data
//! shipped in `data/`.

#![allow(clippy::unwrap_used)]

mod common;
mod electricitymaps;
mod files;
mod watttime;
