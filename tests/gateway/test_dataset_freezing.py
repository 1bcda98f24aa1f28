"""Freezing in the background: the state machine, progress, retries, crash resume and
the 409 on a version that is not ready.

The freezer is driven by hand here (``Manual`` never starts its thread), batch by
batch, so every intermediate state is observed; the last tests let the real thread
run, as the gateway does.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from charter.client import CharterClient, FreezeFailed
from charter.db.models import Dataset, DatasetRow, DatasetVersion, utcnow
from charter.db.session import session_factory
from services.gateway.app import create_app
from services.gateway.datasets import freezing
from services.gateway.datasets.freezing import Freezer
from tests.gateway.test_datasets_api import HELPFUL_SFT, Corpus, _jsonl, corpus, wait_ready

__all__ = ["corpus"]  # the fixture, shared with test_datasets_api


class Manual(Freezer):
    """A freezer whose thread never starts: the test calls ``claim``/``step`` itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def claim(self) -> str | None:
        with self.sessions() as session, session.begin():
            return freezing.claim(session, self.owner, self.lease_seconds)

    def step(self, version_id: str) -> str:
        with self.sessions() as session, session.begin():
            return freezing.step(
                session,
                version_id,
                self.owner,
                batch_rows=self.batch_rows,
                lease_seconds=self.lease_seconds,
            )


@pytest.fixture
def manual(client: TestClient, app: FastAPI, engine: Engine) -> Manual:
    app.state.freezer.stop()  # the app's own thread (started by the lifespan) must not race
    freezer = Manual(session_factory(engine), batch_rows=3)
    app.state.freezer = freezer
    return freezer


