"""Regenerate ``charter/sdk/models.py`` from the gateway's OpenAPI document.

``python -m charter.cli.sdk_models`` rewrites the committed module;
``tests/sdk/test_models_fresh.py`` fails when it differs from what this produces, so a
gateway schema change cannot ship without the SDK's models following it. It lives in
the CLI because only the CLI may import ``services`` (the import contracts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parents[1] / "sdk" / "models.py"
HEADER = (
    '"""Response and request models of the Charter API, generated from the gateway\'s\n'
    "OpenAPI document by datamodel-code-generator: do not edit; run\n"
    '``python -m charter.cli.sdk_models`` (see charter/sdk/__init__.py for why)."""\n'
    "# ruff: noqa\n# mypy: ignore-errors"
)
OPTIONS = (
    "--input-file-type", "openapi",
    "--output-model-type", "pydantic_v2.BaseModel",
    "--target-python-version", "3.11",
    "--use-annotated", "--use-union-operator", "--use-standard-collections",
    "--use-schema-description", "--use-field-description",
    "--disable-timestamp",
    # A newer gateway may add fields: an older SDK keeps them instead of failing.
    "--allow-extra-fields",
    "--formatters", "ruff-format",
)  # fmt: skip


def live_openapi() -> dict[str, Any]:
    """The document of a gateway built here (an empty SQLite database; nothing served)."""
    from charter.settings import Settings
    from services.gateway.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            env="test",
            data_dir=Path(tmp),
            database_url=f"sqlite:///{tmp}/openapi.db",
            broker_url=None,
            secret_key="openapi-generation-only-" + "x" * 16,
        )
        app = create_app(settings)
        try:
            return app.openapi()
        finally:
            app.state.engine.dispose()


def generate(document: dict[str, Any]) -> str:
    """The models module for ``document`` (datamodel-codegen's output, our header)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "openapi.json", Path(tmp) / "models.py"
        source.write_text(json.dumps(document))
        command = [
            str(Path(sys.executable).with_name("datamodel-codegen")),
            "--input", str(source), "--output", str(target),
            "--custom-file-header", HEADER, *OPTIONS,
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        # Then the project's own formatter, so `ruff format .` leaves the file alone.
        ruff = [str(Path(sys.executable).with_name("ruff")), "format", "--quiet"]
        root = MODELS.parents[2]
        formatted = subprocess.run(
            [*ruff, "--stdin-filename", str(MODELS), "-"], check=True, cwd=root,
            input=target.read_bytes(), capture_output=True,
        )  # fmt: skip
        return formatted.stdout.decode()


def main() -> None:  # pragma: no cover - a maintainer's command
    MODELS.write_text(generate(live_openapi()))
    print(f"wrote {MODELS}")


if __name__ == "__main__":  # pragma: no cover
    main()
