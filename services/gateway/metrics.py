"""Charter's own Prometheus series, read from the database at scrape time.

A custom collector on the app's own registry runs a few aggregate queries per scrape
instead of counting in process memory, so every gateway process answers the same
numbers for the whole deployment (all projects) however many gateways and workers
run. Workers push their engine counters with their heartbeat (``workers`` columns)
and are exported from there. Queue depths come from the broker the gateway already
publishes to; a broker that cannot be reached only sets ``charter_broker_up 0``.

Per-route request counts and latency histograms (grouped by route template, so ids
never become labels) come from ``prometheus-fastapi-instrumentator`` on the same
registry. docs/OPERATIONS.md lists every series.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from fastapi import FastAPI
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from charter.core.jobs import FINAL_JOB_STATUSES, ItemState
from charter.db.models import Job, Label, Worker, WorkItem, utcnow
from charter.queue import queue_lengths
from charter.settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_FAILURE_REASONS = 20
"""Distinct reasons exported per model (error class names); the rest count as ``other``."""

_ABSTAIN_REASONS = (  # the texts charter.core.labels writes, shortened
    ("A/B probability mass%", "low_mass"),
    ("answer position unreadable%", "unreadable"),
)
_ERROR_CLASS = re.compile(r"^([A-Za-z_][\w.]{0,63}): ")


def failure_reason(last_error: str | None) -> str:
    """A failed item's short reason: ``lease_expired``, ``worker_lost`` or the class of
    the last error (``ValueError``); ``other`` when it names none."""
    text = (last_error or "").split("last error: ", 1)[-1]
    if text.startswith("lease of ") and "expired" in text:
        return "lease_expired"
    if not text or text.startswith("worker lost"):
        return "worker_lost"
    match = _ERROR_CLASS.match(text)
    return match.group(1).rsplit(".", 1)[-1] if match else "other"


# Queries --------------------------------------------------------------------------


@dataclass
class JobCounts:
    """One job's items by state, retries, labels and failures by short reason."""

    items: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    labels: int = 0
    failures: Counter[str] = field(default_factory=Counter)


def job_counts(session: Session, job_ids: list[str] | None) -> dict[str, JobCounts]:
    """The counts of these jobs (None: of every job). Grouped by job id (jobs are few
    beside their items) and joined to the jobs' models and types in Python: a scan of
    ``work_items`` (of the jobs' rows on the ``(job_id, chunk)`` index when ids are
    given), an index-only scan of ``labels (job_id, id)``, and the final items'
    reasons on the ``(status, lease_expires_at)`` index."""
    out: dict[str, JobCounts] = {}

    def of(query: Any, column: Any) -> Any:
        return query if job_ids is None else query.where(column.in_(job_ids))

    if job_ids is not None and not job_ids:
        return out
    retries = func.sum(case((WorkItem.attempt > 1, WorkItem.attempt - 1), else_=0))
    items = of(select(WorkItem.job_id, WorkItem.status, func.count(), retries), WorkItem.job_id)
    for job, state, n, retried in session.execute(items.group_by(WorkItem.job_id, WorkItem.status)):
        counts = out.setdefault(job, JobCounts())
        counts.items[state] += int(n)
        counts.retries += int(retried or 0)
    labels = of(select(Label.job_id, func.count()), Label.job_id).group_by(Label.job_id)
    for job, n in session.execute(labels):
        out.setdefault(job, JobCounts()).labels += int(n)
    for job, reason, n in failures_by_job(session, job_ids):
        out.setdefault(job, JobCounts()).failures[reason] += n
    return out


def job_kinds(session: Session) -> dict[str, tuple[str, str, str]]:
    """Job id -> (model, type, status)."""
    rows = session.execute(select(Job.id, Job.model, Job.type, Job.status))
    return {job: (model, kind, status) for job, model, kind, status in rows}


def outbox_backlog(session: Session) -> int:
    """Chunks with queued items never published (``charter.outbox``)."""
    chunks = (
        select(WorkItem.job_id, WorkItem.chunk)
        .where(WorkItem.status == ItemState.QUEUED, WorkItem.published_at.is_(None))
        .distinct()
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(chunks)) or 0)


def expired_leases(session: Session) -> list[tuple[str, int]]:
    """Running items whose lease has expired and that the sweeper has not re-queued yet,
    per job (the ``(status, lease_expires_at)`` index)."""
    rows = session.execute(
        select(WorkItem.job_id, func.count())
        .where(WorkItem.status == ItemState.RUNNING, WorkItem.lease_expires_at < utcnow())
        .group_by(WorkItem.job_id)
    )
    return [(job, int(n)) for job, n in rows]


