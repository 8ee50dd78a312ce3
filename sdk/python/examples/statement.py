"""The current month's carbon statement (preliminary until the month is issued), through the
Python SDK.

    TOKEN=$(wattprint token --tenant acme --role reader)
    WATTPRINT_URL=http://127.0.0.1:8080 WATTPRINT_TOKEN=$TOKEN \\
        python sdk/python/examples/statement.py [YYYY-MM]

Lists the tenant's statements, then prints one month (default: the current one) — totals, each
instance and workload, and adjustments — with numbers exactly as the API returned them; the
lines are those of the Rust client's example.
"""

from __future__ import annotations

import sys

import wattprint


def amounts(a: wattprint.StatementAmounts) -> str:
    location = "n/a" if a.location_co2e_g is None else repr(a.location_co2e_g)
    return (
        f"it_energy_mj={a.it_energy_mj} marginal_co2e_g={a.marginal_co2e_g!r} "
        f"location_co2e_g={location} embodied_co2e_g={a.embodied_co2e_g!r}"
    )


def main(argv: list[str]) -> int:
    try:
        client = wattprint.Client.from_env()
    except wattprint.WattprintError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with client:
        try:
            listed = client.statements()
            for s in listed.statements:
                print(f"month {s.period} {s.status} {s.content_sha256 or '-'}")
            period = argv[0] if argv else (listed.statements[0].period if listed.statements else "")
            st = client.statement(period)
        except wattprint.WattprintError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"statement {st.statement_id} {st.tenant} {st.period} {st.status}")
    print(f"total {amounts(st.totals)}")
    for i in st.instances:
        print(f"instance {i.instance_id} {amounts(i)}")
    for w in st.workloads:
        print(f"workload {w.workload_id} {w.label} sci_g_per_unit={w.sci_g_per_unit!r} {amounts(w)}")
    for a in st.adjustments:
        print(f"adjustment {a.period} it_energy_mj={a.it_energy_mj} marginal_co2e_g={a.marginal_co2e_g!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
