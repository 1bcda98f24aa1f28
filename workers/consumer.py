"""The worker's consumer: Celery's own, reconnecting to a returned broker sooner.

Celery retries a lost broker connection forever (``broker_connection_max_retries =
None``) but with kombu's default back-off, 2 s growing by 2 s up to 30 s, which no
setting changes: after a one-minute Redis outage the workers were measured coming
back 12 s after Redis did, and a longer outage costs up to 30 s more, all of it
time with work queued and nobody taking it. This keeps kombu's start and step and
caps the wait at ``RECONNECT_MAX_SECONDS``; one connection attempt per worker every
few seconds is nothing to a broker that is down. Everything else is Celery's.
Installed by ``worker_consumer`` in :func:`charter.queue.celery_config`.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Connection

RECONNECT_MAX_SECONDS = 5.0


class Consumer(CeleryConsumer):
    def ensure_connected(self, conn: Connection) -> Connection:
        ensure = conn.ensure_connection

        def capped(*args: Any, **kwargs: Any) -> Connection:
            kwargs.setdefault("interval_max", RECONNECT_MAX_SECONDS)
            return ensure(*args, **kwargs)

        conn.ensure_connection = capped  # this connection only, for Celery's retry loop
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection
