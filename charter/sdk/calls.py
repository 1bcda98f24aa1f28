"""What a request is, apart from how it is sent: the layer both clients share.

An API method builds a :class:`Call` (method, path, parameters, body, the model its
answer parses into, whether it is a cursor page); a longer operation (waiting for a
job, freezing a dataset) is a generator that yields calls and :class:`Sleep` and is
driven by either client. :class:`CharterClient` and :class:`AsyncCharterClient` only
send: each is a transport loop around :func:`prepare`, :class:`RetryPolicy` and
:func:`decode`, so building, retrying and parsing exist once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from charter.sdk.errors import api_error, retry_after

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer.

    ``content`` is bytes or a function returning an iterable of byte chunks (called
    again for each retry, so a streamed upload is re-read, not lost); ``model`` is
    what the JSON parses into (None: the decoded JSON as is); ``text``: the answer
    is text (an export), returned as a string; ``binary``: the answer is returned as
    bytes (an image); ``paged``: the answer
    is a cursor page of ``model`` items, and running the call iterates every page.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | Callable[[], Iterable[bytes]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    model: Any = None
    paged: bool = False
    text: bool = False  # the answer is text (JSONL), not JSON
    binary: bool = False  # the answer is bytes (a PNG), not JSON
    options: Mapping[str, Any] = field(default_factory=dict)  # other httpx arguments

    def raw(self) -> Call[Any]:
        """The same request answered as plain JSON (dicts and lists)."""
        return replace(self, model=None)

    def at(self, cursor: str | None) -> Call[T]:
        """The page after ``cursor``."""
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return replace(self, params={**params, "cursor": cursor} if cursor else params)


@dataclass(frozen=True)
class Sleep:
    """Yielded by a procedure: wait this long (time.sleep or asyncio.sleep)."""

    seconds: float


# A multi-request operation: yields calls (answered with their decoded result) and
# sleeps, and returns its result.
Procedure = Generator["Call[Any] | Sleep", Any, T]


@dataclass(frozen=True)
class Prepared:
    """A call ready to send, with the Idempotency-Key every attempt of it reuses."""

    call: Call[Any]
    headers: dict[str, str]

    def arguments(self) -> dict[str, Any]:
        call = self.call
        content = call.content() if callable(call.content) else call.content
        arguments: dict[str, Any] = {"headers": self.headers, **call.options}
        if call.params is not None:
            arguments["params"] = {k: v for k, v in call.params.items() if v is not None}
        if call.json is not None:
            arguments["json"] = call.json
        if content is not None:
            arguments["content"] = content
        return arguments


def prepare(call: Call[Any]) -> Prepared:
    """Give every POST an Idempotency-Key (uuid4) unless the caller chose one: a retry
    after a lost answer is then replayed by the gateway, never done twice."""
    headers = dict(call.headers)
    if call.method.upper() == "POST" and not any(
        k.lower() == IDEMPOTENCY_HEADER.lower() for k in headers
    ):
        headers[IDEMPOTENCY_HEADER] = str(uuid.uuid4())
    return Prepared(call, headers)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def parse(model: Any, data: Any) -> Any:
    return data if model is None or data is None else _adapter(model).validate_python(data)


def decode(call: Call[Any], response: httpx.Response) -> Any:
    """The answer's value, or the API error it carries (its body already read)."""
    if response.status_code >= 400:
        raise api_error(response)
    if response.status_code == 204 or not response.content:
        return None
    if call.text:
        return response.text
    if call.binary:
        return response.content
    data = response.json()
    if call.paged:
        return Page([parse(call.model, item) for item in data["items"]], data.get("next_cursor"))
    return parse(call.model, data)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


class RetryableAnswer(Exception):
    """A 429 or 503: worth another attempt, after ``Retry-After`` if it says."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} from {response.request.url}")
        self.response = response
        self.retry_after = retry_after(response)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of connection errors and 429/503 answers.

    ``attempts`` counts the first try. Between attempts: the answer's
    ``Retry-After`` (capped at ``max_retry_after``) when it gives one, else
    exponential backoff from ``backoff`` seconds up to ``max_backoff``. A POST is
    retried too: it carries the same Idempotency-Key on every attempt.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})

    def check(self, response: httpx.Response) -> httpx.Response:
        """Raise :class:`RetryableAnswer` for an answer worth retrying."""
        if response.status_code in self.statuses:
            raise RetryableAnswer(response)
        return response

    def wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableAnswer) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        return min(self.max_backoff, self.backoff * 2 ** (state.attempt_number - 1))

    def _arguments(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(max(1, self.attempts)),
            "wait": self.wait,
            "retry": retry_if_exception_type((httpx.TransportError, RetryableAnswer)),
            "reraise": True,
        }

    def sync(self) -> Retrying:
        return Retrying(**self._arguments())

    def asynchronous(self) -> AsyncRetrying:
        return AsyncRetrying(**self._arguments())


NO_RETRIES = RetryPolicy(attempts=1)
