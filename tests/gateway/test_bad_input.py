"""Attacker-shaped input answers 4xx naming the part at fault, and writes nothing.

Every class of input that used to crash a request (a 500, or minutes of CPU):
lone surrogates, NUL, nesting 100k deep, 5,000-digit integers, 1e400, NaN and
Infinity, YAML anchors, aliases (the alias bomb) and foreign tags, duplicate
keys, non-ASCII digits and 20-digit versions in refs, crafted cursors, oversize
JSONL lines and wrong content types. Each case checks the status (4xx, never
5xx), the error shape (``error``, ``detail`` and a ``field`` naming the place),
and that no row was written.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from charter.db import models
from charter.db.session import session_factory
from tests.conftest import ALIAS_BOMB

JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}
NDJSON = {"Content-Type": "application/x-ndjson"}
DEEP = 100_000
HUGE_INT = "9" * 5000
TWENTY_DIGITS = "9" * 20
WRITABLE = (
    models.Constitution,
    models.ConstitutionVersion,
    models.PromptBatch,
    models.Prompt,
    models.Dataset,
    models.DatasetVersion,
    models.DatasetRow,
    models.Job,
    models.TrainingRun,
    models.IdempotencyRecord,
)


def _counts(engine: Engine) -> dict[str, int]:
    with session_factory(engine)() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in WRITABLE
        }


@pytest.fixture
def unchanged(engine: Engine) -> Any:
    """``with unchanged(): ...`` asserts that no table gained or lost a row inside."""

    class Unchanged:
        def __enter__(self) -> None:
            self.before = _counts(engine)

        def __exit__(self, *exc: object) -> None:
            if exc[0] is None:
                assert _counts(engine) == self.before

    return Unchanged


def _refused(response: Any, field: str | Callable[[str], bool], *words: str) -> dict[str, Any]:
    """A 4xx in the error shape, naming ``field`` (or a field the predicate accepts)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    body = response.json()
    assert {"error", "detail", "field"} <= set(body), body
    assert isinstance(body["detail"], str) and body["detail"], body
    if callable(field):
        assert field(body["field"]), body
    else:
        assert body["field"] == field, body
    for word in words:
        assert word in body["detail"], (word, body)
    return body


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --------------------------------------------------------------------------- constitutions


def _json_with_metadata(document: dict[str, Any], metadata: str) -> bytes:
    """The document as JSON text with ``metadata`` spliced in as raw JSON."""
    return json.dumps({**document, "metadata": "@@"}).replace('"@@"', metadata).encode()


JSON_METADATA = {
    # case: (raw JSON for metadata, field, words in the detail)
    "lone surrogate": ('{"note": "\\ud800"}', "body.metadata.note", "surrogate"),
    "lone surrogate key": ('{"\\udc00": 1}', "body.metadata", "surrogate"),
    "NUL": ('{"note": "a\\u0000b"}', "body.metadata.note", "NUL"),
    "100k deep": (_nested(DEEP), "body", "32 levels"),
    "40 deep": ('{"x": ' + _nested(40) + "}", "body.metadata.x" + ".0" * 30, "32 levels"),
    "5000 digits": ('{"n": ' + HUGE_INT + "}", "body.metadata.n", "64-bit"),
    "1e400": ('{"x": 1e400}', "body.metadata.x", "infinity"),
    "NaN": ('{"x": NaN}', "body.metadata.x", "NaN"),
    "Infinity": ('{"x": Infinity}', "body.metadata.x", "Infinity"),
    "-Infinity": ('{"x": [-Infinity]}', "body.metadata.x.0", "Infinity"),
    "duplicate key": ('{"k": 1, "j": 2, "k": 3}', "body.metadata.k", "duplicate"),
    "huge string": ('{"s": "' + "x" * 1_000_001 + '"}', "body.metadata.s", "1000000"),
}


@pytest.mark.parametrize("case", sorted(JSON_METADATA))
def test_constitution_json_refused(
    client: TestClient,
    admin_headers: dict[str, str],
    default_document: dict[str, Any],
    unchanged: Any,
    case: str,
) -> None:
    metadata, field, words = JSON_METADATA[case]
    with unchanged():
        response = client.post(
            "/v1/constitutions",
            content=_json_with_metadata(default_document, metadata),
            headers={**admin_headers, **JSON},
        )
        _refused(response, field, words)
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_constitution_json_duplicate_top_level_key(
    client: TestClient, admin_headers: dict[str, str], default_document: dict[str, Any]
) -> None:
    text = '{"name": "other", ' + json.dumps(default_document)[1:]
    response = client.post("/v1/constitutions", content=text, headers={**admin_headers, **JSON})
    _refused(response, "body.name", "duplicate key 'name'")
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


YAML_METADATA = {
    # case: (YAML appended under metadata, field, words in the detail)
    "lone surrogate": (b'  note: "\\ud800"', "body.metadata.note", "surrogate"),
    "NUL": (b'  note: "a\\0b"', "body.metadata.note", "NUL"),
    "100k deep": (
        b"  x: " + _nested(DEEP).encode(),
        lambda field: field.startswith("body.metadata.x.0.0"),
        "32 levels",
    ),
    "5000 digits": (b"  n: " + HUGE_INT.encode(), "body.metadata.n", "64-bit"),
    "1e400": (b"  x: 1.0e+400", "body.metadata.x", "finite"),
    "NaN": (b"  x: .nan", "body.metadata.x", "NaN"),
    "Infinity": (b"  x: [-.inf]", "body.metadata.x.0", "Infinity"),
    "single alias": (b"  x: *themes", "body.metadata.x", "aliases"),
    "single anchor": (b"  x: &a plain", "body.metadata.x", "anchors"),
    "binary": (b"  blob: !!binary aGVsbG8=", "body.metadata.blob", "!!binary"),
    "python object": (
        b'  x: !!python/object/apply:os.system ["true"]',
        "body.metadata.x",
        "is not allowed",
    ),
    "custom tag": (b"  x: !secret value", "body.metadata.x", "!secret"),
    "set": (b"  x: !!set {a, b}", "body.metadata.x", "!!set"),
    "duplicate key": (b"  source: again", "body.metadata.source", "duplicate key 'source'"),
    "non-string key": (b"  1: one", "body.metadata", "keys must be strings"),
    "complex key": (b"  ? [a, b]\n  : x", "body.metadata", "keys must be strings"),
    "second document": (b"---\nname: other", "body", "one document"),
}


@pytest.mark.parametrize("case", sorted(YAML_METADATA))
def test_constitution_yaml_refused(
    client: TestClient,
    admin_headers: dict[str, str],
    default_yaml: bytes,
    unchanged: Any,
    case: str,
) -> None:
    extra, field, words = YAML_METADATA[case]
    assert default_yaml.rstrip().endswith(b"(helpful harmlessness)")  # metadata comes last
    with unchanged():
        response = client.post(
            "/v1/constitutions",
            content=default_yaml.rstrip() + b"\n" + extra + b"\n",
            headers={**admin_headers, **YAML},
        )
        _refused(response, field, words)
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_constitution_yaml_alias_bomb_is_refused_at_once(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any
) -> None:
    assert len(ALIAS_BOMB) < 600
    with unchanged():
        start = time.perf_counter()
        response = client.post(
            "/v1/constitutions", content=ALIAS_BOMB, headers={**admin_headers, **YAML}
        )
        elapsed = time.perf_counter() - start
        _refused(response, "body.metadata.a", "anchors (&a) are not allowed")
    assert elapsed < 2, elapsed  # the whole request; the expansion alone took ~52 s
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "text/csv",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/x-ndjson",
    ],
)
def test_constitution_wrong_content_type(
    client: TestClient,
    admin_headers: dict[str, str],
    default_document: dict[str, Any],
    content_type: str,
) -> None:
    response = client.post(
        "/v1/constitutions",
        content=json.dumps(default_document),
        headers={**admin_headers, "Content-Type": content_type},
    )
    _refused(response, "Content-Type", "application/json", "application/yaml")
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_constitution_content_types_with_parameters_are_read(
    client: TestClient, admin_headers: dict[str, str], default_yaml: bytes
) -> None:
    for content_type in ("application/yaml; charset=utf-8", "text/yaml", "application/x-yaml"):
        response = client.post(
            "/v1/constitutions",
            content=default_yaml,
            headers={**admin_headers, "Content-Type": content_type},
        )
        assert response.status_code in (200, 201), (content_type, response.text)


