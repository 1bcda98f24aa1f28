"""The webhooks, audit and reviews groups against a live gateway. Labels come from the
real chunk runner with the scripted engine, as the gateway's own review tests make them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from charter.client import CharterClient
from charter.db.models import Worker
from charter.db.session import session_factory
from charter.sdk import AsyncCharterClient, BadRequest, NotFound, models
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner


@pytest.fixture
def sdk(gateway: Any, admin_key: str) -> Any:
    with CharterClient(gateway.url, admin_key) as client:
        yield client


def test_webhooks_round_trip(sdk: CharterClient) -> None:
    made = sdk.webhooks.create("https://example.com/hook", ["job.completed"], "ci")
    assert isinstance(made, models.EndpointWithSecret) and made.secret
    assert [w.id for w in sdk.webhooks.list(limit=1)] == [made.id]
    assert sdk.webhooks.update(made.id, enabled=False).enabled is False
    rotated = sdk.webhooks.rotate_secret(made.id)
    assert rotated.secret and rotated.secret != made.secret
    ping = sdk.webhooks.test(made.id)
    assert isinstance(ping, models.DeliveryOut) and ping.event_type == "webhook.test"
    assert [d.id for d in sdk.webhooks.deliveries(made.id)] == [ping.id]
    assert sdk.webhooks.resend(ping.id).id == ping.id
    with pytest.raises(BadRequest) as bad:
        sdk.webhooks.create("https://example.com/hook", ["no.such.event"])
    assert bad.value.status_code == 422 and "events" in (bad.value.field or "")
    assert sdk.webhooks.delete(made.id) is None
    with pytest.raises(NotFound):
        sdk.webhooks.get(made.id)


def test_audit_pages_through_events(sdk: CharterClient) -> None:
    for i in range(3):
        sdk.batches.create([{"prompt": f"p{i}"}], name=f"b{i}")
    events = list(sdk.audit.list(route="/v1/batches", limit=1))
    assert len(events) == 3 and all(isinstance(e, models.AuditEventOut) for e in events)
    assert [e.outcome for e in events] == ["succeeded"] * 3
    assert events[0].created_at >= events[-1].created_at  # newest first
    with pytest.raises(BadRequest) as bad:
        list(sdk.audit.list(since="yesterday"))
    assert bad.value.field == "since"


def _choose_a(conversation: Any, prefix: str, choices: tuple[str, str]) -> Any:
    from charter.core.engine import ChoiceLogprobs

    return ChoiceLogprobs(a=-0.1, b=-2.5)


def test_reviews_queue_verdicts_agreement_export_import(
    sdk: CharterClient,
    gateway: Any,
    admin_key: str,
    engine: Any,
    settings: Any,
    default_document: dict[str, Any],
) -> None:
    sdk.constitutions.push(json.dumps(default_document).encode())
    pairs = [{"prompt": f"pair {i}?", "response_a": "yes", "response_b": "no"} for i in range(6)]
    batch = sdk.batches.create(pairs)
    job = sdk.jobs.submit(
        type="compare", batch_id=batch.id, constitution="default", model="m", chunk_size=3
    )
    sessions = session_factory(engine)
    with sessions() as s, s.begin():
        s.add(Worker(id="w-sdk", hostname="h", pid=1, engine="scripted", models=["m"]))
    runner = ChunkRunner(
        sessions, {"m": ScriptedEngine(model_name="m", choice_fn=_choose_a)}, settings, "w-sdk"
    )
    for chunk in range(job.chunk_count):
        runner.run_chunk(job.id, chunk)
    assert len(list(sdk.jobs.results(job.id, limit=2))) == 6

    queue = sdk.reviews.open_queue(job.id, 4, seed=7)
    assert isinstance(queue, models.QueueOut) and queue.size == 4
    items = list(sdk.reviews.items(queue.id, limit=3))  # two pages
    assert [i.label_id for i in items] == queue.items
    for n, item in enumerate(items):
        given = sdk.reviews.verdict(queue.id, item.label_id, choice="A" if n < 3 else "B")
        assert isinstance(given, models.VerdictOut)
    report = sdk.reviews.agreement(job.id)
    assert report.verdicts == 4 and report.overall.n == 4 and report.overall.agreed == 3
    assert sdk.reviews.agreement().verdicts == 4
    exported = sdk.reviews.export(job.id)
    assert isinstance(exported, str) and exported.count("\n") == 4
    imported = sdk.reviews.import_(job.id, exported.encode())
    assert imported.lines == 4 and imported.unchanged == 4

    async def in_async() -> Any:
        async with AsyncCharterClient(gateway.url, admin_key) as client:
            return [i.label_id async for i in client.reviews.items(queue.id, limit=1)]

    assert asyncio.run(in_async()) == queue.items


def test_templates_push_list_render(sdk: CharterClient) -> None:
    shipped = [t for t in sdk.templates.list() if t.built_in]
    assert shipped and all(isinstance(t, models.TemplateOut) for t in shipped)
    spec = {**sdk.templates.get(shipped[0].ref).spec, "name": "sdk-copy"}
    pushed = sdk.templates.push(spec)
    assert pushed.ref == "sdk-copy@1" and pushed.created
    assert sdk.templates.push(spec).created is False
    rendered = sdk.templates.render(
        "sdk-copy@1",
        conversation=[{"role": "user", "content": "Hi?"}],
        principle="Which is kinder?",
        response_a="Hello!",
        response_b="Go away.",
    )
    assert isinstance(rendered, models.RenderOut) and rendered.answer_prefix
    assert "Hello!" in json.dumps(rendered.messages)
