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

Several processes (``accelerate launch ... charter trainer run``, one process per GPU):
only the main process (rank 0) talks to the API. It claims the run, holds the lease
(heartbeat), downloads the dataset, resolves the models and validates the config,
then broadcasts what it prepared; every process trains on it (TRL and the PPO trainer
split the batches and average the gradients), and only the main process reports
metrics and checkpoints, writes the model and completes the run. The other processes
only follow: they never hold the API key's lease token. A bad run (config, dataset,
model name) is failed by the main process before any process trains. A failure during
training is reported by the main process, which then exits: the launcher stops every
process, since the others may be waiting in a collective that will never complete, and
the orchestrator restarts the group. A process that dies on another rank stops the
group the same way without a report; the lease expires and the run is claimed again
(resuming from its last checkpoint). Model paths (``run:<id>`` artifacts) must be on
storage every process can read: one machine, or a shared artifact store.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from charter.client import CharterAPIError, CharterClient
from charter.core.artifact_paths import OutsideStore
from charter.core.jobs import RunStatus
from charter.core.run_configs import RUN_CONFIGS, RunConfig, TrainingConfig
from charter.log_format import bound
from charter.model_store import in_run_folder, resolve_model
from charter.periodic import Periodic
from charter.settings import ClientSettings

log = logging.getLogger(__name__)
ALIVE_FILE = Path("/tmp/charter-trainer-alive")  # container healthcheck
RUN_KEYS = {"base_model", "reward_run", "reference_model", "dataset"}
"""What the gateway stores in a run's config beside the config fields: what it trains on."""


class RunConfigError(ValueError):
    pass


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split(
    rows: list[dict[str, Any]], eval_fraction: float, seed: int = 0
) -> tuple[list, list | None]:
    """A deterministic held-out split (None when too few rows to hold any out).

    ``datasets``' own ``train_test_split`` draws the row numbers; the rows themselves
    stay dicts, so their provenance never has to fit an Arrow schema.
    """
    n_eval = int(len(rows) * eval_fraction)
    if n_eval < 1 or len(rows) - n_eval < 1:
        return rows, None
    from datasets import Dataset

    parts = Dataset.from_dict({"row": range(len(rows))}).train_test_split(
        test_size=n_eval, seed=seed
    )
    train, held = (sorted(parts[name]["row"]) for name in ("train", "test"))
    return [rows[i] for i in train], [rows[i] for i in held]


CONFIG_MODULES = {"rloo": "online_rl", "grpo": "online_rl"}
"""Run types whose config module is not named after them (RLOO and GRPO share one)."""
ONLINE_RL = frozenset(CONFIG_MODULES)
"""The run types TRL's online trainers train (rewarded by a PM, reference = base)."""


def config_class(kind: str) -> type[RunConfig]:
    """The trainer's config class of a run type: the core class (:data:`RUN_CONFIGS`)
    with its TRL plumbing, ``services.trainer.<kind>_config.<same name>``, imported only
    when a run of that type comes (TRL is slow to import)."""
    core = RUN_CONFIGS.get(kind)
    if core is None:
        raise RunConfigError(f"unknown run type {kind!r}")
    module = f"services.trainer.{CONFIG_MODULES.get(kind, kind)}_config"
    cls = getattr(importlib.import_module(module), core.__name__)
    if not issubclass(cls, core):
        raise TypeError(f"{module}.{core.__name__} is not a {core}")
    return cls


def build_config(config_cls: type[RunConfig], overrides: dict[str, Any]) -> RunConfig:
    """The trainer config from a run's stored fields; unknown keys are an error, not ignored."""
    try:
        return config_cls.from_dict(overrides)
    except ValueError as exc:  # pydantic's ValidationError included
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
        if state.is_world_process_zero:
            self.record(str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))


@dataclass(frozen=True)
class Prepared:
    """What the main process resolved for a run, broadcast to every process."""

    kind: str
    config: Any
    """The method's validated config (the trainer's subclass of its core class)."""
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] | None
    base: Path
    output: Path
    resume: str | None
    reference: Path | None = None
    """PPO: the KL reference model."""
    reward: Path | None = None
    """PPO: the preference model."""