def test_constitution_not_utf8(client: TestClient, admin_headers: dict[str, str]) -> None:
    for content, headers in (
        (b'{"name": "\xff"}', JSON),
        ("name: x\n".encode("utf-16"), YAML),
        (b'{"name": "\xed\xa0\x80"}', JSON),  # a surrogate encoded as UTF-8
    ):
        response = client.post(
            "/v1/constitutions", content=content, headers={**admin_headers, **headers}
        )
        _refused(response, "body", "UTF-8")
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_constitution_over_the_canonical_size_is_413(
    make_client: Callable[..., TestClient],
    admin_headers: dict[str, str],
    default_document: dict[str, Any],
    engine: Engine,
) -> None:
    client = make_client(max_constitution_bytes=20_000)  # the default one is ~15 kB
    before = _counts(engine)
    big = {**default_document, "metadata": {"notes": ["n" * 1000] * 20}}
    response = client.post("/v1/constitutions", json=big, headers=admin_headers)
    body = _refused(response, "body", "canonical form", "20000 bytes")
    assert response.status_code == 413, body
    # A body far larger than any constitution that fits is refused before parsing.
    padded = json.dumps(default_document, indent=2000).encode()
    assert len(padded) > 4 * 20_000
    response = client.post("/v1/constitutions", content=padded, headers={**admin_headers, **JSON})
    _refused(response, "body", "at most 80000 bytes")
    assert response.status_code == 413
    assert _counts(engine) == before
    # The default constitution itself fits.
    assert (
        client.post("/v1/constitutions", json=default_document, headers=admin_headers).status_code
        == 201
    )


# --------------------------------------------------------------------------- refs


BAD_VERSIONS = [
    "²",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() is True
    "1²",
    "\uff11",  # FULLWIDTH DIGIT ONE
    TWENTY_DIGITS,
    "1234567890",
    "0",
    "01",
    "1.0",
    "-1",
    "",
    " 1",
    "1e3",
]


def test_constitution_refs_with_bad_versions(
    api: Any, client: TestClient, admin_headers: dict[str, str], unchanged: Any
) -> None:
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": "x"}])
    assert client.get("/v1/constitutions/default@1", headers=admin_headers).status_code == 200
    with unchanged():
        for version in BAD_VERSIONS:
            ref = f"default@{version}"
            _refused(client.get(f"/v1/constitutions/{ref}", headers=admin_headers), "ref")
            job = {
                "type": "sl_cai",
                "batch_id": batch["id"],
                "constitution": ref,
                "model": "smollm2",
            }
            _refused(client.post("/v1/jobs", json=job, headers=admin_headers), "constitution")
            spec = {"name": "d", "kind": "sft", "filter": {"constitution": ref}}
            _refused(
                client.post("/v1/datasets", json=spec, headers=admin_headers),
                "filter.constitution",
            )


def test_dataset_refs_with_bad_versions(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any
) -> None:
    row = {"prompt": "How do I boil an egg?", "completion": "Simmer it for eight minutes."}
    response = client.post(
        "/v1/datasets/helpful/upload?kind=sft",
        content=json.dumps(row).encode() + b"\n",
        headers={**admin_headers, **NDJSON},
    )
    assert response.status_code == 201, response.text
    assert client.get("/v1/datasets/helpful@1", headers=admin_headers).status_code == 200
    with unchanged():
        for version in BAD_VERSIONS:
            ref = f"helpful@{version}"
            _refused(client.get(f"/v1/datasets/{ref}", headers=admin_headers), "ref", "not found")
            _refused(client.get(f"/v1/datasets/{ref}/export", headers=admin_headers), "ref")
            run = {"type": "sft", "dataset": ref, "base_model": "smollm2"}
            _refused(client.post("/v1/runs", json=run, headers=admin_headers), "dataset")


# --------------------------------------------------------------------------- prompt batches