def _post(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/datasets", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def _get(client: TestClient, headers: dict[str, str], ref: str) -> dict[str, Any]:
    response = client.get(f"/v1/datasets/{ref}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _rows(engine: Engine, version: dict[str, Any]) -> list[tuple[int, int | None, Any]]:
    """(seq, label_id, row) of every stored row of a version, in order."""
    with session_factory(engine)() as session:
        rows = session.execute(
            select(DatasetRow.seq, DatasetRow.label_id, DatasetRow.row)
            .where(DatasetRow.version_id == _version_id(session, version))
            .order_by(DatasetRow.seq)
        )
        return [tuple(r) for r in rows]


def _version_id(session: Session, version: dict[str, Any]) -> str:
    return str(
        session.scalar(
            select(DatasetVersion.id)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            .where(Dataset.name == version["name"], DatasetVersion.version == version["version"])
        )
    )


def _set(engine: Engine, version: dict[str, Any], **values: Any) -> None:
    with session_factory(engine)() as session, session.begin():
        version_id = _version_id(session, version)
        session.execute(
            update(DatasetVersion).where(DatasetVersion.id == version_id).values(**values)
        )


def _sdk(client: TestClient, headers: dict[str, str]) -> CharterClient:
    """The SDK over the in-process app (the TestClient is an httpx client)."""
    sdk = CharterClient("http://testserver", headers["X-API-Key"])
    sdk._http.close()
    sdk._http = client
    client.headers.update(headers)
    return sdk


def _one_shot(manual: Manual, version_id: str) -> None:
    """Freeze in one batch: what the old synchronous ``INSERT ... SELECT`` did."""
    batch, manual.batch_rows = manual.batch_rows, 10**9
    try:
        assert manual.freeze(version_id)
    finally:
        manual.batch_rows = batch


def test_states_progress_and_409_until_ready(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    manual: Manual,
    engine: Engine,
) -> None:
    accepted = _post(client, admin_headers, name="slow", kind="sft")
    assert manual.wakes == 1  # after the commit: the request itself did no freezing
    n = accepted["rows_total"]
    assert n > 2 * manual.batch_rows
    assert (accepted["state"], accepted["rows_done"], accepted["row_count"]) == ("freezing", 0, 0)
    assert accepted["checksum"] is None and accepted["ready_at"] is None

    # Not ready: export, training and mixing it in are 409s naming the state.
    for fmt in ("jsonl", "parquet"):
        response = client.get(
            "/v1/datasets/slow@1/export", params={"format": fmt}, headers=admin_headers
        )
        assert response.status_code == 409, response.text
        assert "freezing" in response.json()["detail"] and response.json()["field"] == "ref"
    run = client.post(
        "/v1/runs",
        json={"type": "sft", "dataset": "slow@1", "base_model": "m"},
        headers=admin_headers,
    )
    assert run.status_code == 409 and run.json()["field"] == "dataset", run.text
    mix = {"source": "slow@1", "ratio": 0.5}
    response = client.post(
        "/v1/datasets", json={"name": "mixed", "kind": "sft", "mix": mix}, headers=admin_headers
    )
    assert response.status_code == 409 and response.json()["field"] == "mix.source", response.text

    version_id = manual.claim()
    assert version_id is not None and manual.claim() is None  # leased: nobody else takes it
    seen = []
    while (state := manual.step(version_id)) == "more":
        progress = _get(client, admin_headers, "slow@1")
        assert progress["state"] == "freezing" and progress["row_count"] == 0
        seen.append(progress["rows_done"])
        assert client.get("/v1/datasets/slow/export", headers=admin_headers).status_code == 409
    assert state == "rows_done"
    assert seen == [min(k * manual.batch_rows, n) for k in range(1, len(seen) + 1)]
    assert seen[-1] == n

    assert manual.freeze(version_id)  # the checksum, then ready
    ready = _get(client, admin_headers, "slow@1")
    assert (ready["state"], ready["rows_done"], ready["row_count"]) == ("ready", n, n)
    assert ready["checksum"] and ready["ready_at"]
    export = client.get("/v1/datasets/slow@1/export", headers=admin_headers)
    assert export.status_code == 200 and len(export.content.splitlines()) == n

    # The same snapshot frozen in one batch has the same rows and checksum.
    _post(client, admin_headers, name="slow", kind="sft")
    again = manual.claim()
    assert again is not None
    _one_shot(manual, again)
    one_shot = _get(client, admin_headers, "slow@2")
    assert one_shot["checksum"] == ready["checksum"]
    assert _rows(engine, one_shot) == _rows(engine, ready)


def test_a_crashed_freeze_resumes_without_duplicates_or_gaps(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    manual: Manual,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _post(client, admin_headers, name="crash", kind="sft")
    version_id = manual.claim()
    assert version_id is not None

    real = freezing._label_batch
    calls = 0

    def dies_on_third(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        real(*args, **kwargs)  # the rows are written, then the process "dies"
        if calls == 3:
            raise RuntimeError("gateway killed mid-batch")

    monkeypatch.setattr(freezing, "_label_batch", dies_on_third)
    assert manual.freeze(version_id) is False
    monkeypatch.setattr(freezing, "_label_batch", real)
    crashed = _get(client, admin_headers, "crash@1")
    assert crashed["state"] == "freezing" and crashed["rows_done"] == 2 * manual.batch_rows
    assert len(_rows(engine, crashed)) == 2 * manual.batch_rows  # the third batch rolled back

    # Another gateway cannot take it while the lease is live...
    other = Manual(session_factory(engine), batch_rows=4)
    assert other.claim() is None
    # ... and takes it over once the lease expires (a GET of the version wakes a freezer).
    _set(engine, crashed, lease_expires_at=utcnow() - timedelta(seconds=1))
    wakes = manual.wakes
    _get(client, admin_headers, "crash@1")
    assert manual.wakes == wakes + 1
    assert other.claim() == version_id
    # The dead freezer's lease is gone: a late batch of its own is refused.
    assert manual.step(version_id) == "lost"
    assert other.freeze(version_id)
    resumed = _get(client, admin_headers, "crash@1")
    assert resumed["state"] == "ready"

    _post(client, admin_headers, name="crash", kind="sft")
    again = manual.claim()
    assert again is not None
    _one_shot(manual, again)
    one_shot = _get(client, admin_headers, "crash@2")
    rows = _rows(engine, resumed)
    assert [seq for seq, *_ in rows] == list(range(resumed["row_count"]))
    assert rows == _rows(engine, one_shot)
    assert resumed["checksum"] == one_shot["checksum"]


def test_mixing_in_batches_equals_one_shot(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    manual: Manual,
    engine: Engine,
) -> None:
    upload = client.post(
        "/v1/datasets/helpful/upload?kind=sft",
        content=_jsonl(HELPFUL_SFT * 3),
        headers=admin_headers | {"Content-Type": "application/x-ndjson"},
    )
    assert upload.status_code == 201 and upload.json()["state"] == "ready"  # uploads: at once
    spec = {"name": "mix", "kind": "sft", "mix": {"source": "helpful@1", "ratio": 0.4, "seed": 7}}
    frozen = []
    for batch_rows in (2, 10**6):
        manual.batch_rows = batch_rows
        accepted = _post(client, admin_headers, **spec)
        assert accepted["rows_total"] > accepted["mix"]["count"] > batch_rows or batch_rows > 2
        version_id = manual.claim()
        assert version_id is not None and manual.freeze(version_id)
        frozen.append(_get(client, admin_headers, accepted["ref"]))
    batched, one_shot = frozen
    assert batched["row_count"] == one_shot["row_count"] == batched["rows_total"]
    assert batched["checksum"] == one_shot["checksum"]
    batched_rows, one_shot_rows = _rows(engine, batched), _rows(engine, one_shot)
    assert batched_rows == one_shot_rows
    assert sum(label is None for _, label, _ in batched_rows) == batched["mix"]["count"]


def test_idempotent_retry_returns_the_same_version(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus, manual: Manual
) -> None:
    headers = admin_headers | {"Idempotency-Key": "freeze-once"}
    first = client.post("/v1/datasets", json={"name": "idem", "kind": "sft"}, headers=headers)
    version_id = manual.claim()
    assert version_id is not None and manual.freeze(version_id)
    retry = client.post("/v1/datasets", json={"name": "idem", "kind": "sft"}, headers=headers)
    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
    versions = client.get("/v1/datasets/idem/versions", headers=admin_headers).json()
    assert [(v["version"], v["state"]) for v in versions] == [(1, "ready")]


def test_a_snapshot_that_changed_fails_cleanly(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    manual: Manual,
    engine: Engine,
) -> None:
    accepted = _post(client, admin_headers, name="changed", kind="sft")
    # As if a label below the snapshot's largest id committed after the count was taken.
    _set(engine, accepted, rows_total=accepted["rows_total"] - 1)
    version_id = manual.claim()
    assert version_id is not None and manual.freeze(version_id) is False
    failed = _get(client, admin_headers, "changed@1")
    assert failed["state"] == "failed" and "changed" in failed["error"]
    assert _rows(engine, failed) == []  # partial rows are not kept
    response = client.get("/v1/datasets/changed@1/export", headers=admin_headers)
    assert response.status_code == 409 and "failed" in response.json()["detail"]


# --------------------------------------------------------------------------- the real thread


def test_the_gateway_thread_freezes_and_the_sdk_waits(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus, app: FastAPI
) -> None:
    app.state.freezer.batch_rows = 2
    sdk = _sdk(client, admin_headers)
    accepted = sdk.create_dataset("threaded", "sft", wait=False)
    assert accepted["state"] == "freezing"
    ready = sdk.wait_dataset(accepted["ref"])
    assert ready["state"] == "ready" and ready["row_count"] == accepted["rows_total"]
    waited = sdk.create_dataset("threaded", "sft")
    assert waited["state"] == "ready" and waited["checksum"] == ready["checksum"]
    deadline = time.monotonic() + 10
    while not app.state.freezer.idle():  # the thread exits once nothing is left
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_new_gateway_resumes_what_a_dead_one_left(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    manual: Manual,
    settings: Any,
    engine: Engine,
) -> None:
    accepted = _post(client, admin_headers, name="orphan", kind="sft")
    version_id = manual.claim()
    assert version_id is not None and manual.step(version_id) == "more"
    _set(engine, accepted, lease_expires_at=utcnow() - timedelta(seconds=1))  # it died
    with TestClient(create_app(settings, engine)) as restarted:  # its startup resumes it
        ready = wait_ready(restarted, admin_headers, accepted["ref"])
    assert ready["row_count"] == accepted["rows_total"]


def test_the_sdk_raises_when_freezing_failed(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    manual: Manual,
    engine: Engine,
) -> None:
    accepted = _post(client, admin_headers, name="doomed", kind="sft")
    _set(engine, accepted, rows_total=accepted["rows_total"] + 5)
    version_id = manual.claim()
    assert version_id is not None and not manual.freeze(version_id)
    sdk = _sdk(client, admin_headers)
    with pytest.raises(FreezeFailed, match="doomed@1"):
        sdk.wait_dataset("doomed@1")