def distributed_state() -> Any:
    """Accelerate's process state when launched as several processes, else None.

    Initialised here, before any trainer, on the CPU when there is no GPU (gloo), so
    TRL's trainers and the PPO trainer join the same process group.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


class TrainerService:
    def __init__(
        self,
        client: CharterClient,
        settings: ClientSettings,
        owner: str | None = None,
        *,
        state: Any = None,
    ) -> None:
        """``state``: Accelerate's ``PartialState`` of a multi-process launch (default:
        :func:`distributed_state`); None runs as a single process."""
        self.client = client
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.state = state if state is not None else distributed_state()
        self.is_main = self.state is None or self.state.is_main_process

    def close(self) -> None:
        """Leave the process group together: every process waits for the others, then
        destroys it. A process that exits with gloo's group alive (or destroys it while
        another still uses it) can abort in teardown (SIGABRT), which the launcher
        reports as a failed job. A no-op for a single process."""
        if self.state is None or self.state.num_processes == 1:
            return
        self.state.wait_for_everyone()
        self.state.destroy_process_group()

    def share(self, value: Any) -> Any:
        """The main process's ``value``, on every process (itself when single)."""
        if self.state is None or self.state.num_processes == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    # ------------------------------------------------------------------ loop

    def run_forever(self, poll: float = 5.0, stop: threading.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            ALIVE_FILE.touch()
            if self.run_once() is None:
                time.sleep(poll)

    def run_once(self, types: list[str] | None = None) -> dict[str, Any] | None:
        """Claim one run and execute it; returns the final run, or None if none was queued.

        Under several processes the main process claims and reports; the others
        return the claimed run as they received it (or None when nothing was queued).
        """
        if not self.is_main:
            return self._follow()
        run = self.client.claim_run(self.owner, types)
        if run is None:
            self.share(None)
            return None
        with bound(run_id=run["id"]):  # on every log line of the run
            return self._execute(run)

    def _execute(self, run: dict[str, Any]) -> dict[str, Any]:
        """Prepare, train and report a claimed run: the final run."""
        token = run.pop("lease_token")  # kept in memory only, never logged
        log.info("run %s (%s) claimed by %s", run["id"], run["type"], self.owner)
        beats = self._keep_lease(run["id"], token)
        training = False
        try:
            prepared = self.prepare(run)
            self.share((run, prepared))
            training = True
            artifact = self.train(prepared, run["id"], token)
            trained_hash = prepared.config.config_hash()
        except Exception as exc:  # report every failure with its cause, then move on
            log.exception("run %s failed", run["id"])
            reason = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, RunConfigError | CharterAPIError):
                reason += "\n" + "".join(traceback.format_exc(limit=-3))
            failed = self.client.fail_run(run["id"], token, reason[:20_000])
            if training and self.state is not None:
                raise  # the other processes may be stuck in a collective: stop the group
            if not training:
                self.share(None)  # the others wait for a run that will not come
            return failed
        finally:
            beats.stop()
        # The hash of what was trained: the gateway refuses it (409) unless it is the run's.
        return self.client.complete_run(
            run["id"], token, artifact.as_uri(), config_hash=trained_hash
        )

    def _follow(self) -> dict[str, Any] | None:
        """A non-main process: train what the main process prepared, if anything."""
        prepared = self.share(None)
        if prepared is None:
            return None
        run, prepared = prepared
        self.train(prepared, run["id"], None)
        return run

    def _keep_lease(self, run_id: str, token: str) -> Periodic:
        """Beat the run's lease every third of its length until stopped; a failed
        beat (the API blipped) is retried at the next third."""

        def beat() -> None:
            self.client.run_heartbeat(run_id, token)
            ALIVE_FILE.touch()

        interval = self.settings.run_lease_seconds / 3
        return Periodic(f"heartbeat for run {run_id}", interval, beat, logger=log).start()

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
            return in_run_folder(value, folder, plain_path=plain_path)
        except OutsideStore as exc:
            raise RunConfigError(
                f"{value[:200]!r} is not in run {run_id}'s folder of this trainer's artifact "
                f"store ({exc})"
            ) from None

    def model_dir(self, name: str) -> Path:
        """A model name the trainer can load, or ``run:<id>``: the artifact of that run,
        which must lie in that run's folder of this trainer's artifact store."""
        if name.startswith("run:"):
            run = self.client.run(name[4:])
            if run["status"] != RunStatus.COMPLETED or not run.get("artifact_uri"):
                raise RunConfigError(f"{name} has no model artifact")
            return self.stored(run["artifact_uri"], run["id"])
        return resolve_model(name, self.settings.models, self.settings.models_dir)

    def prepare(self, run: dict[str, Any]) -> Prepared:
        """The main process's half of a run: everything that talks to the API or may
        be refused (config, dataset, model names), before any process trains."""
        run_id = run["id"]
        kind = run["type"]
        config = dict(run["config"])
        fields = {k: v for k, v in config.items() if k not in RUN_KEYS}
        config_ = build_config(config_class(kind), fields)
        # The gateway hashed the config it validated; a trainer that reads it otherwise
        # (another version of the config classes) must not train something else.
        expected = run.get("config_hash")
        if expected and config_.config_hash() != expected:
            raise RunConfigError(
                f"config_hash: this trainer builds config {config_.config_hash()} from the "
                f"run's config, the gateway validated {expected} (a different Charter version?)"
            )
        workdir = self.run_dir(run_id)
        workdir.mkdir(parents=True, exist_ok=True)
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
        if isinstance(config_, TrainingConfig):
            train_rows, eval_rows = split(rows, config_.eval_fraction)
        else:  # PPO, RLOO and GRPO sample their own responses to every prompt
            train_rows, eval_rows = rows, None
        # A resumed run continues from the checkpoint its last attempt recorded.
        checkpoint = run.get("checkpoint")
        resume = None
        if checkpoint:
            saved = self.stored(checkpoint, run_id, plain_path=True)
            resume = str(saved) if saved.is_dir() else None
        if resume:
            log.info("run %s resumes from %s", run_id, resume)
        reference = reward = None
        if kind == "ppo":
            reference = self.model_dir(config["reference_model"])
        if kind == "ppo" or kind in ONLINE_RL:
            reward = self.model_dir(f"run:{config['reward_run']}")
        return Prepared(
            kind=kind,
            config=config_,
            train_rows=train_rows,
            eval_rows=eval_rows,
            base=self.model_dir(config["base_model"]),
            output=workdir / "model",
            resume=resume,
            reference=reference,
            reward=reward,
        )

    def train(self, prepared: Prepared, run_id: str, lease_token: str | None) -> Path:
        """Every process's half of a run: train and save (the main process reports and
        writes); the model directory."""

        def post(points: list[dict[str, Any]]) -> None:
            if self.is_main and lease_token is not None:
                self.client.report_metrics(run_id, lease_token, points)

        def record(path: str) -> None:
            if self.is_main and lease_token is not None:
                self.client.report_checkpoint(run_id, lease_token, path)

        sink = MetricsSink(post)
        p = prepared
        common = {
            "report": sink,
            "callbacks": [CheckpointReporter(record)],
            "resume_from_checkpoint": p.resume,
        }
        try:
            if p.kind == "sft":
                from services.trainer.sft_trainer import train_sft

                result = train_sft(p.base, p.train_rows, p.eval_rows, p.config, p.output, **common)
            elif p.kind == "pm":
                from services.trainer.pm_trainer import train_pm

                result = train_pm(p.base, p.train_rows, p.eval_rows, p.config, p.output, **common)
            elif p.kind == "dpo":
                from services.trainer.dpo_trainer import train_dpo

                result = train_dpo(p.base, p.train_rows, p.eval_rows, p.config, p.output, **common)
            elif p.kind == "classifier":
                from services.trainer.classifier_trainer import train_classifier

                result = train_classifier(
                    p.base, p.train_rows, p.eval_rows, p.config, p.output, **common
                )
            elif p.kind in ONLINE_RL:
                result = self._online_rl(p, common)
            else:
                result = self._ppo(p, sink, record)
        finally:
            sink.flush()  # what was measured before a crash is reported too
        log.info("run %s finished: %s", run_id, getattr(result, "metrics", result))
        return p.output

    def _ppo(
        self, prepared: Prepared, sink: MetricsSink, record: Callable[[str], None]
    ) -> dict[str, float]:
        """PPO against the PM of ``reward_run`` with a KL penalty to ``reference_model``;
        checkpoints go to ``model/checkpoint-<step>`` (recorded on the run) as TRL's do,
        and a resumed run continues from the one recorded last."""
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
        )

        from services.trainer.ppo_trainer import PPOTrainer

        assert prepared.reference is not None and prepared.reward is not None
        accelerator = None
        if self.state is not None:
            from accelerate import Accelerator

            accelerator = Accelerator(cpu=self.state.device.type == "cpu")
        prompts = [_prompt_text(r) for r in prepared.train_rows]
        tokenizer = AutoTokenizer.from_pretrained(prepared.base)
        policy = AutoModelForCausalLM.from_pretrained(prepared.base)
        reference = AutoModelForCausalLM.from_pretrained(prepared.reference)
        trainer = PPOTrainer(
            policy,
            reference,
            tokenizer,
            self._pm_reward(prepared),
            prepared.config,
            accelerator=accelerator,
        )
        if prepared.resume:
            trainer.resume(prepared.resume)
        history = trainer.train(
            itertools.cycle(prompts),
            report=sink,
            checkpoint_dir=prepared.output,
            on_checkpoint=record,
        )
        trainer.save(prepared.output)
        return history[-1] if history else {}

    def _pm_reward(self, prepared: Prepared) -> Any:
        """The PM of ``reward_run`` on this process's device, as PPO's reward function."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from services.trainer.ppo_trainer import pm_reward

        assert prepared.reward is not None
        pm = AutoModelForSequenceClassification.from_pretrained(prepared.reward, num_labels=1)
        if self.state is not None:
            pm.to(self.state.device)
        return pm_reward(pm, AutoTokenizer.from_pretrained(prepared.reward))

    def _online_rl(self, prepared: Prepared, common: dict[str, Any]) -> Any:
        """RLOO or GRPO (TRL) against the PM of ``reward_run``; the reference is the base."""
        from services.trainer.online_rl_trainer import text_reward, train_online_rl

        reward = text_reward(self._pm_reward(prepared))
        return train_online_rl(
            prepared.base,
            [{"prompt": row["prompt"]} for row in prepared.train_rows],
            reward,
            prepared.config,
            prepared.output,
            **common,
        )


def _prompt_text(row: dict[str, Any]) -> str:
    """The last user turn of a dataset row's prompt (PPO samples fresh responses to it)."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise RunConfigError("a prompt row has no user turn")
    return users[-1]
