"""A project's webhook endpoints and their delivery log.

The secret is generated here and returned once (creation, rotation); events become
delivery rows through :mod:`charter.webhook_events`, which the sweeper sends.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core.webhook_signing import DeliveryStatus, new_secret
from charter.db.models import WebhookDelivery, WebhookEndpoint, utcnow
from charter.errors import NotFound
from charter.webhook_events import TEST_EVENT, delivery, payload
from services.gateway.pagination import keyset, project_page
from services.gateway.webhooks.schemas import EndpointCreate, EndpointUpdate


def create(session: Session, project_id: str, spec: EndpointCreate) -> WebhookEndpoint:
    row = WebhookEndpoint(
        project_id=project_id,
        url=spec.url,
        description=spec.description,
        event_types=sorted(set(spec.events)),
        secret=new_secret(),
        enabled=spec.enabled,
    )
    session.add(row)
    session.flush()
    return row


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[WebhookEndpoint], str | None]:
    """The project's endpoints, newest first."""
    return project_page(session, WebhookEndpoint, project_id, cursor, limit)


def get(session: Session, project_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"webhook endpoint {endpoint_id!r} not found", field="webhook_id")
    return row


def update(
    session: Session, project_id: str, endpoint_id: str, spec: EndpointUpdate
) -> WebhookEndpoint:
    row = get(session, project_id, endpoint_id)
    if spec.url is not None:
        row.url = spec.url
    if spec.events is not None:
        row.event_types = sorted(set(spec.events))
    if spec.description is not None:
        row.description = spec.description
    if spec.enabled is not None:
        row.enabled = spec.enabled
        row.disabled_reason = None if spec.enabled else "disabled by an admin"
    session.flush()
    return row


def delete(session: Session, project_id: str, endpoint_id: str) -> None:
    """The endpoint and its delivery log (pending deliveries are never sent)."""
    session.delete(get(session, project_id, endpoint_id))
    session.flush()


def rotate_secret(session: Session, project_id: str, endpoint_id: str) -> WebhookEndpoint:
    """A new secret; deliveries sent from now on (retries included) are signed with it."""
    row = get(session, project_id, endpoint_id)
    row.secret = new_secret()
    session.flush()
    return row


def deliveries_page(
    session: Session,
    project_id: str,
    endpoint_id: str,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[WebhookDelivery], str | None]:
    """The endpoint's deliveries, newest first, optionally of one status."""
    endpoint = get(session, project_id, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return keyset(session, query, WebhookDelivery.created_at, WebhookDelivery.id, cursor, limit)


def resend(session: Session, project_id: str, delivery_id: str) -> WebhookDelivery:
    """Start a new attempt cycle: pending, due now, its attempts and backoff counted afresh,
    the same ``msg_id`` (so receivers can tell a resend from a new event)."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"webhook delivery {delivery_id!r} not found", field="delivery_id")
    now = utcnow()
    row.status = DeliveryStatus.PENDING.value
    row.next_attempt_at = now
    row.attempts = 0
    row.cycle_started_at = now
    row.delivered_at = None
    session.flush()
    return row


def send_test(session: Session, project_id: str, endpoint_id: str) -> WebhookDelivery:
    """A ``webhook.test`` ping to this endpoint only, sent by the sweeper like any event."""
    endpoint = get(session, project_id, endpoint_id)
    row = delivery(endpoint, TEST_EVENT, payload(TEST_EVENT, {"endpoint_id": endpoint.id}))
    session.add(row)
    session.flush()
    return row
