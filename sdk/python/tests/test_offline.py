"""Decoding, errors and argument handling, without a server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import wattprint
from wattprint._decode import decode
from wattprint.client import _numbers
from wattprint.errors import problem_error


def test_a_problem_document_becomes_the_error_of_its_status() -> None:
    body = json.dumps(
        {"type": "urn:wattprint:problem:not-found", "title": "Not found", "status": 404, "detail": "workload w not found"}
    ).encode()
    e = problem_error(404, "Not Found", body, None)
    assert isinstance(e, wattprint.NotFoundError)
    assert (e.type, e.title, e.status, e.detail) == ("urn:wattprint:problem:not-found", "Not found", 404, "workload w not found")
    assert str(e) == "wattprint API error 404 Not found: workload w not found"


def test_another_body_becomes_an_about_blank_problem() -> None:
    e = problem_error(429, "Too Many Requests", b"<html>slow down</html>", 7)
    assert isinstance(e, wattprint.RateLimitedError)
    assert (e.type, e.title, e.retry_after_s) == ("about:blank", "Too Many Requests", 7)
    assert "slow down" in e.detail
    # A document whose status disagrees with the response's is not trusted.
    e = problem_error(502, "Bad Gateway", b'{"status": 200, "title": "fine"}', None)
    assert type(e) is wattprint.ApiError and e.type == "about:blank" and e.status == 502


def test_decoding_checks_types_ignores_unknown_fields_and_reads_from_() -> None:
    w = decode(
        wattprint.Workload,
        {
            "id": "w-1",
            "label": "l",
            "instance_ids": ["i"],
            "from": "2026-11-23T00:00:00.000Z",
            "to": None,
            "functional_unit": "run",
            "functional_units": 2,
            "created_at": "x",
            "status": "open",
            "labels": {"team": "a"},
            "added_later": [1, 2],
        },
    )
    assert w.from_ == "2026-11-23T00:00:00.000Z" and w.to is None
    assert w.functional_units == 2.0 and isinstance(w.functional_units, float)
    assert w.labels == {"team": "a"}
    with pytest.raises(wattprint.DecodeError, match=r"\$\.gpus\[0\]\.power_limit_w"):
        decode(
            wattprint.Instance,
            {"instance_id": "i", "region": "r", "zip_code": None, "gpus": [{"uuid": "u", "model": "m", "power_limit_w": "700"}]},
        )
    with pytest.raises(wattprint.DecodeError, match="missing field 'region'"):
        decode(wattprint.Instance, {"instance_id": "i", "zip_code": None, "gpus": []})
    with pytest.raises(wattprint.DecodeError, match="integer"):
        decode(wattprint.Coverage, {"expected_gpu_ms": True, "covered_gpu_ms": 1})


def test_times_and_number_lists_are_sent_as_the_api_takes_them() -> None:
    t = datetime(2026, 11, 23, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert wattprint.to_api_time(t) == "2026-11-23T00:00:00Z"
    assert wattprint.to_api_time(1_700_000_000_000) == 1_700_000_000_000
    with pytest.raises(ValueError):
        wattprint.to_api_time(datetime(2026, 11, 23))
    assert _numbers([6, 1.5, 24.0]) == "6,1.5,24"


def test_bad_base_urls_and_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        wattprint.Client("localhost:8080", "t")
    with pytest.raises(ValueError):
        wattprint.Client("http://x", "a\nb")
    with pytest.raises(ValueError):
        wattprint.AsyncClient("http://x", " ")


def test_a_maximal_series_decodes_every_point() -> None:
    # 20,000 points, the most a series request may return: each point's values come back, and a
    # bad value deep inside still names its path.
    n = 20_000

    def point(i: int) -> dict[str, object]:
        return {
            "start": f"p{i}",
            "end": f"p{i + 1}",
            "energy_mj": i,
            "energy_kwh": i / 3.6e9,
            "estimated_energy_mj": i % 7,
            "power_mean_w": None if i % 2 else 300 + i,
            "power_max_w": 700.5,
            "coverage": 1,
            "intensity_g_per_kwh": None if i % 3 == 0 else 250.25,
            "intensity_kinds": {"actual": i % 5, "forecast": 0, "fallback_average": 1, "missing": 0, "replayed": 0},
            "co2e_g": i * 0.5,
            "facility_co2e_g": i * 0.6,
            "co2e_missing_energy_mj": 0,
            "average_co2e_g": i * 0.25,
        }

    body = {"instance_id": "i-1", "step": "5m", "from": "a", "to": "b", "points": [point(i) for i in range(n)]}
    s = decode(wattprint.Series, body)
    assert (s.instance_id, s.step, s.from_, s.to) == ("i-1", "5m", "a", "b")
    assert len(s.points) == n and s.energy_mj == n * (n - 1) // 2
    for i in (0, 1, 2, 9_999, n - 1):
        p = s.points[i]
        assert isinstance(p, wattprint.AggregatePoint)
        assert (p.start, p.end, p.energy_mj, p.estimated_energy_mj) == (f"p{i}", f"p{i + 1}", i, i % 7)
        assert p.energy_kwh == i / 3.6e9 and p.co2e_g == i * 0.5 and p.facility_co2e_g == i * 0.6
        assert p.power_mean_w == (None if i % 2 else float(300 + i))
        assert isinstance(p.power_mean_w, (float, type(None)))
        assert p.coverage == 1.0 and isinstance(p.coverage, float)
        assert p.intensity_g_per_kwh == (None if i % 3 == 0 else 250.25)
        assert p.intensity_kinds == wattprint.IntensityKinds(actual=i % 5, forecast=0, fallback_average=1, missing=0, replayed=0)
        assert (p.average_co2e_g, p.average_intensity_g_per_kwh, p.average_facility_co2e_g) == (i * 0.25, None, None)
    body["points"][n - 1]["intensity_kinds"]["missing"] = "none"  # type: ignore[index]
    with pytest.raises(wattprint.DecodeError, match=r"\$\.points\[19999\]\.intensity_kinds\.missing: expected an integer"):
        decode(wattprint.Series, body)
