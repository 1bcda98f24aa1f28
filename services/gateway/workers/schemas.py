from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class WorkerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    hostname: str
    pid: int
    engine: str
    models: list[str]
    started_at: datetime
    last_seen: datetime
    items_done: int
