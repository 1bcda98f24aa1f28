"""Who may call what: every /v1 operation in the OpenAPI document, every kind of caller.

The operations come from the app's own document, and :data:`REQUIRED_SCOPE` must
name exactly those: a new route without an entry (or an entry without a route)
fails here, so the next route is covered by the same matrix. The callers:

- no key, a malformed key, a revoked key, an expired key: 401;
- each single-scope key of the owning project: 403 without the scope the
  operation needs (:data:`GRANTS` says what each scope implies), otherwise past
  authorisation (a 2xx, or a 4xx that is not about the key);
- another project's admin key, on the owner's real ids: for an id in the path (or
  one the body refers to), exactly the answer for an id that does not exist, never
  the owner's data and never a change to it; for a list, a 200 without the owner's
  rows.

The requests are built to pass validation where that matters (a body the route
accepts), so that what decides the answer is the key.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from charter import keys
from charter.db.models import ApiKey, Job, TrainingRun, utcnow
from charter.db.session import session_factory
from tests.conftest import IssuedKey

REQUIRED_SCOPE: dict[tuple[str, str], str] = {
    ("GET", "/v1/constitutions"): "read",
    ("POST", "/v1/constitutions"): "submit",
    ("GET", "/v1/constitutions/{ref}"): "read",
    ("GET", "/v1/constitutions/{name}/versions"): "read",
    ("GET", "/v1/constitutions/{name}/diff"): "read",
    ("POST", "/v1/batches"): "submit",
    ("GET", "/v1/batches"): "read",
    ("POST", "/v1/batches/upload"): "submit",
    ("GET", "/v1/batches/{batch_id}"): "read",
    ("GET", "/v1/batches/{batch_id}/prompts"): "read",
    ("POST", "/v1/jobs"): "submit",
    ("GET", "/v1/jobs"): "read",
    ("GET", "/v1/jobs/{job_id}"): "read",
    ("POST", "/v1/jobs/{job_id}/cancel"): "submit",
    ("GET", "/v1/jobs/{job_id}/results"): "read",
    ("GET", "/v1/jobs/{job_id}/items"): "read",
    ("GET", "/v1/workers"): "read",
    ("GET", "/v1/stats/overview"): "read",
    ("GET", "/v1/stats/jobs/{job_id}"): "read",
    ("GET", "/v1/stats/models"): "read",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("POST", "/v1/keys/{key_id}/revoke"): "admin",
    ("POST", "/v1/runs"): "train",
    ("GET", "/v1/runs"): "read",
    ("GET", "/v1/runs/{run_id}"): "read",
    ("GET", "/v1/runs/{run_id}/metrics"): "read",
    ("POST", "/v1/runs/{run_id}/metrics"): "train",
    ("POST", "/v1/runs/{run_id}/cancel"): "train",
    ("POST", "/v1/runs/{run_id}/resume"): "train",
    ("POST", "/v1/runs/claim"): "train",
    ("POST", "/v1/runs/{run_id}/heartbeat"): "train",
    ("POST", "/v1/runs/{run_id}/checkpoint"): "train",
    ("POST", "/v1/runs/{run_id}/complete"): "train",
    ("POST", "/v1/runs/{run_id}/fail"): "train",
    ("POST", "/v1/datasets"): "submit",
    ("GET", "/v1/datasets"): "read",
    ("GET", "/v1/datasets/{ref}"): "read",
    ("GET", "/v1/datasets/{name}/versions"): "read",
    ("POST", "/v1/datasets/{name}/upload"): "submit",
    ("GET", "/v1/datasets/{ref}/export"): "read",
    ("POST", "/v1/jobs/{job_id}/reviews/queues"): "review",
    ("GET", "/v1/reviews/queues/{queue_id}"): "read",
    ("GET", "/v1/reviews/queues/{queue_id}/items"): "read",
    ("POST", "/v1/reviews/queues/{queue_id}/items/{label_id}/verdicts"): "review",
    ("GET", "/v1/jobs/{job_id}/reviews/agreement"): "read",
    ("GET", "/v1/reviews/agreement"): "read",
    ("GET", "/v1/jobs/{job_id}/reviews/export"): "read",
    ("POST", "/v1/jobs/{job_id}/reviews/import"): "review",
    ("POST", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}"): "admin",
    ("PATCH", "/v1/webhooks/{webhook_id}"): "admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "admin",
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "admin",
    ("POST", "/v1/webhooks/{webhook_id}/test"): "admin",
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/resend"): "admin",
    ("GET", "/v1/audit"): "admin",
    ("POST", "/v1/templates"): "submit",
    ("GET", "/v1/templates"): "read",
    ("GET", "/v1/templates/{ref}"): "read",
    ("POST", "/v1/templates/{ref}/render"): "submit",
    ("POST", "/v1/critique-templates"): "submit",
    ("GET", "/v1/critique-templates"): "read",
    ("GET", "/v1/critique-templates/{ref}"): "read",
    ("POST", "/v1/critique-templates/{ref}/render"): "submit",
    ("POST", "/v1/gold-sets/{name}"): "submit",
    ("GET", "/v1/gold-sets"): "read",
    ("GET", "/v1/gold-sets/{ref}"): "read",
    ("GET", "/v1/gold-sets/{ref}/items"): "read",
    ("POST", "/v1/public-inputs/{name}"): "submit",
    ("GET", "/v1/public-inputs"): "read",
    ("GET", "/v1/public-inputs/{ref}"): "read",
    ("GET", "/v1/public-inputs/{ref}/analysis"): "read",
    ("POST", "/v1/public-inputs/{ref}/constitution"): "submit",
    ("POST", "/v1/public-inputs/{ref}/draft"): "submit",
    ("POST", "/v1/public-inputs/{ref}/wording-jobs"): "submit",
    ("POST", "/v1/evals"): "submit",
    ("GET", "/v1/evals"): "read",
    ("GET", "/v1/evals/attacks"): "read",
    ("GET", "/v1/evals/{eval_id}"): "read",
    ("GET", "/v1/evals/{eval_id}/report"): "read",
    ("POST", "/v1/evals/{eval_id}/cancel"): "submit",
    ("POST", "/v1/policy-evals"): "submit",
    ("GET", "/v1/policy-evals"): "read",
    ("GET", "/v1/policy-evals/{eval_id}"): "read",
    ("GET", "/v1/policy-evals/{eval_id}/report"): "read",
    ("GET", "/v1/policy-evals/{eval_id}/plot.png"): "read",
    ("POST", "/v1/policy-evals/{eval_id}/cancel"): "submit",
    ("POST", "/v1/pipelines"): "train",
    ("GET", "/v1/pipelines"): "read",
    ("GET", "/v1/pipelines/{pipeline_id}"): "read",
    ("GET", "/v1/pipelines/{pipeline_id}/stages"): "read",
    ("POST", "/v1/pipelines/{pipeline_id}/cancel"): "train",
    ("POST", "/v1/pipelines/{pipeline_id}/resume"): "train",
    ("POST", "/v1/pipelines/{pipeline_id}/rerun"): "train",
    ("POST", "/v1/classifier-data/requests"): "submit",
    ("POST", "/v1/classifier-data/responses"): "submit",
    ("POST", "/v1/classifier-data/datasets"): "submit",
    ("POST", "/v1/classify"): "classify",
    ("POST", "/v1/classify/stream"): "classify",
}
# What a key with one scope may do: submitting or training needs to read what it made.
# A pipeline submits labelling jobs and training runs: it needs both scopes.
ALSO_NEEDS = {
    (method, path): "submit"
    for method, path in REQUIRED_SCOPE
    if path.startswith("/v1/pipelines") and method == "POST"
}
GRANTS = {
    "admin": {"admin", "submit", "read", "train", "review", "classify"},
    "submit": {"submit", "read"},
    "read": {"read"},
    "train": {"train", "read"},
    "review": {"review", "read"},
    "classify": {"classify"},
}
# The path names what the request creates in the caller's own project, not an object:
# another project's key gets what a never-used name gets (not a 404).
CREATES_BY_NAME = {
    ("POST", "/v1/datasets/{name}/upload"),
    ("POST", "/v1/gold-sets/{name}"),
    ("POST", "/v1/public-inputs/{name}"),
}
# The fleet is shared by design: every project sees the same workers (items_done counts
# the caller's own labels only), so there are no owner rows to hide.
SHARED = {("GET", "/v1/workers")}
# Per-model judge statistics name models, never an id, and the seeded project has no
# compare labels: tests/gateway/test_stats_api.py checks that another project's labels
# never reach these numbers.
WITHOUT_IDS = {("GET", "/v1/stats/models"), ("GET", "/v1/reviews/agreement")}
# The attack suite is the platform's own, the same for every project.
SHARED |= {("GET", "/v1/evals/attacks")}
# The seeded job has no labels, so no review queue: queue paths name a queue id that
# does not exist (tests/gateway/test_reviews.py checks another project's real queues).
NO_QUEUE = "0" * 32
# The caller's own audit log echoes the ids its own requests named (the owner's, in this
# test): what must hold is that no row of the owner's requests is among them.
OWN_LOG = {("GET", "/v1/audit")}
# The body names an object of the owner's (a batch, a dataset, a job).
BODY_REFERENCES = {
    ("POST", "/v1/jobs"),
    ("POST", "/v1/runs"),
    ("POST", "/v1/datasets"),
    ("POST", "/v1/evals"),
    ("POST", "/v1/policy-evals"),
    ("POST", "/v1/pipelines"),
    ("POST", "/v1/classifier-data/responses"),
    ("POST", "/v1/classifier-data/datasets"),
    ("POST", "/v1/classify"),
    ("POST", "/v1/classify/stream"),
}

NDJSON = {"Content-Type": "application/x-ndjson"}
LEASE = {"lease_token": "not-the-lease-token", "owner": "matrix"}
GOLD_ROW = {"prompt": "Owner's gold?", "response_a": "yes", "response_b": "no", "answer": "a"}
OWNER_VOTE = {"participant": "owner-voter", "statement": "owner-statement", "vote": 1}
PUBLIC_INPUT = {
    "format": "json",
    "statements": [{"id": "owner-statement", "text": "Owner's statement."}],
    "votes": [OWNER_VOTE],
}


@dataclass
class Owner:
    """The owning project's real objects (by name or id)."""

    constitution: str
    batch: str
    job: str
    dataset: str
    run: str
    key: str  # a second key of the project, the target of revoke
    document: dict[str, Any]  # the constitution a POST /v1/constitutions sends
    ids: dict[str, str] = field(default_factory=dict)  # what must never leak, by what it is
    webhook: str = ""
    delivery: str = ""  # a delivery of the webhook's, the target of resend
    template: str = ""  # a feedback template of the project's own
    critique_template: str = ""  # a critique template of the project's own
    gold: str = ""  # a gold set
    evaluation: str = ""  # an evaluation of the gold set
    policy_eval: str = ""  # a policy evaluation on the batch
    pipeline: str = ""  # a pipeline on the batch
    public_input: str = ""  # statements and votes

    def _named(self, resource: str) -> str:
        return {
            "constitutions": self.constitution,
            "templates": self.template,
            "critique-templates": self.critique_template,
            "gold-sets": self.gold,
            "evals": self.gold,
            "public-inputs": self.public_input,
        }.get(resource, self.dataset)

    def path_values(self, path: str) -> dict[str, str]:
        resource = path.split("/")[2]
        return {
            "batch_id": self.batch,
            "job_id": self.job,
            "run_id": self.run,
            "key_id": self.key,
            "webhook_id": self.webhook,
            "delivery_id": self.delivery,
            "ref": f"{self._named(resource)}@1",
            "name": {
                "constitutions": self.constitution,
                "gold-sets": self.gold,
                "public-inputs": self.public_input,
            }.get(resource, self.dataset),
            "eval_id": self.policy_eval if resource == "policy-evals" else self.evaluation,
            "pipeline_id": self.pipeline,
            "queue_id": NO_QUEUE,
            "label_id": "987654321",
        }


