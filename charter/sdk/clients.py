"""The two transports: :class:`SyncClient` (httpx.Client) and
:class:`AsyncCharterClient` (httpx.AsyncClient).

Each knows only how to send a prepared call with retries, follow cursors, drive a
procedure and stream an export; everything else is in :mod:`charter.sdk.api` and
:mod:`charter.sdk.calls`, shared.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from charter.sdk import api
from charter.sdk.calls import Call, Page, RetryableAnswer, RetryPolicy, Sleep, decode, prepare
from charter.sdk.errors import api_error
from charter.sdk.export import Export
from charter.settings import get_client_settings


class _Bound:
    """A resource group whose methods send the call they build.

    Calling the group itself (``client.datasets()``) is the flat method of the same
    name that :class:`charter.client.CharterClient` kept from before the groups."""

    def __init__(
        self, group: object, run: Callable[[Any], Any], flat: Callable[..., Any] | None = None
    ) -> None:
        self._group, self._run, self._flat = group, run, flat

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._flat is None:
            raise TypeError(f"{type(self._group).__name__} is a group: call one of its methods")
        return self._flat(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        build = getattr(self._group, name)

        @functools.wraps(build)
        def send(*args: Any, **kwargs: Any) -> Any:
            return self._run(build(*args, **kwargs))

        return send

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._group) if not n.startswith("_")]


def _options(
    base_url: str | None, api_key: str | None, timeout: float, kwargs: dict[str, Any]
) -> dict[str, Any]:
    settings = get_client_settings()  # never the server's: no secret needed
    key = api_key or settings.api_key
    headers = {"X-API-Key": key} if key else {}
    return {
        "base_url": base_url or settings.api_url,
        "headers": headers,
        "timeout": timeout,
        **kwargs,
    }


class _Binds:
    """``client.jobs``, ``client.runs``, ...: every group of :data:`api.RESOURCES`."""

    health: Any
    constitutions: Any
    batches: Any
    jobs: Any
    runs: Any
    datasets: Any
    keys: Any
    workers: Any
    stats: Any
    webhooks: Any
    audit: Any
    reviews: Any
    templates: Any
    critique_templates: Any
    gold_sets: Any
    evals: Any
    policy_evals: Any
    pipelines: Any
    public_inputs: Any
    classifiers: Any

    def _bind(self, run: Callable[[Any], Any]) -> None:
        for name, group in api.RESOURCES.items():
            flat = getattr(type(self), name, None)
            flat = flat.__get__(self) if inspect.isfunction(flat) else None
            setattr(self, name, _Bound(group(), run, flat))


class SyncClient(_Binds):
    """The API over ``httpx.Client``; see :mod:`charter.sdk`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        **httpx_options: Any,
    ) -> None:
        self._http = httpx.Client(**_options(base_url, api_key, timeout, httpx_options))
        self.retry = retry or RetryPolicy()
        self._bind(self._run)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, call: Call[Any]) -> Any:
        """One call with retries (a paged call: its first page only, a :class:`Page`)."""
        prepared = prepare(call)
        try:
            for attempt in self.retry.sync():
                with attempt:
                    response = self._http.request(call.method, call.path, **prepared.arguments())
                    self.retry.check(response)
        except RetryableAnswer as spent:
            raise api_error(spent.response) from None
        return decode(call, response)

    def iterate(self, call: Call[Any]) -> Iterator[Any]:
        """Every item of a paged call, following ``next_cursor`` page after page."""
        page: Page[Any] = self.send(call)
        while True:
            yield from page.items
            if not page.next_cursor:
                return
            page = self.send(call.at(page.next_cursor))

    def run_procedure(self, procedure: Any) -> Any:
        """Drive a procedure of :mod:`charter.sdk.api` (e.g. a ``poll``) to its result."""
        return self._drive(procedure)

    def _run(self, work: Any) -> Any:
        if isinstance(work, Call):
            return self.iterate(work) if work.paged else self.send(work)
        if isinstance(work, Export):
            return self._export(work)
        if inspect.isgenerator(work):
            return self._drive(work)
        raise TypeError(f"not an API call: {work!r}")

    def _drive(self, procedure: Any) -> Any:
        answer: Any = None
        try:
            while True:
                step = procedure.send(answer)
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    answer = None
                else:
                    answer = self._run(step)
        except StopIteration as done:
            return done.value

    def _export(self, export: Export) -> dict[str, Any]:
        while True:
            path, params = export.request()
            try:
                with (
                    self._http.stream("GET", path, params=params) as response,
                    export.dest.open("ab") as out,
                ):
                    if response.status_code >= 400:
                        response.read()
                        raise api_error(response)
                    export.started(response.headers)
                    for chunk in response.iter_bytes():
                        export.write(out, chunk)
                return export.finish()
            except httpx.TransportError as error:
                time.sleep(export.dropped(error))


class AsyncCharterClient(_Binds):
    """The API over ``httpx.AsyncClient``: the same groups as :class:`CharterClient`,
    each method a coroutine; a paged listing is an async iterator (``async for``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        **httpx_options: Any,
    ) -> None:
        self._http = httpx.AsyncClient(**_options(base_url, api_key, timeout, httpx_options))
        self.retry = retry or RetryPolicy()
        self._bind(self._run)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCharterClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def send(self, call: Call[Any]) -> Any:
        prepared = prepare(call)
        try:
            async for attempt in self.retry.asynchronous():
                with attempt:
                    arguments = prepared.arguments()
                    if "content" in arguments and not isinstance(arguments["content"], bytes):
                        arguments["content"] = _aiter(arguments["content"])
                    response = await self._http.request(call.method, call.path, **arguments)
                    self.retry.check(response)
        except RetryableAnswer as spent:
            raise api_error(spent.response) from None
        return decode(call, response)

    async def iterate(self, call: Call[Any]) -> AsyncIterator[Any]:
        page: Page[Any] = await self.send(call)
        while True:
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            page = await self.send(call.at(page.next_cursor))

    def _run(self, work: Any) -> Any:
        """A coroutine for a call, procedure or export; an async iterator for a listing."""
        if isinstance(work, Call) and work.paged:
            return self.iterate(work)
        return self._await(work)

    async def _await(self, work: Any) -> Any:
        if isinstance(work, Call):
            if work.paged:
                return [item async for item in self.iterate(work)]
            return await self.send(work)
        if isinstance(work, Export):
            return await self._export(work)
        if inspect.isgenerator(work):
            answer: Any = None
            try:
                while True:
                    step = work.send(answer)
                    if isinstance(step, Sleep):
                        await asyncio.sleep(step.seconds)
                        answer = None
                    else:
                        answer = await self._await(step)
            except StopIteration as done:
                return done.value
        raise TypeError(f"not an API call: {work!r}")

    async def _export(self, export: Export) -> dict[str, Any]:
        while True:
            path, params = export.request()
            try:
                async with self._http.stream("GET", path, params=params) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise api_error(response)
                    export.started(response.headers)
                    with export.dest.open("ab") as out:
                        async for chunk in response.aiter_bytes():
                            export.write(out, chunk)
                return export.finish()
            except httpx.TransportError as error:
                await asyncio.sleep(export.dropped(error))


async def _aiter(chunks: Any) -> AsyncIterator[bytes]:
    for chunk in chunks:  # file reads: short, and between awaits
        yield chunk
