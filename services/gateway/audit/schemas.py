from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.audit.service import Outcome


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    api_key_id: str | None = Field(description="None once the key was deleted.")
    key_prefix: str = Field(description="The prefix of the key that made the call.")
    method: str
    route: str = Field(description="The route's template, e.g. /v1/jobs/{job_id}/cancel.")
    path: str
    object_ids: dict[str, str] = Field(
        description="The path parameters, plus `id`: what the call created, if it did."
    )
    status_code: int
    outcome: Outcome
    error_code: str | None
    error_detail: str | None
    request_id: str | None = Field(description="The call's X-Request-ID.")
    idempotency_key: str | None
    replayed: bool = Field(
        description="The answer replayed an earlier call's (Idempotency-Key): that call's "
        "event is the write."
    )
    created_at: datetime