MISSING_HEX = secrets.token_hex(16)
MISSING_NAME = f"missing-{secrets.token_hex(4)}"


def _missing(value: str) -> str:
    name, at, version = value.partition("@")
    if name.isdigit():  # a label id: the queue it is looked up in is what goes missing
        return value
    if re.fullmatch(r"[0-9a-f]{32}", name):
        return MISSING_HEX
    return f"{MISSING_NAME}{at}{version}"


def _policy_eval(batch: str, constitution: str) -> dict[str, Any]:
    return {
        "batch_id": batch,
        "policies": [
            {"name": "base", "model": "smollm2-135m"},
            {"name": "told", "model": "smollm2-135m", "system_prompt": "constitution"},
        ],
        "judges": [{"name": "harmlessness", "model": "smollm2-135m", "constitution": constitution}],
    }


def _pipeline(batch: str, constitution: str) -> dict[str, Any]:
    return {"base_model": "smollm2-135m", "constitution": constitution, "prompts": batch}


def _request(method: str, path: str, owner: Owner, *, missing: bool = False) -> dict[str, Any]:
    """``client.request`` arguments for an operation on the owner's objects (or missing ones)."""
    values = owner.path_values(path)
    if missing:
        values = {k: _missing(v) for k, v in values.items()}
    url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    batch = _missing(owner.batch) if missing else owner.batch
    dataset = _missing(owner.dataset) if missing else owner.dataset
    gold = _missing(f"{owner.gold}@1") if missing else f"{owner.gold}@1"
    job = _missing(owner.job) if missing else owner.job
    run = _missing(owner.run) if missing else owner.run
    kwargs: dict[str, Any] = {}
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/v1/batches"): {"name": "matrix", "rows": [{"prompt": "Hello?"}]},
        ("POST", "/v1/jobs"): {
            "type": "sl_cai",
            "batch_id": batch,
            "constitution": "matrix-default",
            "model": "smollm2-135m",
        },
        ("POST", "/v1/keys"): {"scopes": ["read"]},
        ("POST", "/v1/templates"): {"name": "matrix-template", "question": "{{ principle }}"},
        ("POST", "/v1/templates/{ref}/render"): {
            "conversation": [{"role": "user", "content": "Hi"}],
            "principle": "Which is kinder?",
            "response_a": "a",
            "response_b": "b",
        },
        ("POST", "/v1/critique-templates"): {"name": "matrix-critique"},
        ("POST", "/v1/critique-templates/{ref}/render"): {
            "conversation": [{"role": "user", "content": "Hi"}],
            "response": "Hello",
            "critique_request": "Is it kind?",
            "revision_request": "Make it kinder.",
        },
        ("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/hook", "events": ["job.completed"]},
        ("PATCH", "/v1/webhooks/{webhook_id}"): {"description": "matrix"},
        ("POST", "/v1/runs"): {"type": "sft", "dataset": dataset, "base_model": "smollm2"},
        ("POST", "/v1/runs/claim"): {"owner": "matrix"},
        ("POST", "/v1/runs/{run_id}/heartbeat"): LEASE,
        ("POST", "/v1/runs/{run_id}/metrics"): LEASE
        | {"points": [{"step": 1, "metrics": {"loss": 0.5}}]},
        ("POST", "/v1/runs/{run_id}/checkpoint"): LEASE | {"checkpoint": "/tmp/matrix"},
        ("POST", "/v1/runs/{run_id}/complete"): LEASE | {"artifact_uri": "file:///tmp/matrix"},
        ("POST", "/v1/runs/{run_id}/fail"): LEASE | {"error": "matrix"},
        ("POST", "/v1/jobs/{job_id}/reviews/queues"): {"size": 1},
        ("POST", "/v1/reviews/queues/{queue_id}/items/{label_id}/verdicts"): {"choice": "A"},
        ("POST", "/v1/evals"): {
            "gold_set": gold,
            "configs": [{"model": "smollm2-135m", "constitution": "matrix-default"}],
        },
        ("POST", "/v1/policy-evals"): _policy_eval(batch, "matrix-default"),
        ("POST", "/v1/pipelines"): _pipeline(batch, "matrix-default"),
        ("POST", "/v1/pipelines/{pipeline_id}/rerun"): {"stage": "sl_cai"},
        # Refused after authorisation (a vote that is no vote): names are per project, as
        # for gold sets below.
        ("POST", "/v1/public-inputs/{name}"): PUBLIC_INPUT | {"votes": [OWNER_VOTE | {"vote": 2}]},
        ("POST", "/v1/public-inputs/{ref}/constitution"): {"name": "matrix-collective"},
        ("POST", "/v1/public-inputs/{ref}/draft"): {"name": "matrix-collective"},
        ("POST", "/v1/public-inputs/{ref}/wording-jobs"): {"constitution": "matrix-default"},
        # The owner's job and run are no classifier-data job and no classifier: refused
        # after authorisation, for the owner; a 404 for anyone else.
        ("POST", "/v1/classifier-data/requests"): {"constitution": "matrix-default"},
        ("POST", "/v1/classifier-data/responses"): {"requests_job": job},
        ("POST", "/v1/classifier-data/datasets"): {"name": "matrix-guard", "responses_job": job},
        ("POST", "/v1/classify"): {"classifier": run, "prompt": "Hello?"},
        ("POST", "/v1/datasets"): {
            "name": "matrix-labels",
            "kind": "sft",
            "filter": {"job_ids": [job]},
        },
    }
    if (method, path) in bodies:
        kwargs["json"] = bodies[(method, path)]
    elif (method, path) == ("POST", "/v1/batches/upload"):
        kwargs |= {"content": b'{"prompt": "Hello?"}\n', "headers": NDJSON}
    elif (method, path) == ("POST", "/v1/classify/stream"):
        header = {"classifier": run, "prompt": "Hello?"}
        kwargs |= {
            "content": (json.dumps(header) + '\n{"token": "Hi"}\n').encode(),
            "headers": NDJSON,
        }
    elif (method, path) == ("POST", "/v1/jobs/{job_id}/reviews/import"):
        line = {"label_id": 1, "verdict": {"choice": "A"}, "reviewer": {"key_id": "0" * 32}}
        kwargs |= {"content": json.dumps(line).encode(), "headers": NDJSON}
    elif (method, path) == ("POST", "/v1/gold-sets/{name}"):
        # Refused after authorisation (p_gold on the wrong side): names are per project,
        # so another project's push would make a gold set of its own under the owner's
        # name, which the matrix's later rows would then find.
        row = GOLD_ROW | {"p_gold": 0.1}
        kwargs |= {"content": json.dumps(row).encode(), "headers": NDJSON}
    elif (method, path) == ("POST", "/v1/datasets/{name}/upload"):
        kwargs |= {"content": b'{"prompt": "Hi", "completion": "Hello"}\n', "headers": NDJSON}
    elif (method, path) == ("POST", "/v1/constitutions"):
        kwargs["json"] = owner.document
    elif (method, path) == ("GET", "/v1/constitutions/{name}/diff"):
        kwargs["params"] = {"from": 1, "to": 1}
    return {"method": method, "url": url, **kwargs}


