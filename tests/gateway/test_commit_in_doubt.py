"""A COMMIT whose connection dies before the server's answer is in doubt: it may have
committed. The gateway asks the server (``pg_xact_status`` of the transaction's id, over
a fresh connection) and answers the request's success if it did, 503 if it did not, so
a client never retries a request that went through into a duplicate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from charter.db.models import PromptBatch
from charter.db.session import session_factory

pytestmark = pytest.mark.postgres_only

BODY = {"name": "in-doubt", "rows": [{"prompt": "p1"}, {"prompt": "p2"}]}


def _lose_the_answer(app: FastAPI, *, commit_first: bool) -> list[int]:
    """Make the next unit of work's COMMIT raise a lost connection, after committing or not."""
    real: Callable[[], Session] = app.state.sessions
    calls: list[int] = []

    def sessions() -> Session:
        session = real()
        commit = session.commit

        def lossy() -> None:
            if calls:  # only the first request's COMMIT loses its answer
                return commit()
            calls.append(1)
            if commit_first:
                commit()
            else:
                session.rollback()
            lost = psycopg.OperationalError("server closed the connection unexpectedly")
            raise OperationalError("COMMIT", {}, lost)

        session.commit = lossy  # type: ignore[method-assign]
        return session

    app.state.sessions = sessions
    return calls


def _batches(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(PromptBatch)) or 0)


def test_a_commit_that_went_through_answers_its_success(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    calls = _lose_the_answer(app, commit_first=True)
    response = client.post("/v1/batches", json=BODY, headers=admin_headers)
    assert calls, "the commit was not intercepted"
    assert response.status_code == 201, response.text
    assert _batches(engine) == 1
    assert (
        client.get(f"/v1/batches/{response.json()['id']}", headers=admin_headers).status_code == 200
    )


def test_a_commit_that_did_not_happen_answers_503(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    calls = _lose_the_answer(app, commit_first=False)
    response = client.post("/v1/batches", json=BODY, headers=admin_headers)
    assert calls, "the commit was not intercepted"
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    assert _batches(engine) == 0


def test_reads_take_no_transaction_id(
    app: FastAPI, client: Any, admin_headers: dict[str, str]
) -> None:
    """A GET writes nothing: no extra round trip for its id, and a lost COMMIT is a 503."""
    calls = _lose_the_answer(app, commit_first=True)
    response = client.get("/v1/batches", headers=admin_headers)
    assert calls and response.status_code == 503
