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

    # Training runs
    def create_run(self, idempotency_key: str | None = None, **spec: Any) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/v1/runs", json=spec, headers=headers)

    def run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/runs/{run_id}")

    def run_metrics(self, run_id: str) -> Iterator[dict[str, Any]]:
        return self._pages(f"/v1/runs/{run_id}/metrics", limit=1000)

    def wait_run(
        self, run_id: str, *, timeout: float = 24 * 3600, poll: float = 2.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in {"completed", "failed", "cancelled"} or time.monotonic() > deadline:
                return run
            time.sleep(poll)

    def claim_run(self, owner: str, types: list[str] | None = None) -> dict[str, Any] | None:
        """Lease the oldest queued run (trainer side); None when nothing is queued.

        ``owner`` only labels the lease. The run comes with its ``lease_token``, shown
        only here: every report on the run below presents it."""
        return self.request("POST", "/v1/runs/claim", json={"owner": owner, "types": types})

    def run_heartbeat(self, run_id: str, lease_token: str) -> dict[str, Any]:
        body = {"lease_token": lease_token}
        return self.request("POST", f"/v1/runs/{run_id}/heartbeat", json=body)

    def report_metrics(self, run_id: str, lease_token: str, points: list[dict[str, Any]]) -> None:
        body = {"lease_token": lease_token, "points": points}
        self.request("POST", f"/v1/runs/{run_id}/metrics", json=body)

    def report_checkpoint(self, run_id: str, lease_token: str, checkpoint: str) -> dict[str, Any]:
        body = {"lease_token": lease_token, "checkpoint": checkpoint}
        return self.request("POST", f"/v1/runs/{run_id}/checkpoint", json=body)

    def complete_run(self, run_id: str, lease_token: str, artifact_uri: str) -> dict[str, Any]:
        body = {"lease_token": lease_token, "artifact_uri": artifact_uri}
        return self.request("POST", f"/v1/runs/{run_id}/complete", json=body)

    def fail_run(self, run_id: str, lease_token: str, error: str) -> dict[str, Any]:
        body = {"lease_token": lease_token, "error": error}
        return self.request("POST", f"/v1/runs/{run_id}/fail", json=body)

    # Datasets
    def create_dataset(
        self,
        name: str,
        kind: str,
        filter: dict[str, Any] | None = None,
        mix: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 3600,
    ) -> dict[str, Any]:
        """Freeze the labels ``filter`` selects (plus ``mix``) into a new version of ``name``.

        The gateway freezes in the background; with ``wait`` (the default) this returns
        the version once it is ``ready`` (``FreezeFailed`` if it failed), otherwise at
        once with the version ``freezing``: poll :meth:`dataset` or call
        :meth:`wait_dataset`.
        """
        body: dict[str, Any] = {"name": name, "kind": kind, "filter": filter or {}}
        if mix is not None:
            body["mix"] = mix
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        version = self.request("POST", "/v1/datasets", json=body, headers=headers)
        return self.wait_dataset(version["ref"], timeout=timeout) if wait else version

    def wait_dataset(self, ref: str, *, timeout: float = 3600, poll: float = 1.0) -> dict[str, Any]:
        """The version once it is no longer ``freezing``; polls fast at first (small
        versions freeze in well under a second), then every ``poll`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            version = self.dataset(ref)
            if version["state"] == "failed":
                raise FreezeFailed(f"{ref}: {version['error']}")
            if version["state"] != "freezing":
                return version
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{ref} is still freezing after {timeout:.0f} s "
                    f"({version['rows_done']} of {version['rows_total']} rows)"
                )
            time.sleep(delay)
            delay = min(delay * 2, poll)

    def dataset(self, ref: str) -> dict[str, Any]:
        """A version: ``name`` (the latest) or ``name@version``."""
        return self.request("GET", f"/v1/datasets/{ref}")

    def datasets(self) -> Iterator[dict[str, Any]]:
        """Every dataset of the project, latest version each."""
        return self._pages("/v1/datasets")

    def upload_dataset(
        self, name: str, path: Path | str, kind: str | None = None
    ) -> dict[str, Any]:
        """JSONL rows in TRL shape as a new version of ``name`` (``kind`` for a new dataset)."""
        return self.request(
            "POST",
            f"/v1/datasets/{name}/upload",
            params={"kind": kind} if kind else {},
            content=Path(path).read_bytes(),
            headers={"Content-Type": "application/x-ndjson"},
        )

    def export_dataset(
        self,
        ref: str,
        dest: Path | str,
        format: str = "jsonl",
        *,
        verify: bool = True,
        retries: int = 5,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Stream a version to ``dest``; return ``{ref, path, format, rows, checksum, retries}``.

        A dropped connection is resumed from the last complete JSONL line (Parquet
        starts over), pinned to the version first served. ``resume=True`` also
        continues a partial JSONL file already at ``dest``. With ``verify`` the
        JSONL file's sha256 must equal the version's checksum (``ChecksumMismatch``
        otherwise) and the row count must match.
        """
        import hashlib

        dest = Path(dest)
        jsonl = format == "jsonl"
        rows, good = 0, 0  # complete JSONL rows on disk, and the bytes they fill
        if jsonl and resume and dest.exists():
            data = dest.read_bytes()
            good = data.rfind(b"\n") + 1
            rows = data.count(b"\n", 0, good)
            del data
        with dest.open("r+b" if good else "wb") as out:
            out.truncate(good)
        attempts = 0
        info: dict[str, Any] = {}
        while True:
            params = {"format": format, "start": rows}
            try:
                with (
                    self._http.stream(
                        "GET", f"/v1/datasets/{info.get('ref', ref)}/export", params=params
                    ) as response,
                    dest.open("ab") as out,
                ):
                    if response.status_code >= 400:
                        response.read()
                        try:
                            error = response.json()
                        except ValueError:
                            error = {"error": "http_error", "detail": response.text}
                        raise CharterAPIError(response.status_code, error)
                    info = {
                        "ref": response.headers.get("x-dataset-ref", ref),
                        "checksum": response.headers.get("x-checksum-sha256"),
                        "rows": int(response.headers.get("x-row-count", "0")),
                    }
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        if jsonl and (end := chunk.rfind(b"\n")) >= 0:
                            good = out.tell() - len(chunk) + end + 1
                            rows += chunk.count(b"\n")
                break
            except httpx.TransportError:
                attempts += 1
                if attempts > retries:
                    raise
                with dest.open("r+b") as out:
                    out.truncate(good if jsonl else 0)
                rows = rows if jsonl else 0
                time.sleep(min(0.2 * 2**attempts, 5.0))
        if verify:
            if jsonl:
                digest = hashlib.sha256()
                with dest.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                if digest.hexdigest() != info["checksum"] or rows != info["rows"]:
                    raise ChecksumMismatch(
                        f"{dest}: sha256 {digest.hexdigest()} over {rows} rows, expected "
                        f"{info['checksum']} over {info['rows']} rows"
                    )
            else:
                try:
                    import pyarrow.parquet as pq
                except ImportError:  # pyarrow is optional for the SDK
                    pq = None
                if pq is not None and pq.read_metadata(dest).num_rows != info["rows"]:
                    raise ChecksumMismatch(f"{dest}: not {info['rows']} rows")
        return {
            "ref": info["ref"],
            "path": str(dest),
            "format": format,
            "rows": info["rows"],
            "checksum": info["checksum"],
            "retries": attempts,
        }


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


class ChecksumMismatch(Exception):
    """An exported file does not match the version's checksum or row count."""


class FreezeFailed(Exception):
    """A dataset version failed to freeze (its ``error`` says why)."""
