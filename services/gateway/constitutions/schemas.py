from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from charter.core.constitution import ConstitutionDiff


class ConstitutionVersionOut(BaseModel):
    name: str
    version: int
    ref: str
    content_hash: str
    created_at: datetime
    created: bool | None = None
    content: dict[str, Any] | None = None


class ConstitutionSummary(BaseModel):
    name: str
    latest_version: int
    latest_ref: str
    updated_at: datetime


class DiffOut(BaseModel):
    name: str
    from_version: int
    to_version: int
    diff: ConstitutionDiff
