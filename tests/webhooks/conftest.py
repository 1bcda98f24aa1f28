"""A real HTTP receiver on 127.0.0.1 that checks every delivery's signature.

Each path is one receiver endpoint; its ``script`` says how the next requests are
answered (a status code, or ``HANG`` to hold the request until the test ends), and
then 204s. Signatures are checked with the independent ``standardwebhooks`` package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook, WebhookVerificationError

from charter.db.session import session_factory
from charter.settings import Settings
from workers.webhook_delivery import http_client

HANG = "hang"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float


@dataclass
class Receiver:
    host: str
    port: int
    secrets: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, list[int | str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            secret = receiver.secrets.get(self.path)
            try:
                verified = secret is not None and Webhook(secret).verify(body, headers) is not None
            except WebhookVerificationError:
                verified = False
            receiver.received.append(Received(self.path, headers, body, verified, time.monotonic()))
            script = receiver.scripts.get(self.path) or []
            action = script.pop(0) if script else 204
            if action == HANG:
                receiver.release.wait(30)
                return
            self.send_response(int(action))
            self.send_header("content-length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver("127.0.0.1", 0)))
    receiver = Receiver("127.0.0.1", server.server_address[1])
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def hook_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(webhook_timeout_seconds=1.0, webhook_concurrency=4)


@pytest.fixture
def http(hook_settings: Settings) -> Iterator[httpx.Client]:
    with http_client(hook_settings) as client:
        yield client


@pytest.fixture
def subscribe(
    client: TestClient, admin_headers: dict[str, str], receiver: Receiver
) -> Callable[..., dict[str, Any]]:
    """Create an endpoint at ``receiver.url(path)`` over the API; the receiver learns its secret."""

    def make(
        path: str = "/hook", events: tuple[str, ...] = ("job.cancelled",), **body: Any
    ) -> dict[str, Any]:
        response = client.post(
            "/v1/webhooks",
            json={"url": receiver.url(path), "events": list(events), **body},
            headers=admin_headers,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        receiver.secrets[path] = created["secret"]
        return created

    return make
