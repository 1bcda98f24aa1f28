"""The trainer's own checks, whatever a run row says: it loads ``run:<id>`` models and
resumes checkpoints only from that run's folder of its artifact store, and trains on
the dataset version the gateway validated, never on a dataset named in the config.

The run rows are forged in the database (as rows written before the gateway checked
them would be); the trainer talks to a real gateway over HTTP. Nothing is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.client import CharterClient
from charter.db.models import TrainingRun
from charter.db.session import session_factory
from charter.embedded import GatewayThread
from services.trainer.daemon import RunConfigError, TrainerService

PREFERENCES = [
    {"prompt": f"Question {i}?", "chosen": "A kind answer.", "rejected": "Go away."}
    for i in range(4)
]
REVISIONS = [{"prompt": f"Ask {i}", "completion": "A revised answer."} for i in range(4)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def stack(make_settings, engine, issue, tmp_path):
    """A gateway over HTTP, a train+submit key, a trainer service with the same store."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    settings = make_settings(models={"tiny": str(model)}, run_lease_seconds=60)
    key = issue("alpha", ("train", "submit"))
    with GatewayThread(settings) as gateway, CharterClient(gateway.url, key.key) as client:
        client.upload_dataset("prefs", _jsonl(tmp_path / "p.jsonl", PREFERENCES), "preference")
        client.upload_dataset("revisions", _jsonl(tmp_path / "r.jsonl", REVISIONS), "sft")
        yield client, settings, TrainerService(client, settings, owner="trainer")


def _forge(engine, run_id: str, **values) -> None:
    with session_factory(engine)() as s, s.begin():
        row = s.get(TrainingRun, run_id)
        for name, value in values.items():
            setattr(row, name, value)


def _store(settings) -> Path:
    return settings.artifacts_dir.resolve()


def test_a_run_model_in_its_folder_is_loaded(stack):
    client, settings, trainer = stack
    run = client.create_run(type="pm", dataset="prefs", base_model="tiny")
    lease = client.claim_run("trainer")
    model = _store(settings) / "runs" / run["id"] / "model"
    model.mkdir(parents=True)
    client.complete_run(run["id"], lease["lease_token"], model.as_uri())
    assert trainer.model_dir(f"run:{run['id']}") == model


@pytest.mark.parametrize(
    "artifact",
    [
        "file:///etc",
        "file://{store}/runs/{other}/model",
        "file://{store}/runs/{id}/../{other}/model",
        "file://{store}/runs/{id}/%2e%2e/{other}/model",
        "file://{store}/runs/{id}x/model",
        "{store}/runs/{id}/model",
        "http://example.com/model",
    ],
)
def test_a_run_model_outside_its_folder_is_refused(stack, engine, artifact):
    client, settings, trainer = stack
    run = client.create_run(type="pm", dataset="prefs", base_model="tiny")
    other = client.create_run(type="pm", dataset="prefs", base_model="tiny")
    uri = artifact.format(store=_store(settings), id=run["id"], other=other["id"])
    (_store(settings) / "runs" / other["id"] / "model").mkdir(parents=True)
    _forge(engine, run["id"], status="completed", artifact_uri=uri)
    with pytest.raises(RunConfigError, match="folder of this trainer's artifact store"):
        trainer.model_dir(f"run:{run['id']}")


def test_a_symlink_out_of_the_folder_is_refused(stack, tmp_path):
    client, settings, trainer = stack
    run = client.create_run(type="pm", dataset="prefs", base_model="tiny")
    lease = client.claim_run("trainer")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = _store(settings) / "runs" / run["id"]
    folder.mkdir(parents=True)
    (folder / "model").symlink_to(elsewhere, target_is_directory=True)
    # Lexically inside, so the gateway (which need not see the disk) accepts it.
    client.complete_run(run["id"], lease["lease_token"], (folder / "model").as_uri())
    with pytest.raises(RunConfigError, match="symlink"):
        trainer.model_dir(f"run:{run['id']}")


def test_a_forged_row_trains_on_its_validated_dataset_and_no_foreign_checkpoint(stack, engine):
    client, settings, trainer = stack
    run = client.create_run(type="pm", dataset="prefs", base_model="tiny")
    row = client.run(run["id"])
    _forge(
        engine,
        run["id"],
        config={**row["config"], "dataset": "revisions@1"},
        checkpoint="/etc",
    )
    result = trainer.run_once()
    # It failed before training, and reported so under its lease token.
    assert result["id"] == run["id"] and result["status"] == "failed"
    assert "'/etc' is not in run" in result["error"] and "RunConfigError" in result["error"]
    exported = _store(settings) / "runs" / run["id"] / "dataset.jsonl"
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    # prefs@1, which the run was validated on (exported in conversational shape)
    assert [r["prompt"][0]["content"] for r in rows] == [p["prompt"] for p in PREFERENCES]
    assert all(r["chosen"][0]["content"] == "A kind answer." for r in rows)
