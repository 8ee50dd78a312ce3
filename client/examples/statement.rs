//! The current month's carbon statement (preliminary until the month is issued), through the
//! client.
//!
//! ```sh
//! TOKEN=$(wattprint token --tenant acme --role reader)
//! WATTPRINT_URL=http://127.0.0.1:8080 WATTPRINT_TOKEN=$TOKEN \
//!   cargo run -p wattprint-client --example statement -- [YYYY-MM]
//! ```
//!
//! Lists the tenant's statements, then prints one month (default: the current one) — totals,
//! each instance and workload, and adjustments — with numbers exactly as the API returned
//! them, so they can be checked against it; the lines are those of the Python SDK's example.

use std::process::ExitCode;

use wattprint_client::{Client, Error, StatementAmounts};

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

fn amounts(a: &StatementAmounts) -> String {
    let location = a
        .location_co2e_g
        .map_or_else(|| "n/a".to_owned(), |g| g.to_string());
    format!(
        "it_energy_mj={} marginal_co2e_g={} location_co2e_g={location} embodied_co2e_g={}",
        a.it_energy_mj, a.marginal_co2e_g, a.embodied_co2e_g
    )
}

async fn run() -> Result<(), Error> {
    let client = Client::from_env()?;
    let list = client.statements().await?;
    for s in &list.statements {
        println!(
            "month {} {} {}",
            s.period,
            s.status,
            s.content_sha256.as_deref().unwrap_or("-")
        );
    }
    let period = match std::env::args().nth(1) {
        Some(p) => p,
        None => list
            .statements
            .first()
            .map(|s| s.period.clone())
            .unwrap_or_default(),
    };
    let st = client.statement(&period).await?;
    println!(
        "statement {} {} {} {}",
        st.statement_id, st.tenant, st.period, st.status
    );
    println!("total {}", amounts(&st.totals));
    for i in &st.instances {
        println!("instance {} {}", i.instance_id, amounts(&i.amounts));
    }
    for w in &st.workloads {
        println!(
            "workload {} {} sci_g_per_unit={} {}",
            w.workload_id,
            w.label,
            w.sci_g_per_unit,
            amounts(&w.amounts)
        );
    }
    for a in &st.adjustments {
        println!(
            "adjustment {} it_energy_mj={} marginal_co2e_g={}",
            a.period, a.it_energy_mj, a.marginal_co2e_g
        );
    }
    Ok(())
}