def _send(client: TestClient, request: dict[str, Any], key: str | None) -> Any:
    headers = dict(request.get("headers", {}))
    if key is not None:
        headers["X-API-Key"] = key
    return client.request(**{**request, "headers": headers})


def _seed(
    client: TestClient, admin: dict[str, str], issue: Callable[..., IssuedKey], document: Any
) -> Owner:
    def ok(response: Any) -> dict[str, Any]:
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    tag = secrets.token_hex(3)
    constitution = ok(
        client.post("/v1/constitutions", json=document | {"name": f"owner-{tag}"}, headers=admin)
    )
    ok(client.post("/v1/constitutions", json=document | {"name": "matrix-default"}, headers=admin))
    rows = {"name": f"owner-batch-{tag}", "rows": [{"prompt": "Owner's secret prompt?"}]}
    batch = ok(client.post("/v1/batches", json=rows, headers=admin))
    job = {"type": "sl_cai", "batch_id": batch["id"], "constitution": constitution["name"]}
    job = ok(client.post("/v1/jobs", json=job | {"model": "smollm2-135m"}, headers=admin))
    line = json.dumps({"prompt": "Owner's question", "completion": "Owner's answer"})
    dataset = ok(
        client.post(
            f"/v1/datasets/owner-ds-{tag}/upload",
            params={"kind": "sft"},
            content=line.encode(),
            headers=admin | NDJSON,
        )
    )
    run = {"type": "sft", "dataset": dataset["ref"], "base_model": "smollm2"}
    run = ok(client.post("/v1/runs", json=run, headers=admin))
    second = issue("alpha", ("read",), name="revoke-me")
    owner = Owner(
        constitution["name"],
        batch["id"],
        job["id"],
        dataset["name"],
        run["id"],
        second.id,
        document | {"name": "matrix-default"},
    )
    owner.ids = {
        "constitution": constitution["name"],
        "batch": batch["id"],
        "batch name": rows["name"],
        "job": job["id"],
        "dataset": dataset["name"],
        "run": run["id"],
        "key": second.id,
        "key prefix": second.key.split("_")[1],
    }
    hook = {"url": "http://127.0.0.1:9/owner-hook", "events": ["job.completed"]}
    owner.webhook = ok(client.post("/v1/webhooks", json=hook, headers=admin))["id"]
    owner.delivery = ok(client.post(f"/v1/webhooks/{owner.webhook}/test", headers=admin))["id"]
    owner.ids |= {"webhook": owner.webhook, "delivery": owner.delivery}
    template = {"name": f"owner-tpl-{tag}", "question": "Owner's {{ principle }}"}
    owner.template = ok(client.post("/v1/templates", json=template, headers=admin))["name"]
    owner.ids |= {"template": owner.template}
    critique = {"name": f"owner-crit-{tag}", "critique": "Owner's {{ critique_request }}"}
    owner.critique_template = ok(
        client.post("/v1/critique-templates", json=critique, headers=admin)
    )["name"]
    owner.ids |= {"critique template": owner.critique_template}
    owner.gold = f"owner-gold-{tag}"
    gold = client.post(
        f"/v1/gold-sets/{owner.gold}", content=json.dumps(GOLD_ROW).encode(), headers=admin | NDJSON
    )
    ok(gold)
    config = {"model": "smollm2-135m", "constitution": constitution["name"]}
    evaluation = {"gold_set": owner.gold, "configs": [config]}
    owner.evaluation = ok(client.post("/v1/evals", json=evaluation, headers=admin))["id"]
    owner.ids |= {"gold set": owner.gold, "evaluation": owner.evaluation}
    policy_eval = _policy_eval(batch["id"], constitution["name"])
    owner.policy_eval = ok(client.post("/v1/policy-evals", json=policy_eval, headers=admin))["id"]
    owner.ids |= {"policy evaluation": owner.policy_eval}
    pipeline = _pipeline(batch["id"], constitution["name"])
    owner.pipeline = ok(client.post("/v1/pipelines", json=pipeline, headers=admin))["id"]
    owner.ids |= {"pipeline": owner.pipeline}
    owner.public_input = f"owner-public-{tag}"
    ok(client.post(f"/v1/public-inputs/{owner.public_input}", json=PUBLIC_INPUT, headers=admin))
    owner.ids |= {"public input": owner.public_input}
    return owner


