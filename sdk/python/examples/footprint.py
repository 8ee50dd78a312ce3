"""A workload's energy, emissions, SCI and carbon-aware what-ifs, through the Python SDK.

    TOKEN=$(wattprint token --tenant acme)      # admin (the default role): creates a workload
    WATTPRINT_URL=http://127.0.0.1:8080 WATTPRINT_TOKEN=$TOKEN \\
        python sdk/python/examples/footprint.py [INSTANCE_ID ...]

Lists the tenant's instances, creates a workload over the given ones (default: all) for
[WATTPRINT_FROM, WATTPRINT_TO) (RFC 3339 or Unix ms; default: the last hour), and prints its
footprint and the Flexible Start / Pause and Resume what-ifs. Numbers are printed exactly as
the API returned them, so they can be checked against it; the lines are those of the Rust
client's example.
"""

from __future__ import annotations

import os
import sys
import time

import wattprint


def env_time(name: str) -> int | str | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def main(argv: list[str]) -> int:
    try:
        client = wattprint.Client.from_env()
    except wattprint.WattprintError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with client:
        try:
            run(client, argv)
        except wattprint.WattprintError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


def run(client: wattprint.Client, ids: list[str]) -> None:
    instances = client.all_instances()
    print(f"instances: {len(instances)}")
    for i in instances:
        models = ", ".join(g.model for g in i.gpus)
        print(f"  {i.instance_id}  region {i.region}  zip {i.zip_code or '-'}  {len(i.gpus)} GPU(s) {models}")
    if not ids:
        ids = [i.instance_id for i in instances]
    if not ids:
        raise wattprint.WattprintError("the tenant has no instances to put in a workload")

    to = env_time("WATTPRINT_TO")
    if to is None:
        to = int(time.time() * 1000)
    from_ = env_time("WATTPRINT_FROM")
    if from_ is None:
        if not isinstance(to, int):
            raise wattprint.WattprintError("set WATTPRINT_FROM when WATTPRINT_TO is RFC 3339")
        from_ = to - 3_600_000

    created = client.create_workload(
        label="footprint example",
        instance_ids=ids,
        from_=from_,
        to=to,
        functional_unit="training run",
        functional_units=1.0,
    )
    w = client.workload(created.id)
    fp = w.footprint
    print(f"workload: {w.id}")
    print(f"  over {', '.join(w.instance_ids)} from {w.from_} to {w.to or 'now (open)'}")
    print(f"energy: {fp.it_energy_kwh!r} kWh IT ({fp.it_energy_mj} mJ), {fp.facility_energy_kwh!r} kWh facility")
    print(f"emissions marginal: {fp.operational_co2e_g!r} gCO2e facility, {fp.operational_it_co2e_g!r} gCO2e IT")
    a = fp.average
    if a is not None:
        print(
            f"emissions average: {a.operational_co2e_g!r} gCO2e facility, {a.operational_it_co2e_g!r} gCO2e IT, "
            f"SCI {a.sci_g_per_unit!r} gCO2e per {fp.functional_unit} (from {', '.join(a.intensity_sources)})"
        )
    else:
        print("emissions average: not reported by this server")
    print(f"embodied: {fp.embodied_co2e_g!r} gCO2e")
    print(f"SCI: {fp.sci_g_per_unit!r} gCO2e per {fp.functional_unit}")
    p = fp.provenance
    print(
        f"provenance: {p.intervals_actual} actual, {p.intervals_forecast} forecast, "
        f"{p.intervals_fallback} fallback, {p.intervals_missing_intensity} missing, "
        f"{p.intervals_replayed_intensity} replayed intervals; {p.energy_measured_share!r} of energy measured"
    )

    try:
        whatif = client.whatif(w.id)
    except wattprint.UnprocessableError as e:
        # 422: this data cannot answer (several regions, no actual intensity): say why.
        print(f"what-ifs unavailable: {e.detail}")
    else:
        replayed = ", replayed" if whatif.intensity_replayed else ""
        print(
            f"what-ifs ({whatif.basis_kind}: {whatif.basis}) for {whatif.region} "
            f"from {whatif.intensity_source}{replayed}:"
        )
        for f in whatif.flexible_start:
            print(
                f"flexible start {_num(f.window_hours)} h: best start {f.best_start} (+{f.best_delay_minutes} min) "
                f"{f.best_co2e_g!r} gCO2e, as run {f.actual_co2e_g!r} gCO2e, "
                f"saving {f.saving_co2e_g!r} gCO2e ({f.saving_pct:.2f}%)"
            )
        for r in whatif.pause_resume:
            print(
                f"pause and resume x{_num(r.factor)}: {r.co2e_g!r} gCO2e, as run {r.actual_co2e_g!r} gCO2e, "
                f"saving {r.saving_co2e_g!r} gCO2e ({r.saving_pct:.2f}%), "
                f"paused {r.paused_minutes} min in {len(r.schedule)} run(s)"
            )
        for u in whatif.unavailable:
            print(f"unavailable: {u}")
    page = client.list_workloads()
    print(f"workloads of the tenant on the first page: {len(page.workloads)}")


def _num(x: float) -> str:
    """``6`` for 6.0, ``1.5`` for 1.5: as the Rust example writes window hours and factors."""
    return str(int(x)) if x.is_integer() else repr(x)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
