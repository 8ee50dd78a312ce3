//! The agent ↔ gateway link secured, through the `wattprint` binary and its config file only:
//! `wattprint gateway` with `[gateway.tls]` (mTLS) and a `hosts_file`, `wattprint agent` with
//! `[agent.tls]` and a `host_token_file`. A wrong token is refused and nothing is acked; the
//! agent keeps its spool, and the next run with the right token delivers everything. A gateway
//! given a key file as its certificate refuses to start, naming the file.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wattprint_agent::replay::replay_gpu_uuid;
use wattprint_tests::process::{free_port, Node};

const SEED_A: u64 = 9101;
const SEED_B: u64 = 9102;
const TOKEN: &str = "0f3c9a7e5b1d4c2a8e6f0b9d7c5a3e1f";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Writes `ca.pem`, `gateway.{pem,key}` (for `gw.test`) and `agent.{pem,key}` (for
/// `gpu-host-1.agents.test`) into `dir`.
fn pki(dir: &Path) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test CA");
    let ca_key = KeyPair::generate().unwrap();
    write(dir, "ca.pem", &p.self_signed(&ca_key).unwrap().pem());
    let issuer = Issuer::new(p, ca_key);
    for (file, name, eku) in [
        ("gateway", "gw.test", ExtendedKeyUsagePurpose::ServerAuth),
        (
            "agent",
            "gpu-host-1.agents.test",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        write(
            dir,
            &format!("{file}.pem"),
            &p.signed_by(&key, &issuer).unwrap().pem(),
        );
        write(dir, &format!("{file}.key"), &key.serialize_pem());
    }
}

/// The numbers of an agent's summary line, by word (`sent 5 acked 5 … refused 0`).
fn summary(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == word).unwrap();
    words[at + 1].parse().unwrap()
}

#[test]
fn the_binaries_stream_over_mtls_refuse_a_wrong_token_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    write(d, "host.token", &format!("{TOKEN}\n"));
    write(d, "wrong.token", "ffffffffffffffffffffffffffffffff");
    // The registry holds the hash of the token as `sha256sum` prints it for the file's text.
    let hash = wattprint_ingest::hosts::token_sha256_hex(TOKEN);
    write(
        d,
        "hosts.toml",
        &format!(
            "version = 1\n[[hosts]]\nid = \"gpu-host-1\"\ntoken_sha256 = \"{hash}\"\n\
             cert_name = \"gpu-host-1.agents.test\"\n"
        ),
    );
    let port = free_port();
    let start_at = wattprint_tests::now_ms() - 3_600_000;
    let p = |name: &str| d.join(name).display().to_string();
    let mut toml = format!(
        r#"data_dir = "{data}"

[gateway]
listen = "127.0.0.1:{port}"
hosts_file = "{hosts}"

[gateway.tls]
cert = "{gw_cert}"
key = "{gw_key}"
client_ca = "{ca}"

[query_api]
listen = "127.0.0.1:{api}"

[agent]
host_id = "gpu-host-1"
gateway_url = "https://127.0.0.1:{port}"
host_token_file = "{token}"
spool_dir = "{spool}"

[agent.tls]
ca = "{ca}"
cert = "{agent_cert}"
key = "{agent_key}"
domain = "gw.test"

[agent.replay]
gpus = 2
seed = {SEED_A}
unpaced = true
loops = 1
start_at_ms = {start_at}
"#,
        data = p("data"),
        hosts = p("hosts.toml"),
        gw_cert = p("gateway.pem"),
        gw_key = p("gateway.key"),
        ca = p("ca.pem"),
        api = free_port(),
        token = p("host.token"),
        spool = p("spool"),
        agent_cert = p("agent.pem"),
        agent_key = p("agent.key"),
    );
    for (id, seed) in [("i-a", SEED_A), ("i-b", SEED_B)] {
        write!(
            toml,
            "\n[[instances]]\ntenant = \"t\"\nid = \"{id}\"\nzip_code = \"95112\"\nhost = \"gpu-host-1\"\ngpus = ["
        )
        .unwrap();
        for g in 0..2 {
            write!(
                toml,
                "{{ uuid = \"{}\", model = \"NVIDIA H100 80GB HBM3\", power_limit_w = 700 }}, ",
                replay_gpu_uuid(seed, g)
            )
            .unwrap();
        }
        toml.push_str("]\n");
    }
    let config = write(d, "wattprint.toml", &toml);
    let env = |extra: &[(&str, String)]| {
        let mut v = vec![("WATTPRINT_CONFIG".to_owned(), config.display().to_string())];
        // Several agents at once: each on a port of its own, none on the default.
        for key in [
            "WATTPRINT_AGENT__METRICS_LISTEN",
            "WATTPRINT_GATEWAY__METRICS_LISTEN",
        ] {
            v.push((key.to_owned(), "127.0.0.1:0".to_owned()));
        }
        v.extend(extra.iter().map(|(k, x)| ((*k).to_owned(), x.clone())));
        v
    };
    let mut gateway = Node::spawn("gateway", &["gateway"], &env(&[]), d);
    gateway.wait_for_line("ready", Duration::from_secs(60));

    // The wrong token: refused, nothing acked; stopped after 4 s (Ctrl-C).
    let mut wrong = Node::spawn(
        "agent-wrong-token",
        &["agent"],
        &env(&[("WATTPRINT_AGENT__HOST_TOKEN_FILE", p("wrong.token"))]),
        d,
    );
    std::thread::sleep(Duration::from_secs(4));
    wrong.interrupt(Duration::from_secs(30));
    let line = wrong.wait_for_line("agent stopped:", Duration::from_secs(5));
    assert_eq!(summary(&line, "acked"), 0, "{line}");
    assert!(summary(&line, "refused") >= 1, "{line}");
    assert!(
        wrong
            .stderr_tail()
            .contains("wrong host token for host \"gpu-host-1\""),
        "{}",
        wrong.stderr_tail()
    );

    // The right token, GPUs of its own: the spooled samples of the refused run go first.
    let n = wattprint_tests::read_trace().len() as u64 - 1;
    let mut right = Node::spawn(
        "agent",
        &["agent"],
        &env(&[("WATTPRINT_AGENT__REPLAY__SEED", SEED_B.to_string())]),
        d,
    );
    let status = right.wait(Duration::from_secs(180));
    assert!(status.success(), "{}", right.stderr_tail());
    let line = right.wait_for_line("agent stopped:", Duration::from_secs(5));
    assert_eq!(
        summary(&line, "acked"),
        4 * n,
        "both runs' 2 GPUs × {n}: {line}"
    );
    assert_eq!(summary(&line, "refused"), 0, "{line}");
    assert!(summary(&line, "replayed") > 0, "{line}");
    gateway.interrupt(Duration::from_secs(30));

    // A key file where the certificate belongs: the gateway does not start, and says why.
    let mut bad = Node::spawn(
        "gateway-bad-cert",
        &["gateway"],
        &env(&[("WATTPRINT_GATEWAY__TLS__CERT", p("gateway.key"))]),
        d,
    );
    let status = bad.wait(Duration::from_secs(60));
    assert!(!status.success());
    // The whole log: with RUST_BACKTRACE set, a backtrace follows the message.
    let err = std::fs::read_to_string(d.join("gateway-bad-cert.log")).unwrap();
    assert!(
        err.contains("[gateway.tls]")
            && err.contains("gateway.key: holds no PEM CERTIFICATE block"),
        "{err}"
    );
}
