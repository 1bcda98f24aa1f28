"""Publishing work to the broker, shared by the gateway, the sweeper and the workers.

The broker only wakes workers up: Postgres decides what is done. Settings follow
the at-least-once recipe (late acks, reject on worker loss, prefetch 1, the
visibility timeout set in all three places); duplicates are made harmless by the
database lease and the unique label constraint, losses are repaired by the sweeper.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu import Exchange, Producer, Queue
from kombu.connection import ConnectionPool

from charter.core.jobs import RUN_MODEL_PREFIX
from charter.settings import Settings, get_settings

RUN_CHUNK = "labels.run_chunk"


EXCHANGE = Exchange("charter", type="direct")


RUN_QUEUE = "model.runs"
"""The one queue of every ``run:<id>`` model (and of a worker's ``run:*``): runs finish
after the workers started, and a worker loads their models on demand."""


def queue_for(model: str) -> str:
    """Work is routed by model so a worker only receives what it can serve; every
    training run's model shares ``RUN_QUEUE``, which a worker serving ``run:*`` takes."""
    if model.startswith(RUN_MODEL_PREFIX):
        return RUN_QUEUE
    return f"model.{model}"


def named_queue(name: str) -> Queue:
    """A queue by its name, bound the same way by producers and workers."""
    return Queue(name, EXCHANGE, routing_key=name, durable=True)


def model_queue(model: str) -> Queue:
    """The queue of one model (shared by the runs' models)."""
    return named_queue(queue_for(model))


def worker_queues(models: Iterable[str]) -> list[Queue]:
    """The queues a worker serving ``models`` consumes, each once, in the models' order."""
    names = dict.fromkeys(queue_for(m) for m in models)
    return [named_queue(name) for name in names]


def celery_config(settings: Settings) -> dict[str, Any]:
    vt = settings.visibility_timeout_seconds
    transport: dict[str, Any]
    if settings.effective_broker_url.startswith("filesystem"):
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    else:
        transport = {
            "visibility_timeout": vt,
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
            "health_check_interval": 25,
            "retry_on_timeout": True,
        }
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A broker blip must not throw away a long GPU chunk: the chunk keeps running,
        # its fenced database write wins and the redelivered copy finds nothing to do.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # No soft shutdown: a stopping worker gives its chunk back itself, at once
        # (workers/shutdown.py); Celery's soft shutdown would only sleep its whole
        # length whenever a task runs, then cancel it anyway.
        "worker_soft_shutdown_timeout": 0.0,
        # How long the pool waits for the result of a pool process that died before it
        # calls the task lost (and, rejected on worker loss, re-queues it): 10 s by
        # default, which a shutdown that had to kill a stuck process could not afford. A
        # result later than this is only a redelivery, which finds the chunk done.
        "worker_lost_wait": 2.0,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Back to a returned broker within seconds, not kombu's 30 s back-off.
        "worker_consumer": "workers.consumer:Consumer",
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2},
        "task_default_queue": "charter",
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings | None = None, name: str = "charter") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings or get_settings()))
    return app


PUBLISH_BATCH = 1000
"""Messages a producer buffers before it writes them to the broker in one round trip."""


_pools: weakref.WeakKeyDictionary[Celery, tuple[int, ConnectionPool]] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def _batch_connections(app: Celery) -> ConnectionPool:
    """The app's pool of no-retry connections (``broker_pool_limit`` of them), one per
    process. A fresh connection per batch cost a submit ~13 ms of CPU in connecting and
    re-declaring the queue (bench/api_latency.py); a pooled one declares each queue
    once, as Celery's own producer pool does."""
    with _pools_lock:
        entry = _pools.get(app)
        if entry is None or entry[0] != os.getpid():  # never share sockets across a fork
            # One connection attempt: a caller whose batch fails leaves it for the next
            # drain, so kombu's retries (6 s against a Redis that is down, measured)
            # would only hold up a submission or a sweep.
            connection = app.connection_for_write(
                transport_options={"retry_on_timeout": False, "max_retries": 0}
            )
            entry = _pools[app] = (os.getpid(), connection.Pool(limit=app.conf.broker_pool_limit))
        return entry[1]


@contextmanager
def batch_producer(app: Celery, models: Iterable[str]) -> Iterator[Producer]:
    """One connection and producer for many messages, the models' queues declared once.

    On Redis the pushes are pipelined (kombu's ``Producer.batch``), PUBLISH_BATCH to a
    round trip; other transports publish one by one. Measured here: ~3x the messages/s
    of one ``send_task`` each, which spends most of its time on its own round trip and
    on re-binding the queue per message. kombu batches only when a timed-out write is
    never replayed, so this connection does not retry on timeout: a failed batch raises,
    and the caller (the outbox) leaves its chunks unpublished for the next drain.
    Leaving the block normally flushes; leaving it on an exception discards what was
    not yet written.
    """
    with _batch_connections(app).acquire(block=True) as connection:
        producer = app.amqp.Producer(connection)
        for name in {queue_for(m) for m in models}:
            producer.maybe_declare(named_queue(name))
        with producer.batch(max_size=PUBLISH_BATCH):
            yield producer


def queue_lengths(app: Celery, models: Iterable[str]) -> dict[str, int]:
    """Messages waiting in the queues of ``models``, by queue name (``queue_for``: the
    runs' models share one), as the broker counts them (not those a worker has received
    and not yet acked). Raises when the broker cannot be reached.

    A plain (not passive) declare: on Redis a queue with no message has no key, and a
    passive declare of it would fail instead of answering 0; declaring changes nothing.
    """
    with _batch_connections(app).acquire(block=True) as connection:
        channel = connection.default_channel
        names = {queue_for(m) for m in models}
        return {name: channel.queue_declare(queue=name).message_count for name in names}


def publish_chunk(
    app: Celery, job_id: str, chunk: int, model: str, producer: Producer | None = None
) -> None:
    """Send one chunk's task; with a ``batch_producer`` the queue is already declared."""
    args = [job_id, chunk]
    if producer is None:
        app.send_task(RUN_CHUNK, args=args, queue=model_queue(model))
        return
    # argsrepr given: Celery's saferepr of the args is a fifth of a send_task's cost.
    app.send_task(
        RUN_CHUNK,
        args=args,
        queue=model_queue(model),
        producer=producer,
        declare=[],
        argsrepr=repr(args),
        kwargsrepr="{}",
    )
