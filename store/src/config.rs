//! The store's section of the `wattprint` file (`[store]`): the serde type as written and
//! [`RawStore::validate`], which applies the defaults and bounds and returns the
//! [`StoreSettings`] the store is opened with. Defaults live here; nothing is opened.

use crate::clickhouse::{ClickHouseSettings, InsertDurability};
use crate::retention::{
    QuarantineRetention, RestatementRetention, SampleRetention, DEFAULT_RETENTION_DAYS,
    MAX_RETENTION_DAYS,
};
use crate::SqliteSync;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use wattprint_core::config::{invalid, read_secret, InvalidConfig};

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
    /// Days raw samples are kept (default 35; at least the 30-day lateness limit plus one).
    /// Their 5-minute intervals, rollups and statements are kept regardless.
    pub sample_retention_days: Option<i64>,
    /// Days restatement records are kept, by the restated interval's time (default 400).
    pub restatement_retention_days: Option<i64>,
    /// ClickHouse user (default: the server's `default`).
    pub user: Option<String>,
    /// File holding the ClickHouse password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the ClickHouse password.
    pub password_env: Option<String>,
    /// CA bundle (PEM) an `https://` ClickHouse must chain to (default: the Mozilla roots).
    pub tls_ca: Option<PathBuf>,
    /// Replicas that must hold an insert before it is acknowledged (`insert_quorum`).
    pub insert_quorum: Option<u32>,
    /// How long an insert waits for its quorum, ms (`insert_quorum_timeout`).
    pub insert_quorum_timeout_ms: Option<u64>,
    /// fsync every inserted part and its directory before the ack (ClickHouse ≥ 23.8).
    pub fsync_after_insert: Option<bool>,
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
    ClickHouse(ClickHouseSettings),
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

    /// How long raw samples are kept: `store.sample_retention_days` (from
    /// [`SampleRetention::min_days`] to [`MAX_RETENTION_DAYS`], default
    /// [`DEFAULT_SAMPLE_RETENTION_DAYS`](crate::retention::DEFAULT_SAMPLE_RETENTION_DAYS)).
    pub fn sample_retention(&self) -> Result<SampleRetention, InvalidConfig> {
        let Some(d) = self.sample_retention_days else {
            return Ok(SampleRetention::default());
        };
        let min = SampleRetention::min_days();
        u32::try_from(d)
            .ok()
            .filter(|d| (min..=MAX_RETENTION_DAYS).contains(d))
            .map(|days| SampleRetention { days })
            .ok_or_else(|| {
                invalid(format!(
                    "store.sample_retention_days = {d} must be a whole number of days from \
                     {min} (the 30-day lateness limit and a day, so a pruned sample is never \
                     taken for new) to {MAX_RETENTION_DAYS}"
                ))
            })
    }

    /// How long restatement records are kept: `store.restatement_retention_days` (from
    /// [`RestatementRetention::MIN_DAYS`] to [`MAX_RETENTION_DAYS`], default
    /// [`DEFAULT_RESTATEMENT_RETENTION_DAYS`](crate::retention::DEFAULT_RESTATEMENT_RETENTION_DAYS)).
    pub fn restatement_retention(&self) -> Result<RestatementRetention, InvalidConfig> {
        let Some(d) = self.restatement_retention_days else {
            return Ok(RestatementRetention::default());
        };
        let min = RestatementRetention::MIN_DAYS;
        u32::try_from(d)
            .ok()
            .filter(|d| (min..=MAX_RETENTION_DAYS).contains(d))
            .map(|days| RestatementRetention { days })
            .ok_or_else(|| {
                invalid(format!(
                    "store.restatement_retention_days = {d} must be a whole number of days \
                     from {min} to {MAX_RETENTION_DAYS}"
                ))
            })
    }

    /// Validates `[store]`; the SQLite file goes under `data_dir`. The password is read from
    /// its file or the process environment.
    pub fn validate(&self, data_dir: &Path) -> Result<StoreSettings, InvalidConfig> {
        self.validate_with_env(data_dir, &|name| std::env::var(name).ok())
    }

    /// Validates `[store]`, reading environment variables through `env`.
    pub fn validate_with_env(
        &self,
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StoreSettings, InvalidConfig> {
        let raw = self;
        raw.quarantine_retention()?;
        raw.sample_retention()?;
        match raw.kind.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if raw.url.is_some()
                    || raw.database.is_some()
                    || raw.user.is_some()
                    || raw.password_file.is_some()
                    || raw.password_env.is_some()
                    || raw.tls_ca.is_some()
                    || raw.insert_quorum.is_some()
                    || raw.insert_quorum_timeout_ms.is_some()
                    || raw.fsync_after_insert.is_some()
                {
                    return Err(invalid(
                        "store.url, store.database, store.user, store.password_*, store.tls_ca, \
                         store.insert_quorum* and store.fsync_after_insert apply to \
                         store.kind = \"clickhouse\" only",
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
                if raw.tls_ca.is_some() && !url.starts_with("https://") {
                    return Err(invalid(format!(
                        "store.tls_ca applies to an https:// store.url, not {url:?}"
                    )));
                }
                if url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .is_some_and(|a| a.contains('@'))
                {
                    return Err(invalid(
                        "store.url must not carry credentials: set store.user and \
                         store.password_file or store.password_env",
                    ));
                }
                if let Some(ms) = raw.insert_quorum_timeout_ms {
                    if ms == 0 || raw.insert_quorum.is_none() {
                        return Err(invalid(format!(
                            "store.insert_quorum_timeout_ms = {ms} needs store.insert_quorum and \
                             must be above 0"
                        )));
                    }
                }
                if raw.user.as_deref() == Some("") {
                    return Err(invalid("store.user is empty"));
                }
                let password = read_secret(
                    "store.password",
                    raw.password_file.as_deref(),
                    raw.password_env.as_deref(),
                    env,
                )?;
                Ok(StoreSettings::ClickHouse(ClickHouseSettings {
                    url,
                    database: raw.database.clone().unwrap_or_else(|| "wattprint".into()),
                    user: raw.user.clone(),
                    password,
                    ca_file: raw.tls_ca.clone(),
                    durability: InsertDurability {
                        insert_quorum: raw.insert_quorum,
                        insert_quorum_timeout_ms: raw.insert_quorum_timeout_ms,
                        fsync_after_insert: raw.fsync_after_insert,
                    },
                }))
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
    fn sample_retention_outlives_the_lateness_limit() {
        assert_eq!(RawStore::default().sample_retention().unwrap().days, 35);
        for bad in [0, 30, -1, 36_501] {
            let raw = RawStore {
                sample_retention_days: Some(bad),
                ..RawStore::default()
            };
            let err = raw.sample_retention().unwrap_err().to_string();
            assert!(err.contains("sample_retention_days"), "{err}");
        }
        let raw = RawStore {
            sample_retention_days: Some(31),
            ..RawStore::default()
        };
        assert_eq!(raw.sample_retention().unwrap().days, 31);
    }

    #[test]
    fn restatement_retention_is_bounded() {
        assert_eq!(
            RawStore::default().restatement_retention().unwrap().days,
            400
        );
        for bad in [0, 31, -1, 36_501] {
            let raw = RawStore {
                restatement_retention_days: Some(bad),
                ..RawStore::default()
            };
            let err = raw.restatement_retention().unwrap_err().to_string();
            assert!(err.contains("restatement_retention_days"), "{err}");
        }
        let raw = RawStore {
            restatement_retention_days: Some(32),
            ..RawStore::default()
        };
        assert_eq!(raw.restatement_retention().unwrap().days, 32);
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

    fn clickhouse(extra: &str) -> RawStore {
        toml::from_str(&format!("kind = \"clickhouse\"\n{extra}")).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        (name == "CH_PW").then(|| "s3cret".to_owned())
    }

    #[test]
    fn credentials_tls_and_durability_are_read() {
        let raw = clickhouse(
            "url = \"https://ch.example.net:8443\"\nuser = \"wp\"\npassword_env = \"CH_PW\"\n\
             tls_ca = \"/etc/wattprint/ch-ca.pem\"\ninsert_quorum = 2\n\
             insert_quorum_timeout_ms = 60000\nfsync_after_insert = true",
        );
        let StoreSettings::ClickHouse(ch) = raw.validate_with_env(Path::new("."), &env).unwrap()
        else {
            panic!("clickhouse expected");
        };
        assert_eq!(ch.user.as_deref(), Some("wp"));
        assert_eq!(ch.password.as_ref().map(|p| p.expose()), Some("s3cret"));
        assert_eq!(ch.ca_file, Some(PathBuf::from("/etc/wattprint/ch-ca.pem")));
        assert_eq!(
            ch.durability,
            InsertDurability {
                insert_quorum: Some(2),
                insert_quorum_timeout_ms: Some(60_000),
                fsync_after_insert: Some(true),
            }
        );
        assert!(!format!("{ch:?}").contains("s3cret"));
    }

    #[test]
    fn bad_settings_are_refused_by_key() {
        let cases = [
            (
                "tls_ca = \"/ca.pem\"",
                "store.tls_ca applies to an https://",
            ),
            (
                "url = \"https://u:pw@ch:8443\"",
                "must not carry credentials",
            ),
            ("insert_quorum_timeout_ms = 10", "needs store.insert_quorum"),
            ("password_env = \"UNSET\"", "store.password_env = \"UNSET\""),
            (
                "password_env = \"CH_PW\"\npassword_file = \"/pw\"",
                "exclusive",
            ),
            ("user = \"\"", "store.user is empty"),
        ];
        for (extra, expected) in cases {
            let err = clickhouse(extra)
                .validate_with_env(Path::new("."), &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let sqlite: RawStore = toml::from_str("user = \"wp\"").unwrap();
        let err = sqlite.validate(Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("store.kind = \"clickhouse\" only"), "{err}");
    }
}
