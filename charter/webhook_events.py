"""Webhook events: recorded in the transaction that changes the state (a transactional outbox).

``emit`` adds one ``webhook_deliveries`` row per enabled endpoint of the project that
subscribes to the event; the sweeper sends them later (``workers.webhook_delivery``).
So an event exists exactly when its state change committed, and a crash or restart
between the commit and the HTTP call loses nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from charter.core.jobs import ItemState, JobStatus, RunStatus
from charter.core.webhook_signing import DeliveryStatus, new_msg_id
from charter.db.models import (
    Dataset,
    DatasetVersion,
    Job,
    TrainingRun,
    WebhookDelivery,
    WebhookEndpoint,
    WorkItem,
    utcnow,
)

EVENT_TYPES: tuple[str, ...] = (
    "job.completed",
    "job.failed",
    "job.cancelled",
    "dataset_version.frozen",
    "training_run.completed",
    "training_run.failed",
    "review.target_reached",
)
"""The events an endpoint can subscribe to."""

TEST_EVENT = "webhook.test"
"""The ping ``POST /v1/webhooks/{id}/test`` sends to one endpoint; not subscribable."""


def payload(event: str, data: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
    """The body of a delivery, as Standard Webhooks suggests: type, timestamp, data."""
    return {"type": event, "timestamp": (at or utcnow()).isoformat(), "data": data}


def delivery(endpoint: WebhookEndpoint, event: str, body: dict[str, Any]) -> WebhookDelivery:
    """A pending delivery of ``body`` to ``endpoint``, due now."""
    now = utcnow()
    return WebhookDelivery(
        endpoint_id=endpoint.id,
        project_id=endpoint.project_id,
        event_type=event,
        msg_id=new_msg_id(),
        payload=body,
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        next_attempt_at=now,
        cycle_started_at=now,
        created_at=now,
    )


def emit(session: Session, project_id: str, event: str, data: dict[str, Any]) -> None:
    """Record an event in the caller's transaction (transactional outbox): one delivery row per
    subscribed, enabled endpoint of the project whose event filter includes it; nothing else.

    Only adds rows to ``session``: no commit, no network. ``ValueError`` for an unknown event.
    """
    if event not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event!r}; expected one of {EVENT_TYPES}")
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.project_id == project_id, WebhookEndpoint.enabled.is_(True)
        )
    )
    # The filter is a short JSON list: matched here rather than with per-dialect JSON operators.
    subscribed = [e for e in endpoints if event in (e.event_types or [])]
    if not subscribed:
        return
    body = payload(event, data)
    session.add_all([delivery(e, event, body) for e in subscribed])


# The events of each state change, with the ids and counts a receiver needs; called by
# the code that makes the change, in its transaction.


def job_finished(session: Session, job_id: str) -> None:
    """``job.cancelled``; else ``job.failed`` when no item got a label, else ``job.completed``.

    Once per job: callers emit only when their update moved the job to a final status.
    """
    job = session.get(Job, job_id)
    if job is None:
        return
    counts = {
        str(state): n
        for state, n in session.execute(
            select(WorkItem.status, func.count())
            .where(WorkItem.job_id == job_id)
            .group_by(WorkItem.status)
        )
    }
    labelled = counts.get(ItemState.DONE, 0) + counts.get(ItemState.ABSTAINED, 0)
    if job.status == JobStatus.CANCELLED:
        event = "job.cancelled"
    elif labelled == 0 and counts.get(ItemState.FAILED, 0):
        event = "job.failed"
    else:
        event = "job.completed"
    data = {
        "job_id": job.id,
        "type": job.type,
        "status": job.status,
        "item_count": job.item_count,
        "counts": counts,
    }
    emit(session, job.project_id, event, data)


def dataset_version_frozen(session: Session, version: DatasetVersion) -> None:
    dataset = session.get(Dataset, version.dataset_id)
    if dataset is None:
        return
    data = {
        "dataset_id": dataset.id,
        "dataset": dataset.name,
        "dataset_version_id": version.id,
        "version": version.version,
        "ref": f"{dataset.name}@{version.version}",
        "row_count": version.row_count,
        "checksum": version.checksum,
    }
    emit(session, dataset.project_id, "dataset_version.frozen", data)


def training_run_finished(session: Session, run: TrainingRun) -> None:
    """``training_run.completed`` or ``training_run.failed``; other statuses emit nothing."""
    if run.status == RunStatus.COMPLETED:
        event = "training_run.completed"
    elif run.status == RunStatus.FAILED:
        event = "training_run.failed"
    else:
        return
    data = {
        "training_run_id": run.id,
        "type": run.type,
        "status": run.status,
        "dataset_version_id": run.dataset_version_id,
        "artifact_uri": run.artifact_uri,
        "error": run.error,
    }
    emit(session, run.project_id, event, data)
