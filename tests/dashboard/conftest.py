"""A real gateway on a free port, real jobs run by the scripted engine, and a real
headless Chromium (Debian's, driven by Playwright) that logs in and reads the pages.

The browser records every console message, every failed request and every URL it
requests, so a test can assert that nothing failed and nothing left the gateway.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, update

from charter.db.models import Worker, utcnow
from charter.db.session import session_factory
from charter.embedded import GatewayThread
from charter.settings import Settings
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

CHROMIUM = os.environ.get("CHARTER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WORKER = "dash-host:4242"
MODEL = "m"

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium; never a downloaded one (``playwright install`` is not used).

    Per module, not per session: while Playwright's sync API is open its event loop runs
    in the main thread, and any later test calling ``asyncio.run`` would fail."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium (make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(reason)
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def gateway(settings: Settings, engine: Engine) -> Iterator[GatewayThread]:
    with GatewayThread(settings) as thread:
        yield thread


@dataclass
class Tab:
    """A browser page with everything it did recorded."""

    page: Any
    origin: str
    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    bad_status: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.origin + path)
        self.page.wait_for_load_state("networkidle")
        return response

    def login(self, key: str) -> None:
        self.goto("/dashboard/login")
        self.page.fill("#api_key", key)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")

    def points(self, chart: str) -> list[tuple[str, float]]:
        """``(data-x, data-y)`` of the line chart titled ``chart``."""
        selector = f'svg[data-chart="{chart}"] circle.point'
        return [
            (c.get_attribute("data-x"), float(c.get_attribute("data-y")))
            for c in self.page.query_selector_all(selector)
        ]

    def bars(self, chart: str) -> dict[str, float]:
        selector = f'svg[data-chart="{chart}"] rect.bar'
        return {
            b.get_attribute("data-label"): float(b.get_attribute("data-value"))
            for b in self.page.query_selector_all(selector)
        }

    def assert_clean(self, *, allowed_status: tuple[int, ...] = ()) -> None:
        expected = {
            f"error: Failed to load resource: the server responded with a status of {code} "
            for code in allowed_status
        }
        console = [m for m in self.console if not any(m.startswith(e) for e in expected)]
        assert console == [], console
        assert self.failed == [], self.failed
        assert self.bad_status == [
            s for s in self.bad_status if int(s.split()[0]) in allowed_status
        ]
        foreign = [url for url in self.requests if not url.startswith(self.origin + "/")]
        assert foreign == [], foreign


@pytest.fixture
def open_tab(browser: Any, gateway: GatewayThread) -> Iterator[Callable[[], Tab]]:
    contexts: list[Any] = []

    def make() -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        tab = Tab(page, gateway.url)
        page.on(
            "console",
            lambda m: (
                tab.console.append(f"{m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: tab.console.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: tab.failed.append(f"{r.url}: {r.failure}"))
        page.on("request", lambda r: tab.requests.append(r.url))
        page.on(
            "response",
            lambda r: tab.bad_status.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        page.on("dialog", lambda d: d.accept())  # the cancel button asks to confirm
        return tab

    yield make
    for context in contexts:
        context.close()


class Project:
    """A project's HTTP client on the live gateway, and jobs run with the scripted engine."""

    def __init__(
        self, gateway: GatewayThread, key: str, engine: Engine, settings: Settings, doc: Any
    ) -> None:
        self.http = httpx.Client(base_url=gateway.url, headers={"X-API-Key": key}, timeout=30)
        self.sessions = session_factory(engine)
        self.settings = settings
        response = self.http.post("/v1/constitutions", json=doc)
        assert response.status_code in (200, 201), response.text

    def submit(self, rows: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
        batch = self.http.post("/v1/batches", json={"name": "b", "rows": rows})
        assert batch.status_code == 201, batch.text
        body.setdefault("constitution", "default")
        job = self.http.post(
            "/v1/jobs", json={"batch_id": batch.json()["id"], "model": MODEL, **body}
        )
        assert job.status_code == 202, job.text
        return dict(job.json())

    def run(self, rows: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
        """Submit a job and run every chunk as the worker :data:`WORKER`."""
        job = self.submit(rows, **body)
        runner = ChunkRunner(
            self.sessions, {MODEL: ScriptedEngine(model_name=MODEL)}, self.settings, WORKER
        )
        for chunk in range(job["chunk_count"]):
            runner.run_chunk(job["id"], chunk)
        return job

    def heartbeat(self, current_chunk: str | None = None) -> None:
        with self.sessions() as s, s.begin():
            s.execute(
                update(Worker)
                .where(Worker.id == WORKER)
                .values(last_seen=utcnow(), current_chunk=current_chunk)
            )


@pytest.fixture
def fleet(engine: Engine) -> None:
    """One scripted worker, just seen, serving :data:`MODEL`."""
    with session_factory(engine)() as s, s.begin():
        s.add(
            Worker(
                id=WORKER,
                hostname="dash-host",
                pid=4242,
                engine="scripted",
                models=[MODEL],
                started_at=utcnow() - timedelta(minutes=5),
                last_seen=utcnow(),
            )
        )
