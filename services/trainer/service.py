"""The trainer service: claims queued training runs over the API and runs them.

It never touches the database. For each run it pulls the frozen dataset version
over the API (checksum-verified), trains, streams metrics back, saves the model
directory and a config/metrics record to the artifact store, and marks the run
completed, or failed with the reason. A heartbeat thread keeps the lease; a
trainer that vanishes loses it and another trainer picks the run up. Every report
presents the lease token of the claim, which only this trainer saw.

The artifact store is ``<artifacts_dir>/runs/<run id>/``: the run's checkpoints and
model go there, and the gateway accepts reports of nothing else. A ``run:<id>``
model is loaded only from that run's folder of this trainer's own store.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from charter.client import CharterAPIError, CharterClient
from charter.model_store import resolve_model
from charter.settings import Settings
from services.gateway.runs.artifacts import OutsideStore, confine

log = logging.getLogger(__name__)
ALIVE_FILE = Path("/tmp/charter-trainer-alive")  # container healthcheck
RUN_KEYS = {"base_model", "reward_run", "reference_model", "dataset", "eval_fraction"}


class RunConfigError(ValueError):
    pass


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split(
    rows: list[dict[str, Any]], eval_fraction: float, seed: int = 0
) -> tuple[list, list | None]:
    """A deterministic held-out split (None when too few rows to hold any out)."""
    n_eval = int(len(rows) * eval_fraction)
    if n_eval < 1 or len(rows) - n_eval < 1:
        return rows, None
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def build_config(config_cls: type, overrides: dict[str, Any]) -> Any:
    """The trainer config from a run's overrides; unknown keys are an error, not ignored."""
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise RunConfigError(f"config: unknown field(s) {unknown} for {config_cls.__name__}")
    try:
        return config_cls(**overrides)
    except (TypeError, ValueError) as exc:
        raise RunConfigError(f"config: {exc}") from exc


@dataclass
class MetricsSink:
    """Buffers metrics and posts them in batches (at most one request per ``every`` s)."""

    post: Callable[[list[dict[str, Any]]], None]
    every: float = 2.0

    def __post_init__(self) -> None:
        self.points: list[dict[str, Any]] = []
        self.last = 0.0

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        # JSON has no NaN or Infinity (the API refuses them): a diverged loss is dropped
        # from the report here and still visible in the trainer's log.
        clean = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)
        }
        if clean:
            self.points.append({"step": int(step), "metrics": clean})
        if time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.points:
            self.post(self.points)
            self.points = []
        self.last = time.monotonic()


class CheckpointReporter(TrainerCallback):
    """Records every saved checkpoint on the run, so a resumed run continues from it."""

    def __init__(self, record: Callable[[str], None]) -> None:
        self.record = record

    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.record(str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))


