"""The gateway application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

import charter
from charter.db.session import make_engine, pool_size, session_factory
from charter.queue import make_celery
from charter.settings import Settings, get_settings
from services.gateway import errors, health, metrics, openapi
from services.gateway.audit.endpoints import router as audit
from services.gateway.batches.endpoints import router as batches
from services.gateway.classifiers.data_endpoints import router as classifier_data
from services.gateway.classifiers.endpoints import router as classify
from services.gateway.constitutions.endpoints import router as constitutions
from services.gateway.dashboard import rendering as dashboard_rendering
from services.gateway.dashboard.endpoints import router as dashboard
from services.gateway.datasets.endpoints import router as datasets
from services.gateway.datasets.freezing import Freezer
from services.gateway.evals.endpoints import router as evals
from services.gateway.gold.endpoints import router as gold_sets
from services.gateway.jobs.endpoints import router as jobs
from services.gateway.keys.endpoints import router as keys
from services.gateway.limits import BodySizeLimit
from services.gateway.outbox import Outbox
from services.gateway.pipelines.advancer import Advancer as PipelineAdvancer
from services.gateway.pipelines.endpoints import router as pipelines
from services.gateway.policy_evals.advancer import Advancer
from services.gateway.policy_evals.endpoints import router as policy_evals
from services.gateway.public_inputs.endpoints import router as public_inputs
from services.gateway.ratelimit import RateLimiter
from services.gateway.request_id import CharterAPI
from services.gateway.reviews.endpoints import router as reviews
from services.gateway.runs.endpoints import router as runs
from services.gateway.stats.endpoints import router as stats
from services.gateway.templates.critique_endpoints import router as critique_templates
from services.gateway.templates.endpoints import router as templates
from services.gateway.unit_of_work import Admission
from services.gateway.webhooks.endpoints import router as webhooks
from services.gateway.workers.endpoints import router as workers


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.freezer.wake()  # resume versions a stopped gateway left freezing
        app.state.policy_evals.start()
        app.state.pipelines.start()
        yield
        classifier_client = getattr(app.state, "classifier_client", None)
        if classifier_client is not None:
            await classifier_client.aclose()
        await asyncio.to_thread(app.state.pipelines.stop)
        await asyncio.to_thread(app.state.policy_evals.stop)
        await asyncio.to_thread(app.state.freezer.stop)  # the current batch finishes
        await asyncio.to_thread(app.state.outbox.stop)  # the rest: the sweeper publishes

    app = CharterAPI(  # X-Request-ID on every answer (services/gateway/request_id.py)
        lifespan=lifespan,
        title="Charter",
        version=charter.__version__,
        description="Constitutions in; AI-feedback labels, datasets and trained models out.",
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(
        settings.effective_database_url, pool_size=settings.database_pool_size
    )
    app.state.sessions = session_factory(app.state.engine)
    app.state.admission = Admission(pool_size(app.state.engine), settings.admission_wait_seconds)
    app.state.freezer = Freezer(
        app.state.sessions,
        batch_rows=settings.freeze_batch_rows,
        lease_seconds=settings.freeze_lease_seconds,
    )
    app.state.producer = make_celery(settings, name="charter-gateway")
    app.state.outbox = Outbox(app.state.sessions, app.state.producer)
    app.state.policy_evals = Advancer(app.state.sessions, settings, app.state.outbox)
    app.state.pipelines = PipelineAdvancer(
        app.state.sessions, settings, app.state.outbox, app.state.freezer
    )
    app.state.rate_limiter = RateLimiter(settings)
    metrics.install(app, settings)  # /metrics: Charter's series and per-route HTTP metrics
    errors.install(app)
    for router in (
        health.router,
        constitutions,
        batches,
        jobs,
        workers,
        keys,
        runs,
        datasets,
        stats,
        audit,
        webhooks,
        reviews,
        templates,
        critique_templates,
        gold_sets,
        evals,
        policy_evals,
        pipelines,
        public_inputs,
        classifier_data,
        classify,
        dashboard,
    ):
        app.include_router(router)
    app.mount(  # the dashboard's own CSS and script (no third-party assets)
        f"{dashboard_rendering.PREFIX}/static",
        dashboard_rendering.Static(directory=dashboard_rendering.STATIC_DIR),
        name="dashboard-static",
    )
    openapi.install(app, settings)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        streamed={"/v1/batches/upload": settings.max_upload_bytes},
    )
    return app
