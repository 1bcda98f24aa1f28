"""One error family. The gateway renders every one as ``{"error": ..., "detail": ...}``."""

from __future__ import annotations


class CharterError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(CharterError):
    status_code = 404
    code = "not_found"


class Conflict(CharterError):
    status_code = 409
    code = "conflict"


class Invalid(CharterError):
    status_code = 422
    code = "invalid"


class Unauthorized(CharterError):
    status_code = 401
    code = "unauthorized"


class Forbidden(CharterError):
    status_code = 403
    code = "forbidden"


class TooLarge(CharterError):
    status_code = 413
    code = "too_large"


class Unavailable(CharterError):
    status_code = 503
    code = "unavailable"


class RateLimited(CharterError):
    """Too many requests; the client may retry after ``retry_after`` seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.retry_after = max(1, int(retry_after))