def failures_by_job(session: Session, job_ids: list[str] | None) -> list[tuple[str, str, int]]:
    """(job id, short reason, items) of abstained and failed items. Abstain reasons are
    shortened in SQL (they embed numbers); failed items are grouped by their error text,
    which a chunk's items share, and shortened by :func:`failure_reason`."""
    abstain = case(
        *[(WorkItem.last_error.like(pattern), name) for pattern, name in _ABSTAIN_REASONS],
        else_="other",
    )
    mine = [] if job_ids is None else [WorkItem.job_id.in_(job_ids)]
    abstained = session.execute(
        select(WorkItem.job_id, abstain, func.count())
        .where(WorkItem.status == ItemState.ABSTAINED, *mine)
        .group_by(WorkItem.job_id, abstain)
    )
    failed = session.execute(
        select(WorkItem.job_id, WorkItem.last_error, func.count())
        .where(WorkItem.status == ItemState.FAILED, *mine)
        .group_by(WorkItem.job_id, WorkItem.last_error)
    )
    out = [(job, str(reason), int(n)) for job, reason, n in abstained]
    out += [(job, failure_reason(error), int(n)) for job, error, n in failed]
    return out


def open_job_models(session: Session) -> set[str]:
    """Models with queued items: the queues worth asking the broker about."""
    waiting = select(WorkItem.job_id).where(WorkItem.status == ItemState.QUEUED)
    return set(session.scalars(select(Job.model).where(Job.id.in_(waiting)).distinct()))


def live_workers(session: Session, seen_within: float) -> list[Worker]:
    since = utcnow() - timedelta(seconds=seen_within)
    return list(session.scalars(select(Worker).where(Worker.last_seen >= since)))


# The collector --------------------------------------------------------------------


