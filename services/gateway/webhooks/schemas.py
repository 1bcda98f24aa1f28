from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from charter.core.webhook_signing import DeliveryStatus
from charter.webhook_events import EVENT_TYPES

EventType = Literal[
    "job.completed",
    "job.failed",
    "job.cancelled",
    "dataset_version.frozen",
    "training_run.completed",
    "training_run.failed",
    "review.target_reached",
]
assert get_args(EventType) == EVENT_TYPES

Status = Literal["pending", "delivered", "failed"]
assert set(get_args(Status)) == set(DeliveryStatus)

MAX_URL_CHARS = 2048
# Stated in the schema too (scheme, a host, an optional port, then a path, query or
# fragment; a name or IPv4 address, no IPv6 literal): what it lets through, check_url
# accepts.
URL_PATTERN = r"^https?://[^\s/?#@:\[\]]+(:[0-9]{1,5})?([/?#]\S*)?$"


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host; anything else is refused (422 naming ``url``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    return url


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        max_length=MAX_URL_CHARS,
        pattern=URL_PATTERN,
        description="Absolute http(s) URL the deliveries are POSTed to.",
    )
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    description: str = Field(default="", max_length=256)
    enabled: bool = Field(default=True, strict=True)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, max_length=MAX_URL_CHARS, pattern=URL_PATTERN)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=256)
    enabled: bool | None = Field(default=None, strict=True)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)


class EndpointOut(BaseModel):
    id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(
        description="The signing secret (whsec_...). It is shown only in this response."
    )


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    endpoint_id: str
    event_type: str
    msg_id: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
