"""The domain core must import no web, queue, database or ML framework."""

import subprocess
import sys

FORBIDDEN = (
    "fastapi",
    "starlette",
    "celery",
    "kombu",
    "sqlalchemy",
    "torch",
    "vllm",
    "transformers",
    "httpx",
)


def test_core_imports_no_io_frameworks():
    code = (
        "import sys, charter.core.constitution, charter.core.prompts, charter.core.labels, "
        "charter.core.engine, charter.core.jobs\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
