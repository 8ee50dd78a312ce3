//! Tenant isolation on every endpoint: tenant `globex` never sees or touches `acme`'s
//! instances, samples or workloads, and the 404 it gets is the one for things that do not exist;
//! and a property test over random callers, tokens (valid, tampered, forged), routes and ids
//! that no response ever carries another tenant's data.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

fn ids(body: &serde_json::Value, list: &str, key: &str) -> Vec<String> {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn instance_lists_hold_only_the_callers_instances() {
    let h = harness().await;
    let a = get(&h.app, "/v1/instances", Some(&token("acme"))).await;
    let b = get(&h.app, "/v1/instances", Some(&token("globex"))).await;
    assert_eq!(ids(&a.body, "instances", "instance_id"), ["i-a1", "i-a2"]);
    assert_eq!(ids(&b.body, "instances", "instance_id"), ["i-b1"]);
    // A tenant with nothing sees nothing.
    let c = get(&h.app, "/v1/instances", Some(&token("initech"))).await;
    assert_eq!(c.body, json!({"instances": []}));
}

#[tokio::test]
async fn series_of_another_tenants_instance_is_404_like_a_missing_one() {
    let h = harness().await;
    let range = format!("from={T0}&to={}", T0 + 4 * B);
    for step in ["raw", "5m", "1h", "1d"] {
        // The owner gets data, so the 404 below is isolation, not an empty store.
        let own = get(
            &h.app,
            &format!("/v1/instances/i-a1/series?{range}&step={step}"),
            Some(&token("acme")),
        )
        .await;
        assert_eq!(own.status, StatusCode::OK, "{step}: {}", own.text);
        assert!(!own.body["points"].as_array().unwrap().is_empty());

        let foreign = get(
            &h.app,
            &format!("/v1/instances/i-a1/series?{range}&step={step}"),
            Some(&token("globex")),
        )
        .await;
        foreign.assert_problem(StatusCode::NOT_FOUND);
        let absent = get(
            &h.app,
            &format!("/v1/instances/i-zz/series?{range}&step={step}"),
            Some(&token("globex")),
        )
        .await;
        absent.assert_problem(StatusCode::NOT_FOUND);
        assert_eq!(foreign.body["type"], absent.body["type"]);
        assert_eq!(
            foreign.body["detail"]
                .as_str()
                .unwrap()
                .replace("i-a1", "X"),
            absent.body["detail"].as_str().unwrap().replace("i-zz", "X"),
        );
    }
    // And the other way round.
    let r = get(
        &h.app,
        &format!("/v1/instances/i-b1/series?{range}"),
        Some(&token("acme")),
    )
    .await;
    r.assert_problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn workloads_are_invisible_to_other_tenants() {
    let h = harness().await;
    let id = create_workload(&h.app, "acme", &["i-a1"], T0, T0 + B, 1.0).await;
    assert_eq!(
        get(&h.app, &format!("/v1/workloads/{id}"), Some(&token("acme")))
            .await
            .status,
        StatusCode::OK
    );

    let r = get(
        &h.app,
        &format!("/v1/workloads/{id}"),
        Some(&token("globex")),
    )
    .await;
    r.assert_problem(StatusCode::NOT_FOUND);
    let absent = get(
        &h.app,
        "/v1/workloads/wl_ffffffffffffffff",
        Some(&token("globex")),
    )
    .await;
    absent.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(r.body["type"], absent.body["type"]);

    let list = get(&h.app, "/v1/workloads", Some(&token("globex"))).await;
    assert_eq!(list.body, json!({"workloads": []}));
    let own = get(&h.app, "/v1/workloads", Some(&token("acme"))).await;
    assert_eq!(ids(&own.body, "workloads", "id"), [id]);
}

#[tokio::test]
async fn a_workload_cannot_name_another_tenants_instance() {
    let h = harness().await;
    let t = token("globex");
    for instances in [json!(["i-a1"]), json!(["i-b1", "i-a2"])] {
        let r = post_json(
            &h.app,
            "/v1/workloads",
            Some(&t),
            &json!({
                "label": "steal", "instance_ids": instances, "from": T0, "to": T0 + B,
                "functional_unit": "run", "functional_units": 1,
            }),
        )
        .await;
        r.assert_problem(StatusCode::NOT_FOUND);
    }
    assert_eq!(
        get(&h.app, "/v1/workloads", Some(&t)).await.body,
        json!({"workloads": []})
    );
    // Its own instance works, and its footprint holds only its own energy (4 × 5_000_000 mJ at
    // 999 g/kWh), nothing of acme's samples in the same time range.
    let id = create_workload(&h.app, "globex", &["i-b1"], T0, T0 + B, 1.0).await;
    let r = get(&h.app, &format!("/v1/workloads/{id}"), Some(&t)).await;
    assert_eq!(r.body["footprint"]["it_energy_mj"], 20_000_000);
    assert_close(
        &r.body["footprint"]["operational_co2e_g"],
        20_000_000.0 * 999.0 / MJ_PER_KWH,
    );
}

// ---------------------------------------------------------------------------------------------
// Property: whatever the caller, token, route and id, no response carries another tenant's data.

/// Strings only the named tenant's data contains (instances, GPUs, workload ids and labels).
fn markers(acme_wl: &str, globex_wl: &str) -> Vec<(&'static str, Vec<String>)> {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "acme",
            [
                own(&[
                    "i-a1",
                    "i-a2",
                    "GPU-a1",
                    "GPU-a2",
                    "GPU-a3",
                    "acme-secret-label",
                ]),
                vec![acme_wl.to_owned()],
            ]
            .concat(),
        ),
        (
            "globex",
            [
                own(&["i-b1", "GPU-b1", "globex-secret-label"]),
                vec![globex_wl.to_owned()],
            ]
            .concat(),
        ),
    ]
}

