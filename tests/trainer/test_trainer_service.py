"""End to end through the API: labels -> dataset version -> PM run -> PPO run on that PM.

The gateway runs under uvicorn; the trainer service talks to it over HTTP only
(it is given no database), pulls the checksum-verified dataset, trains tiny
models built from a config with SmolLM2's tokenizer, and reports metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from charter.client import CharterAPIError, CharterClient
from charter.db.models import TrainingRun
from charter.db.session import session_factory
from charter.embedded import GatewayThread
from charter.model_store import model_revision, prepare_smollm2
from charter.settings import Settings
from services.trainer.daemon import TrainerService
from workers import heartbeat
from workers.engine_loader import load_engines, run_model_dir
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer and chat template, saved as a model directory."""
    tokenizer = AutoTokenizer.from_pretrained(prepare_smollm2(Settings().models_dir / "smollm2"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    path = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def stack(make_settings, engine, issue, api, admin_headers, tiny_model):
    """The gateway over HTTP, a train-scoped key, and preference labels from a compare job."""
    settings: Settings = make_settings(models={"tiny": str(tiny_model)}, run_lease_seconds=60)
    pairs = [
        {
            "prompt": f"Question {i}: how should I greet a neighbour?",
            "response_a": "Say hello and smile." * (1 + i % 3),
            "response_b": "Go away.",
        }
        for i in range(24)
    ]
    batch = api.create_batch(admin_headers, pairs)
    api.push_default(admin_headers)
    job = api.submit(admin_headers, type="compare", batch_id=batch["id"], model="m", chunk_size=24)
    runner = ChunkRunner(
        session_factory(engine), {"m": ScriptedEngine(model_name="m")}, settings, "w"
    )
    assert runner.run_chunk(job["id"], 0).labelled == len(pairs)
    key = issue("alpha", ("train", "submit"))
    with GatewayThread(settings) as gateway, CharterClient(gateway.url, key.key) as client:
        dataset = client.create_dataset("prefs", "preference", {"job_ids": [job["id"]]})
        assert dataset["row_count"] == len(pairs)
        yield client, settings


def test_pm_then_ppo_through_the_api(stack):
    client, settings = stack
    service = TrainerService(client, settings, owner="trainer-1")
    pm = client.create_run(
        type="pm",
        dataset="prefs",
        base_model="tiny",
        config={
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "max_length": 256,
        },
    )
    assert service.run_once() is not None
    pm = client.run(pm["id"])
    assert pm["status"] == "completed", pm["error"]
    model_dir = Path(pm["artifact_uri"].removeprefix("file://"))
    assert (model_dir / "config.json").exists()
    record = json.loads((model_dir / "charter-training.json").read_text())
    assert record["method"] == "pm" and record["config"]["max_steps"] == 4
    # one hash: computed at submission, reported by the trainer, written beside the model
    assert pm["trained_config_hash"] == pm["config_hash"] == record["config_hash"]
    metrics = list(client.run_metrics(pm["id"]))
    assert metrics and any("loss" in m["metrics"] for m in metrics)
    assert any("eval_ece" in m["metrics"] for m in metrics)  # held-out calibration reported
    # the downloaded dataset was checksum-verified and kept beside the model
    assert (model_dir.parent / "dataset.jsonl").stat().st_size > 0

    ppo = client.create_run(
        type="ppo",
        dataset="prefs",
        base_model="tiny",
        reward_run=pm["id"],
        config={
            "total_steps": 2,
            "batch_size": 4,
            "mini_batch_size": 2,
            "response_length": 8,
            "ppo_epochs": 1,
        },
    )
    assert service.run_once()["status"] == "completed"
    ppo = client.run(ppo["id"])
    assert ppo["status"] == "completed", ppo["error"]
    assert ppo["trained_config_hash"] == ppo["config_hash"]
    names = set().union(*(m["metrics"] for m in client.run_metrics(ppo["id"])))
    assert {"score", "reward", "kl", "kl_coef", "entropy"} <= names
    assert Path(ppo["artifact_uri"].removeprefix("file://")).exists()


def test_a_trained_policy_generates_through_a_worker_that_serves_its_run(stack, engine):
    """A DPO run's artifact served as ``run:<id>``: the worker loads it from the artifact
    store by the run's record, the gateway knows it once the worker announces it, and a
    generate job's labels name it with the weights' revision."""
    client, settings = stack
    dpo = client.create_run(
        type="dpo",
        dataset="prefs",
        base_model="tiny",
        config={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 256},
    )
    model = f"run:{dpo['id']}"
    prompts = client.create_batch([{"prompt": f"Say hello {i}."} for i in range(3)])
    spec = {"type": "generate", "batch_id": prompts["id"], "constitution": "default"}
    with pytest.raises(CharterAPIError) as refused:  # not completed yet
        client.submit_job(model=model, **spec)
    assert refused.value.status_code == 422 and refused.value.field == "model"
    assert "has not completed" in refused.value.detail
    assert TrainerService(client, settings, owner="trainer-1").run_once()["status"] == "completed"
    with pytest.raises(CharterAPIError) as unserved:  # no worker serves it yet
        client.submit_job(model=model, **spec)
    assert "unknown model" in unserved.value.detail

    worker = settings.model_copy(update={"worker_models": [model], "worker_engine": "transformers"})
    sessions = session_factory(engine)
    engines = load_engines(worker, sessions=sessions)
    heartbeat.register(sessions, "w-run", "transformers", sorted(engines))
    job = client.submit_job(
        model=model, chunk_size=3, params={"sampling": {"max_tokens": 6}}, **spec
    )
    assert ChunkRunner(sessions, engines, worker, "w-run").run_chunk(job["id"], 0).labelled == 3
    artifact = Path(client.run(dpo["id"])["artifact_uri"].removeprefix("file://"))
    results = list(client.results(job["id"]))
    assert len(results) == 3 and all(r["model"] == model for r in results)
    assert {r["model_revision"] for r in results} == {model_revision(artifact)}
    assert all(isinstance(r["completion"], str) for r in results)


def test_a_worker_loads_only_a_completed_policy_run_inside_its_folder(stack, engine, tmp_path):
    client, settings = stack
    sessions = session_factory(engine)
    pm = client.create_run(type="pm", dataset="prefs", base_model="tiny", config={"max_steps": 1})
    with pytest.raises(ValueError, match="no completed training run"):
        run_model_dir(sessions, settings, pm["id"])
    with pytest.raises(ValueError, match="no completed training run"):
        run_model_dir(sessions, settings, "0" * 32)
    assert TrainerService(client, settings, owner="trainer-1").run_once()["status"] == "completed"
    with pytest.raises(ValueError, match="preference model"):
        run_model_dir(sessions, settings, pm["id"])
    prompts = client.create_batch([{"prompt": "Hello?"}])
    spec = {"type": "generate", "batch_id": prompts["id"], "constitution": "default"}
    for model, field, detail in (
        (f"run:{pm['id']}", "model", "preference model"),
        ("run:../../etc", "body.model", "should match pattern"),
    ):
        with pytest.raises(CharterAPIError) as refused:
            client.submit_job(model=model, **spec)
        assert (refused.value.status_code, refused.value.field) == (422, field)
        assert detail in refused.value.detail
    folder = settings.artifacts_dir.resolve() / "runs" / pm["id"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    with sessions() as session, session.begin():
        session.get(TrainingRun, pm["id"]).type = "sft"  # as if it were a policy
    assert run_model_dir(sessions, settings, pm["id"]).is_relative_to(folder)
    for uri, reason in (
        (outside.as_uri(), "not in"),
        ((folder / "link").as_uri(), "symlink"),
        ((folder / "missing").as_uri(), "no config.json"),
    ):
        (folder / "link").unlink(missing_ok=True)
        (folder / "link").symlink_to(outside)
        with sessions() as session, session.begin():
            session.get(TrainingRun, pm["id"]).artifact_uri = uri
        with pytest.raises(ValueError, match=reason):
            run_model_dir(sessions, settings, pm["id"])


@pytest.mark.parametrize("kind", ["rloo", "grpo"])
def test_online_rl_runs_against_a_pm_through_the_api(stack, kind):
    """RLOO and GRPO (TRL) sample from the base, are rewarded by the PM run's model, and
    follow the conventions of the other runs: hash, metrics, artifact, training record."""
    client, settings = stack
    service = TrainerService(client, settings, owner="trainer-1")
    pm = _trained_pm(client, settings)
    run = client.create_run(
        type=kind,
        dataset="prefs",
        base_model="tiny",
        reward_run=pm["id"],
        config={
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 8,
            "logging_steps": 1,
        },
    )
    done = service.run_once()
    assert done["status"] == "completed", done["error"]
    assert done["trained_config_hash"] == done["config_hash"] == run["config_hash"]
    steps = [m["step"] for m in client.run_metrics(run["id"]) if "reward" in m["metrics"]]
    assert steps == [1, 2]
    names = set().union(*(m["metrics"] for m in client.run_metrics(run["id"])))
    assert {"reward", "kl", "rewards/preference_model/mean"} <= names
    model = Path(done["artifact_uri"].removeprefix("file://"))
    record = json.loads((model / "charter-training.json").read_text())
    assert record["method"] == kind and record["global_step"] == 2
    # a reward run is required, and must be a finished PM run
    with pytest.raises(CharterAPIError) as refused:
        client.create_run(type=kind, dataset="prefs", base_model="tiny")
    assert refused.value.field == "reward_run"


def _store_config(engine, run_id: str, **changes) -> None:
    """Rewrite a run's stored config, as a gateway of another version might have."""
    with session_factory(engine)() as s, s.begin():
        row = s.get(TrainingRun, run_id)
        row.config = {**row.config, **changes}


def test_bad_config_is_refused_at_submission(stack):
    client, _ = stack
    with pytest.raises(CharterAPIError) as refused:
        client.create_run(
            type="pm", dataset="prefs", base_model="tiny", config={"learning_rat": 1e-4}
        )
    assert refused.value.status_code == 422
    assert refused.value.field == "body.config.learning_rat"


def test_a_stored_config_the_trainer_cannot_read_fails_the_run_with_the_reason(stack, engine):
    client, settings = stack
    run = client.create_run(type="pm", dataset="prefs", base_model="tiny")
    _store_config(engine, run["id"], learning_rat=1e-4)
    result = TrainerService(client, settings, owner="t").run_once()
    assert result["id"] == run["id"] and result["status"] == "failed"
    assert "learning_rat" in result["error"]
    assert TrainerService(client, settings, owner="t").run_once() is None  # nothing left queued


def test_a_config_that_is_not_the_validated_one_is_not_trained(stack, engine):
    """The trainer builds the config from the stored run; when its hash is not the one
    the gateway computed at submission, it fails the run before training anything."""
    client, settings = stack
    run = client.create_run(type="pm", dataset="prefs", base_model="tiny", config={"max_steps": 2})
    _store_config(engine, run["id"], max_steps=3)
    result = TrainerService(client, settings, owner="t").run_once()
    assert result["status"] == "failed" and "config_hash" in result["error"]
    assert run["config_hash"] in result["error"] and result["trained_config_hash"] is None
    assert not (Path(settings.artifacts_dir) / "runs" / run["id"] / "dataset.jsonl").exists()


def test_a_crashed_run_resumes_from_its_last_checkpoint(stack, monkeypatch):
    client, settings = stack
    run = client.create_run(
        type="pm",
        dataset="prefs",
        base_model="tiny",
        config={
            "max_steps": 6,
            "save_steps": 2,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "max_length": 256,
        },
    )
    from services.trainer import daemon as trainer_service

    class Crash(RuntimeError):
        pass

    def crash_after_step_3(self, args, state, control, **kwargs):
        self.record(str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))
        if state.global_step >= 4:
            raise Crash("the machine went away")

    with monkeypatch.context() as patch:
        patch.setattr(trainer_service.CheckpointReporter, "on_save", crash_after_step_3)
        failed = TrainerService(client, settings, owner="t1").run_once()
    assert failed["status"] == "failed" and "Crash" in failed["error"]
    assert failed["checkpoint"].endswith("checkpoint-4") and Path(failed["checkpoint"]).is_dir()

    assert client.request("POST", f"/v1/runs/{run['id']}/resume")["status"] == "queued"
    done = TrainerService(client, settings, owner="t2").run_once()
    assert done["status"] == "completed", done["error"]
    record = json.loads(
        (Path(done["artifact_uri"].removeprefix("file://")) / "charter-training.json").read_text()
    )
    assert record["global_step"] == 6
    steps = [m["step"] for m in client.run_metrics(run["id"]) if "loss" in m["metrics"]]
    # the first attempt's steps were reported before it failed; the second ran only 5 and 6
    assert steps == [1, 2, 3, 4, 5, 6]


def _trained_pm(client: CharterClient, settings: Settings) -> dict:
    """A completed two-step PM run on the stack's preference labels."""
    pm = client.create_run(
        type="pm",
        dataset="prefs",
        base_model="tiny",
        config={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 256},
    )
    assert TrainerService(client, settings, owner="t0").run_once()["status"] == "completed"
    return pm


def test_a_crashed_ppo_run_resumes_from_its_last_checkpoint(stack, monkeypatch):
    client, settings = stack
    pm = _trained_pm(client, settings)
    run = client.create_run(
        type="ppo",
        dataset="prefs",
        base_model="tiny",
        reward_run=pm["id"],
        config={
            "total_steps": 4,
            "save_steps": 2,
            "batch_size": 4,
            "mini_batch_size": 2,
            "response_length": 8,
            "ppo_epochs": 1,
        },
    )
    from services.trainer import ppo_trainer

    class Crash(RuntimeError):
        pass

    step = ppo_trainer.PPOTrainer.step

    def crash_in_step_3(self, prompts):
        if self.global_step == 2:
            raise Crash("the machine went away")
        return step(self, prompts)

    with monkeypatch.context() as patch:
        patch.setattr(ppo_trainer.PPOTrainer, "step", crash_in_step_3)
        failed = TrainerService(client, settings, owner="t1").run_once()
    assert failed["status"] == "failed" and "Crash" in failed["error"]
    assert failed["checkpoint"].endswith("checkpoint-2") and Path(failed["checkpoint"]).is_dir()

    assert client.request("POST", f"/v1/runs/{run['id']}/resume")["status"] == "queued"
    done = TrainerService(client, settings, owner="t2").run_once()
    assert done["status"] == "completed", done["error"]
    model = Path(done["artifact_uri"].removeprefix("file://"))
    assert json.loads((model / "trainer_state.json").read_text())["global_step"] == 4
    points = [(m["step"], m["metrics"]) for m in client.run_metrics(run["id"])]
    # the first attempt reported steps 1 and 2; the second continued at 3, not at 1
    assert [step for step, metrics in points if "kl_coef" in metrics] == [1, 2, 3, 4]
    assert dict(points)[3]["kl_coef"] != 0.05  # beta as the checkpoint left it, not reset


def _launch_service(tmp_path: Path, client: CharterClient, settings: Settings, runs: int) -> list:
    """``run_once`` ``runs`` times in two processes under ``accelerate launch`` (gloo on
    the CPU; see test_ppo_accelerate.py); each process's results."""
    out = tmp_path / f"launch-{len(list(tmp_path.glob('launch-*')))}"
    out.mkdir()
    overrides = {
        "env": "test",
        "data_dir": str(settings.data_dir),
        "artifacts_dir": str(settings.artifacts_dir.resolve()),
        "models": settings.models,
        "run_lease_seconds": settings.run_lease_seconds,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTER_")} | {
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "CHARTER_API_URL": str(client._http.base_url),
        "CHARTER_API_KEY": client._http.headers["X-API-Key"],
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("accelerate")),
            *("launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
            *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
            str(Path(__file__).with_name("service_distributed.py")),
            *(str(out), json.dumps(overrides), str(runs)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank-{i}.json").read_text()) for i in (0, 1)]


def test_two_processes_share_a_run_and_only_rank_0_talks_to_the_api(stack, tmp_path):
    client, settings = stack
    pm = client.create_run(
        type="pm",
        dataset="prefs",
        base_model="tiny",
        config={
            "max_steps": 3,
            "per_device_train_batch_size": 2,
            "logging_steps": 1,
            "max_length": 256,
        },
    )
    # The second call finds nothing queued: both processes must see that, not hang.
    ranks = _launch_service(tmp_path, client, settings, runs=2)
    assert [r["world_size"] for r in ranks] == [2, 2]
    first, second = (r["results"] for r in ranks)
    assert first[0]["id"] == second[0]["id"] == pm["id"] and first[1] is second[1] is None
    assert first[0]["status"] == "completed", first[0]["error"]
    # rank 0 claimed the run; rank 1 received the claim without its lease token
    assert second[0]["lease_owner"] == "dist-0" and "lease_token" not in second[0]
    steps = [m["step"] for m in client.run_metrics(pm["id"]) if "loss" in m["metrics"]]
    assert steps == [1, 2, 3]  # each step reported once, not once per process
    record = json.loads(
        (
            Path(first[0]["artifact_uri"].removeprefix("file://")) / "charter-training.json"
        ).read_text()
    )
    assert record["global_step"] == 3

    ppo = client.create_run(
        type="ppo",
        dataset="prefs",
        base_model="tiny",
        reward_run=pm["id"],
        config={
            "total_steps": 2,
            "batch_size": 2,
            "mini_batch_size": 1,
            "response_length": 6,
            "ppo_epochs": 1,
        },
    )
    first, second = (r["results"] for r in _launch_service(tmp_path, client, settings, runs=1))
    assert first[0]["status"] == "completed", first[0]["error"]
    assert second[0]["id"] == ppo["id"]
    points = list(client.run_metrics(ppo["id"]))
    assert [m["step"] for m in points] == [1, 2]
    # 2 processes x 2 responses of at most 6 tokens, gathered into one report per step
    assert all(4 <= m["metrics"]["response_tokens"] <= 24 for m in points)
    assert Path(first[0]["artifact_uri"].removeprefix("file://"), "value_head.safetensors").exists()
