"""Human review over the API, on SQLite and PostgreSQL: queues of real labels (made by
running jobs with the scripted engine), verdicts stored apart from the labels,
agreement numbers computed by hand, dataset filters, export -> import."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select

from charter.core.engine import ChoiceLogprobs, Conversation
from charter.db.models import (
    ApiKey,
    Label,
    ReviewVerdict,
    WebhookDelivery,
    WebhookEndpoint,
    Worker,
)
from charter.db.session import session_factory
from tests.conftest import IssuedKey
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

Z = 1.959963984540054
# The judge's preference for A in pair i; it adds 0.05 to whichever response is shown
# first, so the two orders disagree exactly where |q - 0.5| < 0.05 (pairs 4 and 5).
Q = [0.1, 0.2, 0.3, 0.4, 0.48, 0.52, 0.6, 0.7, 0.8, 0.9]
BIAS = 0.05
DISAGREE = {4, 5}
NDJSON = {"Content-Type": "application/x-ndjson"}


def _a(i: int) -> str:
    return f"@a{i}@ answer A"


def _b(i: int) -> str:
    return f"@b{i}@ answer B"


def judge(conversation: Conversation, prefix: str, choices: tuple[str, str]) -> ChoiceLogprobs:
    text = conversation[-1]["content"]
    for i, q in enumerate(Q):
        at_a, at_b = text.find(f"@a{i}@"), text.find(f"@b{i}@")
        if at_a >= 0 and at_b >= 0:
            p_first = q + BIAS if at_a < at_b else (1 - q) + BIAS
            return ChoiceLogprobs(a=math.log(0.9 * p_first), b=math.log(0.9 * (1 - p_first)))
    raise AssertionError("no known pair in the feedback prompt")


def _wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


class Setup:
    def __init__(
        self,
        client: TestClient,
        api: Any,
        issue: Callable[..., IssuedKey],
        engine: Engine,
        settings: Any,
    ) -> None:
        self.client = client
        self.admin = issue("alpha", ("admin",))
        self.headers = self.admin.headers
        self.sessions = session_factory(engine)
        with self.sessions() as s, s.begin():
            if s.get(Worker, "w-review") is None:
                s.add(Worker(id="w-review", hostname="h", pid=1, engine="scripted", models=["m"]))
        self.runner = ChunkRunner(
            self.sessions,
            {"m": ScriptedEngine(model_name="m", choice_fn=judge)},
            settings,
            "w-review",
        )
        self.api = api
        api.push_default(self.headers)
        pairs = [
            {"prompt": f"pair {i}?", "response_a": _a(i), "response_b": _b(i)} for i in range(10)
        ]
        self.compare = self.run(pairs, type="compare", params={"swap": True})
        prompts = [{"prompt": f"question {i}?"} for i in range(6)]
        self.sl = self.run(prompts, type="sl_cai", params={"rounds": 1})

    def run(self, rows: list[dict[str, Any]], **body: Any) -> str:
        batch = self.api.create_batch(self.headers, rows)
        job = self.api.submit(self.headers, batch_id=batch["id"], model="m", chunk_size=4, **body)
        for chunk in range(job["chunk_count"]):
            self.runner.run_chunk(job["id"], chunk)
        return str(job["id"])

    def labels(self, job_id: str) -> dict[int, Label]:
        with self.sessions() as s:
            rows = s.scalars(select(Label).where(Label.job_id == job_id).order_by(Label.id))
            return {r.id: r for r in rows}

    def queue(
        self, job_id: str, headers: dict[str, str] | None = None, **body: Any
    ) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/jobs/{job_id}/reviews/queues", json=body, headers=headers or self.headers
        )
        assert response.status_code == 201, response.text
        return response.json()

    def verdict(
        self, queue_id: str, label_id: int, headers: dict[str, str] | None = None, **body: Any
    ) -> Any:
        return self.client.post(
            f"/v1/reviews/queues/{queue_id}/items/{label_id}/verdicts",
            json=body,
            headers=headers or self.headers,
        )

    def items(
        self, queue_id: str, headers: dict[str, str] | None = None, **params: Any
    ) -> list[Any]:
        out: list[Any] = []
        cursor = None
        while True:
            query = params | ({"cursor": cursor} if cursor else {})
            response = self.client.get(
                f"/v1/reviews/queues/{queue_id}/items",
                params=query,
                headers=headers or self.headers,
            )
            assert response.status_code == 200, response.text
            page = response.json()
            out += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return out


@pytest.fixture
def setup(
    client: TestClient, api: Any, issue: Callable[..., IssuedKey], engine: Engine, settings: Any
) -> Setup:
    return Setup(client, api, issue, engine, settings)


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    if field is not None:
        assert body.get("field") == field, body
    return body


def _ai_choice(label: Label) -> str:
    assert label.p_a is not None
    return "A" if label.p_a >= 0.5 else "B"


def _other(side: str) -> str:
    return "B" if side == "A" else "A"


# --------------------------------------------------------------------------- scopes


def test_review_scope_gates_writes(setup: Setup, issue: Callable[..., IssuedKey]) -> None:
    client = setup.client
    reviewer = issue("alpha", ("review",), name="reviewer")
    queue = setup.queue(setup.compare, reviewer.headers, size=3, seed=1)
    label_id = queue["items"][0]
    assert setup.verdict(queue["id"], label_id, reviewer.headers, choice="A").status_code == 201
    # review implies read.
    assert (
        client.get(f"/v1/reviews/queues/{queue['id']}", headers=reviewer.headers).status_code == 200
    )
    assert client.get(f"/v1/jobs/{setup.compare}", headers=reviewer.headers).status_code == 200
    for scope in ("read", "submit", "train"):
        other = issue("alpha", (scope,)).headers
        body = {"size": 2}
        _error(
            client.post(f"/v1/jobs/{setup.compare}/reviews/queues", json=body, headers=other), 403
        )
        _error(setup.verdict(queue["id"], label_id, other, choice="B"), 403)
        imported = client.post(
            f"/v1/jobs/{setup.compare}/reviews/import", content=b"{}\n", headers=other | NDJSON
        )
        _error(imported, 403)
    reader = issue("alpha", ("read",)).headers
    for path in (
        f"/v1/reviews/queues/{queue['id']}",
        f"/v1/reviews/queues/{queue['id']}/items",
        f"/v1/jobs/{setup.compare}/reviews/agreement",
        f"/v1/jobs/{setup.compare}/reviews/export",
        "/v1/reviews/agreement",
    ):
        assert client.get(path, headers=reader).status_code == 200, path
    # Another project sees nothing of it.
    beta = issue("beta", ("admin",)).headers
    _error(client.get(f"/v1/reviews/queues/{queue['id']}", headers=beta), 404, "queue_id")
    _error(setup.verdict(queue["id"], label_id, beta, choice="A"), 404, "queue_id")
    _error(client.get(f"/v1/jobs/{setup.compare}/reviews/agreement", headers=beta), 404, "job_id")
    assert client.get("/v1/reviews/agreement", headers=beta).json()["verdicts"] == 0


# --------------------------------------------------------------------------- queues


def test_queues_sample_reproducibly_and_by_strata(setup: Setup) -> None:
    labels = setup.labels(setup.compare)
    assert len(labels) == 10
    first = setup.queue(setup.compare, size=4, seed=11)
    again = setup.queue(setup.compare, size=4, seed=11)
    assert first["items"] == again["items"] and first["id"] != again["id"]
    assert len(set(first["items"])) == 4 and set(first["items"]) <= set(labels)
    assert (first["strategy"], first["size"], first["requested_size"]) == ("random", 4, 4)
    assert setup.queue(setup.compare, size=50)["size"] == 10  # capped by the labels there are

    swap = setup.queue(setup.compare, size=4, strategy="stratified", by="swap_disagreement")
    assert swap["strata"] == {"agree": 3, "disagree": 1}
    for label_id in swap["items"]:
        assert labels[label_id].swap_disagreement is not None
    by_conf = setup.queue(setup.compare, size=5, strategy="stratified", by="confidence", seed=2)
    # |P(A) - 0.5| of the ten labels: 0.4, 0.3, 0.2, 0.1, 0.02, 0.02, 0.1, 0.2, 0.3, 0.4 ->
    # bins 0.0-0.1: 2, 0.1-0.2: 2, 0.2-0.3: 2, 0.3-0.4: 2, 0.4-0.5: 2; one each of five.
    assert by_conf["strata"] == {
        "0.0-0.1": 1,
        "0.1-0.2": 1,
        "0.2-0.3": 1,
        "0.3-0.4": 1,
        "0.4-0.5": 1,
    }

    sl_labels = setup.labels(setup.sl)
    by_principle = setup.queue(setup.sl, size=6, strategy="stratified", by="principle")
    expected: dict[str, int] = {}
    for label in sl_labels.values():
        key = "+".join(label.principle_ids)
        expected[key] = expected.get(key, 0) + 1
    assert by_principle["strata"] == expected


def test_items_show_what_was_labelled_and_who_reviewed(
    setup: Setup, issue: Callable[..., IssuedKey]
) -> None:
    labels = setup.labels(setup.compare)
    queue = setup.queue(setup.compare, size=10)
    items = setup.items(queue["id"], limit=3)
    assert [i["label_id"] for i in items] == queue["items"]
    assert [i["position"] for i in items] == list(range(10))
    item = items[0]
    label = labels[item["label_id"]]
    assert item["kind"] == "comparison"
    assert (item["response_a"], item["response_b"]) == (label.response_a, label.response_b)
    assert item["conversation"] == label.conversation
    assert item["principle_ids"] == label.principle_ids
    assert item["principles"][0]["id"] == label.principle_ids[0] and item["principles"][0]["text"]
    assert item["ai_label"]["p_a"] == pytest.approx(label.p_a)
    assert item["ai_label"]["choice"] == _ai_choice(label)
    assert item["ai_label"]["swap_disagreement"] == label.swap_disagreement
    assert not any(i["reviewed_by_me"] for i in items)

    other = issue("alpha", ("review",)).headers
    assert (
        setup.verdict(queue["id"], item["label_id"], choice="A", reviewer="ann").status_code == 201
    )
    mine = setup.items(queue["id"], reviewer="ann")
    assert [i["reviewed_by_me"] for i in mine] == [True] + [False] * 9
    assert mine[0]["my_verdict"]["choice"] == "A" and mine[0]["verdicts"] == 1
    # Without the name, or as another key, the caller has not reviewed it.
    assert not setup.items(queue["id"])[0]["reviewed_by_me"]
    theirs = setup.items(queue["id"], other)
    assert not theirs[0]["reviewed_by_me"] and theirs[0]["verdicts"] == 1

    sl_queue = setup.queue(setup.sl, size=2)
    sl_item = setup.items(sl_queue["id"])[0]
    sl_label = setup.labels(setup.sl)[sl_item["label_id"]]
    assert sl_item["kind"] == "revision"
    assert sl_item["response"] == sl_label.response and sl_item["completion"] == sl_label.completion
    assert sl_item["rounds"] == sl_label.rounds and sl_item["rounds"][0]["critique"]
    # The critique principle as written (default.yaml also has a comparison principle of
    # the same id as one critique principle: the item names the one the job drew from).
    for each in setup.items(setup.queue(setup.sl, size=6)["id"]):
        assert [p["id"] for p in each["principles"]] == each["principle_ids"]
        assert all(p["critique"] and p["revision"] for p in each["principles"]), each
    for each in items:
        assert all(p["text"] and "critique" not in p for p in each["principles"]), each


def test_bad_input_names_the_field(setup: Setup) -> None:
    client = setup.client
    url = f"/v1/jobs/{setup.compare}/reviews/queues"
    for body, field in [
        ({"size": 0}, "body.size"),
        ({"size": 1001}, "body.size"),
        ({}, "body.size"),
        ({"size": 2, "strategy": "clever"}, "body.strategy"),
        ({"size": 2, "by": "mood"}, "body.by"),
        ({"size": 2, "seed": -1}, "body.seed"),
        ({"size": 2, "extra": 1}, "body.extra"),
        ({"size": 2, "strategy": "stratified"}, "body"),
    ]:
        _error(client.post(url, json=body, headers=setup.headers), 422, field)
    _error(
        client.post("/v1/jobs/nope/reviews/queues", json={"size": 2}, headers=setup.headers),
        404,
        "job_id",
    )
    sl_url = f"/v1/jobs/{setup.sl}/reviews/queues"
    body = {"size": 2, "strategy": "stratified", "by": "confidence"}
    _error(client.post(sl_url, json=body, headers=setup.headers), 422, "by")
    generated = setup.run([{"prompt": "question?"}], type="generate")
    [label_id] = setup.labels(generated)
    for url, payload in (
        (f"/v1/jobs/{generated}/reviews/queues", {"json": {"size": 1}}),
        (
            f"/v1/jobs/{generated}/reviews/import",
            {
                "content": json.dumps(
                    {
                        "label_id": label_id,
                        "reviewer": {"key_id": "0" * 32, "key_prefix": "chk_x"},
                        "verdict": {"satisfies": True},
                    }
                ).encode(),
                "headers": setup.headers | NDJSON,
            },
        ),
    ):
        payload.setdefault("headers", setup.headers)
        body_ = _error(client.post(url, **payload), 422, "job_id")
        assert "no AI verdict" in body_["detail"]

    queue = setup.queue(setup.compare, size=2)
    label_id = queue["items"][0]
    _error(setup.verdict(queue["id"], label_id, satisfies=True), 422, "body.choice")
    _error(setup.verdict(queue["id"], label_id), 422, "body")
    _error(setup.verdict(queue["id"], label_id, choice="A", satisfies=True), 422, "body")
    _error(setup.verdict(queue["id"], label_id, choice="C"), 422, "body.choice")
    _error(setup.verdict(queue["id"], label_id, choice="A", note="n" * 2001), 422, "body.note")
    _error(
        setup.verdict(queue["id"], label_id, choice="A", reviewer="r" * 129), 422, "body.reviewer"
    )
    outside = next(i for i in setup.labels(setup.compare) if i not in queue["items"])
    _error(setup.verdict(queue["id"], outside, choice="A"), 404, "label_id")
    _error(setup.verdict("0" * 32, label_id, choice="A"), 404, "queue_id")
    _error(client.get(f"/v1/reviews/queues/{'0' * 32}", headers=setup.headers), 404, "queue_id")
    sl_queue = setup.queue(setup.sl, size=1)
    _error(setup.verdict(sl_queue["id"], sl_queue["items"][0], choice="A"), 422, "body.satisfies")
    with setup.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ReviewVerdict)) == 0


# --------------------------------------------------------------------------- verdicts


def test_verdicts_are_stored_apart_and_replaced_per_reviewer(
    setup: Setup, issue: Callable[..., IssuedKey]
) -> None:
    before = {
        i: {c.key: getattr(r, c.key) for c in Label.__table__.columns}
        for i, r in setup.labels(setup.compare).items()
    }
    queue = setup.queue(setup.compare, size=2, seed=3)
    label_id = queue["items"][0]
    bob = issue("alpha", ("review",), name="bob")
    first = setup.verdict(queue["id"], label_id, bob.headers, choice="tie", note="hard to say")
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["revision"], body["replaced"], body["history"]) == (1, False, [])
    assert body["api_key_id"] == bob.id and body["key_prefix"] == bob.key.split("_")[1]
    assert body["agrees"] is False  # a tie never matches a label that picked a side
    second = setup.verdict(queue["id"], label_id, bob.headers, choice="A")
    assert second.status_code == 200, second.text
    body = second.json()
    assert (body["revision"], body["replaced"], body["choice"], body["note"]) == (
        2,
        True,
        "A",
        None,
    )
    assert [h["choice"] for h in body["history"]] == ["tie"]
    assert body["history"][0]["note"] == "hard to say"
    # Same key, another name; and another key: separate verdicts.
    assert (
        setup.verdict(queue["id"], label_id, bob.headers, choice="B", reviewer="carol").status_code
        == 201
    )
    assert setup.verdict(queue["id"], label_id, choice="B").status_code == 201
    with setup.sessions() as s:
        rows = list(s.scalars(select(ReviewVerdict).where(ReviewVerdict.label_id == label_id)))
        assert sorted((r.api_key_id == bob.id, r.reviewer, r.choice) for r in rows) == [
            (False, "", "B"),
            (True, "", "A"),
            (True, "carol", "B"),
        ]
    after = {
        i: {c.key: getattr(r, c.key) for c in Label.__table__.columns}
        for i, r in setup.labels(setup.compare).items()
    }
    assert after == before  # the AI labels are never touched


def test_target_reached_is_emitted_once(setup: Setup) -> None:
    with setup.sessions() as s, s.begin():
        s.add(
            WebhookEndpoint(
                project_id=setup.admin.project_id,
                url="https://hooks.example.com/review",
                event_types=["review.target_reached"],
                secret="whsec_" + "A" * 32,
            )
        )
    queue = setup.queue(setup.compare, size=3, seed=4)
    for label_id in queue["items"][:2]:
        assert setup.verdict(queue["id"], label_id, choice="A").status_code == 201
    got = setup.client.get(f"/v1/reviews/queues/{queue['id']}", headers=setup.headers).json()
    assert (got["reviewed"], got["target_reached_at"]) == (2, None)

    def deliveries() -> list[WebhookDelivery]:
        with setup.sessions() as s:
            query = select(WebhookDelivery).where(
                WebhookDelivery.event_type == "review.target_reached"
            )
            return list(s.scalars(query))

    assert deliveries() == []
    assert setup.verdict(queue["id"], queue["items"][2], choice="B").status_code == 201
    got = setup.client.get(f"/v1/reviews/queues/{queue['id']}", headers=setup.headers).json()
    assert got["reviewed"] == 3 and got["target_reached_at"] is not None
    sent = deliveries()
    assert len(sent) == 1
    data = sent[0].payload["data"]
    assert (data["queue_id"], data["job_id"], data["size"]) == (queue["id"], setup.compare, 3)
    assert setup.verdict(queue["id"], queue["items"][2], choice="A").status_code == 200
    assert len(deliveries()) == 1  # once per queue


# --------------------------------------------------------------------------- agreement


def test_agreement_numbers(setup: Setup, issue: Callable[..., IssuedKey]) -> None:
    labels = setup.labels(setup.compare)
    queue = setup.queue(setup.compare, size=10)
    ids = queue["items"]
    r2 = issue("alpha", ("review",)).headers
    # Reviewer 1 agrees with the AI on the first 8 labels, picks the other side on 2;
    # reviewer 2 agrees on the first 6 labels, says tie on the rest.
    answers1 = {
        i: _ai_choice(labels[i]) if n < 8 else _other(_ai_choice(labels[i]))
        for n, i in enumerate(ids)
    }
    answers2 = {i: _ai_choice(labels[i]) if n < 6 else "tie" for n, i in enumerate(ids)}
    for i in ids:
        assert setup.verdict(queue["id"], i, choice=answers1[i]).status_code == 201
        assert setup.verdict(queue["id"], i, r2, choice=answers2[i]).status_code == 201
    response = setup.client.get(
        f"/v1/jobs/{setup.compare}/reviews/agreement", headers=setup.headers
    )
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["labels"], got["reviewers"], got["verdicts"]) == (10, 2, 20)
    overall = got["overall"]
    assert (overall["agreed"], overall["n"], overall["rate"]) == (14, 20, 0.7)
    assert (overall["low"], overall["high"]) == pytest.approx(_wilson(14, 20))
    assert got["by_model"]["m"]["n"] == 20
    assert sum(r["n"] for r in got["by_principle"].values()) == 20
    for principle, r in got["by_principle"].items():
        mine = [i for i in ids if "+".join(labels[i].principle_ids) == principle]
        agreed = sum(answers1[i] == _ai_choice(labels[i]) for i in mine) + sum(
            answers2[i] == _ai_choice(labels[i]) for i in mine
        )
        assert (r["agreed"], r["n"]) == (agreed, 2 * len(mine))
    # Kappa by hand over categories A, B, tie.
    first = [answers1[i] for i in ids]
    second = [answers2[i] for i in ids]
    p_o = sum(a == b for a, b in zip(first, second, strict=True)) / 10
    p_e = sum(first.count(c) * second.count(c) for c in ("A", "B", "tie")) / 100
    assert got["kappa"]["mean"] == pytest.approx((p_o - p_e) / (1 - p_e))
    assert (got["kappa"]["pairs"], got["kappa"]["items"]) == (1, 10)
    # Calibration: by max(P(A), 1 - P(A)) in bins of 0.1.
    for b in got["calibration"]:
        inside = [
            i
            for i in ids
            if b["low"] <= max(labels[i].p_a or 0, 1 - (labels[i].p_a or 0)) < b["high"]
            or (b["high"] == 1.0 and max(labels[i].p_a or 0, 1 - (labels[i].p_a or 0)) == 1.0)
        ]
        agreed = sum(answers1[i] == _ai_choice(labels[i]) for i in inside) + sum(
            answers2[i] == _ai_choice(labels[i]) for i in inside
        )
        assert (b["rate"]["agreed"], b["rate"]["n"]) == (agreed, 2 * len(inside))
    # Project-wide, per model.
    by_model = setup.client.get(
        "/v1/reviews/agreement", params={"model": "m"}, headers=setup.headers
    ).json()
    assert by_model["overall"] == overall and by_model["model"] == "m"
    none = setup.client.get(
        "/v1/reviews/agreement", params={"model": "x"}, headers=setup.headers
    ).json()
    assert none["overall"]["n"] == 0 and none["overall"]["rate"] is None


# --------------------------------------------------------------------------- datasets


def _create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/datasets", json=body, headers=headers)
    assert response.status_code == 202, response.text
    ref = response.json()["ref"]
    deadline = time.monotonic() + 60
    while True:
        version = client.get(f"/v1/datasets/{ref}", headers=headers).json()
        if version["state"] != "freezing":
            assert version["state"] == "ready", version
            return version
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _rows(client: TestClient, headers: dict[str, str], ref: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/datasets/{ref}/export", headers=headers)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.content.splitlines()]


def test_dataset_review_filters(setup: Setup, issue: Callable[..., IssuedKey]) -> None:
    client, headers = setup.client, setup.headers
    labels = setup.labels(setup.compare)
    queue = setup.queue(setup.compare, size=10)
    ids = queue["items"]
    r2 = issue("alpha", ("review",)).headers
    agree, overrule, split, tie = ids[0], ids[1], ids[2], ids[3]
    plan = {
        agree: [_ai_choice(labels[agree]), _ai_choice(labels[agree])],
        overrule: [_other(_ai_choice(labels[overrule]))] * 2,
        split: [_ai_choice(labels[split]), _other(_ai_choice(labels[split]))],
        tie: ["tie"],
    }
    for label_id, choices in plan.items():
        for headers_, choice in zip((headers, r2), choices, strict=False):
            assert setup.verdict(queue["id"], label_id, headers_, choice=choice).status_code == 201
    job = {"job_ids": [setup.compare]}
    reviewed = _create(
        client, headers, name="reviewed", kind="preference", filter=job | {"review": "reviewed"}
    )
    assert reviewed["filter"]["review"] == "reviewed"
    assert sorted(r["label_id"] for r in _rows(client, headers, reviewed["ref"])) == sorted(plan)
    agreed = _create(
        client, headers, name="agreed", kind="preference", filter=job | {"review": "agreed"}
    )
    assert [r["label_id"] for r in _rows(client, headers, agreed["ref"])] == [agree]
    human = _create(
        client, headers, name="human", kind="preference", filter=job | {"review": "human_verdicts"}
    )
    assert human["filter"]["review"] == "human_verdicts" and human["row_count"] == 2
    rows = _rows(client, headers, human["ref"])
    assert len(rows) == 2
    for row, label_id in zip(rows, sorted([agree, overrule]), strict=True):
        label = labels[label_id]
        side = plan[label_id][0]
        chosen = label.response_a if side == "A" else label.response_b
        rejected = label.response_b if side == "A" else label.response_a
        assert row["chosen"] == [{"role": "assistant", "content": chosen}]
        assert row["rejected"] == [{"role": "assistant", "content": rejected}]
        assert row["chosen_probability"] == 1.0 and row["prompt"] == label.conversation
    # The overruled label's chosen side is the humans', not the AI's.
    overruled = labels[overrule]
    ai_chosen = overruled.response_a if _ai_choice(overruled) == "A" else overruled.response_b
    assert all(
        r["rejected"][0]["content"] != ai_chosen
        for r in rows
        if r["chosen"][0]["content"] == ai_chosen
    )

    # SFT: revisions the humans say satisfy the principle.
    sl_queue = setup.queue(setup.sl, size=3)
    good, bad, _ = sl_queue["items"]
    assert setup.verdict(sl_queue["id"], good, satisfies=True).status_code == 201
    assert setup.verdict(sl_queue["id"], bad, satisfies=False).status_code == 201
    sl_job = {"job_ids": [setup.sl]}
    for option, expected in (
        ("reviewed", [good, bad]),
        ("agreed", [good]),
        ("human_verdicts", [good]),
    ):
        version = _create(
            client, headers, name=f"sl-{option}", kind="sft", filter=sl_job | {"review": option}
        )
        got = [r["label_id"] for r in _rows(client, headers, version["ref"])]
        assert got == sorted(expected), option
    _error(
        client.post(
            "/v1/datasets",
            json={"name": "x", "kind": "sft", "filter": {"review": "everything"}},
            headers=headers,
        ),
        422,
        "body.filter.review",
    )
    nothing = {
        "name": "none",
        "kind": "sft",
        "filter": {"job_ids": [setup.compare], "review": "reviewed"},
    }
    _error(client.post("/v1/datasets", json=nothing, headers=headers), 422, "filter")


# --------------------------------------------------------------------------- export, import


def test_export_import_round_trip(setup: Setup, issue: Callable[..., IssuedKey]) -> None:
    client, headers = setup.client, setup.headers
    labels = setup.labels(setup.compare)
    queue = setup.queue(setup.compare, size=4, seed=9)
    r2 = issue("alpha", ("review",), name="r2")
    for n, label_id in enumerate(queue["items"]):
        assert setup.verdict(queue["id"], label_id, choice="A", note=f"n{n}").status_code == 201
        assert (
            setup.verdict(queue["id"], label_id, r2.headers, choice="B", reviewer="dee").status_code
            == 201
        )
    url = f"/v1/jobs/{setup.compare}/reviews/export"
    response = client.get(url, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/x-ndjson"
    )
    lines = [json.loads(line) for line in response.content.splitlines()]
    assert len(lines) == 8
    first = lines[0]
    label = labels[first["label_id"]]
    assert first["prompt"] == label.conversation and first["response_a"] == label.response_a
    assert first["principle_ids"] == label.principle_ids and first["ai_label"][
        "p_a"
    ] == pytest.approx(label.p_a)
    assert first["verdict"] == {"choice": "A", "satisfies": None, "note": "n0"}
    assert first["reviewer"]["key_prefix"] and first["created_at"]
    assert {(line["reviewer"]["key_id"], line["reviewer"]["name"]) for line in lines} == {
        (setup.admin.id, ""),
        (r2.id, "dee"),
    }
    imports = f"/v1/jobs/{setup.compare}/reviews/import"
    # The same lines again change nothing.
    again = client.post(imports, content=response.content, headers=headers | NDJSON)
    assert again.status_code == 200, again.text
    assert again.json() == {"lines": 8, "created": 0, "updated": 0, "unchanged": 8}
    # Into an empty review table: the same verdicts come back.
    with setup.sessions() as s, s.begin():
        s.execute(delete(ReviewVerdict))
    restored = client.post(imports, content=response.content, headers=headers | NDJSON)
    assert restored.json() == {"lines": 8, "created": 8, "updated": 0, "unchanged": 0}
    back = [json.loads(line) for line in client.get(url, headers=headers).content.splitlines()]
    keep = ("label_id", "verdict", "reviewer", "agrees", "ai_label", "prompt", "created_at")
    assert [{k: b[k] for k in keep} for b in back] == [{k: x[k] for k in keep} for x in lines]

    # All or nothing: a changed line and a bad one apply nothing; the error names the line.
    changed = dict(lines[0], verdict={"choice": "tie", "satisfies": None, "note": None})
    bad = dict(lines[1], verdict={"choice": "maybe"})
    body = "\n".join(json.dumps(x) for x in (changed, bad)).encode()
    error = _error(client.post(imports, content=body, headers=headers | NDJSON), 422, "line 2")
    assert "verdict.choice" in error["detail"]
    wrong_label = dict(lines[1], label_id=max(setup.labels(setup.sl)))
    body = (json.dumps(changed) + "\n\n" + json.dumps(wrong_label) + "\n").encode()
    _error(client.post(imports, content=body, headers=headers | NDJSON), 422, "line 3.label_id")
    twice = (json.dumps(changed) + "\n" + json.dumps(changed) + "\n").encode()
    _error(client.post(imports, content=twice, headers=headers | NDJSON), 422, "line 2.reviewer")
    no_reviewer = {k: v for k, v in lines[1].items() if k != "reviewer"}
    _error(
        client.post(imports, content=json.dumps(no_reviewer).encode(), headers=headers | NDJSON),
        422,
        "line 1",
    )
    satisfies = dict(lines[1], verdict={"satisfies": True})
    _error(
        client.post(imports, content=json.dumps(satisfies).encode(), headers=headers | NDJSON),
        422,
        "line 1.verdict.choice",
    )
    unchanged = [json.loads(line) for line in client.get(url, headers=headers).content.splitlines()]
    assert [u["verdict"] for u in unchanged] == [b["verdict"] for b in back]
    # A changed line alone replaces that reviewer's verdict, keeping the old one.
    ok = client.post(imports, content=json.dumps(changed).encode(), headers=headers | NDJSON)
    assert ok.json() == {"lines": 1, "created": 0, "updated": 1, "unchanged": 0}
    with setup.sessions() as s:
        row = s.scalars(
            select(ReviewVerdict).where(
                ReviewVerdict.label_id == changed["label_id"],
                ReviewVerdict.api_key_id == setup.admin.id,
            )
        ).one()
        assert (row.choice, row.revision, row.source) == ("tie", 2, "import")
        assert row.history[0]["choice"] == "A"
    _error(
        client.post(
            "/v1/jobs/nope/reviews/import", content=response.content, headers=headers | NDJSON
        ),
        404,
        "job_id",
    )


# --------------------------------------------------------------------------- dashboard


def test_dashboard_job_page_shows_the_review(setup: Setup, issue: Callable[..., IssuedKey]) -> None:
    client = setup.client
    labels = setup.labels(setup.compare)
    queue = setup.queue(setup.compare, size=5, seed=1)
    for n, label_id in enumerate(queue["items"]):
        side = _ai_choice(labels[label_id]) if n < 4 else _other(_ai_choice(labels[label_id]))
        assert setup.verdict(queue["id"], label_id, choice=side).status_code == 201
    viewer = issue("alpha", ("read",))
    login = client.post(
        "/dashboard/login",
        data={"api_key": viewer.key},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert login.status_code == 303, login.text
    page = client.get(f"/dashboard/jobs/{setup.compare}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="human-review"' in html
    overall = html[html.index('id="review-overall"') :]
    assert "<b>80.0%</b>" in overall.split("</p>")[0]
    low, high = _wilson(4, 5)
    assert f"{low * 100:.1f}%\N{EN DASH}{high * 100:.1f}%" in overall.split("</p>")[0]
    assert f'data-queue="{queue["id"]}"' in html and "5 / 5" in html
    assert "AI-human agreement by AI confidence" in html  # the calibration chart
    empty = client.get(f"/dashboard/jobs/{setup.sl}").text
    assert "No human verdicts yet" in empty and 'id="review-queues"' not in empty


def _dashboard_login(client: TestClient, key: str) -> str:
    """Log in; the session's CSRF token, read from a page's form."""
    origin = {"Origin": "http://testserver"}
    response = client.post(
        "/dashboard/login", data={"api_key": key}, headers=origin, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    page = client.get("/dashboard/").text
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def test_reviewers_give_verdicts_in_the_browser(
    setup: Setup, issue: Callable[..., IssuedKey]
) -> None:
    client = setup.client
    origin = {"Origin": "http://testserver"}
    queue = setup.queue(setup.compare, size=3, seed=2)
    reviewer = issue("alpha", ("review",))
    csrf = _dashboard_login(client, reviewer.key)
    page = client.get(f"/dashboard/reviews/{queue['id']}")
    assert page.status_code == 200, page.text
    for label_id in queue["items"]:
        assert f'id="label-{label_id}"' in page.text
    assert page.text.count('class="verdict"') == 3 and "0 / 3" in page.text
    label_id = queue["items"][1]
    url = f"/dashboard/reviews/{queue['id']}/items/{label_id}"
    form = {"csrf": csrf, "verdict": "B", "note": "B is kinder", "start": "0"}
    posted = client.post(url, data=form, headers=origin, follow_redirects=False)
    assert posted.status_code == 303, posted.text
    assert posted.headers["location"].endswith(f"#label-{label_id}")
    with setup.sessions() as s:
        row = s.scalars(select(ReviewVerdict)).one()
        assert (row.label_id, row.choice, row.note) == (label_id, "B", "B is kinder")
        assert (row.api_key_id, row.source) == (reviewer.id, "api")
    page = client.get(f"/dashboard/reviews/{queue['id']}").text
    assert "1 / 3" in page and "Replace my verdict" in page
    # Without the CSRF token, or without a verdict: refused, nothing stored.
    bad = client.post(url, data={"verdict": "A"}, headers=origin, follow_redirects=False)
    assert bad.status_code == 403
    empty = client.post(url, data={"csrf": csrf}, headers=origin, follow_redirects=False)
    assert empty.status_code == 422
    with setup.sessions() as s:
        assert s.scalars(select(ReviewVerdict)).one().choice == "B"
    # A read-only key sees the queue but no form, and cannot post.
    client.cookies.clear()
    reader = issue("alpha", ("read",))
    csrf = _dashboard_login(client, reader.key)
    page = client.get(f"/dashboard/reviews/{queue['id']}").text
    assert 'class="verdict"' not in page and 'id="read-only"' in page
    form = {"csrf": csrf, "verdict": "A"}
    assert client.post(url, data=form, headers=origin, follow_redirects=False).status_code == 403
    # A revision queue: the chain, and yes/no verdicts.
    client.cookies.clear()
    csrf = _dashboard_login(client, reviewer.key)
    sl_queue = setup.queue(setup.sl, size=2)
    page = client.get(f"/dashboard/reviews/{sl_queue['id']}")
    assert page.status_code == 200, page.text
    assert 'value="yes"' in page.text and "Initial response" in page.text
    label_id = sl_queue["items"][0]
    url = f"/dashboard/reviews/{sl_queue['id']}/items/{label_id}"
    form = {"csrf": csrf, "verdict": "no"}
    assert client.post(url, data=form, headers=origin, follow_redirects=False).status_code == 303
    with setup.sessions() as s:
        row = s.scalars(select(ReviewVerdict).where(ReviewVerdict.label_id == label_id)).one()
        assert (row.satisfies, row.choice, row.agrees) == (False, None, False)


def test_two_last_verdicts_at_once_still_reach_the_target(
    setup: Setup, issue: Callable[..., IssuedKey], postgres_only: None
) -> None:
    """The queue row is locked by each verdict: the second of two concurrent final
    verdicts waits for the first, then sees it and emits the event (without the lock
    neither transaction would see both verdicts, and the target would pass unnoticed)."""
    from services.gateway.reviews import service
    from services.gateway.reviews.schemas import VerdictCreate

    with setup.sessions() as s, s.begin():
        s.add(
            WebhookEndpoint(
                project_id=setup.admin.project_id,
                url="https://hooks.example.com/review",
                event_types=["review.target_reached"],
                secret="whsec_" + "A" * 32,
            )
        )
    queue = setup.queue(setup.compare, size=2, seed=5)
    first, second = queue["items"]
    other = issue("alpha", ("review",))
    spec = VerdictCreate(choice="A")
    holder = setup.sessions()
    holder.begin()
    service.give_verdict(holder, holder.get_one(ApiKey, setup.admin.id), queue["id"], first, spec)
    errors: list[BaseException] = []

    def later() -> None:
        try:
            with setup.sessions() as s, s.begin():
                service.give_verdict(s, s.get_one(ApiKey, other.id), queue["id"], second, spec)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=later)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting for the queue's lock
    holder.commit()
    holder.close()
    thread.join(timeout=30)
    assert not thread.is_alive() and not errors, errors
    with setup.sessions() as s:
        sent = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_type == "review.target_reached")
        ).all()
        assert len(sent) == 1 and sent[0].payload["data"]["reviewed"] == 2