/// How the caller's token is made.
#[derive(Debug, Clone, Copy)]
enum TokenKind {
    /// Minted for the caller with this role.
    Valid(wattprint_query_api::Role),
    /// The caller's valid token with its payload rewritten to name the other tenant.
    Tampered,
    /// Signed with a secret the server does not know.
    Forged,
}

fn token_for(tenant: &str, kind: TokenKind) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match kind {
        TokenKind::Valid(role) => role_token(tenant, role),
        TokenKind::Tampered => {
            let t = token(tenant);
            let parts: Vec<&str> = t.split('.').collect();
            let mut claims: serde_json::Value =
                serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            let other = if tenant == "acme" { "globex" } else { "acme" };
            claims["tenant"] = json!(other);
            claims["sub"] = json!(other);
            format!(
                "{}.{}.{}",
                parts[0],
                b64.encode(claims.to_string()),
                parts[2]
            )
        }
        TokenKind::Forged => {
            let forged = wattprint_query_api::AuthConfig {
                hs256_secret: "not-the-servers-secret-at-all".into(),
                ..auth()
            };
            wattprint_query_api::mint_token(
                &forged,
                &wattprint_core::TenantId::from(tenant),
                std::time::Duration::from_secs(600),
            )
            .unwrap()
        }
    }
}

fn caller() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("acme".to_owned()),
        Just("globex".to_owned()),
        "[a-z][a-z0-9-]{0,11}",
    ]
}

fn any_id(known: Vec<String>) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::sample::select(known),
        "[A-Za-z0-9_.-]{1,24}",
        // Percent-encoded oddities: quotes, slashes, NULs, unicode.
        proptest::sample::select(vec![
            "i-a1%27%20OR%201%3D1".to_owned(),
            "%2E%2E%2Fi-b1".to_owned(),
            "i-b1%00".to_owned(),
            "%F0%9F%94%A5".to_owned(),
        ]),
    ]
}

#[test]
fn no_response_ever_contains_another_tenants_data() {
    use proptest::prelude::*;
    use wattprint_query_api::Role;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (h, acme_wl, globex_wl) = rt.block_on(async {
        let h = harness().await;
        let mut ids = Vec::new();
        for (tenant, instance) in [("acme", "i-a1"), ("globex", "i-b1")] {
            let r = post_json(
                &h.app,
                "/v1/workloads",
                Some(&token(tenant)),
                &json!({
                    "label": format!("{tenant}-secret-label"), "instance_ids": [instance],
                    "from": T0, "to": T0 + 4 * B, "functional_unit": "run",
                    "functional_units": 1,
                }),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            ids.push(r.body["id"].as_str().unwrap().to_owned());
        }
        (h, ids[0].clone(), ids[1].clone())
    });
    let markers = markers(&acme_wl, &globex_wl);
    // The markers do detect data: each tenant's own listing holds them.
    rt.block_on(async {
        for (tenant, own) in &markers {
            let mut text = get(&h.app, "/v1/instances", Some(&token(tenant)))
                .await
                .text;
            text += &get(&h.app, "/v1/workloads", Some(&token(tenant)))
                .await
                .text;
            for m in own {
                assert!(text.contains(m.as_str()), "{tenant}'s own data lacks {m}");
            }
        }
    });
    let known: Vec<String> = markers.iter().flat_map(|(_, m)| m.clone()).collect();
    let range = format!("from={T0}&to={}", T0 + 4 * B);
    let kinds = prop_oneof![
        Just(TokenKind::Valid(Role::Reader)),
        Just(TokenKind::Valid(Role::Admin)),
        Just(TokenKind::Tampered),
        Just(TokenKind::Forged),
    ];
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(who in caller(), kind in kinds, route in 0usize..8, id in any_id(known))| {
        let bearer = token_for(&who, kind);
        let (uri, body) = match route {
            0 => ("/v1/instances".to_owned(), None),
            1 => (format!("/v1/instances/{id}/series?{range}&step=raw"), None),
            2 => (format!("/v1/instances/{id}/series?{range}&step=5m"), None),
            3 => ("/v1/workloads".to_owned(), None),
            4 => (format!("/v1/workloads/{id}"), None),
            5 => (format!("/v1/summary?{range}"), None),
            6 => (format!("/v1/restatements?{range}"), None),
            _ => ("/v1/workloads".to_owned(), Some(json!({
                "label": "probe", "instance_ids": [id.clone()], "from": T0, "to": T0 + B,
                "functional_unit": "run", "functional_units": 1,
            }))),
        };
        let reply = rt.block_on(async {
            match &body {
                Some(b) => post_json(&h.app, &uri, Some(&bearer), b).await,
                None => get(&h.app, &uri, Some(&bearer)).await,
            }
        });
        prop_assert!(reply.status.as_u16() < 500, "{uri}: {} {}", reply.status, reply.text);
        if matches!(kind, TokenKind::Tampered | TokenKind::Forged) {
            prop_assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        }
        let asked = format!("{uri} {}", body.map(|b| b.to_string()).unwrap_or_default());
        for (tenant, theirs) in &markers {
            if *tenant == who {
                continue;
            }
            for m in theirs {
                if !asked.contains(m.as_str()) {
                    prop_assert!(
                        !reply.text.contains(m.as_str()),
                        "{who} ({kind:?}) {uri} saw {tenant}'s {m}: {}", reply.text
                    );
                }
            }
        }
    });
}
