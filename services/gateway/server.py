"""Serve the gateway from several processes that share the load evenly.

uvicorn's ``--workers`` shares one listening socket between its processes, and whichever
process is awake accepts: a burst of new keep-alive connections lands mostly on one of
them, which then serves those clients for good while the others idle
(``bench/api_latency.py``: one of two workers took all 64 clients' connections, and two
workers served no more than one). Here each process listens on a socket of its own with
``SO_REUSEPORT``, so the kernel spreads connections across processes by their address.

The parent only supervises: it forwards SIGINT/SIGTERM (each uvicorn process then shuts
down gracefully), restarts a process that died on its own, and exits once all have
stopped. Where ``SO_REUSEPORT`` does not exist, uvicorn's own supervisor is used.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

APP = "services.gateway.app:create_app"
BACKLOG = 2048
STOP_GRACE_S = 30.0  # after this, a process that has not stopped is killed


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may bind as well."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(BACKLOG)
    return sock


def _serve_one(host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: its own socket, one uvicorn server (which handles the signals)."""
    sock = listening_socket(host, port)
    uvicorn.Server(uvicorn.Config(APP, factory=True, **options)).run(sockets=[sock])


def run(host: str, port: int, workers: int, **options: Any) -> None:
    """Serve the gateway on ``host:port`` from ``workers`` processes; uvicorn ``options``."""
    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, factory=True, host=host, port=port, workers=workers, **options)
        return
    listening_socket(host, port).close()  # a port in use fails here, not in N children
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_serve_one, args=(host, port, options), daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)  # uvicorn stops gracefully on either

    processes = [start() for _ in range(workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for i, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                log.warning(
                    "gateway process %s exited (%s); starting another",
                    process.pid,
                    process.exitcode,
                )
                processes[i] = start()
        time.sleep(0.5)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("gateway process %s did not stop in time; killing it", process.pid)
            process.kill()
            process.join()
