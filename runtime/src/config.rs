//! Configuration loading: a TOML file, then environment overrides, then typed deserialisation.
//!
//! An override `WATTPRINT_QUERY_API__LISTEN=0.0.0.0:8080` sets `query_api.listen`: the prefix is
//! stripped, `__` separates levels, names are lower-cased. A value that parses as a TOML value
//! (number, bool, array) is taken as one, anything else as a string. The environment is passed in
//! as a map so tests need no global state.

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why configuration could not be loaded. Each variant names the file or variable at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config {origin}: {message}")]
    Invalid {
        /// File name or "environment".
        origin: String,
        /// What is wrong, with the key when known.
        message: String,
    },
    /// An override targets a key whose parent is not a table.
    #[error("environment variable {var} cannot override {key}: {reason}")]
    BadOverride {
        /// Variable name.
        var: String,
        /// Dotted key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Loads `T` from an optional TOML file plus overrides from `env` variables starting with
/// `prefix` (e.g. `WATTPRINT_`).
pub fn load_config<T: DeserializeOwned>(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
    prefix: &str,
) -> Result<T, ConfigError> {
    let (mut root, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            let value: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                origin: p.display().to_string(),
                message: e.to_string(),
            })?;
            (value, p.display().to_string())
        }
        None => (toml::Table::new(), "(defaults)".to_owned()),
    };
    let mut overridden = false;
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(prefix) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            continue;
        }
        apply_override(&mut root, &keys, raw).map_err(|reason| ConfigError::BadOverride {
            var: var.clone(),
            key: keys.join("."),
            reason,
        })?;
        overridden = true;
    }
    let origin = if overridden {
        format!("{origin} with environment overrides")
    } else {
        origin
    };
    T::deserialize(toml::Value::Table(root)).map_err(|e| ConfigError::Invalid {
        origin,
        message: e.to_string(),
    })
}

fn apply_override(root: &mut toml::Table, keys: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut table = root;
    for k in parents {
        let entry = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{k} is not a table"))?;
    }
    table.insert(last.clone(), parse_scalar(raw));
    Ok(())
}

/// Parses `raw` as a TOML value if it is one (`8080`, `true`, `[1, 2]`), else as a string.
fn parse_scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        api: Api,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Api {
        listen: Option<String>,
        port: Option<u16>,
        debug: Option<bool>,
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn file_values_are_overridden_by_typed_environment_values() {
        let dir = std::env::temp_dir().join(format!("wp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "name = \"a\"\n[api]\nport = 1\n").unwrap();
        let cfg: Cfg = load_config(
            Some(&path),
            &env(&[
                ("WP_API__PORT", "8080"),
                ("WP_API__DEBUG", "true"),
                ("WP_API__LISTEN", "0.0.0.0:1"),
                ("OTHER", "x"),
            ]),
            "WP_",
        )
        .unwrap();
        assert_eq!(
            cfg.api,
            Api {
                listen: Some("0.0.0.0:1".into()),
                port: Some(8080),
                debug: Some(true)
            }
        );
        assert_eq!(cfg.name.as_deref(), Some("a"));
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_culprit() {
        let err = load_config::<Cfg>(None, &env(&[("WP_API__PROT", "1")]), "WP_").unwrap_err();
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
        let err = load_config::<Cfg>(None, &env(&[("WP_API__PORT", "99999")]), "WP_").unwrap_err();
        assert!(err.to_string().contains("environment"), "{err}");
        let err = load_config::<Cfg>(None, &env(&[("WP_NAME__X", "1"), ("WP_NAME", "s")]), "WP_");
        assert!(err.is_err());
        let missing = load_config::<Cfg>(Some(Path::new("/nonexistent/wp.toml")), &env(&[]), "WP_");
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}
