"""Publishing work to the broker, shared by the gateway, the sweeper and the workers.

The broker only wakes workers up: Postgres decides what is done. Settings follow
the at-least-once recipe (late acks, reject on worker loss, prefetch 1, the
visibility timeout set in all three places); duplicates are made harmless by the
database lease and the unique label constraint, losses are repaired by the sweeper.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from charter.settings import Settings, get_settings

RUN_CHUNK = "labels.run_chunk"


EXCHANGE = Exchange("charter", type="direct")


def queue_for(model: str) -> str:
    """Work is routed by model so a worker only receives what it can serve."""
    return f"model.{model}"


def model_queue(model: str) -> Queue:
    """The queue of one model, bound the same way by producers and workers."""
    name = queue_for(model)
    return Queue(name, EXCHANGE, routing_key=name, durable=True)


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
        "worker_soft_shutdown_timeout": 60.0,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2},
        "task_default_queue": "charter",
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings | None = None, name: str = "charter") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings or get_settings()))
    return app


def publish_chunk(app: Celery, job_id: str, chunk: int, model: str) -> None:
    app.send_task(RUN_CHUNK, args=[job_id, chunk], queue=model_queue(model))
