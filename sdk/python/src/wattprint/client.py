"""Sync and async clients: one method per endpoint.

Both clients build the same :class:`_Call` for an endpoint (method, path, query, body and how to
decode the answer) and differ only in how they send it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._decode import decode
from .errors import DecodeError, TransportError, WattprintError, problem_error
from .models import (
    AggregatePoint,
    Health,
    Instance,
    InstanceList,
    OperatorTenantList,
    RawPoint,
    Restatements,
    Series,
    Statement,
    StatementList,
    TenantSummary,
    WhatIf,
    Workload,
    WorkloadDetail,
    WorkloadEvidence,
    WorkloadList,
)

T = TypeVar("T")

#: Environment variable holding the API's base URL.
ENV_URL = "WATTPRINT_URL"
#: Environment variable holding the bearer token.
ENV_TOKEN = "WATTPRINT_TOKEN"

#: A point in time as the API takes it: an aware ``datetime``, Unix milliseconds, or RFC 3339.
Time = datetime | int | str


def to_api_time(t: Time) -> int | str:
    """``t`` as the API takes it. A naive ``datetime`` is refused: its zone is unknown."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("datetime must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(t, bool):
        raise TypeError("a time is a datetime, Unix milliseconds or an RFC 3339 string")
    return t


def _numbers(xs: Sequence[float]) -> str:
    """``6,1.5``: whole numbers without a decimal point, others as Python writes them."""
    return ",".join(str(int(x)) if float(x).is_integer() else repr(float(x)) for x in xs)


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    decode: Callable[[Any], T]
    params: Mapping[str, str] | None = None
    body: Any = None
    auth: bool = True
    # The answer's bytes as they are (documents: CSV, PDF), not JSON to decode.
    raw: bool = False


def _seg(s: str) -> str:
    return quote(s, safe="")


