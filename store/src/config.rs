//! The store's section of the `wattprint` file (`[store]`): the serde type as written and
//! [`RawStore::validate`], which applies the defaults and bounds and returns the
//! [`StoreSettings`] the store is opened with. Defaults live here; nothing is opened.

use crate::retention::{QuarantineRetention, DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS};
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
    /// Days a quarantined record is kept (default 30, 1 to 36500).
    pub quarantine_retention_days: Option<i64>,
    /// Most quarantined records kept per host, its newest (default: no cap).
    pub quarantine_max_per_host: Option<i64>,
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
    /// The quarantine's bounds: `store.quarantine_retention_days` (1 to
    /// [`MAX_RETENTION_DAYS`], default [`DEFAULT_RETENTION_DAYS`]) and
    /// `store.quarantine_max_per_host` (at least 1, default none).
    pub fn quarantine_retention(&self) -> Result<QuarantineRetention, InvalidConfig> {
        let days = match self.quarantine_retention_days {
            None => DEFAULT_RETENTION_DAYS,
            Some(d) => u32::try_from(d)
                .ok()
                .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
                .ok_or_else(|| {
                    invalid(format!(
                        "store.quarantine_retention_days = {d} must be a whole number of days \
                         from 1 to {MAX_RETENTION_DAYS}"
                    ))
                })?,
        };
        let max_per_host = self
            .quarantine_max_per_host
            .map(|n| {
                u64::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid(format!(
                        "store.quarantine_max_per_host = {n} must be at least 1 \
                         (leave it out for no cap)"
                    ))
                })
            })
            .transpose()?;
        Ok(QuarantineRetention { days, max_per_host })
    }

    /// Validates `[store]`; the SQLite file goes under `data_dir`.
    pub fn validate(&self, data_dir: &Path) -> Result<StoreSettings, InvalidConfig> {
        let raw = self;
        raw.quarantine_retention()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(days: Option<i64>, cap: Option<i64>) -> RawStore {
        RawStore {
            quarantine_retention_days: days,
            quarantine_max_per_host: cap,
            ..RawStore::default()
        }
    }

    #[test]
    fn quarantine_retention_defaults_to_30_days_without_a_cap() {
        let r = RawStore::default().quarantine_retention().unwrap();
        assert_eq!(r, QuarantineRetention::default());
        assert_eq!((r.days, r.max_per_host), (30, None));
        let r = with(Some(7), Some(1_000)).quarantine_retention().unwrap();
        assert_eq!((r.days, r.max_per_host), (7, Some(1_000)));
    }

    #[test]
    fn invalid_quarantine_bounds_are_refused_by_name() {
        for days in [0, -1, 36_501, i64::MAX] {
            let e = with(Some(days), None)
                .validate(Path::new("/tmp"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("store.quarantine_retention_days") && e.contains(&days.to_string()),
                "{e}"
            );
        }
        for cap in [0, -5] {
            let e = with(None, Some(cap))
                .quarantine_retention()
                .unwrap_err()
                .to_string();
            assert!(e.contains("store.quarantine_max_per_host"), "{e}");
        }
    }
}
