"""Rate limits: per API key and scope, and per client address for failed authentication.

Built on the `limits` library; this module only names the buckets and turns an
exhausted one into :class:`~charter.errors.RateLimited` (429 with ``Retry-After``).

- ``("key", api_key_id, scope)``: every request to a route that needs ``scope``
  consumes one from ``settings.rate_limits[scope]`` (consumed by the scope check
  in ``deps.require``, allowed or not). A scope missing from the setting keeps its
  default; ``""`` disables it.
- ``("auth", address)``: every presented key that fails to authenticate counts
  against ``settings.auth_failure_limit``. Once that is exhausted the address is
  answered 429 *before* its key is looked up, so while blocked a correct key and a
  wrong one are indistinguishable and keys cannot be guessed faster than the limit.
  A request without a key is not a guess and is not counted.

The address is the ASGI client (``request.client.host``), never ``X-Forwarded-For``,
which any caller can set. Behind a reverse proxy, run uvicorn with
``--proxy-headers --forwarded-allow-ips=<proxy>`` so that the server itself takes
the address from trusted proxies only.

The strategy is the moving window: unlike a fixed window it allows no double burst
at a window boundary, and both stores Charter uses (memory, Redis) support it. A
configured store without it (memcached) falls back to the fixed window. Counters
live in ``settings.rate_limit_storage``; by default in the broker's Redis when the
broker is Redis (shared by every gateway process, under the ``charter:rl:`` key
prefix), else in memory (the embedded single-process default).

Fail open: if the store cannot be reached, requests are not limited, a warning is
logged at most once a minute, and the store is not retried for a few seconds (so a
store that hangs does not add its timeout to every request). Rate limiting guards
capacity; an outage of its store must not take the API down with it.
Authentication itself never depends on the store.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MovingWindowSupport, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from starlette.datastructures import Address

from charter import keys
from charter.errors import RateLimited
from charter.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "charter:rl"
_REDIS_SCHEMES = {"redis", "rediss", "redis+unix", "valkey", "valkeys", "valkey+unix"}
_REDIS_TIMEOUT_S = 0.5  # a LAN round trip is ~1 ms; past this the store counts as down
_OUTAGE_BACKOFF_S = 5.0  # after a store error, skip it this long
_WARN_EVERY_S = 60.0

T = TypeVar("T")


def storage_uri(settings: Settings) -> str:
    """``rate_limit_storage``, else the broker's Redis, else process memory."""
    if settings.rate_limit_storage:
        return settings.rate_limit_storage
    broker = settings.broker_url or ""
    return broker if broker.startswith(("redis://", "rediss://")) else "memory://"


def address_of(client: Address | None) -> str:
    """The bucket for a client: the ASGI peer address, not any header."""
    return client.host if client is not None else "unknown"


def _parse(value: str, name: str) -> list[RateLimitItem]:
    if not value.strip():
        return []  # disabled
    try:
        return list(parse_many(value))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc} (expected e.g. '300/minute')") from exc


def _scope_limits(settings: Settings) -> dict[str, list[RateLimitItem]]:
    unknown = set(settings.rate_limits) - set(keys.SCOPES)
    if unknown:
        raise ValueError(f"rate_limits: unknown scopes {sorted(unknown)}; known: {keys.SCOPES}")
    defaults = Settings.model_fields["rate_limits"].get_default(call_default_factory=True)
    merged = {**defaults, **settings.rate_limits}
    return {scope: _parse(merged.get(scope, ""), f"rate_limits[{scope}]") for scope in keys.SCOPES}


class RateLimiter:
    """One per app (``app.state.rate_limiter``); safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.uri = storage_uri(settings)
        self.scope_limits = _scope_limits(settings)
        self.auth_limits = _parse(settings.auth_failure_limit, "auth_failure_limit")
        options: dict[str, float | str | bool] = {}
        if urlparse(self.uri).scheme in _REDIS_SCHEMES:
            options = {
                "key_prefix": NAMESPACE,
                "socket_connect_timeout": _REDIS_TIMEOUT_S,
                "socket_timeout": _REDIS_TIMEOUT_S,
            }
        self.storage = storage_from_string(self.uri, wrap_exceptions=True, **options)
        self.strategy = (
            MovingWindowRateLimiter(self.storage)
            if isinstance(self.storage, MovingWindowSupport)
            else FixedWindowRateLimiter(self.storage)
        )
        self._lock = threading.Lock()
        self._skip_until = 0.0
        self._next_warning = 0.0

    def blocked(self, address: str) -> None:
        """Raise if ``address`` has used up its failed authentications (consumes nothing)."""
        ids = ("auth", address)
        exhausted = [
            item for item in self.auth_limits if not self._allowed(self.strategy.test, item, ids)
        ]
        if exhausted:
            raise RateLimited(
                "too many failed authentications from this address; retry later",
                retry_after=self._retry_after(exhausted, ids),
            )

    def failed(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        for item in self.auth_limits:
            self._allowed(self.strategy.hit, item, ("auth", address))

    def hit(self, api_key_id: str, scope: str) -> None:
        """Consume one request of this key under ``scope``'s limit; raise when exhausted."""
        ids = ("key", api_key_id, scope)
        items = self.scope_limits[scope]
        exhausted = [item for item in items if not self._allowed(self.strategy.hit, item, ids)]
        if exhausted:
            raise RateLimited(
                f"rate limit of {exhausted[0]} for '{scope}' requests exceeded for this API key",
                retry_after=self._retry_after(exhausted, ids),
            )

    def _retry_after(self, items: list[RateLimitItem], ids: tuple[str, ...]) -> int:
        """Whole seconds until every exhausted window has room again, at least 1."""
        now = time.time()
        stats = [self._guarded(self.strategy.get_window_stats, item, ids) for item in items]
        waits = [math.ceil(s.reset_time - now) for s in stats if s is not None]
        return max([1, *waits])

    def _allowed(
        self, check: Callable[..., bool], item: RateLimitItem, ids: tuple[str, ...]
    ) -> bool:
        allowed = self._guarded(check, item, ids)
        return True if allowed is None else allowed  # fail open

    def _guarded(
        self, call: Callable[..., T], item: RateLimitItem, ids: tuple[str, ...]
    ) -> T | None:
        """``call(item, *ids)``, or ``None`` while the store is unreachable."""
        if time.monotonic() < self._skip_until:
            return None
        try:
            return call(item, *ids)
        except StorageError as exc:
            self._store_down(exc)
            return None

    def _store_down(self, exc: StorageError) -> None:
        now = time.monotonic()
        with self._lock:
            self._skip_until = now + _OUTAGE_BACKOFF_S
            warn = now >= self._next_warning
            if warn:
                self._next_warning = now + _WARN_EVERY_S
        if warn:
            log.warning(
                "rate-limit storage %s is unreachable (%s: %s); not limiting requests until "
                "it answers",
                urlparse(self.uri).scheme,
                type(exc.storage_error).__name__,
                exc.storage_error,
            )
