"""``/v1/constitutions``: push (YAML or JSON), dedupe by content, versions, diff, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from charter.core.constitution import Constitution

YAML = {"Content-Type": "application/yaml"}
CONSTITUTIONS = Path(__file__).resolve().parents[2] / "constitutions"


def _reordered(value: Any) -> Any:
    """The same document with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _changed(document: dict[str, Any]) -> dict[str, Any]:
    """One critique principle changed, one comparison principle added, one removed."""
    changed = copy.deepcopy(document)
    changed["critique_principles"][0]["critique"] += " Be specific."
    removed = changed["comparison_principles"].pop(1)
    changed["comparison_principles"].append(
        {"id": "more-concise", "text": "Which of these assistant responses is more concise?"}
    )
    assert removed["id"] == "less-unethical"
    return changed


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def test_push_yaml_creates_version_one(
    client: TestClient, admin_headers: dict[str, str], default_yaml: bytes
) -> None:
    response = client.post(
        "/v1/constitutions", content=default_yaml, headers={**admin_headers, **YAML}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    expected_hash = Constitution.model_validate(yaml.safe_load(default_yaml)).content_hash()
    assert body["name"] == "default"
    assert body["version"] == 1
    assert body["ref"] == "default@1"
    assert body["created"] is True
    assert body["content_hash"] == expected_hash
    assert body["content"] is None  # the push answer does not echo the document


def test_identical_content_as_json_with_other_key_order_is_same_version(
    client: TestClient,
    admin_headers: dict[str, str],
    default_yaml: bytes,
    default_document: dict[str, Any],
) -> None:
    first = client.post(
        "/v1/constitutions", content=default_yaml, headers={**admin_headers, **YAML}
    ).json()
    reordered = _reordered(default_document)
    assert list(reordered) != list(default_document)
    response = client.post(
        "/v1/constitutions",
        content=json.dumps(reordered, indent=3),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    again = response.json()
    assert again["version"] == first["version"] == 1
    assert again["content_hash"] == first["content_hash"]
    assert again["created"] is False
    versions = client.get("/v1/constitutions/default/versions", headers=admin_headers).json()
    assert [v["version"] for v in versions] == [1]


def test_changed_principle_makes_version_two_and_diff_names_exact_ids(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    default_document: dict[str, Any],
) -> None:
    v1 = api.push_default(admin_headers)
    response = client.post(
        "/v1/constitutions", json=_changed(default_document), headers=admin_headers
    )
    assert response.status_code == 201, response.text
    v2 = response.json()
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v2["ref"] == "default@2"
    assert v2["content_hash"] != v1["content_hash"]

    response = client.get(
        "/v1/constitutions/default/diff", params={"from": 1, "to": 2}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["from_version"], body["to_version"]) == ("default", 1, 2)
    diff = body["diff"]
    critique, comparison = diff["critique_principles"], diff["comparison_principles"]
    assert [c["id"] for c in critique["changed"]] == ["harmful-content"]
    assert critique["added"] == [] and critique["removed"] == []
    assert critique["changed"][0]["after"]["critique"].endswith("Be specific.")
    assert [p["id"] for p in comparison["added"]] == ["more-concise"]
    assert [p["id"] for p in comparison["removed"]] == ["less-unethical"]
    assert comparison["changed"] == []
    assert diff["description_changed"] is False
    assert diff["examples_changed"] is False
    assert diff["metadata_changed"] is False

    same = client.get(
        "/v1/constitutions/default/diff", params={"from": 2, "to": 2}, headers=admin_headers
    ).json()["diff"]
    for principle_set in ("critique_principles", "comparison_principles"):
        assert same[principle_set] == {"added": [], "removed": [], "changed": []}


def test_get_by_name_and_by_version_list_and_versions(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    default_document: dict[str, Any],
) -> None:
    v1 = api.push_default(admin_headers)
    v2 = api.push(admin_headers, _changed(default_document))
    response = client.post(
        "/v1/constitutions",
        content=(CONSTITUTIONS / "helpful-balance.yaml").read_bytes(),
        headers={**admin_headers, **YAML},
    )
    assert response.status_code == 201, response.text

    latest = client.get("/v1/constitutions/default", headers=admin_headers)
    assert latest.status_code == 200, latest.text
    assert latest.json()["version"] == 2
    assert latest.json()["content_hash"] == v2["content_hash"]
    assert Constitution.model_validate(latest.json()["content"]) == Constitution.model_validate(
        _changed(default_document)
    )

    pinned = client.get("/v1/constitutions/default@1", headers=admin_headers)
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["ref"] == "default@1"
    assert pinned.json()["content_hash"] == v1["content_hash"]
    assert (
        Constitution.model_validate(pinned.json()["content"]).content_hash() == v1["content_hash"]
    )

    listing = client.get("/v1/constitutions", headers=admin_headers)
    assert listing.status_code == 200
    assert [(c["name"], c["latest_version"], c["latest_ref"]) for c in listing.json()] == [
        ("default", 2, "default@2"),
        ("helpful-balance", 1, "helpful-balance@1"),
    ]

    versions = client.get("/v1/constitutions/default/versions", headers=admin_headers)
    assert versions.status_code == 200
    assert [(v["version"], v["content_hash"]) for v in versions.json()] == [
        (1, v1["content_hash"]),
        (2, v2["content_hash"]),
    ]


def test_push_invalid_yaml_is_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/constitutions",
        content=b"name: default\ncritique_principles: [unclosed\n  - : :",
        headers={**admin_headers, **YAML},
    )
    body = _error(response, 422, "body")
    assert "YAML" in body["detail"]


UNPARSEABLE = {
    "empty": (b"", "application/yaml"),
    "blank": (b"   \n", "application/json"),
    "bad-json": (b"{not json", "application/json"),
    "yaml-list": (b"- just\n- a list\n", "application/yaml"),
    "json-scalar": (b"42", "application/json"),
    "not-utf8": (b"\xff\xfe\x00garbage", "application/json"),
    "no-content-type": (b"name: default", ""),
}


def test_push_unparseable_or_non_mapping_is_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for case, (content, content_type) in UNPARSEABLE.items():
        headers = {**admin_headers, "Content-Type": content_type}
        response = client.post("/v1/constitutions", content=content, headers=headers)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["field"] == "body", case
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_push_missing_field_names_it(
    client: TestClient, admin_headers: dict[str, str], default_document: dict[str, Any]
) -> None:
    document = copy.deepcopy(default_document)
    del document["name"]
    body = _error(client.post("/v1/constitutions", json=document, headers=admin_headers), 422)
    assert set(body) == {"error", "detail", "field"}
    assert body["field"] == "name"
    assert "name" in body["detail"]

    document = copy.deepcopy(default_document)
    del document["critique_principles"][2]["revision"]
    body = _error(client.post("/v1/constitutions", json=document, headers=admin_headers), 422)
    assert body["field"] == "critique_principles.2.revision"


def _set_name(d: dict[str, Any]) -> None:
    d["name"] = "Not A Valid Name"


def _add_unknown(d: dict[str, Any]) -> None:
    d["unexpected"] = True


def _duplicate_id(d: dict[str, Any]) -> None:
    d["comparison_principles"].append(dict(d["comparison_principles"][0]))


def _no_principles(d: dict[str, Any]) -> None:
    d["critique_principles"] = d["comparison_principles"] = []


def _bad_answer(d: dict[str, Any]) -> None:
    d["comparison_examples"][0]["answer"] = "C"


def _wrong_type(d: dict[str, Any]) -> None:
    d["critique_principles"] = "not a list"


INVALID_DOCUMENTS = {
    "bad-name": (_set_name, "name"),
    "unknown-field": (_add_unknown, "unexpected"),
    "duplicate-id": (_duplicate_id, "comparison_principles"),
    "no-principles": (_no_principles, ""),
    "bad-answer": (_bad_answer, "comparison_examples.0.answer"),
    "wrong-type": (_wrong_type, "critique_principles"),
}


def test_push_invalid_document_is_422(
    client: TestClient, admin_headers: dict[str, str], default_document: dict[str, Any]
) -> None:
    for case, (mutate, field) in INVALID_DOCUMENTS.items():
        document = copy.deepcopy(default_document)
        mutate(document)
        response = client.post("/v1/constitutions", json=document, headers=admin_headers)
        assert response.status_code == 422, (case, response.text)
        body = response.json()
        assert set(body) == {"error", "detail", "field"}, case
        assert body["field"].startswith(field), (case, body)
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_unknown_name_or_version_is_404(
    api: Any, client: TestClient, admin_headers: dict[str, str]
) -> None:
    api.push_default(admin_headers)
    _error(client.get("/v1/constitutions/nope", headers=admin_headers), 404, "ref")
    _error(client.get("/v1/constitutions/default@9", headers=admin_headers), 404, "ref")
    _error(client.get("/v1/constitutions/nope/versions", headers=admin_headers), 404, "name")
    _error(client.get("/v1/constitutions/nope/diff?from=1&to=1", headers=admin_headers), 404)
    _error(
        client.get("/v1/constitutions/default/diff?from=1&to=3", headers=admin_headers),
        404,
        "to_version",
    )
    _error(
        client.get("/v1/constitutions/default/diff?from=5&to=1", headers=admin_headers),
        404,
        "from_version",
    )


def test_bad_ref_in_a_path_is_404(
    api: Any, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """In a path a malformed ref names nothing, like any unknown id (datasets agree);
    in a request body it is a 422 naming the field."""
    api.push_default(admin_headers)
    for ref in ("Bad@x", "default@0", "default@", "default@1@2", "-x", "default@x", "0.1.0"):
        response = client.get(f"/v1/constitutions/{ref}", headers=admin_headers)
        assert response.status_code == 404, (ref, response.text)
        assert response.json()["field"] == "ref", ref
        assert "not a constitution reference" in response.json()["detail"]
    batch = api.create_batch(admin_headers, [{"prompt": "p"}])
    job = {"type": "sl_cai", "batch_id": batch["id"], "model": "smollm2", "constitution": "Bad@x"}
    response = client.post("/v1/jobs", json=job, headers=admin_headers)
    assert response.status_code == 422 and response.json()["field"] == "constitution"


def test_diff_of_an_unknown_name_is_404(
    api: Any, client: TestClient, admin_headers: dict[str, str]
) -> None:
    api.push_default(admin_headers)
    for name in ("0.1.0", "nope"):
        response = client.get(f"/v1/constitutions/{name}/diff?from=1&to=1", headers=admin_headers)
        assert response.status_code == 404 and response.json()["field"] == "name", response.text
    too_big = client.get(
        "/v1/constitutions/default/diff?from=1&to=2147483648", headers=admin_headers
    )
    assert too_big.status_code == 422 and too_big.json()["field"] == "query.to"


def test_diff_bad_query_is_422(api: Any, client: TestClient, admin_headers: dict[str, str]) -> None:
    api.push_default(admin_headers)
    for query in ("", "from=1", "from=0&to=1", "from=a&to=1"):
        response = client.get(f"/v1/constitutions/default/diff?{query}", headers=admin_headers)
        assert response.status_code == 422, (query, response.text)
        assert response.json()["field"].startswith("query."), query


def test_read_scope_cannot_push(client: TestClient, make_headers: Any, default_yaml: bytes) -> None:
    reader = make_headers("alpha", "read")
    response = client.post("/v1/constitutions", content=default_yaml, headers={**reader, **YAML})
    _error(response, 403)
    assert client.get("/v1/constitutions", headers=reader).json() == []
