"""The shipped constitutions and example prompts load and validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from charter.core.constitution import Constitution

ROOT = Path(__file__).resolve().parents[2]
CONSTITUTIONS = ROOT / "constitutions"
PROMPTS = ROOT / "examples" / "prompts.jsonl"

CONSTITUTION_FILES = sorted(CONSTITUTIONS.glob("*.yaml"))


def _load(path: Path) -> Constitution:
    with path.open(encoding="utf-8") as fh:
        return Constitution.model_validate(yaml.safe_load(fh))


def test_constitution_files_exist() -> None:
    names = {p.stem for p in CONSTITUTION_FILES}
    assert {"default", "helpful-balance"} <= names


@pytest.mark.parametrize("path", CONSTITUTION_FILES, ids=lambda p: p.name)
def test_constitution_file_validates(path: Path) -> None:
    constitution = _load(path)
    assert constitution.name == path.stem
    assert constitution.description
    assert len(constitution.content_hash()) == 64


def test_default_constitution_shape() -> None:
    constitution = _load(CONSTITUTIONS / "default.yaml")
    critique_ids = [p.id for p in constitution.critique_principles]
    comparison_ids = [p.id for p in constitution.comparison_principles]
    assert len(critique_ids) == 16
    assert len(comparison_ids) == 16
    assert len(set(critique_ids)) == len(critique_ids)
    assert len(set(comparison_ids)) == len(comparison_ids)
    assert len(constitution.critique_examples) == 2
    assert len(constitution.comparison_examples) == 2
    for principle in constitution.comparison_principles:
        assert principle.text.startswith("Which of these assistant responses")
    assert constitution.metadata.get("themes")


def test_helpful_balance_not_empty() -> None:
    constitution = _load(CONSTITUTIONS / "helpful-balance.yaml")
    assert constitution.critique_principles
    assert constitution.comparison_principles


def test_example_prompts_parse() -> None:
    lines = PROMPTS.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 20
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        assert isinstance(record, dict), f"line {number} is not an object"
        prompt = record.get("prompt")
        assert isinstance(prompt, str) and prompt.strip(), f"line {number} has no prompt"
