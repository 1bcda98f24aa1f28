"""Where a query goes (CONTRIBUTING.md): endpoints parse, authorise and shape the
answer; every query is a function of the domain's ``service`` module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = sorted((ROOT / "services" / "gateway").glob("*/endpoints.py"))
QUERY_BUILDERS = {"select", "insert", "update", "delete", "text"}


def queries_built(path: Path) -> list[str]:
    """``name:line`` of every SQLAlchemy statement the module imports or builds."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [
                f"import {a.name}:{node.lineno}" for a in node.names if a.name in QUERY_BUILDERS
            ]
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in QUERY_BUILDERS and not isinstance(node.func, ast.Attribute):
                found.append(f"{name}():{node.lineno}")
    return found


def test_every_domain_has_endpoints() -> None:
    names = {p.parent.name for p in ENDPOINTS}
    assert {"batches", "constitutions", "datasets", "jobs", "keys", "runs", "workers"} <= names


@pytest.mark.parametrize("path", ENDPOINTS, ids=lambda p: p.parent.name)
def test_endpoints_build_no_query(path: Path) -> None:
    assert queries_built(path) == []


def test_the_check_sees_a_query(tmp_path: Path) -> None:
    module = tmp_path / "endpoints.py"
    module.write_text(
        "from sqlalchemy import select\n\ndef f(s):\n    return s.scalars(select(1))\n"
    )
    assert queries_built(module) == ["import select:1", "select():4"]
