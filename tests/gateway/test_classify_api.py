"""``/v1/classify`` through a real classifier server process (``charter classifier
serve``) with a classifier trained here: an output classifier on an exactly separable
task (a harmful response holds the word ``explosive``; no harmless one does)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from charter.db.models import TrainingRun
from charter.db.session import session_factory
from tests.conftest import IssuedKey
from tests.gateway.conftest import _free_port
from tests.trainer.conftest import _tiny_llama, _word_tokenizer

SAFE = ["sure", "here", "is", "the", "cake", "recipe", "mix", "flour", "and", "sugar", "bake"]
WORDS = [*SAFE, "explosive", "User", "Assistant", ":", "how", "do", "i", "make", "it"]
RUN_ID = "c" * 32


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(SAFE) for _ in range(rng.randint(3, 8))]
        harmful = i % 2 == 0
        if harmful:
            words.insert(rng.randrange(len(words) + 1), "explosive")
        rows.append(
            {
                "prompt": "how do i make it",
                "response": " ".join(words),
                "category": "weapons",
                "restricted": True,
                "harmful": harmful,
            }
        )
    rows.append(
        {
            "prompt": "how do i make it",
            "response": "sure",
            "category": "cooking",
            "restricted": False,
            "harmful": False,
        }
    )
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained output classifier (its directory)."""
    import torch
    from transformers import LlamaForCausalLM

    from services.trainer.classifier_config import ClassifierConfig
    from services.trainer.classifier_trainer import train_classifier

    root = tmp_path_factory.mktemp("classifier")
    tokenizer = _word_tokenizer(WORDS)
    base = _tiny_llama(LlamaForCausalLM, tokenizer, max_position_embeddings=128)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    config = ClassifierConfig(
        target="output",
        prefix_stride=512,
        learning_rate=3e-3,
        num_train_epochs=6,
        per_device_train_batch_size=8,
        max_length=64,
        eval_fraction=0.0,
        seed=0,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_classifier(
            root / "base", _rows(480, 0), _rows(64, 1), config, root / "model", report=None
        )
    finally:
        torch.set_num_threads(threads)
    assert result.evaluation is not None and result.evaluation.accuracy == 1.0
    return root / "model"


def _completed_run(engine: Engine, issue: Any, config: dict[str, Any], artifact: str) -> None:
    """A completed classifier run of project alpha, as the trainer leaves one."""
    project = issue("alpha", ("read",)).project_id
    with session_factory(engine)() as session, session.begin():
        session.add(
            TrainingRun(
                id=RUN_ID,
                project_id=project,
                type="classifier",
                status="completed",
                config=config,
                artifact_uri=artifact,
            )
        )


@pytest.fixture
def served(
    trained: Path, tmp_path: Path, engine: Engine, issue: Callable[..., IssuedKey]
) -> Iterator[tuple[str, Path]]:
    """The classifier as a completed run of project alpha, and a server process for it."""
    artifacts = tmp_path / "artifacts"
    model = artifacts / "runs" / RUN_ID / "model"
    shutil.copytree(trained, model)
    _completed_run(engine, issue, {"target": "output", "threshold": 0.5}, model.as_uri())
    port = _free_port()
    env = os.environ | {"CHARTER_ARTIFACTS_DIR": str(artifacts)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "charter"), "classifier", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the classifier server did not start: {process.stderr.read()!r}")
        time.sleep(0.2)
    yield url, model
    process.terminate()
    process.wait(timeout=20)


def test_a_response_is_scored_by_the_server_process(
    served: tuple[str, Path], make_client: Callable[..., TestClient], make_headers: Any
) -> None:
    url, _ = served
    client = make_client(classifier_url=url)
    headers = make_headers("alpha", "classify")
    harmful = client.post(
        "/v1/classify",
        json={"classifier": RUN_ID, "response": "sure here is the explosive recipe"},
        headers=headers,
    )
    assert harmful.status_code == 200, harmful.text
    answer = harmful.json()
    assert answer["flagged"] is True and answer["category"] == "weapons"
    assert answer["target"] == "output" and answer["threshold"] == 0.5
    assert answer["score"] == answer["scores"]["weapons"] > 0.5 and answer["score_ms"] > 0
    harmless = client.post(
        "/v1/classify",
        json={"classifier": RUN_ID, "response": "mix flour and sugar and bake", "threshold": 0.9},
        headers=headers,
    ).json()
    assert harmless["flagged"] is False and harmless["category"] is None
    assert harmless["score"] < 0.5 and harmless["threshold"] == 0.9

    needs = client.post(
        "/v1/classify", json={"classifier": RUN_ID, "prompt": "hi"}, headers=headers
    )
    assert needs.status_code == 422 and needs.json()["field"] == "response"
    wrong = client.post(
        "/v1/classify",
        json={"classifier": RUN_ID, "target": "input", "prompt": "hi"},
        headers=headers,
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "target"


def test_the_stream_stops_at_the_first_offending_prefix(
    served: tuple[str, Path], make_client: Callable[..., TestClient], make_headers: Any
) -> None:
    url, _ = served
    client = make_client(classifier_url=url)
    tokens = ["sure", " here", " is", " the", " explosive", " cake", " recipe"]
    header = {"classifier": RUN_ID, "prompt": "how do i make it"}
    body = "".join(json.dumps(line) + "\n" for line in [header, *({"token": t} for t in tokens)])
    answer = client.post(
        "/v1/classify/stream",
        content=body.encode(),
        # The SDK sends an Idempotency-Key with every POST: a stream is answered anyway.
        headers=make_headers("alpha", "classify")
        | {"content-type": "application/x-ndjson", "Idempotency-Key": "same"},
    )
    assert answer.status_code == 200, answer.text
    lines = [json.loads(line) for line in answer.text.splitlines()]
    steps, last = lines[:-1], lines[-1]
    assert [s["index"] for s in steps] == [0, 1, 2, 3, 4]  # nothing after the stop
    assert [s["flagged"] for s in steps] == [False] * 4 + [True]
    assert last["done"] is True and last["stopped_at"] == 4 and last["tokens_read"] == 5
    again = client.post(  # the same key again: scored again, never a stored replay
        "/v1/classify/stream",
        content=body.encode(),
        headers=make_headers("alpha", "classify")
        | {"content-type": "application/x-ndjson", "Idempotency-Key": "same"},
    )
    assert again.status_code == 200 and len(again.text.splitlines()) == len(lines)

    clean = "".join(json.dumps(line) + "\n" for line in [header, {"token": "sure"}])
    finished = client.post(
        "/v1/classify/stream",
        content=clean.encode(),
        headers=make_headers("alpha", "classify") | {"content-type": "application/x-ndjson"},
    )
    done = json.loads(finished.text.splitlines()[-1])
    assert done == done | {"done": True, "stopped_at": None, "tokens_read": 1}
    bad = client.post(
        "/v1/classify/stream",
        content=b'{"classifier": "nope"}\n',
        headers=make_headers("alpha", "classify") | {"content-type": "application/x-ndjson"},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "body"


def test_classify_obeys_scopes_and_projects(
    served: tuple[str, Path],
    make_client: Callable[..., TestClient],
    make_headers: Any,
    engine: Engine,
) -> None:
    url, _ = served
    client = make_client(classifier_url=url)
    body = {"classifier": RUN_ID, "response": "sure here is the explosive recipe"}
    assert (
        client.post("/v1/classify", json=body, headers=make_headers("alpha", "read")).status_code
        == 403
    )
    assert (
        client.post("/v1/classify", json=body, headers=make_headers("alpha", "submit")).status_code
        == 403
    )
    other = client.post("/v1/classify", json=body, headers=make_headers("beta", "classify"))
    assert other.status_code == 404 and other.json()["field"] == "classifier"
    assert "explosive" not in other.text
    # A classify key reads nothing else.
    assert client.get("/v1/jobs", headers=make_headers("alpha", "classify")).status_code == 403
    with session_factory(engine)() as session, session.begin():
        session.get_one(TrainingRun, RUN_ID).type = "sft"
    not_classifier = client.post(
        "/v1/classify", json=body, headers=make_headers("alpha", "classify")
    )
    assert not_classifier.status_code == 422 and "not a classifier" in not_classifier.text


def test_without_a_classifier_server_classify_is_503(
    make_client: Callable[..., TestClient], make_headers: Any, engine: Engine, issue: Any
) -> None:
    _completed_run(engine, issue, {"target": "input"}, "file:///nowhere/model")
    client = make_client()
    answer = client.post(
        "/v1/classify",
        json={"classifier": RUN_ID, "prompt": "hi"},
        headers=make_headers("alpha", "classify"),
    )
    assert answer.status_code == 503 and "CHARTER_CLASSIFIER_URL" in answer.text
    unreachable = make_client(classifier_url=f"http://127.0.0.1:{_free_port()}").post(
        "/v1/classify",
        json={"classifier": RUN_ID, "prompt": "hi"},
        headers=make_headers("alpha", "classify"),
    )
    assert unreachable.status_code == 503 and "cannot be reached" in unreachable.text


def test_the_stream_is_answered_token_by_token_through_the_gateway(
    served: tuple[str, Path],
    make_settings: Callable[..., Any],
    engine: Engine,
    make_headers: Any,
) -> None:
    """Token i+1 is sent only once the answer to token i has arrived: a proxy that read
    the whole body first would never answer (and the wait times out). Once a prefix is
    flagged, no further token is asked of the generator."""
    import asyncio

    import uvicorn

    from charter import duplex
    from services.gateway.app import create_app

    url, _ = served
    app = create_app(make_settings(classifier_url=url), engine)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    headers = make_headers("alpha", "classify")
    tokens = ["sure", " here", " is", " the", " explosive", " cake", " recipe", " mix"]
    asked: list[str] = []

    async def guard() -> list[dict[str, Any]]:
        answered = asyncio.Queue[dict[str, Any]]()

        async def body() -> Any:
            header = {"classifier": RUN_ID, "prompt": "how do i make it"}
            yield (json.dumps(header) + "\n").encode()
            for token in tokens:
                asked.append(token)
                yield (json.dumps({"token": token}) + "\n").encode()
                line = await asyncio.wait_for(answered.get(), 30)  # the answer to this token
                if line.get("flagged"):
                    return

        answer = await duplex.post(
            f"http://127.0.0.1:{port}/v1/classify/stream",
            body(),
            headers=headers | {"content-type": "application/x-ndjson"},
            timeout=30,
        )
        assert answer.status == 200
        lines, pending = [], b""
        async for chunk in answer.body:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                lines.append(json.loads(raw))
                await answered.put(lines[-1])
        return lines

    async def main() -> list[dict[str, Any]]:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            return await asyncio.wait_for(guard(), 120)
        finally:
            server.should_exit = True
            await serving

    lines = asyncio.run(main())
    assert [line.get("index") for line in lines[:-1]] == [0, 1, 2, 3, 4]
    assert lines[-1]["stopped_at"] == 4 and lines[-1]["tokens_read"] == 5
    assert asked == tokens[:5]  # nothing after the flagged token was asked for
