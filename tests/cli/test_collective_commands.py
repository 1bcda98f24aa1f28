"""``charter collective`` against a live gateway: push the same population as CSV and as
a Polis export, analyse it, publish a constitution; bad files are a line and status 2."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_commands import as_json, live, run  # noqa: F401 - live is a fixture
from tests.gateway.test_public_inputs_api import AGREED, csv_upload, json_upload, polis_upload


def test_push_analyse_and_publish(live: str, tmp_path: Path) -> None:  # noqa: F811
    csv_body, polis_body = csv_upload(), polis_upload()
    (tmp_path / "votes.csv").write_text(csv_body["votes"])
    (tmp_path / "statements.csv").write_text(csv_body["statements"])
    (tmp_path / "participants-votes.csv").write_text(polis_body["participants_votes"])
    (tmp_path / "comments.csv").write_text(polis_body["comments"])
    document = {k: v for k, v in json_upload().items() if k != "format"}
    (tmp_path / "input.json").write_text(json.dumps(document))

    pushed = run(
        "collective", "push", "town", str(tmp_path / "votes.csv"),
        "--statements", str(tmp_path / "statements.csv"),
    )  # fmt: skip
    assert "town@1 (new version: 40 participants, 10 statements" in pushed
    polis = as_json(
        "collective", "push", "town", str(tmp_path / "participants-votes.csv"),
        "--comments", str(tmp_path / "comments.csv"),
    )  # fmt: skip
    assert polis["ref"] == "town@1" and polis["created"] is False  # the same population
    assert "town@1 (unchanged" in run("collective", "push", "town", str(tmp_path / "input.json"))
    assert [r["ref"] for r in as_json("collective", "list")] == ["town@1"]

    shown = run("collective", "analyse", "town", "--min-votes", "4")
    assert "2 group(s) of 20, 20 among 40 participants" in shown
    assert shown.count("candidate") == len(AGREED)
    analysis = as_json("collective", "analyse", "town", "--min-votes", "4")
    top = [s["id"] for s in analysis["statements"][: len(AGREED)]]

    published = as_json(
        "collective", "publish", "town", "--name", "town-charter", "--min-votes", "4"
    )
    assert published["constitution"] == "town-charter@1"
    assert [s["id"] for s in published["statements"]] == top
    drafted = run("collective", "draft", "town", "--name", "town-three", "--min-votes", "4")
    assert "comparison_principles:" in drafted and "public-1" in drafted
    assert "town-three" not in [c["name"] for c in as_json("constitutions", "list")]
    edits = tmp_path / "edits.yaml"
    edits.write_text("'8':\n  comparison: Which response explains itself better?\n")
    edited = as_json(
        "collective", "publish", "town", "--name", "town-three", "--min-votes", "4",
        "--wording", str(edits),
    )  # fmt: skip
    assert edited["constitution"] == "town-three@1"
    word = as_json("collective", "word", "town", "--constitution", "town-three@1", "--model", "m")
    assert word["type"] == "generate" and word["item_count"] == 3 * len(AGREED)
    chosen = run(
        "collective", "publish", "town", "--name", "town-two", "--min-votes", "4",
        "--statement", "4", "--statement", "1",
    )  # fmt: skip
    assert "town-two@1 (new version) from 2 statement(s)" in chosen


def test_bad_files_are_a_line_and_a_status(live: str, tmp_path: Path) -> None:  # noqa: F811
    votes = tmp_path / "votes.csv"
    votes.write_text("participant,statement,vote\np1,s1,maybe\n")
    statements = tmp_path / "statements.csv"
    statements.write_text("statement,text\ns1,Be kind.\n")
    refused = run("collective", "push", "town", str(votes), "--statements", str(statements), code=1)
    assert "votes line 2" in refused and "'vote'" in refused
    assert "--statements" in run("collective", "push", "town", str(votes), code=2)
    missing = run("collective", "publish", "nowhere", "--name", "x", code=1)
    assert "not found" in missing
