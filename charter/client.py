"""The Python SDK: a thin typed client over the REST API (httpx)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from charter.settings import get_settings


class CharterAPIError(Exception):
    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self.body = body
        self.field = body.get("field")
        detail = body.get("detail", body)
        super().__init__(f"{status_code} {body.get('error', 'error')}: {detail}")


class CharterClient:
    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0
    ) -> None:
        settings = get_settings()
        key = api_key or settings.api_key
        headers = {"X-API-Key": key} if key else {}
        self._http = httpx.Client(
            base_url=base_url or settings.api_url, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CharterClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": "http_error", "detail": response.text}
            raise CharterAPIError(response.status_code, body)
        return response.json() if response.content else None

    def _pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.request(
                "GET", path, params={**params, "cursor": cursor} if cursor else params
            )
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # Constitutions
    def push_constitution(self, path: Path | str) -> dict[str, Any]:
        path = Path(path)
        content_type = (
            "application/yaml" if path.suffix in {".yaml", ".yml"} else "application/json"
        )
        return self.request(
            "POST",
            "/v1/constitutions",
            content=path.read_bytes(),
            headers={"Content-Type": content_type},
        )

    def constitutions(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/constitutions")

    def constitution(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/constitutions/{ref}")

    def diff_constitution(self, name: str, before: int, after: int) -> dict[str, Any]:
        return self.request(
            "GET", f"/v1/constitutions/{name}/diff", params={"from": before, "to": after}
        )

    # Batches
    def upload_batch(self, path: Path | str, name: str = "") -> dict[str, Any]:
        return self.request(
            "POST",
            "/v1/batches/upload",
            params={"name": name or Path(path).stem},
            content=Path(path).read_bytes(),
            headers={"Content-Type": "application/x-ndjson"},
        )

    def create_batch(self, rows: Iterable[dict[str, Any]], name: str = "") -> dict[str, Any]:
        return self.request("POST", "/v1/batches", json={"name": name, "rows": list(rows)})

    # Jobs
    def submit_job(self, idempotency_key: str | None = None, **spec: Any) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/v1/jobs", json=spec, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")

    def results(self, job_id: str) -> Iterator[dict[str, Any]]:
        return self._pages(f"/v1/jobs/{job_id}/results", limit=500)

    def items(self, job_id: str, state: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages(f"/v1/jobs/{job_id}/items", **({"state": state} if state else {}))

    def workers(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/workers")

    def wait(self, job_id: str, *, timeout: float = 3600, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in {"completed", "cancelled"} or time.monotonic() > deadline:
                return job
            time.sleep(poll)


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
