"""PPO under ``accelerate launch`` with two CPU processes (gloo): both train, in step.

``accelerate launch --cpu`` starts a single process unless MPI is installed, so the
two processes come from its torchrun launcher (``--multi_gpu``) with
``ACCELERATE_USE_CPU=1``, which makes Accelerate pick its multi-CPU (gloo) mode.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ppo_distributed.py")
STEPS = 3  # ppo_distributed.STEPS

pytestmark = pytest.mark.slow


def test_two_processes_train_one_policy_and_only_the_main_one_reports(tmp_path: Path) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    assert accelerate.exists() or shutil.which("accelerate")
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            str(accelerate if accelerate.exists() else shutil.which("accelerate")),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
            str(SCRIPT),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["distributed_type"].endswith("MULTI_CPU") for r in ranks)
    # Each process trained on its own half of every step's prompts.
    assert len(ranks[0]["prompts"]) == len(ranks[1]["prompts"]) == STEPS * 4
    assert not set(ranks[0]["prompts"][:4]) & set(ranks[1]["prompts"][:4])

    # One policy: the same start, gradients averaged, so the same weights after.
    assert ranks[0]["weights_before"] == ranks[1]["weights_before"]
    assert ranks[0]["weights_after"] == ranks[1]["weights_after"] != ranks[0]["weights_before"]
    assert ranks[0]["value_head_after"] == ranks[1]["value_head_after"]
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"]

    # The main process reported each step exactly once, with global metrics.
    reports = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert [r["step"] for r in reports] == [1, 2, 3]
    assert {r["rank"] for r in reports} == {0}
    for report, local in zip(reports, ranks[0]["history"], strict=True):
        metrics = report["metrics"]
        assert metrics == local == ranks[1]["history"][report["step"] - 1]
        assert all(math.isfinite(v) for v in metrics.values())
        assert 0.0 <= metrics["score"] <= 1.0
        assert metrics["kl"] > -0.5 and metrics["entropy"] > 0
        # 2 processes x 4 responses of at most 6 tokens
        assert 8 <= metrics["response_tokens"] <= 48
    assert reports[0]["metrics"]["ratio"] == pytest.approx(1.0, abs=0.1)

    # Only the main process saved, once: a loadable policy with its value head.
    saved = tmp_path / "model"
    assert (saved / "value_head.safetensors").exists() and (saved / "config.json").exists()
