"""A live gateway (uvicorn in a thread, on the per-test database) for the SDK tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from charter.embedded import GatewayThread
from tests.sdk.proxy import Proxy


@pytest.fixture
def gateway(make_settings: Callable[..., Any], engine: Any) -> Iterator[GatewayThread]:
    with GatewayThread(make_settings()) as running:
        yield running


@pytest.fixture
def admin_key(issue: Callable[..., Any]) -> str:
    return str(issue("sdk", ("admin",)).key)


@pytest.fixture
def proxy(gateway: GatewayThread) -> Iterator[Proxy]:
    with Proxy(gateway.url) as running:
        yield running
