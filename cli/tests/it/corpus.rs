//! The broken configuration files kept in `tests/corpus/config/`: each is refused with a
//! message that names what is wrong; none panics, none is half-applied.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::Path;
use wattprint_cli::config::RawConfig;

#[test]
fn every_corpus_config_is_refused_with_a_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{}", files.len());
    let env = BTreeMap::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = std::panic::catch_unwind(|| {
            wattprint_runtime::load_config::<RawConfig>(Some(&path), &env, "WATTPRINT_")
                .map_err(|e| e.to_string())
                .and_then(|raw| raw.validate().map(|_| ()).map_err(|e| e.to_string()))
        });
        let message = match result {
            Ok(Err(message)) => message,
            Ok(Ok(())) => panic!("{name} was accepted"),
            Err(_) => panic!("{name} panicked"),
        };
        // The message says what: a key, a value or the file, not just "invalid".
        assert!(message.len() > 20, "{name}: {message:?}");
        eprintln!("{name}: {message}");
    }
}