def _gauge(name: str, doc: str, labels: list[str], values: Iterable[tuple[Any, ...]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for *key, value in values:
        family.add_metric([str(k) for k in key], value)
    return family


def _counter(name: str, doc: str, labels: list[str], values: Iterable[tuple[Any, ...]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for *key, value in values:
        family.add_metric([str(k) for k in key], value)
    return family


class CharterCollector(Collector):
    """Yields Charter's series from the database (and the broker) at each scrape."""

    def __init__(
        self, sessions: sessionmaker[Session], producer: Celery, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.settings = settings
        self._final: dict[str, JobCounts] = {}
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []  # registered without a trial scrape: no query at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        with self.sessions() as session:
            yield from self._database(session)
            models = open_job_models(session) | set(self.settings.worker_models)
        yield from self._broker(models)
        yield GaugeMetricFamily(
            "charter_scrape_duration_seconds",
            "Time this scrape spent in the database and the broker.",
            value=time.perf_counter() - started,
        )

    def _counts(
        self, session: Session, jobs: dict[str, tuple[str, str, str]]
    ) -> dict[str, JobCounts]:
        """Every job's counts. A job in a final status changes no more, so its counts
        are read once and kept: a scrape reads only the rows of open jobs (and, the
        first time, the whole table)."""
        with self._lock:
            for gone in self._final.keys() - jobs.keys():
                del self._final[gone]
            need = [job for job in jobs if job not in self._final]
            fresh = job_counts(session, need if len(need) < len(jobs) else None)
            for job in need:
                if jobs[job][2] in FINAL_JOB_STATUSES:
                    self._final[job] = fresh.setdefault(job, JobCounts())
            return {**self._final, **fresh}

    def _database(self, session: Session) -> Iterator[Metric]:
        jobs = job_kinds(session)
        counts = self._counts(session, jobs)

        def model(job: str) -> str:
            return jobs.get(job, ("unknown", "", ""))[0]

        items: Counter[tuple[str, str]] = Counter()
        retries: Counter[str] = Counter({m: 0 for m, _, _ in jobs.values()})
        labels: Counter[tuple[str, str]] = Counter()
        failures: Counter[tuple[str, str]] = Counter()
        for job, c in counts.items():
            m, kind, _ = jobs.get(job, ("unknown", "unknown", ""))
            for state, n in c.items.items():
                items[m, state] += n
            retries[m] += c.retries
            if c.labels:
                labels[m, kind] += c.labels
            for reason, n in c.failures.items():
                failures[m, reason] += n
        yield _gauge(
            "charter_work_items",
            "Work items by model and state (all projects).",
            ["model", "state"],
            ((m, s, n) for (m, s), n in sorted(items.items())),
        )
        yield _gauge(
            "charter_jobs",
            "Jobs by type and status.",
            ["type", "status"],
            (
                (t, s, n)
                for (t, s), n in sorted(Counter((t, s) for _, t, s in jobs.values()).items())
            ),
        )
        yield GaugeMetricFamily(
            "charter_outbox_backlog_chunks",
            "Chunks with queued items not yet published to the broker.",
            value=outbox_backlog(session),
        )
        yield _counter(
            "charter_labels",
            "Labels written, by model and kind (the job type).",
            ["model", "kind"],
            ((m, k, n) for (m, k), n in sorted(labels.items())),
        )
        expired: Counter[str] = Counter()
        for job, n in expired_leases(session):
            expired[model(job)] += n
        yield _gauge(
            "charter_leases_expired",
            "Running items whose lease expired, not yet re-queued by the sweeper.",
            ["model"],
            sorted(expired.items()),
        )
        yield _counter(
            "charter_item_retries",
            "Attempts beyond the first, summed over the work items.",
            ["model"],
            sorted(retries.items()),
        )
        yield _gauge(
            "charter_item_failures",
            "Failed and abstained items by model and short reason.",
            ["model", "reason"],
            ((m, r, n) for (m, r), n in sorted(_bounded(failures).items())),
        )
        yield from self._workers(session)

    def _workers(self, session: Session) -> Iterator[Metric]:
        # Seen within three beats: a worker that stopped beating leaves the series.
        workers = live_workers(session, 3 * self.settings.worker_heartbeat_seconds)
        yield _gauge(
            "charter_workers_online",
            "Workers whose heartbeat is recent, by engine.",
            ["engine"],
            sorted(Counter(w.engine for w in workers).items()),
        )
        key = [(w.id, w.engine) for w in workers]
        yield _counter(
            "charter_engine_calls",
            "Engine calls (one batch each) since the worker started.",
            ["worker", "engine"],
            ((*k, w.engine_calls) for k, w in zip(key, workers, strict=True)),
        )
        yield _counter(
            "charter_engine_seconds",
            "Seconds spent in engine calls since the worker started.",
            ["worker", "engine"],
            ((*k, w.engine_seconds) for k, w in zip(key, workers, strict=True)),
        )
        yield _counter(
            "charter_engine_batch_items",
            "Sum of engine batch sizes (mean batch = this / charter_engine_calls_total).",
            ["worker", "engine"],
            ((*k, w.batch_items) for k, w in zip(key, workers, strict=True)),
        )
        yield _counter(
            "charter_engine_tokens",
            "Text tokens sent to (in) and generated by (out) the engine.",
            ["worker", "engine", "direction"],
            [
                *((*k, "in", w.tokens_in) for k, w in zip(key, workers, strict=True)),
                *((*k, "out", w.tokens_out) for k, w in zip(key, workers, strict=True)),
            ],
        )

    def _broker(self, models: set[str]) -> Iterator[Metric]:
        try:
            depths = queue_lengths(self.producer, sorted(models))
        except Exception as exc:  # the database series still go out
            log.warning("metrics: broker unreachable: %s: %s", type(exc).__name__, exc)
            yield GaugeMetricFamily("charter_broker_up", "Whether the broker answered.", value=0)
            return
        yield GaugeMetricFamily("charter_broker_up", "Whether the broker answered.", value=1)
        yield _gauge(
            "charter_queue_depth",
            "Messages waiting in each model's queue (not those a worker holds); the runs' "
            "models share one.",
            ["queue"],
            sorted(depths.items()),  # by queue name: every run:<id> is one model.runs series
        )


def _bounded(failures: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """At most MAX_FAILURE_REASONS reasons per model, the commonest; the rest ``other``."""
    out: Counter[tuple[str, str]] = Counter()
    for m in {m for m, _ in failures}:
        ranked = sorted(((n, r) for (mm, r), n in failures.items() if mm == m), reverse=True)
        for rank, (n, reason) in enumerate(ranked):
            out[m, reason if rank < MAX_FAILURE_REASONS else "other"] += n
    return out


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's variable: set (by ``charter serve --workers N``) before the gateway
processes start, each writes its HTTP metrics to files there and a scrape sums them."""


def install(app: FastAPI, settings: Settings) -> CollectorRegistry:
    """The registry ``/metrics`` exposes (``app.state.metrics``): Charter's collector,
    per-route request counts and latency histograms, and, in a single process, the
    process defaults (several processes' defaults cannot be summed)."""
    http = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory:  # one of several gateway processes: answer for all of them
        exposed = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(exposed, path=directory)
    else:
        exposed = http
        for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            exposed.register(default)
    # Read from the database: the same in every process, so registered once, not summed.
    exposed.register(CharterCollector(app.state.sessions, app.state.producer, settings))
    instrumentator = Instrumentator(
        should_group_status_codes=False,  # 404 and 422 apart, not one 4xx
        excluded_handlers=["/metrics"],  # the scrape itself is not traffic
        registry=http,
    )
    instrumentator.add(
        http_metrics.requests(metric_namespace="charter", registry=http),
        http_metrics.latency(metric_namespace="charter", buckets=LATENCY_BUCKETS, registry=http),
    )
    instrumentator.instrument(app)
    app.state.metrics = exposed
    return exposed
