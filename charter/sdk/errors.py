"""The SDK's exceptions: every 4xx/5xx is a :class:`CharterAPIError` carrying the body.

The gateway answers every error as ``{"error", "detail", "field"}`` (plus ``errors``
for a validation error); the subclass says the status family, so callers catch
``NotFound`` or ``Conflict`` rather than compare numbers.
"""

from __future__ import annotations

from typing import Any

import httpx


class CharterAPIError(Exception):
    """An error answer of the API: ``status_code``, ``error`` (a stable code),
    ``detail`` (for a person), ``field`` (the part of the request at fault, or None),
    ``body`` (the whole error body) and ``request_id`` (the gateway's X-Request-ID)."""

    def __init__(
        self,
        status_code: int,
        body: dict[str, Any],
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.error: str = str(body.get("error", "http_error"))
        self.detail: Any = body.get("detail", body)
        self.field: str | None = body.get("field")
        self.errors: list[dict[str, Any]] | None = body.get("errors")
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(f"{status_code} {self.error}: {self.detail}")

    @property
    def message(self) -> str:
        """One line for a person: the detail, and the field when there is one."""
        where = f" (field: {self.field})" if self.field else ""
        return f"{self.status_code} {self.error}: {self.detail}{where}"


class BadRequest(CharterAPIError):
    """400, 413 or 422: the request itself is wrong (``field`` names where)."""


class Unauthorized(CharterAPIError):
    """401: no key, or a key the gateway does not know (or expired, or revoked)."""


class Forbidden(CharterAPIError):
    """403: the key lacks the scope the operation needs."""


class NotFound(CharterAPIError):
    """404: nothing by that id in the key's project."""


class Conflict(CharterAPIError):
    """409: the request clashes with the current state (or a reused Idempotency-Key)."""


class RateLimited(CharterAPIError):
    """429, once the retries are spent; ``retry_after`` says when to come back."""


class ServerError(CharterAPIError):
    """5xx other than 503."""


class Unavailable(ServerError):
    """503 (the database is unreachable or saturated), once the retries are spent."""


_BY_STATUS: dict[int, type[CharterAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: BadRequest,
    429: RateLimited,
    503: Unavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the delta form the gateway sends), or None."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: not something this API sends


def api_error(response: httpx.Response) -> CharterAPIError:
    """The exception for an error response (its body already read)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": "http_error", "detail": response.text or response.reason_phrase}
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else CharterAPIError)
    return kind(
        status,
        body,
        request_id=response.headers.get("x-request-id"),
        retry_after=retry_after(response),
    )


class ChecksumMismatch(Exception):
    """An exported file does not match the version's checksum or row count."""


class FreezeFailed(Exception):
    """A dataset version failed to freeze (its ``error`` says why)."""
