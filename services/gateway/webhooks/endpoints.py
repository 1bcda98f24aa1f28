from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from charter.db.models import WebhookEndpoint
from services.gateway.deps import AdminKey, Cursor, Limit, SessionDep
from services.gateway.pagination import Page
from services.gateway.unit_of_work import UnitOfWorkRoute, mark_secret
from services.gateway.webhooks import service
from services.gateway.webhooks.schemas import (
    DeliveryOut,
    EndpointCreate,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
    Status,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=UnitOfWorkRoute)


def _out(row: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=row.id,
        url=row.url,
        description=row.description,
        events=list(row.event_types),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
    )


def _with_secret(row: WebhookEndpoint, request: Request) -> EndpointWithSecret:
    mark_secret(request, "secret")
    return EndpointWithSecret(**_out(row).model_dump(), secret=row.secret)


@router.post(
    "",
    response_model=EndpointWithSecret,
    status_code=status.HTTP_201_CREATED,
    description="The signing secret is in this response only. A retry with the same "
    "Idempotency-Key is answered 409, never with the secret again.",
)
def create_webhook(
    body: EndpointCreate, request: Request, session: SessionDep, key: AdminKey
) -> EndpointWithSecret:
    return _with_secret(service.create(session, key.project_id, body), request)


@router.get("", response_model=Page[EndpointOut])
def list_webhooks(
    session: SessionDep, key: AdminKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[EndpointOut]:
    rows, next_cursor = service.page(session, key.project_id, cursor, limit)
    return Page(items=[_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=EndpointOut)
def get_webhook(webhook_id: str, session: SessionDep, key: AdminKey) -> EndpointOut:
    return _out(service.get(session, key.project_id, webhook_id))


@router.patch("/{webhook_id}", response_model=EndpointOut)
def update_webhook(
    webhook_id: str, body: EndpointUpdate, session: SessionDep, key: AdminKey
) -> EndpointOut:
    return _out(service.update(session, key.project_id, webhook_id, body))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: str, session: SessionDep, key: AdminKey) -> Response:
    service.delete(session, key.project_id, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=EndpointWithSecret,
    description="The new secret is in this response only; the old one stops signing at once.",
)
def rotate_secret(
    webhook_id: str, request: Request, session: SessionDep, key: AdminKey
) -> EndpointWithSecret:
    return _with_secret(service.rotate_secret(session, key.project_id, webhook_id), request)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    key: AdminKey,
    status: Annotated[Status | None, Query(description="Only deliveries in this status.")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[DeliveryOut]:
    rows, next_cursor = service.deliveries_page(
        session, key.project_id, webhook_id, status, cursor, limit
    )
    return Page(items=[DeliveryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/deliveries/{delivery_id}/resend",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    description="A new attempt cycle: the delivery is pending again and due now.",
)
def resend_delivery(delivery_id: str, session: SessionDep, key: AdminKey) -> DeliveryOut:
    return DeliveryOut.model_validate(service.resend(session, key.project_id, delivery_id))


@router.post(
    "/{webhook_id}/test",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    description="Queue a webhook.test ping to this endpoint only (sent by the sweeper).",
)
def test_webhook(webhook_id: str, session: SessionDep, key: AdminKey) -> DeliveryOut:
    return DeliveryOut.model_validate(service.send_test(session, key.project_id, webhook_id))
