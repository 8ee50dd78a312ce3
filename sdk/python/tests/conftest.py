"""Fixtures for the tests against a running server.

The server and its data come from the environment, set by the Rust harness
(`tests/tests/it/python_sdk.rs`), which starts a real `wattprint up` whose replay of the shipped
H100 trace has finished:

- ``WATTPRINT_URL``, ``WATTPRINT_TOKEN``: the API and an admin token of tenant ``acme``;
- ``WATTPRINT_OTHER_TOKEN``: a token of tenant ``globex``;
- ``WATTPRINT_READER_TOKEN``: a reader (not admin) token of ``acme``;
- ``WATTPRINT_OPERATOR_TOKEN``: an operator token;
- ``WATTPRINT_HASTY_TOKEN``: a token of a tenant no other test uses, for the rate limit test,
  and ``WATTPRINT_TEST_RATE_BURST``: the server's per-tenant burst;
- ``WATTPRINT_TEST_FROM``, ``WATTPRINT_TEST_TO``: a range (Unix ms) holding the whole replay;
- ``WATTPRINT_TEST_GPU_ENERGY_MJ``: one GPU's energy over the replay, read from the trace CSV;
- ``WATTPRINT_TEST_AVERAGE_G_PER_KWH``: the demo regions' static average intensity (eGRID CAMX),
  read from the shipped table.

Without them the live tests are skipped, unless ``WATTPRINT_TEST_REQUIRE`` is set (the
harness sets it): then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import wattprint


@dataclass(frozen=True)
class Live:
    url: str
    token: str
    other_token: str
    reader_token: str | None
    operator_token: str | None
    hasty_token: str | None
    rate_burst: int
    from_ms: int
    to_ms: int
    gpu_energy_mj: int
    average_g_per_kwh: float


@pytest.fixture(scope="session")
def live() -> Live:
    try:
        return Live(
            url=os.environ["WATTPRINT_URL"],
            token=os.environ["WATTPRINT_TOKEN"],
            other_token=os.environ["WATTPRINT_OTHER_TOKEN"],
            reader_token=os.environ.get("WATTPRINT_READER_TOKEN") or None,
            operator_token=os.environ.get("WATTPRINT_OPERATOR_TOKEN") or None,
            hasty_token=os.environ.get("WATTPRINT_HASTY_TOKEN") or None,
            rate_burst=int(os.environ.get("WATTPRINT_TEST_RATE_BURST", "0")),
            from_ms=int(os.environ["WATTPRINT_TEST_FROM"]),
            to_ms=int(os.environ["WATTPRINT_TEST_TO"]),
            gpu_energy_mj=int(os.environ["WATTPRINT_TEST_GPU_ENERGY_MJ"]),
            average_g_per_kwh=float(os.environ["WATTPRINT_TEST_AVERAGE_G_PER_KWH"]),
        )
    except KeyError as e:
        if os.environ.get("WATTPRINT_TEST_REQUIRE"):
            pytest.fail(f"WATTPRINT_TEST_REQUIRE is set but {e.args[0]} is not")
        pytest.skip(f"no server configured ({e.args[0]} unset)")


@pytest.fixture(scope="session")
def client(live: Live) -> Iterator[wattprint.Client]:
    with wattprint.Client(live.url, live.token) as c:
        yield c