def _query(**kw: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in kw.items():
        if v is None:
            continue
        out[k] = str(to_api_time(v) if isinstance(v, datetime) else v)
    return out


def _decode_series(data: Any) -> Series:
    if not isinstance(data, dict):
        raise DecodeError("$: expected an object (Series)")
    point_type: type[RawPoint] | type[AggregatePoint] = (
        RawPoint if data.get("step") == "raw" else AggregatePoint
    )
    points: list[RawPoint] | list[AggregatePoint]
    if point_type is RawPoint:
        points = decode(list[RawPoint], data.get("points"))
    else:
        points = decode(list[AggregatePoint], data.get("points"))
    head = decode(_SeriesHead, data)
    return Series(instance_id=head.instance_id, step=head.step, from_=head.from_, to=head.to, points=points)


@dataclass(frozen=True, kw_only=True)
class _SeriesHead:
    instance_id: str
    step: str
    from_: str
    to: str


def _as(tp: type[T]) -> Callable[[Any], T]:
    return lambda data: decode(tp, data)


class _Endpoints:
    """Every endpoint as a :class:`_Call`."""

    @staticmethod
    def health() -> _Call[Health]:
        return _Call("GET", "/healthz", _as(Health), auth=False)

    @staticmethod
    def openapi() -> _Call[dict[str, Any]]:
        return _Call("GET", "/openapi.json", _as(dict[str, Any]))

    @staticmethod
    def list_instances(limit: int | None, cursor: str | None) -> _Call[InstanceList]:
        return _Call("GET", "/v1/instances", _as(InstanceList), _query(limit=limit, cursor=cursor))

    @staticmethod
    def instance_series(instance_id: str, from_: Time | None, to: Time | None, step: str | None) -> _Call[Series]:
        return _Call(
            "GET",
            f"/v1/instances/{_seg(instance_id)}/series",
            _decode_series,
            _query(**{"from": from_, "to": to, "step": step}),
        )

    @staticmethod
    def summary(from_: Time, to: Time) -> _Call[TenantSummary]:
        return _Call("GET", "/v1/summary", _as(TenantSummary), _query(**{"from": from_, "to": to}))

    @staticmethod
    def restatements(from_: Time, to: Time) -> _Call[Restatements]:
        return _Call("GET", "/v1/restatements", _as(Restatements), _query(**{"from": from_, "to": to}))

    @staticmethod
    def statements() -> _Call[StatementList]:
        return _Call("GET", "/v1/statements", _as(StatementList))

    @staticmethod
    def statement(period: str) -> _Call[Statement]:
        return _Call("GET", f"/v1/statements/{_seg(period)}", _as(Statement))

    @staticmethod
    def statement_document(period: str, fmt: str) -> _Call[bytes]:
        if fmt not in ("json", "csv", "pdf"):
            raise ValueError(f"statement format {fmt!r} is not json, csv or pdf")
        return _Call("GET", f"/v1/statements/{_seg(period)}.{fmt}", bytes, raw=True)

    @staticmethod
    def create_workload(
        label: str,
        instance_ids: Sequence[str],
        from_: Time,
        to: Time | None,
        functional_unit: str,
        functional_units: float,
        labels: Mapping[str, str] | None,
    ) -> _Call[Workload]:
        body: dict[str, Any] = {
            "label": label,
            "instance_ids": list(instance_ids),
            "from": to_api_time(from_),
            "functional_unit": functional_unit,
            "functional_units": functional_units,
        }
        if to is not None:
            body["to"] = to_api_time(to)
        if labels is not None:
            body["labels"] = dict(labels)
        return _Call("POST", "/v1/workloads", _as(Workload), body=body)

    @staticmethod
    def list_workloads(limit: int | None, cursor: str | None, status: str | None) -> _Call[WorkloadList]:
        return _Call(
            "GET", "/v1/workloads", _as(WorkloadList), _query(limit=limit, cursor=cursor, status=status)
        )

    @staticmethod
    def workload(workload_id: str) -> _Call[WorkloadDetail]:
        return _Call("GET", f"/v1/workloads/{_seg(workload_id)}", _as(WorkloadDetail))

    @staticmethod
    def evidence(workload_id: str) -> _Call[WorkloadEvidence]:
        return _Call("GET", f"/v1/workloads/{_seg(workload_id)}/evidence", _as(WorkloadEvidence))

    @staticmethod
    def set_labels(workload_id: str, labels: Mapping[str, str]) -> _Call[Workload]:
        return _Call(
            "PUT", f"/v1/workloads/{_seg(workload_id)}/labels", _as(Workload), body={"labels": dict(labels)}
        )

    @staticmethod
    def close_workload(workload_id: str, end: Time | None) -> _Call[Workload]:
        body = {} if end is None else {"end": to_api_time(end)}
        return _Call("POST", f"/v1/workloads/{_seg(workload_id)}/close", _as(Workload), body=body)

    @staticmethod
    def whatif(
        workload_id: str,
        window_hours: Sequence[float] | None,
        factors: Sequence[float] | None,
        basis: str | None,
    ) -> _Call[WhatIf]:
        params = _query(
            window_hours=_numbers(window_hours) if window_hours else None,
            factor=_numbers(factors) if factors else None,
            basis=basis,
        )
        return _Call("GET", f"/v1/workloads/{_seg(workload_id)}/whatif", _as(WhatIf), params)

    @staticmethod
    def operator_tenants() -> _Call[OperatorTenantList]:
        return _Call("GET", "/v1/operator/tenants", _as(OperatorTenantList))

    @staticmethod
    def operator_tenant_summary(tenant: str, from_: Time, to: Time) -> _Call[TenantSummary]:
        return _Call(
            "GET",
            f"/v1/operator/tenants/{_seg(tenant)}/summary",
            _as(TenantSummary),
            _query(**{"from": from_, "to": to}),
        )

    @staticmethod
    def operator_statements_export(period: str, fmt: str) -> _Call[bytes]:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"statement export format {fmt!r} is not csv or parquet")
        return _Call("GET", f"/v1/operator/statements/{_seg(period)}.{fmt}", bytes, raw=True)


def _finish(call: _Call[T], resp: httpx.Response) -> T:
    if not resp.is_success:
        retry = resp.headers.get("retry-after", "").strip()
        raise problem_error(
            resp.status_code, resp.reason_phrase, resp.content, int(retry) if retry.isdigit() else None
        )
    if call.raw:
        return call.decode(resp.content)
    try:
        data = json.loads(resp.content)
    except ValueError as e:
        raise DecodeError(f"{call.path} (status {resp.status_code}): not JSON: {e}") from e
    try:
        return call.decode(data)
    except DecodeError as e:
        raise DecodeError(f"{call.path} (status {resp.status_code}): {e}") from e


def _headers(token: str) -> dict[str, str]:
    token = token.strip()
    if not token or any(c in token for c in "\r\n"):
        raise ValueError("token must be a non-empty single line")
    return {"Authorization": f"Bearer {token}", "Accept": "application/json, application/problem+json"}


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base URL {url!r} must start with http:// or https://")
    return url.rstrip("/")


