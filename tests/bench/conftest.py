"""What the benchmark smoke runs share: running a ``bench/`` script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(
    script: str | Path,
    *args: str,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    expect: int = 0,
) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` in a subprocess and check its exit status.

    The developer's ``CHARTER_*`` settings are dropped (a benchmark configures its own
    stack); ``CHARTER_TEST_*`` (which servers the tests use) is kept. Nothing may
    reach a model hub.
    """
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHARTER_") or k.startswith("CHARTER_TEST_")
    }
    environment |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    environment |= dict(env or {})
    path = script if isinstance(script, Path) else ROOT / "bench" / script
    done = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == expect, done.stdout[-3000:] + done.stderr[-3000:]
    return done
