//! The store's section of the `wattprint` file (`[store]`): the serde type as written and
//! [`RawStore::validate`], which applies the defaults and bounds and returns the
//! [`StoreSettings`] the store is opened with. Defaults live here; nothing is opened.

use crate::SqliteSync;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use wattprint_core::config::{invalid, InvalidConfig};

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite` (default: `<data_dir>/wattprint.db`) or `clickhouse`.
    pub kind: Option<String>,
    /// ClickHouse HTTP URL (default `http://127.0.0.1:8123`).
    pub url: Option<String>,
    /// ClickHouse database (default `wattprint`), created if absent.
    pub database: Option<String>,
    /// SQLite durability of acknowledged writes: `full` (default: on disk before the ack) or
    /// `normal` (survives a crash of the process, not of the machine).
    pub sqlite_synchronous: Option<String>,
}

/// Where data is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// An SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Durability of acknowledged writes.
        synchronous: SqliteSync,
    },
    /// A ClickHouse server.
    ClickHouse {
        /// HTTP URL.
        url: String,
        /// Database.
        database: String,
    },
}

impl RawStore {
    /// Validates `[store]`; the SQLite file goes under `data_dir`.
    pub fn validate(&self, data_dir: &Path) -> Result<StoreSettings, InvalidConfig> {
        let raw = self;
        match raw.kind.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if raw.url.is_some() || raw.database.is_some() {
                    return Err(invalid(
                        "store.url and store.database apply to store.kind = \"clickhouse\" only",
                    ));
                }
                let synchronous = match raw.sqlite_synchronous.as_deref() {
                    None | Some("full") => SqliteSync::Full,
                    Some("normal") => SqliteSync::Normal,
                    Some(other) => {
                        return Err(invalid(format!(
                            "store.sqlite_synchronous = {other:?} must be \"full\" or \"normal\""
                        )))
                    }
                };
                Ok(StoreSettings::Sqlite {
                    path: data_dir.join("wattprint.db"),
                    synchronous,
                })
            }
            "clickhouse" => {
                if raw.sqlite_synchronous.is_some() {
                    return Err(invalid(
                        "store.sqlite_synchronous applies to store.kind = \"sqlite\" only",
                    ));
                }
                let url = raw
                    .url
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:8123".into());
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(format!(
                        "store.url = {url:?} must be an http:// or https:// URL"
                    )));
                }
                Ok(StoreSettings::ClickHouse {
                    url,
                    database: raw.database.clone().unwrap_or_else(|| "wattprint".into()),
                })
            }
            other => Err(invalid(format!(
                "store.kind = {other:?} must be \"sqlite\" or \"clickhouse\""
            ))),
        }
    }
}