JSONL_LINES = {
    # case: (raw JSON of line 2, words in the detail)
    "lone surrogate": ('{"prompt": "x\\ud800"}', "prompt: string holds a lone surrogate"),
    "lone surrogate in messages": (
        '{"messages": [{"role": "user", "content": "\\udfff"}]}',
        "messages.0.content",
    ),
    "NUL": ('{"prompt": "a\\u0000b"}', "NUL"),
    "100k deep": ('{"prompt": "x", "messages": ' + _nested(DEEP) + "}", "32 levels"),
    "5000 digits": ('{"prompt": "x", "n": ' + HUGE_INT + "}", "n: integer literal"),
    "1e400": ('{"prompt": "x", "response": 1e400}', "response: number 1e400 overflows"),
    "NaN": ('{"prompt": NaN}', "prompt: NaN"),
    "Infinity": (
        '{"prompt": "x", "response_a": Infinity, "response_b": "y"}',
        "response_a: Infinity is not allowed",
    ),
    "duplicate key": ('{"prompt": "a", "prompt": "b"}', "duplicate key 'prompt'"),
    "not utf-8": ('{"prompt": "\xff"}', "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(JSONL_LINES))
def test_batch_upload_line_refused(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any, case: str
) -> None:
    line, words = JSONL_LINES[case]
    raw = line.encode("latin-1") if case == "not utf-8" else line.encode()
    body = b'{"prompt": "fine"}\n' + raw + b'\n{"prompt": "never read"}\n'
    with unchanged():
        response = client.post(
            "/v1/batches/upload", content=body, headers={**admin_headers, **NDJSON}
        )
        _refused(response, "line 2", "line 2: ", words)
    assert client.get("/v1/batches", headers=admin_headers).json()["items"] == []


def test_batch_upload_oversize_line_is_413(
    make_client: Callable[..., TestClient],
    client: TestClient,
    admin_headers: dict[str, str],
    unchanged: Any,
) -> None:
    small = make_client(max_jsonl_line_bytes=1024)
    with unchanged():
        body = b'{"prompt": "ok"}\n' + json.dumps({"prompt": "p" * 2000}).encode() + b"\n"
        response = small.post(
            "/v1/batches/upload", content=body, headers={**admin_headers, **NDJSON}
        )
        _refused(response, "line 2", "1024 bytes")
        assert response.status_code == 413
        # The default limit (1 MiB) applies too, before the line is parsed.
        body = b'{"prompt": "ok"}\n' * 3 + b'{"prompt": "' + b"p" * (1024 * 1024) + b'"}\n'
        response = client.post(
            "/v1/batches/upload", content=body, headers={**admin_headers, **NDJSON}
        )
        _refused(response, "line 4", "1048576 bytes")
    ok = small.post(
        "/v1/batches/upload",
        content=json.dumps({"prompt": "p" * 900}).encode(),
        headers={**admin_headers, **NDJSON},
    )
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/yaml",
        "text/csv",
    ],
)
def test_batch_upload_wrong_content_type(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any, content_type: str
) -> None:
    with unchanged():
        response = client.post(
            "/v1/batches/upload",
            content=b'{"prompt": "x"}\n',
            headers={**admin_headers, "Content-Type": content_type},
        )
        _refused(response, "Content-Type", "application/x-ndjson")


