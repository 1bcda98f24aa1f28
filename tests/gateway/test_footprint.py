"""What a gateway process loads at start: heavy libraries that only a few routes or
other services use are imported where they are used, so every gateway process does
not pay their memory (scikit-learn with scipy and pandas alone was ~170 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_AT_START = ("sklearn", "scipy", "pandas", "pyarrow", "torch", "transformers", "trl", "vllm")


def test_the_gateway_starts_without_heavy_libraries() -> None:
    probe = (
        "import json, sys\n"
        "import services.gateway.app\n"
        f"print(json.dumps([m for m in {NOT_AT_START!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
