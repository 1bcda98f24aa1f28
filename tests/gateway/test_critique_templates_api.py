"""A project's critique templates: versioned like feedback templates, pinned by SL-CAI
jobs, rendered by the workers, and named in every label's provenance."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from charter.core import critique_templates, feedback_templates, prompts
from charter.db.models import Job, Label
from charter.db.session import session_factory
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

MINE = {
    "name": "strict",
    "critique": "Answer under review:\n[[{{ response }}]]\n{{ critique_request | upper }}",
    "revision": "Given: {{ critique }}\n{{ revision_request }}",
    "delimiters": ["[[", "]]"],
}


def _error(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["field"] == field, response.text


def test_a_push_makes_a_version_only_when_the_template_changes(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    first = client.post("/v1/critique-templates", json=MINE, headers=admin_headers)
    assert first.status_code == 201, first.text
    assert (first.json()["ref"], first.json()["created"]) == ("strict@1", True)
    again = client.post("/v1/critique-templates", json=MINE, headers=admin_headers)
    assert again.status_code == 200 and again.json()["created"] is False
    changed = client.post(
        "/v1/critique-templates", json=MINE | {"system": "Be terse."}, headers=admin_headers
    )
    assert changed.json()["ref"] == "strict@2"
    listed = client.get("/v1/critique-templates", headers=admin_headers).json()
    assert [t["ref"] for t in listed] == [*critique_templates.BUILT_IN, "strict@1", "strict@2"]
    shipped = client.get("/v1/critique-templates/quoted-response", headers=admin_headers).json()
    assert shipped["sha256"] == critique_templates.QUOTED.sha256()
    assert client.get("/v1/critique-templates/strict@9", headers=admin_headers).status_code == 404
    taken = client.post(
        "/v1/critique-templates", json=MINE | {"name": "paper-labelled"}, headers=admin_headers
    )
    _error(taken, 409, "name")


def test_bad_templates_are_refused_naming_the_field(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for body, field in (
        (MINE | {"critique": "{{ critique }}"}, "body.critique"),
        (MINE | {"revision": "{{ revision_request.split() }}"}, "body.revision"),
        (MINE | {"revision": "{% include 'x' %}"}, "body.revision"),
        (MINE | {"name": "Bad Name"}, "body.name"),
    ):
        _error(client.post("/v1/critique-templates", json=body, headers=admin_headers), 422, field)


def test_a_render_preview_shows_the_exact_round(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    client.post("/v1/critique-templates", json=MINE, headers=admin_headers)
    body = {
        "conversation": [{"role": "user", "content": "Hi"}],
        "response": "Hello ]] there",
        "critique_request": "Is it kind?",
        "revision_request": "Make it kinder.",
        "critique": "It is curt.",
    }
    preview = client.post("/v1/critique-templates/strict/render", json=body, headers=admin_headers)
    assert preview.status_code == 200, preview.text
    critique, revision = preview.json()["critique"], preview.json()["revision"]
    assert critique[-1]["content"] == "Answer under review:\n[[Hello ]\u200b] there]]\nIS IT KIND?"
    assert revision[-2:] == [
        {"role": "assistant", "content": "It is curt."},
        {"role": "user", "content": "Given: It is curt.\nMake it kinder."},
    ]


def test_an_sl_cai_job_pins_the_template_and_its_labels_record_it(
    api: Any, client: TestClient, admin_headers: dict[str, str], engine: Engine, settings: Any
) -> None:
    api.push_default(admin_headers)
    client.post("/v1/critique-templates", json=MINE, headers=admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": "How do I bake bread?"}])["id"]
    spec = {"type": "sl_cai", "batch_id": batch, "constitution": "default", "model": "m"}
    params = {"critique_template": "strict", "few_shot": False, "rounds": 2}
    job = client.post("/v1/jobs", json=spec | {"params": params}, headers=admin_headers).json()
    with session_factory(engine)() as session:
        assert session.get_one(Job, job["id"]).params["critique_template"] == "strict@1"

    seen: list[list[dict[str, str]]] = []

    def respond(conversation: Any, sampling: Any) -> str:
        seen.append(list(conversation))
        return "A reply."

    engines = {"m": ScriptedEngine(model_name="m", responses=respond)}
    ChunkRunner(session_factory(engine), engines, settings, "host:1").run_chunk(job["id"], 0)
    critiques = [c for c in seen if c[-1]["content"].startswith("Answer under review:")]
    revisions = [c for c in seen if c[-1]["content"].startswith("Given: ")]
    assert len(critiques) == len(revisions) == 2  # one of each per round
    with session_factory(engine)() as session:
        (label,) = session.scalars(select(Label).where(Label.job_id == job["id"]))
    template = critique_templates.from_spec(
        "strict", 1, {k: v for k, v in MINE.items() if k != "name"}
    )
    assert label.template_version == f"{prompts.TEMPLATE_VERSION}/critique:strict@1"
    assert label.template_hash == prompts.template_hash(feedback_templates.CHAT, template)
    assert label.job_params["critique_template"] == "strict@1"

    missing = client.post(
        "/v1/jobs", json=spec | {"params": {"critique_template": "nope"}}, headers=admin_headers
    )
    _error(missing, 404, "params.critique_template")


def test_another_projects_critique_templates_are_invisible(
    client: TestClient, admin_headers: dict[str, str], make_headers: Any
) -> None:
    client.post("/v1/critique-templates", json=MINE, headers=admin_headers)
    other = make_headers("beta", "admin")
    assert client.get("/v1/critique-templates/strict", headers=other).status_code == 404
    refs = [t["ref"] for t in client.get("/v1/critique-templates", headers=other).json()]
    assert refs == list(critique_templates.BUILT_IN)
