//! The portal's own sign-in, against a real OpenID provider: `oidc-provider` (`tests/portal/
//! idp.mjs`, pinned in `tests/portal/package-lock.json`) issues RS256 JWT access tokens for the
//! query API; a real `wattprint up` verifies them with the provider's JWKS; Debian's chromium
//! (`tests/portal/oidc.mjs`) signs in with the authorization code flow and PKCE through the
//! provider's login and consent pages. Checked: the request carries PKCE (S256) and state and
//! no secret; the portal lands signed in with the code gone from the address; the
//! numbers on screen are the API's for the provider's token; a user of another tenant gets a
//! not-found page (and the API a 404) for this tenant's instance; sign-out forgets the token;
//! a tampered state, another issuer and a denied consent are pages that say so. Screenshots in
//! `target/test-artifacts/portal/sign-in/`.
//!
//! Needs what `portal.rs` needs (chromium, node, `npm ci` in `tests/portal/`); skipped without
//! them unless `CI` or `WPTEST_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::portal::{
    assert_eq_exact, browser_or_skip, f, free_port, now_ms, run_script, scoped, shown, ARTIFACTS,
    PORTAL_DIR,
};
use crate::up::{get, interrupt_and_wait, start_args};

/// The audience of the query API, and the resource the provider issues its tokens for.
const RESOURCE: &str = "urn:wattprint:query-api";

/// The OpenID provider, stopped when dropped.
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `idp.mjs` on `port` for the portal at `redirect_uri`; returns once it listens.
fn start_provider(port: u16, redirect_uri: &str) -> Provider {
    let mut child = Command::new("node")
        .arg("idp.mjs")
        .current_dir(PORTAL_DIR)
        .env("IDP_PORT", port.to_string())
        .env("IDP_REDIRECT_URI", redirect_uri)
        .env("IDP_RESOURCE", RESOURCE)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let provider = Provider(child);
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("idp ready"));
    assert!(ready, "the OpenID provider did not start");
    provider
}

/// A JWT's header and claims, decoded without verifying (the API verifies).
fn jwt_parts(token: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let text = token.split('.').nth(i).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    (part(0), part(1))
}

