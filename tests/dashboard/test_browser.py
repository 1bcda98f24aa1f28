"""The dashboard in a real headless Chromium, after real jobs ran on the gateway.

Every page is opened through the login form; each must load with no console error,
no failed request and no request to anything but the gateway, and its charts must
hold the numbers the database holds.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from charter.core.jobs import ItemState, JobStatus, RunStatus
from charter.db.models import Job, Label, RunMetric, TrainingRun, WorkItem, utcnow
from charter.db.session import session_factory
from tests.dashboard.conftest import SCREENSHOTS, Project, Tab

PROMPTS = [{"prompt": f"How do I fix bug {i}?"} for i in range(6)]
PAIRS = [
    {"prompt": f"Pair {i}?", "response_a": "a" * (2 + 7 * i), "response_b": "b" * (40 - 4 * i)}
    for i in range(8)
]
METRICS = [
    {"loss": 2.0 / (1 + s), "kl": 0.01 * s, "rewards/accuracies": 0.5 + 0.04 * s} for s in range(10)
]


def _project(
    gateway: Any,
    issue: Any,
    engine: Engine,
    settings: Any,
    doc: Any,
    name: str,
    scopes: tuple[str, ...],
) -> tuple[Any, Project]:
    key = issue(name, scopes)
    return key, Project(gateway, key.key, engine, settings, doc)


def _training_run(engine: Engine, project_id: str) -> str:
    """A run with metric reports, as a trainer leaves it (written straight to the store)."""
    now = utcnow()
    with session_factory(engine)() as s, s.begin():
        run = TrainingRun(
            project_id=project_id,
            type="dpo",
            config={"beta": 0.1, "learning_rate": 5e-6},
            status=RunStatus.RUNNING,
            checkpoint="runs/x/checkpoint-10",
            created_at=now - timedelta(minutes=3),
            started_at=now - timedelta(minutes=2),
        )
        s.add(run)
        s.flush()
        for step, metrics in enumerate(METRICS):
            s.add(RunMetric(run_id=run.id, step=step * 5, metrics=metrics))
        return run.id


def _state_counts(engine: Engine, job_id: str) -> dict[str, int]:
    with session_factory(engine)() as s:
        rows = s.execute(
            select(WorkItem.status, func.count())
            .where(WorkItem.job_id == job_id)
            .group_by(WorkItem.status)
        )
        return {state: n for state, n in rows}


def test_every_page_after_real_jobs(
    gateway: Any,
    open_tab: Any,
    issue: Any,
    engine: Engine,
    settings: Any,
    default_document: Any,
    fleet: None,
    backend: str,
) -> None:
    key, alpha = _project(gateway, issue, engine, settings, default_document, "alpha", ("admin",))
    compare = alpha.run(PAIRS, type="compare", params={"swap": True}, chunk_size=4)
    sl = alpha.run(PROMPTS, type="sl_cai", params={"rounds": 2}, seed=7, chunk_size=3)
    waiting = alpha.submit(PROMPTS[:2], type="sl_cai")
    run_id = _training_run(engine, key.project_id)
    alpha.heartbeat(current_chunk=f"{waiting['id']}:0")

    tab: Tab = open_tab()
    tab.goto("/dashboard/")
    assert tab.page.url.startswith(gateway.url + "/dashboard/login")  # no session yet
    tab.login(key.key)
    assert tab.page.url == gateway.url + "/dashboard/"

    # Overview: every label written in the window is a point's count; the worker is online.
    with session_factory(engine)() as s:
        labels = s.scalar(
            select(func.count()).select_from(Label).where(Label.project_id == key.project_id)
        )
        created = [
            as_minute(t)
            for t in s.scalars(select(Label.created_at).where(Label.project_id == key.project_id))
        ]
    points = tab.points("Labels per minute, last 6 h")
    assert len(points) >= 300  # every minute of the window is a point
    assert sum(y for _, y in points) == labels
    by_minute = {x: y for x, y in points if y}
    assert by_minute == {m: float(n) for m, n in Counter(created).items()}
    assert tab.page.inner_text("#workers-online") == "1"
    worker_row = tab.page.inner_text("#workers tbody tr")
    assert "dash-host" in worker_row and "scripted" in worker_row
    assert f"{waiting['id']}:0" in worker_row
    queued = tab.page.inner_text(f'#queue tr[data-model="m"] td[data-state="{ItemState.QUEUED}"]')
    assert int(queued) == 2  # the waiting job's items
    if backend == "sqlite":
        tab.page.screenshot(path=str(SCREENSHOTS / "overview.png"))

    # Jobs list: one row per job, progress as the database counts it.
    tab.goto("/dashboard/jobs")
    rows = tab.page.query_selector_all("#jobs tbody tr")
    assert {r.get_attribute("data-job") for r in rows} == {compare["id"], sl["id"], waiting["id"]}
    bar = tab.page.query_selector(f'tr[data-job="{compare["id"]}"] progress')
    assert bar.get_attribute("data-finished") == bar.get_attribute("data-items") == str(len(PAIRS))
    tab.goto("/dashboard/jobs?type=compare")
    assert [r.get_attribute("data-job") for r in tab.page.query_selector_all("#jobs tbody tr")] == [
        compare["id"]
    ]

    # The compare job: states, progress over time and the soft-label histogram.
    tab.goto(f"/dashboard/jobs/{compare['id']}")
    counts = _state_counts(engine, compare["id"])
    assert tab.bars("Items by state") == {
        state.value: float(counts.get(state, 0)) for state in ItemState
    }
    timeline = tab.points("Finished items over time")
    assert timeline and timeline[-1][1] == len(PAIRS)
    assert [y for _, y in timeline] == sorted(y for _, y in timeline)  # cumulative
    with session_factory(engine)() as s:
        p_a = list(
            s.scalars(
                select(Label.p_a).where(Label.job_id == compare["id"], Label.p_a.is_not(None))
            )
        )
    histogram = tab.bars("Soft labels P(A)")
    assert sum(histogram.values()) == len(p_a) == len(PAIRS)
    for label, count in histogram.items():
        low, high = (float(v) for v in label.split("-"))
        inside = [p for p in p_a if low <= p < high or (high == 1.0 and p == 1.0)]
        assert count == len(inside), (label, p_a)
    assert tab.page.inner_text("#job-status") == JobStatus.COMPLETED
    assert tab.page.query_selector("#judge [data-stat=position_bias] .value") is not None
    assert tab.page.query_selector("#cancel-job") is None  # completed: nothing to cancel
    if backend == "sqlite":
        tab.page.screenshot(path=str(SCREENSHOTS / "job.png"))

    # The SL-CAI job: principle draws and critique -> revision chains, round by round.
    tab.goto(f"/dashboard/jobs/{sl['id']}")
    with session_factory(engine)() as s:
        drawn = Counter(
            p
            for ids in s.scalars(select(Label.principle_ids).where(Label.job_id == sl["id"]))
            for p in ids
        )
    assert tab.bars("Critique principles drawn") == {p: float(n) for p, n in drawn.items()}
    chains = tab.page.query_selector_all("article.chain")
    assert chains and all(len(c.query_selector_all(".round[data-round]")) == 2 for c in chains)

    # Models and judges: the compare job's model with its bias statistics.
    tab.goto("/dashboard/models")
    assert tab.page.query_selector('section[data-model="m"] [data-stat=n]').inner_text() == str(
        len(PAIRS)
    )

    # Training run: one curve per metric, each point a stored report.
    tab.goto(f"/dashboard/runs/{run_id}")
    for name in METRICS[0]:
        assert tab.points(name) == [
            (str(s * 5), pytest.approx(m[name])) for s, m in enumerate(METRICS)
        ]
    assert tab.page.inner_text("#run-checkpoint") == "runs/x/checkpoint-10"
    if backend == "sqlite":
        tab.page.screenshot(path=str(SCREENSHOTS / "run.png"))
    tab.goto("/dashboard/runs")
    assert tab.page.query_selector(f'tr[data-run="{run_id}"]') is not None

    for path in (
        "/dashboard/constitutions",
        "/dashboard/constitutions/default",
        "/dashboard/datasets",
    ):
        response = tab.goto(path)
        assert response.status == 200, path

    # Live updates: the overview's live block is re-fetched and swapped in.
    tab.goto("/dashboard/")
    first = tab.page.get_attribute("#live", "data-refreshed")
    tab.page.wait_for_function(
        "(first) => document.getElementById('live').getAttribute('data-refreshed') !== first",
        arg=first,
        timeout=15_000,
    )
    assert tab.page.query_selector('svg[data-chart="Labels per minute, last 6 h"]') is not None

    tab.assert_clean()

    # Logging out ends the session: the pages send the browser back to the login form.
    with tab.page.expect_navigation():
        tab.page.click(".logout button")
    tab.goto("/dashboard/jobs")
    assert tab.page.url.startswith(gateway.url + "/dashboard/login")


def as_minute(moment: Any) -> str:
    return (
        moment.replace(second=0, microsecond=0).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def test_cancel_from_the_page(
    gateway: Any, open_tab: Any, issue: Any, engine: Engine, settings: Any, default_document: Any
) -> None:
    key, alpha = _project(gateway, issue, engine, settings, default_document, "alpha", ("submit",))
    job = alpha.submit(PROMPTS, type="sl_cai")
    tab: Tab = open_tab()
    tab.login(key.key)
    tab.goto(f"/dashboard/jobs/{job['id']}")
    assert tab.page.inner_text("#job-status") == JobStatus.QUEUED
    with tab.page.expect_navigation():
        tab.page.click("#cancel-job")
    assert tab.page.url == f"{gateway.url}/dashboard/jobs/{job['id']}"
    assert tab.page.inner_text("#job-status") == JobStatus.CANCELLED
    with session_factory(engine)() as s:
        assert s.get_one(Job, job["id"]).status == JobStatus.CANCELLED
    assert _state_counts(engine, job["id"]) == {ItemState.CANCELLED: len(PROMPTS)}
    assert tab.page.query_selector("#cancel-job") is None
    tab.assert_clean()


def test_a_read_key_sees_no_cancel_and_cannot_cancel(
    gateway: Any, open_tab: Any, issue: Any, engine: Engine, settings: Any, default_document: Any
) -> None:
    _, alpha = _project(gateway, issue, engine, settings, default_document, "alpha", ("admin",))
    job = alpha.submit(PROMPTS[:2], type="sl_cai")
    reader = issue("alpha", ("read",))
    tab: Tab = open_tab()
    tab.login(reader.key)
    tab.goto(f"/dashboard/jobs/{job['id']}")
    assert tab.page.query_selector("#cancel-job") is None
    csrf = tab.page.get_attribute(".logout input[name=csrf]", "value")
    response = tab.page.request.post(
        f"{gateway.url}/dashboard/jobs/{job['id']}/cancel",
        form={"csrf": csrf},
        headers={"Origin": gateway.url},
    )
    assert response.status == 403 and "submit" in response.text()
    with session_factory(engine)() as s:
        assert s.get_one(Job, job["id"]).status != JobStatus.CANCELLED


def test_another_projects_key_sees_none_of_it(
    gateway: Any,
    open_tab: Any,
    issue: Any,
    engine: Engine,
    settings: Any,
    default_document: Any,
    fleet: None,
) -> None:
    key, alpha = _project(gateway, issue, engine, settings, default_document, "alpha", ("admin",))
    job = alpha.run(PAIRS[:4], type="compare")
    run_id = _training_run(engine, key.project_id)
    alpha.heartbeat()
    beta = issue("beta", ("read",))
    tab: Tab = open_tab()
    tab.login(beta.key)
    seen = ""
    for path in (
        "/dashboard/",
        "/dashboard/jobs",
        "/dashboard/models",
        "/dashboard/constitutions",
        "/dashboard/datasets",
        "/dashboard/runs",
    ):
        assert tab.goto(path).status == 200
        seen += tab.page.content()
    assert job["id"] not in seen and run_id not in seen and "dash-host" not in seen
    tab.goto("/dashboard/jobs")
    assert tab.page.query_selector("#jobs") is None and "No jobs" in tab.page.inner_text("#live")
    tab.goto("/dashboard/")
    assert sum(y for _, y in tab.points("Labels per minute, last 6 h")) == 0
    assert tab.goto(f"/dashboard/jobs/{job['id']}").status == 404
    assert tab.goto(f"/dashboard/runs/{run_id}").status == 404
    assert tab.goto("/dashboard/constitutions/default").status == 404
    assert re.search(r"not found", tab.page.inner_text(".error"))
    tab.assert_clean(allowed_status=(404,))


def test_polling_pauses_while_the_tab_is_hidden(open_tab: Any, issue: Any) -> None:
    tab: Tab = open_tab()
    tab.login(issue("alpha", ("read",)).key)
    tab.goto("/dashboard/jobs")

    def polls() -> int:
        return sum("fragment=1" in url for url in tab.requests)

    tab.page.wait_for_function(
        "() => document.getElementById('live').hasAttribute('data-refreshed')"
    )
    tab.page.evaluate(
        """() => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    hidden_at = polls()
    tab.page.wait_for_timeout(6_000)  # more than one polling interval
    assert polls() == hidden_at
    tab.page.evaluate(
        """() => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    tab.page.wait_for_timeout(1_000)
    assert polls() == hidden_at + 1  # refreshed at once when shown again
    tab.assert_clean()
