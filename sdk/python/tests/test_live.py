"""Every client method against a real server whose replay of the H100 trace has finished (see
conftest.py): the numbers are checked against the trace's own energy and against each other,
and refusals arrive as the typed errors of their status."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

import wattprint
from conftest import Live


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def test_health_and_openapi(client: wattprint.Client) -> None:
    assert client.health().status == "ok"
    doc = client.openapi()
    assert str(doc["openapi"]).startswith("3.")
    paths = doc["paths"]
    for path in (
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
        "/v1/workloads/{id}/evidence",
        "/v1/operator/tenants",
        "/v1/operator/tenants/{tenant}/summary",
        "/v1/operator/statements/{period}",
    ):
        assert path in paths, path


def test_instances_and_their_pages(client: wattprint.Client) -> None:
    instances = client.all_instances()
    assert [i.instance_id for i in instances] == ["acme-gpu-vm-1", "acme-gpu-vm-2"]
    for i in instances:
        assert i.zip_code == "95112"
        assert [(g.model, g.power_limit_w) for g in i.gpus] == [("NVIDIA H100 80GB HBM3", 700.0)]
    assert list(client.iter_instances(page_size=1)) == instances
    first = client.list_instances(limit=1)
    assert first.instances == instances[:1] and first.next_cursor is not None
    second = client.list_instances(limit=1, cursor=first.next_cursor)
    assert second.instances == instances[1:] and second.next_cursor is None
    with pytest.raises(wattprint.BadRequestError):
        client.list_instances(limit=0)


def test_series_sum_to_the_trace_and_the_summary(client: wattprint.Client, live: Live) -> None:
    summary = client.summary(from_=live.from_ms, to=live.to_ms)
    assert summary.totals.it_energy_mj == 2 * live.gpu_energy_mj
    assert close(summary.totals.it_energy_kwh, 2 * live.gpu_energy_mj / 3.6e9, 1e-12)
    by_instance = {i.instance_id: i for i in summary.instances}
    co2e = 0.0
    for instance_id in ("acme-gpu-vm-1", "acme-gpu-vm-2"):
        s = client.instance_series(instance_id, from_=live.from_ms, to=live.to_ms, step="5m")
        assert s.step == "5m" and len(s.points) == 2
        assert s.energy_mj == live.gpu_energy_mj == by_instance[instance_id].it_energy_mj
        for p in s.points:
            assert isinstance(p, wattprint.AggregatePoint)
            assert p.intensity_kinds.replayed == 1
            co2e += p.facility_co2e_g
            assert p.average_intensity_g_per_kwh is not None and p.average_co2e_g is not None
            assert close(p.average_intensity_g_per_kwh, live.average_g_per_kwh, 1e-12)
            assert close(p.average_co2e_g, p.energy_kwh * live.average_g_per_kwh)
            assert p.average_facility_co2e_g is not None
            assert close(p.average_facility_co2e_g, p.average_co2e_g * 1.2, 1e-12)
        raw = client.instance_series(instance_id, from_=live.from_ms, to=live.to_ms, step="raw")
        assert all(isinstance(p, wattprint.RawPoint) for p in raw.points)
        assert raw.energy_mj == live.gpu_energy_mj
        assert {p.energy_source for p in raw.points} == {"counter"}
    assert close(summary.totals.operational_co2e_g, co2e)
    # Not vacuous: every interval was joined with an intensity (the emissions themselves may be
    # exactly 0 where the replayed MOER is 0 g/kWh, as in curtailment hours).
    assert summary.totals.gpu_intervals > 0
    assert summary.totals.provenance.intervals_missing_intensity == 0


def test_replayed_history_is_never_restated(client: wattprint.Client, live: Live) -> None:
    r = client.restatements(from_=live.from_ms, to=live.to_ms)
    assert r.restatements == [] and r.totals.intervals == 0


def test_workload_footprint_and_whatifs(client: wattprint.Client, live: Live) -> None:
    summary = client.summary(from_=live.from_ms, to=live.to_ms)
    w = client.create_workload(
        label="python sdk",
        instance_ids=["acme-gpu-vm-1", "acme-gpu-vm-2"],
        from_=live.from_ms,
        to=live.to_ms,
        functional_unit="epoch",
        functional_units=4,
        labels={"team": "sdk"},
    )
    assert (w.status, w.labels) == ("closed", {"team": "sdk"})
    d = client.workload(w.id)
    assert d.id == w.id and d.labels == w.labels
    fp = d.footprint
    assert fp.it_energy_mj == 2 * live.gpu_energy_mj
    assert close(fp.operational_co2e_g, summary.totals.operational_co2e_g)
    assert close(fp.total_co2e_g, fp.operational_co2e_g + fp.embodied_co2e_g, 1e-12)
    assert close(fp.sci_g_per_unit, fp.total_co2e_g / 4, 1e-12)
    assert fp.embodied.gpus == 2 and fp.embodied_co2e_g > 0
    assert fp.provenance.intervals_replayed_intensity == 4
    avg = fp.average
    assert avg is not None and avg.intensity_sources and avg.energy_without_intensity_mj == 0
    assert close(avg.operational_it_co2e_g, fp.it_energy_kwh * live.average_g_per_kwh)
    assert close(avg.operational_co2e_g, avg.operational_it_co2e_g * 1.2)
    assert close(avg.sci_g_per_unit, (avg.operational_co2e_g + fp.embodied_co2e_g) / 4, 1e-12)

    ev = client.evidence(w.id)
    assert isinstance(ev, wattprint.WorkloadEvidence) and ev.workload.id == w.id
    assert ev.energy.it_energy_mj == fp.it_energy_mj == ev.energy.measured_energy_mj
    assert ev.emissions.marginal_co2e_g == fp.operational_co2e_g
    assert ev.gpus == 2 and ev.content_sha256 is not None
    # The hash covers the content, not the request time: a later request gives the same one.
    time.sleep(0.005)
    again = client.evidence(w.id)
    assert again.generated_at != ev.generated_at and again.content_sha256 == ev.content_sha256
    other = wattprint.Client(live.url, live.other_token)
    with other, pytest.raises(wattprint.NotFoundError):
        other.evidence(w.id)

    wi = client.whatif(w.id, window_hours=[1, 6], factors=[1.5, 2], basis="actual")
    assert wi.workload_id == w.id and wi.intensity_replayed and wi.profile_slots == 2
    assert wi.basis_kind == "actual"
    assert all(f.realized_co2e_g is None for f in wi.flexible_start)
    assert [f.window_hours for f in wi.flexible_start] == [1.0, 6.0]
    for f in wi.flexible_start:
        assert close(f.actual_co2e_g, fp.operational_co2e_g, 1e-6)
        assert f.best_co2e_g <= f.actual_co2e_g <= f.worst_co2e_g
        assert close(f.saving_co2e_g, f.actual_co2e_g - f.best_co2e_g)
    assert [r.factor for r in wi.pause_resume] == [1.5, 2.0]
    for r in wi.pause_resume:
        assert r.co2e_g <= r.actual_co2e_g + 1e-9 and r.schedule
    with pytest.raises(wattprint.UnprocessableError) as e422:
        client.whatif(w.id, basis="forecast")
    assert "forecast" in e422.value.detail  # the demo's replayed history has no forecasts
    paper = client.whatif(w.id)
    assert [f.window_hours for f in paper.flexible_start] == [6.0, 12.0, 18.0, 24.0]


def test_open_label_close_and_list_by_status(client: wattprint.Client, live: Live) -> None:
    before = {w.id for w in client.all_workloads(status="all")}
    w = client.create_workload(
        label="still running",
        instance_ids=["acme-gpu-vm-1"],
        from_=live.from_ms,
        to=None,
        functional_unit="run",
        functional_units=1,
    )
    assert (w.status, w.to) == ("open", None)
    assert w.id in {x.id for x in client.all_workloads(status="open")}
    assert w.id not in {x.id for x in client.all_workloads(status="closed")}
    labelled = client.set_labels(w.id, {"project": "bert"})
    assert labelled.labels == {"project": "bert"}
    closed = client.close_workload(w.id, end=live.to_ms)
    assert closed.status == "closed" and closed.labels == {"project": "bert"}
    assert client.workload(w.id).footprint.it_energy_mj == live.gpu_energy_mj
    ids = [x.id for x in client.iter_workloads(status="all", page_size=1)]
    assert set(ids) == before | {w.id} and len(ids) == len(set(ids))
    page = client.list_workloads(limit=1, status="all")
    assert len(page.workloads) == 1 and page.next_cursor is not None


def test_refusals_are_typed_problems(client: wattprint.Client, live: Live) -> None:
    with wattprint.Client(live.url, "not-a-token") as bad:
        with pytest.raises(wattprint.UnauthorizedError) as e401:
            bad.all_instances()
    assert e401.value.type == "urn:wattprint:problem:unauthorized"
    w = client.create_workload(
        label="mine",
        instance_ids=["acme-gpu-vm-1"],
        from_=live.from_ms,
        to=live.to_ms,
        functional_unit="run",
        functional_units=1,
    )
    with wattprint.Client(live.url, live.other_token) as globex:
        with pytest.raises(wattprint.NotFoundError):
            globex.workload(w.id)
        with pytest.raises(wattprint.NotFoundError):
            globex.whatif(w.id)
        with pytest.raises(wattprint.NotFoundError):
            globex.instance_series("acme-gpu-vm-1")
    # An id with '/' and ' ' stays one path segment: the workload is not found (not the route).
    with pytest.raises(wattprint.NotFoundError) as e404:
        client.workload("a/b c")
    assert "a/b c" in e404.value.detail
    with pytest.raises(wattprint.BadRequestError) as e400:
        client.whatif(w.id, factors=[9])
    assert "factor" in e400.value.detail
    with pytest.raises(wattprint.BadRequestError):
        client.list_workloads(limit=1, cursor="no-such-cursor")


def test_roles(client: wattprint.Client, live: Live) -> None:
    assert live.reader_token is not None and live.operator_token is not None
    with wattprint.Client(live.url, live.reader_token) as reader:
        assert reader.all_instances() == client.all_instances()
        with pytest.raises(wattprint.ForbiddenError) as e403:
            reader.create_workload(
                label="no",
                instance_ids=["acme-gpu-vm-1"],
                from_=live.from_ms,
                to=live.to_ms,
                functional_unit="run",
                functional_units=1,
            )
        assert e403.value.type == "urn:wattprint:problem:forbidden"
    with pytest.raises(wattprint.ForbiddenError):
        client.operator_tenants()
    with wattprint.Client(live.url, live.operator_token) as op:
        tenants = op.operator_tenants().tenants
        assert [(t.tenant, t.instances, t.gpus) for t in tenants] == [("acme", 2, 2), ("globex", 2, 2)]
        seen = op.operator_tenant_summary("acme", from_=live.from_ms, to=live.to_ms)
        assert seen == client.summary(from_=live.from_ms, to=live.to_ms)
        with pytest.raises(wattprint.ForbiddenError):
            op.all_instances()
        month = _month_of(live.from_ms)
        export = op.operator_statements_export(month, "csv").decode()
        own = client.statement_document(month, "csv").decode()
        assert set(own.splitlines()) <= set(export.splitlines())
        assert any(",globex," in row for row in export.splitlines())
        assert op.operator_statements_export(month, "parquet").startswith(b"PAR1")
        with pytest.raises(ValueError):
            op.operator_statements_export(month, "xlsx")
    with pytest.raises(wattprint.ForbiddenError):
        client.operator_statements_export(_month_of(live.from_ms), "csv")


def test_rate_limit_is_a_typed_429(live: Live) -> None:
    assert live.hasty_token is not None
    with wattprint.Client(live.url, live.hasty_token) as hasty:
        for n in range(2 * live.rate_burst):
            try:
                assert hasty.list_instances().instances == []
            except wattprint.RateLimitedError as e:
                assert n >= live.rate_burst
                assert e.type == "urn:wattprint:problem:rate-limited"
                assert e.retry_after_s is not None and e.retry_after_s >= 1
                return
    pytest.fail("no 429 within twice the burst")


def test_async_client(live: Live) -> None:
    async def main() -> None:
        async with wattprint.AsyncClient(live.url, live.token) as c:
            assert (await c.health()).status == "ok"
            assert "paths" in await c.openapi()
            instances = await c.all_instances()
            assert [i.instance_id for i in instances] == ["acme-gpu-vm-1", "acme-gpu-vm-2"]
            assert (await c.list_instances(limit=2)).instances == instances
            s, summary = await asyncio.gather(
                c.instance_series("acme-gpu-vm-1", from_=live.from_ms, to=live.to_ms, step="1h"),
                c.summary(from_=live.from_ms, to=live.to_ms),
            )
            assert s.energy_mj == live.gpu_energy_mj
            assert summary.totals.it_energy_mj == 2 * live.gpu_energy_mj
            assert (await c.restatements(from_=live.from_ms, to=live.to_ms)).totals.intervals == 0
            w = await c.create_workload(
                label="async",
                instance_ids=["acme-gpu-vm-2"],
                from_=live.from_ms,
                to=None,
                functional_unit="run",
                functional_units=1,
            )
            assert w.id in {x.id for x in await c.all_workloads(status="open")}
            assert (await c.list_workloads(status="open")).workloads
            assert (await c.set_labels(w.id, {"a": "b"})).labels == {"a": "b"}
            closed = await c.close_workload(w.id, end=live.to_ms)
            assert closed.status == "closed"
            d = await c.workload(w.id)
            assert d.footprint.it_energy_mj == live.gpu_energy_mj
            wi = await c.whatif(w.id, window_hours=[1], factors=[2])
            assert len(wi.flexible_start) == 1 and len(wi.pause_resume) == 1
            with pytest.raises(wattprint.ForbiddenError):
                await c.operator_tenants()
        assert live.operator_token is not None
        async with wattprint.AsyncClient(live.url, live.operator_token) as op:
            assert len((await op.operator_tenants()).tenants) == 2
            seen = await op.operator_tenant_summary("globex", from_=live.from_ms, to=live.to_ms)
            assert seen.totals.it_energy_mj == 2 * live.gpu_energy_mj

    asyncio.run(main())


def _month_of(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m")


def test_the_months_statement_is_the_summary_of_the_month(client: wattprint.Client, live: Live) -> None:
    month = _month_of(live.from_ms)
    listed = client.statements()
    assert month in {s.period for s in listed.statements}
    st = client.statement(month)
    assert isinstance(st, wattprint.Statement)
    assert (st.period, st.status, st.tenant) == (month, "preliminary", "acme")
    assert st.content_sha256 is None and st.issued_at is None
    summary = client.summary(from_=st.from_, to=st.to)
    assert st.totals.it_energy_mj == summary.totals.it_energy_mj >= 2 * live.gpu_energy_mj
    assert close(st.totals.marginal_co2e_g, summary.totals.operational_co2e_g)
    assert sum(i.it_energy_mj for i in st.instances) == st.totals.it_energy_mj
    assert sum(d.it_energy_mj for d in st.daily) == st.totals.it_energy_mj
    assert st.market_based.status == "not_configured" and st.market_based.co2e_g is None
    ca = st.carbon_aware
    assert ca is not None and ca.window_hours == 24 and ca.deadline_factor == 2
    assert ca.flexible_start_saving_co2e_g == sum(
        w.flexible_start_saving_co2e_g or 0 for w in ca.workloads
    )
    assert client.statement_document(month, "pdf").startswith(b"%PDF-")
    assert client.statement_document(month, "csv").startswith(b"statement_id,tenant,period")
    with pytest.raises(wattprint.BadRequestError):
        client.statement("2026-13")
    with pytest.raises(ValueError):
        client.statement_document(month, "xlsx")
    # Another tenant's month holds none of acme's instances.
    other = wattprint.Client(live.url, live.other_token)
    with other:
        theirs = other.statement(month)
    assert not {i.instance_id for i in theirs.instances} & {i.instance_id for i in st.instances}
