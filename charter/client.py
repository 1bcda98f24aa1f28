"""The synchronous Python SDK: :class:`CharterClient`.

It has the resource groups of :mod:`charter.sdk` (``client.jobs.get(id)`` answers a
typed model) and, for code written before them, flat methods answering plain JSON
(``client.job(id)`` is a dict). Both send through the same calls, retries and
``Idempotency-Key`` handling.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from charter.sdk import api
from charter.sdk.calls import Call
from charter.sdk.clients import AsyncCharterClient, SyncClient
from charter.sdk.errors import CharterAPIError, ChecksumMismatch, FreezeFailed
from charter.sdk.uploads import ProgressCallback

__all__ = [
    "AsyncCharterClient",
    "CharterAPIError",
    "CharterClient",
    "ChecksumMismatch",
    "FreezeFailed",
    "dump",
]

_constitutions, _batches, _jobs = api.Constitutions(), api.Batches(), api.Jobs()
_runs, _datasets, _workers = api.Runs(), api.Datasets(), api.Workers()


class CharterClient(SyncClient):
    def __enter__(self) -> CharterClient:
        return self

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any endpoint, answered as plain JSON (None for an empty answer); the
        keyword arguments are httpx's (``params``, ``json``, ``content``, ``headers``)."""
        call: Call[Any] = Call(
            method.upper(), path,
            params=kwargs.pop("params", None), json=kwargs.pop("json", None),
            content=kwargs.pop("content", None), headers=kwargs.pop("headers", None) or {},
            options=kwargs,
        )  # fmt: skip
        return self.send(call)

    def _raw(self, call: Call[Any]) -> Any:
        return self._run(call.raw())

    # Constitutions
    def push_constitution(self, path: Path | str) -> dict[str, Any]:
        return self._raw(_constitutions.push(path))

    def constitutions(self) -> list[dict[str, Any]]:
        return self._raw(_constitutions.list())

    def constitution(self, ref: str) -> dict[str, Any]:
        return self._raw(_constitutions.get(ref))

    def diff_constitution(self, name: str, before: int, after: int) -> dict[str, Any]:
        return self._raw(_constitutions.diff(name, before, after))

    # Batches
    def upload_batch(
        self,
        path: Path | str,
        name: str = "",
        *,
        format: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Prompts from JSONL, CSV, Parquet or a ``datasets`` directory, streamed."""
        return self._raw(_batches.upload(path, name, format=format, progress=progress))

    def create_batch(self, rows: Iterable[dict[str, Any]], name: str = "") -> dict[str, Any]:
        return self._raw(_batches.create(rows, name))

    # Jobs
    def submit_job(self, idempotency_key: str | None = None, **spec: Any) -> dict[str, Any]:
        return self._raw(_jobs.submit(spec, idempotency_key=idempotency_key))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._raw(_jobs.get(job_id))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._raw(_jobs.cancel(job_id))

    def results(self, job_id: str) -> Iterator[dict[str, Any]]:
        return self._raw(_jobs.results(job_id, limit=500))

    def items(self, job_id: str, state: str | None = None) -> Iterator[dict[str, Any]]:
        return self._raw(_jobs.items(job_id, state))

    def workers(self) -> list[dict[str, Any]]:
        return self._raw(_workers.list())

    def wait(self, job_id: str, *, timeout: float = 3600, poll: float = 1.0) -> dict[str, Any]:
        """The job once completed or cancelled, or as it stands after ``timeout`` seconds."""
        return self._run(_jobs.wait(job_id, timeout=timeout, poll=poll, raw=True))

    # Training runs
    def create_run(self, idempotency_key: str | None = None, **spec: Any) -> dict[str, Any]:
        return self._raw(_runs.create(spec, idempotency_key=idempotency_key))

    def run(self, run_id: str) -> dict[str, Any]:
        return self._raw(_runs.get(run_id))

    def run_metrics(self, run_id: str) -> Iterator[dict[str, Any]]:
        return self._raw(_runs.metrics(run_id, limit=1000))

    def wait_run(
        self, run_id: str, *, timeout: float = 24 * 3600, poll: float = 2.0
    ) -> dict[str, Any]:
        """The run once final (completed, failed or cancelled), or as it stands after
        ``timeout`` seconds."""
        return self._run(_runs.wait(run_id, timeout=timeout, poll=poll, raw=True))

    def claim_run(self, owner: str, types: list[str] | None = None) -> dict[str, Any] | None:
        """Lease the oldest queued run (trainer side); None when nothing is queued.

        ``owner`` only labels the lease. The run comes with its ``lease_token``, shown
        only here: every report on the run below presents it."""
        return self._raw(_runs.claim(owner, types))

    def run_heartbeat(self, run_id: str, lease_token: str) -> dict[str, Any]:
        return self._raw(_runs.heartbeat(run_id, lease_token))

    def report_metrics(self, run_id: str, lease_token: str, points: list[dict[str, Any]]) -> None:
        self._raw(_runs.report_metrics(run_id, lease_token, points))

    def report_checkpoint(self, run_id: str, lease_token: str, checkpoint: str) -> dict[str, Any]:
        return self._raw(_runs.checkpoint(run_id, lease_token, checkpoint))

    def complete_run(
        self, run_id: str, lease_token: str, artifact_uri: str, *, config_hash: str | None = None
    ) -> dict[str, Any]:
        """Mark the run completed with its model; ``config_hash``: the ``config_hash()`` of
        the config it was trained with (409 unless it is the run's)."""
        return self._raw(_runs.complete(run_id, lease_token, artifact_uri, config_hash=config_hash))

    def fail_run(self, run_id: str, lease_token: str, error: str) -> dict[str, Any]:
        return self._raw(_runs.fail(run_id, lease_token, error))

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
        procedure = _datasets.create(
            name, kind, filter, mix,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout, raw=True,
        )  # fmt: skip
        return self._run(procedure)

    def wait_dataset(self, ref: str, *, timeout: float = 3600, poll: float = 1.0) -> dict[str, Any]:
        """The version once it is no longer ``freezing``; polls fast at first (small
        versions freeze in well under a second), then every ``poll`` seconds."""
        return self._run(_datasets.wait(ref, timeout=timeout, poll=poll, raw=True))

    def dataset(self, ref: str) -> dict[str, Any]:
        """A version: ``name`` (the latest) or ``name@version``."""
        return self._raw(_datasets.get(ref))

    def datasets(self) -> Iterator[dict[str, Any]]:
        """Every dataset of the project, latest version each."""
        return self._raw(_datasets.list())

    def upload_dataset(
        self, name: str, path: Path | str, kind: str | None = None
    ) -> dict[str, Any]:
        """Rows in TRL shape as a new version of ``name`` (``kind`` for a new dataset)."""
        return self._raw(_datasets.upload(name, path, kind))

    def export_dataset(
        self,
        ref: str,
        dest: Path | str,
        format: str = "jsonl",
        *,
        verify: bool = True,
        retries: int = 5,
        resume: bool = False,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Stream a version to ``dest``; return ``{ref, path, format, rows, checksum, retries}``.

        A dropped connection is resumed from the last complete JSONL line (Parquet
        starts over), pinned to the version first served. ``resume=True`` also
        continues a partial JSONL file already at ``dest``. With ``verify`` the
        JSONL file's sha256 must equal the version's checksum (``ChecksumMismatch``
        otherwise) and the row count must match.
        """
        export = _datasets.export(
            ref, dest, format, verify=verify, retries=retries, resume=resume, progress=progress
        )
        return self._run(export)


def dump(value: Any) -> str:
    """JSON for a person or a script: models as their JSON, indented."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
