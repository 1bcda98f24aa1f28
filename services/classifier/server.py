"""The classifier server: one process that loads each classifier once and scores texts.

Constitutional classifiers filter a deployment's traffic, so they run beside the model
they guard, not in the gateway (which loads no ML framework). The gateway authenticates
the caller, checks that the classifier is a completed ``classifier`` run of the caller's
project, and forwards the call with the run's artifact; this server confines the
artifact to that run's folder of its own store (as the workers do for run models),
keeps the last ``classifier_cache_size`` classifiers loaded, and answers:

- ``POST /score``: scores of a batch of (prompt, response) pairs;
- ``POST /stream``: NDJSON in, NDJSON out: a header line, then one line per token; it
  answers each token with the scores of the response so far and stops reading at the
  first prefix whose score reaches the threshold.

Each classifier scores under its own lock: torch runs one forward pass at a time on its
threads, and callers queue rather than oversubscribe the cores.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from charter import duplex
from charter.core.artifact_paths import OutsideStore
from charter.duplex import DuplexResponse
from charter.model_store import in_run_folder
from charter.settings import Settings
from services.classifier.scorer import CLASSIFIER_FILE, Classifier, StreamStep

RUN_ID = r"^[0-9a-f]{32}$"


class Loaded:
    """A classifier and the lock its forward passes take."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.lock = threading.Lock()

    def score(
        self, prompts: list[str | None], responses: list[str | None]
    ) -> list[dict[str, float]]:
        with self.lock:
            return self.classifier.score(prompts, responses)

    def step(self, prompt: str | None, text: str, index: int, limit: float) -> StreamStep:
        with self.lock:
            return self.classifier.step(prompt, text, index, limit)


class Store:
    """The classifiers loaded in this process, least recently used first out."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.artifacts_dir.resolve() / "runs"
        self.size = settings.classifier_cache_size
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, run_id: str, artifact_uri: str) -> Path:
        folder = self.root / run_id
        try:
            path = in_run_folder(artifact_uri, folder)
        except OutsideStore as exc:
            raise HTTPException(
                422, f"run {run_id}: its artifact is not in {folder} ({exc})"
            ) from None
        if not (path / CLASSIFIER_FILE).is_file():
            raise HTTPException(
                422, f"run {run_id}: {path} holds no classifier (is the store mounted?)"
            )
        return path

    def get(self, run_id: str, artifact_uri: str) -> Loaded:
        with self._lock:  # one load at a time: a second caller waits for the first's model
            loaded = self._loaded.get(run_id)
            if loaded is None:
                loaded = Loaded(Classifier.load(self.path(run_id, artifact_uri)))
                self._loaded[run_id] = loaded
                while len(self._loaded) > self.size:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(run_id)
            return loaded


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreRequest(_Strict):
    run_id: str = Field(pattern=RUN_ID)
    artifact_uri: str = Field(min_length=1, max_length=4096)
    prompts: list[str | None] = Field(min_length=1, max_length=256)
    responses: list[str | None] = Field(min_length=1, max_length=256)


class StreamHeader(_Strict):
    run_id: str = Field(pattern=RUN_ID)
    artifact_uri: str = Field(min_length=1, max_length=4096)
    prompt: str | None = None
    threshold: float = Field(gt=0.0, lt=1.0)
    max_tokens: int = Field(ge=1)


def _line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, ensure_ascii=False) + "\n").encode()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    store = Store(settings)
    app = FastAPI(title="Charter classifier server", docs_url=None, redoc_url=None)
    token = settings.classifier_token

    @app.middleware("http")
    async def _authorised(request: Request, call_next: Any) -> Any:
        if token and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"detail": "not authorised"}, status_code=401)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "loaded": list(store._loaded)}

    @app.post("/score")
    async def score(body: ScoreRequest) -> dict[str, Any]:
        if len(body.prompts) != len(body.responses):
            raise HTTPException(422, "prompts and responses must be as many")
        loaded = await run_in_threadpool(store.get, body.run_id, body.artifact_uri)
        started = time.perf_counter()
        scores = await run_in_threadpool(loaded.score, body.prompts, body.responses)
        elapsed = (time.perf_counter() - started) * 1000
        return {"scores": scores, "score_ms": elapsed, "categories": loaded.classifier.categories}

    @app.post("/stream")
    async def stream(request: Request) -> DuplexResponse:
        lines = duplex.lines(request.stream())
        try:
            header = StreamHeader.model_validate_json(await anext(lines))
        except (StopAsyncIteration, ValueError) as exc:
            raise HTTPException(422, f"the first line is the stream's header: {exc}") from None
        loaded = await run_in_threadpool(store.get, header.run_id, header.artifact_uri)
        if loaded.classifier.target == "input":
            raise HTTPException(422, "an input classifier reads no response: use /score")
        return DuplexResponse(_answers(loaded, header, lines), media_type="application/x-ndjson")

    return app


async def _answers(
    loaded: Loaded, header: StreamHeader, lines: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """One line per token read; the last says where the stream stopped, if it did."""
    response = ""
    index = -1
    started = time.perf_counter()
    async for raw in lines:
        try:
            token = json.loads(raw)["token"]
            if not isinstance(token, str):
                raise TypeError("token is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            yield _line({"error": f"line {index + 3}: each line after the header is "
                         f'{{"token": "..."}} ({exc})'})  # fmt: skip
            return
        index += 1
        if index >= header.max_tokens:
            yield _line({"error": f"more than {header.max_tokens} tokens in one stream"})
            return
        response += token
        step = await run_in_threadpool(
            loaded.step, header.prompt, response, index, header.threshold
        )
        flagged = step.stop
        yield _line(
            {"index": index, "scores": step.scores, "score": step.max_score, "flagged": flagged}
        )
        if flagged:
            break
    else:
        flagged = False
    yield _line(
        {
            "done": True,
            "stopped_at": index if flagged else None,
            "tokens_read": index + 1,
            "elapsed_ms": (time.perf_counter() - started) * 1000,
        }
    )
