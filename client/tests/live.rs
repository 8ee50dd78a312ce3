//! Every client method against a real `wattprint up` whose replay of the shipped H100 trace is
//! finished: the numbers the client decodes are checked against the trace itself and against
//! each other (workload energy = Σ series = summary, emissions = Σ series emissions, SCI =
//! (E·I + M)/R), errors arrive as typed problems (401, 403, 404, 400), and the example binary
//! prints exactly the numbers the API returns.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{
    camx_average_g_per_kwh, line_after, numbers_after, trace_energy_mj, Server, DEMO_PUE,
};
use wattprint_client::{
    Client, Error, NewWorkload, PageRequest, SeriesPoints, SeriesQuery, StatementExportFormat,
    StatementFormat, Step, Timestamp, WhatIfBasis, WhatIfQuery, WorkloadStatus,
};

fn rel_eq(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_a_real_server() {
    let server = Server::start();
    let acme_token = server.token(&["--tenant", "acme"]);
    let acme = Client::new(&server.url, &acme_token).unwrap();
    let globex = Client::new(&server.url, &server.token(&["--tenant", "globex"])).unwrap();
    let reader = Client::new(
        &server.url,
        &server.token(&["--tenant", "acme", "--role", "reader"]),
    )
    .unwrap();
    let operator = Client::new(
        &server.url,
        &server.token(&["--role", "operator", "--subject", "sdk-ops"]),
    )
    .unwrap();
    let (from, to) = (
        Timestamp::UnixMillis(server.from_ms),
        Timestamp::UnixMillis(server.to_ms),
    );

    assert_eq!(acme.health().await.unwrap().status, "ok");

    // Inventory: acme's two instances, one replayed H100 each; pages of one follow cursors.
    let instances = acme.all_instances(None).await.unwrap();
    assert_eq!(instances.len(), 2, "{instances:?}");
    for i in &instances {
        assert!(i.instance_id.starts_with("acme"), "{i:?}");
        assert_eq!(i.gpus.len(), 1);
        assert_eq!(i.gpus[0].model, "NVIDIA H100 80GB HBM3");
        assert_eq!(i.gpus[0].power_limit_w, 700.0);
        assert_eq!(i.zip_code.as_deref(), Some("95112"));
    }
    let first = acme
        .list_instances(&PageRequest {
            limit: Some(1),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(first.instances, instances[..1]);
    let cursor = first.next_cursor.clone().expect("a second page");
    let second = acme
        .list_instances(&PageRequest {
            limit: Some(1),
            cursor: Some(cursor),
        })
        .await
        .unwrap();
    assert_eq!(second.instances, instances[1..]);
    assert_eq!(second.next_cursor, None);
    assert_eq!(acme.all_instances(Some(1)).await.unwrap(), instances);

    // The replay is finite: wait for its last sample; then energy is the trace's, per GPU.
    let total = server.wait_for_replay(&acme_token).await;
    assert_eq!(total, 2 * trace_energy_mj());

    // Series: 5-minute steps and raw samples of each instance both sum to one trace pass.
    let mut series_co2e = 0.0;
    let mut series_average_co2e = 0.0;
    for i in &instances {
        let s = acme
            .instance_series(
                &i.instance_id,
                &SeriesQuery {
                    from: Some(from.clone()),
                    to: Some(to.clone()),
                    step: Some(Step::FiveMinutes),
                },
            )
            .await
            .unwrap();
        assert_eq!(s.step, Step::FiveMinutes);
        assert_eq!(s.points.energy_mj(), trace_energy_mj(), "{}", i.instance_id);
        let SeriesPoints::Aggregated(points) = &s.points else {
            panic!("5m series decoded as raw")
        };
        assert_eq!(points.len(), 2, "the replay straddles one bucket edge");
        for p in points {
            assert_eq!(p.intensity_kinds.replayed, 1, "{p:?}");
            series_co2e += p.facility_co2e_g;
            // Average (location-based) emissions: the static eGRID rate, per interval.
            let avg = p.average_intensity_g_per_kwh.unwrap();
            assert!(rel_eq(avg, camx_average_g_per_kwh(), 1e-12), "{avg}");
            assert!(rel_eq(p.average_co2e_g.unwrap(), p.energy_kwh * avg, 1e-9));
            let facility = p.average_facility_co2e_g.unwrap();
            assert!(rel_eq(
                facility,
                p.average_co2e_g.unwrap() * DEMO_PUE,
                1e-12
            ));
            series_average_co2e += facility;
        }
        let raw = acme
            .instance_series(
                &i.instance_id,
                &SeriesQuery {
                    from: Some(from.clone()),
                    to: Some(to.clone()),
                    step: Some(Step::Raw),
                },
            )
            .await
            .unwrap();
        let SeriesPoints::Raw(samples) = &raw.points else {
            panic!("raw series decoded as aggregated")
        };
        assert_eq!(samples.len(), wattprint_tests::read_trace().len() - 1);
        assert_eq!(raw.points.energy_mj(), trace_energy_mj());
    }

    // Summary: the same energy per instance and in total; emissions are Σ of the series'.
    let summary = acme.summary(&from, &to).await.unwrap();
    assert_eq!(summary.totals.it_energy_mj, total);
    assert_eq!(summary.instances.len(), 2);
    for i in &summary.instances {
        assert_eq!(i.usage.it_energy_mj, trace_energy_mj(), "{i:?}");
    }
    assert!(
        rel_eq(summary.totals.operational_co2e_g, series_co2e, 1e-9),
        "{} vs {series_co2e}",
        summary.totals.operational_co2e_g
    );
    // Not vacuous: every interval was joined with an intensity (the emissions themselves may be
    // exactly 0 where the replayed MOER is 0 g/kWh, as in curtailment hours).
    assert!(summary.totals.gpu_intervals > 0);
    assert_eq!(summary.totals.provenance.intervals_missing_intensity, 0);

    // Replayed history is never restated.
    let restated = acme.restatements(&from, &to).await.unwrap();
    assert!(restated.restatements.is_empty(), "{restated:?}");
    assert_eq!(restated.totals.intervals, 0);

    // A workload over the whole replay: energy exact, emissions as the summary's, SCI by hand.
    let ids: Vec<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
    let created = acme
        .create_workload(&NewWorkload {
            label: "sdk live".into(),
            instance_ids: ids.clone(),
            from: from.clone(),
            to: Some(to.clone()),
            functional_unit: "epoch".into(),
            functional_units: 4.0,
            labels: BTreeMap::from([("team".to_owned(), "sdk".to_owned())]),
        })
        .await
        .unwrap();
    assert_eq!(created.status, "closed");
    assert_eq!(created.labels["team"], "sdk");
    let detail = acme.workload(&created.id).await.unwrap();
    assert_eq!(detail.workload, created);
    let fp = &detail.footprint;
    assert_eq!(fp.it_energy_mj, total);
    assert!(rel_eq(fp.it_energy_kwh, total as f64 / 3.6e9, 1e-12));
    assert!(rel_eq(
        fp.operational_co2e_g,
        summary.totals.operational_co2e_g,
        1e-9
    ));
    assert!(fp.embodied_co2e_g > 0.0);
    let evidence = acme.workload_evidence(&created.id).await.unwrap();
    assert_eq!(evidence.workload, created);
    assert_eq!(evidence.energy.it_energy_mj, fp.it_energy_mj);
    assert_eq!(evidence.emissions.marginal_co2e_g, fp.operational_co2e_g);
    assert!(evidence.content_sha256.is_some());
    // The hash covers the content, not the request time: a later request gives the same one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = acme.workload_evidence(&created.id).await.unwrap();
    assert_ne!(again.generated_at, evidence.generated_at);
    assert_eq!(again.content_sha256, evidence.content_sha256);
    assert!(rel_eq(
        fp.total_co2e_g,
        fp.operational_co2e_g + fp.embodied_co2e_g,
        1e-12
    ));
    assert!(rel_eq(fp.sci_g_per_unit, fp.total_co2e_g / 4.0, 1e-12));
    assert_eq!(fp.functional_unit, "epoch");
    assert_eq!(fp.embodied.gpus, 2);
    assert_eq!(fp.provenance.intervals_replayed_intensity, 4);
    let avg = fp.average.as_ref().unwrap();
    assert!(rel_eq(avg.operational_co2e_g, series_average_co2e, 1e-9));
    assert!(rel_eq(
        avg.operational_it_co2e_g,
        fp.it_energy_kwh * camx_average_g_per_kwh(),
        1e-9
    ));
    assert!(rel_eq(
        avg.sci_g_per_unit,
        (avg.operational_co2e_g + fp.embodied_co2e_g) / 4.0,
        1e-12
    ));
    assert_eq!(avg.energy_without_intensity_mj, 0);
    assert!(!avg.intensity_sources.is_empty());

    // What-ifs on the replayed actuals: actual = the footprint's facility emissions (on
    // facility energy rounded to the millijoule), the best never worse than as run.
    let whatif = acme
        .whatif(
            &created.id,
            &WhatIfQuery {
                window_hours: vec![1.0, 6.0],
                factors: vec![1.5, 2.0],
                basis: Some(WhatIfBasis::Actual),
            },
        )
        .await
        .unwrap();
    assert_eq!(whatif.workload_id, created.id);
    assert_eq!(whatif.basis_kind, WhatIfBasis::Actual);
    assert!(whatif
        .flexible_start
        .iter()
        .all(|f| f.realized_co2e_g.is_none()));
    assert!(whatif.intensity_replayed);
    assert_eq!(whatif.profile_slots, 2);
    // Per slot rounded to the millijoule: within 1 mJ per slot of the footprint's.
    assert!(
        (whatif.energy_kwh - fp.facility_energy_kwh).abs() * 3.6e9 <= 2.0,
        "{} vs {}",
        whatif.energy_kwh,
        fp.facility_energy_kwh
    );
    assert_eq!(
        whatif
            .flexible_start
            .iter()
            .map(|f| f.window_hours)
            .collect::<Vec<_>>(),
        [1.0, 6.0]
    );
    for f in &whatif.flexible_start {
        assert!(
            rel_eq(f.actual_co2e_g, fp.operational_co2e_g, 1e-6),
            "{f:?}"
        );
        assert!(f.best_co2e_g <= f.actual_co2e_g && f.worst_co2e_g >= f.actual_co2e_g);
        assert!(rel_eq(
            f.saving_co2e_g,
            f.actual_co2e_g - f.best_co2e_g,
            1e-9
        ));
    }
    assert_eq!(whatif.pause_resume.len(), 2);
    for r in &whatif.pause_resume {
        assert!(r.co2e_g <= r.actual_co2e_g + 1e-9, "{r:?}");
        assert!(!r.schedule.is_empty());
    }

    // On forecasts: the demo's replayed history has none, and the server says so (422).
    let e = acme
        .whatif(
            &created.id,
            &WhatIfQuery {
                basis: Some(WhatIfBasis::Forecast),
                ..WhatIfQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Api(p) if p.status == 422 && p.kind == "urn:wattprint:problem:unprocessable" && p.detail.contains("forecast")),
        "{e:?}"
    );

    // Open, label, close, list by status, page through.
    let open = acme
        .create_workload(&NewWorkload {
            label: "still running".into(),
            instance_ids: ids[..1].to_vec(),
            from: from.clone(),
            to: None,
            functional_unit: "run".into(),
            functional_units: 1.0,
            labels: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert_eq!((open.status.as_str(), open.to.as_deref()), ("open", None));
    let open_ids: Vec<String> = acme
        .all_workloads(Some(WorkloadStatus::Open), Some(1))
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(open_ids, std::slice::from_ref(&open.id));
    let labels = BTreeMap::from([("project".to_owned(), "bert".to_owned())]);
    let labelled = acme.set_labels(&open.id, &labels).await.unwrap();
    assert_eq!(labelled.labels, labels);
    let closed = acme
        .close_workload(&open.id, Some(to.clone()))
        .await
        .unwrap();
    assert_eq!(closed.status, "closed");
    assert_eq!(closed.labels, labels);
    let closed_detail = acme.workload(&open.id).await.unwrap();
    assert_eq!(closed_detail.workload.to, closed.to);
    assert_eq!(closed_detail.footprint.it_energy_mj, trace_energy_mj());
    let all = acme
        .all_workloads(Some(WorkloadStatus::All), Some(1))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let page = acme
        .list_workloads(
            &PageRequest {
                limit: Some(1),
                cursor: None,
            },
            Some(WorkloadStatus::Closed),
        )
        .await
        .unwrap();
    assert_eq!(page.workloads.len(), 1);
    assert!(page.next_cursor.is_some());

    // Errors arrive as problem documents with their status.
    let bad = Client::new(&server.url, "not-a-token").unwrap();
    let e = bad.all_instances(None).await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert_eq!(
        e.problem().unwrap().kind,
        "urn:wattprint:problem:unauthorized"
    );
    let e = globex.workload(&created.id).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let e = globex.workload_evidence(&created.id).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(globex
        .whatif(&created.id, &WhatIfQuery::default())
        .await
        .unwrap_err()
        .is_not_found());
    let e = acme
        .list_workloads(
            &PageRequest {
                limit: Some(1),
                cursor: Some("no-such-cursor".into()),
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e:?}");
    let e = acme
        .whatif(
            &created.id,
            &WhatIfQuery {
                factors: vec![9.0],
                ..WhatIfQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Api(p) if p.status == 400 && p.detail.contains("factor")));

    // Roles: a reader reads but may not create, label or close (403); operator routes are
    // for operator tokens only, and see every tenant.
    assert_eq!(reader.workload(&created.id).await.unwrap(), detail);
    let new = NewWorkload {
        label: "by a reader".into(),
        instance_ids: ids.clone(),
        from: from.clone(),
        to: Some(to.clone()),
        functional_unit: "run".into(),
        functional_units: 1.0,
        labels: BTreeMap::new(),
    };
    let e = reader.create_workload(&new).await.unwrap_err();
    assert!(e.is_forbidden(), "{e:?}");
    assert_eq!(e.problem().unwrap().kind, "urn:wattprint:problem:forbidden");
    assert!(reader
        .set_labels(&created.id, &BTreeMap::new())
        .await
        .unwrap_err()
        .is_forbidden());
    assert!(reader
        .close_workload(&created.id, None)
        .await
        .unwrap_err()
        .is_forbidden());
    assert!(acme.operator_tenants().await.unwrap_err().is_forbidden());
    let tenants = operator.operator_tenants().await.unwrap();
    assert_eq!(
        tenants
            .tenants
            .iter()
            .map(|t| (t.tenant.as_str(), t.instances, t.gpus))
            .collect::<Vec<_>>(),
        [("acme", 2, 2), ("globex", 2, 2)]
    );
    let seen_by_operator = operator
        .operator_tenant_summary("acme", &from, &to)
        .await
        .unwrap();
    assert_eq!(seen_by_operator, acme.summary(&from, &to).await.unwrap());
    // Every tenant's statement of the month: acme's own CSV rows are among the export's.
    let month = wattprint_core::UnixMillis(server.from_ms).to_rfc3339()[..7].to_owned();
    let export = operator
        .operator_statements_export(&month, StatementExportFormat::Csv)
        .await
        .unwrap();
    let export = String::from_utf8(export).unwrap();
    let own = acme
        .statement_document(&month, StatementFormat::Csv)
        .await
        .unwrap();
    let own = String::from_utf8(own).unwrap();
    for row in own.lines() {
        assert!(export.lines().any(|r| r == row), "{row} not in {export}");
    }
    assert!(export.lines().any(|r| r.contains(",globex,")), "{export}");
    let parquet = operator
        .operator_statements_export(&month, StatementExportFormat::Parquet)
        .await
        .unwrap();
    assert!(parquet.starts_with(b"PAR1"));
    assert!(acme
        .operator_statements_export(&month, StatementExportFormat::Csv)
        .await
        .unwrap_err()
        .is_forbidden());
    assert!(operator
        .all_instances(None)
        .await
        .unwrap_err()
        .is_forbidden());

    // Rate limit: a tenant that spends its burst gets 429 with Retry-After; others do not.
    let hasty = Client::new(
        &server.url,
        &server.token(&["--tenant", "initech", "--role", "reader"]),
    )
    .unwrap();
    let mut limited = None;
    for n in 0..2 * common::RATE_BURST {
        match hasty.list_instances(&PageRequest::default()).await {
            Ok(list) => assert!(list.instances.is_empty()),
            Err(e) => {
                limited = Some((n, e));
                break;
            }
        }
    }
    let (n, e) = limited.expect("no 429 within twice the burst");
    assert!(n >= common::RATE_BURST, "limited after {n} requests");
    assert!(e.is_rate_limited(), "{e:?}");
    let p = e.problem().unwrap();
    assert_eq!(p.kind, "urn:wattprint:problem:rate-limited");
    assert!(p.retry_after_s.is_some_and(|s| s >= 1), "{p:?}");
    assert_eq!(acme.health().await.unwrap().status, "ok");
    assert_eq!(acme.all_instances(None).await.unwrap(), instances);

    // The OpenAPI document lists every path this client calls.
    let doc = acme.openapi().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/v1/instances",
        "/v1/instances/{id}/series",
        "/v1/summary",
        "/v1/restatements",
        "/v1/workloads",
        "/v1/workloads/{id}",
        "/v1/workloads/{id}/labels",
        "/v1/workloads/{id}/close",
        "/v1/workloads/{id}/whatif",
        "/v1/operator/tenants",
        "/v1/operator/tenants/{tenant}/summary",
        "/v1/statements",
        "/v1/statements/{period}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }

    run_example(&server, &acme, &acme_token, &ids).await;
    run_statement_example(&server, &acme, &acme_token).await;
    server.stop();
}

/// The month of the replay through the client and `examples/statement.rs`: the statement's
/// totals are the summary's over the month to the mJ, every line the example prints is the
/// API's, and the CSV and PDF documents come back.
async fn run_statement_example(server: &Server, client: &Client, token: &str) {
    let month = wattprint_core::UnixMillis(server.from_ms).to_rfc3339()[..7].to_owned();
    let list = client.statements().await.unwrap();
    assert!(
        list.statements.iter().any(|s| s.period == month),
        "{list:?}"
    );
    let st = client.statement(&month).await.unwrap();
    assert_eq!(st.period, month);
    assert_eq!(st.status, "preliminary");
    let (from, to) = (st.from.parse().unwrap(), st.to.parse().unwrap());
    let summary = client.summary(&from, &to).await.unwrap();
    assert_eq!(st.totals.it_energy_mj, summary.totals.it_energy_mj);
    assert!(st.totals.it_energy_mj >= 2 * trace_energy_mj());
    let pdf = client
        .statement_document(&month, StatementFormat::Pdf)
        .await
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let csv = client
        .statement_document(&month, StatementFormat::Csv)
        .await
        .unwrap();
    assert!(String::from_utf8(csv)
        .unwrap()
        .starts_with("statement_id,tenant,period"));
    let err = client.statement("2026-13").await.unwrap_err();
    assert!(err.to_string().contains("YYYY-MM"), "{err}");

    let bin = build_example("statement");
    let out = Command::new(&bin)
        .arg(&month)
        .env("WATTPRINT_URL", &server.url)
        .env("WATTPRINT_TOKEN", token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "example failed: {stdout}");
    // Read again: a preliminary statement is recomputed on read, the ledger is unchanged.
    let st = client.statement(&month).await.unwrap();
    assert!(
        stdout.contains(&format!(
            "statement {} acme {month} preliminary",
            st.statement_id
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "total it_energy_mj={} marginal_co2e_g={}",
            st.totals.it_energy_mj, st.totals.marginal_co2e_g
        )),
        "{stdout}"
    );
    for i in &st.instances {
        let line = format!(
            "instance {} it_energy_mj={}",
            i.instance_id, i.amounts.it_energy_mj
        );
        assert!(stdout.contains(&line), "{line} not in {stdout}");
    }
}

/// Builds one of the client's examples and returns its binary.
fn build_example(name: &str) -> std::path::PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "wattprint-client",
            "--example",
            name,
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(status.success(), "building the example failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples")
        .join(name)
}

/// Builds and runs `examples/footprint.rs` over the replay range and checks every number it
/// prints against the workload it created, read back through the client.
async fn run_example(server: &Server, client: &Client, token: &str, ids: &[String]) {
    let bin = build_example("footprint");
    let out = Command::new(&bin)
        .args(ids)
        .env("WATTPRINT_URL", &server.url)
        .env("WATTPRINT_TOKEN", token)
        .env("WATTPRINT_FROM", server.from_ms.to_string())
        .env("WATTPRINT_TO", server.to_ms.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let numbers = |prefix: &str| -> Vec<f64> { numbers_after(&stdout, prefix) };
    let id = line_after(&stdout, "workload:");
    let detail = client.workload(&id).await.unwrap();
    let fp = &detail.footprint;
    assert_eq!(
        numbers("energy:"),
        [
            fp.it_energy_kwh,
            fp.it_energy_mj as f64,
            fp.facility_energy_kwh
        ]
    );
    assert_eq!(fp.it_energy_mj, 2 * trace_energy_mj());
    assert_eq!(
        numbers("emissions marginal:"),
        [fp.operational_co2e_g, fp.operational_it_co2e_g]
    );
    let a = fp
        .average
        .as_ref()
        .expect("the embedded server has intensity sources");
    assert_eq!(
        numbers("emissions average:"),
        [
            a.operational_co2e_g,
            a.operational_it_co2e_g,
            a.sci_g_per_unit
        ]
    );
    assert_eq!(numbers("embodied:"), [fp.embodied_co2e_g]);
    assert_eq!(numbers("SCI:"), [fp.sci_g_per_unit]);
    let whatif = client.whatif(&id, &WhatIfQuery::default()).await.unwrap();
    assert_eq!(whatif.flexible_start.len(), 4, "the paper's four windows");
    for f in &whatif.flexible_start {
        let got = numbers(&format!("flexible start {} h:", f.window_hours));
        assert_eq!(
            got[..4],
            [
                f.best_delay_minutes as f64,
                f.best_co2e_g,
                f.actual_co2e_g,
                f.saving_co2e_g,
            ],
            "{stdout}"
        );
    }
    for r in &whatif.pause_resume {
        let got = numbers(&format!("pause and resume x{}:", r.factor));
        assert_eq!(
            got[..3],
            [r.co2e_g, r.actual_co2e_g, r.saving_co2e_g],
            "{stdout}"
        );
    }
}
