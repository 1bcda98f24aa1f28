"""The artifact-store rule on its own: which URIs and paths lie in a run's folder."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from charter.core.artifact_paths import OutsideStore, confine

STORE = PurePosixPath("/srv/charter/artifacts")
RUN = "a" * 32
OTHER = "b" * 32
RUN_DIR = STORE / "runs" / RUN


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"file://{RUN_DIR}", RUN_DIR),
        (f"file://{RUN_DIR}/", RUN_DIR),
        (f"file://{RUN_DIR}/model", RUN_DIR / "model"),
        (f"file://localhost{RUN_DIR}/model", RUN_DIR / "model"),
        (f"file:{RUN_DIR}/model", RUN_DIR / "model"),
        (f"FILE://{RUN_DIR}/model", RUN_DIR / "model"),
        (f"file://{RUN_DIR}/./model//weights", RUN_DIR / "model" / "weights"),
        (f"file://{RUN_DIR}/my%20model", RUN_DIR / "my model"),
        (f"file://{RUN_DIR}/caf%C3%A9", RUN_DIR / "café"),
    ],
)
def test_uris_inside_the_run_folder_are_normalised(value, expected):
    assert confine(value, RUN_DIR) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("file:///etc", "not inside"),
        ("file:///etc/passwd", "not inside"),
        (f"file://{STORE}", "not inside"),
        (f"file://{STORE}/runs", "not inside"),
        (f"file://{STORE}/runs/{OTHER}/model", "not inside"),
        (f"file://{STORE}/runs/{RUN}x/model", "not inside"),  # a sibling sharing the prefix
        (f"file://{STORE}/runs/{RUN}-evil", "not inside"),
        (f"file://{RUN_DIR}/../{OTHER}/model", "'..'"),
        (f"file://{RUN_DIR}/model/../../{OTHER}", "'..'"),
        (f"file://{RUN_DIR}/..", "'..'"),
        (f"file://{RUN_DIR}/%2e%2e/{OTHER}", "'..'"),
        (f"file://{RUN_DIR}/%2E%2E/{OTHER}", "'..'"),
        (f"file://{RUN_DIR}/.%2e/{OTHER}", "'..'"),
        (f"file://{RUN_DIR}%2f..%2f{OTHER}", "'..'"),
        (f"file://{RUN_DIR}/%252e%252e/{OTHER}", "percent"),  # encoded twice
        (f"file://{RUN_DIR}/model%00", "NUL"),
        (f"file://{RUN_DIR}/model\x00", "NUL"),
        (f"file://{RUN_DIR}/model\n", "control"),
        (f"file://{RUN_DIR}/%ff", "UTF-8"),
        (f"file://evil.example{RUN_DIR}/model", "host"),
        (f"file://{RUN_DIR}/model?x=1", "query"),
        (f"file://{RUN_DIR}/model#frag", "fragment"),
        (f"file:////{RUN_DIR}/model", "absolute"),
        ("file:runs/model", "absolute"),
        (f"http://example.com{RUN_DIR}/model", "file:// URI"),
        (f"https://{RUN_DIR}/model", "file:// URI"),
        (f"s3://bucket{RUN_DIR}/model", "file:// URI"),
        (f"{RUN_DIR}/model", "file:// URI"),  # a plain path is a checkpoint's form only
        (f"runs/{RUN}/model", "file:// URI"),
        ("model", "file:// URI"),
        ("", "file:// URI"),
    ],
)
def test_anything_else_is_refused_with_the_reason(value, reason):
    with pytest.raises(OutsideStore, match=reason):
        confine(value, RUN_DIR)


def test_a_checkpoint_may_also_be_a_plain_absolute_path():
    assert confine(f"{RUN_DIR}/model/checkpoint-4", RUN_DIR, plain_path=True) == (
        RUN_DIR / "model" / "checkpoint-4"
    )
    assert confine(f"file://{RUN_DIR}/model", RUN_DIR, plain_path=True) == RUN_DIR / "model"


@pytest.mark.parametrize(
    "value",
    [
        "/etc",
        f"{STORE}/runs/{OTHER}/checkpoint-4",
        f"{RUN_DIR}/../{OTHER}/checkpoint-4",
        f"{RUN_DIR}/%2e%2e/{OTHER}",  # no decoding for a plain path: a literal escape is refused
        f"{RUN_DIR}/checkpoint\x00",
        f"//{RUN_DIR}/checkpoint",
        f"runs/{RUN}/checkpoint-4",
        f"./runs/{RUN}/checkpoint-4",
        f"~/runs/{RUN}",
        f"http://x{RUN_DIR}/checkpoint",
    ],
)
def test_plain_paths_follow_the_same_rule(value):
    with pytest.raises(OutsideStore):
        confine(value, RUN_DIR, plain_path=True)
