"""Moving pipelines on, stage by stage, in the gateway.

As :mod:`services.gateway.policy_evals.advancer`: a :class:`~charter.periodic.Periodic`
thread looks every ``pipeline_advance_seconds`` for active pipelines and advances each
in its own transaction with its row locked (``SKIP LOCKED``: two gateway processes
never submit one stage twice), then publishes the new jobs through the outbox and wakes
the dataset freezer. A stage's object and its attempt row commit together, so a
gateway that dies mid-pass leaves either both or neither; nothing is held in memory.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from charter.core.pipeline_plans import PipelineState
from charter.db.models import Pipeline
from charter.periodic import Periodic
from charter.settings import Settings
from services.gateway.datasets.freezing import Freezer
from services.gateway.outbox import Outbox
from services.gateway.pipelines import service
from services.gateway.pipelines.stages import After

log = logging.getLogger(__name__)


class Advancer:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        outbox: Outbox,
        freezer: Freezer,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.outbox = outbox
        self.freezer = freezer
        self._thread: Periodic | None = None

    def advance_all(self) -> int:
        """One pass over the active pipelines: how many changed."""
        with self.sessions() as session:
            active = list(
                session.scalars(select(Pipeline.id).where(Pipeline.state == PipelineState.ACTIVE))
            )
        moved = 0
        for pipeline_id in active:
            try:
                moved += self._advance(pipeline_id)
            except Exception:  # one pipeline's trouble never holds up the others
                log.exception("pipeline %s: advancing failed; retried next pass", pipeline_id)
        return moved

    def _advance(self, pipeline_id: str) -> bool:
        after = After()
        with self.sessions() as session, session.begin():
            pipeline = session.scalar(
                select(Pipeline)
                .where(Pipeline.id == pipeline_id, Pipeline.state == PipelineState.ACTIVE)
                .with_for_update(skip_locked=True)
            )
            if pipeline is None:  # another gateway has it, or it moved on
                return False
            before = pipeline.advanced_at
            service.advance(session, pipeline, self.settings, after)
            moved = pipeline.advanced_at != before or pipeline.state != PipelineState.ACTIVE
            if pipeline.state == PipelineState.FAILED:
                log.warning("pipeline %s failed: %s", pipeline.id, pipeline.error)
        for job_id, model, chunks in after.jobs:
            self.outbox.publish(job_id, model, chunks)
        if after.wake_freezer:
            self.freezer.wake()
        return moved

    def start(self) -> None:
        every = self.settings.pipeline_advance_seconds
        self._thread = Periodic("pipelines", every, self.advance_all, logger=log).start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
