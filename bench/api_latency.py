"""API latency: submit (``POST /v1/jobs``) and status (``GET /v1/jobs/{id}``) under load.

What a real client does: submit a job over a small batch (16 prompts) with an
``Idempotency-Key``, then poll its status. ``--clients`` concurrent clients (asyncio tasks
over one async httpx client, keep-alive connections) each send their next request as soon
as the last one answered, against the gateway in its own uvicorn process on a scratch
PostgreSQL database, with Redis as the broker (and so as the rate limiter's store). No
worker runs: a submit commits the job and its items and publishes the chunk to Redis.

Every side (1 and 2 uvicorn workers, and optionally the same gateway from another source
tree, ``--baseline-tree``) runs at the same time on the same database, and the rounds
alternate between them (reversed every other round), so load drift on a shared machine
hits all sides alike. The client's own CPU is reported: above ~0.9 of a core, the client
(one Python process) and not the gateway sets the latency.

Rate limits stay on (their cost is part of every request) but are raised far above what
the run sends, so no request is refused. ``--profile PATH`` serves one more gateway under
pyinstrument (event loop and every threadpool call) for a short load, and writes the text
report there.

    python bench/api_latency.py --out bench/results/api_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DEFAULT_SERVER,
    ROOT,
    SECRET,
    Gateway,
    admin_key,
    free_port,
    log,
    machine,
    plot,
    proc_cpu_seconds,
    scratch_database,
    write_result,
)

BROKER = "redis://127.0.0.1:6379/15"  # db 13 is the end-to-end tests'
# Far above what a run sends: the limiter still counts every request, it never refuses one.
NO_LIMITS = json.dumps({scope: "10000000/minute" for scope in ("read", "submit", "admin")})
OPS = ("submit", "status")
TIMEOUT_S = 60.0  # a request still unanswered then counts as a "timeout" error


@dataclass
class Side:
    """One gateway under test."""

    name: str
    workers: int
    pool_size: int | None = None  # None: the setting's default
    max_clients: int | None = None  # skip larger points (a baseline that stalls there)
    tree: Path = ROOT
    gateway: Gateway | None = None
    job_ids: list[str] = field(default_factory=list)

    def clients(self, points: list[int]) -> list[int]:
        return [n for n in points if self.max_clients is None or n <= self.max_clients]

    @property
    def base(self) -> str:
        assert self.gateway is not None
        return self.gateway.base

    def cpu_seconds(self) -> float:
        """The uvicorn process and its worker processes."""
        assert self.gateway is not None
        pid = self.gateway.process.pid
        return proc_cpu_seconds(pid) + sum(proc_cpu_seconds(c) for c in _children(pid))


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(c) for c in text)
    return children


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- load


async def _load(
    client: httpx.AsyncClient,
    request: Callable[[], Any],
    clients: int,
    total: int,
    think_s: float = 0.0,
) -> dict[str, Any]:
    """``total`` requests from ``clients`` closed-loop clients; latencies in seconds.

    ``think_s`` is each client's pause after an answer (a polling SDK waits between
    polls), and clients then start spread over one such pause: 64 requests sent in the
    same millisecond would queue behind each other and set the p99 by themselves. 0
    saturates the gateway, which then measures throughput more than latency.
    Failed requests are counted by status or as ``timeout`` (their latency kept), not
    raised, so a gateway that fails under load is measured too."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    remaining = [total]

    async def one() -> None:
        if think_s:  # independent users start at random moments, not in one millisecond
            await asyncio.sleep(random.uniform(0, think_s))
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            try:
                status = str((await request()).status_code)
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.TransportError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            if not status.startswith(("1", "2", "3")):
                errors[status] = errors.get(status, 0) + 1
            if think_s:
                # jittered, so the clients do not march in step
                await asyncio.sleep(think_s * random.uniform(0.5, 1.5))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    wall = time.perf_counter() - wall
    return {
        "latencies": latencies,
        "errors": errors,
        "wall_s": wall,
        "client_cpu_s": time.process_time() - cpu,
    }


def _requests(
    client: httpx.AsyncClient, side: Side, spec: dict[str, Any]
) -> dict[str, Callable[[], Any]]:
    async def submit() -> httpx.Response:
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        response = await client.post("/v1/jobs", json=spec, headers=headers)
        if response.status_code == 202:
            side.job_ids.append(response.json()["id"])
        return response

    async def status() -> httpx.Response:
        return await client.get(f"/v1/jobs/{random.choice(side.job_ids)}")

    return {"submit": submit, "status": status}


