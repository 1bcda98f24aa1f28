"""``/v1/datasets``: filters frozen into numbered versions, uploads, mixing, streamed exports.

Labels are made for real: jobs submitted through the API and run by the
``ChunkRunner`` with the scripted engine, so every filter is checked against
label rows exactly as the workers write them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from charter.client import CharterAPIError, CharterClient, ChecksumMismatch
from charter.core.engine import ChoiceLogprobs
from charter.core.export import COLUMNS, jsonl_line, preference_row, sft_row
from charter.db.models import Label, Worker
from charter.db.session import session_factory
from services.gateway.datasets import export
from services.gateway.datasets.service import mixed_count, mixed_positions
from workers.engines.scripted import ScriptedEngine, prefer_shorter
from workers.runner import ChunkRunner

# Text that JSON must escape (quotes, backslashes, controls) or keep as is (non-ASCII).
NASTY = 'He said "no" \\ then\ttab\nline \x01\x1f\x7f é € 😀 \u2028 {0} %s'
PROMPTS = [{"prompt": f"Question number {i}?"} for i in range(5)] + [{"prompt": NASTY}]
WITH_RESPONSE = [{"prompt": f"Critique me {i}", "response": f"answer {i}"} for i in range(4)]
# Response lengths vary, so the scripted judge's confidence (it prefers the shorter) varies;
# the "biased" prompts get a judge that always picks the first position: the orders disagree.
PAIRS = (
    [
        {"prompt": f"Pair {i}?", "response_a": "x" * (1 + i), "response_b": "y" * (90 - 20 * i)}
        for i in range(5)
    ]
    + [{"prompt": f"biased {i}?", "response_a": "aaa", "response_b": "bbbbbbbbb"} for i in range(3)]
    + [{"prompt": NASTY, "response_a": NASTY, "response_b": "plain"}]
)
HELPFUL_SFT = [
    {"prompt": "How do I boil an egg?", "completion": "Simmer it for eight minutes."},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    },
    {
        "prompt": [{"role": "user", "content": "Name a prime."}],
        "completion": [{"role": "assistant", "content": "Seven."}],
    },
    {"prompt": "Say hi in Spanish.", "completion": "Hola."},
]
HELPFUL_PREFERENCE = [
    {"prompt": f"Help me with task {i}", "chosen": f"Sure: step {i}.", "rejected": "No."}
    for i in range(6)
] + [
    {
        "prompt": [{"role": "user", "content": "Soft one"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
        "chosen_probability": 0.75,
    }
]


def reply(conversation: Any, params: Any) -> str | None:
    """The scripted model answers the nasty prompt in kind (critiques and revisions too)."""
    return f"Reply: {NASTY}" if any("😀" in m["content"] for m in conversation) else None


def judge(conversation: Any, prefix: str, choices: tuple[str, str]) -> ChoiceLogprobs:
    if "biased" in conversation[-1]["content"]:
        return ChoiceLogprobs(a=math.log(0.8), b=math.log(0.1))
    return prefer_shorter(conversation, prefix, choices)


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    if field is not None:
        assert body.get("field") == field, body
    return body


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


class Corpus:
    """Labels of every kind, made by running real jobs with the scripted engine."""

    def __init__(self, api: Any, headers: dict[str, str], engine: Engine, settings: Any) -> None:
        self.api, self.headers = api, headers
        self.sessions = session_factory(engine)
        with self.sessions() as s, s.begin():
            if s.get(Worker, "w1") is None:
                s.add(Worker(id="w1", hostname="h", pid=1, engine="scripted", models=["m"]))
        self.runner = ChunkRunner(
            self.sessions,
            {"m": ScriptedEngine(model_name="m", responses=reply, choice_fn=judge)},
            settings,
            "w1",
        )
        api.push_default(headers)
        self.sl = self.run(PROMPTS, type="sl_cai", params={"rounds": 2}, seed=3)
        self.critique = self.run(WITH_RESPONSE, type="critique")
        self.compare = self.run(PAIRS, type="compare", params={"swap": True})
        self.rl = self.run(PROMPTS[:3], type="rl_cai", params={"swap": False})
        self.generated = self.run(PROMPTS[:3], type="generate")

    def run(self, rows: list[dict[str, Any]], **body: Any) -> str:
        batch = self.api.create_batch(self.headers, rows)
        job = self.api.submit(self.headers, batch_id=batch["id"], model="m", chunk_size=4, **body)
        for chunk in range(job["chunk_count"]):
            self.runner.run_chunk(job["id"], chunk)
        return str(job["id"])

    def labels(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.scalars(select(Label).order_by(Label.id))
            return [{c.key: getattr(r, c.key) for c in Label.__table__.columns} for r in rows]


@pytest.fixture
def corpus(api: Any, admin_headers: dict[str, str], engine: Engine, settings: Any) -> Corpus:
    return Corpus(api, admin_headers, engine, settings)


def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """POST answers 202 with the version freezing; the version once it is ready."""
    response = client.post("/v1/datasets", json=body, headers=headers)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "freezing" and accepted["rows_done"] == 0, accepted
    assert accepted["row_count"] == 0 and accepted["checksum"] is None
    return wait_ready(client, headers, accepted["ref"])


def wait_ready(
    client: TestClient, headers: dict[str, str], ref: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        version = client.get(f"/v1/datasets/{ref}", headers=headers).json()
        if version["state"] != "freezing":
            assert version["state"] == "ready", version
            assert version["rows_done"] == version["rows_total"] == version["row_count"]
            return version
        assert time.monotonic() < deadline, version
        time.sleep(0.01)


def download(
    client: TestClient, headers: dict[str, str], ref: str, **params: Any
) -> httpx.Response:
    response = client.get(f"/v1/datasets/{ref}/export", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response


def exported_ids(client: TestClient, headers: dict[str, str], ref: str) -> list[int]:
    return [row["label_id"] for row in _lines(download(client, headers, ref).content)]


# --------------------------------------------------------------------------- filters


def test_filters_select_exactly_the_right_labels(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus, default_document: Any
) -> None:
    # A second constitution version and labels made under it.
    changed = copy.deepcopy(default_document)
    changed["description"] = "Version two."
    corpus.api.push(admin_headers, changed)
    revised = corpus.run(WITH_RESPONSE[:3], type="revise", constitution="default@2")
    # Spread the labels over time: the compare job's labels are old.
    with corpus.sessions() as s, s.begin():
        s.execute(
            update(Label)
            .where(Label.job_id == corpus.compare)
            .values(created_at=datetime(2025, 1, 1, tzinfo=UTC))
        )
    labels = corpus.labels()
    by_kind = lambda *kinds: [x for x in labels if x["kind"] in kinds]  # noqa: E731

    def ids(rows: list[dict[str, Any]]) -> list[int]:
        return sorted(r["id"] for r in rows)

    cases: list[tuple[str, dict[str, Any], list[int]]] = [
        ("sft", {}, ids(by_kind("sl_cai", "critique", "revise"))),
        ("sft", {"kinds": ["critique"]}, ids(by_kind("critique"))),
        ("sft", {"kinds": ["generate"]}, ids(by_kind("generate"))),  # only when asked
        (
            "sft",
            {"job_ids": [corpus.sl, revised]},
            ids([x for x in labels if x["job_id"] in (corpus.sl, revised)]),
        ),
        (
            "sft",
            {"constitution": "default@2"},
            ids([x for x in labels if x["constitution_ref"] == "default@2"]),
        ),
        ("sft", {"constitution": "default"}, ids(by_kind("sl_cai", "critique", "revise"))),
        (
            "sft",
            {"constitution": "default@1", "kinds": ["sl_cai"]},
            ids([x for x in by_kind("sl_cai") if x["job_id"] == corpus.sl]),
        ),
        ("preference", {}, ids(by_kind("compare", "rl_cai"))),
        (
            "preference",
            {"min_confidence": 0.7},
            ids([x for x in by_kind("compare", "rl_cai") if max(x["p_a"], 1 - x["p_a"]) >= 0.7]),
        ),
        (
            "preference",
            {"exclude_swap_disagreements": True, "kinds": ["compare"]},
            ids([x for x in by_kind("compare") if not x["swap_disagreement"]]),
        ),
        (
            "preference",
            {"created_before": "2025-06-01T00:00:00Z"},
            ids([x for x in labels if x["job_id"] == corpus.compare]),
        ),
        (
            "preference",
            {"created_after": "2025-06-01T00:00:00"},  # naive: UTC
            ids([x for x in labels if x["job_id"] == corpus.rl]),
        ),
    ]
    # The fixtures are not vacuous: each filter keeps some labels and drops others.
    assert any(x["swap_disagreement"] for x in labels)
    assert len({max(x["p_a"], 1 - x["p_a"]) >= 0.7 for x in by_kind("compare")}) == 2
    for number, (kind, filter_, expected) in enumerate(cases):
        out = create(client, admin_headers, name=f"f{number}", kind=kind, filter=filter_)
        assert 0 < len(expected) < len(labels)
        assert out["row_count"] == len(expected), (filter_, out)
        assert exported_ids(client, admin_headers, out["ref"]) == expected, filter_
        assert out["filter"]["kinds"]  # recorded with its defaults filled in

    # Each row is exactly sft_row / preference_row of its label.
    by_id = {x["id"]: x for x in labels}
    for kind, render in (("sft", sft_row), ("preference", preference_row)):
        ref = create(client, admin_headers, name=f"all-{kind}", kind=kind)["ref"]
        body = download(client, admin_headers, ref).content.decode()
        assert "😀" in body and "\\u0001" in body
        for line in [x + "\n" for x in body.split("\n")[:-1]]:  # not str.splitlines
            row = json.loads(line)
            assert list(row) == list(COLUMNS[kind])
            assert line == jsonl_line(render(by_id[row["label_id"]]))  # byte for byte


# --------------------------------------------------------------------------- versions


def test_versions_are_immutable_and_numbered(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus
) -> None:
    first = create(client, admin_headers, name="harmless", kind="sft", filter={"kinds": ["sl_cai"]})
    assert (first["name"], first["version"], first["ref"]) == ("harmless", 1, "harmless@1")
    assert first["kind"] == "sft" and first["source"] == "labels" and first["mix"] is None
    before = download(client, admin_headers, "harmless@1").content

    corpus.run(PROMPTS, type="sl_cai")  # more labels match the same filter now
    second = create(
        client, admin_headers, name="harmless", kind="sft", filter={"kinds": ["sl_cai"]}
    )
    assert second["version"] == 2 and second["row_count"] == first["row_count"] + len(PROMPTS)
    assert second["checksum"] != first["checksum"]

    # v1 is untouched: same row count, checksum and bytes.
    got = client.get("/v1/datasets/harmless@1", headers=admin_headers).json()
    assert got == first
    assert download(client, admin_headers, "harmless@1").content == before
    latest = client.get("/v1/datasets/harmless", headers=admin_headers).json()
    assert latest == second
    versions = client.get("/v1/datasets/harmless/versions", headers=admin_headers).json()
    assert [v["version"] for v in versions] == [1, 2]

    create(client, admin_headers, name="prefs", kind="preference")
    listing = client.get("/v1/datasets", headers=admin_headers, params={"limit": 1})
    assert listing.status_code == 200
    page = listing.json()
    assert [d["ref"] for d in page["items"]] == ["prefs@1"] and page["next_cursor"]
    rest = client.get(
        "/v1/datasets", headers=admin_headers, params={"cursor": page["next_cursor"]}
    ).json()
    assert [d["ref"] for d in rest["items"]] == ["harmless@2"] and rest["next_cursor"] is None

    # An Idempotency-Key replays the first answer instead of freezing a third version.
    spec = {"name": "harmless", "kind": "sft"}
    key = {"Idempotency-Key": "freeze-1"} | admin_headers
    a = client.post("/v1/datasets", json=spec, headers=key)
    b = client.post("/v1/datasets", json=spec, headers=key)
    assert a.status_code == b.status_code == 202 and a.json() == b.json()
    assert b.headers.get("Idempotent-Replayed") == "true"
    assert client.get("/v1/datasets/harmless", headers=admin_headers).json()["version"] == 3


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_checksum_matches_export_and_start_resumes(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus, kind: str
) -> None:
    out = create(client, admin_headers, name="d", kind=kind)
    n = out["row_count"]
    full = download(client, admin_headers, "d")
    assert full.headers["x-checksum-sha256"] == out["checksum"]
    assert hashlib.sha256(full.content).hexdigest() == out["checksum"]
    assert full.headers["x-row-count"] == str(n)
    assert full.headers["x-dataset-ref"] == "d@1"
    assert full.headers["content-type"].startswith("application/x-ndjson")
    lines = full.content.splitlines(keepends=True)
    assert len(lines) == n
    assert b"".join(jsonl_line(json.loads(x)).encode() for x in lines) == full.content
    for k in (0, 1, n // 2, n - 1, n):
        rest = download(client, admin_headers, "d@1", start=k)
        assert rest.content == b"".join(lines[k:])
        assert rest.headers["x-checksum-sha256"] == out["checksum"]  # always the whole file's
    _error(
        client.get("/v1/datasets/d/export", params={"start": n + 1}, headers=admin_headers),
        422,
        "start",
    )
    _error(client.get("/v1/datasets/d/export", params={"start": -1}, headers=admin_headers), 422)
    _error(
        client.get("/v1/datasets/d/export", params={"format": "csv"}, headers=admin_headers), 422
    )


def test_export_pages_through_many_rows(
    client: TestClient,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """More rows than one chunk (and one row group): nothing lost or repeated at the seams."""
    monkeypatch.setattr(export, "CHUNK_ROWS", 7)
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 20)
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(53)]
    response = client.post(
        "/v1/datasets/many/upload",
        params={"kind": "sft"},
        content=_jsonl(rows),
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    out = response.json()
    full = download(client, admin_headers, "many").content
    assert [r["prompt"][0]["content"] for r in _lines(full)] == [f"p{i}" for i in range(53)]
    assert hashlib.sha256(full).hexdigest() == out["checksum"]
    assert download(client, admin_headers, "many", start=30).content == b"".join(
        full.splitlines(keepends=True)[30:]
    )
    import pyarrow.parquet as pq

    path = tmp_path / "many.parquet"
    path.write_bytes(download(client, admin_headers, "many", format="parquet", start=5).content)
    meta = pq.read_metadata(path)
    assert meta.num_rows == 48 and meta.num_row_groups == 3
    assert pq.read_table(path).to_pylist() == _lines(full)[5:]


def test_datasets_library_reads_both_formats(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    upload = client.post(
        "/v1/datasets/helpful/upload",
        params={"kind": "preference"},
        content=_jsonl(HELPFUL_PREFERENCE),
        headers=admin_headers,
    )
    assert upload.status_code == 201, upload.text
    refs = {
        "sft": create(client, admin_headers, name="s", kind="sft")["ref"],
        "preference": create(
            client,
            admin_headers,
            name="p",
            kind="preference",
            mix={"source": "helpful", "ratio": 0.4, "seed": 1},
        )["ref"],
    }
    for kind, ref in refs.items():
        jsonl = download(client, admin_headers, ref).content
        expected = _lines(jsonl)
        parquet = download(client, admin_headers, ref, format="parquet")
        assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
        assert parquet.content[:4] == b"PAR1"
        (tmp_path / f"{kind}.jsonl").write_bytes(jsonl)
        (tmp_path / f"{kind}.parquet").write_bytes(parquet.content)
        for builder, suffix in (("json", "jsonl"), ("parquet", "parquet")):
            loaded = datasets.load_dataset(
                builder,
                data_files=str(tmp_path / f"{kind}.{suffix}"),
                split="train",
                cache_dir=str(tmp_path / "hf-cache"),
            )
            assert loaded.column_names == list(COLUMNS[kind])
            assert loaded.to_list() == expected, (kind, builder)


# --------------------------------------------------------------------------- uploads and mixing


def test_upload_normalises_rows_to_trl_shape(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.post(
        "/v1/datasets/helpful/upload",
        params={"kind": "sft"},
        content=_jsonl(HELPFUL_SFT),
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["ref"] == "helpful@1" and out["source"] == "upload" and out["row_count"] == 4
    rows = _lines(download(client, admin_headers, "helpful@1").content)
    assert rows[0]["prompt"] == [{"role": "user", "content": "How do I boil an egg?"}]
    assert rows[0]["completion"] == [
        {"role": "assistant", "content": "Simmer it for eight minutes."}
    ]
    assert rows[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert rows[1]["completion"] == [{"role": "assistant", "content": "Paris."}]
    assert all(r["label_id"] is None and list(r) == list(COLUMNS["sft"]) for r in rows)
    # A second upload to the same name is version 2 (the kind is the dataset's).
    again = client.post(
        "/v1/datasets/helpful/upload", content=_jsonl(HELPFUL_SFT[:1]), headers=admin_headers
    )
    assert again.status_code == 201 and again.json()["version"] == 2


@pytest.mark.parametrize(
    ("body", "params", "status", "field"),
    [
        (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', {"kind": "sft"}, 422, "line 2"),
        (b'{"prompt": "a", "chosen": "b"}\n', {"kind": "preference"}, 422, "line 1"),
        (b'{"prompt": "a", "completion": "b", "extra": 1}\n', {"kind": "sft"}, 422, "line 1"),
        (b"not json\n", {"kind": "sft"}, 422, "line 1"),
        (b"\n\n", {"kind": "sft"}, 422, "body"),
        (b'{"prompt": "a", "completion": "b"}\n', {}, 422, "kind"),
        (b'{"prompt": "a", "completion": "b"}\n', {"kind": "rm"}, 422, "query.kind"),
    ],
)
def test_upload_errors_name_the_line_or_field(
    client: TestClient,
    admin_headers: dict[str, str],
    body: bytes,
    params: dict[str, str],
    status: int,
    field: str,
) -> None:
    response = client.post(
        "/v1/datasets/up/upload", params=params, content=body, headers=admin_headers
    )
    _error(response, status, field)
    assert client.get("/v1/datasets/up", headers=admin_headers).status_code == 404


@pytest.mark.parametrize("name", ["up%0A", "up%0D%0A", ".up", "a%20b"])
def test_an_upload_name_that_is_not_a_dataset_name_is_refused(
    client: TestClient, admin_headers: dict[str, str], name: str
) -> None:
    body = _jsonl([{"prompt": "p", "completion": "c"}])
    response = client.post(
        f"/v1/datasets/{name}/upload", params={"kind": "sft"}, content=body, headers=admin_headers
    )
    _error(response, 422, "name")
    assert client.get("/v1/datasets", headers=admin_headers).json()["items"] == []


def test_mixing_is_deterministic_and_recorded(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus
) -> None:
    rows = [{"prompt": f"helpful {i}", "completion": f"answer {i}"} for i in range(40)]
    response = client.post(
        "/v1/datasets/helpful/upload",
        params={"kind": "sft"},
        content=_jsonl(rows),
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    plain = create(client, admin_headers, name="plain", kind="sft")
    n = plain["row_count"]
    mix = {"source": "helpful", "ratio": 0.25, "seed": 7}
    mixed = create(client, admin_headers, name="mixed", kind="sft", mix=mix)
    m = round(0.25 / 0.75 * n)
    assert mixed["mix"] == {"source": "helpful@1", "ratio": 0.25, "seed": 7, "count": m}
    assert mixed["row_count"] == n + m

    out = _lines(download(client, admin_headers, "mixed").content)
    positions = [i for i, r in enumerate(out) if r["label_id"] is None]
    assert positions == sorted(mixed_positions(n, m))
    # The label rows keep their order; the mixed rows are distinct upload rows.
    assert [r for r in out if r["label_id"] is not None] == _lines(
        download(client, admin_headers, "plain").content
    )
    texts = [out[p]["prompt"][0]["content"] for p in positions]
    assert len(set(texts)) == m and set(texts) <= {r["prompt"] for r in rows}

    # Same spec, same rows in the same places; another seed draws others.
    again = create(client, admin_headers, name="mixed", kind="sft", mix=mix)
    assert again["version"] == 2 and again["checksum"] == mixed["checksum"]
    other = create(client, admin_headers, name="mixed", kind="sft", mix=mix | {"seed": 8})
    assert other["checksum"] != mixed["checksum"]

    # Capped by the source's size.
    capped = create(
        client, admin_headers, name="capped", kind="sft", mix={"source": "helpful@1", "ratio": 0.95}
    )
    assert capped["mix"]["count"] == min(round(0.95 / 0.05 * n), 40) == 40
    assert capped["row_count"] == n + 40


def test_mixed_positions_partition_the_rows() -> None:
    for n in range(1, 30):
        for m in range(1, 30):
            total = n + m
            labels = {i * total // n for i in range(n)}
            mixed = mixed_positions(n, m)
            assert len(labels) == n and len(set(mixed)) == m
            assert labels | set(mixed) == set(range(total))
    assert mixed_count(0.25, 30, 100) == 10 and mixed_count(0.5, 3, 100) == 3
    assert mixed_count(0.5, 30, 7) == 7


# --------------------------------------------------------------------------- errors and scoping


def test_other_projects_get_404(
    client: TestClient,
    admin_headers: dict[str, str],
    make_headers: Callable[..., dict[str, str]],
    corpus: Corpus,
) -> None:
    create(client, admin_headers, name="secret", kind="sft")
    beta = make_headers("beta", "admin")
    for path in (
        "/v1/datasets/secret",
        "/v1/datasets/secret@1",
        "/v1/datasets/secret/export",
        "/v1/datasets/secret@1/export?format=parquet",
        "/v1/datasets/secret/versions",
    ):
        _error(client.get(path, headers=beta), 404)
    assert client.get("/v1/datasets", headers=beta).json()["items"] == []
    # Beta's filter cannot reach alpha's jobs or datasets.
    _error(
        client.post(
            "/v1/datasets",
            json={"name": "x", "kind": "sft", "filter": {"job_ids": [corpus.sl]}},
            headers=beta,
        ),
        422,
        "filter.job_ids",
    )
    _error(
        client.post("/v1/datasets", json={"name": "x", "kind": "sft"}, headers=beta),
        422,
        "filter",
    )
    # Reading needs the read scope, freezing the submit scope.
    read_only = make_headers("alpha", "read")
    assert client.get("/v1/datasets/secret", headers=read_only).status_code == 200
    _error(client.post("/v1/datasets", json={"name": "y", "kind": "sft"}, headers=read_only), 403)
    _error(client.get("/v1/datasets/secret/export"), 401)
    for ref in ("secret@2", "secret@x", "nope", "bad name"):
        _error(client.get(f"/v1/datasets/{ref}", headers=admin_headers), 404)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "rm"}, "body.kind"),
        ({"name": "has space"}, "body.name"),
        ({"filter": {"kinds": ["compare"]}}, "filter.kinds"),
        ({"filter": {"kinds": ["bogus"]}}, "body.filter.kinds.0"),
        ({"filter": {"min_confidence": 0.7}}, "filter.min_confidence"),
        ({"kind": "preference", "filter": {"min_confidence": 0.3}}, "body.filter.min_confidence"),
        ({"filter": {"exclude_swap_disagreements": True}}, "filter.exclude_swap_disagreements"),
        ({"filter": {"job_ids": ["nope"]}}, "filter.job_ids"),
        ({"filter": {"constitution": "missing@1"}}, "filter.constitution"),
        ({"filter": {"constitution": "default@9"}}, "filter.constitution"),
        ({"filter": {"constitution": "not a ref!"}}, "filter.constitution"),
        ({"filter": {"colour": "red"}}, "body.filter.colour"),
        (
            {"filter": {"created_after": "2030-01-01T00:00:00Z", "created_before": "2020-01-01"}},
            "body.filter",
        ),
        ({"filter": {"created_after": "2030-01-01T00:00:00Z"}}, "filter"),
        ({"mix": {"source": "helpful", "ratio": 1.0}}, "body.mix.ratio"),
        ({"mix": {"source": "helpful", "ratio": 0}}, "body.mix.ratio"),
        ({"mix": {"source": "helpful", "ratio": 0.2, "seed": -1}}, "body.mix.seed"),
        ({"mix": {"source": "nowhere", "ratio": 0.2}}, "mix.source"),
        ({"mix": {"source": "helpful@5", "ratio": 0.2}}, "mix.source"),
        ({"mix": {"source": "prefs", "ratio": 0.2}}, "mix.source"),
        ({"name": "prefs"}, "kind"),
    ],
)
def test_bad_specs_are_422_naming_the_field(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    change: dict[str, Any],
    field: str,
) -> None:
    upload = client.post(
        "/v1/datasets/helpful/upload",
        params={"kind": "sft"},
        content=_jsonl(HELPFUL_SFT),
        headers=admin_headers,
    )
    assert upload.status_code == 201
    create(client, admin_headers, name="prefs", kind="preference")
    body = {"name": "d", "kind": "sft"} | change
    _error(client.post("/v1/datasets", json=body, headers=admin_headers), 422, field)
    assert client.get("/v1/datasets/d", headers=admin_headers).status_code == 404


# --------------------------------------------------------------------------- SDK


class DropOnce(httpx.BaseTransport):
    """Cuts the first export response off after ``after`` bytes."""

    def __init__(self, inner: httpx.BaseTransport, after: int) -> None:
        self.inner, self.after, self.dropped = inner, after, 0
        self.starts: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        inner = self.inner.handle_request(request)
        try:
            body = b"".join(inner.stream)  # type: ignore[union-attr]
        finally:
            inner.close()
        cut = len(body)
        if request.url.path.endswith("/export"):
            self.starts.append(request.url.params.get("start", ""))
            if not self.dropped:
                self.dropped, cut = 1, self.after

        class Stream(httpx.SyncByteStream):
            def __iter__(self) -> Any:
                yield body[:cut]
                if cut < len(body):
                    raise httpx.ReadError("connection reset by peer")

        return httpx.Response(
            inner.status_code, headers=inner.headers, stream=Stream(), request=request
        )


def _sdk(
    client: TestClient, headers: dict[str, str], transport: httpx.BaseTransport
) -> CharterClient:
    sdk = CharterClient("http://testserver", headers["X-API-Key"])
    sdk._http.close()
    sdk._http = httpx.Client(base_url="http://testserver", headers=headers, transport=transport)
    return sdk


def test_sdk_exports_resume_after_a_drop_and_verify(
    client: TestClient, admin_headers: dict[str, str], corpus: Corpus, tmp_path: Path
) -> None:
    transport = DropOnce(client._transport, after=700)
    sdk = _sdk(client, admin_headers, transport)
    made = sdk.create_dataset("sdk", "preference", {"kinds": ["compare"]})
    assert sdk.dataset("sdk") == made == sdk.dataset("sdk@1")
    assert [d["ref"] for d in sdk.datasets()] == ["sdk@1"]
    dest = tmp_path / "sdk.jsonl"
    got = sdk.export_dataset("sdk", dest, retries=2)
    full = download(client, admin_headers, "sdk@1").content
    assert dest.read_bytes() == full
    assert got == {
        "ref": "sdk@1",
        "path": str(dest),
        "format": "jsonl",
        "rows": made["row_count"],
        "checksum": made["checksum"],
        "retries": 1,
    }
    # The retry asked for the rows after the last complete line.
    assert transport.starts == ["0", str(full[:700].count(b"\n"))]
    assert 0 < int(transport.starts[1]) < made["row_count"]

    # Parquet starts over after a drop.
    transport.dropped = 0
    pq_path = tmp_path / "sdk.parquet"
    assert sdk.export_dataset("sdk@1", pq_path, format="parquet")["retries"] == 1
    assert (
        pq_path.read_bytes() == download(client, admin_headers, "sdk@1", format="parquet").content
    )

    # A partial file is continued with resume=True; a corrupt one fails verification.
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(full[: full.index(b"\n", 900) + 10])
    assert sdk.export_dataset("sdk", partial, resume=True)["retries"] == 0
    assert partial.read_bytes() == full
    partial.write_bytes(b'{"tampered": true}\n' + full[full.index(b"\n") + 1 : 800])
    with pytest.raises(ChecksumMismatch):
        sdk.export_dataset("sdk", partial, resume=True)
    with pytest.raises(CharterAPIError) as info:
        sdk.export_dataset("missing", tmp_path / "x.jsonl")
    assert info.value.status_code == 404

    upload = tmp_path / "helpful.jsonl"
    upload.write_bytes(_jsonl(HELPFUL_SFT))
    assert sdk.upload_dataset("helpful", upload, kind="sft")["row_count"] == len(HELPFUL_SFT)


# --------------------------------------------------------------------------- TRL


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from transformers import AutoTokenizer

    from charter.model_store import prepare_smollm2

    try:
        path = prepare_smollm2(Path.home() / ".cache" / "charter" / "models" / "smollm2")
    except Exception as exc:  # the bundled model is optional in a development checkout
        pytest.skip(f"SmolLM2 is not available offline: {exc}")
    return AutoTokenizer.from_pretrained(path)


def _tiny_model(tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def test_trl_trains_on_the_exports_unchanged(
    client: TestClient,
    admin_headers: dict[str, str],
    corpus: Corpus,
    backend: str,
    tmp_path: Path,
    smollm2_tokenizer: Any,
) -> None:
    if backend != "sqlite":
        pytest.skip("the exported bytes are backend-independent; one backend trains")
    import torch
    import trl
    from datasets import load_dataset

    upload = client.post(
        "/v1/datasets/helpful/upload",
        params={"kind": "sft"},
        content=_jsonl(HELPFUL_SFT),
        headers=admin_headers,
    )
    assert upload.status_code == 201
    sft = create(
        client, admin_headers, name="sft", kind="sft", mix={"source": "helpful", "ratio": 0.2}
    )
    pref = create(client, admin_headers, name="pref", kind="preference")
    (tmp_path / "sft.jsonl").write_bytes(download(client, admin_headers, sft["ref"]).content)
    (tmp_path / "pref.parquet").write_bytes(
        download(client, admin_headers, pref["ref"], format="parquet").content
    )
    common = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenizer = smollm2_tokenizer
        data = load_dataset(
            "json",
            data_files=str(tmp_path / "sft.jsonl"),
            split="train",
            cache_dir=str(tmp_path / "c"),
        )
        trainer = trl.SFTTrainer(
            model=_tiny_model(tokenizer),
            args=trl.SFTConfig(**common, max_length=256),
            train_dataset=data,
            processing_class=tokenizer,
        )
        assert trainer.train().global_step == 1
        data = load_dataset(
            "parquet",
            data_files=str(tmp_path / "pref.parquet"),
            split="train",
            cache_dir=str(tmp_path / "c"),
        )
        trainer = trl.DPOTrainer(
            model=_tiny_model(tokenizer),
            ref_model=_tiny_model(tokenizer),
            args=trl.DPOConfig(**common, max_length=256),
            train_dataset=data,
            processing_class=tokenizer,
        )
        assert trainer.train().global_step == 1
    finally:
        torch.set_num_threads(threads)