def _env() -> tuple[str, str]:
    try:
        return os.environ[ENV_URL], os.environ[ENV_TOKEN]
    except KeyError as e:
        raise WattprintError(f"environment variable {e.args[0]} is not set") from None


class _CursorGuard:
    """Follows a listing's cursors, refusing one handed out twice (a listing that never ends)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: set[str] = set()

    def next(self, cursor: str | None) -> str | None:
        if not cursor:
            return None
        if cursor in self.seen:
            raise WattprintError(f"pagination of {self.path} repeated cursor {cursor!r}")
        self.seen.add(cursor)
        return cursor


class Client:
    """Synchronous client of one Wattprint query API acting with one bearer token.

    Use as a context manager (or call :meth:`close`) to release its connections.
    """

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, http: httpx.Client | None = None
    ) -> None:
        self._base = _base(base_url)
        self._headers = _headers(token)
        self._http = http or httpx.Client(timeout=timeout)

    @classmethod
    def from_env(cls, *, timeout: float = 30.0) -> Client:
        """A client from ``WATTPRINT_URL`` and ``WATTPRINT_TOKEN``."""
        url, token = _env()
        return cls(url, token, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        headers = self._headers if call.auth else {"Accept": self._headers["Accept"]}
        try:
            resp = self._http.request(
                call.method, self._base + call.path, params=call.params, json=call.body, headers=headers
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{call.method} {call.path}: {e}") from e
        return _finish(call, resp)

    def health(self) -> Health:
        """``GET /healthz`` (no token sent)."""
        return self._run(_Endpoints.health())

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the API's OpenAPI 3 document."""
        return self._run(_Endpoints.openapi())

    def list_instances(self, *, limit: int | None = None, cursor: str | None = None) -> InstanceList:
        """``GET /v1/instances``: one page of the tenant's instances."""
        return self._run(_Endpoints.list_instances(limit, cursor))

    def all_instances(self, *, page_size: int | None = None) -> list[Instance]:
        """All the tenant's instances, following ``next_cursor``."""
        return list(self.iter_instances(page_size=page_size))

    def iter_instances(self, *, page_size: int | None = None) -> Iterator[Instance]:
        """The tenant's instances, page by page as they are iterated."""
        guard, cursor = _CursorGuard("/v1/instances"), None
        while True:
            page = self.list_instances(limit=page_size, cursor=cursor)
            yield from page.instances
            if (cursor := guard.next(page.next_cursor)) is None:
                return

    def instance_series(
        self, instance_id: str, *, from_: Time | None = None, to: Time | None = None, step: str | None = None
    ) -> Series:
        """``GET /v1/instances/{id}/series``; ``step`` is ``raw``, ``5m``, ``1h`` or ``1d``."""
        return self._run(_Endpoints.instance_series(instance_id, from_, to, step))

    def summary(self, *, from_: Time, to: Time) -> TenantSummary:
        """``GET /v1/summary``: the tenant's usage per instance and in total."""
        return self._run(_Endpoints.summary(from_, to))

    def restatements(self, *, from_: Time, to: Time) -> Restatements:
        """``GET /v1/restatements``: intervals whose intensity was restated, with the change."""
        return self._run(_Endpoints.restatements(from_, to))

    def statements(self) -> StatementList:
        """``GET /v1/statements``: the tenant's months, issued newest first, then preliminary."""
        return self._run(_Endpoints.statements())

    def statement(self, period: str) -> Statement:
        """``GET /v1/statements/{period}``: the month (``YYYY-MM``), issued or preliminary."""
        return self._run(_Endpoints.statement(period))

    def statement_document(self, period: str, fmt: str) -> bytes:
        """The month's statement as a document: ``json`` (as issued), ``csv`` or ``pdf``."""
        return self._run(_Endpoints.statement_document(period, fmt))

    def create_workload(
        self,
        *,
        label: str,
        instance_ids: Sequence[str],
        from_: Time,
        to: Time | None,
        functional_unit: str,
        functional_units: float,
        labels: Mapping[str, str] | None = None,
    ) -> Workload:
        """``POST /v1/workloads``; ``to=None`` opens a workload (on servers that have them)."""
        return self._run(
            _Endpoints.create_workload(label, instance_ids, from_, to, functional_unit, functional_units, labels)
        )

    def list_workloads(
        self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None
    ) -> WorkloadList:
        """``GET /v1/workloads``: one page, newest first; ``status`` is ``open``, ``closed`` or
        ``all``."""
        return self._run(_Endpoints.list_workloads(limit, cursor, status))

    def all_workloads(self, *, status: str | None = None, page_size: int | None = None) -> list[Workload]:
        """All the tenant's workloads, following ``next_cursor``."""
        return list(self.iter_workloads(status=status, page_size=page_size))

    def iter_workloads(self, *, status: str | None = None, page_size: int | None = None) -> Iterator[Workload]:
        """The tenant's workloads, page by page as they are iterated."""
        guard, cursor = _CursorGuard("/v1/workloads"), None
        while True:
            page = self.list_workloads(limit=page_size, cursor=cursor, status=status)
            yield from page.workloads
            if (cursor := guard.next(page.next_cursor)) is None:
                return

    def workload(self, workload_id: str) -> WorkloadDetail:
        """``GET /v1/workloads/{id}``: the workload with its footprint (energy, emissions, SCI)."""
        return self._run(_Endpoints.workload(workload_id))

    def evidence(self, workload_id: str) -> WorkloadEvidence:
        """``GET /v1/workloads/{id}/evidence``: the workload's energy evidence (measured vs
        estimated energy, facility energy, emissions, sources, method, content hash) to attach
        to model documentation."""
        return self._run(_Endpoints.evidence(workload_id))

    def set_labels(self, workload_id: str, labels: Mapping[str, str]) -> Workload:
        """``PUT /v1/workloads/{id}/labels``: replaces the workload's labels."""
        return self._run(_Endpoints.set_labels(workload_id, labels))

    def close_workload(self, workload_id: str, *, end: Time | None = None) -> Workload:
        """``POST /v1/workloads/{id}/close`` at ``end`` (server default: now)."""
        return self._run(_Endpoints.close_workload(workload_id, end))

    def whatif(
        self,
        workload_id: str,
        *,
        window_hours: Sequence[float] | None = None,
        factors: Sequence[float] | None = None,
        basis: str | None = None,
    ) -> WhatIf:
        """``GET /v1/workloads/{id}/whatif``: Flexible Start per window (hours) and Pause and
        Resume per deadline factor; the paper's values when not given."""
        return self._run(_Endpoints.whatif(workload_id, window_hours, factors, basis))

    def operator_tenants(self) -> OperatorTenantList:
        """``GET /v1/operator/tenants``: every tenant with its instance and GPU counts (operator
        tokens only; others get :class:`~wattprint.ForbiddenError`)."""
        return self._run(_Endpoints.operator_tenants())

    def operator_tenant_summary(self, tenant: str, *, from_: Time, to: Time) -> TenantSummary:
        """``GET /v1/operator/tenants/{tenant}/summary``: the body the tenant gets from
        :meth:`summary` (operator tokens only)."""
        return self._run(_Endpoints.operator_tenant_summary(tenant, from_, to))

    def operator_statements_export(self, period: str, fmt: str) -> bytes:
        """``GET /v1/operator/statements/{period}.{fmt}``: every tenant's statement of the month
        (``YYYY-MM``) as one file, ``csv`` or ``parquet`` (operator tokens only)."""
        return self._run(_Endpoints.operator_statements_export(period, fmt))