def _summary(samples: list[dict[str, Any]], gateway_cpu_s: float) -> dict[str, Any]:
    latencies = [x for s in samples for x in s["latencies"]]
    wall = sum(s["wall_s"] for s in samples)
    client_cpu = sum(s["client_cpu_s"] for s in samples)
    errors: dict[str, int] = {}
    for sample in samples:
        for status, n in sample["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p90_ms": round(_percentile(latencies, 0.90) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "per_round_p99_ms": [round(_percentile(s["latencies"], 0.99) * 1000, 2) for s in samples],
        "client_cpu_cores": round(client_cpu / wall, 3),
        "gateway_cpu_cores": round(gateway_cpu_s / wall, 3),
        "gateway_cpu_ms_per_request": round(gateway_cpu_s / len(latencies) * 1000, 3),
    }


async def _run(
    sides: list[Side],
    key: str,
    spec: dict[str, Any],
    clients: list[int],
    requests: int,
    rounds: int,
    think_s: float = 0.0,
) -> dict[str, Any]:
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=max(clients), max_keepalive_connections=max(clients))
    samples: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    cpu: dict[tuple[str, int, str], float] = {}

    async def point(side: Side, op: str, n: int, total: int) -> dict[str, Any]:
        # a fresh client per point: no keep-alive connection sits idle past the server's
        # keep-alive timeout while the other sides run (a reuse race would read as an error)
        async with httpx.AsyncClient(
            base_url=side.base, headers=headers, limits=limits, timeout=TIMEOUT_S
        ) as client:
            return await _load(client, _requests(client, side, spec)[op], n, total, think_s)

    for side in sides:  # warm every gateway and give status something to read
        warm = max(side.clients(clients))
        await point(side, "submit", warm, 2 * warm)
    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            for n in side.clients(clients):
                for op in OPS:
                    before = side.cpu_seconds()
                    sample = await point(side, op, n, requests)
                    key_ = (side.name, n, op)
                    cpu[key_] = cpu.get(key_, 0.0) + side.cpu_seconds() - before
                    samples.setdefault(key_, []).append(sample)
                    log(
                        f"round {r + 1} {side.name} {n} clients {op}: "
                        f"p99 {_percentile(sample['latencies'], 0.99) * 1000:.1f} ms, "
                        f"{requests / sample['wall_s']:.0f}/s, errors {sample['errors']}"
                    )
    return {
        side.name: {
            str(n): {
                op: _summary(samples[(side.name, n, op)], cpu[(side.name, n, op)]) for op in OPS
            }
            for n in side.clients(clients)
        }
        for side in sides
    }


# --------------------------------------------------------------------------- setup


def _prepare(base: str, key: str, rows: int) -> dict[str, Any]:
    """The default constitution and a batch of ``rows`` prompts; the job spec to submit."""
    headers = {"X-API-Key": key}
    document = (ROOT / "constitutions" / "default.yaml").read_bytes()
    pushed = httpx.post(
        f"{base}/v1/constitutions",
        content=document,
        headers=headers | {"Content-Type": "application/yaml"},
        timeout=60,
    )
    pushed.raise_for_status()
    prompts = [
        {"prompt": f"How do I keep a sourdough starter alive, case {i}?"} for i in range(rows)
    ]
    batch = httpx.post(
        f"{base}/v1/batches", json={"name": "latency", "rows": prompts}, headers=headers, timeout=60
    )
    batch.raise_for_status()
    return {
        "type": "sl_cai",
        "batch_id": batch.json()["id"],
        "constitution": "default",
        "model": "smollm2",
    }


def _purge(broker: str) -> None:
    import redis

    redis.Redis.from_url(broker).flushdb()


def _gateway_env(broker: str, tree: Path, pool_size: int | None = None) -> dict[str, str]:
    env = {"CHARTER_BROKER_URL": broker, "CHARTER_RATE_LIMITS": NO_LIMITS, "PYTHONPATH": str(tree)}
    return env | ({"CHARTER_DATABASE_POOL_SIZE": str(pool_size)} if pool_size else {})


# --------------------------------------------------------------------------- profile


