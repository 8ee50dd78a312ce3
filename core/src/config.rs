//! The error every crate's `config.rs` returns: one message naming the offending key
//! (`agent.replay.gpus = 0 must be 1..=16384`). It exists so that each crate can validate its
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

/// A credential from the configuration (a password): never printed. `Debug` and `Display`
/// show `[redacted]`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads the secret named by `<key>_file` (its content, one trailing newline trimmed) or by
/// `<key>_env` (an environment variable, read through `env`), at most one of the two; `None`
/// when neither is set. `key` is the config key without the suffix (`bus.sasl_password`),
/// used in the messages, which never contain the secret.
///
/// This is the one place a config section reads a file or the environment for a credential,
/// so that the secret itself never has to be written in the config file.
pub fn read_secret(
    key: &str,
    file: Option<&std::path::Path>,
    env_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, InvalidConfig> {
    let value = match (file, env_name) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "{key}_file and {key}_env are exclusive: set one"
            )))
        }
        (None, None) => return Ok(None),
        (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
            invalid(format!(
                "{key}_file = {}: cannot read it: {e}",
                path.display()
            ))
        })?,
        (None, Some(name)) => env(name).ok_or_else(|| {
            invalid(format!(
                "{key}_env = {name:?}: the environment variable is not set"
            ))
        })?,
    };
    let value = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(&value);
    if value.is_empty() {
        return Err(invalid(format!("{key}: the secret is empty")));
    }
    Ok(Some(Secret::new(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secrets_come_from_one_file_or_one_variable() {
        let env = |name: &str| (name == "PW").then(|| "from-env".to_owned());
        let dir = std::env::temp_dir().join(format!("wp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let read = |f: Option<&std::path::Path>, e: Option<&str>| read_secret("x.pw", f, e, &env);
        assert_eq!(
            read(Some(&file), None).unwrap().unwrap().expose(),
            "from-file"
        );
        assert_eq!(
            read(None, Some("PW")).unwrap().unwrap().expose(),
            "from-env"
        );
        assert_eq!(read(None, None).unwrap(), None);
        let both = read(Some(&file), Some("PW")).unwrap_err().to_string();
        assert!(both.contains("exclusive"), "{both}");
        let unset = read(None, Some("NOPE")).unwrap_err().to_string();
        assert!(unset.contains("x.pw_env = \"NOPE\""), "{unset}");
        let missing = read(Some(&dir.join("absent")), None)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("x.pw_file") && missing.contains("absent"),
            "{missing}"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(read(Some(&file), None)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
