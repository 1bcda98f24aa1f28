"""The committed SDK models are what the live app's OpenAPI document generates."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI

from charter.cli import sdk_models


def test_committed_models_match_the_live_openapi_document(app: FastAPI) -> None:
    if not Path(sys.executable).with_name("datamodel-codegen").exists() and not shutil.which(
        "datamodel-codegen"
    ):
        pytest.fail("datamodel-code-generator is a dev dependency: pip install -e '.[dev]'")
    expected = sdk_models.generate(app.openapi())
    committed = sdk_models.MODELS.read_text()
    assert committed == expected, (
        "charter/sdk/models.py is stale: run `python -m charter.cli.sdk_models`"
    )


def test_every_documented_operation_has_an_sdk_call(app: FastAPI) -> None:
    """Each path of the document is reached by some method of charter.sdk.api."""
    import inspect
    import re

    from charter.sdk import api, export

    source = inspect.getsource(api) + inspect.getsource(export)
    covered = {re.sub(r"\{[^}]+\}", "{}", p) for p in re.findall(r'"(/[^"]*)"', source)}
    covered |= {re.sub(r"\{[^}]+\}", "{}", p) for p in re.findall(r'f"(/v1/[^"]*)"', source)}
    documented = {re.sub(r"\{[^}]+\}", "{}", p) for p in app.openapi()["paths"]}
    missing = sorted(documented - covered)
    assert not missing, f"no SDK call for {missing}"
