"""``charter serve --workers 2``: connections are spread over both processes (each has its
own ``SO_REUSEPORT`` socket), a process that dies is replaced, and SIGTERM to the parent
alone stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx
import pytest

from charter.embedded import free_port, settings_env
from tests.stack import base_settings

CONNECTIONS = 32


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie that waits for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _sockets_on(port: int, state: str) -> set[int]:
    """Socket inodes of TCP sockets in ``state`` (01 established, 0A listening) whose
    local port is ``port``."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    inodes.add(int(fields[9]))
    return inodes


def _sockets_of(pid: int) -> set[int]:
    inodes: set[int] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    settings = base_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'charter.db'}", None)
    settings.data_dir.mkdir(parents=True)
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARTER_")}
    env = inherited | settings_env(settings)
    charter = Path(sys.executable).with_name("charter")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(charter), "serve", "--port", str(port), "--workers", "2"],
            cwd=settings.data_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            with suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield process, port, log
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def _ready(port: int) -> None:
    """Until both processes listen: a request answered by each of fresh connections."""
    for _ in range(4 * CONNECTIONS):
        httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"})


def test_keep_alive_connections_are_spread_over_both_processes(
    served: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, _ = served
    _ready(port)
    children = _children(process.pid)
    assert len(children) >= 2
    with ExitStack() as stack:
        # A burst: all connect before any is accepted, as clients starting together do.
        # On one shared socket the first process to wake accepts the whole backlog.
        conns = [stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                 for _ in range(CONNECTIONS)]  # fmt: skip
        for conn in conns:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: charter\r\n\r\n")
        for conn in conns:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        established = _sockets_on(port, "01")
        per_process = {pid: len(_sockets_of(pid) & established) for pid in children}
        # Each process listens on a socket of its own, which the kernel balances across.
        listening = _sockets_on(port, "0A")
        assert len(listening) == 2
        assert all(
            len(_sockets_of(pid) & listening) == 1 for pid in per_process if per_process[pid]
        )
    served_by = [n for n in per_process.values() if n]
    assert sum(per_process.values()) == CONNECTIONS, per_process
    # By address hash: both get a share (all 32 on one of two is a 2**-31 event).
    assert len(served_by) == 2 and min(served_by) >= 4, per_process


def test_a_dead_process_is_replaced_and_sigterm_stops_all(
    served: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log = served
    _ready(port)
    first = _children(process.pid)
    victim = max(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # a replacement that serves (spawned processes also run a helper child)
        now = _children(process.pid)
        if victim not in now and len(now - first) >= 1:
            break
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    for _ in range(20):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    survivors = _children(process.pid)
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)  # the parent only: it stops its processes
    assert process.wait(40) == 0, log.read_text()
    assert time.monotonic() - started < 35
    for pid in survivors:  # the gateway processes were joined before the parent exited
        if "resource_tracker" not in _cmdline(pid):
            assert not _alive(pid), _cmdline(pid)
    deadline = time.monotonic() + 10  # multiprocessing's helper leaves on its pipe's EOF
    while any(_alive(pid) for pid in survivors):
        assert time.monotonic() < deadline, [_cmdline(pid) for pid in survivors]
        time.sleep(0.1)
    assert "exited" in log.read_text()  # the replacement was logged