def test_batch_upload_accepts_jsonl_content_types(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for content_type in ("application/x-ndjson; charset=utf-8", "application/jsonl", "text/plain"):
        response = client.post(
            "/v1/batches/upload",
            content=b'{"prompt": "x"}\n',
            headers={**admin_headers, "Content-Type": content_type},
        )
        assert response.status_code == 201, (content_type, response.text)


def _rows(prompt: str = '"x"') -> str:
    return '[{"prompt": ' + prompt + "}]"


# JSON bodies of ordinary pydantic routes: parsed strictly by UnitOfWorkRoute.
BATCH_BODIES = {
    # case: (body, field, words in the detail)
    "lone surrogate": ('{"rows": ' + _rows('"\\ud800"') + "}", "body.rows.0.prompt", "surrogate"),
    "NUL": ('{"rows": ' + _rows('"a\\u0000b"') + "}", "body.rows.0.prompt", "NUL"),
    "100k deep": ('{"rows": ' + _nested(DEEP) + "}", "body", "32 levels"),
    "5000 digits": ('{"name": ' + HUGE_INT + ', "rows": ' + _rows() + "}", "body.name", "64-bit"),
    "1e400": ('{"name": 1e400, "rows": ' + _rows() + "}", "body.name", "overflows to infinity"),
    "NaN": ('{"name": NaN, "rows": ' + _rows() + "}", "body.name", "NaN is not allowed"),
    "duplicate key": (
        '{"rows": ' + _rows() + ', "rows": ' + _rows() + "}",
        "body.rows",
        "duplicate key 'rows'",
    ),
}


@pytest.mark.parametrize("case", sorted(BATCH_BODIES))
def test_batch_create_json_refused(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any, case: str
) -> None:
    content, field, words = BATCH_BODIES[case]
    with unchanged():
        response = client.post("/v1/batches", content=content, headers={**admin_headers, **JSON})
        _refused(response, field, words)
    assert client.get("/v1/batches", headers=admin_headers).json()["items"] == []


# --------------------------------------------------------------------------- datasets and runs


DATASET_LINES = {
    # case: (line, dataset kind, words in the detail)
    "lone surrogate": (
        '{"prompt": "\\ud800", "completion": "x"}',
        "sft",
        "prompt: string holds a lone",
    ),
    "duplicate key": (
        '{"prompt": "a", "completion": "x", "completion": "y"}',
        "sft",
        "completion: duplicate key",
    ),
    "NaN": (
        '{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_probability": NaN}',
        "preference",
        "chosen_probability: NaN is not allowed",
    ),
    "100k deep": ('{"prompt": ' + _nested(DEEP) + ', "completion": "x"}', "sft", "32 levels"),
}


@pytest.mark.parametrize("case", sorted(DATASET_LINES))
def test_dataset_upload_line_refused(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any, case: str
) -> None:
    line, kind, words = DATASET_LINES[case]
    with unchanged():
        response = client.post(
            f"/v1/datasets/up/upload?kind={kind}",
            content=line.encode() + b"\n",
            headers={**admin_headers, **NDJSON},
        )
        _refused(response, "line 1", "line 1: ", words)
    assert client.get("/v1/datasets", headers=admin_headers).json()["items"] == []


RUN_CONFIGS = {
    # case: (raw JSON of config, field, words in the detail)
    "lone surrogate": ('{"note": "\\ud800"}', "body.config.note", "surrogate"),
    "NUL": ('{"note": "\\u0000"}', "body.config.note", "NUL"),
    "100k deep": (_nested(DEEP), "body", "32 levels"),
    "5000 digits": ('{"steps": ' + HUGE_INT + "}", "body.config.steps", "64-bit"),
    "1e400": ('{"lr": 1e400}', "body.config.lr", "overflows to infinity"),
    "NaN": ('{"lr": NaN}', "body.config.lr", "NaN is not allowed"),
    "Infinity": ('{"lr": -Infinity}', "body.config.lr", "-Infinity is not allowed"),
    "duplicate key": ('{"lr": 0.1, "lr": 0.2}', "body.config.lr", "duplicate key 'lr'"),
}


@pytest.mark.parametrize("case", sorted(RUN_CONFIGS))
def test_run_config_refused(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any, case: str
) -> None:
    config, field, words = RUN_CONFIGS[case]
    content = '{"type": "sft", "dataset": "d", "base_model": "smollm2", "config": ' + config + "}"
    with unchanged():
        response = client.post("/v1/runs", content=content, headers={**admin_headers, **JSON})
        _refused(response, field, words)


# --------------------------------------------------------------------------- cursors


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSORS = {
    # case: (cursor, words in the detail)
    "huge": ("A" * 20_000, "longer than 512"),
    "just over the limit": ("A" * 513, "longer than 512"),
    "nested 1500 deep": (_cursor(_nested(1500).encode()), "longer than 512"),  # was a 500
    "nested 100 deep": (_cursor(_nested(100).encode()), "not one this API issued"),
    "nested 5 deep": (_cursor(b"[[[[[1]]]]]"), "not one this API issued"),
    "300 digits": (_cursor(b"9" * 300), "not one this API issued"),
    "5000 digits": (_cursor(HUGE_INT.encode()), "longer than 512"),
    "lone surrogate": (_cursor(b'["\\ud800", "x"]'), "not one this API issued"),
    "NaN": (_cursor(b"NaN"), "not one this API issued"),
    "duplicate keys": (_cursor(b'{"a": 1, "a": 2}'), "not one this API issued"),
    "long string": (_cursor(b'["' + b"x" * 300 + b'", "y"]'), "not one this API issued"),
    "not utf-8": (_cursor(b'["\xff", "x"]'), "not one this API issued"),
}


def test_crafted_cursors_are_422_on_every_list(
    client: TestClient, admin_headers: dict[str, str], unchanged: Any
) -> None:
    upload = client.post(
        "/v1/batches/upload", content=b'{"prompt": "x"}\n', headers={**admin_headers, **NDJSON}
    )
    batch = upload.json()["id"]
    urls = [
        "/v1/batches",
        f"/v1/batches/{batch}/prompts",
        "/v1/datasets",
        "/v1/runs",
        "/v1/jobs",
    ]
    with unchanged():
        for url in urls:
            for case, (cursor, words) in CURSORS.items():
                response = client.get(url, params={"cursor": cursor}, headers=admin_headers)
                assert response.status_code == 422, (url, case, response.text[:300])
                _refused(response, "cursor", words)
