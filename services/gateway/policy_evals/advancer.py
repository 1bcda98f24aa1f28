"""Moving policy evaluations from generation to comparison, in the gateway.

A :class:`~charter.periodic.Periodic` thread looks every
``policy_eval_advance_seconds`` for evaluations still ``generating`` (an indexed read of
a small table) and advances each in its own transaction with the row locked
(``SKIP LOCKED``: several gateway processes never advance one twice), then publishes the
new compare jobs through the outbox. Nothing is held in memory: a gateway that dies
between two passes leaves the evaluation to the next pass of any gateway, and a publish
that fails after the commit leaves the chunks to the outbox and the sweeper, as for any
job. Workers never import the gateway, so this is the gateway's work.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from charter.db.models import PolicyEval
from charter.periodic import Periodic
from charter.settings import Settings
from services.gateway.outbox import Outbox
from services.gateway.policy_evals import service

log = logging.getLogger(__name__)


class Advancer:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings, outbox: Outbox) -> None:
        self.sessions = sessions
        self.settings = settings
        self.outbox = outbox
        self._thread: Periodic | None = None

    def advance_all(self) -> int:
        """One pass: how many evaluations moved on (to comparing, or failed)."""
        with self.sessions() as session:
            waiting = list(
                session.scalars(select(PolicyEval.id).where(PolicyEval.stage == "generating"))
            )
        moved = 0
        for eval_id in waiting:
            try:
                moved += self._advance(eval_id)
            except Exception:  # one evaluation's trouble never holds up the others
                log.exception("policy evaluation %s: advancing failed; retried next pass", eval_id)
        return moved

    def _advance(self, eval_id: str) -> bool:
        """Advance one evaluation if it can move on; True when it did."""
        with self.sessions() as session, session.begin():
            run = session.scalar(
                select(PolicyEval)
                .where(PolicyEval.id == eval_id, PolicyEval.stage == "generating")
                .with_for_update(skip_locked=True)
            )
            if run is None:  # another gateway has it, or advanced it
                return False
            made = [
                (j.id, j.model, j.chunk_count) for j in service.advance(session, run, self.settings)
            ]
            moved = run.stage != "generating"
            if run.stage == "failed":
                log.warning("policy evaluation %s failed: %s", run.id, run.error)
        for job_id, model, chunks in made:
            self.outbox.publish(job_id, model, chunks)
        return moved

    def start(self) -> None:
        every = self.settings.policy_eval_advance_seconds
        self._thread = Periodic("policy-evals", every, self.advance_all, logger=log).start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
