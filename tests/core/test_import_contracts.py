"""The architecture boundaries in pyproject.toml's ``[tool.importlinter]``: the tree keeps
them, and a forbidden import added to a copy of it breaks the contract that names it.

import-linter reads every import statement, function-level (lazy) ones included.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("charter", "services", "workers")

CORE = "The core is pure: no web, database, queue or ML framework"
TRAINER = "The trainer talks to the gateway over the API, never to the database"
GATEWAY = "The gateway loads no engine or ML framework"
WORKERS = "Workers do not import the web app"
ROOTS = "In charter, only the CLI and the embedded stack import services and workers"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (CORE, TRAINER, GATEWAY, WORKERS, ROOTS):
        assert f"{name} KEPT" in result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and of the contracts, to break."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


TOP = "\n{}\n"
LAZY = "\n\ndef _added_for_the_test() -> None:\n    {}\n"

CASES = {
    "core-imports-sqlalchemy": (
        [("charter/core/labels.py", TOP.format("import sqlalchemy"))],
        {CORE: "charter.core.labels -> sqlalchemy"},
    ),
    "core-imports-torch-lazily": (
        [("charter/core/prompts.py", LAZY.format("import torch"))],
        {CORE: "charter.core.prompts -> torch"},
    ),
    "core-imports-vllm-installed-or-not": (
        [("charter/core/engine.py", LAZY.format("from vllm import LLM"))],
        {CORE: "charter.core.engine -> vllm"},
    ),
    "trainer-imports-the-database": (
        [("services/trainer/trl_training.py", LAZY.format("from charter.db import models"))],
        {TRAINER: "services.trainer.trl_training -> charter.db.models"},
    ),
    "gateway-imports-an-engine": (
        [("services/gateway/health.py", LAZY.format("from workers.engines import scripted"))],
        {GATEWAY: "services.gateway.health -> workers.engines.scripted"},
    ),
    "library-imports-the-gateway": (
        [("charter/errors.py", LAZY.format("from services.gateway import app"))],
        {ROOTS: "charter.errors -> services.gateway.app"},
    ),
    "core-and-worker-together": (
        [
            ("charter/core/labels.py", TOP.format("import sqlalchemy")),
            ("workers/sweeper.py", LAZY.format("from services.gateway import app")),
        ],
        {
            CORE: "charter.core.labels -> sqlalchemy",
            WORKERS: "workers.sweeper -> services.gateway.app",
        },
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_forbidden_import_breaks_its_contract(tree: Path, case: str) -> None:
    edits, broken = CASES[case]
    for path, added in edits:
        module = tree / path
        module.write_text(module.read_text() + added)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    for name, link in broken.items():
        assert f"{name} BROKEN" in result.stdout
        assert link in result.stdout  # the added import is the one reported
