"""Errors raised by the client.

A refusal by the server is an :class:`ApiError` carrying the RFC 7807 problem document it sent
(``type``, ``title``, ``status``, ``detail``); the common statuses have their own subclasses so
callers can ``except NotFoundError`` rather than compare numbers.
"""

from __future__ import annotations

import json
from typing import Any


class WattprintError(Exception):
    """Base of every error this package raises."""


class TransportError(WattprintError):
    """The request could not be sent or its response not read (connection, TLS, timeout)."""


class DecodeError(WattprintError):
    """A success response whose body is not the JSON this client expects."""


class ApiError(WattprintError):
    """The server answered with an error status and this problem document."""

    def __init__(
        self,
        *,
        type: str,
        title: str,
        status: int,
        detail: str,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(f"wattprint API error {status} {title}: {detail}")
        #: Stable problem type URI (``about:blank`` when the body was not a problem document).
        self.type = type
        #: Short summary of the problem type.
        self.title = title
        #: HTTP status.
        self.status = status
        #: What went wrong with this request.
        self.detail = detail
        #: Seconds to wait before retrying, from ``Retry-After`` (429, 503).
        self.retry_after_s = retry_after_s


class BadRequestError(ApiError):
    """400: a parameter or body is invalid; ``detail`` says which."""


class UnauthorizedError(ApiError):
    """401: no token, or one the server does not accept."""


class ForbiddenError(ApiError):
    """403: a valid token that is not allowed this (e.g. a tenant token on operator routes)."""


class NotFoundError(ApiError):
    """404: does not exist or belongs to another tenant (the server does not say which)."""


class ConflictError(ApiError):
    """409: the request contradicts the stored state (e.g. closing a closed workload)."""


class UnprocessableError(ApiError):
    """422: well formed, but this data cannot answer it."""


class RateLimitedError(ApiError):
    """429: too many requests; ``retry_after_s`` says how long to wait when the server said."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def problem_error(
    status: int, reason: str, body: bytes, retry_after_s: int | None
) -> ApiError:
    """The error of a response with ``status``: its problem document when it has one (with the
    same status), else an ``about:blank`` problem with ``reason`` and the start of the body."""
    cls = _BY_STATUS.get(status, ApiError)
    doc: Any
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("status") == status:
        return cls(
            type=str(doc.get("type", "about:blank")),
            title=str(doc.get("title", "")),
            status=status,
            detail=str(doc.get("detail", "")),
            retry_after_s=retry_after_s,
        )
    return cls(
        type="about:blank",
        title=reason,
        status=status,
        detail=body[:300].decode("utf-8", "replace"),
        retry_after_s=retry_after_s,
    )
