//! A workload's energy, emissions, SCI and carbon-aware what-ifs, through the client.
//!
//! ```sh
//! TOKEN=$(wattprint token --tenant acme)      # admin (the default role): creates a workload
//! WATTPRINT_URL=http://127.0.0.1:8080 WATTPRINT_TOKEN=$TOKEN \
//!   cargo run -p wattprint-client --example footprint -- [INSTANCE_ID ...]
//! ```
//!
//! Lists the tenant's instances, creates a workload over the given ones (default: all) for
//! `[WATTPRINT_FROM, WATTPRINT_TO)` (RFC 3339 or Unix ms; default: the last hour), and prints
//! its footprint and the Flexible Start / Pause and Resume what-ifs. Numbers are printed as
//! the API returned them (shortest exact form), so they can be checked against it.

use std::process::ExitCode;

use wattprint_client::{
    Client, Error, NewWorkload, PageRequest, Timestamp, WhatIfQuery, WorkloadDetail,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_time(name: &str) -> Option<Timestamp> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn run() -> Result<(), Error> {
    let client = Client::from_env()?;
    let instances = print_instances(&client).await?;
    let mut ids: Vec<String> = std::env::args().skip(1).collect();
    if ids.is_empty() {
        ids = instances;
    }
    if ids.is_empty() {
        return Err(Error::InvalidArgument(
            "the tenant has no instances to put in a workload".into(),
        ));
    }
    let (from, to) = range()?;
    let created = client
        .create_workload(&NewWorkload {
            label: "footprint example".into(),
            instance_ids: ids,
            from,
            to: Some(to),
            functional_unit: "training run".into(),
            functional_units: 1.0,
            labels: Default::default(),
        })
        .await?;
    let detail = client.workload(&created.id).await?;
    print_footprint(&detail);
    print_whatifs(&client, &detail.workload.id).await?;
    let page = client.list_workloads(&PageRequest::default(), None).await?;
    println!(
        "workloads of the tenant on the first page: {}",
        page.workloads.len()
    );
    Ok(())
}

/// Prints the tenant's instances; returns their ids.
async fn print_instances(client: &Client) -> Result<Vec<String>, Error> {
    let instances = client.all_instances(None).await?;
    println!("instances: {}", instances.len());
    for i in &instances {
        let models: Vec<&str> = i.gpus.iter().map(|g| g.model.as_str()).collect();
        println!(
            "  {}  region {}  zip {}  {} GPU(s) {}",
            i.instance_id,
            i.region,
            i.zip_code.as_deref().unwrap_or("-"),
            i.gpus.len(),
            models.join(", ")
        );
    }
    Ok(instances.iter().map(|i| i.instance_id.clone()).collect())
}

/// `[WATTPRINT_FROM, WATTPRINT_TO)`, by default the last hour.
fn range() -> Result<(Timestamp, Timestamp), Error> {
    let to = env_time("WATTPRINT_TO").unwrap_or_else(Timestamp::now);
    let from = match (env_time("WATTPRINT_FROM"), &to) {
        (Some(from), _) => from,
        (None, Timestamp::UnixMillis(ms)) => Timestamp::UnixMillis(ms - 3_600_000),
        (None, Timestamp::Rfc3339(_)) => {
            return Err(Error::InvalidArgument(
                "set WATTPRINT_FROM when WATTPRINT_TO is RFC 3339".into(),
            ))
        }
    };
    Ok((from, to))
}

/// Prints a workload with its footprint, as the API returned the numbers.
fn print_footprint(detail: &WorkloadDetail) {
    let w = &detail.workload;
    let fp = &detail.footprint;
    println!("workload: {}", w.id);
    println!(
        "  over {} from {} to {}",
        w.instance_ids.join(", "),
        w.from,
        w.to.as_deref().unwrap_or("now (open)")
    );
    println!(
        "energy: {} kWh IT ({} mJ), {} kWh facility",
        fp.it_energy_kwh, fp.it_energy_mj, fp.facility_energy_kwh
    );
    println!(
        "emissions marginal: {} gCO2e facility, {} gCO2e IT",
        fp.operational_co2e_g, fp.operational_it_co2e_g
    );
    match &fp.average {
        Some(a) => println!(
            "emissions average: {} gCO2e facility, {} gCO2e IT, SCI {} gCO2e per {} (from {})",
            a.operational_co2e_g,
            a.operational_it_co2e_g,
            a.sci_g_per_unit,
            fp.functional_unit,
            a.intensity_sources.join(", ")
        ),
        None => println!("emissions average: not reported by this server"),
    }
    println!("embodied: {} gCO2e", fp.embodied_co2e_g);
    println!(
        "SCI: {} gCO2e per {}",
        fp.sci_g_per_unit, fp.functional_unit
    );
    let p = &fp.provenance;
    println!(
        "provenance: {} actual, {} forecast, {} fallback, {} missing, {} replayed intervals; {} of energy measured",
        p.intervals_actual,
        p.intervals_forecast,
        p.intervals_fallback,
        p.intervals_missing_intensity,
        p.intervals_replayed_intensity,
        p.energy_measured_share
    );
}

/// Prints the Flexible Start and Pause and Resume what-ifs of workload `id`.
async fn print_whatifs(client: &Client, id: &str) -> Result<(), Error> {
    match client.whatif(id, &WhatIfQuery::default()).await {
        Ok(whatif) => {
            println!(
                "what-ifs ({}: {}) for {} from {}{}:",
                whatif.basis_kind.as_str(),
                whatif.basis,
                whatif.region,
                whatif.intensity_source,
                if whatif.intensity_replayed {
                    ", replayed"
                } else {
                    ""
                }
            );
            for f in &whatif.flexible_start {
                println!(
                    "flexible start {} h: best start {} (+{} min) {} gCO2e, as run {} gCO2e, saving {} gCO2e ({:.2}%)",
                    f.window_hours,
                    f.best_start,
                    f.best_delay_minutes,
                    f.best_co2e_g,
                    f.actual_co2e_g,
                    f.saving_co2e_g,
                    f.saving_pct
                );
            }
            for r in &whatif.pause_resume {
                println!(
                    "pause and resume x{}: {} gCO2e, as run {} gCO2e, saving {} gCO2e ({:.2}%), paused {} min in {} run(s)",
                    r.factor,
                    r.co2e_g,
                    r.actual_co2e_g,
                    r.saving_co2e_g,
                    r.saving_pct,
                    r.paused_minutes,
                    r.schedule.len()
                );
            }
            for u in &whatif.unavailable {
                println!("unavailable: {u}");
            }
        }
        // 422: this data cannot answer (several regions, no actual intensity): say why.
        Err(Error::Api(p)) if p.status == 422 => println!("what-ifs unavailable: {}", p.detail),
        Err(e) => return Err(e),
    }
    Ok(())
}