#[tokio::test]
async fn the_portal_signs_in_through_a_real_openid_provider() {
    let Some(chromium) = browser_or_skip("portal sign-in test") else {
        return;
    };
    let (api_port, idp_port) = (free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let issuer = format!("http://localhost:{idp_port}");
    let _provider = start_provider(idp_port, &format!("{api}/portal/"));

    // `up` verifies the provider's tokens with its key set; its portal signs in there.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let start_at = (now_ms() - 2 * 3_600_000).div_euclid(300_000) * 300_000;
    let config = dir.path().join("oidc.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n\n[query_api]\nissuer = \"{issuer}\"\naudience = \"{RESOURCE}\"\n\
             jwks_url = \"{issuer}/jwks\"\n\n[query_api.portal_oidc]\nissuer = \"{issuer}\"\n\
             client_id = \"wattprint-portal\"\nauthorization_endpoint = \"{issuer}/auth\"\n\
             token_endpoint = \"{issuer}/token\"\nend_session_endpoint = \"{issuer}/session/end\"\n\
             scopes = \"openid wattprint:reader\"\nresource = \"{RESOURCE}\"\n\n\
             [agent.replay]\ngpus = 2\ninstances = 2\nloops = 12\nunpaced = true\n\
             start_at_ms = {start_at}\n",
            data = data.display().to_string()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{api_port}");
    let up = start_args(
        &data,
        Some(&config),
        &["--backfill-days", "0", "--api-listen", &listen],
    );
    assert_eq!(up.api, api);
    assert!(
        up.tokens.is_empty(),
        "no dev tokens beside an identity provider"
    );
    let printed = up.output.lock().unwrap().join("\n");
    assert!(
        printed.contains(&format!(
            "portal      {api}/portal/  (sign in there through the identity provider)"
        )),
        "{printed}"
    );

    // The page may call the provider's token endpoint, and nothing else of it.
    let page = reqwest::get(format!("{api}/portal/")).await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("connect-src 'self' {issuer}/token;")),
        "{csp}"
    );
    let (status, cfg) = get(&format!("{api}/portal/config.json"), "").await;
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(cfg["oidc"]["client_id"], "wattprint-portal");
    assert_eq!(cfg["oidc"]["issuer"], issuer.as_str());

    let artifacts = Path::new(ARTIFACTS).join("sign-in");
    let _ = std::fs::remove_dir_all(&artifacts);
    let report = run_script(
        "oidc.mjs",
        &chromium,
        &artifacts,
        &[
            ("PORTAL_API", api.clone()),
            ("PORTAL_ISSUER", issuer.clone()),
        ],
    );
    assert_eq!(report["console_errors"], serde_json::json!([]), "{report}");
    let (views, checks) = (&report["views"], &report["checks"]);
    for (name, v) in views.as_object().unwrap() {
        assert_eq!(v["looks_like_json"], false, "{name}: {}", v["text"]);
    }

    // The authorization request: code flow, PKCE S256, state, the resource, no secret.
    let auth = &report["auth_requests"][0];
    assert_eq!(auth["response_type"], "code");
    assert_eq!(auth["client_id"], "wattprint-portal");
    assert_eq!(auth["code_challenge_method"], "S256");
    assert_eq!(auth["redirect_uri"], format!("{api}/portal/"));
    assert_eq!(auth["resource"], RESOURCE);
    for key in ["code_challenge", "state"] {
        assert!(auth[key].as_str().unwrap().len() >= 16, "{key}: {auth}");
    }
    assert!(auth.get("client_secret").is_none() && auth.get("code_verifier").is_none());

    // Signed in: the code and state gone from the address, the sign-in state used up, and the
    // token the provider's, for this API and tenant acme.
    assert_eq!(views["signed_out"]["h1"], "Signed out");
    assert_eq!(checks["landed_url"], format!("{api}/portal/#/instances"));
    assert_eq!(checks["states_left"], 0);
    let token = report["tokens"]["acme"].as_str().unwrap();
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "test-idp-1");
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["sub"], "alice");
    let (_, id_claims) = jwt_parts(report["tokens"]["acme_id"].as_str().unwrap());
    assert_eq!(id_claims["aud"], "wattprint-portal");

    // The numbers on screen are the API's for that token.
    let v = &views["instances"];
    assert_eq!(v["h1"], "Instances");
    assert_eq!(v["rows"], 1, "acme has one instance: {}", v["text"]);
    let instance = checks["instance"].as_str().unwrap();
    let (from, to) = (v["from"].as_i64().unwrap(), v["to"].as_i64().unwrap());
    let (status, summary) = get(&format!("{api}/v1/summary?from={from}&to={to}"), token).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["instances"][0]["instance_id"], instance);
    for field in ["it_energy_kwh", "operational_co2e_g"] {
        let screen = shown(v, Some(instance), field);
        assert!(screen > 0.0, "{field}");
        assert_eq_exact(screen, f(&summary["instances"][0][field]), field);
        assert_eq_exact(
            shown(&scoped(v, "totals"), None, field),
            f(&summary["totals"][field]),
            field,
        );
    }
    assert_eq!(
        views["instance"]["canvases"], 4,
        "{}",
        views["instance"]["text"]
    );

    // Another tenant's user: his token cannot read acme's instance, nor can his portal.
    let globex = report["tokens"]["globex"].as_str().unwrap();
    assert_eq!(jwt_parts(globex).1["tenant"], "globex");
    let (status, _) = get(&format!("{api}/v1/instances/{instance}"), globex).await;
    assert_eq!(status, 404);
    let (status, mine) = get(&format!("{api}/v1/instances"), globex).await;
    assert_eq!(status, 200);
    assert!(!mine.to_string().contains(instance));
    assert_eq!(views["bob_instances"]["rows"], 1);
    let v = &views["bob_other_instance"];
    assert_eq!(v["not_found"], true, "{}", v["text"]);
    assert_eq!(v["fields"], serde_json::json!([]));
    assert_eq!(v["canvases"], 0);

    // Sign-out: back on the portal, signed out, nothing kept.
    assert_eq!(views["after_sign_out"]["h1"], "Signed out");
    assert_eq!(checks["after_sign_out_url"], format!("{api}/portal/"));
    let left = &checks["after_sign_out_session"];
    assert!(
        left["token"].is_null() && left["id_token"].is_null(),
        "{left}"
    );

    // Refused answers: a page that says why and offers to sign in again; no token kept, the
    // code gone from the address.
    for (name, says) in [
        (
            "tampered_state",
            "does not belong to a sign-in started in this tab",
        ),
        ("wrong_issuer", "came from another identity provider"),
        ("denied", "did not sign you in: the user denied access"),
    ] {
        let v = &views[name];
        assert_eq!(v["h1"], "Sign-in failed", "{name}: {}", v["text"]);
        let notice = v["error_notices"][0].as_str().unwrap();
        assert!(notice.contains(says), "{name}: {notice}");
        assert!(v["text"].as_str().unwrap().contains("Sign in"), "{name}");
    }
    assert_eq!(checks["tampered_state_url"], format!("{api}/portal/"));
    for name in ["wrong_issuer_session", "denied_session"] {
        assert!(checks[name]["token"].is_null(), "{name}: {}", checks[name]);
    }

    for shot in [
        "20-oidc-signed-out",
        "21-idp-login",
        "21-idp-consent",
        "23-oidc-signed-in-instances",
        "27-oidc-other-tenant-instance",
        "28-oidc-tampered-state",
        "29-oidc-wrong-issuer",
    ] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "{shot}");
    }
    interrupt_and_wait(up);
}
