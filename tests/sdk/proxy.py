"""A tiny HTTP proxy in front of a live gateway that misbehaves on purpose.

It forwards requests to the real gateway and records each (method, path, query,
Idempotency-Key, time). ``plan`` is a list of what to do with the next requests, one
entry each, then it forwards normally:

- ``("answer", status, retry_after)``: answer that status itself (the gateway never
  sees the request), with ``Retry-After`` when given;
- ``("lose", status, retry_after)``: forward the request (the gateway does the work
  and commits) but answer ``status`` instead of the real answer: a lost response;
- ``("drop",)``: close the connection without answering.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    at: float
    body: bytes = b""


@dataclass
class Proxy:
    upstream: str
    plan: list[tuple[Any, ...]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.upstream, timeout=30)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    step = proxy.plan.pop(0) if proxy.plan else ("forward",)
                    proxy.seen.append(
                        Seen(
                            self.command,
                            self.path,
                            self.headers.get("idempotency-key"),
                            time.monotonic(),
                            body,
                        )
                    )
                if step[0] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if step[0] == "answer":
                    self._reply(step[1], step[2], b'{"error": "unavailable", "detail": "proxy"}')
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}
                }
                response = proxy._http.request(
                    self.command, self.path, headers=headers, content=body
                )
                if step[0] == "lose":
                    self._reply(step[1], step[2], b'{"error": "unavailable", "detail": "lost"}')
                    return
                self.send_response(response.status_code)
                for k, v in response.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def _reply(self, status: int, retry_after: float | None, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def requests(self, method: str, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()
