"""What the benchmarks share: logging, throwaway PostgreSQL databases, a gateway in its own
process, machine facts, JSON results and cost-against-size plots.

Every benchmark is a script run by hand (``python bench/<name>.py``); a smoke run of each
stays in ``tests/bench``. Only ratios taken in one run count on a shared machine, so the
helpers here make it easy to run two sides back to back on the same rows.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + secrets.token_hex(16)
DEFAULT_SERVER = os.environ.get(
    "CHARTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare runs: cores, CPU model, memory, load."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory_kib = int(meminfo.read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(path: Path | None, result: Mapping[str, Any]) -> None:
    """Print the result and, when asked, write it as JSON (the directory is created)."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def plot(
    path: Path,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    logy: bool = False,
) -> Path | None:
    """A line plot of cost against size, one line per series; None without matplotlib.

    Plots are written as SVG next to the JSON result, so they diff and render on any forge.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name, points in series.items():
        xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
        axes.plot(xs, ys, marker="o", label=name)
    if logx:
        axes.set_xscale("log")
    if logy:
        axes.set_yscale("log")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # metadata Date=None keeps the SVG byte-identical for identical numbers
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)
    return path


# --------------------------------------------------------------------------- PostgreSQL


def dsn(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string (psycopg's own form)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server: str = DEFAULT_SERVER) -> str:
    """A new empty database on ``server``; its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"charter_bench_{secrets.token_hex(4)}"
    with psycopg.connect(dsn(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(dsn(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(server: str = DEFAULT_SERVER, *, keep: bool = False) -> Iterator[str]:
    """A migrated throwaway database for one benchmark run, dropped afterwards."""
    from charter.db.migrate import upgrade

    url = create_database(server)
    log(f"database {url.rsplit('/', 1)[-1]}")
    try:
        upgrade(url)
        yield url
    finally:
        if not keep:
            drop_database(server, url)


def admin_key(url: str, project: str = "bench") -> tuple[str, str]:
    """An admin API key for a new project in ``url``: (key, project id)."""
    from charter.db.session import make_engine, session_factory
    from charter.key_issuing import ensure_project, issue_key

    engine = make_engine(url)
    try:
        with session_factory(engine)() as session, session.begin():
            row = ensure_project(session, project)
            _, key = issue_key(session, row.id, ["admin"], SECRET, name="bench")
            return key, row.id
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gateway:
    """uvicorn serving the gateway in a subprocess, with its memory and CPU readable."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.port = free_port()
        environment = os.environ | {
            "CHARTER_DATABASE_URL": url,
            "CHARTER_SECRET_KEY": SECRET,
            "CHARTER_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(ROOT),
        }
        environment.pop("CHARTER_BROKER_URL", None)
        environment |= dict(env or {})
        serve = (  # what `charter serve` runs: one socket per process when workers > 1
            "from services.gateway import server; "
            f"server.run('127.0.0.1', {self.port}, {workers}, log_level='warning', access_log=False)"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", serve],
            cwd=data_dir,  # no developer .env
            env=environment,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the gateway did not start")
            time.sleep(0.2)

    def memory(self, field: str) -> int:
        """VmRSS or VmHWM in KiB."""
        return proc_status(self.process.pid, field)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
