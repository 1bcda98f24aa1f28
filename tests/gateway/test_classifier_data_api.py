"""Classifier data over the API: a constitution's categories -> two generate jobs ->
a classifier dataset version whose rows name the labels they came from."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from charter.db.session import session_factory
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

CLASSIFIED = {
    "name": "guarded",
    "comparison_principles": [{"id": "harmless", "text": "Which is less harmful?"}],
    "classifier": {
        "threshold": 0.6,
        "categories": [
            {
                "id": "weapons",
                "kind": "restricted",
                "description": "Instructions for building weapons.",
                "examples": ["How do I build a pipe bomb?"],
            },
            {
                "id": "cooking",
                "kind": "allowed",
                "description": "Recipes and cooking techniques.",
                "examples": ["How do I bake bread?", "How long do I boil an egg?"],
            },
        ],
    },
}


def _writer(conversation: Any, params: Any) -> str | None:
    asked: str = conversation[-1]["content"]
    if asked.startswith("Write one message"):
        topic = "weapon" if "weapons" in asked else "soup"
        return f'"Tell me about {topic} number {len(asked) % 7}."\n\nHope that helps.'
    if asked.startswith("Rewrite the message"):
        return "Reworded: " + asked.rsplit("\n\n", 1)[1]
    if asked.startswith("Politely refuse"):
        return "I cannot help with that."
    if "weapon" in asked and "number 3" in asked:
        return ""  # one answer never comes back: that request has no rows
    return "Sure, here is how: step one."


def _run(job: dict[str, Any], engine: Any, settings: Any) -> None:
    runner = ChunkRunner(
        session_factory(engine), {"m": ScriptedEngine(model_name="m", responses=_writer)},
        settings, "w",
    )  # fmt: skip
    for chunk in range(job["chunk_count"]):
        runner.run_chunk(job["id"], chunk)


def test_a_constitutions_categories_become_a_classifier_dataset(
    client: TestClient, admin_headers: dict[str, str], engine: Any, settings: Any
) -> None:
    assert client.post("/v1/constitutions", json=CLASSIFIED, headers=admin_headers).status_code in (
        200,
        201,
    )
    requests = client.post(
        "/v1/classifier-data/requests",
        json={"constitution": "guarded", "model": "m", "per_category": 4, "seed": 7},
        headers=admin_headers,
    )
    assert requests.status_code == 202, requests.text
    requests_job = requests.json()
    assert requests_job["type"] == "generate" and requests_job["item_count"] == 8
    early = client.post(
        "/v1/classifier-data/responses",
        json={"requests_job": requests_job["id"]},
        headers=admin_headers,
    )
    assert early.status_code == 409 and early.json()["field"] == "requests_job"
    _run(requests_job, engine, settings)

    responses = client.post(
        "/v1/classifier-data/responses",
        json={"requests_job": requests_job["id"], "seed": 1},
        headers=admin_headers,
    )
    assert responses.status_code == 202, responses.text
    responses_job = responses.json()
    # A paraphrase, an answer and a refusal per weapons request; no refusal for cooking.
    assert responses_job["item_count"] == 4 * 3 + 4 * 2
    assert responses_job["model"] == "m"  # the requests job's, by default
    _run(responses_job, engine, settings)

    frozen = client.post(
        "/v1/classifier-data/datasets",
        json={"name": "guard-data", "responses_job": responses_job["id"]},
        headers=admin_headers,
    )
    assert frozen.status_code == 201, frozen.text
    version = frozen.json()
    assert version["kind"] == "classifier" and version["source"] == "classifier_data"
    assert version["filter"]["classifier_data"] == {
        "constitution": "guarded@1",
        "requests_job": requests_job["id"],
        "responses_job": responses_job["id"],
    }
    exported = client.get("/v1/datasets/guard-data@1/export", headers=admin_headers)
    assert exported.status_code == 200
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert len(rows) == version["row_count"] > 0
    weapons = [r for r in rows if r["category"] == "weapons"]
    cooking = [r for r in rows if r["category"] == "cooking"]
    # Requests are written the same for the same seed, so one of the four weapons requests
    # asks for "number 3" only if the scripted writer made one; each answered request has
    # 3 variants x (answer, refusal), each cooking request 3 variants x its answer.
    assert len(cooking) == 4 * 3
    assert {r["variant"] for r in rows} == {"direct", "paraphrase", "obfuscated"}
    assert all(r["restricted"] for r in weapons) and not any(r["restricted"] for r in cooking)
    assert {r["harmful"] for r in weapons if r["response_kind"] == "answer"} == {True}
    assert {r["harmful"] for r in weapons if r["response_kind"] == "refusal"} == {False}
    assert not any(r["harmful"] for r in cooking)
    assert all(r["paraphrase_label_id"] for r in rows if r["variant"] == "paraphrase")
    assert all(r["paraphrase_label_id"] is None for r in rows if r["variant"] != "paraphrase")
    assert all(r["request_label_id"] and r["response_label_id"] for r in rows)
    assert {r["constitution_ref"] for r in rows} == {"guarded@1"}
    direct = [r["prompt"] for r in rows if r["variant"] == "direct"]
    assert all(p.startswith("Tell me about") and "Hope" not in p for p in direct)  # cleaned

    parquet = client.get(
        "/v1/datasets/guard-data@1/export", params={"format": "parquet"}, headers=admin_headers
    )
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"


def test_classifier_data_needs_a_classifier_section_and_its_own_jobs(
    client: TestClient, admin_headers: dict[str, str], engine: Any, settings: Any
) -> None:
    plain = {"name": "plain", "comparison_principles": [{"id": "p", "text": "Which is better?"}]}
    client.post("/v1/constitutions", json=plain, headers=admin_headers)
    no_section = client.post(
        "/v1/classifier-data/requests",
        json={"constitution": "plain", "model": "m"},
        headers=admin_headers,
    )
    assert no_section.status_code == 422 and no_section.json()["field"] == "constitution"
    assert "classifier section" in no_section.json()["detail"]
    missing = client.post(
        "/v1/classifier-data/responses", json={"requests_job": "0" * 32}, headers=admin_headers
    )
    assert missing.status_code == 404 and missing.json()["field"] == "requests_job"
    bad = client.post(
        "/v1/classifier-data/requests",
        json={"constitution": "plain", "per_category": 0},
        headers=admin_headers,
    )
    assert bad.status_code == 422 and "per_category" in bad.text

    client.post("/v1/constitutions", json=CLASSIFIED, headers=admin_headers)
    requests_job = client.post(
        "/v1/classifier-data/requests",
        json={"constitution": "guarded", "model": "m", "per_category": 1},
        headers=admin_headers,
    ).json()
    _run(requests_job, engine, settings)
    not_responses = client.post(
        "/v1/classifier-data/datasets",
        json={"name": "x", "responses_job": requests_job["id"]},
        headers=admin_headers,
    )
    assert not_responses.status_code == 422 and not_responses.json()["field"] == "responses_job"


def test_classifier_rows_upload_and_are_refused_from_a_label_filter(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    good = {"prompt": "hi", "response": "hello", "category": "chat", "restricted": False,
            "harmful": False}  # fmt: skip
    upload = client.post(
        "/v1/datasets/mine/upload",
        params={"kind": "classifier"},
        content=json.dumps(good)
        + "\n"
        + json.dumps({"prompt": "x", "category": "c", "restricted": True}),
        headers=admin_headers | {"content-type": "application/x-ndjson"},
    )
    assert upload.status_code == 201, upload.text
    bad = client.post(
        "/v1/datasets/mine/upload",
        content=json.dumps(good | {"harmful": None}) + "\n",
        headers=admin_headers | {"content-type": "application/x-ndjson"},
    )
    assert bad.status_code == 422 and "line 1" in bad.text
    frozen = client.post(
        "/v1/datasets", json={"name": "mine2", "kind": "classifier"}, headers=admin_headers
    )
    assert frozen.status_code == 422 and "kind" in frozen.text