class AsyncClient:
    """Asynchronous client; the same methods as :class:`Client`, awaited."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, http: httpx.AsyncClient | None = None
    ) -> None:
        self._base = _base(base_url)
        self._headers = _headers(token)
        self._http = http or httpx.AsyncClient(timeout=timeout)

    @classmethod
    def from_env(cls, *, timeout: float = 30.0) -> AsyncClient:
        """A client from ``WATTPRINT_URL`` and ``WATTPRINT_TOKEN``."""
        url, token = _env()
        return cls(url, token, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        headers = self._headers if call.auth else {"Accept": self._headers["Accept"]}
        try:
            resp = await self._http.request(
                call.method, self._base + call.path, params=call.params, json=call.body, headers=headers
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{call.method} {call.path}: {e}") from e
        return _finish(call, resp)

    async def health(self) -> Health:
        """``GET /healthz``."""
        return await self._run(_Endpoints.health())

    async def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        return await self._run(_Endpoints.openapi())

    async def list_instances(self, *, limit: int | None = None, cursor: str | None = None) -> InstanceList:
        """``GET /v1/instances``: one page."""
        return await self._run(_Endpoints.list_instances(limit, cursor))

    async def all_instances(self, *, page_size: int | None = None) -> list[Instance]:
        """All the tenant's instances, following ``next_cursor``."""
        out: list[Instance] = []
        guard, cursor = _CursorGuard("/v1/instances"), None
        while True:
            page = await self.list_instances(limit=page_size, cursor=cursor)
            out.extend(page.instances)
            if (cursor := guard.next(page.next_cursor)) is None:
                return out

    async def instance_series(
        self, instance_id: str, *, from_: Time | None = None, to: Time | None = None, step: str | None = None
    ) -> Series:
        """``GET /v1/instances/{id}/series``."""
        return await self._run(_Endpoints.instance_series(instance_id, from_, to, step))

    async def summary(self, *, from_: Time, to: Time) -> TenantSummary:
        """``GET /v1/summary``."""
        return await self._run(_Endpoints.summary(from_, to))

    async def restatements(self, *, from_: Time, to: Time) -> Restatements:
        """``GET /v1/restatements``."""
        return await self._run(_Endpoints.restatements(from_, to))

    async def statements(self) -> StatementList:
        """``GET /v1/statements``."""
        return await self._run(_Endpoints.statements())

    async def statement(self, period: str) -> Statement:
        """``GET /v1/statements/{period}``."""
        return await self._run(_Endpoints.statement(period))

    async def statement_document(self, period: str, fmt: str) -> bytes:
        """The month's statement as ``json``, ``csv`` or ``pdf`` bytes."""
        return await self._run(_Endpoints.statement_document(period, fmt))

    async def create_workload(
        self,
        *,
        label: str,
        instance_ids: Sequence[str],
        from_: Time,
        to: Time | None,
        functional_unit: str,
        functional_units: float,
        labels: Mapping[str, str] | None = None,
    ) -> Workload:
        """``POST /v1/workloads``."""
        return await self._run(
            _Endpoints.create_workload(label, instance_ids, from_, to, functional_unit, functional_units, labels)
        )

    async def list_workloads(
        self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None
    ) -> WorkloadList:
        """``GET /v1/workloads``: one page."""
        return await self._run(_Endpoints.list_workloads(limit, cursor, status))

    async def all_workloads(self, *, status: str | None = None, page_size: int | None = None) -> list[Workload]:
        """All the tenant's workloads, following ``next_cursor``."""
        out: list[Workload] = []
        guard, cursor = _CursorGuard("/v1/workloads"), None
        while True:
            page = await self.list_workloads(limit=page_size, cursor=cursor, status=status)
            out.extend(page.workloads)
            if (cursor := guard.next(page.next_cursor)) is None:
                return out

    async def workload(self, workload_id: str) -> WorkloadDetail:
        """``GET /v1/workloads/{id}``."""
        return await self._run(_Endpoints.workload(workload_id))

    async def evidence(self, workload_id: str) -> WorkloadEvidence:
        """``GET /v1/workloads/{id}/evidence``."""
        return await self._run(_Endpoints.evidence(workload_id))

    async def set_labels(self, workload_id: str, labels: Mapping[str, str]) -> Workload:
        """``PUT /v1/workloads/{id}/labels``."""
        return await self._run(_Endpoints.set_labels(workload_id, labels))

    async def close_workload(self, workload_id: str, *, end: Time | None = None) -> Workload:
        """``POST /v1/workloads/{id}/close``."""
        return await self._run(_Endpoints.close_workload(workload_id, end))

    async def whatif(
        self,
        workload_id: str,
        *,
        window_hours: Sequence[float] | None = None,
        factors: Sequence[float] | None = None,
        basis: str | None = None,
    ) -> WhatIf:
        """``GET /v1/workloads/{id}/whatif``."""
        return await self._run(_Endpoints.whatif(workload_id, window_hours, factors, basis))

    async def operator_tenants(self) -> OperatorTenantList:
        """``GET /v1/operator/tenants`` (operator tokens only)."""
        return await self._run(_Endpoints.operator_tenants())

    async def operator_tenant_summary(self, tenant: str, *, from_: Time, to: Time) -> TenantSummary:
        """``GET /v1/operator/tenants/{tenant}/summary`` (operator tokens only)."""
        return await self._run(_Endpoints.operator_tenant_summary(tenant, from_, to))

    async def operator_statements_export(self, period: str, fmt: str) -> bytes:
        """``GET /v1/operator/statements/{period}.{fmt}`` (operator tokens only)."""
        return await self._run(_Endpoints.operator_statements_export(period, fmt))