def serve_profiled(port: int, out: Path) -> None:
    """The gateway under pyinstrument until uvicorn exits (SIGTERM): the event loop's thread is sampled
    throughout, and every threadpool call (sync endpoints, the unit of work's database
    calls) in its own profiler; all sessions are combined into one text report."""
    import signal

    import anyio.to_thread
    import uvicorn
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    from services.gateway.app import create_app

    sessions: list[Session] = []
    lock = threading.Lock()
    run_sync = anyio.to_thread.run_sync

    async def profiled_run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call(*inner: Any) -> Any:
            profiler = Profiler(interval=0.0002, async_mode="disabled")
            profiler.start()
            try:
                return func(*inner)
            finally:
                session = profiler.stop()
                with lock:
                    sessions.append(session)

        return await run_sync(call, *args, **kwargs)

    anyio.to_thread.run_sync = profiled_run_sync  # type: ignore[assignment]
    main = Profiler(interval=0.0005, async_mode="disabled")
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    # uvicorn re-raises the SIGTERM it handled once it has shut down; a no-op handler
    # lets this function go on to write the report.
    signal.signal(signal.SIGTERM, lambda *_: None)
    main.start()
    server.run()
    total = main.stop()
    while len(sessions) > 1:  # pairwise, so combining stays O(n log n)
        pairs = zip(sessions[::2], sessions[1::2], strict=False)
        sessions = [Session.combine(a, b) for a, b in pairs] + sessions[len(sessions) // 2 * 2 :]
    threads = sessions[0]  # one tree for all worker threads: drop each record's thread root
    pool = "threadpool\x00<thread>\x000"
    threads.frame_records = [([pool, *stack[1:]], t) for stack, t in threads.frame_records]
    renderer = ConsoleRenderer(unicode=False, color=False, show_all=False, time="percent_of_total")
    report = (
        "== event loop thread ==\n"
        + renderer.render(total)
        + "\n== threadpool calls, combined ==\n"
        + renderer.render(threads)
    )
    out.write_text(report.replace(f"{ROOT}/", ""))  # paths relative to the checkout


def _profile(
    url: str, key: str, spec: dict[str, Any], broker: str, out: Path, clients: int, n: int
) -> None:
    """``n`` submits then ``n`` status reads from ``clients`` clients, profiled."""
    port = free_port()
    env = os.environ | _gateway_env(broker, ROOT)
    env |= {"CHARTER_DATABASE_URL": url, "CHARTER_SECRET_KEY": SECRET}
    with tempfile.TemporaryDirectory() as data:
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve-profiled", str(port), str(out.resolve())],
            cwd=data,
            env=env | {"CHARTER_DATA_DIR": data},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the profiled gateway did not start") from None
                    time.sleep(0.2)
            side = Side("profiled", 1)

            async def load() -> None:
                async with httpx.AsyncClient(
                    base_url=base, headers={"X-API-Key": key}, timeout=TIMEOUT_S
                ) as client:
                    calls = _requests(client, side, spec)
                    for op in OPS:
                        await _load(client, calls[op], clients, n)

            asyncio.run(load())
        finally:
            process.terminate()
            process.wait(timeout=600)
    log(f"profile written to {out}")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="8,64", help="Comma list of concurrent clients.")
    parser.add_argument("--requests", type=int, default=640, help="Per op, point and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="Seconds each client pauses after an answer (0: saturate the gateway).",
    )
    parser.add_argument("--workers", default="1,2", help="Comma list of uvicorn worker counts.")
    parser.add_argument(
        "--pool-sizes", default="", help="Comma list of database_pool_size values (sides)."
    )
    parser.add_argument("--rows", type=int, default=16, help="Prompts in the submitted batch.")
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help="PostgreSQL for scratch databases."
    )
    parser.add_argument("--broker-url", default=BROKER, help="Redis db; flushed before and after.")
    parser.add_argument(
        "--baseline-tree", type=Path, help="Also serve this source tree (1 worker), e.g. HEAD."
    )
    parser.add_argument(
        "--baseline-max-clients", type=int, help="Skip the baseline above this many clients."
    )
    parser.add_argument("--profile", type=Path, help="Write a pyinstrument report here.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    clients = [int(x) for x in args.clients.split(",")]
    sides = [
        Side(f"{w} worker{'s' if w > 1 else ''}" + (f", pool {p}" if p else ""), w, p)
        for w in map(int, args.workers.split(","))
        for p in ([int(x) for x in args.pool_sizes.split(",")] if args.pool_sizes else [None])
    ]
    if args.baseline_tree:
        baseline = Side("baseline, 1 worker", 1, tree=args.baseline_tree.resolve())
        baseline.max_clients = args.baseline_max_clients
        sides.append(baseline)

    _purge(args.broker_url)
    started = machine()
    with scratch_database(args.server) as url, ExitStack() as stack:
        key, _ = admin_key(url)
        for side in sides:
            data = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            side.gateway = stack.enter_context(
                Gateway(
                    url,
                    data,
                    env=_gateway_env(args.broker_url, side.tree, side.pool_size),
                    workers=side.workers,
                )
            )
        spec = _prepare(sides[0].base, key, args.rows)
        try:
            results = asyncio.run(
                _run(sides, key, spec, clients, args.requests, args.rounds, args.think)
            )
            if args.profile:
                _profile(url, key, spec, args.broker_url, args.profile, max(clients), args.requests)
        finally:
            _purge(args.broker_url)
    result = {
        "benchmark": "api_latency",
        "machine_before": started,
        "machine_after": machine(),
        "rows_per_job": args.rows,
        "clients": clients,
        "requests_per_point_and_round": args.requests,
        "rounds": args.rounds,
        "think_s": args.think,
        "results": results,
    }
    write_result(args.out, result)
    if args.out is not None:
        for op in OPS:
            series = {
                f"{side.name} {q}": [
                    (n, results[side.name][str(n)][op][f"{q}_ms"]) for n in side.clients(clients)
                ]
                for side in sides
                for q in ("p50", "p99")
            }
            plot(
                args.out.with_name(f"{args.out.stem}_{op}.svg"),
                series,
                title=f"{op} latency ({'POST /v1/jobs' if op == 'submit' else 'GET /v1/jobs/{id}'})",
                xlabel="concurrent clients",
                ylabel="ms",
            )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-profiled"]:
        serve_profiled(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