def _code(response: Any) -> str | None:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return None


def _masked(response: Any, *values: str) -> tuple[int, str]:
    text = response.text
    for value in values:
        text = text.replace(value, "<id>")
    return response.status_code, text


def test_the_table_names_every_operation(make_client: Callable[..., TestClient]) -> None:
    document = make_client().get("/openapi.json").json()
    operations = {
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
        if path.startswith("/v1/")
    }
    assert operations - set(REQUIRED_SCOPE) == set(), "new operations need a REQUIRED_SCOPE entry"
    assert set(REQUIRED_SCOPE) - operations == set(), (
        "REQUIRED_SCOPE names operations that are gone"
    )
    assert set(REQUIRED_SCOPE.values()) <= set(keys.SCOPES)
    assert {scope: keys.granted([scope]) for scope in keys.SCOPES} == GRANTS


@pytest.fixture
def matrix_client(make_client: Callable[..., TestClient]) -> TestClient:
    # Rate limits off: the matrix sends hundreds of bad keys from one address on purpose,
    # and a 429 would hide the 401 under test (test_rate_limits.py covers the limits).
    return make_client(
        rate_limits={scope: "" for scope in keys.SCOPES},
        auth_failure_limit="",
        worker_models=["smollm2", "smollm2-135m", "m", "tiny-model", "run:*"],  # pipelines
    )


