"""``charter serve --workers 2``: a scrape of either gateway process counts every
process's requests (prometheus_client's multiprocess mode), and the database series
appear once, not once per process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from charter.embedded import free_port, settings_env
from tests.stack import base_settings

REQUESTS = 60


def _scrape(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    # A new connection each time, so the kernel may hand it to either process.
    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=10).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_every_process_is_counted_in_every_scrape(tmp_path: Path) -> None:
    settings = base_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'charter.db'}", None)
    settings.data_dir.mkdir(parents=True)
    shared = tmp_path / "metrics"
    (shared).mkdir()
    (shared / "counter_1.db").write_bytes(b"stale")  # an earlier run's: must be emptied
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARTER_")}
    env = inherited | settings_env(settings) | {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    charter = Path(sys.executable).with_name("charter")
    command = [str(charter), "serve", "--port", str(port), "--workers", "2"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=settings.data_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        pids: set[str] = set()
        while len(pids) < 2:  # both processes up: each writes its own files once it serves
            with suppress(httpx.TransportError):
                httpx.get(f"{base}/healthz", headers={"Connection": "close"}, timeout=2)
            pids = {p.stem.rsplit("_", 1)[1] for p in shared.glob("*.db")} - {"1"}
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (pids, log.read_text())
            time.sleep(0.2)
        before = _count(_scrape(base))

        def call(_: int) -> int:
            return httpx.get(f"{base}/healthz", headers={"Connection": "close"}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(call, range(REQUESTS))) == {200}
        for _ in range(6):  # whichever process answers, it answers for both
            samples = _scrape(base)
            assert _count(samples) == before + REQUESTS
            assert len(samples["charter_broker_up"]) == 1  # the database series once
            assert "process_cpu_seconds_total" not in samples  # per process: not summable
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    assert not (shared / "counter_1.db").exists()


def _count(samples: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    return sum(
        value
        for labels, value in samples.get("charter_http_requests_total", [])
        if labels.get("handler") == "/healthz"
    )