class TrainerService:
    def __init__(self, client: CharterClient, settings: Settings, owner: str | None = None) -> None:
        self.client = client
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"

    # ------------------------------------------------------------------ loop

    def run_forever(self, poll: float = 5.0, stop: threading.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            ALIVE_FILE.touch()
            if self.run_once() is None:
                time.sleep(poll)

    def run_once(self, types: list[str] | None = None) -> dict[str, Any] | None:
        """Claim one run and execute it; returns the final run, or None if none was queued."""
        run = self.client.claim_run(self.owner, types)
        if run is None:
            return None
        token = run.pop("lease_token")  # kept in memory only, never logged
        log.info("run %s (%s) claimed by %s", run["id"], run["type"], self.owner)
        stop = self._keep_lease(run["id"], token)
        try:
            artifact = self.execute(run, token)
        except Exception as exc:  # report every failure with its cause, then move on
            log.exception("run %s failed", run["id"])
            reason = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, RunConfigError | CharterAPIError):
                reason += "\n" + "".join(traceback.format_exc(limit=-3))
            return self.client.fail_run(run["id"], token, reason[:20_000])
        finally:
            stop.set()
        return self.client.complete_run(run["id"], token, artifact.as_uri())

    def _keep_lease(self, run_id: str, token: str) -> threading.Event:
        stop = threading.Event()
        interval = self.settings.run_lease_seconds / 3

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    self.client.run_heartbeat(run_id, token)
                    ALIVE_FILE.touch()
                except Exception as exc:  # the API blipped; the next beat retries
                    log.warning("heartbeat for run %s failed: %s", run_id, exc)

        threading.Thread(target=beat, name="run-heartbeat", daemon=True).start()
        return stop

    # ------------------------------------------------------------------ one run

    def run_dir(self, run_id: str) -> Path:
        """The run's folder of the artifact store (the gateway's rule: the store resolved,
        then ``runs/<id>``)."""
        return self.settings.artifacts_dir.resolve() / "runs" / run_id

    def stored(self, value: str, run_id: str, *, plain_path: bool = False) -> Path:
        """``value`` (a file URI, or a plain path) if it lies in the run's folder, also
        after following symlinks; ``RunConfigError`` otherwise."""
        folder = self.run_dir(run_id)
        try:
            path = Path(confine(value, folder, plain_path=plain_path))
        except OutsideStore as exc:
            raise RunConfigError(
                f"{value[:200]!r} is not in run {run_id}'s folder of this trainer's artifact "
                f"store ({exc})"
            ) from None
        if not path.resolve().is_relative_to(folder.resolve()):
            raise RunConfigError(f"{path} leads out of run {run_id}'s folder (a symlink)")
        return path

    def model_dir(self, name: str) -> Path:
        """A model name the trainer can load, or ``run:<id>``: the artifact of that run,
        which must lie in that run's folder of this trainer's artifact store."""
        if name.startswith("run:"):
            run = self.client.run(name[4:])
            if run["status"] != "completed" or not run.get("artifact_uri"):
                raise RunConfigError(f"{name} has no model artifact")
            return self.stored(run["artifact_uri"], run["id"])
        return resolve_model(name, self.settings.models, self.settings.models_dir)

    def execute(self, run: dict[str, Any], lease_token: str) -> Path:
        """Train the claimed run; the model directory it saved."""
        run_id = run["id"]
        workdir = self.run_dir(run_id)
        workdir.mkdir(parents=True, exist_ok=True)
        config = dict(run["config"])
        overrides = {k: v for k, v in config.items() if k not in RUN_KEYS}
        # The dataset version the gateway validated and pinned (dataset_version_id), not config.
        dataset = run.get("dataset")
        if not dataset:
            raise RunConfigError(f"run {run_id} has no dataset version")
        data = workdir / "dataset.jsonl"
        exported = self.client.export_dataset(dataset, data, verify=True)
        if exported["ref"] != dataset:
            raise RunConfigError(f"asked for dataset {dataset}, was served {exported['ref']}")
        rows = read_rows(data)
        if not rows:
            raise RunConfigError(f"dataset {dataset} has no rows")
        train_rows, eval_rows = split(rows, float(config.get("eval_fraction", 0.1)))
        sink = MetricsSink(lambda points: self.client.report_metrics(run_id, lease_token, points))
        output = workdir / "model"
        base = self.model_dir(config["base_model"])
        kind = run["type"]
        # A resumed run continues from the checkpoint its last attempt recorded.
        checkpoint = run.get("checkpoint")
        resume = None
        if checkpoint:
            saved = self.stored(checkpoint, run_id, plain_path=True)
            resume = str(saved) if saved.is_dir() else None
        if resume:
            log.info("run %s resumes from %s", run_id, resume)
        record = CheckpointReporter(
            lambda path: self.client.report_checkpoint(run_id, lease_token, path)
        )
        common = {"report": sink, "callbacks": [record], "resume_from_checkpoint": resume}
        try:
            if kind == "sft":
                from services.trainer.sft_config import SFTConfig
                from services.trainer.sft_trainer import train_sft

                config_ = build_config(SFTConfig, overrides)
                result = train_sft(base, train_rows, eval_rows, config_, output, **common)
            elif kind == "pm":
                from services.trainer.pm_config import PMConfig
                from services.trainer.pm_trainer import train_pm

                config_ = build_config(PMConfig, overrides)
                result = train_pm(base, train_rows, eval_rows, config_, output, **common)
            elif kind == "dpo":
                from services.trainer.dpo_config import DPOConfig
                from services.trainer.dpo_trainer import train_dpo

                config_ = build_config(DPOConfig, overrides)
                result = train_dpo(base, train_rows, eval_rows, config_, output, **common)
            elif kind == "ppo":
                result = self._ppo(config, overrides, rows, base, output, sink)
            else:
                raise RunConfigError(f"unknown run type {kind!r}")
        finally:
            sink.flush()  # what was measured before a crash is reported too
        log.info("run %s finished: %s", run_id, getattr(result, "metrics", result))
        return output

    def _ppo(
        self,
        config: dict[str, Any],
        overrides: dict[str, Any],
        rows: list[dict[str, Any]],
        base: Path,
        output: Path,
        sink: MetricsSink,
    ) -> dict[str, float]:
        """PPO against the PM of ``reward_run`` with a KL penalty to ``reference_model``."""
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        from services.trainer.ppo_config import PPOConfig
        from services.trainer.ppo_trainer import PPOTrainer, pm_reward

        ppo_config = build_config(PPOConfig, overrides)
        prompts = [_prompt_text(r) for r in rows]
        tokenizer = AutoTokenizer.from_pretrained(base)
        policy = AutoModelForCausalLM.from_pretrained(base)
        reference = AutoModelForCausalLM.from_pretrained(self.model_dir(config["reference_model"]))
        pm_dir = self.model_dir(f"run:{config['reward_run']}")
        pm = AutoModelForSequenceClassification.from_pretrained(pm_dir, num_labels=1)
        trainer = PPOTrainer(
            policy,
            reference,
            tokenizer,
            pm_reward(pm, AutoTokenizer.from_pretrained(pm_dir)),
            ppo_config,
        )
        history = trainer.train(itertools.cycle(prompts), report=sink)
        trainer.save(output)
        return history[-1] if history else {}


def _prompt_text(row: dict[str, Any]) -> str:
    """The last user turn of a dataset row's prompt (PPO samples fresh responses to it)."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise RunConfigError("a prompt row has no user turn")
    return users[-1]
