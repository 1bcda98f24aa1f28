"""``/v1/classify``: score a prompt, a response or an exchange with a trained
constitutional classifier, or guard a response as it streams.

The gateway loads no model: it checks the key (scope ``classify``) and that the
classifier is a completed ``classifier`` run of the key's project, then forwards the
call to the classifier server (``classifier_url``), which loads each classifier once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from charter import duplex
from charter.core.classifier_data import verdict
from charter.core.jobs import RunStatus
from charter.db.models import TrainingRun
from charter.duplex import DuplexResponse
from charter.errors import CharterError, Invalid, Unavailable
from charter.settings import Settings
from services.gateway.classifiers.schemas import ClassifyOut, ClassifyRequest, StreamHeader
from services.gateway.deps import ClassifyKey, SessionDep, SettingsDep
from services.gateway.runs import service as runs
from services.gateway.unit_of_work import UnitOfWorkRoute, changes_nothing, streams_body

router = APIRouter(prefix="/v1/classify", tags=["classifiers"], route_class=UnitOfWorkRoute)
NDJSON = "application/x-ndjson"
NEEDS = {"input": ("prompt",), "output": ("response",), "exchange": ("prompt", "response")}


def classifier_run(session: Any, project_id: str, run_id: str) -> TrainingRun:
    run = runs.get(session, project_id, run_id, field="classifier")
    if run.type != "classifier":
        raise Invalid(f"run {run_id!r} is a {run.type} run, not a classifier", field="classifier")
    if run.status != RunStatus.COMPLETED or not run.artifact_uri:
        raise Invalid(
            f"classifier {run_id!r} has no model yet (the run is {run.status})", field="classifier"
        )
    return run


def client(request: Request) -> httpx.AsyncClient:
    """The app's client for the classifier server (made on first use)."""
    state = request.app.state
    existing: httpx.AsyncClient | None = getattr(state, "classifier_client", None)
    if existing is not None:
        return existing
    settings: Settings = state.settings
    state.classifier_client = httpx.AsyncClient(
        base_url=_server_url(settings),
        headers=_server_headers(settings),
        timeout=settings.classifier_timeout_seconds,
    )
    return state.classifier_client


def _server_url(settings: Settings) -> str:
    if not settings.classifier_url:
        raise Unavailable(
            "no classifier server is configured: run `charter classifier serve` and set "
            "CHARTER_CLASSIFIER_URL on the gateway"
        )
    return settings.classifier_url.rstrip("/")


def _server_headers(settings: Settings) -> dict[str, str]:
    token = settings.classifier_token
    return {"authorization": f"Bearer {token}"} if token else {}


def _refused(status: int, text: str) -> CharterError:
    try:
        detail = json.loads(text).get("detail")
    except (ValueError, AttributeError):
        detail = text[:500]
    if status == 422:
        return Invalid(f"the classifier server refused the call: {detail}", field="classifier")
    return Unavailable(f"the classifier server answered {status}: {detail}")


async def _send(call: Any) -> httpx.Response:
    try:
        return await call
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"the classifier server cannot be reached ({type(exc).__name__})"
        ) from exc


@router.post(
    "",
    response_model=ClassifyOut,
    summary="Score a prompt, a response or an exchange with a classifier",
    description="Each of the classifier's restricted categories gets a score; the call is "
    "flagged when the highest reaches the threshold (the run's unless given). An input "
    "classifier reads `prompt`, an output one `response`, an exchange one both.",
)
@changes_nothing
async def classify(
    body: ClassifyRequest, request: Request, session: SessionDep, key: ClassifyKey
) -> ClassifyOut:
    run = await run_in_threadpool(classifier_run, session, key.project_id, body.classifier)
    target = run.config.get("target", "input")
    if body.target is not None and body.target != target:
        raise Invalid(
            f"classifier {run.id} is an {target} classifier, not {body.target}", field="target"
        )
    for field in NEEDS[target]:
        if getattr(body, field) is None:
            raise Invalid(f"an {target} classifier needs '{field}'", field=field)
    answer = await _send(
        client(request).post(
            "/score",
            json={
                "run_id": run.id,
                "artifact_uri": run.artifact_uri,
                "prompts": [body.prompt],
                "responses": [body.response],
            },
        )
    )
    if answer.status_code != 200:
        raise _refused(answer.status_code, answer.text)
    found = answer.json()
    scores: dict[str, float] = found["scores"][0]
    threshold = body.threshold or float(run.config.get("threshold", 0.5))
    decided = verdict(scores, threshold)
    return ClassifyOut(
        classifier=run.id, target=target, scores=scores, score=decided.score,
        category=decided.category if decided.flagged else None,
        flagged=decided.flagged, threshold=threshold, score_ms=found["score_ms"],
    )  # fmt: skip


@router.post(
    "/stream",
    response_class=StreamingResponse,  # documented as a stream; it is a DuplexResponse
    summary="Guard a response token by token; stop at the first prefix over the threshold",
    description='NDJSON in: a header line `{"classifier", "prompt", "threshold"}`, then '
    'one `{"token": "..."}` line per generated token, sent as they are generated. NDJSON '
    "out: one line per token read (`index`, `scores`, `score`, `flagged`) and a last line "
    '`{"done": true, "stopped_at", "tokens_read"}`. At the first flagged prefix the '
    "answer ends and no later token is read: stop generating.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
@changes_nothing
@streams_body
async def classify_stream(
    request: Request, session: SessionDep, settings: SettingsDep, key: ClassifyKey
) -> DuplexResponse:
    lines = duplex.lines(request.stream())
    try:
        header = StreamHeader.model_validate_json(await anext(lines))
    except StopAsyncIteration:
        raise Invalid("the stream is empty: its first line is the header", field="body") from None
    except ValueError as exc:
        raise Invalid(f"line 1 (the header): {exc}", field="body") from None
    run = await run_in_threadpool(classifier_run, session, key.project_id, header.classifier)
    if run.config.get("target", "input") == "input":
        raise Invalid(
            f"classifier {run.id} is an input classifier: it reads no response (POST /v1/classify)",
            field="classifier",
        )
    threshold = header.threshold or float(run.config.get("threshold", 0.5))
    first = {
        "run_id": run.id,
        "artifact_uri": run.artifact_uri,
        "prompt": header.prompt,
        "threshold": threshold,
        "max_tokens": settings.classifier_max_stream_tokens,
    }

    async def forward() -> AsyncIterator[bytes]:
        yield (json.dumps(first) + "\n").encode()
        async for line in lines:
            yield line

    # Full duplex (charter.duplex): each answer line reaches the caller as soon as the
    # server writes it, while the caller's later tokens are still arriving.
    url = _server_url(settings) + "/stream"
    try:
        answer = await duplex.post(
            url, forward(), headers=_server_headers(settings) | {"content-type": NDJSON},
            timeout=settings.classifier_timeout_seconds,
        )  # fmt: skip
    except duplex.Unreachable as exc:
        raise Unavailable(f"the classifier server cannot be reached ({exc})") from exc
    if answer.status != 200:
        detail = (await answer.read()).decode(errors="replace")
        raise _refused(answer.status, detail)
    return DuplexResponse(answer.body, media_type=NDJSON)
