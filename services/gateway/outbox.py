"""Publishing a submitted job's chunks without holding up its answer.

After a job commits, its first batch of chunks is published before the answer goes
out, so workers start at once and a small job is fully published by then. The rest
of a large job (a 1M-item job is ~30,000 chunks) is drained by a background thread:
the submission answers in the time of one batch, not of the whole drain. A failure
to publish never fails the request that committed (RELIABILITY: a committed job
answers its success): the chunks stay unpublished in the database, and the
background thread, the sweeper or the next drain sends them.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from charter.outbox import CHUNKS_PER_BATCH, publish_pending
from services.gateway.background import OnDemand

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        producer: Celery,
        *,
        batch_chunks: int = CHUNKS_PER_BATCH,
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.batch_chunks = batch_chunks
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread = OnDemand("outbox", self._drain)

    def publish(self, job_id: str, model: str, chunk_count: int) -> None:
        """Called after the job's commit: its first batch now, the rest in the background."""
        try:
            publish_pending(
                self.sessions,
                self.producer,
                job_id=job_id,
                chunks_per_batch=self.batch_chunks,
                max_batches=1,
                fresh=(model, chunk_count),
            )
        except Exception as exc:  # the database blinked after the commit: retried below
            log.warning("publishing job %s after its commit failed: %s", job_id, exc)
        else:
            if chunk_count <= self.batch_chunks:
                return
        with self._lock:
            self._pending.add(job_id)
        self._thread.wake()

    def _drain(self) -> bool:
        with self._lock:
            jobs, self._pending = self._pending, set()
        for job_id in jobs:
            if self._thread.stopping.is_set():
                return False  # what is left stays unpublished: the sweeper sends it
            publish_pending(
                self.sessions, self.producer, job_id=job_id, chunks_per_batch=self.batch_chunks
            )
        with self._lock:
            return bool(self._pending)

    def idle(self) -> bool:
        return self._thread.idle()

    def stop(self, timeout: float = 30.0) -> None:
        self._thread.stop(timeout)
