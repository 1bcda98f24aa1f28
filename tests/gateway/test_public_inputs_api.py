"""Public inputs over the API: push in three formats, analyse, publish a constitution.

The population is two opinion camps of 20 people. Everyone agrees with four statements,
the camps split on four, and everyone rejects two; a few votes are missing and a few are
passes, so nothing is perfectly clean.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from charter.db.session import session_factory
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

STATEMENTS = [
    ("1", "The AI should not help anyone cause physical harm."),
    ("2", "The AI should be honest about what it does not know."),
    ("3", "The AI should treat people of every background with respect."),
    ("4", "The AI should always put the collective good above the individual."),
    ("5", "The AI should refuse to discuss religion."),
    ("6", "The AI should share its opinions on politics when asked."),
    ("7", "The AI should prioritise tradition over change."),
    ("8", "The AI should explain its reasoning."),
    ("9", "The AI should pretend to be a human when asked."),
    ("10", "The AI should flatter whoever it talks to."),
]
AGREED, SPLIT = {"1", "2", "3", "8"}, {"4", "5", "6", "7"}


def _vote(person: int, statement: int) -> int | None:
    camp = person % 2
    if (person * 7 + statement) % 11 == 0:
        return None  # never saw it
    if (person * 5 + statement) % 13 == 0:
        return 0  # passed
    sid = STATEMENTS[statement][0]
    if sid in AGREED:
        return 1
    if sid in SPLIT:
        return 1 if camp == 0 else -1
    return -1


def _population() -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
    votes = []
    for person in range(40):
        for j, (sid, _) in enumerate(STATEMENTS):
            vote = _vote(person, j)
            if vote is not None:
                votes.append((f"p{person}", sid, vote))
    return STATEMENTS, votes


def json_upload() -> dict[str, Any]:
    statements, votes = _population()
    return {
        "format": "json",
        "statements": [{"id": sid, "text": text} for sid, text in statements],
        "votes": [{"participant": p, "statement": s, "vote": v} for p, s, v in votes],
    }


def _csv(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def csv_upload() -> dict[str, Any]:
    statements, votes = _population()
    return {
        "format": "csv",
        "statements": _csv(["statement", "text"], statements),
        "votes": _csv(["participant", "statement", "vote"], votes),
    }


def polis_upload() -> dict[str, Any]:
    statements, votes = _population()
    cast = {(p, s): v for p, s, v in votes}
    people = list(dict.fromkeys(p for p, _, _ in votes))
    ids = {sid: sid for sid, _ in statements}  # Polis numbers its comments
    comments = _csv(
        ["comment-id", "comment-body", "moderated"],
        [(ids[sid], text, 1) for sid, text in statements],
    )
    header = ["participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree"]
    rows = [
        (
            p,
            "",
            0,
            0,
            0,
            0,
            *(cast.get((p, sid), "") for sid, _ in statements),
        )
        for p in people
    ]
    return {
        "format": "polis",
        "comments": comments,
        "participants_votes": _csv(header + [ids[sid] for sid, _ in statements], rows),
    }


def _push(client: TestClient, headers: dict[str, str], body: dict[str, Any], name: str = "town"):
    return client.post(f"/v1/public-inputs/{name}", json=body, headers=headers)


def test_a_public_input_is_versioned_by_its_content(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    first = _push(client, admin_headers, json_upload())
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["ref"] == "town@1" and body["created"] is True
    assert (body["statement_count"], body["participant_count"]) == (10, 40)
    assert body["vote_count"] == len(_population()[1])
    again = _push(client, admin_headers, json_upload())
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["id"] == body["id"]
    changed = json_upload()
    changed["votes"] = changed["votes"][:-1]
    second = _push(client, admin_headers, changed)
    assert second.status_code == 201 and second.json()["ref"] == "town@2"
    listed = client.get("/v1/public-inputs", headers=admin_headers).json()
    assert [r["ref"] for r in listed] == ["town@1", "town@2"]
    assert client.get("/v1/public-inputs/town", headers=admin_headers).json()["version"] == 2
    assert client.get("/v1/public-inputs/town@1", headers=admin_headers).json()["id"] == body["id"]


@pytest.mark.parametrize("upload", [csv_upload, polis_upload])
def test_every_format_reads_the_same_population(
    client: TestClient, admin_headers: dict[str, str], upload: Any
) -> None:
    reference = _push(client, admin_headers, json_upload(), name="reference").json()
    other = _push(client, admin_headers, upload(), name="other")
    assert other.status_code == 201, other.text
    assert other.json()["content_hash"] == reference["content_hash"]
    assert other.json()["source_format"] == upload().get("format")


def test_bad_input_is_refused_whole_with_every_line_named(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    body = csv_upload()
    lines = body["votes"].splitlines()
    lines[3] = "p1,s1,maybe"
    lines[5] = "p2,nope,1"
    body["votes"] = "\n".join(lines) + "\n"
    response = _push(client, admin_headers, body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == "body.votes"
    assert "votes line 4" in error["detail"] and "votes line 6" in error["detail"]
    assert "'vote'" in error["detail"]
    assert client.get("/v1/public-inputs", headers=admin_headers).json() == []
    wrong = client.post(
        "/v1/public-inputs/town", json={"format": "xlsx", "data": ""}, headers=admin_headers
    )
    assert wrong.status_code == 422 and "format" in wrong.text


def test_the_analysis_finds_the_camps_and_what_they_share(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    _push(client, admin_headers, json_upload())
    response = client.get(
        "/v1/public-inputs/town/analysis",
        params={"min_votes": 4, "participants": "true"},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    analysis = response.json()
    assert analysis["k"] == 2 and sorted(g["size"] for g in analysis["groups"]) == [20, 20]
    by_id = {s["id"]: s for s in analysis["statements"]}
    assert {s for s, r in by_id.items() if r["candidate"]} == AGREED
    assert {s for s, r in by_id.items() if r["divisive"]} == SPLIT
    assert {s["id"] for s in analysis["statements"][:4]} == AGREED  # consensus first
    camps = {}
    for p in analysis["participants"]:
        camps.setdefault(int(p["id"][1:]) % 2, set()).add(p["group"])
    assert all(len(groups) == 1 for groups in camps.values())  # each camp is one group
    assert camps[0] != camps[1]
    assert analysis["grouped"] == 40 and analysis["excluded"] == 0
    again = client.get(
        "/v1/public-inputs/town/analysis", params={"min_votes": 4}, headers=admin_headers
    ).json()
    assert again["participants"] is None
    assert again["statements"] == analysis["statements"]  # deterministic
    nobody = client.get(
        "/v1/public-inputs/town/analysis", params={"min_votes": 100}, headers=admin_headers
    )
    assert nobody.status_code == 422 and nobody.json()["field"] == "min_votes"


def test_publishing_drafts_a_constitution_with_its_provenance(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    _push(client, admin_headers, json_upload())
    response = client.post(
        "/v1/public-inputs/town/constitution",
        json={"name": "town-charter", "min_votes": 4},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    published = response.json()
    assert published["constitution"] == "town-charter@1"
    assert [s["id"] for s in published["statements"]] == [
        s["id"]
        for s in client.get(
            "/v1/public-inputs/town/analysis", params={"min_votes": 4}, headers=admin_headers
        ).json()["statements"][:4]
    ]
    content = client.get("/v1/constitutions/town-charter@1", headers=admin_headers).json()[
        "content"
    ]
    assert [p["id"] for p in content["comparison_principles"]] == [
        f"public-{s['id']}" for s in published["statements"]
    ]
    assert STATEMENTS[0][1] in " ".join(p["text"] for p in content["comparison_principles"])
    assert len(content["critique_principles"]) == 4
    provenance = content["metadata"]["provenance"]
    assert provenance["public_input"] == "town@1" and provenance["participants"] == 40
    assert provenance["parameters"]["min_votes"] == 4
    assert [p["statement_id"] for p in provenance["principles"]] == [
        s["id"] for s in published["statements"]
    ]
    again = client.post(
        "/v1/public-inputs/town/constitution",
        json={"name": "town-charter", "min_votes": 4},
        headers=admin_headers,
    )
    assert again.status_code == 200 and again.json()["created"] is False
    chosen = client.post(
        "/v1/public-inputs/town@1/constitution",
        json={"name": "town-split", "min_votes": 4, "statements": ["4", "2"]},
        headers=admin_headers,
    )
    assert chosen.status_code == 201, chosen.text
    assert [s["id"] for s in chosen.json()["statements"]] == ["4", "2"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "c", "statements": ["1", "99"]}, "statements"),
        ({"name": "c", "min_group_agreement": 0.99}, "min_group_agreement"),
        ({"name": "Not A Name"}, "body.name"),
    ],
)
def test_a_draft_that_cannot_be_made_names_the_field(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    _push(client, admin_headers, json_upload())
    response = client.post(
        "/v1/public-inputs/town/constitution", json={"min_votes": 4, **body}, headers=admin_headers
    )
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field or any(e["field"] == field for e in error.get("errors") or [])
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []


def test_another_projects_public_input_is_not_found(
    client: TestClient, admin_headers: dict[str, str], make_headers: Any
) -> None:
    _push(client, admin_headers, json_upload())
    other = make_headers("beta", "admin")
    assert client.get("/v1/public-inputs/town", headers=other).status_code == 404
    assert client.get("/v1/public-inputs/town/analysis", headers=other).status_code == 404
    response = client.post("/v1/public-inputs/town/constitution", json={"name": "x"}, headers=other)
    assert response.status_code == 404


def test_a_draft_is_previewed_and_edited_before_anything_is_stored(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    _push(client, admin_headers, json_upload())
    body = {"name": "town-charter", "min_votes": 4}
    preview = client.post("/v1/public-inputs/town/draft", json=body, headers=admin_headers)
    assert preview.status_code == 200, preview.text
    document = preview.json()["constitution"]
    assert len(document["comparison_principles"]) == len(AGREED)
    assert client.get("/v1/constitutions", headers=admin_headers).json() == []  # nothing stored
    edited = {"8": {"comparison": "Which response explains its reasoning better?"}}
    published = client.post(
        "/v1/public-inputs/town/constitution",
        json=body | {"wording": edited},
        headers=admin_headers,
    )
    assert published.status_code == 201, published.text
    content = client.get("/v1/constitutions/town-charter@1", headers=admin_headers).json()[
        "content"
    ]
    texts = {p["id"]: p["text"] for p in content["comparison_principles"]}
    assert texts["public-8"] == "Which response explains its reasoning better?"
    assert STATEMENTS[0][1] in texts["public-1"]  # the others keep the template's wording
    origins = {
        p["statement_id"]: p["wording"] for p in content["metadata"]["provenance"]["principles"]
    }
    assert origins["8"] == {"comparison": "edited", "critique": "template", "revision": "template"}
    assert origins["1"]["comparison"] == "template"
    stray = client.post(
        "/v1/public-inputs/town/draft",
        json=body | {"wording": {"4": {"critique": "x"}}},  # a divisive statement: not drafted
        headers=admin_headers,
    )
    assert stray.status_code == 422 and stray.json()["field"] == "wording"


def test_a_model_words_the_principles_as_a_job_and_a_person_edits_them(
    client: TestClient, admin_headers: dict[str, str], engine: Any, settings: Any
) -> None:
    _push(client, admin_headers, json_upload())
    body = {"name": "town-charter", "min_votes": 4}
    assert (
        client.post(
            "/v1/public-inputs/town/constitution", json=body, headers=admin_headers
        ).status_code
        == 201
    )
    not_drafted = client.post(
        "/v1/public-inputs/town/wording-jobs",
        json={"constitution": "nowhere"},
        headers=admin_headers,
    )
    assert not_drafted.status_code == 404 and not_drafted.json()["field"] == "constitution"
    created = client.post(
        "/v1/public-inputs/town/wording-jobs",
        json={"constitution": "town-charter@1", "model": "m"},
        headers=admin_headers,
    )
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["type"] == "generate" and job["item_count"] == 3 * len(AGREED)
    too_soon = client.post(
        "/v1/public-inputs/town/draft",
        json=body | {"wording_job": job["id"]},
        headers=admin_headers,
    )
    assert too_soon.status_code == 409 and too_soon.json()["field"] == "wording_job"

    def word(conversation: Any, params: Any) -> str | None:
        asked = conversation[-1]["content"]
        statement = asked.rsplit("Statement: ", 1)[1]
        if "reasoning" in statement:
            return ""  # nothing usable: the template stays
        kind = "question" if "question" in asked else "instruction"
        return f'"A {kind} about: {statement}"\n\nI hope this helps.'

    runner = ChunkRunner(
        session_factory(engine),
        {"m": ScriptedEngine(model_name="m", responses=word)},
        settings,
        "w",
    )
    for chunk in range(job["chunk_count"]):
        runner.run_chunk(job["id"], chunk)
    edits = {"2": {"revision": "Rewrite the response so it admits what it does not know."}}
    published = client.post(
        "/v1/public-inputs/town/constitution",
        json=body | {"wording_job": job["id"], "wording": edits},
        headers=admin_headers,
    )
    assert published.status_code == 201, published.text
    assert published.json()["constitution"] == "town-charter@2"
    content = client.get("/v1/constitutions/town-charter@2", headers=admin_headers).json()[
        "content"
    ]
    comparison = {p["id"]: p["text"] for p in content["comparison_principles"]}
    critique = {p["id"]: p for p in content["critique_principles"]}
    assert (
        comparison["public-1"] == f"A question about: {STATEMENTS[0][1]}"
    )  # first paragraph, unquoted
    assert critique["public-1"]["critique"] == f"A instruction about: {STATEMENTS[0][1]}"
    assert critique["public-2"]["revision"] == edits["2"]["revision"]
    assert STATEMENTS[7][1] in comparison["public-8"]  # the model gave nothing: the template's
    origins = {
        p["statement_id"]: p["wording"] for p in content["metadata"]["provenance"]["principles"]
    }
    assert origins["1"] == {"comparison": "model", "critique": "model", "revision": "model"}
    assert origins["2"]["revision"] == "edited" and origins["8"]["comparison"] == "template"
    assert content["metadata"]["provenance"]["parameters"]["wording_job"] == job["id"]
    not_wording = client.post(
        "/v1/public-inputs/town/draft",
        json=body | {"wording_job": "0" * 32},
        headers=admin_headers,
    )
    assert not_wording.status_code == 404