def test_access_matrix(
    matrix_client: TestClient,
    issue: Callable[..., IssuedKey],
    engine: Engine,
    default_document: dict[str, Any],
) -> None:
    client = matrix_client
    document = client.get("/openapi.json").json()
    operations = [
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
        if path.startswith("/v1/")
    ]
    admin = issue("alpha", ("admin",))
    owner = _seed(client, admin.headers, issue, default_document)
    scoped = {scope: issue("alpha", (scope,)).key for scope in keys.SCOPES}
    revoked = issue("alpha", ("admin",))
    response = client.post(f"/v1/keys/{revoked.id}/revoke", headers=admin.headers)
    assert response.status_code == 200, response.text
    expired = issue("alpha", ("admin",), expires_at=utcnow() - timedelta(seconds=1))
    other = issue("beta", ("admin",))
    assert other.project_id != admin.project_id
    identifiers = list(owner.ids.values())
    wrong: list[str] = []

    def expect(condition: bool, caller: str, method: str, path: str, response: Any) -> None:
        if not condition:
            wrong.append(f"{caller}: {method} {path} -> {response.status_code} {response.text}")

    # Another project's admin key first, before the owner's own calls change anything.
    for method, path in operations:
        request = _request(method, path, owner)
        response = _send(client, request, other.key)
        if "{" in path or (method, path) in BODY_REFERENCES:
            # The owner's id, in the path or the body: the answer for an id that does not
            # exist (which echoes the id sent, so compare with the ids masked).
            missing = _send(client, _request(method, path, owner, missing=True), other.key)
            ids = list(owner.path_values(path).values())
            masked = [*ids, *map(_missing, ids)]
            same = _masked(response, *masked) == _masked(missing, *masked)
            expect(same, "other project (unlike a missing id)", method, path, response)
            if "{" in path and (method, path) not in CREATES_BY_NAME:
                expect(response.status_code == 404, "other project", method, path, response)
            continue
        if (method, path) in OWN_LOG:
            prefixes = {row["key_prefix"] for row in response.json()["items"]}
            expect(prefixes == {other.key.split("_")[1]}, "other project", method, path, response)
        else:
            leaked = [i for i in identifiers if i in response.text]
            expect(not leaked, f"other project (leaked {leaked})", method, path, response)
        if method == "GET":
            expect(response.status_code == 200, "other project (list)", method, path, response)
            if (method, path) not in SHARED | WITHOUT_IDS:  # the owner sees its rows there
                mine = _send(client, request, admin.key)
                seen = any(i in mine.text for i in identifiers)
                expect(seen, "owner (list without its rows)", method, path, mine)
        elif (method, path) == ("POST", "/v1/runs/claim"):
            # The owner's run is queued, but the other project's queue is empty.
            expect(response.status_code == 204, "other project (claim)", method, path, response)
        else:
            expect(response.status_code not in (401, 403), "other project", method, path, response)

    with session_factory(engine)() as session:  # nothing of the owner's changed
        assert session.get_one(ApiKey, owner.key).revoked_at is None
        assert session.get_one(Job, owner.job).status != "cancelled"
        run = session.get_one(TrainingRun, owner.run)
        assert (run.status, run.lease_owner, run.checkpoint) == ("queued", None, None)

    for method, path in operations:
        request = _request(method, path, owner)
        for caller, key in (
            ("no key", None),
            ("malformed key", "chk_nope"),
            ("revoked key", revoked.key),
            ("expired key", expired.key),
        ):
            response = _send(client, request, key)
            unauthorized = response.status_code == 401 and _code(response) == "unauthorized"
            expect(unauthorized, caller, method, path, response)
        required = {REQUIRED_SCOPE.get((method, path), "admin")}
        required |= {ALSO_NEEDS[(method, path)]} if (method, path) in ALSO_NEEDS else set()
        for scope, key in scoped.items():
            response = _send(client, request, key)
            if required <= GRANTS[scope]:
                expect(response.status_code not in (401, 403), scope, method, path, response)
            else:
                forbidden = response.status_code == 403 and _code(response) == "forbidden"
                expect(forbidden, scope, method, path, response)

    assert not wrong, "\n".join(wrong)
    assert len(operations) == len(REQUIRED_SCOPE)
