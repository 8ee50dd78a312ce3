//! The gateway's TLS files and host registry as an operator meets them: every unreadable or
//! wrong file is refused at start with its name and what is wrong.

#![allow(clippy::unwrap_used)] // a panic is a test failure

use std::path::{Path, PathBuf};
use wattprint_ingest::gateway::{server_tls_config, GatewayTlsFiles};
use wattprint_ingest::hosts::{token_sha256_hex, HostRegistry};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A self-signed certificate for `name` and its key, PEM.
fn self_signed(name: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn err(files: &GatewayTlsFiles) -> String {
    server_tls_config(files).unwrap_err().to_string()
}

#[test]
fn bad_tls_files_are_refused_with_their_name_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = self_signed("gateway.test");
    let (_, other_key) = self_signed("other.test");
    let good = GatewayTlsFiles {
        cert: write(d, "gw.pem", &cert),
        key: write(d, "gw.key", &key),
        client_ca: Some(write(d, "ca.pem", &cert)),
    };
    server_tls_config(&good).unwrap();
    let junk = write(d, "junk.pem", "not a certificate\n");

    let missing = GatewayTlsFiles {
        cert: d.join("nope.pem"),
        ..good.clone()
    };
    let e = err(&missing);
    assert!(e.starts_with("cannot read gateway.tls.cert "), "{e}");
    assert!(e.contains("nope.pem"), "{e}");

    let e = err(&GatewayTlsFiles {
        cert: junk.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("gateway.tls.cert") && e.contains("junk.pem: holds no PEM CERTIFICATE block"),
        "{e}"
    );
    // A key file given as the certificate.
    let e = err(&GatewayTlsFiles {
        cert: good.key.clone(),
        ..good.clone()
    });
    assert!(e.contains("gw.key: holds no PEM CERTIFICATE block"), "{e}");
    let e = err(&GatewayTlsFiles {
        key: junk.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("gateway.tls.key") && e.contains("holds no usable PEM private key"),
        "{e}"
    );
    let e = err(&GatewayTlsFiles {
        client_ca: Some(junk.clone()),
        ..good.clone()
    });
    assert!(e.contains("gateway.tls.client_ca"), "{e}");
    // A key that is not the certificate's.
    let e = err(&GatewayTlsFiles {
        key: write(d, "other.key", &other_key),
        ..good.clone()
    });
    assert!(e.starts_with("gateway TLS configuration rejected"), "{e}");
}

#[test]
fn host_registry_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = HostRegistry::load(&d.join("hosts.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read host registry "), "{e}");
    let hash = token_sha256_hex("0123456789abcdef0123456789abcdef");
    let p = write(
        d,
        "hosts.toml",
        &format!("[[hosts]]\nid = \"h-1\"\ntoken_sha256 = \"{hash}\"\ncolour = \"red\"\n"),
    );
    let e = HostRegistry::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("hosts.toml") && e.contains("unknown field `colour`"),
        "{e}"
    );
    let p = write(
        d,
        "hosts.toml",
        &format!(
            "version = 1\n[[hosts]]\nid = \"h-1\"\ntoken_sha256 = \"{hash}\"\n\
             cert_name = \"h-1.agents.test\"\n[[hosts]]\nid = \"h-2\"\ntoken_sha256 = \"{}\"\n",
            hash.to_uppercase()
        ),
    );
    assert_eq!(HostRegistry::load(&p).unwrap().len(), 2);
}
